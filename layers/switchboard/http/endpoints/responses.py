"""``POST /v1/responses`` and the stored responses: OpenAI's Responses API, through the same
planner, engine and lifecycle as chat.

``POST /v1/responses`` is an ``Endpoint`` (``RESPONSES``) of the one request pipeline
(``http.pipeline``): its own parts are the schema (``parse``), the stored conversation read before
admission (``load``), the request as chat for the estimates (``prepare``), the call over the plan
(``call``), and storing the priced answer before settlement (``Answer.keep``; a stream stores it
before its final event, which carries ``usage.cost``). The cost event's endpoint is ``responses``.

Each target of the plan is served in its own way:

* a target that speaks the Responses API (``kind: openai`` on api.openai.com, or any provider with
  ``responses: true`` in the routing document) gets the client's body with ``model`` replaced (and,
  when the client continues a stored conversation, the whole history as ``input``); its answer or
  events go back as sent, with ``usage.cost`` added;
* any other target gets the request converted to chat (``responses_format``) and its answer, or
  its chunks, converted back.

So a fallback chain may mix the two. Retries, fallback and the streaming commit are the engine's:
until the first output event nothing reaches the client and a failure moves on invisibly; after it
a failure ends the stream with ``response.failed``, never a silent cut. A stream silent for
``heartbeat_after_s`` commits with keep-alive comments (``http.heartbeat``, as chat does); a total
failure after them is an ``error`` event and ``response.failed`` (``Responses.stream_error``).

Stored responses (``store``, default true) are in ``responses_store``: each belongs to the key that
created it; ``previous_response_id`` rebuilds the conversation from there, whichever provider served
the earlier turns. ``GET /v1/responses/{id}``, ``DELETE /v1/responses/{id}`` and
``GET /v1/responses/{id}/input_items`` read them: plain handlers (they call no upstream and are
not billed), authenticated with ``http.request``'s public steps.
"""

from __future__ import annotations

import json
import logging
import time
import urllib.parse
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import httpx
from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import Response

from switchboard.billing import metering
from switchboard.billing.metering import Meter
from switchboard.core import jsonbody
from switchboard.core.errors import (
    AttemptFailed,
    ErrorClass,
    GatewayError,
    InvalidRequest,
    ServiceUnavailable,
)
from switchboard.core.redaction import scrub
from switchboard.core.schemas import ChatCompletionRequest, Usage
from switchboard.core.sse import SSEEvent, iter_events
from switchboard.exchange import Exchange
from switchboard.http.endpoints.anthropic_format import can_reason
from switchboard.http.endpoints.responses_format import (
    EventTranslator,
    ResponsesRequest,
    ToolNames,
    Unconvertible,
    all_tools,
    dropped_tools,
    event,
    from_chat,
    input_items,
    new_id,
    response_object,
    response_usage,
    to_chat,
    usage_of,
)
from switchboard.http.endpoints.responses_store import ResponseStore, check_input
from switchboard.http.pipeline import Answer, Context, Endpoint, Streamed
from switchboard.http.request import authenticate, gateway_of, request_deadline
from switchboard.infra import aws
from switchboard.routing.decide import with_metadata
from switchboard.routing.overrides import Overrides, take
from switchboard.routing.planner import PlannedTarget
from switchboard.upstream import providers
from switchboard.upstream.engine import Engine, HeldStream
from switchboard.upstream.providers.base import classify_http_error, error_body
from switchboard.upstream.providers.openai import OpenAICompatible
from switchboard.wiring import Gateway

__all__ = [
    "DROPPED_TOOLS_HEADER",
    "RESPONSES",
    "Responses",
    "delete_response",
    "list_input_items",
    "passes_through",
    "reasons",
    "responses_store",
    "retrieve_response",
]

log = logging.getLogger("switchboard.endpoints.responses")

