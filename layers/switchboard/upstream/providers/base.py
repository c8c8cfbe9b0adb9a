"""What every provider offers the engine, and the shared machinery for HTTP upstreams.

A provider turns one OpenAI-format call into one upstream attempt. The engine owns retries,
fallback, timeouts and streaming commit; a provider only speaks its upstream's wire format.
``HttpProvider`` splits that into pure transforms (build the request, parse a response, parse a
stream event, classify an error) around one small piece of I/O, so each transform is tested from
recorded fixtures without a network.
"""

from __future__ import annotations

import email.utils
import functools
import json
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

import httpx

from switchboard.core.errors import AttemptFailed, ErrorClass, redact
from switchboard.core.schemas import ChatCompletion, ChatCompletionChunk, ChatCompletionRequest
from switchboard.core.sse import SSEEvent, iter_events
from switchboard.routing.planner import PlannedTarget

if TYPE_CHECKING:
    from switchboard.core.schemas import EmbeddingRequest, EmbeddingResponse
    from switchboard.routing.document import ProviderConfig

__all__ = [
    "MAX_ERROR_BODY",
    "Call",
    "EmbedCall",
    "HttpProvider",
    "Provider",
    "StreamChunk",
    "UpstreamRequest",
    "error_body",
    "parse_retry_after",
    "tool_call_parts",
    "unsupported",
]

# An upstream error body is read for its message only; a larger one is cut here.
MAX_ERROR_BODY = 64 * 1024


async def error_body(response: httpx.Response) -> bytes:
    """A streamed answer's error body, read up to ``MAX_ERROR_BODY`` (an error page may be large,
    and only its start says what went wrong). ``aiter_bytes``, not ``aiter_raw``: httpx asks for
    gzip, so the body may come compressed."""
    content = b""
    async for part in response.aiter_bytes():
        content += part
        if len(content) > MAX_ERROR_BODY:
            break
    return content


@dataclass(slots=True)
class Call:
    """One attempt's inputs: the client's request, the target, its credential and the HTTP client."""

    request: ChatCompletionRequest
    target: PlannedTarget
    api_key: str | None
    http: httpx.AsyncClient
    stream: bool


@dataclass(slots=True)
class EmbedCall:
    """One embeddings attempt's inputs."""

    request: EmbeddingRequest
    target: PlannedTarget
    api_key: str | None
    http: httpx.AsyncClient


@dataclass(slots=True)
class StreamChunk:
    """A chunk for the client. ``raw`` is the upstream's own JSON when it can be forwarded as is."""

    chunk: ChatCompletionChunk
    raw: bytes | None = None


@dataclass(frozen=True, slots=True)
class UpstreamRequest:
    method: str
    url: str
    headers: dict[str, str]
    content: bytes


class Provider(Protocol):
    """One upstream family. ``stream`` ends normally only when the upstream finished properly.

    ``default_base_url`` fills a provider entry that names none; ``check_config`` rejects an entry
    the family cannot use (it runs when the routing document is validated). ``embeddings`` says
    whether ``embed`` is implemented, so that the document can refuse an embeddings route to a
    family that cannot serve it.
    """

    default_base_url: ClassVar[str | None]
    embeddings: ClassVar[bool]

    @classmethod
    def check_config(cls, config: ProviderConfig) -> None: ...

    async def complete(self, call: Call) -> tuple[ChatCompletion, bytes | None]: ...

    def stream(self, call: Call) -> AsyncIterator[StreamChunk]: ...

    async def embed(self, call: EmbedCall) -> tuple[EmbeddingResponse, bytes | None]: ...


def unsupported(call: Call | EmbedCall, message: str, param: str | None = None) -> AttemptFailed:
    """A request this target cannot honour faithfully: a clear 400, never a silent wrong answer."""
    return AttemptFailed(
        ErrorClass.CLIENT,
        f"{call.target.label} cannot serve this request: {message}",
        status=400,
        upstream_type="invalid_request_error",
        upstream_code="unsupported_parameter",
        upstream_param=param,
    )


def parse_retry_after(headers: Mapping[str, str], now: float | None = None) -> float | None:
    """Seconds to wait from ``retry-after-ms``, or ``retry-after`` as seconds or an HTTP date."""
    ms = headers.get("retry-after-ms")
    if ms:
        try:
            return max(0.0, float(ms) / 1000)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError):
        return None
    return max(0.0, when - (time.time() if now is None else now))


def _error_fields(content: bytes) -> tuple[str, str | None, str | None, str | None]:
    """message, type, code, param from an error body of any common shape."""
    try:
        body = json.loads(content[:MAX_ERROR_BODY])
    except (ValueError, UnicodeDecodeError):
        text = content[:300].decode("utf-8", "replace").strip()
        return text or "no error body", None, None, None
    err = body.get("error", body) if isinstance(body, dict) else body
    if isinstance(err, dict):
        code = err.get("code")
        param = err.get("param")
        return (
            str(err.get("message") or err.get("detail") or "no error message"),
            str(err["type"]) if isinstance(err.get("type"), str) else None,
            str(code) if code is not None else None,
            str(param) if isinstance(param, str) else None,
        )
    return str(err)[:300], None, None, None


