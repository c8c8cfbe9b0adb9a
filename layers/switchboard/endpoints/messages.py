"""``POST /v1/messages``: Anthropic's Messages API, inbound, through the same planner and engine.

Each target of the plan is served in its own way:

* an Anthropic target gets the client's body as sent, with only ``model`` replaced, and its answer
  (JSON or the SSE events) goes back untouched: no lossy round trip;
* any other target gets the request converted to OpenAI chat (``anthropic_format``), and its
  answer converted back.

So a fallback chain may mix families. Retries, fallback and the streaming commit are the engine's
(``Engine.run`` / ``Engine.run_stream``): until the first content event nothing reaches the client;
after it, a failure ends the stream with an Anthropic ``error`` event, never a silent cut.
Errors come in Anthropic's envelope (``{"type": "error", "error": {"type", "message"}}``) so that
the Anthropic SDK and Claude-based tools read them as they would Anthropic's.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from switchboard import api, providers
from switchboard.endpoints.anthropic_format import (
    EventTranslator,
    MessagesRequest,
    Unconvertible,
    from_openai,
    to_openai,
)
from switchboard.engine import Engine, HeldStream, check_modalities
from switchboard.errors import AttemptFailed, ErrorClass, GatewayError, InvalidRequest, PermissionDenied
from switchboard.limits.hook import refuse_unmetered
from switchboard.providers.anthropic import Anthropic, Relay
from switchboard.providers.base import StreamChunk
from switchboard.routing.planner import PlannedTarget, plan
from switchboard.schemas import ChatCompletionRequest
from switchboard.sse import SSEEvent

__all__ = ["anthropic_error", "create_message"]

_JSON = "application/json"
_CLIENT_HEADERS = ("anthropic-version", "anthropic-beta")
_OUTPUT = frozenset({"content_block_delta", "message_delta"})

# Anthropic's error type for each status (https://docs.anthropic.com/en/api/errors).
_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    529: "overloaded_error",
}


def _error_type(status: int) -> str:
    return _TYPES.get(status, "api_error" if status >= 500 else "invalid_request_error")


def anthropic_error(exc: GatewayError, headers: dict[str, str]) -> Response:
    """A gateway error in Anthropic's envelope, status and headers unchanged."""
    body = {"type": "error", "error": {"type": _error_type(exc.status), "message": exc.message}}
    return Response(json.dumps(body), exc.status, {**headers, **exc.headers}, _JSON)


def _parse(raw: bytes) -> tuple[dict[str, Any], MessagesRequest]:
    try:
        body = json.loads(raw)
    except ValueError:
        raise InvalidRequest(
            "We could not parse the JSON body of your request.", code="invalid_json"
        ) from None
    if not isinstance(body, dict):
        raise InvalidRequest("The request body must be a JSON object.", code="invalid_json")
    try:
        return body, MessagesRequest.model_validate(body)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        raise InvalidRequest(f"{where}: {first['msg']}", param=where) from None


