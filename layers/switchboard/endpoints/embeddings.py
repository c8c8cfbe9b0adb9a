"""``POST /v1/embeddings``: OpenAI's embeddings API over the same planner, engine and fallback.

An alias serves embeddings when its route says ``mode: embeddings``; the routing document then
requires every target to declare ``dimensions`` and all to be equal, so a fallback never hands the
client vectors of another length (the engine also checks each answer's vectors). A client that asks
for ``dimensions`` other than the route's gets a 400. Usage (``prompt_tokens``) comes back as the
upstream counted it; Bedrock's is read from its token-count header when the body has none.
"""

from __future__ import annotations

from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import Response

from switchboard import api
from switchboard.errors import InvalidRequest, PermissionDenied
from switchboard.limits.hook import refuse_unmetered
from switchboard.routing.planner import plan
from switchboard.schemas import EmbeddingRequest

__all__ = ["create_embeddings"]


def _parse(raw: bytes) -> EmbeddingRequest:
    try:
        return EmbeddingRequest.model_validate_json(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        if first["type"] == "json_invalid" or (first["type"] == "model_type" and not first["loc"]):
            raise InvalidRequest("The request body must be a JSON object.", code="invalid_json") from None
        where = ".".join(str(part) for part in first["loc"])
        raise InvalidRequest(
            f"Invalid request: '{where}': {first['msg']}", param=where, code="invalid_value"
        ) from None


async def create_embeddings(request: Request, headers: dict[str, str]) -> Response:
    gateway = api._gateway(request)
    principal = await api._authenticate(request, gateway)
    body = _parse(await api._read_body(request, gateway.settings.max_body_bytes))
    routing = await gateway.routing.current()
    api._routing_headers(headers, routing)
    if principal.allowed_models is not None and body.model not in principal.allowed_models:
        raise PermissionDenied(f"This key may not use the model '{body.model}'.", param="model")
    await refuse_unmetered(gateway.hooks, principal, body.model, "/v1/embeddings")  # limits run on chat only
    route = plan(routing.document, body.model, mode="embeddings")
    dimensions = route.targets[0].dimensions if route.targets else None
    if body.dimensions is not None and body.dimensions != dimensions:
        raise InvalidRequest(
            f"The model '{body.model}' returns {dimensions}-dimensional vectors; "
            f"'dimensions' must be {dimensions} or absent.",
            param="dimensions",
            code="unsupported_value",
        )
    deadline = api._deadline(request, gateway.settings.max_request_s)
    done = await gateway.engine.embed(body, route, deadline)
    api._attribution(headers, done.target.provider_name, done.target.model, done.attempts)
    content = done.raw if done.raw is not None else done.response.model_dump_json().encode()
    return Response(content, 200, headers, "application/json")