_JSON = "application/json"
DROPPED_TOOLS_HEADER = "x-switchboard-dropped-tools"
_OPENAI_HOST = "api.openai.com"
_OUTPUT = frozenset(
    {
        "response.output_text.delta",
        "response.function_call_arguments.delta",
        "response.custom_tool_call_input.delta",
        "response.refusal.delta",
        "response.reasoning_summary_text.delta",
        "response.reasoning_text.delta",
        "response.output_item.done",
        "response.completed",
        "response.incomplete",
    }
)
_FINAL = frozenset({"response.completed", "response.incomplete"})
_STRIPPED = frozenset(
    {"message", "function_call", "function_call_output", "custom_tool_call", "custom_tool_call_output"}
)
# A chat field a converted target refuses, as the client named it (``responses_format.to_chat``).
_PARAMS = {
    "messages": "input",
    "response_format": "text.format",
    "max_tokens": "max_output_tokens",
    "reasoning_effort": "reasoning.effort",
}


class NotFound(GatewayError):
    status = 404
    type = "invalid_request_error"


def passes_through(target: PlannedTarget) -> bool:
    """Whether ``target`` speaks the Responses API itself (else it is converted through chat)."""
    provider = target.provider
    if provider.kind != "openai":
        return False
    if provider.responses is not None:
        return provider.responses
    return urllib.parse.urlsplit(provider.base_url or "").hostname == _OPENAI_HOST


def _parse(raw: bytes) -> tuple[dict[str, Any], ResponsesRequest]:
    body = jsonbody.load_object(raw)
    try:
        return body, ResponsesRequest.model_validate(body)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = str(first["loc"][0]) if first["loc"] else "request"  # the rest names union branches
        raise InvalidRequest(
            f"Invalid request: '{field}': {first['msg']}", param=field, code="invalid_value"
        ) from None


# id(gateway) -> (the gateway, weakly; its store). A Gateway is a mutable dataclass, unhashable.
_STORES: dict[int, tuple[weakref.ref[Gateway], ResponseStore]] = {}


def responses_store(gateway: Gateway) -> ResponseStore:
    """The stored-responses table of ``gateway`` (its settings' table; one DynamoDB client per
    gateway, made on first use and dropped with the gateway)."""
    known = _STORES.get(id(gateway))
    if known is not None and known[0]() is gateway:
        return known[1]
    client = aws.runtime_client("dynamodb", gateway.settings.region)
    store = ResponseStore(lambda: client, gateway.settings.table)
    key = id(gateway)
    _STORES[key] = (weakref.ref(gateway, lambda _: _STORES.pop(key, None)), store)
    return store


def reasons(target: PlannedTarget) -> bool:
    """Whether a converted ``target`` takes reasoning items back, as ``reasoning_content`` on the
    assistant message: an OpenAI-compatible upstream other than OpenAI's own (whose chat has no such
    field) serving a reasoning model (``anthropic_format.can_reason``: o-series, gpt-5, gpt-oss)."""
    provider = target.provider
    host = urllib.parse.urlsplit(provider.base_url or "").hostname
    return provider.kind == "openai" and host != _OPENAI_HOST and can_reason(target.model)


def _history_item(item: dict[str, Any]) -> dict[str, Any]:
    """A stored item as input for a Responses upstream: the gateway's ids and statuses left out
    (the upstream never saw them); reasoning items and the rest as they are."""
    if item.get("type") not in _STRIPPED:
        return item
    return {k: v for k, v in item.items() if k not in ("id", "status")}


