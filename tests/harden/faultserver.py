"""A fault-injecting OpenAI-compatible upstream on raw asyncio sockets, for ``make harden``.

The mock in ``switchboard.devtools.mockupstream`` is a well-behaved server that can fail politely;
this one breaks the wire itself: it resets connections before or after reading a request, stops a
body half way, sends HTML where JSON belongs, stalls forever. Which fault a request gets is its
body's ``model``: ``<fault>`` or ``<fault>.<anything>`` (the tail only makes the string unique).

Faults (``FAULTS``; each has a streaming and a buffered form where the two differ):

    ok              a correct completion; the content names the model, usage 10 + 3 tokens
    429 / 429-ra    429 rate_limit_error, without / with ``Retry-After: 1``
    500 502 503 529 that status with an OpenAI error body
    html            502 with an HTML page (``text/html``), as a load balancer sends it
    read-hang       reads the request, never answers (until the client gives up)
    reset-before    resets the connection as soon as it is accepted, before reading anything
    reset-after     reads the request, then resets without a byte of response
    reset-mid       sends the headers and part of the body, then resets
    truncated       200 ``application/json`` whose body is cut (its Content-Length is honest)
    stop-first      streaming: the headers and the role chunk, then a clean close (FIN) before any
                    token; buffered: the headers with a Content-Length, then a close without body
    stop-some       streaming: two tokens, then a clean close; buffered: half the body, then close
    no-done         streaming: every chunk and the usage, then the chunked terminator without
                    ``data: [DONE]``; buffered: a correct completion (the fault does not apply)
    stall           streaming: two tokens, then silence; buffered: half the body, then silence
    oversized       a 200 whose body is ``OVERSIZED`` bytes: one giant content string (buffered), one
                    giant SSE event without a line end (streaming)
    wrong-type      buffered: 200 ``text/plain`` with a non-JSON body; streaming: 200
                    ``application/json`` with a buffered completion instead of an event stream

Echoes, for the secret scan (``ECHOES``): ``echo-<status>`` answers that status with an OpenAI
error whose message repeats the key the server received (bare, without ``Bearer``), as some providers
do (``echo-400ctx``: code ``context_length_exceeded``; ``echo-400policy``: ``content_filter``).

Connect-level faults have no server behind them: ``refused_url()`` is a closed port, and
``HangingListener`` is a socket whose accept queue is full, so a connect never completes.

Every request is counted per model (``hits``), and the ``authorization`` header each one carried
is kept (``seen_keys``), so a test can see the provider key reached the upstream and nowhere else.
"""

from __future__ import annotations

import asyncio
import json
import socket
import struct
import threading
import time
from collections import Counter
from collections.abc import Callable
from contextlib import suppress
from typing import Any

__all__ = ["ECHOES", "FAULTS", "OVERSIZED", "FaultUpstream", "HangingListener", "refused_url"]

FAULTS = (
    "429",
    "429-ra",
    "500",
    "502",
    "503",
    "529",
    "html",
    "refused",
    "connect-hang",
    "read-hang",
    "reset-before",
    "reset-after",
    "reset-mid",
    "truncated",
    "stop-first",
    "stop-some",
    "no-done",
    "stall",
    "oversized",
    "wrong-type",
)
ECHOES = ("echo-400", "echo-401", "echo-404", "echo-422", "echo-400ctx", "echo-400policy")
OVERSIZED = 16 * 1024 * 1024
_HANG_S = 120.0  # "forever" for a test; the gateway gives up long before
USAGE = {"prompt_tokens": 10, "completion_tokens": 3, "total_tokens": 13}
_HTML = b"<html><head><title>502 Bad Gateway</title></head><body><h1>502 Bad Gateway</h1></body></html>"


def reply_text(model: str) -> str:
    """The content an ``ok`` target answers: it names the model, so a test sees who served."""
    return f"served by {model}"


def _head(status: int, content_type: str, length: int | None, extra: str = "") -> bytes:
    framing = "Transfer-Encoding: chunked" if length is None else f"Content-Length: {length}"
    return f"HTTP/1.1 {status} X\r\nContent-Type: {content_type}\r\n{framing}\r\n{extra}\r\n".encode(
        "latin-1"
    )


