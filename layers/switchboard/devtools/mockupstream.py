"""A fast, scriptable mock of an OpenAI-compatible provider, on raw asyncio.

It is the upstream of the integration tests and the baseline upstream of the benchmarks, so it is
stdlib only, speaks keep-alive HTTP/1.1 itself (request line, headers, ``Content-Length`` or chunked
body; pipelined requests and ``Connection: close`` are honoured) and does no more work per request
than the behaviour below needs.

Routes
    ``GET /v1/models``            one model, ``mock-echo``
    ``GET /health``               ``{"ok": true}``
    ``POST /v1/chat/completions`` scripted by the request's ``model`` (below)
    ``POST /v1/completions``      the legacy text completion: the echo of ``prompt`` (its first
                                  string, or token ids as digits) as ``text``, streamed as
                                  ``text_completion`` chunks; ``n``, ``max_tokens``, ``stop``,
                                  ``stream_options.include_usage`` and the failure directives apply
    ``POST /v1/embeddings``       8 deterministic floats per input (``encoding_format: base64`` too);
                                  the failure directives apply
    ``POST /v1/responses``        the Responses API: the same script on the request read as chat
                                  (``input`` and ``instructions`` as messages, ``text.format`` as
                                  ``response_format``, ``max_output_tokens`` as ``max_tokens``), a
                                  ``response`` object or its event stream (``break-<k>`` cuts it);
                                  usage in input/output tokens
    anything else                 404; a body that is not a JSON object: 400 (OpenAI-shaped errors)

Directives: the ``model`` string is split on ``+``; unknown parts are ignored, so a tag such as
``id-abc`` only makes the string (and so its ``flaky`` counter) unique.

    ``echo``              the default: the reply is ``"echo: " + <last user message text>``, or the
                          content string ``{"echo": "<text>"}`` when ``response_format`` asks for
                          JSON. ``n``, ``max_tokens``/``max_completion_tokens`` (cut to that many
                          words, ``finish_reason: "length"``) and ``stop`` (cut at the first
                          occurrence) are honoured.
    ``tools``             a call of the request's first tool (or ``get_weather``) with
                          ``{"city": "Paris"}``, ``finish_reason: "tool_calls"``; once the last
                          message is a tool result, the echo instead (as a model answers after
                          its tool ran), so an agent's loop ends
    ``reasoning``         the reply is preceded by ``reasoning_content`` (DeepSeek's, Groq's and
                          Together's field for a reasoning model's thoughts): ``message.
                          reasoning_content`` in a completion, ``delta.reasoning_content`` chunks
                          (one per word of ``"Thinking it over."``) before the content in a stream
    ``fail-<status>``     that status (400-599) with an OpenAI error body, ``"type"`` by status;
                          ``fail-400ctx``: code ``context_length_exceeded``; ``fail-400policy``: code
                          ``content_filter``; ``fail-401``: code ``invalid_api_key`` and a message
                          naming a (fake) key, for tests that the gateway does not leak it
    ``retry-after-<s>``   a ``Retry-After`` header on the failure
    ``flaky-<n>``         the first n requests with this exact model string fail (with ``fail-``'s
                          status, else 500), later ones succeed. The other failure modes
                          (``reset``, ``garbage*``, ``break-``) are likewise confined to those n.
    ``garbage``           200 ``application/json`` with a truncated JSON body (streaming too)
    ``garbage-valid-json`` 200 with ``{"foo": 1}``
    ``reset``             the request is read, then the socket is reset without any response
    ``slow-<s>``          sleep before the response headers (every response, errors included)
    ``stall-<s>``         streaming: sleep between the 200 headers and the first event; a client
                          that closes the connection meanwhile is noticed at once, and the model
                          string is appended to ``MockUpstream.closed``
    ``break-<k>``         streaming: close the connection after k content chunks, without the final
                          chunk, ``[DONE]`` or the chunked terminator (k=0: right after the role chunk)
    ``chunks-<n>``        the reply is exactly n words (the echo's words, cycled or cut), so a
                          stream has n content chunks
    ``delay-<ms>``        streaming: sleep before each content chunk

A streamed reply is real chunked transfer encoding, one write and drain per SSE event: a role
chunk, one chunk per word (a leading space on all but the first), a chunk with the finish reason,
the usage chunk when ``stream_options.include_usage`` is true (every earlier chunk then carries
``"usage": null``), ``data: [DONE]`` and the zero-length chunk. With ``n`` > 1 each step is sent
once per choice index.

Usage is counted in whitespace-separated words: prompt = the words of every message's text plus
4 per message; completion = the reply's words, summed over the choices.

A request with the header ``x-mock-echo-headers: 1`` gets back, in ``x-mock-saw-authorization``,
the ``authorization`` header the mock received (absent if none was sent).

Every request is recorded in ``MockUpstream.requests`` (the last 1000) as a dict of ``method``,
``path``, ``headers`` (lower-case names) and ``json`` (the parsed body or None); the bound is the
class attribute ``max_records``. ``connections`` counts the TCP connections accepted, so a test can
see keep-alive reuse.

Use ``async with MockUpstream() as mock`` in async code, ``run_in_thread()`` in sync code, and
``python -m switchboard.devtools.mockupstream --port 9100`` from a shell (loopback hosts only).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextvars
import hashlib
import ipaddress
import itertools
import json
import re
import signal
import socket
import struct
import sys
import threading
import time
from collections.abc import Callable, Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from functools import lru_cache
from http import HTTPStatus
from types import TracebackType
from typing import Any

__all__ = ["MockUpstream", "main", "run_in_thread"]

JSONDict = dict[str, Any]

MAX_RECORDS = 1000
_HEADER_LIMIT = 1 << 20  # request line + headers; a body has no limit
_MAX_CHOICES = 128
_MAX_CHUNKS = 100_000
_WORD = re.compile(r"\s*\S+")  # a word with the whitespace before it: the pieces join back exactly
_TOOL_ARGUMENTS = '{"city": "Paris"}'
_TOOL_CALL_ID = "call_mock1"
_DEFAULT_TOOL = "get_weather"
_EMBEDDING_SIZE = 8
_JSON_FORMATS = frozenset({"json_object", "json_schema"})
_SEPARATORS = (",", ":")
_DONE_AND_END = b"e\r\ndata: [DONE]\n\n\r\n0\r\n\r\n"  # 0xe == len(b"data: [DONE]\n\n")
_MODELS_BODY = json.dumps(
    {"object": "list", "data": [{"id": "mock-echo", "object": "model", "created": 0, "owned_by": "mock"}]}
).encode()
_HEALTH_BODY = b'{"ok":true}'
_GARBAGE_BODY = b'{"not": "a completion"'
_GARBAGE_VALID_BODY = b'{"foo": 1}'
_REASONING = "Thinking it over."


_READER: contextvars.ContextVar[asyncio.StreamReader] = contextvars.ContextVar("mock_reader")


async def _client_left_within(seconds: float) -> bool:
    """Sleep ``seconds``, or less if the client closes the connection: whether it did. (A byte the
    client sends meanwhile ends the wait too and is lost: no test pipelines into a stall.)"""
    reader = _READER.get(None)
    if reader is None:
        await asyncio.sleep(seconds)
        return False
    try:
        data = await asyncio.wait_for(reader.read(1), seconds)
    except TimeoutError:
        return False
    except (ConnectionError, OSError):
        return True
    return data == b""


# --------------------------------------------------------------------------- the script


@dataclass(frozen=True, slots=True)
class _Script:
    """The directives of one model string, parsed once and cached."""

    fail_status: int | None = None
    fail_variant: str = ""  # "ctx", "policy" or "" (from e.g. ``fail-400ctx``)
    retry_after: str | None = None
    flaky: int = 0
    garbage: bool = False
    garbage_valid_json: bool = False
    reset: bool = False
    slow: float = 0.0
    stall: float = 0.0
    break_after: int | None = None
    chunks: int | None = None
    delay: float = 0.0
    tools: bool = False
    reasoning: bool = False


def _nonneg_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise ValueError(text)
    return value


def _nonneg_float(text: str) -> float:
    value = float(text)
    if not value >= 0 or value == float("inf"):  # also rejects NaN
        raise ValueError(text)
    return value


def _retry_after(text: str) -> str:
    _nonneg_float(text)
    return text


def _milliseconds(text: str) -> float:
    return _nonneg_float(text) / 1000


_FLAGS = {
    "garbage": "garbage",
    "garbage-valid-json": "garbage_valid_json",
    "reset": "reset",
    "tools": "tools",
    "reasoning": "reasoning",
}
_VALUED: tuple[tuple[str, str, Callable[[str], Any]], ...] = (
    ("retry-after-", "retry_after", _retry_after),
    ("flaky-", "flaky", _nonneg_int),
    ("slow-", "slow", _nonneg_float),
    ("stall-", "stall", _nonneg_float),
    ("break-", "break_after", _nonneg_int),
    ("chunks-", "chunks", lambda text: min(_nonneg_int(text), _MAX_CHUNKS)),
    ("delay-", "delay", _milliseconds),
)
_FAIL = re.compile(r"fail-(\d{3})([a-z]*)")


@lru_cache(maxsize=4096)
def _parse_script(model: str) -> _Script:
    """Parse ``model`` into its directives; malformed and unknown directives are ignored."""
    fields: dict[str, Any] = {}
    for part in model.lower().split("+"):
        part = part.strip()
        if part in _FLAGS:
            fields[_FLAGS[part]] = True
            continue
        fail = _FAIL.fullmatch(part)
        if fail:
            status = int(fail.group(1))
            if 400 <= status <= 599:
                fields["fail_status"], fields["fail_variant"] = status, fail.group(2)
            continue
        for prefix, name, convert in _VALUED:
            if part.startswith(prefix):
                with suppress(ValueError):
                    fields[name] = convert(part[len(prefix) :])
                break
    return _Script(**fields)


# --------------------------------------------------------------------------- request helpers


@dataclass(slots=True)
class _Request:
    """One parsed HTTP request."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    keep_alive: bool


