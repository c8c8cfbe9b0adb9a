"""The one request pipeline every routed endpoint runs through; an endpoint is only its own parts.

The stages, written once here, in order::

    identify (request id)    http.request.endpoint: every failure in the endpoint's error shape
    authenticate, read       http.request.enter: the deadline, the key, the body (``parse``),
                             the routing document in force
    route and plan           the key's check on the alias, the routing rules (``rules``), the plan
    prepare                  the endpoint's ``load`` (what it reads first) and ``prepare`` (its
                             checks against the plan; the request as chat, for the estimates)
    admit                    exchange.admit: the hooks (budgets, rate limits) may refuse
    call                     the endpoint's ``call``: its converter and the engine
    meter                    billing.metering: the price (one lookup), the usage (reported, else
                             estimated and marked so), the cost
    settle                   exchange.settle_all: after the response (buffered: and the answer's
                             ``keep``, what the endpoint does with it once priced) or its last byte
                             (streamed), or after a failure
    respond                  the attribution headers, the body or the event stream

An endpoint supplies (see ``Endpoint``): its ``name`` (the exchange's ``kind``, the cost event's
``endpoint``), ``parse`` (its schema), ``call`` (its converter and upstream call, answering an
``Answer`` or a ``Streamed``) and ``error`` (its error shape); ``alias``, ``load`` and ``prepare``
when the defaults do not fit. ``handler(endpoint)`` is what ``http.app`` routes to. See
``docs/architecture.md``, "Adding an endpoint".
"""

from __future__ import annotations

import logging
import time
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar, Generic, TypeVar

from starlette.requests import Request
from starlette.responses import Response

from switchboard.billing import metering
from switchboard.billing.metering import Meter
from switchboard.core.attempts import AttemptRecord
from switchboard.core.errors import GatewayError, InvalidRequest
from switchboard.core.principal import Principal
from switchboard.core.schemas import ChatCompletionRequest
from switchboard.core.sse import encode_json
from switchboard.exchange import Exchange, admit, settle_all, settled_on_failure, settled_stream
from switchboard.http import heartbeat
from switchboard.http.asgi import EventStream
from switchboard.http.request import (
    attribution,
    breaker_plan,
    chat_plan,
    endpoint,
    enter,
    error_response,
    permit,
)
from switchboard.routing.overrides import Overrides, take
from switchboard.routing.planner import Plan, PlannedTarget, plan
from switchboard.routing.pricing import PriceMatch
from switchboard.routing.store import LoadedRouting
from switchboard.wiring import Gateway

__all__ = ["Answer", "Context", "Endpoint", "Streamed", "handler", "serve", "served_by"]

B = TypeVar("B")

_JSON = "application/json"

log = logging.getLogger("switchboard.api")


@dataclass(slots=True)
class Context(Generic[B]):
    """What the stages know when they reach the endpoint's ``prepare`` and ``call``."""

    request: Request
    headers: dict[str, str]  # the response's headers so far (an endpoint may add its own)
    gateway: Gateway
    deadline: float  # time.monotonic() by which the whole request must be done
    principal: Principal
    routing: LoadedRouting
    body: B  # what the endpoint's ``parse`` returned
    plan: Plan
    rule: str | None  # the routing rule that chose the alias, if one fired
    # The request's record, from admission on (None before it, and for an unbilled endpoint): a
    # ``call`` may note what the hooks should see (``exchange.state``); usage and cost are the
    # pipeline's to set.
    exchange: Exchange | None = None

    def price(self, target: PlannedTarget) -> PriceMatch | None:
        """The price in force for ``target`` (the routing document's over the built-in table)."""
        return self.gateway.prices.lookup(self.routing.document, target)