_CONTEXT_HINTS = (
    "context length",
    "context_length",
    "maximum context",
    "context window",
    "context limit",
    "too many tokens",
    "too many input tokens",
    "prompt is too long",  # Anthropic
    "input is too long",  # Bedrock
)
_POLICY_HINTS = ("content_filter", "content management policy", "content_policy", "safety system")


def classify_http_error(status: int, content: bytes, headers: Mapping[str, str], label: str) -> AttemptFailed:
    """Map an upstream HTTP failure to its error class (see ``switchboard.core.errors``)."""
    message, etype, code, param = _error_fields(content)
    message = redact(message)[:500]
    lowered = f"{code or ''} {etype or ''} {message}".lower()
    if status == 429:
        cls = ErrorClass.RATE_LIMIT
    elif status == 408:
        cls = ErrorClass.TIMEOUT
    elif status >= 500 or status == 409:
        cls = ErrorClass.SERVER
    elif status in (400, 413, 422) and any(h in lowered for h in _CONTEXT_HINTS):
        cls = ErrorClass.CONTEXT_WINDOW
    elif status in (400, 403, 422) and any(h in lowered for h in _POLICY_HINTS):
        cls = ErrorClass.CONTENT_POLICY
    else:
        cls = ErrorClass.CLIENT
    if status in (401, 403) and cls is ErrorClass.CLIENT:
        # The gateway's own provider credential failed: say so, never echo the upstream's text.
        message = f"{label} rejected the gateway's credentials"
    return AttemptFailed(
        cls,
        f"{label}: {message}",
        status=status,
        retry_after_s=parse_retry_after(headers),
        upstream_type=etype,
        upstream_code=code,
        upstream_param=param,
    )


@functools.lru_cache(maxsize=1024)
def _parsed_url(url: str) -> httpx.URL:
    """Each upstream URL parsed once (httpx parses a ``str`` on every request: ~20 us)."""
    return httpx.URL(url)


class HttpProvider:
    """Base for upstreams reached over HTTP with JSON bodies and SSE streams."""

    default_base_url: ClassVar[str | None] = None
    embeddings: ClassVar[bool] = False

    @classmethod
    def check_config(cls, config: ProviderConfig) -> None:
        """Raise ``ValueError`` for a provider entry this family cannot use."""
        if config.base_url is None:
            raise ValueError(f"kind {config.kind!r} needs a base_url")

    async def embed(self, call: EmbedCall) -> tuple[EmbeddingResponse, bytes | None]:
        raise unsupported(call, "this provider family offers no embeddings")

    def build_request(self, call: Call) -> UpstreamRequest:
        raise NotImplementedError

    def parse_response(self, content: bytes, call: Call) -> tuple[ChatCompletion, bytes | None]:
        raise NotImplementedError

    def parse_event(self, event: SSEEvent, call: Call, state: dict[str, Any]) -> list[StreamChunk] | None:
        """Chunks for one event; ``None`` when the event ends the stream properly."""
        raise NotImplementedError

    def finished(self, state: dict[str, Any]) -> bool:
        """Whether an upstream that closed without an end marker had in fact finished."""
        return False

    def classify(self, status: int, content: bytes, headers: Mapping[str, str], call: Call) -> AttemptFailed:
        return classify_http_error(status, content, headers, call.target.provider_name)

    def _send(self, call: Call, stream: bool) -> httpx.Request:
        spec = self.build_request(call)
        timeouts = call.target.timeouts
        return call.http.build_request(
            spec.method,
            _parsed_url(spec.url),
            headers=spec.headers,
            content=spec.content,
            timeout=httpx.Timeout(timeouts.total_s, connect=timeouts.connect_s),
        )

    async def complete(self, call: Call) -> tuple[ChatCompletion, bytes | None]:
        response = await call.http.send(self._send(call, stream=False))
        content = await response.aread()
        if response.status_code != 200:
            raise self.classify(response.status_code, content, response.headers, call)
        return self.parse_response(content, call)

    async def stream(self, call: Call) -> AsyncIterator[StreamChunk]:
        response = await call.http.send(self._send(call, stream=True), stream=True)
        try:
            if response.status_code != 200:
                content = await error_body(response)
                raise self.classify(response.status_code, content, response.headers, call)
            state: dict[str, Any] = {}
            async for event in iter_events(response.aiter_bytes()):
                chunks = self.parse_event(event, call, state)
                if chunks is None:
                    return
                for chunk in chunks:
                    yield chunk
            if not self.finished(state):
                raise AttemptFailed(
                    ErrorClass.SERVER,
                    f"{call.target.provider_name}: upstream stream ended before it finished",
                )
        finally:
            await response.aclose()


def tool_call_parts(call: Call, tool_call: Mapping[str, Any]) -> tuple[Any, Any, dict[str, Any]]:
    """An OpenAI assistant tool call as (id, function name, arguments object) for providers whose
    wire format carries the arguments as JSON, not as a string (Anthropic, Bedrock)."""
    function = tool_call.get("function") or {}
    try:
        arguments = json.loads(function.get("arguments") or "{}")
    except ValueError:
        raise unsupported(call, "tool call arguments that are not JSON", "messages") from None
    if not isinstance(arguments, dict):
        raise unsupported(call, "tool call arguments that are not a JSON object", "messages")
    return tool_call.get("id"), function.get("name"), arguments
