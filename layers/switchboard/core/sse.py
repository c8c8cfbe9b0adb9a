"""Server-sent events: an incremental parser for upstream streams and the encoder for clients."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

__all__ = ["DONE", "SSEEvent", "SSEParser", "encode_data", "encode_json", "iter_events"]

DONE = b"data: [DONE]\n\n"


@dataclass(frozen=True, slots=True)
class SSEEvent:
    event: str | None
    data: bytes


class SSEParser:
    """Feed bytes as they arrive; get back the complete events. Handles CRLF split across feeds."""

    __slots__ = ("_buf",)

    def __init__(self) -> None:
        self._buf = b""

    def feed(self, chunk: bytes) -> list[SSEEvent]:
        buf = self._buf + chunk
        if b"\r" in buf:
            # A trailing lone CR may be the first half of a CRLF: keep it for the next feed.
            tail = b"\r" if buf.endswith(b"\r") else b""
            buf = buf[: len(buf) - len(tail)].replace(b"\r\n", b"\n").replace(b"\r", b"\n") + tail
        events: list[SSEEvent] = []
        while True:
            cut = buf.find(b"\n\n")
            if cut < 0:
                break
            block, buf = buf[:cut], buf[cut + 2 :]
            event = _parse_block(block)
            if event is not None:
                events.append(event)
        self._buf = buf
        return events

    @property
    def pending(self) -> bytes:
        """Bytes received that do not yet form a complete event."""
        return self._buf


def _parse_block(block: bytes) -> SSEEvent | None:
    name: str | None = None
    data: list[bytes] = []
    for line in block.split(b"\n"):
        if not line or line.startswith(b":"):
            continue
        field, _, value = line.partition(b":")
        if value.startswith(b" "):
            value = value[1:]
        if field == b"data":
            data.append(value)
        elif field == b"event":
            name = value.decode("utf-8", "replace")
    if not data and name is None:
        return None
    return SSEEvent(name, b"\n".join(data))


async def iter_events(chunks: AsyncIterator[bytes]) -> AsyncIterator[SSEEvent]:
    """Events from a byte stream, each yielded as soon as its closing blank line arrives."""
    parser = SSEParser()
    async for chunk in chunks:
        for event in parser.feed(chunk):
            yield event
    for event in parser.feed(b"\n\n") if parser.pending.strip() else ():
        yield event


def encode_data(payload: bytes) -> bytes:
    """One ``data:`` event around an already-serialised JSON payload."""
    return b"data: " + payload + b"\n\n"


def encode_json(obj: Any) -> bytes:
    return encode_data(json.dumps(obj, separators=(",", ":")).encode())