@dataclass(slots=True)
class Answer:
    """A buffered answer. ``meter`` holds the usage it reported (None: estimated from
    ``meter.chars``); the body is ``render(ex)`` once usage and cost are on the exchange (to put
    ``usage.cost`` in it), else ``content`` as is."""

    target: PlannedTarget | None  # None: no upstream answered (nothing to attribute)
    attempts: list[AttemptRecord]
    content: bytes = b""
    meter: Meter = field(default_factory=Meter)
    render: Callable[[Exchange], bytes] | None = None
    media_type: str = _JSON
    # Once metered, before settlement: what the endpoint does with its priced answer (it may add
    # response headers). ``/v1/responses`` stores it there.
    keep: Callable[[Exchange], Awaitable[None]] | None = None


@dataclass(slots=True)
class Streamed:
    """A committed stream: ``events`` are the client's bytes (the endpoint's wire format, its
    error event included). As they pass, the endpoint fills ``meter``: the usage reported, the
    output characters, ``completed`` once the last event is out, ``interrupted`` when the upstream
    failed after output began (neither: the client left)."""

    target: PlannedTarget
    attempts: list[AttemptRecord]
    events: AsyncIterator[bytes]
    meter: Meter
    first_token_at: float | None = None


class Endpoint(Generic[B]):
    """One endpoint's own parts. Subclass it, set ``name``, write ``parse`` and ``call``; override
    ``error`` for another API's error shape, ``alias``, ``load`` and ``prepare`` when the defaults
    do not fit.
    """

    name: ClassVar[str]  # the exchange's kind and the cost event's ``endpoint``: "chat", ...
    mode: ClassVar[str] = "chat"  # the route mode it plans for ("chat" or "embeddings")
    rules: ClassVar[bool] = True  # the routing rules may reroute the alias asked for
    billed: ClassVar[bool] = True  # admitted, metered, settled (False: no hooks, no cost event)
    # A stream may commit before its first output and keep alive with SSE comments (http.heartbeat);
    # the endpoint then gives ``streams`` and ``stream_error`` in its wire format.
    heartbeats: ClassVar[bool] = False

    def parse(self, raw: bytes) -> B:
        """The request body checked against the endpoint's schema (raise ``InvalidRequest``)."""
        raise NotImplementedError

    async def call(self, ctx: Context[B]) -> Answer | Streamed:
        """The upstream call over ``ctx.plan`` (the engine, through the endpoint's converter)."""
        raise NotImplementedError

    def error(self, exc: GatewayError, headers: dict[str, str]) -> Response:
        """A failure in the endpoint's error shape (OpenAI's by default)."""
        return error_response(exc, headers)

    def overrides(self, body: B) -> Overrides:
        """The request's routing overrides (``routing.overrides``: ``models``, ``provider``),
        removed from every form of the body (its fields, a raw dict beside a parsed model) so no
        upstream ever receives them."""
        found = Overrides()
        for part in (getattr(body, "raw", None), getattr(body, "parsed", None), body):
            extra = part if isinstance(part, dict) else getattr(part, "__pydantic_extra__", None)
            got = take(extra)
            found = found if got.empty else got
        return found

    def streams(self, body: B) -> bool:
        """Whether the request asks for a stream (``body.stream`` by default)."""
        return bool(getattr(body, "stream", False))

    def stream_error(self, exc: GatewayError, body: B) -> bytes:
        """A failure as the last event of a stream already committed (heartbeats) for the request
        ``body``: OpenAI's shape."""
        return encode_json(exc.body())

    def alias(self, body: B) -> str:
        """The model alias the client asked for (``body.model`` by default)."""
        model: str = getattr(body, "model")  # noqa: B009 - any body with a ``model``
        return model

    routed_as: ClassVar[str | None] = None  # the endpoint rules see ("messages" for count_tokens)

    def routing_chat(self, body: B) -> ChatCompletionRequest | None:
        """The request as chat for the routing decision (its tokens, user and metadata: rules,
        sticky assignment, cheapest, context windows); None: only the alias is known."""
        return body if isinstance(body, ChatCompletionRequest) else None

    async def load(self, ctx: Context[B]) -> None:
        """After the plan, before ``prepare``: what the request must read before it can be checked
        and estimated (``/v1/responses``: the stored conversation it continues). Nothing by default."""

    def prepare(self, ctx: Context[B]) -> ChatCompletionRequest:
        """Before admission: check the request against its plan (may refuse it), and give the
        hooks the request as chat, for their estimates (the body itself when it is chat)."""
        if isinstance(ctx.body, ChatCompletionRequest):
            return ctx.body
        raise NotImplementedError(f"{type(self).__name__}.prepare: the request as chat, for the estimates")


