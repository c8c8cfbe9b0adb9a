"""The steps every HTTP endpoint shares, run in order by the request pipeline (``http.pipeline``).

``endpoint`` gives a handler its request id and turns every failure into the endpoint's error
shape; ``enter`` is the opening of every POST endpoint: the deadline, the key, the body, the
routing document in force. The app that routes to the endpoints is ``http.app``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from switchboard.core import jsonbody, redaction
from switchboard.core.attempts import AttemptRecord, header_safe
from switchboard.core.errors import GatewayError, PayloadTooLarge, PermissionDenied
from switchboard.core.principal import Principal, bearer_token
from switchboard.core.redaction import scrub
from switchboard.core.schemas import ChatCompletionRequest
from switchboard.infra import logs, refresh, tracing
from switchboard.routing import overrides as routing_overrides
from switchboard.routing.planner import Plan
from switchboard.routing.route import Routed, held_back, route
from switchboard.routing.store import LoadedRouting
from switchboard.wiring import Gateway

__all__ = [
    "Handler",
    "attribution",
    "authenticate",
    "breaker_plan",
    "chat_plan",
    "endpoint",
    "enter",
    "error_headers",
    "error_response",
    "gateway_of",
    "json_response",
    "permit",
    "planned_route",
    "read_body",
    "request_deadline",
    "request_id",
    "routing_headers",
]

log = logging.getLogger("switchboard.api")

T = TypeVar("T")

Handler = Callable[[Request, dict[str, str]], Awaitable[Response]]

_JSON = "application/json"
# Lambda must still answer after the plan gives up: keep this much of its remaining time back.
_LAMBDA_RESERVE_S = 0.5


def request_id() -> str:
    return "req_" + os.urandom(12).hex()


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(json.dumps(body, separators=(",", ":")), status, headers, _JSON)


def error_response(exc: GatewayError, headers: dict[str, str]) -> Response:
    return json_response(exc.body(), exc.status, error_headers(exc, headers))


def error_headers(exc: GatewayError, headers: dict[str, str]) -> dict[str, str]:
    """An error response's headers: the request's and the error's, scrubbed of known secrets."""
    return {name: scrub(value) for name, value in {**headers, **exc.headers}.items()}


def gateway_of(request: Request) -> Gateway:
    gateway: Gateway | None = getattr(request.app.state, "gateway", None)
    if gateway is None:
        gateway = request.app.state.gateway = Gateway.from_env()
    return gateway


def endpoint(
    handler: Handler, render: Callable[[GatewayError, dict[str, str]], Response] = error_response
) -> Callable[[Request], Awaitable[Response]]:
    """Give a handler a request id and turn every failure into an error ``render`` shapes
    (OpenAI's, unless the endpoint speaks another API)."""

    async def run(request: Request) -> Response:
        headers = {"x-request-id": request_id()}
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

    return run


async def authenticate(request: Request, gateway: Gateway, deadline: float | None = None) -> Principal:
    """The key's principal; a key that authenticates is masked in all the request writes after."""
    headers = request.headers
    token = bearer_token(headers.get("authorization"), headers.get("x-api-key"), headers.get("api-key"))
    principal = await gateway.auth.authenticate(token, deadline)
    # Only once it authenticated: an unknown key is no secret of the gateway's, and a value the
    # client chose must not decide what gets masked in the request's logs and cost event.
    redaction.bind_request(token)
    return principal


async def enter(
    request: Request, headers: dict[str, str], parse: Callable[[bytes], T]
) -> tuple[Gateway, float, Principal, T, LoadedRouting]:
    """What every POST endpoint does first, in this order: the request's deadline (which bounds
    the AWS reads after it), the key, the body (``parse`` it through ``jsonbody``'s checks), then
    the routing document in force (its revision goes in ``headers``)."""
    gateway = gateway_of(request)
    deadline = request_deadline(request, gateway.settings.max_request_s)
    principal = await authenticate(request, gateway, deadline)
    body = await jsonbody.parse(parse, await read_body(request, gateway.settings.max_body_bytes))
    routing = await gateway.routing.current(deadline)
    routing_headers(headers, routing)
    return gateway, deadline, principal, body, routing


async def read_body(request: Request, limit: int) -> bytes:
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


def request_deadline(request: Request, max_request_s: float) -> float:
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


def permit(principal: Principal, alias: str) -> None:
    """403 unless the key may use ``alias`` (the alias the client named)."""
    if principal.allowed_models is not None and alias not in principal.allowed_models:
        raise PermissionDenied(f"This key may not use the model '{alias}'.", param="model")


async def chat_plan(
    gateway: Gateway,
    routing: LoadedRouting,
    principal: Principal,
    alias: str,
    headers: dict[str, str],
    chat: ChatCompletionRequest | None = None,
    endpoint: str = "chat",
    overrides: routing_overrides.Overrides | None = None,
) -> tuple[Plan, str | None]:
    """The plan for a chat-type request (chat completions, Anthropic messages, responses) and the
    routing rule that rerouted it (None: none did): the key's check on the alias asked for, then
    ``routing.route.route``, the one function explain runs too (the key's right to the request's
    overrides, the routing decision, the overrides, the circuit breaker; the headers saying what
    acted go in ``headers``). ``chat`` is the request in chat form (its tokens, user and metadata);
    without it only the alias is known (count_tokens)."""
    routed = await planned_route(gateway, routing, principal, alias, chat, endpoint, overrides)
    headers.update(routed.headers)
    return routed.plan, routed.rule


async def planned_route(
    gateway: Gateway,
    routing: LoadedRouting,
    principal: Principal,
    alias: str,
    chat: ChatCompletionRequest | None = None,
    endpoint: str = "chat",
    overrides: routing_overrides.Overrides | None = None,
) -> Routed:
    """``chat_plan``'s route with its decision (what ``POST /v1/route/explain`` prints)."""
    permit(principal, alias)
    if chat is None:
        chat = ChatCompletionRequest.model_validate({"model": alias, "messages": [{"role": "user"}]})
    return await route(
        gateway.router,
        routing.document,
        principal,
        chat,
        endpoint=endpoint,
        budget=gateway.budget_use,
        overrides=overrides,
        breaker=gateway.breaker,
    )


def breaker_plan(gateway: Gateway, routing: LoadedRouting, plan: Plan, headers: dict[str, str]) -> Plan:
    """A plan made without a routing decision (embeddings) through the circuit breaker, as a chat
    plan goes (``routing.route.held_back``: the same ``Breaker.filter`` and header)."""
    return held_back(gateway.breaker, routing.document, plan, headers)


def routing_headers(headers: dict[str, str], routing: LoadedRouting) -> None:
    headers["x-switchboard-routing-version"] = routing.revision


def attribution(headers: dict[str, str], provider: str, model: str, attempts: list[AttemptRecord]) -> None:
    headers["x-switchboard-provider"] = provider
    headers["x-switchboard-model"] = header_safe(model)
    headers["x-switchboard-attempts"] = str(len(attempts))
    headers["x-switchboard-trail"] = ",".join(a.render() for a in attempts)
