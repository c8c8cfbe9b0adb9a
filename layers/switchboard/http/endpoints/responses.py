"""``POST /v1/responses`` and the stored responses: OpenAI's Responses API, through the same
planner, engine and lifecycle as chat.

Each target of the plan is served in its own way:

* a target that speaks the Responses API (``kind: openai`` on api.openai.com, or any provider with
  ``responses: true`` in the routing document) gets the client's body with ``model`` replaced (and,
  when the client continues a stored conversation, the whole history as ``input``); its answer or
  events go back as sent, with ``usage.cost`` added;
* any other target gets the request converted to chat (``responses_format``) and its answer, or
  its chunks, converted back.

So a fallback chain may mix the two. Retries, fallback and the streaming commit are the engine's:
until the first output event nothing reaches the client and a failure moves on invisibly; after it
a failure ends the stream with ``response.failed``, never a silent cut.

Stored responses (``store``, default true) are in ``responses_store``: each belongs to the key that
created it; ``previous_response_id`` rebuilds the conversation from there, whichever provider served
the earlier turns. ``GET /v1/responses/{id}``, ``DELETE /v1/responses/{id}`` and
``GET /v1/responses/{id}/input_items`` read them.
"""

from __future__ import annotations

import json
import logging
import time
import urllib.parse
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import Response

from switchboard.billing import metering
from switchboard.core import jsonbody
from switchboard.core.errors import (
    AttemptFailed,
    ErrorClass,
    GatewayError,
    InvalidRequest,
    ServiceUnavailable,
)
from switchboard.core.redaction import scrub
from switchboard.core.schemas import ChatCompletionRequest
from switchboard.core.sse import SSEEvent, iter_events
from switchboard.exchange import Exchange, admit, settle_all, settled_on_failure, settled_stream
from switchboard.http.asgi import EventStream
from switchboard.http.endpoints.responses_format import (
    EventTranslator,
    ResponsesRequest,
    Unconvertible,
    event,
    from_chat,
    input_items,
    new_id,
    response_usage,
    to_chat,
    usage_of,
)
from switchboard.http.endpoints.responses_store import ResponseStore, check_input
from switchboard.http.request import (
    attribution,
    authenticate,
    chat_plan,
    enter,
    gateway_of,
    request_deadline,
)
from switchboard.infra import aws
from switchboard.routing.overrides import take
from switchboard.routing.planner import PlannedTarget
from switchboard.routing.pricing import PriceMatch
from switchboard.upstream import providers
from switchboard.upstream.engine import Engine, HeldStream
from switchboard.upstream.providers.base import classify_http_error
from switchboard.upstream.providers.openai import OpenAICompatible
from switchboard.wiring import Gateway

__all__ = ["create_response", "delete_response", "list_input_items", "passes_through", "retrieve_response"]

log = logging.getLogger("switchboard.endpoints.responses")

_JSON = "application/json"
_OPENAI_HOST = "api.openai.com"
_OUTPUT = frozenset(
    {
        "response.output_text.delta",
        "response.function_call_arguments.delta",
        "response.refusal.delta",
        "response.reasoning_summary_text.delta",
        "response.reasoning_text.delta",
        "response.output_item.done",
        "response.completed",
        "response.incomplete",
    }
)
_FINAL = frozenset({"response.completed", "response.incomplete"})
_STRIPPED = frozenset({"message", "function_call", "function_call_output"})
_MAX_ERROR_BODY = 64 * 1024
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
    body = jsonbody.loads(raw)
    if not isinstance(body, dict):
        raise InvalidRequest("The request body must be a JSON object.", code="invalid_json")
    try:
        return body, ResponsesRequest.model_validate(body)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = str(first["loc"][0]) if first["loc"] else "request"  # the rest names union branches
        raise InvalidRequest(
            f"Invalid request: '{field}': {first['msg']}", param=field, code="invalid_value"
        ) from None


