"""``POST /v1/completions``: OpenAI's legacy text completions, passed through.

Only upstreams that speak OpenAI's wire format have this endpoint: an ``openai`` provider (OpenAI
and every compatible server: vLLM, Together, Fireworks, DeepSeek's beta, Ollama...) gets the
client's body at ``{base_url}/completions`` with ``model`` replaced and the provider's parameter
rules applied (``providers.compat``), and an ``azure`` one at its deployment's ``completions``
operation (Azure serves it for the deployments of completion models, ``gpt-35-turbo-instruct``,
``davinci-002``, ``babbage-002``; another deployment answers Azure's own 400). The answer goes back
as the upstream sent it, ``usage.cost`` added. Gemini's OpenAI endpoint, Anthropic and Bedrock have
no text-completion API: those targets are left out of the plan, and an alias with no other target
answers a 400 that names ``/v1/chat/completions``.

An endpoint of the request pipeline (``http.pipeline``: ``Completions``, routed as ``COMPLETIONS``),
so the lifecycle is chat's (``Exchange.kind == "completions"``): the key and its allowed models, the
routing rules, budgets reserved on an estimate (the prompt as one user message, ``max_tokens`` or
OpenAI's default of 16, ``max(n, best_of)`` choices) and settled on the usage reported, rate
limits, the cost event, and the attribution headers. Streams always ask the upstream for the usage
chunk; a client that did not ask gets it left out, one that did gets it with ``usage.cost``. Until
the first text arrives a failure falls back invisibly; after it the stream ends in an OpenAI error
event.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from switchboard.billing import metering
from switchboard.billing.metering import Meter
from switchboard.core import jsonbody
from switchboard.core.errors import AttemptFailed, ErrorClass, InvalidRequest
from switchboard.core.redaction import scrub
from switchboard.core.schemas import ChatCompletionRequest, Usage
from switchboard.core.sse import SSEEvent, encode_data, encode_json, iter_events
from switchboard.exchange import Exchange
from switchboard.http.pipeline import Answer, Context, Endpoint, Streamed
from switchboard.routing.planner import Plan, PlannedTarget
from switchboard.upstream import providers
from switchboard.upstream.engine import HeldStream
from switchboard.upstream.providers.base import Call, classify_http_error, error_body
from switchboard.upstream.providers.openai import OpenAICompatible

__all__ = ["COMPLETIONS", "SERVING_KINDS", "CompletionRequest", "Completions", "serving_plan"]

# The provider kinds whose upstreams have a text-completion endpoint.
SERVING_KINDS = frozenset({"openai", "azure"})
_DEFAULT_MAX_TOKENS = 16  # OpenAI's default for /v1/completions


class CompletionRequest(BaseModel):
    """What the gateway checks of a text completion request; every other field passes through."""

    model_config = ConfigDict(extra="allow")

    model: str = Field(min_length=1, max_length=256)
    prompt: str | list[str] | list[int] | list[list[int]] | None = None
    stream: bool | None = None
    stream_options: dict[str, Any] | None = None
    max_tokens: int | None = Field(default=None, ge=0)
    n: int | None = Field(default=None, ge=1, le=128)
    best_of: int | None = Field(default=None, ge=1, le=128)

    def prompt_text(self) -> str:
        """The prompt as text, for the estimate (token ids count as their digits)."""
        prompt = self.prompt
        if prompt is None or isinstance(prompt, str):
            return prompt or ""
        return "\n".join(
            item if isinstance(item, str) else " ".join(map(str, item)) for item in _items(prompt)
        )

    def wants_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.get("include_usage") is True)


def _items(prompt: list[Any]) -> list[Any]:
    return [prompt] if prompt and isinstance(prompt[0], int) else prompt


def _parse(raw: bytes) -> tuple[dict[str, Any], CompletionRequest]:
    body = jsonbody.load_object(raw)
    try:
        return body, CompletionRequest.model_validate(body)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        raise InvalidRequest(
            f"Invalid request: '{where}': {first['msg']}", param=where, code="invalid_value"
        ) from None


def _stand_in(request: CompletionRequest) -> ChatCompletionRequest:
    """A chat request that estimates like ``request``: the prompt as one user message."""
    choices = max(request.n or 1, request.best_of or 1)
    max_tokens = request.max_tokens if request.max_tokens is not None else _DEFAULT_MAX_TOKENS
    body: dict[str, Any] = {
        "model": request.model,
        "messages": [{"role": "user", "content": request.prompt_text()}],
        "n": choices,
        "stream": request.stream,
    }
    if max_tokens > 0:
        body["max_tokens"] = max_tokens
    return ChatCompletionRequest.model_validate(body)


def serving_plan(route: Plan, alias: str) -> Plan:
    """``route`` without the targets that have no text-completion API; a 400 naming the chat
    endpoint when none is left."""
    targets = tuple(t for t in route.targets if t.provider.kind in SERVING_KINDS)
    if targets:
        return route if len(targets) == len(route.targets) else dataclasses.replace(route, targets=targets)
    kinds = ", ".join(sorted({t.provider.kind for t in route.targets})) or "none"
    raise InvalidRequest(
        f"The model '{alias}' is served by a provider without a text-completion API ({kinds}): "
        "/v1/completions is for OpenAI-compatible targets. Use /v1/chat/completions instead.",
        param="model",
        code="unsupported_endpoint",
    )


class _Upstream:
    """One attempt's HTTP request: the client's body, the target's model, the provider's rules."""

    def __init__(
        self, api_body: dict[str, Any], chat: ChatCompletionRequest, http: httpx.AsyncClient
    ) -> None:
        self.body = api_body
        self.chat = chat
        self.http = http

    def request(self, target: PlannedTarget, api_key: str | None, stream: bool) -> httpx.Request:
        provider = providers.get(target.provider.kind)
        assert isinstance(provider, OpenAICompatible)  # serving_plan kept only these
        call = Call(self.chat, target, api_key, self.http, stream)
        body = {**self.body, "model": target.model}
        if stream:
            options = body.get("stream_options")
            body["stream_options"] = {**(options if isinstance(options, dict) else {}), "include_usage": True}
        provider.adapt(call, body)
        timeouts = target.timeouts
        return self.http.build_request(
            "POST",
            provider.url(target, "completions"),
            headers=provider.headers(call, stream),
            content=json.dumps(body, separators=(",", ":")).encode(),
            timeout=httpx.Timeout(timeouts.total_s, connect=timeouts.connect_s),
        )


def _failed(target: PlannedTarget, status: int, content: bytes, headers: Any) -> AttemptFailed:
    return classify_http_error(status, content, headers, target.provider_name)


def _malformed(target: PlannedTarget) -> AttemptFailed:
    return AttemptFailed(ErrorClass.SERVER, f"{target.provider_name}: malformed upstream response")


def _completion(content: bytes, target: PlannedTarget) -> dict[str, Any]:
    try:
        body = json.loads(content)
    except ValueError:
        raise _malformed(target) from None
    if not isinstance(body, dict) or not isinstance(body.get("choices"), list):
        raise _malformed(target)
    return body


def _usage(value: Any) -> Usage | None:
    if not isinstance(value, dict):
        return None
    try:
        return metering.normalize_usage(Usage.model_validate(value))
    except ValidationError:
        return None


def _text_chars(choices: Any) -> int:
    chars = 0
    for choice in choices if isinstance(choices, list) else ():
        text = choice.get("text") if isinstance(choice, dict) else None
        chars += len(text) if isinstance(text, str) else 0
    return chars


def _has_output(event: SSEEvent) -> bool:
    if not event.data.startswith(b"{"):
        return False
    try:
        data = json.loads(event.data)
    except ValueError:
        return False
    choices = data.get("choices") if isinstance(data, dict) else None
    return any(isinstance(c, dict) and (c.get("text") or c.get("finish_reason")) for c in choices or ())


class _StreamMeter(Meter):
    """A text-completion stream's usage and length (the pipeline's ``Meter``), and what of it the
    client gets: the usage chunk only when asked for, then with ``usage.cost``."""

    __slots__ = ("chat", "last", "wants_usage")

    def __init__(self, chat: ChatCompletionRequest, wants_usage: bool) -> None:
        super().__init__()
        self.chat = chat
        self.wants_usage = wants_usage
        self.last: dict[str, Any] | None = None

    def event(self, event: SSEEvent) -> bytes | None:
        """The bytes to send for ``event``; None to send nothing."""
        if event.data == b"[DONE]" or not event.data.startswith(b"{"):
            return None
        try:
            data = json.loads(event.data)
        except ValueError:
            return encode_data(event.data)
        if not isinstance(data, dict):
            return encode_data(event.data)
        self.last = data
        self.chars += _text_chars(data.get("choices"))
        usage = _usage(data.get("usage"))
        if usage is None:
            return encode_data(event.data)
        self.usage = usage
        if not self.wants_usage:
            return encode_data(event.data) if data.get("choices") else None
        data["usage"]["cost"] = _number(metering.price_usage(self.match, usage)[0])
        return encode_json(data)

    def end(self) -> bytes:
        """A usage chunk the client asked for and the upstream did not send, then ``[DONE]``."""
        tail = b""
        if self.wants_usage and self.usage is None and self.last is not None:
            usage = metering.estimate_usage(self.chat, self.chars)
            cost = metering.price_usage(self.match, usage)[0]
            body = {k: self.last.get(k) for k in ("id", "object", "created", "model")}
            body.update(choices=[], usage={**usage.model_dump(mode="json"), "cost": _number(cost)})
            tail = encode_json(body)
        return tail + b"data: [DONE]\n\n"


def _number(cost: Any) -> float | None:
    return float(cost) if cost is not None else None


async def _events(held: HeldStream[SSEEvent], meter: _StreamMeter) -> AsyncIterator[bytes]:
    try:
        async for event in held.items():
            out = meter.event(event)
            if out is not None:
                yield out
        meter.completed = True
        yield meter.end()
    except AttemptFailed as failure:
        meter.interrupted = True
        message = (
            f"The upstream stream from {held.target.provider_name} failed after output began "
            f"({failure.error_class}); the response is incomplete."
        )
        error = {
            "message": scrub(message),
            "type": "upstream_error",
            "param": None,
            "code": "stream_interrupted",
        }
        yield encode_json({"error": error})


async def _upstream_events(response: httpx.Response, target: PlannedTarget) -> AsyncIterator[SSEEvent]:
    """The upstream's events up to ``[DONE]``; a stream that ends without it failed."""
    try:
        async for event in iter_events(response.aiter_bytes()):
            if event.data == b"[DONE]":
                return
            yield event
        raise AttemptFailed(
            ErrorClass.SERVER, f"{target.provider_name}: upstream stream ended before it finished"
        )
    finally:
        await response.aclose()