class _ProtocolError(Exception):
    """The client broke HTTP/1.1; answered with ``status`` and the connection is closed."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    """Read a chunked request body (rare: the usual clients send ``Content-Length``)."""
    parts: list[bytes] = []
    while True:
        size_line = await reader.readuntil(b"\r\n")
        try:
            size = int(size_line.split(b";", 1)[0].strip(), 16)
        except ValueError:
            raise _ProtocolError(400, "Malformed chunk size in request body.") from None
        if size == 0:
            while (await reader.readuntil(b"\r\n")) != b"\r\n":  # trailers, then the blank line
                pass
            return b"".join(parts)
        parts.append(await reader.readexactly(size))
        await reader.readexactly(2)


async def _read_request(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> _Request | None:
    """Read the next request off the connection, or None at a clean end of stream."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError:
        return None
    except asyncio.LimitOverrunError:
        raise _ProtocolError(431, "Request headers too large.") from None
    lines = head.lstrip(b"\r\n").decode("latin-1").split("\r\n")
    request_line = lines[0].split(" ")
    if len(request_line) != 3 or not request_line[2].startswith("HTTP/1."):
        raise _ProtocolError(400, "Malformed HTTP request line.")
    method, target, version = request_line
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    if headers.get("expect", "").lower() == "100-continue":
        writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
    if "chunked" in headers.get("transfer-encoding", "").lower():
        body = await _read_chunked(reader)
    else:
        try:
            length = int(headers.get("content-length") or 0)
        except ValueError:
            raise _ProtocolError(400, "Malformed Content-Length.") from None
        body = await reader.readexactly(length) if length > 0 else b""
    connection = headers.get("connection", "").lower()
    keep_alive = "close" not in connection if version == "HTTP/1.1" else "keep-alive" in connection
    return _Request(method, target.split("?", 1)[0], headers, body, keep_alive)


