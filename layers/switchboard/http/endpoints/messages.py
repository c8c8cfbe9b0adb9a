"""``POST /v1/messages``: Anthropic's Messages API, inbound, through the same planner and engine.

Each target of the plan is served in its own way:

* an Anthropic target gets the client's body as sent, with only ``model`` replaced, and its answer
  (JSON or the SSE events) goes back untouched: no lossy round trip;
* any other target gets the request converted to OpenAI chat (``anthropic_format``), and its
  answer converted back.

So a fallback chain may mix families. Retries, fallback and the streaming commit are the engine's
(``Engine.run`` / ``Engine.run_stream``): until the first content event nothing reaches the client;
after it, a failure ends the stream with an Anthropic ``error`` event, never a silent cut.
Errors come in Anthropic's envelope (``{"type": "error", "error": {"type", "message"}}``) so that
the Anthropic SDK and Claude-based tools read them as they would Anthropic's.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import Response

from switchboard.billing.metering import Meter
from switchboard.core import jsonbody
from switchboard.core.errors import AttemptFailed, ErrorClass, GatewayError, InvalidRequest
from switchboard.core.redaction import scrub
from switchboard.core.schemas import ChatCompletionRequest
from switchboard.core.sse import SSEEvent
from switchboard.http.endpoints.anthropic_format import (
    EventTranslator,
    MessagesRequest,
    Unconvertible,
    can_reason,
    fold_system,
    from_openai,
    to_openai,
    unsigned_thinking_dropped,
)
from switchboard.http.pipeline import Answer, Context, Endpoint, Streamed
from switchboard.http.request import error_headers
from switchboard.routing.decide import with_metadata
from switchboard.routing.planner import PlannedTarget
from switchboard.upstream import providers
from switchboard.upstream.engine import Engine, HeldStream, check_modalities
from switchboard.upstream.providers.anthropic import Anthropic, Relay, anthropic_usage
from switchboard.upstream.providers.base import StreamChunk

__all__ = [
    "COUNT_TOKENS",
    "MESSAGES",
    "CountTokens",
    "Messages",
    "anthropic_error",
    "estimate_input_tokens",
]

_JSON = "application/json"
_CLIENT_HEADERS = ("anthropic-version", "anthropic-beta")
_SYSTEM_TURNS_BETA = "mid-conversation-system-"
_OUTPUT = frozenset({"content_block_delta", "message_delta"})

# Anthropic's error type for each status (https://docs.anthropic.com/en/api/errors).
_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    529: "overloaded_error",
}


def _error_type(status: int) -> str:
    return _TYPES.get(status, "api_error" if status >= 500 else "invalid_request_error")


def anthropic_error(exc: GatewayError, headers: dict[str, str]) -> Response:
    """A gateway error in Anthropic's envelope, status and headers unchanged."""
    body = {"type": "error", "error": {"type": _error_type(exc.status), "message": scrub(exc.message)}}
    return Response(json.dumps(body), exc.status, error_headers(exc, headers), _JSON)


@dataclass(slots=True)
class _Body:
    """A /v1/messages request: the body as sent, its checked form, and its OpenAI chat form by
    ``stream`` and whether the target reasons (converted once: its dropped parameters are logged
    once; a target that reasons gets thinking as ``reasoning_effort``)."""

    raw: dict[str, Any]
    parsed: MessagesRequest
    converted: dict[tuple[bool, bool], ChatCompletionRequest] = field(default_factory=dict)

    @property
    def model(self) -> str:
        return self.parsed.model


def _parse(raw: bytes) -> _Body:
    body = jsonbody.load_object(raw)
    try:
        return _Body(body, MessagesRequest.model_validate(body))
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        raise InvalidRequest(f"{where}: {first['msg']}", param=where) from None


def native_body(body: dict[str, Any], target: PlannedTarget, client: dict[str, str]) -> dict[str, Any]:
    """The body an Anthropic target gets (model aside): the client's, without the unsigned
    thinking blocks of converted answers (``unsigned_thinking_dropped``), with its ``system``
    turns folded (``fold_system``) unless a ``mid-conversation-system`` beta, the client's or the
    provider's, says the API takes them as they are (Claude Code sends that beta)."""
    body = unsigned_thinking_dropped(body)
    betas = ",".join((target.provider.headers.get("anthropic-beta", ""), client.get("anthropic-beta", "")))
    if any(beta.strip().startswith(_SYSTEM_TURNS_BETA) for beta in betas.split(",")):
        return body
    return fold_system(body)


