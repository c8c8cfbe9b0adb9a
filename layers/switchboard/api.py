"""The ASGI app: OpenAI's HTTP surface over the engine.

One app serves both deployments: under uvicorn (locally, and in Lambda through the Web Adapter,
which streams) and under Mangum (the buffered mode, and in-process handler tests).

Routes: ``GET /health``, ``GET /v1/models``, ``GET /v1/models/{id}``, ``POST /v1/chat/completions``.
Every response carries ``x-request-id``; routed responses carry the attribution headers.
"""

from __future__ import annotations

import gc
import json
import logging
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

from pydantic import ValidationError
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from switchboard.auth import Principal, bearer_token
from switchboard.errors import GatewayError, InvalidRequest, PayloadTooLarge, PermissionDenied
from switchboard.gateway import Gateway
from switchboard.routing.planner import plan
from switchboard.routing.store import LoadedRouting
from switchboard.schemas import ChatCompletionRequest, Model, ModelList

__all__ = ["create_app"]

log = logging.getLogger("switchboard.api")

Handler = Callable[[Request, dict[str, str]], Awaitable[Response]]

_JSON = "application/json"
# Lambda must still answer after the plan gives up: keep this much of its remaining time back.
_LAMBDA_RESERVE_S = 0.5


def _request_id() -> str:
    return "req_" + os.urandom(12).hex()


def _json(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(json.dumps(body, separators=(",", ":")), status, headers, _JSON)


def _error_response(exc: GatewayError, headers: dict[str, str]) -> Response:
    return _json(exc.body(), exc.status, {**headers, **exc.headers})


def _gateway(request: Request) -> Gateway:
    gateway: Gateway | None = getattr(request.app.state, "gateway", None)
    if gateway is None:
        gateway = request.app.state.gateway = Gateway.from_env()
    return gateway


def _endpoint(handler: Handler) -> Callable[[Request], Awaitable[Response]]:
    """Give a handler a request id and turn every failure into an OpenAI-shaped error."""

    async def endpoint(request: Request) -> Response:
        headers = {"x-request-id": _request_id()}
        try:
            return await handler(request, headers)
        except GatewayError as exc:
            return _error_response(exc, headers)
        except Exception:
            log.exception("unhandled error in %s (request %s)", request.url.path, headers["x-request-id"])
            err = GatewayError(f"Internal gateway error. Quote request id {headers['x-request-id']}.")
            return _error_response(err, headers)

    return endpoint


async def _authenticate(request: Request, gateway: Gateway) -> Principal:
    token = bearer_token(request.headers.get("authorization"), request.headers.get("x-api-key"))
    return await gateway.auth.authenticate(token)


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
        raise InvalidRequest(f"Invalid request: '{where}': {first['msg']}", param=where, code="invalid_value") from None


def _deadline(request: Request, max_request_s: float) -> float:
    """When the whole plan must be done: the client's timeout, capped by the Lambda's remaining time."""
    budget = max_request_s
    for name in ("x-switchboard-timeout", "x-stainless-timeout"):
        value = request.headers.get(name)
        if value:
            try:
                budget = min(budget, float(value))
            except ValueError:
                pass
            break
    context = request.scope.get("aws.context")  # Mangum
    if context is not None:
        budget = min(budget, context.get_remaining_time_in_millis() / 1000 - _LAMBDA_RESERVE_S)
    lwa = request.headers.get("x-amzn-lambda-context")  # Lambda Web Adapter
    if lwa:
        try:
            deadline_ms = float(json.loads(lwa)["deadline"])
            budget = min(budget, deadline_ms / 1000 - time.time() - _LAMBDA_RESERVE_S)
        except (ValueError, KeyError, TypeError):
            pass
    return time.monotonic() + max(budget, 0.001)


def _routing_headers(headers: dict[str, str], routing: LoadedRouting) -> None:
    headers["x-switchboard-routing-version"] = routing.revision


async def health(request: Request) -> Response:
    return _json({"status": "ok"})


async def list_models(request: Request, headers: dict[str, str]) -> Response:
    gateway = _gateway(request)
    principal = await _authenticate(request, gateway)
    routing = await gateway.routing.current()
    _routing_headers(headers, routing)
    allowed = principal.allowed_models
    models = [Model(id=alias) for alias in sorted(routing.document.models) if allowed is None or alias in allowed]
    return Response(ModelList(data=models).model_dump_json(), 200, headers, _JSON)


async def retrieve_model(request: Request, headers: dict[str, str]) -> Response:
    gateway = _gateway(request)
    principal = await _authenticate(request, gateway)
    routing = await gateway.routing.current()
    _routing_headers(headers, routing)
    alias = request.path_params["model"]
    plan(routing.document, alias)  # raises ModelNotFound, listing the valid aliases
    if principal.allowed_models is not None and alias not in principal.allowed_models:
        raise PermissionDenied(f"This key may not use the model '{alias}'.", param="model")
    return Response(Model(id=alias).model_dump_json(), 200, headers, _JSON)


async def chat_completions(request: Request, headers: dict[str, str]) -> Response:
    gateway = _gateway(request)
    principal = await _authenticate(request, gateway)
    chat = _parse_chat(await _read_body(request, gateway.settings.max_body_bytes))
    routing = await gateway.routing.current()
    _routing_headers(headers, routing)
    if principal.allowed_models is not None and chat.model not in principal.allowed_models:
        raise PermissionDenied(f"This key may not use the model '{chat.model}'.", param="model")
    route = plan(routing.document, chat.model)
    deadline = _deadline(request, gateway.settings.max_request_s)
    if chat.stream:
        stream = await gateway.engine.stream(chat, route, deadline)
        _attribution(headers, stream.target.provider_name, stream.target.model, stream.attempts)
        headers["cache-control"] = "no-cache"
        headers["x-accel-buffering"] = "no"
        return StreamingResponse(stream.events(), 200, headers, "text/event-stream")
    done = await gateway.engine.complete(chat, route, deadline)
    _attribution(headers, done.target.provider_name, done.target.model, done.attempts)
    content = done.raw if done.raw is not None else done.completion.model_dump_json().encode()
    return Response(content, 200, headers, _JSON)


def _attribution(headers: dict[str, str], provider: str, model: str, attempts: list[Any]) -> None:
    headers["x-switchboard-provider"] = provider
    headers["x-switchboard-model"] = model
    headers["x-switchboard-attempts"] = str(len(attempts))
    headers["x-switchboard-trail"] = ",".join(a.render() for a in attempts)


async def _http_error(request: Request, exc: Exception) -> Response:
    status = exc.status_code if isinstance(exc, HTTPException) else 500
    message = "Not found." if status == 404 else "Method not allowed." if status == 405 else "Request failed."
    err = GatewayError(f"{message} ({request.method} {request.url.path})", status=status)
    err.type = "invalid_request_error"
    return _error_response(err, {"x-request-id": _request_id()})


def create_app(gateway: Gateway | None = None) -> Starlette:
    """The ASGI app. Without ``gateway``, one is built from the environment at startup."""

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
        ],
        exception_handlers={HTTPException: _http_error},
        lifespan=lifespan,
    )
    app.state.gateway = gateway
    return app