@lru_cache(maxsize=64)
def _status_line(status: int) -> bytes:
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = "Unknown"
    return f"HTTP/1.1 {status} {phrase}\r\n".encode()


def _head(
    status: int, content_type: str, keep_alive: bool, headers: Sequence[tuple[str, str]], length: int | None
) -> bytes:
    """The status line and headers; ``length`` None means a chunked body."""
    lines = [f"Content-Type: {content_type}"]
    lines.append("Transfer-Encoding: chunked" if length is None else f"Content-Length: {length}")
    if not keep_alive:
        lines.append("Connection: close")
    lines.extend(f"{name}: {value}" for name, value in headers)
    return _status_line(status) + "\r\n".join(lines).encode("latin-1") + b"\r\n\r\n"


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=_SEPARATORS).encode()


def _error_type(status: int) -> str:
    if status == 429:
        return "rate_limit_error"
    return "server_error" if status >= 500 else "invalid_request_error"


def _error_body(status: int, message: str, code: str | None = None, param: str | None = None) -> bytes:
    error = {"message": message, "type": _error_type(status), "param": param, "code": code}
    return _dumps({"error": error})


def _abort(writer: asyncio.StreamWriter) -> None:
    """Drop the connection with a TCP reset (SO_LINGER 0) where the socket allows it."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with suppress(OSError, AttributeError, ValueError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


# --------------------------------------------------------------------------- reply planning


def _text_of(content: Any) -> str:
    """The text of a message's content: a string, or the text parts of a list."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(
            part["text"]
            for part in content
            if isinstance(part, dict) and part.get("type") == "text" and isinstance(part.get("text"), str)
        )
    return ""


def _messages(body: JSONDict) -> list[JSONDict]:
    messages = body.get("messages")
    if not isinstance(messages, list):
        return []
    return [message for message in messages if isinstance(message, dict)]


def _prompt_tokens(messages: list[JSONDict]) -> int:
    return sum(len(_text_of(message.get("content")).split()) + 4 for message in messages)


def _last_user_text(messages: list[JSONDict]) -> str:
    for message in reversed(messages):
        if message.get("role") == "user":
            return _text_of(message.get("content"))
    return ""


def _first_tool_name(body: JSONDict) -> str:
    tools = body.get("tools")
    if isinstance(tools, list) and tools and isinstance(tools[0], dict):
        function = tools[0].get("function")
        if isinstance(function, dict) and isinstance(function.get("name"), str):
            return str(function["name"])
    return _DEFAULT_TOOL


def _cycle_words(words: list[str], count: int) -> list[str]:
    """Exactly ``count`` words: ``words`` cut, or repeated with a space before each repeat."""
    if count <= len(words):
        return words[:count]
    spaced = [word if word[:1].isspace() else " " + word for word in words]
    return words + list(itertools.islice(itertools.cycle(spaced), count - len(words)))


def _stops(body: JSONDict) -> list[str]:
    stop = body.get("stop")
    if isinstance(stop, str):
        return [stop] if stop else []
    if isinstance(stop, list):
        return [item for item in stop if isinstance(item, str) and item]
    return []


def _int_param(body: JSONDict, *names: str) -> int | None:
    for name in names:
        value = body.get(name)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    return None


@dataclass(slots=True)
class _Reply:
    """What every choice says: the words (content, or tool-call argument fragments) and why it ended."""

    words: list[str]
    finish_reason: str
    n: int
    prompt_tokens: int
    tool_name: str | None = None
    reasoning: list[str] = field(default_factory=list)
    usage: JSONDict = field(init=False)

    def __post_init__(self) -> None:
        completion = (len(self.words) + len(self.reasoning)) * self.n
        self.usage = {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": completion,
            "total_tokens": self.prompt_tokens + completion,
        }