class _Session:
    """One /v1/messages request: how each target of its plan is called."""

    def __init__(self, engine: Engine, request: _Body, client: dict[str, str]):
        self.engine = engine
        self.body = request.raw
        self.parsed = request.parsed
        self.client = client
        self._converted = request.converted

    def _openai(self, target: PlannedTarget, stream: bool) -> ChatCompletionRequest:
        key = (stream, _reasons(target))
        if key not in self._converted:
            try:
                self._converted[key] = to_openai(self.parsed, stream=stream, reasoning=key[1])
            except Unconvertible as exc:
                raise AttemptFailed(
                    ErrorClass.CLIENT,
                    f"{target.label} cannot serve this request: {exc}",
                    status=400,
                    upstream_type="invalid_request_error",
                    upstream_param=exc.param,
                ) from None
        return self._converted[key]

    async def _relay(self, target: PlannedTarget) -> Relay:
        check_modalities(_modalities(self.parsed), target)
        return Relay(target, await self.engine.credential(target), self.engine.http, self.client)

    async def complete(self, target: PlannedTarget) -> bytes:
        provider = providers.get(target.provider.kind)
        if isinstance(provider, Anthropic):
            return await provider.relay(
                await self._relay(target), native_body(self.body, target, self.client)
            )
        call = await self.engine.call(self._openai(target, False), target, stream=False)
        completion, _raw = await provider.complete(call)
        try:
            message = from_openai(completion)
        except IndexError:
            raise AttemptFailed(
                ErrorClass.SERVER, f"{target.provider_name}: a completion without choices"
            ) from None
        except ValueError:
            raise AttemptFailed(
                ErrorClass.SERVER, f"{target.provider_name}: tool call arguments that are not a JSON object"
            ) from None
        return json.dumps(message, separators=(",", ":"), ensure_ascii=False).encode()

    async def open_stream(self, target: PlannedTarget) -> AsyncIterator[SSEEvent]:
        provider = providers.get(target.provider.kind)
        if isinstance(provider, Anthropic):
            return provider.relay_stream(
                await self._relay(target), native_body(self.body, target, self.client)
            )
        call = await self.engine.call(self._openai(target, True), target, stream=True)
        return _translated(provider.stream(call))


def _reasons(target: PlannedTarget) -> bool:
    """Whether a converted request to ``target`` carries thinking as ``reasoning_effort``."""
    return target.provider.kind in ("openai", "azure") and can_reason(target.model)


async def _translated(chunks: AsyncIterator[StreamChunk]) -> AsyncIterator[SSEEvent]:
    translator = EventTranslator()
    try:
        async for item in chunks:
            for event in translator.feed(item.chunk):
                yield event
        for event in translator.finish():
            yield event
    finally:
        await chunks.aclose()  # type: ignore[attr-defined]


def _modalities(request: MessagesRequest) -> set[str]:
    found = {"text"}
    for message in request.messages:
        content = message.get("content")
        for block in content if isinstance(content, list) else ():
            kind = block.get("type") if isinstance(block, dict) else None
            if kind == "image":
                found.add("image")
            elif kind == "document":
                found.add("file")
    return found


def _has_output(event: SSEEvent) -> bool:
    return event.event in _OUTPUT


def _estimate_chat(
    request: _Body, first: PlannedTarget | None, *, reasoning: bool | None = None
) -> ChatCompletionRequest:
    """The request as OpenAI chat, for the hooks' estimates (the Exchange's ``chat``), converted
    as for the plan's ``first`` target and kept for its attempt (so what it drops is logged once,
    and thinking mapped to ``reasoning_effort`` is not logged as dropped). A request that has no
    chat form (an Anthropic-only block) is estimated from its JSON instead."""
    parsed, body = request.parsed, request.raw
    if reasoning is None:
        reasoning = first is not None and _reasons(first)
    key = (bool(parsed.stream), reasoning)
    cached = request.converted.get(key)
    if cached is not None:  # converted already (for routing, or for this target)
        return cached
    try:
        chat = request.converted[key] = to_openai(parsed, stream=key[0], reasoning=key[1])
        return chat
    except Unconvertible:
        text = json.dumps({"system": body.get("system"), "messages": body.get("messages")})
        return ChatCompletionRequest.model_validate(
            {
                "model": parsed.model,
                "messages": [{"role": "user", "content": text}],
                "max_tokens": parsed.max_tokens,
                "stream": parsed.stream,
            }
        )


