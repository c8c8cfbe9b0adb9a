"""A scriptable stand-in for the native (non-OpenAI) upstreams, served over real sockets.

Each test scripts replies per model: ``upstream.script("claude-x", Reply(json=...), ...)``. Replies
are used in order and the last one repeats. A reply may carry ``expect``, the exact JSON body the
gateway must have sent; a mismatch is answered with a 599 whose body shows the difference, so the
test fails on the request, not later on a confusing response.

Routes
    ``POST /v1/messages``                             Anthropic; the model is the body's ``model``
    ``POST /model/{model}/converse``                  Bedrock Converse (JSON)
    ``POST /model/{model}/converse-stream``           Bedrock ConverseStream (AWS event stream)
    ``POST /model/{model}/invoke``                    Bedrock InvokeModel (embeddings)
    ``POST /openai/deployments/{model}/{op:path}``    Azure OpenAI, by deployment
    ``POST /openai/v1/{op:path}``, ``POST /v1/{op:path}``  OpenAI-compatible; the model is the body's
"""

from __future__ import annotations

import asyncio
import binascii
import json
import struct
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

__all__ = ["Reply", "ScriptedUpstream", "event_stream_message"]


@dataclass
class Reply:
    status: int = 200
    json: Any = None
    sse: list[list[Any]] | None = None  # [[event name, data], ...] as Anthropic sends them
    chunks: list[Any] | None = None  # OpenAI-style ``data:`` events (``[DONE]`` is added)
    events: list[tuple[str, str, dict[str, Any]]] | None = None  # AWS event stream: (kind, name, payload)
    headers: dict[str, str] = field(default_factory=dict)
    expect: Any = None
    cut: bool = False  # end a stream without its proper end


class ScriptedUpstream:
    def __init__(self) -> None:
        self.scripts: dict[str, list[Reply]] = {}
        self.requests: list[dict[str, Any]] = []
        self.url = ""

    def script(self, model: str, *replies: Reply) -> None:
        self.scripts[model] = list(replies)

    def reset(self) -> None:
        self.scripts.clear()
        self.requests.clear()

    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/v1/messages", self._handle, methods=["POST"]),
                Route("/model/{model}/converse", self._handle, methods=["POST"]),
                Route("/model/{model}/converse-stream", self._handle, methods=["POST"]),
                Route("/model/{model}/invoke", self._handle, methods=["POST"]),
                Route("/openai/deployments/{model}/{op:path}", self._handle, methods=["POST"]),
                Route("/openai/v1/{op:path}", self._handle, methods=["POST"]),
                Route("/v1/{op:path}", self._handle, methods=["POST"]),
            ]
        )

    async def _handle(self, request: Request) -> Response:
        raw = await request.body()
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        model = request.path_params.get("model") or (body or {}).get("model", "")
        self.requests.append(
            {
                "path": request.url.path,
                "query": dict(request.query_params),
                "headers": {k.lower(): v for k, v in request.headers.items()},
                "json": body,
                "model": model,
            }
        )
        replies = self.scripts.get(model)
        if not replies:
            return JSONResponse({"message": f"no script for model {model!r}"}, 404)
        reply = replies.pop(0) if len(replies) > 1 else replies[0]
        if reply.expect is not None and body != reply.expect:
            diff = {"expected": reply.expect, "received": body}
            return JSONResponse({"message": "request mismatch", "diff": diff}, 599)
        if reply.sse is not None:
            return StreamingResponse(_sse(reply), reply.status, reply.headers, "text/event-stream")
        if reply.chunks is not None:
            return StreamingResponse(_chunks(reply), reply.status, reply.headers, "text/event-stream")
        if reply.events is not None:
            return StreamingResponse(
                _aws_events(reply), reply.status, reply.headers, "application/vnd.amazon.eventstream"
            )
        return JSONResponse(reply.json, reply.status, reply.headers)


async def _sse(reply: Reply) -> AsyncIterator[bytes]:
    for name, data in reply.sse or ():
        yield f"event: {name}\ndata: {json.dumps(data)}\n\n".encode()
        await asyncio.sleep(0)


async def _chunks(reply: Reply) -> AsyncIterator[bytes]:
    for chunk in reply.chunks or ():
        yield f"data: {json.dumps(chunk)}\n\n".encode()
        await asyncio.sleep(0)
    if not reply.cut:
        yield b"data: [DONE]\n\n"


async def _aws_events(reply: Reply) -> AsyncIterator[bytes]:
    for kind, name, payload in reply.events or ():
        yield event_stream_message(kind, name, payload)
        await asyncio.sleep(0)


def _header(name: str, value: str) -> bytes:
    encoded = value.encode()
    return bytes([len(name)]) + name.encode() + b"\x07" + struct.pack(">H", len(encoded)) + encoded


def event_stream_message(kind: str, name: str, payload: dict[str, Any]) -> bytes:
    """One message of the AWS event-stream encoding (``application/vnd.amazon.eventstream``).

    Layout, from the AWS docs ("Event stream encoding"): total length, headers length and a CRC32
    of those eight bytes; the headers (string-typed, type 7); the payload; a CRC32 of everything
    before it. ``kind`` is ``event`` or ``exception``; ``name`` the event or exception type.
    """
    headers = _header(":message-type", kind)
    headers += _header(":event-type" if kind == "event" else ":exception-type", name)
    headers += _header(":content-type", "application/json")
    body = json.dumps(payload).encode()
    total = 12 + len(headers) + len(body) + 4
    prelude = struct.pack(">II", total, len(headers))
    prelude += struct.pack(">I", binascii.crc32(prelude) & 0xFFFFFFFF)
    message = prelude + headers + body
    return message + struct.pack(">I", binascii.crc32(message) & 0xFFFFFFFF)
