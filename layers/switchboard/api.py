"""The ASGI app: OpenAI's HTTP surface over the engine.

One app serves both deployments: under uvicorn (locally, and in Lambda through the Web Adapter,
which streams) and under Mangum (the buffered mode, and in-process handler tests).

Routes: ``GET /health``, ``GET /v1/models``, ``GET /v1/models/{id}``, ``POST /v1/chat/completions``,
``POST /v1/messages`` and ``POST /v1/messages/count_tokens`` (``endpoints.messages``; every error
under ``/v1/messages`` in Anthropic's shape, 404 and 405 too), ``POST /v1/embeddings``
(``endpoints.embeddings``).
Every response carries ``x-request-id``; routed responses carry the attribution headers.
"""

from __future__ import annotations

import contextlib
import gc
import json
import logging
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from decimal import Decimal
from typing import Any, TypeVar

from pydantic import ValidationError
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route

from switchboard import heartbeat, jsonbody, logs, metering, redaction, refresh, tracing
from switchboard.asgi import EventStream, Front
from switchboard.auth import Principal, bearer_token
from switchboard.cors import CorsFront
from switchboard.endpoints.models import describe
from switchboard.engine import StreamResult, header_safe
from switchboard.errors import GatewayError, InvalidRequest, PayloadTooLarge, PermissionDenied
from switchboard.gateway import Gateway
from switchboard.lifecycle import Exchange, Hook, admit, settle_all, settled_on_failure, settled_stream
from switchboard.redaction import scrub
from switchboard.routing import breaker
from switchboard.routing import overrides as routing_overrides
from switchboard.routing.planner import Plan, PlannedTarget, plan
from switchboard.routing.rules import reroute
from switchboard.routing.store import LoadedRouting
from switchboard.schemas import ChatCompletionRequest, ModelList
from switchboard.sse import encode_json

__all__ = ["create_app"]

log = logging.getLogger("switchboard.api")

T = TypeVar("T")

Handler = Callable[[Request, dict[str, str]], Awaitable[Response]]

_JSON = "application/json"
# Lambda must still answer after the plan gives up: keep this much of its remaining time back.
_LAMBDA_RESERVE_S = 0.5


def _request_id() -> str:
    return "req_" + os.urandom(12).hex()