class _Session:
    """One /v1/responses request: how each target of its plan is called."""

    def __init__(
        self,
        engine: Engine,
        body: dict[str, Any],
        parsed: ResponsesRequest,
        history: list[dict[str, Any]],
        own: list[dict[str, Any]],
    ) -> None:
        self.engine = engine
        self.body = body
        self.parsed = parsed
        self.history = history
        self.items = history + own
        self.response_id = new_id("resp_")
        self.created_at = int(time.time())
        self._converted: dict[tuple[bool, bool], ChatCompletionRequest] = {}  # (stream, reasons)
        self.dropped = dropped_tools(parsed, self.items)  # built-in tools a converted target goes without
        self.names = ToolNames(all_tools(parsed, self.items))  # chat names of the tools, both ways
        self._told: set[str] = set()  # the targets the drop was logged for

    def chat(self, stream: bool, target: PlannedTarget | None = None) -> ChatCompletionRequest:
        """The request as chat for ``target`` (its reasoning items carried when it reasons), or
        for the estimates (no target)."""
        key = (stream, target is not None and reasons(target))
        if key not in self._converted:
            try:
                self._converted[key] = to_chat(self.parsed, self.items, stream=stream, reasoning=key[1])
            except Unconvertible as exc:
                where = target.label if target is not None else "this target"
                raise AttemptFailed(
                    ErrorClass.CLIENT,
                    f"{where} cannot serve this request: {exc} (it is served through chat completions)",
                    status=400,
                    upstream_type="invalid_request_error",
                    upstream_code="unsupported_parameter",
                    upstream_param=exc.param,
                ) from None
        if self.dropped and target is not None and target.label not in self._told:
            self._told.add(target.label)
            log.info(
                "dropped built-in tools %s for %s: it is served through chat, which cannot run them",
                self.dropped,
                target.label,
            )
        return self._converted[key]

    def note_dropped(self, target: PlannedTarget, headers: dict[str, str]) -> None:
        """``x-switchboard-dropped-tools`` when ``target`` (converted) went without built-in tools."""
        if self.dropped and not passes_through(target):
            headers[DROPPED_TOOLS_HEADER] = ",".join(self.dropped)

    def _upstream_body(self, target: PlannedTarget, stream: bool) -> bytes:
        body = {**self.body, "model": target.model}
        if self.parsed.previous_response_id is not None:
            body.pop("previous_response_id")
            own = body.get("input")
            own_items = [{"role": "user", "content": own}] if isinstance(own, str) else list(own or [])
            body["input"] = [_history_item(item) for item in self.history] + own_items
        if stream:
            body["stream"] = True
        else:
            body.pop("stream", None)
        return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()

    async def _send(self, target: PlannedTarget, stream: bool) -> httpx.Response:
        provider = providers.get(target.provider.kind)
        assert isinstance(provider, OpenAICompatible)
        key = await self.engine.credential(target)
        headers = {"content-type": _JSON, "accept": "text/event-stream" if stream else _JSON}
        headers.update(target.provider.headers)
        if key:
            headers.update(provider.auth(key))
        timeouts = target.timeouts
        request = self.engine.http.build_request(
            "POST",
            provider.url(target, "responses"),
            headers=headers,
            content=self._upstream_body(target, stream),
            timeout=httpx.Timeout(timeouts.total_s, connect=timeouts.connect_s),
        )
        return await self.engine.http.send(request, stream=stream)

    async def complete(self, target: PlannedTarget) -> dict[str, Any]:
        """One attempt, buffered: the response object."""
        if passes_through(target):
            response = await self._send(target, stream=False)
            content = await response.aread()
            if response.status_code != 200:
                raise classify_http_error(
                    response.status_code, content, response.headers, target.provider_name
                )
            try:
                answer = json.loads(content)
                if answer.get("object") != "response" or not isinstance(answer.get("output"), list):
                    raise ValueError
            except (ValueError, AttributeError):
                raise AttemptFailed(
                    ErrorClass.SERVER, f"{target.provider_name}: malformed upstream response"
                ) from None
            if answer.get("status") == "failed":
                raise _failed(target, answer.get("error"))
            return dict(answer)
        provider = providers.get(target.provider.kind)
        call = await self.engine.call(self.chat(False, target), target, stream=False)
        try:
            completion, _raw = await provider.complete(call)
        except AttemptFailed as exc:
            raise _renamed(exc) from None
        try:
            return from_chat(
                completion,
                self.parsed,
                response_id=self.response_id,
                created_at=self.created_at,
                names=self.names,
            )
        except IndexError:
            raise AttemptFailed(
                ErrorClass.SERVER, f"{target.provider_name}: a completion without choices"
            ) from None

    async def open_stream(self, target: PlannedTarget) -> AsyncIterator[SSEEvent]:
        if passes_through(target):
            return self._relay(target, await self._send(target, stream=True))
        provider = providers.get(target.provider.kind)
        call = await self.engine.call(self.chat(True, target), target, stream=True)
        return self._translated(provider.stream(call))

    async def _relay(self, target: PlannedTarget, response: httpx.Response) -> AsyncIterator[SSEEvent]:
        """The upstream's events as sent; ends normally only after its final event."""
        label = target.provider_name
        try:
            if response.status_code != 200:
                content = await error_body(response)
                raise classify_http_error(response.status_code, content, response.headers, label)
            async for item in iter_events(response.aiter_bytes()):
                if not item.data or item.data == b"[DONE]":
                    continue
                try:
                    data = json.loads(item.data)
                    kind = str(data.get("type") or item.event)
                except (ValueError, AttributeError):
                    raise AttemptFailed(
                        ErrorClass.SERVER, f"{label}: malformed upstream stream event"
                    ) from None
                if kind == "error":
                    raise _failed(target, data)
                if kind == "response.failed":
                    raise _failed(target, (data.get("response") or {}).get("error"))
                yield SSEEvent(kind, item.data)
                if kind in _FINAL:
                    return
            raise AttemptFailed(ErrorClass.SERVER, f"{label}: upstream stream ended before it finished")
        finally:
            await response.aclose()

    async def _translated(self, chunks: AsyncIterator[Any]) -> AsyncIterator[SSEEvent]:
        translator = EventTranslator(self.parsed, self.response_id, self.created_at, self.names)
        try:
            async for item in chunks:
                for made in translator.feed(item.chunk):
                    yield made
            for made in translator.finish():
                yield made
        except AttemptFailed as exc:
            raise _renamed(exc) from None
        finally:
            await chunks.aclose()  # type: ignore[attr-defined]