def _output_chars(blocks: Any) -> int:
    """Characters of output in content blocks or a block delta (for an estimate without usage)."""
    chars = 0
    for block in blocks if isinstance(blocks, list) else [blocks]:
        if isinstance(block, dict):
            for name in ("text", "thinking", "partial_json"):
                value = block.get(name)
                chars += len(value) if isinstance(value, str) else 0
            if isinstance(block.get("input"), dict):
                chars += len(json.dumps(block["input"]))
    return chars


class _Usage:
    """Reads an Anthropic-format answer's usage and output (JSON or SSE events) into billing's
    meter as it passes."""

    __slots__ = ("meter", "usage")

    def __init__(self, meter: Meter) -> None:
        self.meter = meter
        self.usage: dict[str, Any] = {}

    def message(self, content: bytes) -> None:
        try:
            message = json.loads(content)
        except ValueError:
            return
        if isinstance(message, dict):
            self._usage(message.get("usage"))
            self.meter.chars += _output_chars(message.get("content"))

    def event(self, event: SSEEvent) -> None:
        if event.event not in ("message_start", "message_delta", "content_block_delta"):
            return
        try:
            data = json.loads(event.data)
        except ValueError:
            return
        if not isinstance(data, dict):
            return
        if event.event == "message_start" and isinstance(data.get("message"), dict):
            self._usage(data["message"].get("usage"))
        elif event.event == "message_delta":
            self._usage(data.get("usage"))
        else:
            self.meter.chars += _output_chars(data.get("delta"))

    def _usage(self, usage: Any) -> None:
        if isinstance(usage, dict):
            self.usage.update({k: v for k, v in usage.items() if isinstance(v, int)})
            # None when the answer gave only zeros (a converted answer from an upstream that
            # reported no usage), so that it is estimated, never billed as free.
            self.meter.usage = anthropic_usage(self.usage) if any(self.usage.values()) else None


async def _events(held: HeldStream[SSEEvent], meter: Meter) -> AsyncIterator[bytes]:
    reader = _Usage(meter)
    try:
        async for event in held.items():
            reader.event(event)
            yield b"event: " + (event.event or "message").encode() + b"\ndata: " + event.data + b"\n\n"
        meter.completed = True
    except AttemptFailed as failure:
        meter.interrupted = True
        status = {ErrorClass.RATE_LIMIT: 429, ErrorClass.SERVER: 529}.get(failure.error_class, 500)
        message = (
            f"The upstream stream from {held.target.provider_name} failed after output began "
            f"({failure.error_class}); the response is incomplete."
        )
        body = {"type": "error", "error": {"type": _error_type(status), "message": scrub(message)}}
        yield b"event: error\ndata: " + json.dumps(body).encode() + b"\n\n"


def _client_headers(request: Request) -> dict[str, str]:
    return {name: request.headers[name] for name in _CLIENT_HEADERS if name in request.headers}


class Messages(Endpoint[_Body]):
    """Anthropic's Messages API: relayed to Anthropic targets, converted for the others."""

    name = "messages"
    heartbeats = True  # a silent stream keeps alive with SSE comments (http.heartbeat)

    def parse(self, raw: bytes) -> _Body:
        return _parse(raw)

    def error(self, exc: GatewayError, headers: dict[str, str]) -> Response:
        return anthropic_error(exc, headers)

    def routing_chat(self, body: _Body) -> ChatCompletionRequest:
        """The chat form with the whole ``metadata`` (rules and sticky read it all). Converted as
        for a target that reasons, so thinking is carried (as ``reasoning_effort``), not logged as
        dropped before any target is known; a target's own conversion is made for it."""
        return with_metadata(_estimate_chat(body, None, reasoning=True), body.raw.get("metadata"))

    def streams(self, body: _Body) -> bool:
        return bool(body.parsed.stream)

    def stream_error(self, exc: GatewayError, body: _Body) -> bytes:
        error = {"type": "error", "error": {"type": _error_type(exc.status), "message": scrub(exc.message)}}
        return b"event: error\ndata: " + json.dumps(error).encode() + b"\n\n"

    def prepare(self, ctx: Context[_Body]) -> ChatCompletionRequest:
        return _estimate_chat(ctx.body, ctx.plan.targets[0] if ctx.plan.targets else None)

    async def call(self, ctx: Context[_Body]) -> Answer | Streamed:
        engine = ctx.gateway.engine
        session = _Session(engine, ctx.body, _client_headers(ctx.request))
        meter = Meter()
        if ctx.body.parsed.stream:
            held = await engine.run_stream(ctx.plan, ctx.deadline, session.open_stream, _has_output)
            events = _events(held, meter)
            return Streamed(held.target, held.attempts, events, meter, first_token_at=time.monotonic())
        content, target, attempts = await engine.run(ctx.plan, ctx.deadline, session.complete)
        _Usage(meter).message(content)
        return Answer(target, attempts, content, meter)