def _error(status: int, kind: str) -> bytes:
    return json.dumps(
        {"error": {"message": f"fault {status}", "type": kind, "param": None, "code": None}}
    ).encode()


def _completion(model: str) -> bytes:
    message = {"role": "assistant", "content": reply_text(model)}
    body = {
        "id": "chatcmpl-fault",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
        "usage": USAGE,
    }
    return json.dumps(body).encode()


def _chunk(model: str, delta: dict[str, Any], finish: str | None = None, usage: Any = None) -> bytes:
    body: dict[str, Any] = {
        "id": "chatcmpl-fault",
        "object": "chat.completion.chunk",
        "created": 0,
        "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}] if usage is None else [],
    }
    if usage is not None:
        body["usage"] = usage
    payload = b"data: " + json.dumps(body).encode() + b"\n\n"
    return b"%x\r\n%s\r\n" % (len(payload), payload)


def _events(model: str) -> list[bytes]:
    """A whole stream: role, three word chunks, finish, usage; ``[DONE]`` is added by the caller."""
    words = reply_text(model).split(" ")
    pieces = [words[0], *(" " + w for w in words[1:])]
    return [
        _chunk(model, {"role": "assistant", "content": ""}),
        *(_chunk(model, {"content": piece}) for piece in pieces),
        _chunk(model, {}, "stop"),
        _chunk(model, {}, usage=USAGE),
    ]


_DONE = b"e\r\ndata: [DONE]\n\n\r\n"
_END = b"0\r\n\r\n"


def _reset(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


async def _read_request(reader: asyncio.StreamReader) -> tuple[str, dict[str, str], dict[str, Any]] | None:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, ConnectionError):
        return None
    headers: dict[str, str] = {}
    lines = head.decode("latin-1").split("\r\n")
    path = lines[0].split(" ")[1] if lines[0].count(" ") >= 2 else ""
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length") or 0)
    raw = await reader.readexactly(length) if length else b""
    try:
        body = json.loads(raw)
    except ValueError:
        body = {}
    return path, headers, body if isinstance(body, dict) else {}