# Each route endpoint ``handler`` made -> the Endpoint it serves (``served_by``).
_SERVED: weakref.WeakKeyDictionary[Callable[..., Any], Endpoint[Any]] = weakref.WeakKeyDictionary()


def handler(spec: Endpoint[Any]) -> Callable[[Request], Awaitable[Response]]:
    """The route's endpoint for ``spec``: a request id, the pipeline, ``spec``'s error shape."""

    async def run(request: Request, headers: dict[str, str]) -> Response:
        return await serve(spec, request, headers)

    routed = endpoint(run, spec.error)
    _SERVED[routed] = spec
    return routed


def served_by(routed: Callable[..., Any]) -> Endpoint[Any] | None:
    """The Endpoint whose pipeline a route's endpoint runs; None when ``handler`` did not make it
    (how a test holds every routed POST to the pipeline)."""
    return _SERVED.get(routed)


async def serve(spec: Endpoint[B], request: Request, headers: dict[str, str]) -> Response:
    """One request through every stage (the request id is ``headers["x-request-id"]``)."""
    started = time.monotonic()
    gateway, deadline, principal, body, routing = await enter(request, headers, spec.parse)
    route, rule = await _route(spec, gateway, routing, principal, body, headers)
    ctx = Context(request, headers, gateway, deadline, principal, routing, body, route, rule)
    await spec.load(ctx)
    if not spec.billed:
        return _respond(ctx, await spec.call(ctx))
    ex = Exchange(
        headers["x-request-id"],
        principal,
        spec.prepare(ctx),
        routing.revision,
        route,
        started=started,
        headers=headers,
        deadline=deadline,
    )
    ex.kind, ex.rule = spec.name, rule
    ctx.exchange = ex
    hooks = gateway.hooks
    await admit(hooks, ex)
    if spec.heartbeats and spec.streams(body):
        return await _heartbeats(spec, ctx, ex)
    async with settled_on_failure(hooks, ex):
        answer = await spec.call(ctx)
    return await _answered(ctx, ex, answer)


async def _answered(ctx: Context[Any], ex: Exchange, answer: Answer | Streamed) -> Response:
    """After the call: meter, settle (a buffered answer) and respond."""
    _record(ctx, ex, answer)
    if isinstance(answer, Streamed):
        return _stream(ctx, ex, answer)
    hooks, headers = ctx.gateway.hooks, ctx.headers
    ex.outcome = "ok"
    metering.charge_usage(ex, answer.meter.usage, answer.meter.chars, answer.meter.match)
    _respond_headers(ctx, answer)
    if answer.keep is not None:
        await answer.keep(ex)
    await settle_all(hooks, ex)
    content = answer.render(ex) if answer.render is not None else answer.content
    return Response(content, 200, headers, answer.media_type)


async def _route(
    spec: Endpoint[B],
    gateway: Gateway,
    routing: LoadedRouting,
    principal: Principal,
    body: B,
    headers: dict[str, str],
) -> tuple[Plan, str | None]:
    alias = spec.alias(body)
    if spec.rules:
        wanted = spec.overrides(body)  # taken out of the body before anything reads it
        chat = spec.routing_chat(body)
        return await chat_plan(
            gateway, routing, principal, alias, headers, chat, spec.routed_as or spec.name, wanted
        )
    permit(principal, alias)
    wanted = spec.overrides(body)  # no routing rules here, so no overrides: refused, never forwarded
    if not wanted.empty:
        raise InvalidRequest(
            f"The routing overrides 'models' and 'provider' are not supported on the {spec.name} "
            "endpoint: name one alias in 'model'.",
            param="models" if wanted.models else "provider",
            code="unsupported_parameter",
        )
    planned = plan(routing.document, alias, mode=spec.mode, visible=principal.allowed_models)
    return breaker_plan(gateway, routing, planned, headers), None  # skips open targets, as chat