def _plan_reply(body: JSONDict, script: _Script) -> _Reply:
    """Decide the reply of a chat completion from the request and the script."""
    messages = _messages(body)
    n = _int_param(body, "n") or 1
    n = min(max(n, 1), _MAX_CHOICES)
    prompt = _prompt_tokens(messages)
    if script.tools and not (messages and messages[-1].get("role") == "tool"):
        return _Reply(_WORD.findall(_TOOL_ARGUMENTS), "tool_calls", n, prompt, _first_tool_name(body))
    text = _last_user_text(messages)
    response_format = body.get("response_format")
    if isinstance(response_format, dict) and response_format.get("type") in _JSON_FORMATS:
        content = json.dumps({"echo": text})
    else:
        content = "echo: " + text
    words = _WORD.findall(content)
    if script.chunks is not None:
        words = _cycle_words(words, script.chunks)
    finish = "stop"
    stops = _stops(body)
    if stops:
        joined = "".join(words)
        cuts = [index for index in (joined.find(stop) for stop in stops) if index >= 0]
        if cuts:
            kept = joined[: min(cuts)]
            words = _WORD.findall(kept)
            tail = kept[len(kept.rstrip()) :]
            if tail and words:  # keep whitespace before the stop sequence, as OpenAI does
                words[-1] += tail
    limit = _int_param(body, "max_completion_tokens", "max_tokens")
    if limit is not None and 0 <= limit < len(words):
        words, finish = words[:limit], "length"
    return _Reply(words, finish, n, prompt, reasoning=_WORD.findall(_REASONING) if script.reasoning else [])


def _prompt_text(prompt: Any) -> str:
    """The text of a legacy completion's ``prompt``: the string, the first of a list of strings,
    or token ids as their digits."""
    if isinstance(prompt, list) and prompt:
        prompt = prompt[0]
    if isinstance(prompt, list):
        return " ".join(map(str, prompt))
    return prompt if isinstance(prompt, str) else ""


def _embedding_inputs(value: Any) -> list[str] | None:
    """The texts of an embeddings ``input``; token arrays are embedded as their digits."""
    if isinstance(value, str):
        return [value]
    if not isinstance(value, list) or not value:
        return None
    if all(isinstance(item, int) for item in value):
        return [" ".join(map(str, value))]
    texts: list[str] = []
    for item in value:
        if isinstance(item, str):
            texts.append(item)
        elif isinstance(item, list) and all(isinstance(token, int) for token in item):
            texts.append(" ".join(map(str, item)))
        else:
            return None
    return texts


def _embedding(text: str) -> list[float]:
    """A unit vector of 8 floats taken from the text's SHA-256: same text, same vector."""
    raw = struct.unpack("<8I", hashlib.sha256(text.encode()).digest())
    vector = [value / 2**31 - 1.0 for value in raw]
    norm = sum(value * value for value in vector) ** 0.5 or 1.0
    return [round(value / norm, 6) for value in vector]


# --------------------------------------------------------------------------- the server


