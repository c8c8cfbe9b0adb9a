"""``GET /v1/models`` and ``GET /v1/models/{id}``: what they say about an alias, from what the
routing document knows.

OpenAI's ``Model`` requires ``id``, ``object``, ``created`` and ``owned_by`` and allows more
properties, so the optional ones are added only when known: ``context_window`` (the route's, else
the smallest of its targets' when every target declares one: the window a request can count on
whichever target serves it), ``max_output_tokens``, ``modalities`` (input), ``dimensions``
(embeddings), ``description`` and the ``endpoints`` that serve the alias.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from switchboard.core.schemas import Model, ModelList
from switchboard.http.request import authenticate, gateway_of, permit, request_deadline, routing_headers
from switchboard.routing.document import RoutingDocument
from switchboard.routing.planner import plan

__all__ = ["describe", "list_models", "retrieve_model"]

_JSON = "application/json"

_ENDPOINTS = {"chat": ["/v1/chat/completions", "/v1/messages"], "embeddings": ["/v1/embeddings"]}


def describe(doc: RoutingDocument, alias: str) -> Model:
    route = doc.models[alias]
    windows = [t.context_window for t in route.targets]
    context = route.context_window
    if context is None and windows and all(w is not None for w in windows):
        context = min(w for w in windows if w is not None)
    return Model(
        id=alias,
        owned_by=route.owned_by or route.targets[0].provider,
        context_window=context,
        max_output_tokens=route.max_output_tokens,
        modalities=sorted(route.modalities) if route.modalities else None,
        endpoints=_ENDPOINTS[route.mode],
        dimensions=route.dimensions,
        description=route.description,
    )


async def list_models(request: Request, headers: dict[str, str]) -> Response:
    gateway = gateway_of(request)
    deadline = request_deadline(request, gateway.settings.max_request_s)
    principal = await authenticate(request, gateway, deadline)
    routing = await gateway.routing.current(deadline)
    routing_headers(headers, routing)
    allowed = principal.allowed_models
    doc = routing.document
    models = [describe(doc, alias) for alias in sorted(doc.models) if allowed is None or alias in allowed]
    return Response(ModelList(data=models).to_json(), 200, headers, _JSON)


async def retrieve_model(request: Request, headers: dict[str, str]) -> Response:
    gateway = gateway_of(request)
    deadline = request_deadline(request, gateway.settings.max_request_s)
    principal = await authenticate(request, gateway, deadline)
    routing = await gateway.routing.current(deadline)
    routing_headers(headers, routing)
    alias = request.path_params["model"]
    # ModelNotFound lists the valid aliases: for a restricted key, only those it may use.
    plan(routing.document, alias, mode=None, visible=principal.allowed_models)
    permit(principal, alias)
    return Response(describe(routing.document, alias).to_json(), 200, headers, _JSON)