class FaultUpstream:
    """The server. ``start()`` in a thread of its own (``run_in_thread``); ``url`` once started."""

    def __init__(self) -> None:
        self.hits: Counter[str] = Counter()
        self.seen_keys: set[str] = set()
        self.url = ""
        self.reset_url = ""  # every connection to it is reset on accept: ``reset-before``
        self._servers: list[asyncio.Server] = []

    async def start(self) -> None:
        for serve in (self._serve, self._reset_on_accept):
            self._servers.append(await asyncio.start_server(serve, "127.0.0.1", 0, limit=1 << 20))
        ports = [server.sockets[0].getsockname()[1] for server in self._servers]
        self.url, self.reset_url = (f"http://127.0.0.1:{port}/v1" for port in ports)

    async def _reset_on_accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """``reset-before`` cannot be chosen by the body (nothing is read): it has its own port."""
        self.hits["reset-before"] += 1
        _reset(writer)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while await self._one(reader, writer):
                pass
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            with suppress(Exception):
                writer.close()

    async def _one(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        request = await _read_request(reader)
        if request is None:
            return False
        path, headers, body = request
        model = str(body.get("model", ""))
        fault = model.split(".", 1)[0]
        self.hits[model] += 1
        if "authorization" in headers:
            self.seen_keys.add(headers["authorization"].removeprefix("Bearer ").strip())
        stream = body.get("stream") is True
        handler = _HANDLERS.get(fault, _ok)
        if fault in ECHOES:
            handler = _echo(fault, headers.get("authorization", "").removeprefix("Bearer ").strip())
        if path.endswith("/embeddings") and handler is _ok:
            handler = _embeddings(body)
        keep = await handler(writer, model, stream)
        with suppress(ConnectionError):
            await writer.drain()
        return keep


async def _ok(writer: asyncio.StreamWriter, model: str, stream: bool) -> bool:
    if not stream:
        body = _completion(model)
        writer.write(_head(200, "application/json", len(body)) + body)
        return True
    writer.write(_head(200, "text/event-stream", None) + b"".join(_events(model)) + _DONE + _END)
    return True


def _embeddings(request: dict[str, Any]) -> Callable[[asyncio.StreamWriter, str, bool], Any]:
    """An embeddings answer: one 4-float vector per input (a string, or a list of anything)."""
    given = request.get("input")
    count = len(given) if isinstance(given, list) else 1

    async def handler(writer: asyncio.StreamWriter, model: str, stream: bool) -> bool:
        data = [
            {"object": "embedding", "index": i, "embedding": [0.5, 0.25, 0.125, 0.0]} for i in range(count)
        ]
        usage = {"prompt_tokens": count, "total_tokens": count}
        body = json.dumps({"object": "list", "data": data, "model": model, "usage": usage}).encode()
        writer.write(_head(200, "application/json", len(body)) + body)
        return True

    return handler


def _echo(fault: str, authorization: str) -> Callable[[asyncio.StreamWriter, str, bool], Any]:
    status = int(fault[5:8])
    code = {"echo-400ctx": "context_length_exceeded", "echo-400policy": "content_filter"}.get(fault)
    message = f"Incorrect API key provided: {authorization}. You can find your API key in your account."
    error = {"message": message, "type": "invalid_request_error", "param": None, "code": code}
    body = json.dumps({"error": error}).encode()

    async def handler(writer: asyncio.StreamWriter, model: str, stream: bool) -> bool:
        writer.write(_head(status, "application/json", len(body)) + body)
        return True

    return handler


def _status(status: int, kind: str, extra: str = "") -> Callable[[asyncio.StreamWriter, str, bool], Any]:
    async def handler(writer: asyncio.StreamWriter, model: str, stream: bool) -> bool:
        body = _error(status, kind)
        writer.write(_head(status, "application/json", len(body), extra) + body)
        return True

    return handler


async def _html(writer: asyncio.StreamWriter, model: str, stream: bool) -> bool:
    writer.write(_head(502, "text/html", len(_HTML)) + _HTML)
    return True


async def _read_hang(writer: asyncio.StreamWriter, model: str, stream: bool) -> bool:
    await asyncio.sleep(_HANG_S)
    return False


async def _reset_after(writer: asyncio.StreamWriter, model: str, stream: bool) -> bool:
    _reset(writer)
    return False


async def _reset_mid(writer: asyncio.StreamWriter, model: str, stream: bool) -> bool:
    if stream:
        writer.write(_head(200, "text/event-stream", None) + _events(model)[0] + b'ff\r\ndata: {"id')
    else:
        body = _completion(model)
        writer.write(_head(200, "application/json", len(body)) + body[: len(body) // 2])
    await writer.drain()
    await asyncio.sleep(0.05)
    _reset(writer)
    return False


async def _truncated(writer: asyncio.StreamWriter, model: str, stream: bool) -> bool:
    body = _completion(model)[:40]
    if stream:
        payload = b"data: " + body + b"\n\n"
        writer.write(_head(200, "text/event-stream", None) + b"%x\r\n%s\r\n" % (len(payload), payload) + _END)
    else:
        writer.write(_head(200, "application/json", len(body)) + body)
    return True


async def _stop(writer: asyncio.StreamWriter, model: str, stream: bool, tokens: int) -> bool:
    if stream:
        writer.write(_head(200, "text/event-stream", None) + b"".join(_events(model)[: 1 + tokens]))
    else:
        body = _completion(model)
        writer.write(_head(200, "application/json", len(body)) + body[: len(body) // 2 if tokens else 0])
    await writer.drain()
    writer.close()  # a clean FIN: the framing says more was coming
    return False


async def _stop_first(writer: asyncio.StreamWriter, model: str, stream: bool) -> bool:
    return await _stop(writer, model, stream, 0)


async def _stop_some(writer: asyncio.StreamWriter, model: str, stream: bool) -> bool:
    return await _stop(writer, model, stream, 2)


async def _no_done(writer: asyncio.StreamWriter, model: str, stream: bool) -> bool:
    if not stream:
        return await _ok(writer, model, stream)
    writer.write(_head(200, "text/event-stream", None) + b"".join(_events(model)) + _END)
    return True


async def _stall(writer: asyncio.StreamWriter, model: str, stream: bool) -> bool:
    if stream:
        writer.write(_head(200, "text/event-stream", None) + b"".join(_events(model)[:3]))
    else:
        body = _completion(model)
        writer.write(_head(200, "application/json", len(body)) + body[: len(body) // 2])
    await writer.drain()
    await asyncio.sleep(_HANG_S)
    return False


async def _oversized(writer: asyncio.StreamWriter, model: str, stream: bool) -> bool:
    if stream:
        writer.write(_head(200, "text/event-stream", None) + _events(model)[0])
        prefix = b'data: {"choices":[{"index":0,"delta":{"content":"'
        writer.write(b"%x\r\n%s" % (OVERSIZED, prefix))
        block = b"a" * 65536
        for _ in range((OVERSIZED - len(prefix)) // len(block)):
            writer.write(block)
            await writer.drain()
        return False
    head = b'{"id":"x","object":"chat.completion","created":0,"model":"m","choices":[{"index":0,"message":'
    head += b'{"role":"assistant","content":"'
    tail = (
        b'"},"finish_reason":"stop"}],"usage":{"prompt_tokens":10,"completion_tokens":3,"total_tokens":13}}'
    )
    filler = OVERSIZED - len(head) - len(tail)
    writer.write(_head(200, "application/json", OVERSIZED) + head)
    block = b"a" * 65536
    for _ in range(filler // len(block)):
        writer.write(block)
        await writer.drain()
    writer.write(b"a" * (filler % len(block)) + tail)
    return True


async def _wrong_type(writer: asyncio.StreamWriter, model: str, stream: bool) -> bool:
    if stream:
        body = _completion(model)
        writer.write(_head(200, "application/json", len(body)) + body)
    else:
        body = b"upstream says: all good"
        writer.write(_head(200, "text/plain", len(body)) + body)
    return True


_HANDLERS: dict[str, Callable[[asyncio.StreamWriter, str, bool], Any]] = {
    "ok": _ok,
    "429": _status(429, "rate_limit_error"),
    "429-ra": _status(429, "rate_limit_error", "Retry-After: 1\r\n"),
    "500": _status(500, "server_error"),
    "502": _status(502, "server_error"),
    "503": _status(503, "server_error"),
    "529": _status(529, "overloaded_error"),
    "html": _html,
    "read-hang": _read_hang,
    "reset-after": _reset_after,
    "reset-mid": _reset_mid,
    "truncated": _truncated,
    "stop-first": _stop_first,
    "stop-some": _stop_some,
    "no-done": _no_done,
    "stall": _stall,
    "oversized": _oversized,
    "wrong-type": _wrong_type,
}


def run_in_thread() -> tuple[FaultUpstream, Callable[[], None]]:
    """Serve on a loopback port from a daemon thread; returns the server and an idempotent stop."""
    upstream = FaultUpstream()
    loop = asyncio.new_event_loop()
    ready = threading.Event()

    def serve() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(upstream.start())
        ready.set()
        loop.run_forever()
        for server in upstream._servers:
            server.close()
        for task in asyncio.all_tasks(loop):
            task.cancel()
        with suppress(Exception):
            loop.run_until_complete(asyncio.sleep(0))
        loop.close()

    thread = threading.Thread(target=serve, name="faultserver", daemon=True)
    thread.start()
    ready.wait(10)

    def stop() -> None:
        with suppress(RuntimeError):
            loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)

    return upstream, stop


def refused_url() -> str:
    """A loopback URL whose port nobody listens on: every connect is refused at once."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"


class HangingListener:
    """A listening socket that never accepts, its accept queue filled: later connects hang (Linux
    drops the SYN of a connect to a full queue, so the client waits for its connect timeout)."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(0)
        port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{port}/v1"
        self._fillers: list[socket.socket] = []
        for _ in range(4):  # backlog 0 admits one or two; the rest time out here, quickly
            filler = socket.socket()
            filler.settimeout(0.2)
            try:
                filler.connect(("127.0.0.1", port))
                self._fillers.append(filler)
            except OSError:
                filler.close()
                break

    def close(self) -> None:
        for filler in self._fillers:
            filler.close()
        self.sock.close()