@dataclass(slots=True)
class _Body:
    """A /v1/completions request: the body as sent and its checked form."""

    raw: dict[str, Any]
    parsed: CompletionRequest


class Completions(Endpoint[_Body]):
    """OpenAI's legacy text completions, passed through to the targets that have them."""

    name = "completions"

    def parse(self, raw: bytes) -> _Body:
        return _Body(*_parse(raw))

    def alias(self, body: _Body) -> str:
        return body.parsed.model

    def prepare(self, ctx: Context[_Body]) -> ChatCompletionRequest:
        ctx.plan = serving_plan(ctx.plan, ctx.body.parsed.model)
        return _stand_in(ctx.body.parsed)

    async def call(self, ctx: Context[_Body]) -> Answer | Streamed:
        engine = ctx.gateway.engine
        parsed = ctx.body.parsed
        chat = _stand_in(parsed)
        upstream = _Upstream(ctx.body.raw, chat, engine.http)

        async def complete(target: PlannedTarget) -> bytes:
            sent = upstream.request(target, await engine.credential(target), stream=False)
            response = await engine.http.send(sent)
            content = await response.aread()
            if response.status_code != 200:
                raise _failed(target, response.status_code, content, response.headers)
            _completion(content, target)
            return content

        async def open_stream(target: PlannedTarget) -> AsyncIterator[SSEEvent]:
            sent = upstream.request(target, await engine.credential(target), stream=True)
            response = await engine.http.send(sent, stream=True)
            if response.status_code != 200:
                try:
                    content = await error_body(response)
                finally:
                    await response.aclose()
                raise _failed(target, response.status_code, content, response.headers)
            return _upstream_events(response, target)

        if parsed.stream:
            held = await engine.run_stream(ctx.plan, ctx.deadline, open_stream, _has_output)
            texts = _StreamMeter(chat, parsed.wants_usage())
            events = _events(held, texts)
            return Streamed(held.target, held.attempts, events, texts, first_token_at=time.monotonic())
        content, target, attempts = await engine.run(ctx.plan, ctx.deadline, complete)
        answer = _completion(content, target)
        meter = Meter()
        meter.usage = _usage(answer.get("usage"))
        meter.chars = _text_chars(answer.get("choices"))

        def render(ex: Exchange) -> bytes:
            if not isinstance(answer.get("usage"), dict):
                answer["usage"] = ex.usage.model_dump(mode="json") if ex.usage is not None else {}
            answer["usage"]["cost"] = _number(ex.cost_usd)
            return json.dumps(answer, separators=(",", ":"), ensure_ascii=False).encode()

        return Answer(target, attempts, meter=meter, render=render)


COMPLETIONS = Completions()