class MockUpstream:
    """The mock provider: ``await start()`` (or ``async with``) and point a client at ``base_url``."""

    max_records: int = MAX_RECORDS

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.host = host
        self.port = port
        self.base_url = ""
        self.requests: list[JSONDict] = []
        #: TCP connections accepted so far; lets tests see keep-alive reuse.
        self.connections = 0
        #: The model strings of streams whose client hung up during their stall (a cancelled call).
        self.closed: list[str] = []
        self._flaky: dict[str, int] = {}
        self._ids = itertools.count(1)
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._closing = False

    # ----------------------------------------------------------------- lifecycle

    async def start(self) -> None:
        """Bind and listen; sets ``port`` to the bound port and ``base_url``."""
        bind = "127.0.0.1" if self.host == "localhost" else self.host  # one socket, one port
        self._closing = False
        self._server = await asyncio.start_server(
            self._serve_connection, bind, self.port, limit=_HEADER_LIMIT
        )
        self.port = int(self._server.sockets[0].getsockname()[1])
        netloc = f"[{self.host}]" if ":" in self.host else self.host
        self.base_url = f"http://{netloc}:{self.port}/v1"

    async def stop(self) -> None:
        """Stop listening and drop every open connection, including ones mid-response."""
        server, self._server = self._server, None
        if server is None:
            return
        self._closing = True
        server.close()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        await server.wait_closed()

    def reset(self) -> None:
        """Forget the recorded requests and the ``flaky`` counters."""
        self.requests.clear()
        self._flaky.clear()

    def heal(self, model: str) -> None:
        """A ``flaky-<n>`` model string succeeds from now on, as an upstream that recovered."""
        self._flaky[model] = 1 << 62

    async def __aenter__(self) -> MockUpstream:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    # ----------------------------------------------------------------- connection loop

    async def _serve_connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Serve requests off one connection, in order, until either side ends it."""
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        self.connections += 1
        _READER.set(reader)  # this connection's task only: a stall watches it for the client leaving
        try:
            while not self._closing:
                try:
                    request = await _read_request(reader, writer)
                except _ProtocolError as exc:
                    body = _error_body(exc.status, exc.message)
                    writer.write(_head(exc.status, "application/json", False, (), len(body)) + body)
                    await writer.drain()
                    break
                if request is None or not await self._dispatch(request, writer):
                    break
                await writer.drain()
        except (ConnectionError, OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass  # the client went away, or broke framing mid-body: nothing to answer
        finally:
            if task is not None:
                self._tasks.discard(task)
            writer.close()
            with suppress(Exception):
                await writer.wait_closed()

    async def _dispatch(self, request: _Request, writer: asyncio.StreamWriter) -> bool:
        """Answer one request; False when the connection must end."""
        body: Any = None
        malformed = False
        if request.body:
            try:
                body = json.loads(request.body)
            except ValueError:
                malformed = True
        self._record(request, body)
        route = (request.method, request.path)
        if route in (
            ("POST", "/v1/chat/completions"),
            ("POST", "/v1/embeddings"),
            ("POST", "/v1/completions"),
            ("POST", "/v1/responses"),
        ):
            if malformed or not isinstance(body, dict):
                message = "We could not parse the JSON body of your request. It must be a JSON object."
                return self._send(writer, request, 400, _error_body(400, message))
            return await self._scripted(request, writer, body)
        if route == ("GET", "/v1/models"):
            return self._send(writer, request, 200, _MODELS_BODY)
        if route == ("GET", "/health"):
            return self._send(writer, request, 200, _HEALTH_BODY)
        message = f"Invalid URL ({request.method} {request.path})"
        return self._send(writer, request, 404, _error_body(404, message))

    def _record(self, request: _Request, body: Any) -> None:
        records = self.requests
        records.append(
            {"method": request.method, "path": request.path, "headers": request.headers, "json": body}
        )
        if len(records) > self.max_records:
            del records[: len(records) - self.max_records]

    def _send(
        self,
        writer: asyncio.StreamWriter,
        request: _Request,
        status: int,
        body: bytes,
        headers: Sequence[tuple[str, str]] = (),
    ) -> bool:
        """Write a whole response with a ``Content-Length`` body; returns whether to keep going."""
        writer.write(_head(status, "application/json", request.keep_alive, headers, len(body)) + body)
        return request.keep_alive

    # ----------------------------------------------------------------- scripted endpoints

    async def _scripted(self, request: _Request, writer: asyncio.StreamWriter, body: JSONDict) -> bool:
        """Chat completions and embeddings: run the script in the model string."""
        model = body.get("model")
        model = model if isinstance(model, str) else ""
        script = _parse_script(model)
        headers: list[tuple[str, str]] = []
        if request.headers.get("x-mock-echo-headers") == "1" and "authorization" in request.headers:
            headers.append(("x-mock-saw-authorization", request.headers["authorization"]))
        failing = True
        if script.flaky:
            seen = self._flaky.get(model, 0)
            self._flaky[model] = seen + 1
            failing = seen < script.flaky
        if script.slow:
            await asyncio.sleep(script.slow)
        if failing:
            handled = self._fail(request, writer, body, script, headers)
            if handled is not None:
                return handled
        if request.path == "/v1/embeddings":
            return self._embeddings(request, writer, body, model, headers)
        if request.path == "/v1/completions":
            return await self._text(request, writer, body, model, script, failing, headers)
        if request.path == "/v1/responses":
            reply = _plan_reply(_responses_as_chat(body), script)
            if body.get("stream") is True:
                break_after = script.break_after if failing else None
                return await self._response_stream(writer, request, model, reply, break_after, headers)
            answer = _response(
                f"resp_mock{next(self._ids)}", model, reply, "completed", _response_output(reply)
            )
            return self._send(writer, request, 200, _dumps(answer), headers)
        reply = _plan_reply(body, script)
        if body.get("stream") is True:
            break_after = script.break_after if failing else None
            return await self._stream(writer, request, body, model, script, reply, break_after, headers)
        return self._send(writer, request, 200, self._completion(model, reply), headers)

    def _fail(
        self,
        request: _Request,
        writer: asyncio.StreamWriter,
        body: JSONDict,
        script: _Script,
        headers: list[tuple[str, str]],
    ) -> bool | None:
        """Apply the script's failure mode, if it has one; None means answer normally."""
        if script.reset:
            _abort(writer)
            return False
        if script.garbage:
            return self._send(writer, request, 200, _GARBAGE_BODY, headers)
        if script.garbage_valid_json:
            return self._send(writer, request, 200, _GARBAGE_VALID_BODY, headers)
        status = script.fail_status
        if status is None:
            if not script.flaky or script.break_after is not None:
                return None
            status = 500
        if script.retry_after is not None:
            headers.append(("Retry-After", script.retry_after))
        return self._send(
            writer, request, status, self._failure_body(status, script.fail_variant, body), headers
        )

    @staticmethod
    def _failure_body(status: int, variant: str, body: JSONDict) -> bytes:
        if status == 400 and variant == "ctx":
            tokens = _prompt_tokens(_messages(body))
            message = (
                "This model's maximum context length is 8192 tokens. However, your messages resulted in "
                f"{max(tokens, 8193)} tokens. Please reduce the length of the messages."
            )
            return _error_body(400, message, "context_length_exceeded", "messages")
        if status == 400 and variant == "policy":
            message = (
                "The response was filtered due to the prompt triggering content management policy. "
                "Please modify your prompt and retry."
            )
            return _error_body(400, message, "content_filter", "prompt")
        if status == 401:
            return _error_body(401, "Incorrect API key provided: sk-abc...xyz.", "invalid_api_key")
        return _error_body(status, f"mock failure {status}")

    def _completion(self, model: str, reply: _Reply) -> bytes:
        """A complete ``chat.completion`` object."""
        message: JSONDict = {"role": "assistant", "content": "".join(reply.words), "refusal": None}
        if reply.reasoning:
            message["reasoning_content"] = "".join(reply.reasoning)
        if reply.tool_name is not None:
            message["content"] = None
            message["tool_calls"] = [
                {
                    "id": _TOOL_CALL_ID,
                    "type": "function",
                    "function": {"name": reply.tool_name, "arguments": "".join(reply.words)},
                }
            ]
        choices = [
            {"index": index, "message": message, "logprobs": None, "finish_reason": reply.finish_reason}
            for index in range(reply.n)
        ]
        completion = {
            "id": f"chatcmpl-mock{next(self._ids)}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "choices": choices,
            "usage": reply.usage,
            "system_fingerprint": None,
        }
        return _dumps(completion)

    async def _stream(
        self,
        writer: asyncio.StreamWriter,
        request: _Request,
        body: JSONDict,
        model: str,
        script: _Script,
        reply: _Reply,
        break_after: int | None,
        headers: list[tuple[str, str]],
    ) -> bool:
        """Send the reply as SSE ``chat.completion.chunk`` events, one write and drain each."""
        headers.append(("Cache-Control", "no-cache"))
        writer.write(_head(200, "text/event-stream", request.keep_alive, headers, None))
        await writer.drain()
        if script.stall and await _client_left_within(script.stall):
            self.closed.append(model)
            return False
        options = body.get("stream_options")
        include_usage = isinstance(options, dict) and options.get("include_usage") is True
        base: JSONDict = {
            "id": f"chatcmpl-mock{next(self._ids)}",
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": model,
            "system_fingerprint": None,
        }
        chunks = _ChunkTemplate(base, include_usage)

        async def send(index: int, delta: bytes, finish_reason: bytes = b"null") -> None:
            writer.write(chunks.frame(index, delta, finish_reason))
            await writer.drain()

        tool = reply.tool_name
        first = _dumps(_first_delta(tool))
        for index in range(reply.n):
            await send(index, first)
        for word in reply.reasoning:
            thought = b'{"reasoning_content":%s}' % json.dumps(word).encode()
            for index in range(reply.n):
                await send(index, thought)
        for position, word in enumerate(reply.words):
            if break_after is not None and position >= break_after:
                break
            if script.delay:
                await asyncio.sleep(script.delay)
            delta = _content_delta(tool, word)
            for index in range(reply.n):
                await send(index, delta)
        if break_after is not None:
            writer.close()  # a clean FIN mid-body: the client sees a truncated chunked stream
            return False
        finish = _dumps(reply.finish_reason)
        for index in range(reply.n):
            await send(index, b"{}", finish)
        if include_usage:
            writer.write(_frame(_dumps({**base, "choices": [], "usage": reply.usage})))
        writer.write(_DONE_AND_END)
        return request.keep_alive

    async def _text(
        self,
        request: _Request,
        writer: asyncio.StreamWriter,
        body: JSONDict,
        model: str,
        script: _Script,
        failing: bool,
        headers: list[tuple[str, str]],
    ) -> bool:
        """A legacy ``text_completion``: the chat reply to the prompt as one user message."""
        chat = {**body, "messages": [{"role": "user", "content": _prompt_text(body.get("prompt"))}]}
        reply = _plan_reply(chat, _Script(chunks=script.chunks))
        base: JSONDict = {
            "id": f"cmpl-mock{next(self._ids)}",
            "object": "text_completion",
            "created": int(time.time()),
            "model": model,
        }

        def choice(index: int, text: str, finish: str | None) -> JSONDict:
            return {"text": text, "index": index, "logprobs": None, "finish_reason": finish}

        if body.get("stream") is not True:
            text = "".join(reply.words)
            choices = [choice(index, text, reply.finish_reason) for index in range(reply.n)]
            return self._send(
                writer, request, 200, _dumps({**base, "choices": choices, "usage": reply.usage}), headers
            )
        headers.append(("Cache-Control", "no-cache"))
        writer.write(_head(200, "text/event-stream", request.keep_alive, headers, None))
        break_after = script.break_after if failing else None
        for position, word in enumerate(reply.words):
            if break_after is not None and position >= break_after:
                break
            if script.delay:
                await asyncio.sleep(script.delay)
            for index in range(reply.n):
                writer.write(_frame(_dumps({**base, "choices": [choice(index, word, None)]})))
            await writer.drain()
        if break_after is not None:
            writer.close()  # a clean FIN mid-body: the client sees a truncated chunked stream
            return False
        for index in range(reply.n):
            writer.write(_frame(_dumps({**base, "choices": [choice(index, "", reply.finish_reason)]})))
        options = body.get("stream_options")
        if isinstance(options, dict) and options.get("include_usage") is True:
            writer.write(_frame(_dumps({**base, "choices": [], "usage": reply.usage})))
        writer.write(_DONE_AND_END)
        return request.keep_alive

    def _embeddings(
        self,
        request: _Request,
        writer: asyncio.StreamWriter,
        body: JSONDict,
        model: str,
        headers: list[tuple[str, str]],
    ) -> bool:
        """An embeddings list; float arrays, or base64 float32 when ``encoding_format`` says so."""
        texts = _embedding_inputs(body.get("input"))
        if texts is None:
            message = "'input' must be a string, a list of strings or a list of token arrays."
            return self._send(writer, request, 400, _error_body(400, message, None, "input"), headers)
        as_base64 = body.get("encoding_format") == "base64"
        data = []
        for index, text in enumerate(texts):
            vector = _embedding(text)
            encoded: Any = (
                base64.b64encode(struct.pack(f"<{_EMBEDDING_SIZE}f", *vector)).decode()
                if as_base64
                else vector
            )
            data.append({"object": "embedding", "index": index, "embedding": encoded})
        tokens = sum(len(text.split()) for text in texts)
        result = {
            "object": "list",
            "data": data,
            "model": model,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }
        return self._send(writer, request, 200, _dumps(result), headers)

    async def _response_stream(
        self,
        writer: asyncio.StreamWriter,
        request: _Request,
        model: str,
        reply: _Reply,
        break_after: int | None,
        headers: list[tuple[str, str]],
    ) -> bool:
        """The Responses API's event stream for ``reply`` (one choice), one write and drain each."""
        headers.append(("Cache-Control", "no-cache"))
        writer.write(_head(200, "text/event-stream", request.keep_alive, headers, None))
        response_id = f"resp_mock{next(self._ids)}"
        sequence = itertools.count()

        async def send(kind: str, **data: Any) -> None:
            payload = _dumps({"type": kind, **data, "sequence_number": next(sequence)})
            event = b"event: %s\ndata: %s\n\n" % (kind.encode(), payload)
            writer.write(b"%x\r\n%s\r\n" % (len(event), event))
            await writer.drain()

        await send("response.created", response=_response(response_id, model, reply, "in_progress", []))
        await send("response.in_progress", response=_response(response_id, model, reply, "in_progress", []))
        (item,) = _response_output(reply)
        added: JSONDict = {**item, "status": "in_progress"}
        if reply.tool_name is None:
            added["content"] = []
        else:
            added["arguments"] = ""
        await send("response.output_item.added", output_index=0, item=added)
        ids = {"item_id": item["id"], "output_index": 0}
        part = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
        if reply.tool_name is None:
            await send("response.content_part.added", **ids, content_index=0, part=part)
        for position, word in enumerate(reply.words):
            if break_after is not None and position >= break_after:
                writer.close()
                return False
            if reply.tool_name is None:
                await send("response.output_text.delta", **ids, content_index=0, delta=word, logprobs=[])
            else:
                await send("response.function_call_arguments.delta", **ids, delta=word)
        if reply.tool_name is None:
            text = "".join(reply.words)
            await send("response.output_text.done", **ids, content_index=0, text=text, logprobs=[])
            await send("response.content_part.done", **ids, content_index=0, part={**part, "text": text})
        else:
            arguments = "".join(reply.words)
            await send(
                "response.function_call_arguments.done", **ids, name=reply.tool_name, arguments=arguments
            )
        await send("response.output_item.done", output_index=0, item=item)
        await send("response.completed", response=_response(response_id, model, reply, "completed", [item]))
        writer.write(b"0\r\n\r\n")
        return request.keep_alive