def _renamed(exc: AttemptFailed) -> AttemptFailed:
    """A converted attempt's refusal naming the Responses field, not its chat form."""
    if exc.upstream_param in _PARAMS:
        exc.upstream_param = _PARAMS[exc.upstream_param]
    return exc


def _failed(target: PlannedTarget, error: Any) -> AttemptFailed:
    """An upstream's own failure event or failed response: a server-class failure (falls back)."""
    detail = error.get("message") if isinstance(error, dict) else None
    code = error.get("code") if isinstance(error, dict) else None
    error_class = ErrorClass.RATE_LIMIT if code == "rate_limit_exceeded" else ErrorClass.SERVER
    return AttemptFailed(
        error_class, f"{target.provider_name}: upstream failed: {scrub(str(detail or code))[:300]}"
    )


def _estimate_chat(session: _Session) -> ChatCompletionRequest:
    """The request as chat, for the hooks' estimates; a request with no chat form is estimated
    from its JSON instead."""
    parsed = session.parsed
    try:
        return session.chat(bool(parsed.stream))
    except AttemptFailed:
        text = json.dumps(
            {"instructions": parsed.instructions, "input": session.items, "tools": parsed.tools}
        )
        body: dict[str, Any] = {"model": parsed.model, "messages": [{"role": "user", "content": text}]}
        if parsed.max_output_tokens:
            body["max_tokens"] = parsed.max_output_tokens
        return ChatCompletionRequest.model_validate(body)


def _output_chars(value: Any) -> int:
    """Characters of output in output items (for an estimate when the upstream reports no usage)."""
    chars = 0
    for item in value if isinstance(value, list) else [value]:
        if not isinstance(item, dict):
            continue
        for name in ("text", "arguments", "input", "refusal", "delta"):
            if isinstance(item.get(name), str):
                chars += len(item[name])
        if isinstance(item.get("content"), list):
            chars += _output_chars(item["content"])
    return chars


