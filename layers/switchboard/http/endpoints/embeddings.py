"""``POST /v1/embeddings``: OpenAI's embeddings API over the same planner, engine and fallback.

An alias serves embeddings when its route says ``mode: embeddings``; the routing document then
requires every target to declare ``dimensions`` and all to be equal, so a fallback never hands the
client vectors of another length (the engine also checks each answer's vectors). A client that asks
for ``dimensions`` other than the route's gets a 400. Usage (``prompt_tokens``) comes back as the
upstream counted it; Bedrock's is read from its token-count header when the body has none.

Budgets, rate limits, the spend ledger and cost events apply as on chat: the request is admitted
and settled through the lifecycle hooks (``Exchange.kind == "embeddings"``: its prompt is estimated
from the input text, no output is reserved, and only input tokens are billed). A priced target's
answer carries ``usage.cost`` and the ``x-switchboard-cost-usd`` header.
"""

from __future__ import annotations

import time

from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import Response

from switchboard.billing import metering
from switchboard.core.errors import InvalidRequest
from switchboard.core.schemas import ChatCompletionRequest, EmbeddingRequest, Usage
from switchboard.exchange import Exchange, admit, settle_all, settled_on_failure
from switchboard.http.request import attribution, enter, permit
from switchboard.routing.planner import plan

__all__ = ["create_embeddings"]


def _stand_in(body: EmbeddingRequest) -> ChatCompletionRequest:
    """A chat request that estimates like ``body``: one user message holding the input."""
    items = [body.input] if isinstance(body.input, str) else body.input
    text = "\n".join(
        item if isinstance(item, str) else " ".join(map(str, item)) if isinstance(item, list) else str(item)
        for item in items
    )
    message = {"role": "user", "content": text}
    return ChatCompletionRequest.model_validate({"model": body.model, "messages": [message]})


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
    started = time.monotonic()
    gateway, deadline, principal, body, routing = await enter(request, headers, _parse)
    permit(principal, body.model)
    route = plan(routing.document, body.model, mode="embeddings", visible=principal.allowed_models)
    dimensions = route.targets[0].dimensions if route.targets else None
    if body.dimensions is not None and body.dimensions != dimensions:
        raise InvalidRequest(
            f"The model '{body.model}' returns {dimensions}-dimensional vectors; "
            f"'dimensions' must be {dimensions} or absent.",
            param="dimensions",
            code="unsupported_value",
        )
    ex = Exchange(
        headers["x-request-id"],
        principal,
        _stand_in(body),
        routing.revision,
        route,
        started=started,
        headers=headers,
        deadline=deadline,
    )
    ex.kind = "embeddings"
    hooks = gateway.hooks
    await admit(hooks, ex)
    async with settled_on_failure(hooks, ex):
        done = await gateway.engine.embed(body, route, deadline)
    ex.target, ex.attempts, ex.status, ex.outcome = done.target, done.attempts, 200, "ok"
    tokens = done.response.usage.prompt_tokens
    usage = Usage(prompt_tokens=tokens, completion_tokens=0, total_tokens=tokens)
    metering.charge_usage(ex, usage, 0, gateway.prices.lookup(routing.document, done.target))
    attribution(headers, done.target.provider_name, done.target.model, done.attempts)
    await settle_all(hooks, ex)
    content = metering.body_with_cost(done.raw, done.response, ex)
    return Response(content, 200, headers, "application/json")