def _responses_as_chat(body: JSONDict) -> JSONDict:
    """A Responses request as the chat body the script reads."""
    messages: list[JSONDict] = []
    if isinstance(body.get("instructions"), str):
        messages.append({"role": "system", "content": body["instructions"]})
    value = body.get("input")
    if isinstance(value, str):
        messages.append({"role": "user", "content": value})
    for item in value if isinstance(value, list) else ():
        if isinstance(item, dict) and item.get("type", "message") == "message":
            content = item.get("content")
            if isinstance(content, list):
                content = [
                    {"type": "text", "text": part.get("text")}
                    for part in content
                    if isinstance(part, dict) and part.get("type") in ("input_text", "output_text")
                ]
            messages.append({"role": item.get("role"), "content": content})
        elif isinstance(item, dict) and item.get("type") == "function_call_output":
            # a tool's result: the ``tools`` script then answers with text
            messages.append({"role": "tool", "content": str(item.get("output"))})
    chat: JSONDict = {"messages": messages}
    tools = body.get("tools")
    if isinstance(tools, list):
        chat["tools"] = [{"function": {"name": t.get("name")}} for t in tools if isinstance(t, dict)]
    text = body.get("text")
    if isinstance(text, dict) and isinstance(text.get("format"), dict):
        chat["response_format"] = {"type": text["format"].get("type")}
    if "max_output_tokens" in body:
        chat["max_tokens"] = body["max_output_tokens"]
    return chat


