"""``POST /v1/chat/completions``: OpenAI's chat completions over the engine, streamed or not."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator

from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import Response

from switchboard.billing import metering
from switchboard.core.errors import GatewayError, InvalidRequest
from switchboard.core.schemas import ChatCompletionRequest
from switchboard.core.sse import encode_json
from switchboard.exchange import Exchange, Hook, admit, settle_all, settled_on_failure, settled_stream
from switchboard.http import heartbeat
from switchboard.http.asgi import EventStream
from switchboard.http.request import attribution, chat_plan, enter
from switchboard.routing import overrides as routing_overrides
from switchboard.routing.planner import Plan
from switchboard.routing.store import LoadedRouting
from switchboard.upstream.engine import StreamResult
from switchboard.wiring import Gateway

__all__ = ["chat_completions", "parse_chat"]

log = logging.getLogger("switchboard.api")

_JSON = "application/json"


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


async def chat_completions(request: Request, headers: dict[str, str]) -> Response:
    started = time.monotonic()
    gateway, deadline, principal, chat, routing = await enter(request, headers, parse_chat)
    wanted = routing_overrides.take(chat.__pydantic_extra__)  # never forwarded upstream
    route, rule = await chat_plan(gateway, routing, principal, chat.model, headers, wanted)
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
    ex.rule = rule
    hooks = gateway.hooks
    await admit(hooks, ex)
    if chat.stream:
        return await _chat_stream(gateway, routing, route, chat, ex, deadline)
    async with settled_on_failure(hooks, ex):
        done = await gateway.engine.complete(chat, route, deadline)
    ex.target, ex.attempts, ex.status, ex.outcome = done.target, done.attempts, 200, "ok"
    metering.charge(ex, done.completion, gateway.prices.lookup(routing.document, done.target))
    attribution(headers, done.target.provider_name, done.target.model, done.attempts)
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
    """A streamed chat completion: the plan runs as a task (``http.heartbeat``); found within
    ``heartbeat_after_s``, the response carries the attribution headers as always, else it
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
        attribution(headers, stream.target.provider_name, stream.target.model, stream.attempts)
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