MESSAGES = Messages()  # routed in http.app: handler(MESSAGES)


# --------------------------------------------------------------------------- count_tokens

# What messages.create takes but count_tokens does not (Anthropic refuses unknown fields).
_CREATE_ONLY = (
    "max_tokens",
    "stream",
    "metadata",
    "temperature",
    "top_p",
    "top_k",
    "stop_sequences",
    "service_tier",
)
# Anthropic's own figure for the largest image it accepts unresized (about 1.15 megapixels / 750).
_IMAGE_TOKENS = 1600
_BYTES_PER_TOKEN = 4


def _parse_count(raw: bytes) -> _Body:
    """The body (without create's fields) and its checked form; ``max_tokens`` is create's, so a
    count needs none."""
    body = jsonbody.load_object(raw)
    parsed = _parse(json.dumps({"max_tokens": 1, **body}).encode()).parsed
    return _Body({k: v for k, v in body.items() if k not in _CREATE_ONLY}, parsed)


def _without_media(value: Any, images: list[int]) -> Any:
    """``value`` with each image's or document's data left out (counted in ``images``)."""
    if isinstance(value, list):
        return [_without_media(item, images) for item in value]
    if isinstance(value, dict):
        if value.get("type") in ("image", "document") and isinstance(value.get("source"), dict):
            images.append(1)
            return {k: v for k, v in value.items() if k != "source"}
        return {k: _without_media(v, images) for k, v in value.items()}
    return value


def estimate_input_tokens(body: dict[str, Any]) -> int:
    """A tokenizer-free estimate of a Messages request's input tokens: about four bytes of its
    JSON (system, messages, tools) per token, and Anthropic's upper figure per image or document."""
    images: list[int] = []
    counted = {name: body.get(name) for name in ("system", "messages", "tools", "tool_choice")}
    text = json.dumps(_without_media(counted, images), ensure_ascii=False, separators=(",", ":"))
    return math.ceil(len(text.encode()) / _BYTES_PER_TOKEN) + _IMAGE_TOKENS * len(images)


class CountTokens(Endpoint[_Body]):
    """``POST /v1/messages/count_tokens``: Anthropic's count for an Anthropic target (the plan's
    retries and fallback apply), else an estimate, marked ``x-switchboard-estimated: true``.

    The key must be valid and may use the model; nothing is reserved, charged or rate limited.
    """

    name = "count_tokens"
    routed_as = "messages"
    billed = False

    def parse(self, raw: bytes) -> _Body:
        return _parse_count(raw)

    def error(self, exc: GatewayError, headers: dict[str, str]) -> Response:
        return anthropic_error(exc, headers)

    async def call(self, ctx: Context[_Body]) -> Answer:
        engine, body, client = ctx.gateway.engine, ctx.body.raw, _client_headers(ctx.request)

        async def attempt(target: PlannedTarget) -> tuple[bytes, bool]:
            provider = providers.get(target.provider.kind)
            if isinstance(provider, Anthropic):
                relay = Relay(target, await engine.credential(target), engine.http, client)
                return await provider.count_tokens(relay, native_body(body, target, client)), False
            return json.dumps({"input_tokens": estimate_input_tokens(body)}).encode(), True

        (content, estimated), target, attempts = await engine.run(ctx.plan, ctx.deadline, attempt)
        if estimated:
            ctx.headers["x-switchboard-estimated"] = "true"
        return Answer(target, attempts, content)


COUNT_TOKENS = CountTokens()  # routed in http.app: handler(COUNT_TOKENS)