class _Session:
    """One /v1/messages request: how each target of its plan is called."""

    def __init__(self, engine: Engine, body: dict[str, Any], parsed: MessagesRequest, client: dict[str, str]):
        self.engine = engine
        self.body = body
        self.parsed = parsed
        self.client = client
        self._converted: dict[bool, ChatCompletionRequest] = {}

    def _openai(self, target: PlannedTarget, stream: bool) -> ChatCompletionRequest:
        if stream not in self._converted:
            try:
                self._converted[stream] = to_openai(self.parsed, stream=stream)
            except Unconvertible as exc:
                raise AttemptFailed(
                    ErrorClass.CLIENT,
                    f"{target.label} cannot serve this request: {exc}",
                    status=400,
                    upstream_type="invalid_request_error",
                    upstream_param=exc.param,
                ) from None
        return self._converted[stream]

    async def _relay(self, target: PlannedTarget) -> Relay:
        check_modalities(_modalities(self.parsed), target)
        return Relay(target, await self.engine.credential(target), self.engine.http, self.client)

    async def complete(self, target: PlannedTarget) -> bytes:
        provider = providers.get(target.provider.kind)
        if isinstance(provider, Anthropic):
            return await provider.relay(await self._relay(target), self.body)
        call = await self.engine.call(self._openai(target, False), target, stream=False)
        completion, _raw = await provider.complete(call)
        try:
            message = from_openai(completion)
        except IndexError:
            raise AttemptFailed(
                ErrorClass.SERVER, f"{target.provider_name}: a completion without choices"
            ) from None
        except ValueError:
            raise AttemptFailed(
                ErrorClass.SERVER, f"{target.provider_name}: tool call arguments that are not a JSON object"
            ) from None
        return json.dumps(message, separators=(",", ":"), ensure_ascii=False).encode()

    async def open_stream(self, target: PlannedTarget) -> AsyncIterator[SSEEvent]:
        provider = providers.get(target.provider.kind)
        if isinstance(provider, Anthropic):
            return provider.relay_stream(await self._relay(target), self.body)
        call = await self.engine.call(self._openai(target, True), target, stream=True)
        return _translated(provider.stream(call))


async def _translated(chunks: AsyncIterator[StreamChunk]) -> AsyncIterator[SSEEvent]:
    translator = EventTranslator()
    try:
        async for item in chunks:
            for event in translator.feed(item.chunk):
                yield event
        for event in translator.finish():
            yield event
    finally:
        await chunks.aclose()  # type: ignore[attr-defined]


def _modalities(request: MessagesRequest) -> set[str]:
    found = {"text"}
    for message in request.messages:
        content = message.get("content")
        for block in content if isinstance(content, list) else ():
            kind = block.get("type") if isinstance(block, dict) else None
            if kind == "image":
                found.add("image")
            elif kind == "document":
                found.add("file")
    return found


def _has_output(event: SSEEvent) -> bool:
    return event.event in _OUTPUT


async def _events(held: HeldStream[SSEEvent]) -> AsyncIterator[bytes]:
    try:
        async for event in held.items():
            yield b"event: " + (event.event or "message").encode() + b"\ndata: " + event.data + b"\n\n"
    except AttemptFailed as failure:
        status = {ErrorClass.RATE_LIMIT: 429, ErrorClass.SERVER: 529}.get(failure.error_class, 500)
        message = (
            f"The upstream stream from {held.target.provider_name} failed after output began "
            f"({failure.error_class}); the response is incomplete."
        )
        body = {"type": "error", "error": {"type": _error_type(status), "message": message}}
        yield b"event: error\ndata: " + json.dumps(body).encode() + b"\n\n"


async def create_message(request: Request, headers: dict[str, str]) -> Response:
    gateway = api._gateway(request)
    principal = await api._authenticate(request, gateway)
    body, parsed = _parse(await api._read_body(request, gateway.settings.max_body_bytes))
    routing = await gateway.routing.current()
    api._routing_headers(headers, routing)
    if principal.allowed_models is not None and parsed.model not in principal.allowed_models:
        raise PermissionDenied(f"This key may not use the model '{parsed.model}'.", param="model")
    await refuse_unmetered(gateway.hooks, principal, parsed.model, "/v1/messages")  # limits run on chat only
    route = plan(routing.document, parsed.model)
    deadline = api._deadline(request, gateway.settings.max_request_s)
    client = {name: request.headers[name] for name in _CLIENT_HEADERS if name in request.headers}
    session = _Session(gateway.engine, body, parsed, client)
    if parsed.stream:
        held = await gateway.engine.run_stream(route, deadline, session.open_stream, _has_output)
        api._attribution(headers, held.target.provider_name, held.target.model, held.attempts)
        headers["cache-control"] = "no-cache"
        headers["x-accel-buffering"] = "no"
        return StreamingResponse(_events(held), 200, headers, "text/event-stream")
    content, target, attempts = await gateway.engine.run(route, deadline, session.complete)
    api._attribution(headers, target.provider_name, target.model, attempts)
    return Response(content, 200, headers, _JSON)