def _with_usage(response: dict[str, Any], usage: Usage | None, estimated: bool, cost: Decimal | None) -> None:
    """``usage`` with ``cost`` on the response: the upstream's own block when it reported one, else
    the metered (estimated) usage in the Responses shape; never 0 or absent when the gateway knows
    better."""
    block = response.get("usage") if not estimated else None
    if not isinstance(block, dict):
        block = response_usage(usage) or {}
        if estimated:
            block["estimated"] = True
    block["cost"] = float(cost) if cost is not None else None
    response["usage"] = block


async def _keep(
    gateway: Gateway, key_id: str, session: _Session, response: dict[str, Any], ttl_days: int
) -> bool:
    """Store the response when the request asked (the default); whether it is stored."""
    if session.parsed.store is False:
        return False
    own = session.items[len(session.history) :]
    try:
        return await responses_store(gateway).put(
            key_id, response, own, session.parsed.previous_response_id, ttl_days
        )
    except ServiceUnavailable:
        return False


def _sse(name: str, data: bytes) -> bytes:
    return b"event: " + name.encode() + b"\ndata: " + data + b"\n\n"


class _StreamState:
    __slots__ = ("output", "response", "sequence")

    def __init__(self) -> None:
        self.response: dict[str, Any] | None = None
        self.sequence = -1
        self.output: list[dict[str, Any]] = []


async def _events(
    held: HeldStream[SSEEvent],
    meter: Meter,
    chat: ChatCompletionRequest,
    keep: Callable[[dict[str, Any]], Awaitable[bool]],
) -> AsyncIterator[bytes]:
    """The client's events. The final one carries ``usage`` with ``cost`` (the usage reported, else
    estimated from ``chat`` and the output, at ``meter.match``: what the pipeline settles on) and is
    sent once the response is stored. How the stream ended goes on ``meter``."""
    state = _StreamState()
    try:
        async for item in held.items():
            data = json.loads(item.data)
            kind = item.event or str(data.get("type"))
            if isinstance(data.get("sequence_number"), int):
                state.sequence = data["sequence_number"]
            if isinstance(data.get("response"), dict):
                state.response = data["response"]
            if kind.endswith(".delta"):
                meter.chars += _output_chars(data)
            elif kind == "response.output_item.done" and isinstance(data.get("item"), dict):
                state.output.append(data["item"])
            if kind in _FINAL and state.response is not None:
                reported = usage_of(state.response.get("usage"))
                usage = reported if reported is not None else metering.estimate_usage(chat, meter.chars)
                _with_usage(
                    state.response, usage, reported is None, metering.price_usage(meter.match, usage)[0]
                )
                stored = await keep(state.response)
                if not stored:
                    log.info("response %s not stored", state.response.get("id"))
                yield _sse(kind, json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode())
                meter.usage, meter.completed = reported, True
                continue
            yield _sse(kind, item.data)
        if not meter.completed:
            raise AttemptFailed(
                ErrorClass.SERVER, f"{held.target.provider_name}: stream ended before it finished"
            )
    except AttemptFailed as failure:
        meter.interrupted = True
        message = scrub(
            f"The upstream stream from {held.target.provider_name} failed after output began "
            f"({failure.error_class}); the response is incomplete."
        )
        response = dict(state.response or {})
        response.update(
            status="failed", output=state.output, error={"code": "server_error", "message": message}
        )
        response["completed_at"] = None
        yield _sse("response.failed", event("response.failed", state.sequence + 1, response=response).data)


@dataclass(slots=True)
class _Request:
    """What ``parse`` read (the body as sent, and as checked); the session once ``load`` built it."""

    body: dict[str, Any]
    parsed: ResponsesRequest
    session: _Session | None = None