def _json(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(json.dumps(body, separators=(",", ":")), status, headers, _JSON)


def _error_response(exc: GatewayError, headers: dict[str, str]) -> Response:
    return _json(exc.body(), exc.status, error_headers(exc, headers))


def error_headers(exc: GatewayError, headers: dict[str, str]) -> dict[str, str]:
    """An error response's headers: the request's and the error's, scrubbed of known secrets."""
    return {name: scrub(value) for name, value in {**headers, **exc.headers}.items()}


def _gateway(request: Request) -> Gateway:
    gateway: Gateway | None = getattr(request.app.state, "gateway", None)
    if gateway is None:
        gateway = request.app.state.gateway = Gateway.from_env()
    return gateway


def _endpoint(
    handler: Handler, render: Callable[[GatewayError, dict[str, str]], Response] = _error_response
) -> Callable[[Request], Awaitable[Response]]:
    """Give a handler a request id and turn every failure into an error ``render`` shapes
    (OpenAI's, unless the endpoint speaks another API)."""

    async def endpoint(request: Request) -> Response:
        headers = {"x-request-id": _request_id()}
        logs.bind_request(headers["x-request-id"])
        tracing.bind(request.headers)
        try:
            return await handler(request, headers)
        except GatewayError as exc:
            return render(exc, headers)
        except ClientDisconnect:
            # The client left before its body was in: nobody to answer, nothing went wrong here.
            log.info("client disconnected during upload (request %s)", headers["x-request-id"])
            return Response(status_code=499, headers=headers)  # nginx's "client closed request"
        except Exception:
            log.exception("unhandled error in %s (request %s)", request.url.path, headers["x-request-id"])
            err = GatewayError(f"Internal gateway error. Quote request id {headers['x-request-id']}.")
            return render(err, headers)

    return endpoint


async def _authenticate(request: Request, gateway: Gateway, deadline: float | None = None) -> Principal:
    """The key's principal; a key that authenticates is masked in all the request writes after."""
    headers = request.headers
    token = bearer_token(headers.get("authorization"), headers.get("x-api-key"), headers.get("api-key"))
    principal = await gateway.auth.authenticate(token, deadline)
    # Only once it authenticated: an unknown key is no secret of the gateway's, and a value the
    # client chose must not decide what gets masked in the request's logs and cost event.
    redaction.bind_request(token)
    return principal


async def _enter(
    request: Request, headers: dict[str, str], parse: Callable[[bytes], T]
) -> tuple[Gateway, float, Principal, T, LoadedRouting]:
    """What every POST endpoint does first, in this order: the request's deadline (which bounds
    the AWS reads after it), the key, the body (``parse`` it through ``jsonbody``'s checks), then
    the routing document in force (its revision goes in ``headers``)."""
    gateway = _gateway(request)
    deadline = _deadline(request, gateway.settings.max_request_s)
    principal = await _authenticate(request, gateway, deadline)
    body = await jsonbody.parse(parse, await _read_body(request, gateway.settings.max_body_bytes))
    routing = await gateway.routing.current(deadline)
    _routing_headers(headers, routing)
    return gateway, deadline, principal, body, routing


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    too_large = PayloadTooLarge(f"Request body exceeds the gateway's limit of {limit} bytes.")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise too_large
    body = bytearray()
    async for part in request.stream():
        body += part
        if len(body) > limit:
            raise too_large
    return bytes(body)


def _parse_chat(body: bytes) -> ChatCompletionRequest:
    try:
        return ChatCompletionRequest.model_validate_json(body)
    except ValidationError as exc:
        first = exc.errors()[0]
        if first["type"] == "json_invalid":
            raise InvalidRequest(
                "We could not parse the JSON body of your request. Send valid JSON.", code="invalid_json"
            ) from None
        if first["type"] == "model_type" and not first["loc"]:
            raise InvalidRequest("The request body must be a JSON object.", code="invalid_json") from None
        where = ".".join(str(part) for part in first["loc"])
        raise InvalidRequest(
            f"Invalid request: '{where}': {first['msg']}", param=where, code="invalid_value"
        ) from None


def _deadline(request: Request, max_request_s: float) -> float:
    """When the whole request must be done: the client's timeout, capped by the Lambda's remaining
    time. Also the bound of every AWS read the request waits for (``refresh.DEADLINE``)."""
    budget = max_request_s
    for name in ("x-switchboard-timeout", "x-stainless-timeout"):
        value = request.headers.get(name)
        if value:
            with contextlib.suppress(ValueError):
                budget = min(budget, float(value))
            break
    context = request.scope.get("aws.context")  # Mangum
    if context is not None:
        budget = min(budget, context.get_remaining_time_in_millis() / 1000 - _LAMBDA_RESERVE_S)
    lwa = request.headers.get("x-amzn-lambda-context")  # Lambda Web Adapter
    if lwa:
        try:
            context_json = json.loads(lwa)
            deadline_ms = float(context_json.get("deadline") or context_json["deadline_ms"])
            budget = min(budget, deadline_ms / 1000 - time.time() - _LAMBDA_RESERVE_S)
        except (ValueError, KeyError, TypeError, AttributeError):
            pass  # no usable deadline in the header: the other caps still apply
    deadline = time.monotonic() + max(budget, 0.001)
    refresh.DEADLINE.set(deadline)
    return deadline


def _permit(principal: Principal, alias: str) -> None:
    """403 unless the key may use ``alias`` (the alias the client named)."""
    if principal.allowed_models is not None and alias not in principal.allowed_models:
        raise PermissionDenied(f"This key may not use the model '{alias}'.", param="model")


async def _chat_plan(
    gateway: Gateway,
    routing: LoadedRouting,
    principal: Principal,
    alias: str,
    headers: dict[str, str],
    overrides: routing_overrides.Overrides | None = None,
) -> Plan:
    """The plan for a chat-type request (chat completions, Anthropic messages): the key's check on
    the alias asked for, then the routing rules (which name the rule in ``headers``), then the
    served alias's plan, then the request's own overrides (``routing.overrides``) if the key may."""
    _permit(principal, alias)
    if overrides is not None and not overrides.empty:
        routing_overrides.check_allowed(overrides, principal.overrides)
    served = await reroute(gateway.budget_use, routing.document, principal, alias, headers)
    route = plan(routing.document, served, visible=principal.allowed_models)
    if overrides is not None and not overrides.empty:
        route = _overridden(gateway, routing, principal, route, overrides, headers)
    if gateway.breaker is not None:
        route, _decisions, held = gateway.breaker.filter(route, routing.document.breaker)
        if held is not None:
            headers[breaker.HEADER] = header_safe(held)
    return route


def _overridden(
    gateway: Gateway,
    routing: LoadedRouting,
    principal: Principal,
    route: Plan,
    overrides: routing_overrides.Overrides,
    headers: dict[str, str],
) -> Plan:
    """The plan after the request's ``models`` and ``provider`` (``routing.overrides``)."""
    doc = routing.document

    def price(target: PlannedTarget) -> tuple[Decimal, Decimal] | None:
        match = gateway.prices.lookup(doc, target)
        return None if match is None else (match.price.input_per_mtok, match.price.output_per_mtok)

    route, _decisions = routing_overrides.planned(doc, route, overrides, principal.allowed_models, price)
    headers["x-switchboard-overrides"] = ",".join(
        (["models"] if overrides.models else []) + (overrides.provider.used() if overrides.provider else [])
    )
    return route


def _routing_headers(headers: dict[str, str], routing: LoadedRouting) -> None:
    headers["x-switchboard-routing-version"] = routing.revision


async def health(request: Request) -> Response:
    return _json({"status": "ok"})


async def list_models(request: Request, headers: dict[str, str]) -> Response:
    gateway = _gateway(request)
    deadline = _deadline(request, gateway.settings.max_request_s)
    principal = await _authenticate(request, gateway, deadline)
    routing = await gateway.routing.current(deadline)
    _routing_headers(headers, routing)
    allowed = principal.allowed_models
    doc = routing.document
    models = [describe(doc, alias) for alias in sorted(doc.models) if allowed is None or alias in allowed]
    return Response(ModelList(data=models).to_json(), 200, headers, _JSON)


async def retrieve_model(request: Request, headers: dict[str, str]) -> Response:
    gateway = _gateway(request)
    deadline = _deadline(request, gateway.settings.max_request_s)
    principal = await _authenticate(request, gateway, deadline)
    routing = await gateway.routing.current(deadline)
    _routing_headers(headers, routing)
    alias = request.path_params["model"]
    # ModelNotFound lists the valid aliases: for a restricted key, only those it may use.
    plan(routing.document, alias, mode=None, visible=principal.allowed_models)
    _permit(principal, alias)
    return Response(describe(routing.document, alias).to_json(), 200, headers, _JSON)


async def chat_completions(request: Request, headers: dict[str, str]) -> Response:
    started = time.monotonic()
    gateway, deadline, principal, chat, routing = await _enter(request, headers, _parse_chat)
    wanted = routing_overrides.take(chat.__pydantic_extra__)  # never forwarded upstream
    route = await _chat_plan(gateway, routing, principal, chat.model, headers, wanted)
    ex = Exchange(
        headers["x-request-id"],
        principal,
        chat,
        routing.revision,
        route,
        started=started,
        headers=headers,
        deadline=deadline,
    )
    ex.rule = headers.get("x-switchboard-rule")  # set by reroute when a routing rule fired
    hooks = gateway.hooks
    await admit(hooks, ex)
    if chat.stream:
        return await _chat_stream(gateway, routing, route, chat, ex, deadline)
    async with settled_on_failure(hooks, ex):
        done = await gateway.engine.complete(chat, route, deadline)
    ex.target, ex.attempts, ex.status, ex.outcome = done.target, done.attempts, 200, "ok"
    metering.charge(ex, done.completion, gateway.prices.lookup(routing.document, done.target))
    _attribution(headers, done.target.provider_name, done.target.model, done.attempts)
    await settle_all(hooks, ex)
    return Response(metering.body_with_cost(done.raw, done.completion, ex), 200, headers, _JSON)


async def _chat_stream(
    gateway: Gateway,
    routing: LoadedRouting,
    route: Plan,
    chat: ChatCompletionRequest,
    ex: Exchange,
    deadline: float,
) -> Response:
    """A streamed chat completion: the plan runs as a task (``switchboard.heartbeat``); found
    within ``heartbeat_after_s``, the response carries the attribution headers as always, else it
    commits with keep-alive comments and ends with the stream or an error event."""
    hooks, headers = gateway.hooks, ex.headers
    headers["cache-control"] = "no-cache"
    headers["x-accel-buffering"] = "no"

    async def run() -> StreamResult:
        async with settled_on_failure(hooks, ex):
            return await gateway.engine.stream(chat, route, deadline)

    def events(stream: StreamResult) -> AsyncIterator[bytes]:
        ex.target, ex.attempts, ex.status = stream.target, stream.attempts, 200
        price = gateway.prices.lookup(routing.document, stream.target)
        meter = stream.meter = metering.StreamMeter(chat, price)
        _attribution(headers, stream.target.provider_name, stream.target.model, stream.attempts)
        return _settled_stream(stream, meter, ex, hooks)

    task = heartbeat.start(run())
    settings = gateway.settings
    if await heartbeat.within(
        task, heartbeat.after_s(routing.document.defaults.heartbeat_after_s, settings.heartbeat_after_s)
    ):
        return EventStream(events(task.result()), headers)

    async def late() -> AsyncIterator[bytes]:
        async for beat in heartbeat.keep_alive(task, settings.heartbeat_every_s, lambda: heartbeat.left(ex)):
            yield beat
        try:
            stream = task.result()
        except GatewayError as exc:  # every target failed (settled in the task): an error event
            yield encode_json(exc.body())
            return
        except Exception:
            log.exception("stream plan failed after the heartbeats began (request %s)", ex.request_id)
            yield encode_json(
                GatewayError(f"Internal gateway error. Quote request id {ex.request_id}.").body()
            )
            return
        async for part in events(stream):
            yield part

    return EventStream(late(), headers)


def _settled_stream(
    stream: StreamResult, meter: metering.StreamMeter, ex: Exchange, hooks: list[Hook]
) -> AsyncIterator[bytes]:
    """The stream's bytes; settles once the last byte is out, the upstream broke, or the client left."""
    ex.first_token_at = stream.first_token_at

    def finish(ex: Exchange) -> None:
        meter.settle(ex)  # usage (reported, else estimated from what was sent) and cost
        ex.attempts = stream.attempts
        if stream.completed:
            ex.outcome = "ok"
        else:
            ex.outcome = "interrupted"
            ex.error_code = "stream_interrupted" if stream.interrupted else "client_disconnected"

    return settled_stream(stream.events(), ex, hooks, finish)


def _attribution(headers: dict[str, str], provider: str, model: str, attempts: list[Any]) -> None:
    headers["x-switchboard-provider"] = provider
    headers["x-switchboard-model"] = header_safe(model)
    headers["x-switchboard-attempts"] = str(len(attempts))
    headers["x-switchboard-trail"] = ",".join(a.render() for a in attempts)


async def _http_error(request: Request, exc: Exception) -> Response:
    status = exc.status_code if isinstance(exc, HTTPException) else 500
    message = "Not found." if status == 404 else "Method not allowed." if status == 405 else "Request failed."
    # Starlette's own headers matter: a 405 must say which methods are allowed (RFC 9110).
    headers = dict(exc.headers or {}) if isinstance(exc, HTTPException) else {}
    err = GatewayError(f"{message} ({request.method} {request.url.path})", status=status, headers=headers)
    err.type = "invalid_request_error"
    path = request.url.path
    if path == "/v1/messages" or path.startswith("/v1/messages/"):  # Anthropic's API: its error shape
        from switchboard.endpoints.messages import anthropic_error

        return anthropic_error(err, {"x-request-id": _request_id()})
    return _error_response(err, {"x-request-id": _request_id()})


def create_app(gateway: Gateway | None = None) -> Front:
    """The ASGI app. Without ``gateway``, one is built from the environment at startup."""
    from switchboard.endpoints import embeddings, messages  # they import this module: only once loaded

    anthropic_messages = _endpoint(messages.create_message, messages.anthropic_error)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        if getattr(app.state, "gateway", None) is None:
            app.state.gateway = Gateway.from_env()
            # What init built (boto3's models, pydantic's schemas) lives as long as the process; a
            # full cyclic-GC pass over it stalls every in-flight request for ~0.1 s. Exempt it.
            gc.freeze()
        yield
        await app.state.gateway.aclose()

    app = Starlette(
        routes=[
            Route("/health", health, methods=["GET"]),
            Route("/v1/models", _endpoint(list_models), methods=["GET"]),
            Route("/v1/models/{model:path}", _endpoint(retrieve_model), methods=["GET"]),
            Route("/v1/chat/completions", _endpoint(chat_completions), methods=["POST"]),
            Route("/v1/messages", anthropic_messages, methods=["POST"]),
            Route(
                "/v1/messages/count_tokens",
                _endpoint(messages.count_tokens, messages.anthropic_error),
                methods=["POST"],
            ),
            Route("/v1/embeddings", _endpoint(embeddings.create_embeddings), methods=["POST"]),
        ],
        exception_handlers={HTTPException: _http_error},
        lifespan=lifespan,
    )
    app.state.gateway = gateway
    # The routed POST endpoints straight to their handlers (switchboard.asgi); CORS from the
    # routing document, answered here (switchboard.cors).
    return CorsFront(app)
