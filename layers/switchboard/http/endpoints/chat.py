"""``POST /v1/chat/completions``: OpenAI's chat completions over the engine, streamed or not."""

from __future__ import annotations

from collections.abc import AsyncIterator

from pydantic import ValidationError

from switchboard.billing import metering
from switchboard.core.errors import InvalidRequest
from switchboard.core.schemas import ChatCompletionRequest
from switchboard.exchange import Exchange
from switchboard.http.pipeline import Answer, Context, Endpoint, Streamed
from switchboard.upstream.engine import StreamResult

__all__ = ["CHAT", "Chat", "parse_chat"]


def parse_chat(body: bytes) -> ChatCompletionRequest:
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


class Chat(Endpoint[ChatCompletionRequest]):
    """OpenAI chat completions: the body is the engine's own request, the answer its own."""

    name = "chat"
    heartbeats = True  # a silent stream keeps alive with SSE comments (http.heartbeat)

    def parse(self, raw: bytes) -> ChatCompletionRequest:
        return parse_chat(raw)

    async def call(self, ctx: Context[ChatCompletionRequest]) -> Answer | Streamed:
        chat, engine = ctx.body, ctx.gateway.engine
        if chat.stream:
            stream = await engine.stream(chat, ctx.plan, ctx.deadline)
            meter = stream.meter = metering.StreamMeter(chat)
            events = _events(stream, meter)
            return Streamed(stream.target, stream.attempts, events, meter, stream.first_token_at)
        done = await engine.complete(chat, ctx.plan, ctx.deadline)

        def render(ex: Exchange) -> bytes:
            return metering.body_with_cost(done.raw, done.completion, ex)

        return Answer(
            done.target, done.attempts, meter=metering.completion_meter(done.completion), render=render
        )


async def _events(stream: StreamResult, meter: metering.StreamMeter) -> AsyncIterator[bytes]:
    """The stream's SSE bytes; how it ended goes on the meter (usage went there chunk by chunk)."""
    async for part in stream.events():
        yield part
    meter.completed, meter.interrupted = stream.completed, stream.interrupted is not None


CHAT = Chat()  # routed in http.app: handler(CHAT)