def _store(gateway: Gateway) -> ResponseStore:
    """The gateway's stored-responses table (its DynamoDB client, made once)."""
    store: ResponseStore | None = getattr(gateway, "_responses_store", None)
    if store is None:
        client = aws.runtime_client("dynamodb", gateway.settings.region)
        store = ResponseStore(lambda: client, gateway.settings.table)
        gateway._responses_store = store  # type: ignore[attr-defined]
    return store


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
        self._converted: dict[bool, ChatCompletionRequest] = {}

    def chat(self, stream: bool, target: PlannedTarget | None = None) -> ChatCompletionRequest:
        if stream not in self._converted:
            try:
                self._converted[stream] = to_chat(self.parsed, self.items, stream=stream)
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
        return self._converted[stream]

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
                completion, self.parsed, response_id=self.response_id, created_at=self.created_at
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
                content = b""
                async for part in response.aiter_bytes():
                    content += part
                    if len(content) > _MAX_ERROR_BODY:
                        break
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
        translator = EventTranslator(self.parsed, self.response_id, self.created_at)
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
        for name in ("text", "arguments", "refusal", "delta"):
            if isinstance(item.get(name), str):
                chars += len(item[name])
        if isinstance(item.get("content"), list):
            chars += _output_chars(item["content"])
    return chars


def _price(
    response: dict[str, Any], ex: Exchange, match: PriceMatch | None, chars: int, buffered: bool
) -> None:
    """Usage (reported, else estimated) and cost on ``ex``, and ``usage`` with ``cost`` on the
    response: never 0 or absent when the gateway knows better."""
    reported = usage_of(response.get("usage"))
    if buffered:
        metering.charge_usage(ex, reported, chars, match)
    else:
        metering.record(ex, reported, chars, match)
    usage = response.get("usage") if reported is not None else None
    if not isinstance(usage, dict):
        usage = response_usage(ex.usage) or {}
        if ex.usage_estimated:
            usage["estimated"] = True
    usage["cost"] = float(ex.cost_usd) if ex.cost_usd is not None else None
    response["usage"] = usage


async def _keep(
    gateway: Gateway, ex: Exchange, session: _Session, response: dict[str, Any], ttl_days: int
) -> bool:
    """Store the response when the request asked (the default); whether it is stored."""
    if session.parsed.store is False:
        return False
    own = session.items[len(session.history) :]
    try:
        return await _store(gateway).put(
            ex.principal.key_id, response, own, session.parsed.previous_response_id, ttl_days
        )
    except ServiceUnavailable:
        return False


def _sse(name: str, data: bytes) -> bytes:
    return b"event: " + name.encode() + b"\ndata: " + data + b"\n\n"


class _StreamState:
    __slots__ = ("chars", "completed", "failed", "output", "response", "sequence")

    def __init__(self) -> None:
        self.chars = 0
        self.completed = False
        self.failed = False
        self.response: dict[str, Any] | None = None
        self.sequence = -1
        self.output: list[dict[str, Any]] = []


async def _events(
    held: HeldStream[SSEEvent],
    state: _StreamState,
    ex: Exchange,
    match: PriceMatch | None,
    keep: Callable[[dict[str, Any]], Awaitable[bool]],
) -> AsyncIterator[bytes]:
    try:
        async for item in held.items():
            data = json.loads(item.data)
            kind = item.event or str(data.get("type"))
            if isinstance(data.get("sequence_number"), int):
                state.sequence = data["sequence_number"]
            if isinstance(data.get("response"), dict):
                state.response = data["response"]
            if kind.endswith(".delta"):
                state.chars += _output_chars(data)
            elif kind == "response.output_item.done" and isinstance(data.get("item"), dict):
                state.output.append(data["item"])
            if kind in _FINAL and state.response is not None:
                _price(state.response, ex, match, state.chars, buffered=False)
                stored = await keep(state.response)
                if not stored:
                    log.info("response %s not stored", state.response.get("id"))
                yield _sse(kind, json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode())
                state.completed = True
                continue
            yield _sse(kind, item.data)
        if not state.completed:
            raise AttemptFailed(
                ErrorClass.SERVER, f"{held.target.provider_name}: stream ended before it finished"
            )
    except AttemptFailed as failure:
        state.failed = True
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