def _response_output(reply: _Reply) -> list[JSONDict]:
    if reply.tool_name is not None:
        return [
            {
                "id": "fc_mock1",
                "type": "function_call",
                "call_id": _TOOL_CALL_ID,
                "name": reply.tool_name,
                "arguments": "".join(reply.words),
                "status": "completed",
            }
        ]
    text = {"type": "output_text", "text": "".join(reply.words), "annotations": [], "logprobs": []}
    return [
        {"id": "msg_mock1", "type": "message", "role": "assistant", "status": "completed", "content": [text]}
    ]


def _response(response_id: str, model: str, reply: _Reply, status: str, output: list[JSONDict]) -> JSONDict:
    """A ``response`` object with the settings OpenAI echoes at their defaults."""
    usage = None
    if status == "completed":
        prompt, completion = reply.usage["prompt_tokens"], reply.usage["completion_tokens"]
        usage = {
            "input_tokens": prompt,
            "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
            "output_tokens": completion,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": prompt + completion,
        }
    incomplete = status == "completed" and reply.finish_reason == "length"
    return {
        "id": response_id,
        "object": "response",
        "created_at": int(time.time()),
        "status": "incomplete" if incomplete else status,
        "error": None,
        "incomplete_details": {"reason": "max_output_tokens"} if incomplete else None,
        "instructions": None,
        "model": model,
        "output": output,
        "parallel_tool_calls": True,
        "tool_choice": "auto",
        "tools": [],
        "temperature": 1.0,
        "top_p": 1.0,
        "metadata": {},
        **({"usage": usage} if usage is not None else {}),
    }


