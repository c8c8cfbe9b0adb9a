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

from pydantic import ValidationError

from switchboard.billing import metering
from switchboard.billing.metering import Meter
from switchboard.core.errors import InvalidRequest
from switchboard.core.schemas import ChatCompletionRequest, EmbeddingRequest, Usage
from switchboard.exchange import Exchange
from switchboard.http.pipeline import Answer, Context, Endpoint

__all__ = ["EMBEDDINGS", "Embeddings"]


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


class Embeddings(Endpoint[EmbeddingRequest]):
    """OpenAI embeddings: a route of ``mode: embeddings``, no routing rules, input tokens billed."""

    name = "embeddings"
    mode = "embeddings"
    rules = False

    def parse(self, raw: bytes) -> EmbeddingRequest:
        return _parse(raw)

    def prepare(self, ctx: Context[EmbeddingRequest]) -> ChatCompletionRequest:
        """A 400 for ``dimensions`` other than the route's; the input as chat, for the estimates."""
        body = ctx.body
        dimensions = ctx.plan.targets[0].dimensions if ctx.plan.targets else None
        if body.dimensions is not None and body.dimensions != dimensions:
            raise InvalidRequest(
                f"The model '{body.model}' returns {dimensions}-dimensional vectors; "
                f"'dimensions' must be {dimensions} or absent.",
                param="dimensions",
                code="unsupported_value",
            )
        return _stand_in(body)

    async def call(self, ctx: Context[EmbeddingRequest]) -> Answer:
        done = await ctx.gateway.engine.embed(ctx.body, ctx.plan, ctx.deadline)
        tokens = done.response.usage.prompt_tokens
        meter = Meter()
        meter.usage = Usage(prompt_tokens=tokens, completion_tokens=0, total_tokens=tokens)

        def render(ex: Exchange) -> bytes:
            return metering.body_with_cost(done.raw, done.response, ex)

        return Answer(done.target, done.attempts, meter=meter, render=render)


EMBEDDINGS = Embeddings()  # routed in http.app: handler(EMBEDDINGS)
