"""The ASGI app: OpenAI's HTTP surface over the engine.

One app serves both deployments: under uvicorn (locally, and in Lambda through the Web Adapter,
which streams) and under Mangum (the buffered mode, and in-process handler tests).

Routes: ``GET /health``, ``GET /v1/models`` and ``GET /v1/models/{id}`` (``endpoints.models``),
``POST /v1/chat/completions`` (``endpoints.chat``), ``POST /v1/messages`` and
``POST /v1/messages/count_tokens`` (``endpoints.messages``; every error under ``/v1/messages`` in
Anthropic's shape, 404 and 405 too), ``POST /v1/embeddings`` (``endpoints.embeddings``),
``POST /v1/responses`` and its stored responses, ``GET``/``DELETE /v1/responses/{id}`` and
``GET /v1/responses/{id}/input_items`` (``endpoints.responses``).
Every response carries ``x-request-id``; routed responses carry the attribution headers. Every
routed POST endpoint is its own parts (schema, call, error shape) run through the one pipeline of
``http.pipeline`` (request id, key, body, plan, admission, call, metering, settlement, response).
"""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from switchboard.core.errors import GatewayError
from switchboard.http.asgi import Front
from switchboard.http.cors import CorsFront
from switchboard.http.endpoints import chat, embeddings, messages, models, responses
from switchboard.http.pipeline import handler
from switchboard.http.request import endpoint, error_response, json_response, request_id
from switchboard.wiring import Gateway

__all__ = ["create_app"]


async def health(request: Request) -> Response:
    return json_response({"status": "ok"})


async def _http_error(request: Request, exc: Exception) -> Response:
    status = exc.status_code if isinstance(exc, HTTPException) else 500
    message = "Not found." if status == 404 else "Method not allowed." if status == 405 else "Request failed."
    # Starlette's own headers matter: a 405 must say which methods are allowed (RFC 9110).
    headers = dict(exc.headers or {}) if isinstance(exc, HTTPException) else {}
    err = GatewayError(f"{message} ({request.method} {request.url.path})", status=status, headers=headers)
    err.type = "invalid_request_error"
    path = request.url.path
    if path == "/v1/messages" or path.startswith("/v1/messages/"):  # Anthropic's API: its error shape
        return messages.anthropic_error(err, {"x-request-id": request_id()})
    return error_response(err, {"x-request-id": request_id()})


def create_app(gateway: Gateway | None = None) -> Front:
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
            Route("/v1/models", endpoint(models.list_models), methods=["GET"]),
            Route("/v1/models/{model:path}", endpoint(models.retrieve_model), methods=["GET"]),
            # The routed POST endpoints: each one's parts through the one pipeline (http.pipeline).
            Route("/v1/chat/completions", handler(chat.CHAT), methods=["POST"]),
            Route("/v1/messages", handler(messages.MESSAGES), methods=["POST"]),
            Route("/v1/messages/count_tokens", handler(messages.COUNT_TOKENS), methods=["POST"]),
            Route("/v1/embeddings", handler(embeddings.EMBEDDINGS), methods=["POST"]),
            Route("/v1/responses", endpoint(responses.create_response), methods=["POST"]),
            Route("/v1/responses/{response_id}", endpoint(responses.retrieve_response), methods=["GET"]),
            Route("/v1/responses/{response_id}", endpoint(responses.delete_response), methods=["DELETE"]),
            Route(
                "/v1/responses/{response_id}/input_items",
                endpoint(responses.list_input_items),
                methods=["GET"],
            ),
        ],
        exception_handlers={HTTPException: _http_error},
        lifespan=lifespan,
    )
    app.state.gateway = gateway
    # The routed POST endpoints straight to their handlers (switchboard.http.asgi); CORS from the
    # routing document, answered here (switchboard.http.cors).
    return CorsFront(app)