def _first_delta(tool_name: str | None) -> JSONDict:
    """The role chunk's delta; for a tool call it also opens the call, as OpenAI does."""
    if tool_name is None:
        return {"role": "assistant", "content": ""}
    call = {
        "index": 0,
        "id": _TOOL_CALL_ID,
        "type": "function",
        "function": {"name": tool_name, "arguments": ""},
    }
    return {"role": "assistant", "content": None, "tool_calls": [call]}


def _content_delta(tool_name: str | None, word: str) -> bytes:
    """A content (or tool-call argument) delta, encoded; the word is the only variable part."""
    encoded = json.dumps(word).encode()
    if tool_name is None:
        return b'{"content":%s}' % encoded
    return b'{"tool_calls":[{"index":0,"function":{"arguments":%s}}]}' % encoded


def _frame(data: bytes) -> bytes:
    """One SSE ``data:`` event as one HTTP chunk."""
    payload = b"data: %s\n\n" % data
    return b"%x\r\n%s\r\n" % (len(payload), payload)


class _ChunkTemplate:
    """What every chunk of one stream shares, encoded once: only index, delta and finish vary.

    Serialising each chunk as a dict cost about half the mock's time per streamed event.
    """

    __slots__ = ("_head", "_tail")

    def __init__(self, base: JSONDict, include_usage: bool) -> None:
        self._head = _dumps(base)[:-1] + b',"choices":[{"index":'
        self._tail = b"}]" + (b',"usage":null}' if include_usage else b"}")

    def frame(self, index: int, delta: bytes, finish_reason: bytes) -> bytes:
        return _frame(
            b'%s%d,"delta":%s,"logprobs":null,"finish_reason":%s%s'
            % (self._head, index, delta, finish_reason, self._tail)
        )


# --------------------------------------------------------------------------- sync and CLI entry points


def run_in_thread(host: str = "127.0.0.1", port: int = 0) -> tuple[MockUpstream, Callable[[], None]]:
    """Run a mock on its own event loop in a daemon thread; returns it, bound, and a stop function.

    For sync tests and the dev stack, which have no event loop to share. The stop function is
    idempotent and waits for the thread to finish. A failure to bind is raised here.
    """
    mock = MockUpstream(host, port)
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    failure: list[BaseException] = []

    def serve() -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(mock.start())
        except BaseException as exc:
            failure.append(exc)
            loop.close()
            ready.set()
            return
        ready.set()
        try:
            loop.run_forever()
        finally:
            loop.run_until_complete(mock.stop())
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    thread = threading.Thread(target=serve, name=f"mockupstream-{host}:{port}", daemon=True)
    thread.start()
    ready.wait()
    if failure:
        thread.join()
        raise failure[0]

    def stop() -> None:
        with suppress(RuntimeError):  # the loop is already closed: stopped before
            loop.call_soon_threadsafe(loop.stop)
        if thread is not threading.current_thread():
            thread.join(timeout=10)

    return mock, stop


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


async def _serve_forever(host: str, port: int) -> None:
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        with suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(signum, stopping.set)
    async with MockUpstream(host, port) as mock:
        print(f"mockupstream listening on {mock.base_url}", flush=True)
        await stopping.wait()


def main(argv: Sequence[str] | None = None) -> int:
    """CLI: serve on a loopback address until SIGINT/SIGTERM. Exits 2 for a non-loopback host."""
    parser = argparse.ArgumentParser(
        prog="python -m switchboard.devtools.mockupstream",
        description="A scriptable mock OpenAI-compatible provider (see the module docstring).",
    )
    parser.add_argument("--host", default="127.0.0.1", help="loopback address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=9100, help="port to bind, 0 for any (default 9100)")
    args = parser.parse_args(argv)
    if not _is_loopback(args.host):
        parser.error(f"refusing to bind non-loopback host {args.host!r}: the mock is for local use only")
    loop_factory: Callable[[], asyncio.AbstractEventLoop] | None = None
    try:
        import uvloop

        loop_factory = uvloop.new_event_loop
    except ImportError:
        pass
    with suppress(KeyboardInterrupt), asyncio.Runner(loop_factory=loop_factory) as runner:
        runner.run(_serve_forever(args.host, args.port))
    return 0


if __name__ == "__main__":
    sys.exit(main())