def _session(ctx: Context[_Request]) -> _Session:
    session = ctx.body.session
    assert session is not None, "Responses.load builds the session before prepare and call"
    return session


class Responses(Endpoint[_Request]):
    """OpenAI's Responses API: each target passed through or converted through chat; the answer
    stored (``store``), and a stored conversation continued (``previous_response_id``)."""

    name = "responses"
    heartbeats = True  # a silent stream keeps alive with SSE comments (http.heartbeat)

    def parse(self, raw: bytes) -> _Request:
        return _Request(*_parse(raw))

    def streams(self, body: _Request) -> bool:
        return bool(body.parsed.stream)

    def stream_error(self, exc: GatewayError, body: _Request) -> bytes:
        """Every target failed after the keep-alive comments began, before any output: the
        Responses stream's ``error`` event, then ``response.failed`` with the failed response (the
        event Codex reads; it ignores ``error``). Nothing was stored or created before."""
        error = exc.body()["error"]
        made = event(
            "error", 0, code=error["code"] or error["type"], message=error["message"], param=error["param"]
        )
        session = body.session
        response_id, created_at = (
            (session.response_id, session.created_at)
            if session is not None
            else (new_id("resp_"), int(time.time()))
        )
        code = "rate_limit_exceeded" if exc.status == 429 else "server_error"
        failed = response_object(
            body.parsed,
            response_id=response_id,
            created_at=created_at,
            model=body.parsed.model,
            status="failed",
            output=[],
            usage=None,
            error={"code": code, "message": error["message"]},
        )
        return _sse("error", made.data) + _sse(
            "response.failed", event("response.failed", 1, response=failed).data
        )

    def alias(self, body: _Request) -> str:
        return body.parsed.model

    def overrides(self, body: _Request) -> Overrides:
        """``models`` and ``provider`` taken out of the body as sent (what a pass-through target
        receives) and out of the checked request's extra fields (what conversion reads)."""
        sent = take(body.body)
        extra = take(body.parsed.__pydantic_extra__)
        return extra if sent.empty else sent

    def routing_chat(self, body: _Request) -> ChatCompletionRequest | None:
        """This turn's input as chat, with the request's whole ``metadata``, for the routing
        decision (rules, sticky assignment, cheapest, context windows). A continued conversation's
        stored turns are read once the plan is made (``load``), so they are not in this estimate."""
        try:
            chat = to_chat(body.parsed, input_items(body.parsed.input), stream=bool(body.parsed.stream))
        except Unconvertible:
            return None
        return with_metadata(chat, body.body.get("metadata"))

    async def load(self, ctx: Context[_Request]) -> None:
        """The request's own input items (checked for storage), and the stored conversation it
        continues: a 400 when there is neither."""
        parsed = ctx.body.parsed
        own = input_items(parsed.input)
        if parsed.store is not False:
            check_input(own)
        history: list[dict[str, Any]] = []
        if parsed.previous_response_id is not None:
            history = await responses_store(ctx.gateway).history(
                ctx.principal.key_id, parsed.previous_response_id
            )
        if not own and not history:
            raise InvalidRequest(
                "Missing required parameter: 'input'.", param="input", code="missing_required_parameter"
            )
        ctx.body.session = _Session(ctx.gateway.engine, ctx.body.body, parsed, history, own)

    def prepare(self, ctx: Context[_Request]) -> ChatCompletionRequest:
        return _estimate_chat(_session(ctx))

    async def call(self, ctx: Context[_Request]) -> Answer | Streamed:
        session, engine = _session(ctx), ctx.gateway.engine
        key_id, ttl_days = ctx.principal.key_id, ctx.routing.document.responses_ttl_days

        async def keep(response: dict[str, Any]) -> bool:
            return await _keep(ctx.gateway, key_id, session, response, ttl_days)

        if session.parsed.stream:
            held = await engine.run_stream(
                ctx.plan, ctx.deadline, session.open_stream, lambda item: item.event in _OUTPUT
            )
            assert ctx.exchange is not None  # billed: admitted before the call
            session.note_dropped(held.target, ctx.headers)
            meter = Meter()
            events = _events(held, meter, ctx.exchange.chat, keep)
            return Streamed(held.target, held.attempts, events, meter, time.monotonic())
        answer, target, attempts = await engine.run(ctx.plan, ctx.deadline, session.complete)
        session.note_dropped(target, ctx.headers)
        meter = Meter()
        meter.usage = usage_of(answer.get("usage"))
        meter.chars = _output_chars(answer.get("output"))

        async def stored(ex: Exchange) -> None:
            _with_usage(answer, ex.usage, ex.usage_estimated, ex.cost_usd)
            if session.parsed.store is not False:
                ctx.headers["x-switchboard-stored"] = "true" if await keep(answer) else "false"

        def render(ex: Exchange) -> bytes:
            return json.dumps(answer, separators=(",", ":"), ensure_ascii=False).encode()

        return Answer(target, attempts, meter=meter, render=render, keep=stored)