async def create_response(request: Request, headers: dict[str, str]) -> Response:
    started = time.monotonic()
    gateway, deadline, principal, (body, parsed), routing = await enter(request, headers, _parse)
    wanted = take(body)  # routing overrides (routing.overrides): never forwarded upstream
    if parsed.__pydantic_extra__:
        take(parsed.__pydantic_extra__)
    route, rule = await chat_plan(gateway, routing, principal, parsed.model, headers, wanted)
    own = input_items(parsed.input)
    if parsed.store is not False:
        check_input(own)
    history: list[dict[str, Any]] = []
    if parsed.previous_response_id is not None:
        history = await _store(gateway).history(principal.key_id, parsed.previous_response_id)
    if not own and not history:
        raise InvalidRequest(
            "Missing required parameter: 'input'.", param="input", code="missing_required_parameter"
        )
    session = _Session(gateway.engine, body, parsed, history, own)
    ex = Exchange(
        headers["x-request-id"],
        principal,
        _estimate_chat(session),
        routing.revision,
        route,
        started=started,
        headers=headers,
        deadline=deadline,
    )
    ex.kind = "responses"
    ex.rule = rule
    hooks = gateway.hooks
    ttl_days = routing.document.responses_ttl_days

    async def keep(response: dict[str, Any]) -> bool:
        return await _keep(gateway, ex, session, response, ttl_days)

    await admit(hooks, ex)
    async with settled_on_failure(hooks, ex):
        if parsed.stream:
            held = await gateway.engine.run_stream(
                route, deadline, session.open_stream, lambda item: item.event in _OUTPUT
            )
        else:
            answer, target, attempts = await gateway.engine.run(route, deadline, session.complete)
    if parsed.stream:
        ex.target, ex.attempts, ex.status = held.target, held.attempts, 200
        ex.first_token_at = time.monotonic()
        match = gateway.prices.lookup(routing.document, held.target)
        state = _StreamState()

        def finish(ex: Exchange) -> None:
            if not state.completed:
                metering.record(ex, None, state.chars, match)
                ex.outcome = "interrupted"
                ex.error_code = "stream_interrupted" if state.failed else "client_disconnected"
            else:
                ex.outcome = "ok"

        attribution(headers, held.target.provider_name, held.target.model, held.attempts)
        headers["cache-control"] = "no-cache"
        headers["x-accel-buffering"] = "no"
        return EventStream(settled_stream(_events(held, state, ex, match, keep), ex, hooks, finish), headers)
    ex.target, ex.attempts, ex.status, ex.outcome = target, attempts, 200, "ok"
    match = gateway.prices.lookup(routing.document, target)
    _price(answer, ex, match, _output_chars(answer.get("output")), buffered=True)
    attribution(headers, target.provider_name, target.model, attempts)
    if parsed.store is not False:
        headers["x-switchboard-stored"] = "true" if await keep(answer) else "false"
    await settle_all(hooks, ex)
    return Response(json.dumps(answer, separators=(",", ":"), ensure_ascii=False), 200, headers, _JSON)


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
    stored = await _store(gateway).get(owner, response_id)
    if stored is None:
        raise _not_found(response_id)
    return Response(json.dumps(stored.response, separators=(",", ":")), 200, headers, _JSON)


async def delete_response(request: Request, headers: dict[str, str]) -> Response:
    gateway, owner = await _owner(request)
    response_id = request.path_params["response_id"]
    if not await _store(gateway).delete(owner, response_id):
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
    stored = await _store(gateway).get(owner, response_id)
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
