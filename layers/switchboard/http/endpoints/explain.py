"""``POST /v1/route/explain``: what the gateway would do with a request, without doing it.

The body is that of a chat completion, an Anthropic message or a response (``?endpoint=chat``,
``messages`` or ``responses``; without it, a body with ``input`` is a response and one with a
top-level ``system`` an Anthropic message). The answer comes from ``routing.route.route``, the
function every chat-type call plans with (through ``http.request.planned_route``): the routing
decision, the request's own overrides (``models``, ``provider``; a key without the right gets the
call's 403) and the shared circuit breaker. So it names the alias, the rules that fired, every
target in the order the call tries it with the reason it was kept or skipped, and the estimated
cost range; plus the admission decision (rate limits and budgets) read from the ledger without
reserving anything, and the call's routing headers. No upstream is called. Authenticated, and
limited to the key's models, like the other endpoints.
"""

from __future__ import annotations

import json
import os
from typing import Any

from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import Response

from switchboard.core import jsonbody
from switchboard.core.errors import InvalidRequest
from switchboard.core.schemas import ChatCompletionRequest
from switchboard.exchange import Exchange
from switchboard.http.request import enter, json_response, planned_route
from switchboard.routing.decide import with_metadata
from switchboard.routing.explain import explanation
from switchboard.routing.overrides import Overrides, take
from switchboard.wiring import Gateway

__all__ = ["explain", "responses_chat"]

_ENDPOINTS = ("chat", "messages", "responses")


def _shape(body: dict[str, Any], asked: str | None) -> str:
    if asked is not None:
        if asked not in _ENDPOINTS:
            raise InvalidRequest(
                f"endpoint must be one of {', '.join(_ENDPOINTS)}; got {asked!r}.", param="endpoint"
            )
        return asked
    if "input" in body and "messages" not in body:
        return "responses"
    return "messages" if "system" in body else "chat"


def _invalid(exc: ValidationError) -> InvalidRequest:
    first = exc.errors()[0]
    where = ".".join(str(part) for part in first["loc"])
    return InvalidRequest(f"Invalid request: '{where}': {first['msg']}", param=where, code="invalid_value")


def responses_chat(body: dict[str, Any]) -> ChatCompletionRequest:
    """A Responses request in chat form, as ``create_response`` routes it: its own ``input`` (a
    ``previous_response_id``'s stored history is not read here), ``instructions``, tools and cap;
    one that has no chat form is estimated from its JSON, as there."""
    from switchboard.http.endpoints.responses_format import (
        ResponsesRequest,
        Unconvertible,
        input_items,
        to_chat,
    )

    parsed = ResponsesRequest.model_validate(body)
    items = input_items(parsed.input)
    if not items:
        raise InvalidRequest(
            "Missing required parameter: 'input'.", param="input", code="missing_required_parameter"
        )
    try:
        chat = to_chat(parsed, items, stream=False)
    except Unconvertible:
        text = json.dumps({"instructions": parsed.instructions, "input": items, "tools": parsed.tools})
        estimate: dict[str, Any] = {"model": parsed.model, "messages": [{"role": "user", "content": text}]}
        if parsed.max_output_tokens:
            estimate["max_tokens"] = parsed.max_output_tokens
        chat = ChatCompletionRequest.model_validate(estimate)
    return with_metadata(chat, body.get("metadata"))


def _messages_chat(raw: bytes) -> ChatCompletionRequest:
    from switchboard.http.endpoints.messages import MESSAGES

    return MESSAGES.routing_chat(MESSAGES.parse(raw))  # as /v1/messages routes it


def _reader(asked: str | None) -> Any:
    def read(raw: bytes) -> tuple[str, ChatCompletionRequest, Overrides]:
        body = jsonbody.load_object(raw)
        shape = _shape(body, asked)
        overrides = take(body)  # out of the body, as the endpoints take them before routing
        try:
            if shape == "messages":
                return shape, _messages_chat(json.dumps(body).encode()), overrides
            if shape == "responses":
                return shape, responses_chat(body), overrides
            return shape, ChatCompletionRequest.model_validate(body), overrides
        except ValidationError as exc:
            raise _invalid(exc) from None

    return read


async def _admission(gateway: Gateway, ex: Exchange) -> dict[str, Any]:
    for hook in gateway.hooks:
        check = getattr(hook, "check", None)
        if check is not None:
            result: dict[str, Any] = await check(ex)
            return result
    return {"allowed": True, "reserved": False, "checks": []}


async def explain(request: Request, headers: dict[str, str]) -> Response:
    gateway, deadline, principal, (shape, chat, overrides), routing = await enter(
        request, headers, _reader(request.query_params.get("endpoint"))
    )
    routed = await planned_route(gateway, routing, principal, chat.model, chat, shape, overrides)
    headers.update(routed.headers)  # what the call's response would say: rule, overrides, breaker
    ex = Exchange(
        "explain_" + os.urandom(8).hex(),
        principal,
        chat,
        routing.revision,
        routed.plan,
        headers={},
        deadline=deadline,
    )
    ex.kind = "messages" if shape == "messages" else "chat"
    admission = await _admission(gateway, ex)
    return json_response(explanation(routed.decision, routing.revision, admission), headers=headers)