RESPONSES = Responses()  # routed in http.app: handler(RESPONSES)


async def _owner(request: Request) -> tuple[Gateway, str]:
    gateway = gateway_of(request)
    deadline = request_deadline(request, gateway.settings.max_request_s)
    principal = await authenticate(request, gateway, deadline)
    return gateway, principal.key_id


def _not_found(response_id: str) -> NotFound:
    return NotFound(f"No response found with id '{response_id}'.", param="response_id")


async def retrieve_response(request: Request, headers: dict[str, str]) -> Response:
    gateway, owner = await _owner(request)
    response_id = request.path_params["response_id"]
    stored = await responses_store(gateway).get(owner, response_id)
    if stored is None:
        raise _not_found(response_id)
    return Response(json.dumps(stored.response, separators=(",", ":")), 200, headers, _JSON)


async def delete_response(request: Request, headers: dict[str, str]) -> Response:
    gateway, owner = await _owner(request)
    response_id = request.path_params["response_id"]
    if not await responses_store(gateway).delete(owner, response_id):
        raise _not_found(response_id)
    body = {"id": response_id, "object": "response.deleted", "deleted": True}
    return Response(json.dumps(body), 200, headers, _JSON)


def _limit(raw: str | None) -> int:
    if raw is None:
        return 20
    if not raw.isdigit() or not 1 <= int(raw) <= 100:
        raise InvalidRequest("'limit' must be an integer from 1 to 100.", param="limit", code="invalid_value")
    return int(raw)


async def list_input_items(request: Request, headers: dict[str, str]) -> Response:
    """OpenAI's list shape: ``limit`` (1-100, default 20), ``order`` (``desc`` by default),
    ``after`` (an item id: the page starts after it)."""
    query = request.query_params
    limit = _limit(query.get("limit"))
    order = query.get("order", "desc")
    if order not in ("asc", "desc"):
        raise InvalidRequest("'order' must be 'asc' or 'desc'.", param="order", code="invalid_value")
    gateway, owner = await _owner(request)
    response_id = request.path_params["response_id"]
    stored = await responses_store(gateway).get(owner, response_id)
    if stored is None:
        raise _not_found(response_id)
    items = list(stored.input if order == "asc" else reversed(stored.input))
    after = query.get("after")
    if after:
        ids = [item.get("id") for item in items]
        if after not in ids:
            raise InvalidRequest(f"No input item with id '{after}' in this response.", param="after")
        items = items[ids.index(after) + 1 :]
    page = items[:limit]
    body = {
        "object": "list",
        "data": page,
        "first_id": page[0].get("id", "") if page else "",
        "last_id": page[-1].get("id", "") if page else "",
        "has_more": len(items) > limit,
    }
    return Response(json.dumps(body, separators=(",", ":")), 200, headers, _JSON)