def _respond_headers(ctx: Context[Any], answer: Answer | Streamed) -> None:
    if answer.target is not None:
        attribution(ctx.headers, answer.target.provider_name, answer.target.model, answer.attempts)
    if isinstance(answer, Streamed):
        ctx.headers["cache-control"] = "no-cache"
        ctx.headers["x-accel-buffering"] = "no"


def _respond(ctx: Context[Any], answer: Answer | Streamed) -> Response:
    """An unbilled endpoint's response: nothing admitted, metered or settled."""
    _respond_headers(ctx, answer)
    if isinstance(answer, Streamed):
        return EventStream(answer.events, ctx.headers)
    return Response(answer.content, 200, ctx.headers, answer.media_type)


def _record(ctx: Context[Any], ex: Exchange, answer: Answer | Streamed) -> None:
    ex.target, ex.attempts, ex.status = answer.target, answer.attempts, 200
    if answer.target is not None:
        answer.meter.match = ctx.price(answer.target)


async def _heartbeats(spec: Endpoint[Any], ctx: Context[Any], ex: Exchange) -> Response:
    """A stream under heartbeats (``http.heartbeat``): the call runs as a task; answered within
    ``heartbeat_after_s``, the response is as always (attribution headers included), else it
    commits with keep-alive comments, and ends with the stream or the endpoint's error event."""
    hooks, settings = ctx.gateway.hooks, ctx.gateway.settings

    async def run() -> Answer | Streamed:
        async with settled_on_failure(hooks, ex):
            return await spec.call(ctx)

    task = heartbeat.start(run())
    after = heartbeat.after_s(ctx.routing.document.defaults.heartbeat_after_s, settings.heartbeat_after_s)
    if await heartbeat.within(task, after):
        return await _answered(ctx, ex, task.result())
    ctx.headers["cache-control"] = "no-cache"
    ctx.headers["x-accel-buffering"] = "no"

    async def late() -> AsyncIterator[bytes]:
        async for beat in heartbeat.keep_alive(task, settings.heartbeat_every_s, lambda: heartbeat.left(ex)):
            yield beat
        try:
            answer = task.result()
        except GatewayError as exc:  # every target failed (settled in the task): an error event
            yield spec.stream_error(exc, ctx.body)
            return
        except Exception:
            log.exception("stream plan failed after the heartbeats began (request %s)", ex.request_id)
            yield spec.stream_error(
                GatewayError(f"Internal gateway error. Quote request id {ex.request_id}."), ctx.body
            )
            return
        assert isinstance(answer, Streamed)  # a streaming request's call answers a stream
        _record(ctx, ex, answer)
        async for part in _stream_events(ctx, ex, answer):
            yield part

    return EventStream(late(), ctx.headers)


def _stream(ctx: Context[Any], ex: Exchange, stream: Streamed) -> Response:
    """The event stream; settled once the last byte is out, the upstream broke, or the client left."""
    return EventStream(_stream_events(ctx, ex, stream), ctx.headers)


def _stream_events(ctx: Context[Any], ex: Exchange, stream: Streamed) -> AsyncIterator[bytes]:
    ex.first_token_at = stream.first_token_at
    _respond_headers(ctx, stream)
    meter = stream.meter

    def finish(ex: Exchange) -> None:
        metering.record(ex, meter.usage, meter.chars, meter.match)  # reported, else estimated
        ex.attempts = stream.attempts
        if meter.completed:
            ex.outcome = "ok"
        else:
            ex.outcome = "interrupted"
            ex.error_code = "stream_interrupted" if meter.interrupted else "client_disconnected"

    return settled_stream(stream.events, ex, ctx.gateway.hooks, finish)
