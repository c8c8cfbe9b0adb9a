"""Anthropic's Messages API (``POST /v1/messages``): OpenAI-format calls in, OpenAI-format answers out.

Wire format: https://docs.anthropic.com/en/api/messages, .../en/docs/build-with-claude/streaming,
.../en/api/errors, .../en/docs/build-with-claude/prompt-caching (``anthropic-version: 2023-06-01``).

Request mapping (OpenAI chat completion -> Anthropic message)
    system / developer messages  hoisted, in order, into the top-level ``system`` (Anthropic has no
                                 system turns); a string when there is one plain text, else blocks
    user / assistant turns       consecutive turns of one role are merged (Anthropic alternates)
    tool messages                ``tool_result`` blocks at the head of the next user turn
    assistant ``tool_calls``     ``tool_use`` blocks (arguments must be a JSON object)
    ``image_url``                ``data:`` URLs -> base64 image sources; http(s) URLs -> url sources
    ``cache_control``            kept where the client put it: on content parts, on a message (applied
                                 to its last block) and on tools. Prompt caching is Anthropic's own.
    tools / tool_choice          ``input_schema`` = the function's parameters; ``auto``/``required``/
                                 ``none``/named -> ``auto``/``any``/``none``/``tool``;
                                 ``parallel_tool_calls: false`` -> ``disable_parallel_tool_use``
    ``response_format``          JSON mode through a *forced tool*, ``json_response``, whose input
                                 schema is the requested schema (``{"type": "object"}`` for
                                 ``json_object``). Its input comes back as the message content and
                                 the finish reason is ``stop``. A tool rather than a prefill: a
                                 prefill cannot enforce a schema and newer models refuse prefills.
                                 With client tools too, ``tool_choice`` becomes ``any``: the model
                                 either calls a client tool or answers through ``json_response``.
    max_tokens                   ``max_completion_tokens`` or ``max_tokens``, else the provider's
                                 ``default_max_tokens`` (4096: within every current model's limit)
    temperature / top_p / stop   passed on; temperature is capped at 1 (Anthropic's maximum; logged)
    user                         ``metadata.user_id``
    n > 1, logprobs, audio       a 400: Anthropic cannot produce them
    other OpenAI parameters      dropped and logged (seed, penalties, logit_bias, service_tier...)

Response: text blocks joined into ``content``, ``tool_use`` blocks into ``tool_calls``, thinking
blocks left out; ``stop_reason`` -> ``finish_reason`` as ``_FINISH`` says. Usage: Anthropic counts
cache reads and writes apart from ``input_tokens``; OpenAI's ``prompt_tokens`` includes them, so
``prompt_tokens = input + cache_read + cache_creation`` with ``prompt_tokens_details.cached_tokens``
(reads) and ``prompt_tokens_details.cache_write_tokens`` (writes).

Stream: ``message_start`` -> the role chunk; text and ``input_json_delta`` deltas -> content and
tool-call argument chunks; ``message_delta`` -> the finish chunk (and the usage chunk when
``stream_options.include_usage``); ``message_stop`` ends it; ``ping`` is skipped; ``error`` fails
the attempt with its class (``overloaded_error`` -> server, ``rate_limit_error`` -> rate_limit).

``relay`` and ``relay_stream`` serve ``POST /v1/messages`` when the target is Anthropic: the
client's own body goes upstream with only the model replaced, and the answer comes back untouched.
``count_tokens`` does the same for ``POST /v1/messages/count_tokens``.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import httpx

from switchboard.core.errors import AttemptFailed, ErrorClass
from switchboard.core.money import usage_from_parts
from switchboard.core.schemas import (
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatMessage,
    Usage,
)
from switchboard.core.sse import SSEEvent, iter_events
from switchboard.routing.document import ProviderConfig
from switchboard.routing.planner import PlannedTarget
from switchboard.upstream.providers.base import (
    Call,
    HttpProvider,
    StreamChunk,
    UpstreamRequest,
    classify_http_error,
    error_body,
    tool_call_parts,
    unsupported,
)

__all__ = [
    "ANTHROPIC_VERSION",
    "JSON_TOOL",
    "Anthropic",
    "Relay",
    "anthropic_usage",
    "from_anthropic",
    "to_anthropic",
]

log = logging.getLogger("switchboard.providers.anthropic")

ANTHROPIC_VERSION = "2023-06-01"
DEFAULT_MAX_TOKENS = 4096
JSON_TOOL = "json_response"

_FINISH = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}

# An error event's type -> the HTTP status Anthropic gives the same error (docs: /en/api/errors).
_ERROR_STATUS = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "billing_error": 402,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "timeout_error": 504,
    "overloaded_error": 529,
}

# OpenAI parameters this module maps itself; anything else the client sent is dropped and logged.
_MAPPED = frozenset(
    {
        "model",
        "messages",
        "stream",
        "stream_options",
        "n",
        "max_tokens",
        "max_completion_tokens",
        "temperature",
        "top_p",
        "stop",
        "tools",
        "tool_choice",
        "parallel_tool_calls",
        "response_format",
        "user",
        "top_k",
        "logprobs",
        "top_logprobs",
        "modalities",
        "audio",
    }
)


# --------------------------------------------------------------------------- request


def _data_url(call: Call, url: str) -> tuple[str, str]:
    header, _, data = url[5:].partition(",")
    media_type, _, encoding = header.partition(";")
    if encoding != "base64" or not media_type:
        raise unsupported(call, "image data URLs must be base64 with a media type", "messages")
    return media_type, data


def _image(call: Call, part: dict[str, Any]) -> dict[str, Any]:
    image = part.get("image_url")
    url = image.get("url") if isinstance(image, dict) else image
    if not isinstance(url, str):
        raise unsupported(call, "an image_url part without a url", "messages")
    if url.startswith("data:"):
        media_type, data = _data_url(call, url)
        return {"type": "image", "source": {"type": "base64", "media_type": media_type, "data": data}}
    if url.startswith(("https://", "http://")):
        return {"type": "image", "source": {"type": "url", "url": url}}
    raise unsupported(call, "image URLs must be data: or http(s) URLs", "messages")


def _blocks(call: Call, content: str | list[dict[str, Any]] | None) -> list[dict[str, Any]]:
    if content is None:
        return []
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    blocks: list[dict[str, Any]] = []
    for part in content:
        kind = part.get("type")
        if kind in ("text", "refusal"):
            text = part.get(kind)
            if not text and "cache_control" not in part:
                continue  # Anthropic rejects empty text blocks
            block = {"type": "text", "text": text or ""}
        elif kind == "image_url":
            block = _image(call, part)
        else:
            raise unsupported(call, f"content parts of type {kind!r}", "messages")
        if "cache_control" in part:
            block["cache_control"] = part["cache_control"]
        blocks.append(block)
    return blocks


def _tool_use(call: Call, tool_call: dict[str, Any]) -> dict[str, Any]:
    ident, name, arguments = tool_call_parts(call, tool_call)
    return {"type": "tool_use", "id": ident, "name": name, "input": arguments}


def _tool_result(call: Call, message: ChatMessage) -> dict[str, Any]:
    content = message.content or ""
    if isinstance(content, list):
        return {"type": "tool_result", "tool_use_id": message.tool_call_id, "content": _blocks(call, content)}
    return {"type": "tool_result", "tool_use_id": message.tool_call_id, "content": content}


def _turns(call: Call, messages: list[ChatMessage]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The system blocks and the alternating turns."""
    system: list[dict[str, Any]] = []
    turns: list[dict[str, Any]] = []
    for message in messages:
        if message.role in ("system", "developer"):
            system += _blocks(call, message.content)
            continue
        if message.role == "user":
            role, blocks = "user", _blocks(call, message.content)
        elif message.role == "assistant":
            role = "assistant"
            blocks = _blocks(call, message.content)
            blocks += [_tool_use(call, tc) for tc in message.tool_calls or ()]
        elif message.role == "tool":
            role, blocks = "user", [_tool_result(call, message)]
        else:
            raise unsupported(call, "the deprecated 'function' role; use tools", "messages")
        cache_control = (message.model_extra or {}).get("cache_control")
        if cache_control is not None and blocks:
            blocks[-1]["cache_control"] = cache_control
        if not blocks:
            continue
        if turns and turns[-1]["role"] == role:
            turns[-1]["content"] += blocks
        else:
            turns.append({"role": role, "content": blocks})
    for turn in turns:
        only = turn["content"][0]
        if len(turn["content"]) == 1 and only["type"] == "text" and "cache_control" not in only:
            turn["content"] = only["text"]
    return system, turns


def _tools(call: Call, request: ChatCompletionRequest, extra: Mapping[str, Any]) -> dict[str, Any]:
    """``tools`` and ``tool_choice``, with the JSON-mode tool when ``response_format`` asks for JSON."""
    out: dict[str, Any] = {}
    tools: list[dict[str, Any]] = []
    for tool in request.tools or ():
        function = tool.get("function")
        if tool.get("type") != "function" or not isinstance(function, dict):
            raise unsupported(call, f"tools of type {tool.get('type')!r}", "tools")
        spec: dict[str, Any] = {
            "name": function.get("name"),
            "input_schema": function.get("parameters") or {"type": "object", "properties": {}},
        }
        if function.get("description"):
            spec["description"] = function["description"]
        if "cache_control" in tool:
            spec["cache_control"] = tool["cache_control"]
        tools.append(spec)
    choice = _tool_choice(call, request.tool_choice) if tools else None
    fmt = request.response_format or {}
    if request.wants_json:
        schema: Any = {"type": "object"}
        description = "Give the final answer as this tool's input."
        if fmt["type"] == "json_schema":
            spec_ = fmt.get("json_schema") or {}
            schema = spec_.get("schema") or schema
            if spec_.get("description"):
                description += " " + str(spec_["description"])
        if not isinstance(schema, dict) or schema.get("type") != "object":
            raise unsupported(call, "JSON schemas whose root is not an object", "response_format")
        if not tools or (choice is not None and choice["type"] == "none"):
            choice = {"type": "tool", "name": JSON_TOOL}
        elif choice is None or choice["type"] == "auto":
            choice = {"type": "any"}  # a client tool, or the answer through the JSON tool
        tools.append({"name": JSON_TOOL, "description": description, "input_schema": schema})
    elif fmt.get("type") not in (None, "text"):
        raise unsupported(call, f"response_format {fmt.get('type')!r}", "response_format")
    if tools:
        out["tools"] = tools
    if choice is not None:
        if extra.get("parallel_tool_calls") is False and choice["type"] != "none":
            choice["disable_parallel_tool_use"] = True
        out["tool_choice"] = choice
    return out


def _tool_choice(call: Call, choice: str | dict[str, Any] | None) -> dict[str, Any] | None:
    if choice is None:
        return None
    if isinstance(choice, dict):
        name = (choice.get("function") or {}).get("name")
        if choice.get("type") != "function" or not name:
            raise unsupported(call, "this tool_choice", "tool_choice")
        return {"type": "tool", "name": name}
    mapped = {"auto": "auto", "required": "any", "none": "none"}.get(choice)
    if mapped is None:
        raise unsupported(call, f"tool_choice {choice!r}", "tool_choice")
    return {"type": mapped}


def to_anthropic(call: Call) -> dict[str, Any]:
    """The Anthropic request body for ``call`` (pure: raises a client-class failure if unfaithful)."""
    request = call.request
    extra = request.model_extra or {}
    if (request.n or 1) > 1:
        raise unsupported(call, "n > 1 (one completion per request); send n separate requests", "n")
    if extra.get("logprobs") or extra.get("top_logprobs"):
        raise unsupported(call, "logprobs", "logprobs")
    if extra.get("audio") or "audio" in (extra.get("modalities") or ()):
        raise unsupported(call, "audio output", "modalities")
    system, turns = _turns(call, request.messages)
    provider = call.target.provider
    body: dict[str, Any] = {
        "model": call.target.model,
        "max_tokens": request.output_cap or provider.default_max_tokens or DEFAULT_MAX_TOKENS,
        "messages": turns,
    }
    if system:
        plain = len(system) == 1 and "cache_control" not in system[0]
        body["system"] = system[0]["text"] if plain else system
    if request.temperature is not None:
        if request.temperature > 1:
            log.info("temperature %s capped at 1 for %s", request.temperature, call.target.label)
        body["temperature"] = min(request.temperature, 1.0)
    if request.top_p is not None:
        body["top_p"] = request.top_p
    if extra.get("top_k") is not None:
        body["top_k"] = extra["top_k"]
    if request.stop:
        body["stop_sequences"] = [request.stop] if isinstance(request.stop, str) else list(request.stop)
    if request.user:
        body["metadata"] = {"user_id": request.user}
    body.update(_tools(call, request, extra))
    if call.stream:
        body["stream"] = True
    dropped = sorted(name for name in extra if name not in _MAPPED)
    if dropped:
        log.info("dropped parameters %s unsupported by %s", dropped, call.target.label)
    return body


# --------------------------------------------------------------------------- response


def anthropic_usage(usage: Mapping[str, Any]) -> Usage:
    """OpenAI usage from Anthropic's: prompt tokens include cache reads and writes."""
    return usage_from_parts(
        int(usage.get("input_tokens") or 0),
        int(usage.get("cache_read_input_tokens") or 0),
        int(usage.get("cache_creation_input_tokens") or 0),
        int(usage.get("output_tokens") or 0),
    )


def from_anthropic(message: Mapping[str, Any], json_mode: bool, created: int) -> ChatCompletion:
    """An OpenAI completion from an Anthropic message (pure)."""
    texts: list[str] = []
    tool_calls: list[dict[str, Any]] = []
    answer: str | None = None
    for block in message.get("content") or ():
        kind = block.get("type")
        if kind == "text":
            texts.append(block.get("text", ""))
        elif kind == "tool_use":
            arguments = json.dumps(block.get("input") or {}, ensure_ascii=False)
            if json_mode and block.get("name") == JSON_TOOL:
                answer = arguments
            else:
                tool_calls.append(
                    {
                        "id": block.get("id"),
                        "type": "function",
                        "function": {"name": block.get("name"), "arguments": arguments},
                    }
                )
    finish = _FINISH.get(message.get("stop_reason") or "end_turn", "stop")
    if answer is not None and not tool_calls and finish == "tool_calls":
        finish = "stop"
    content = answer if answer is not None else "".join(texts)
    msg: dict[str, Any] = {"role": "assistant", "content": content or None, "refusal": None}
    if tool_calls:
        msg["tool_calls"] = tool_calls
    elif not content:
        msg["content"] = ""
    return ChatCompletion.model_validate(
        {
            "id": message.get("id") or "msg_unknown",
            "object": "chat.completion",
            "created": created,
            "model": message.get("model") or "",
            "choices": [{"index": 0, "message": msg, "finish_reason": finish, "logprobs": None}],
            "usage": anthropic_usage(message.get("usage") or {}).model_dump(),
        }
    )


def _failure(call: Call, message: str) -> AttemptFailed:
    return AttemptFailed(ErrorClass.SERVER, f"{call.target.provider_name}: {message}")


def _error_event(label: str, data: Mapping[str, Any]) -> AttemptFailed:
    """The class of an ``error`` event, as if it had come as that error's HTTP status."""
    error = data.get("error")
    status = _ERROR_STATUS.get(str(error.get("type")), 500) if isinstance(error, dict) else 500
    return classify_http_error(status, json.dumps(data).encode(), {}, label)


class _StreamState:
    """What the stream has said so far: ids, open blocks, tool-call numbering, usage."""

    __slots__ = ("blocks", "created", "finish", "id", "json_mode", "model", "tools", "usage", "with_usage")

    def __init__(self, message: Mapping[str, Any], call: Call) -> None:
        self.id = str(message.get("id") or "msg_unknown")
        self.model = str(message.get("model") or call.target.model)
        self.created = int(time.time())
        self.usage: dict[str, Any] = dict(message.get("usage") or {})
        self.blocks: dict[int, tuple[str, int]] = {}
        self.tools = 0
        self.finish: str | None = None
        self.json_mode = call.request.wants_json
        options = call.request.stream_options
        self.with_usage = bool(options and options.include_usage)

    def chunk(self, delta: dict[str, Any], finish: str | None = None) -> StreamChunk:
        choice = {"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}
        return StreamChunk(self._make([choice]))

    def usage_chunk(self) -> StreamChunk:
        return StreamChunk(self._make([], anthropic_usage(self.usage)))

    def _make(self, choices: list[dict[str, Any]], usage: Usage | None = None) -> ChatCompletionChunk:
        return ChatCompletionChunk.model_validate(
            {
                "id": self.id,
                "object": "chat.completion.chunk",
                "created": self.created,
                "model": self.model,
                "choices": choices,
                "usage": usage.model_dump() if usage else None,
            }
        )


def _block_start(state: _StreamState, data: Mapping[str, Any]) -> list[StreamChunk]:
    index, block = int(data["index"]), data["content_block"]
    if block.get("type") == "text":
        state.blocks[index] = ("text", 0)
        return [state.chunk({"content": block["text"]})] if block.get("text") else []
    if block.get("type") == "tool_use":
        if state.json_mode and block.get("name") == JSON_TOOL:
            state.blocks[index] = ("json", 0)
            return []
        number = state.tools
        state.tools += 1
        state.blocks[index] = ("tool", number)
        call = {"index": number, "id": block.get("id"), "type": "function"}
        call["function"] = {"name": block.get("name"), "arguments": ""}
        return [state.chunk({"tool_calls": [call]})]
    state.blocks[index] = ("skip", 0)  # thinking and server-tool blocks have no OpenAI form
    return []


def _block_delta(state: _StreamState, data: Mapping[str, Any]) -> list[StreamChunk]:
    kind, number = state.blocks.get(int(data["index"]), ("skip", 0))
    delta = data["delta"]
    if delta.get("type") == "text_delta" and kind == "text" and delta.get("text"):
        return [state.chunk({"content": delta["text"]})]
    if delta.get("type") == "input_json_delta" and delta.get("partial_json"):
        if kind == "json":
            return [state.chunk({"content": delta["partial_json"]})]
        if kind == "tool":
            return [
                state.chunk(
                    {"tool_calls": [{"index": number, "function": {"arguments": delta["partial_json"]}}]}
                )
            ]
    return []


def _message_delta(state: _StreamState, data: Mapping[str, Any]) -> list[StreamChunk]:
    state.usage.update({k: v for k, v in (data.get("usage") or {}).items() if v is not None})
    reason = (data.get("delta") or {}).get("stop_reason") or "end_turn"
    finish = _FINISH.get(reason, "stop")
    if finish == "tool_calls" and state.tools == 0:
        finish = "stop"  # only the JSON-mode tool was called: that is the answer
    state.finish = finish
    chunks = [state.chunk({}, finish)]
    if state.with_usage:
        chunks.append(state.usage_chunk())
    return chunks


class Anthropic(HttpProvider):
    kind = "anthropic"
    default_base_url: ClassVar[str | None] = "https://api.anthropic.com"

    @classmethod
    def check_config(cls, config: ProviderConfig) -> None:
        super().check_config(config)
        if config.api_key is None:
            raise ValueError("kind 'anthropic' needs an api_key reference")

    @staticmethod
    def headers(
        target: PlannedTarget, api_key: str | None, stream: bool, client: Mapping[str, str] | None = None
    ) -> dict[str, str]:
        """Anthropic's headers; ``client`` may carry the caller's anthropic-version and -beta."""
        client = client or {}
        headers = {
            "content-type": "application/json",
            "accept": "text/event-stream" if stream else "application/json",
            "anthropic-version": client.get("anthropic-version") or ANTHROPIC_VERSION,
            **target.provider.headers,
        }
        beta = ",".join(b for b in (headers.get("anthropic-beta"), client.get("anthropic-beta")) if b)
        if beta:
            headers["anthropic-beta"] = beta
        if api_key:
            headers["x-api-key"] = api_key
        return headers

    @staticmethod
    def _url(target: PlannedTarget) -> str:
        return f"{target.provider.base_url}/v1/messages"

    def build_request(self, call: Call) -> UpstreamRequest:
        body = to_anthropic(call)
        content = json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()
        headers = self.headers(call.target, call.api_key, call.stream)
        return UpstreamRequest("POST", self._url(call.target), headers, content)

    def parse_response(self, content: bytes, call: Call) -> tuple[ChatCompletion, bytes | None]:
        try:
            message = json.loads(content)
            if not isinstance(message, dict) or message.get("type") != "message":
                raise ValueError
            return from_anthropic(message, call.request.wants_json, int(time.time())), None
        except (ValueError, KeyError, TypeError):
            raise _failure(call, "malformed upstream response") from None

    def parse_event(self, event: SSEEvent, call: Call, state: dict[str, Any]) -> list[StreamChunk] | None:
        if not event.data:
            return []
        try:
            data = json.loads(event.data)
            return self._event(str(data.get("type") or event.event), data, call, state)
        except (ValueError, KeyError, TypeError, AttributeError):
            raise _failure(call, "malformed upstream stream event") from None

    def _event(
        self, kind: str, data: dict[str, Any], call: Call, state: dict[str, Any]
    ) -> list[StreamChunk] | None:
        if kind == "error":
            raise _error_event(call.target.provider_name, data)
        if kind == "message_start":
            state["s"] = _StreamState(data["message"], call)
            return [state["s"].chunk({"role": "assistant", "content": ""})]
        if kind == "ping":
            return []
        current: _StreamState | None = state.get("s")
        if current is None:
            raise _failure(call, f"stream event {kind!r} before message_start")
        if kind == "content_block_start":
            return _block_start(current, data)
        if kind == "content_block_delta":
            return _block_delta(current, data)
        if kind == "message_delta":
            return _message_delta(current, data)
        if kind == "message_stop":
            if current.finish is None:
                raise _failure(call, "stream stopped without a stop reason")
            return None
        return []  # content_block_stop, and event types added after this was written

    # ------------------------------------------------------------------- /v1/messages relay

    def _relay_request(
        self, relay: Relay, body: Mapping[str, Any], stream: bool, path: str = "/v1/messages"
    ) -> httpx.Request:
        payload = {**body, "model": relay.target.model}
        if stream:
            payload["stream"] = True
        timeouts = relay.target.timeouts
        return relay.http.build_request(
            "POST",
            f"{relay.target.provider.base_url}{path}",
            headers=self.headers(relay.target, relay.api_key, stream, relay.client_headers),
            content=json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode(),
            timeout=httpx.Timeout(timeouts.total_s, connect=timeouts.connect_s),
        )

    async def relay(self, relay: Relay, body: Mapping[str, Any]) -> bytes:
        """The client's Anthropic body, model replaced; returns Anthropic's message bytes as sent."""
        response = await relay.http.send(self._relay_request(relay, body, stream=False))
        content = await response.aread()
        label = relay.target.provider_name
        if response.status_code != 200:
            raise classify_http_error(response.status_code, content, response.headers, label)
        try:
            if json.loads(content).get("type") != "message":
                raise ValueError
        except (ValueError, AttributeError):
            raise AttemptFailed(ErrorClass.SERVER, f"{label}: malformed upstream response") from None
        return content

    async def count_tokens(self, relay: Relay, body: Mapping[str, Any]) -> bytes:
        """Anthropic's ``count_tokens`` for the client's body, model replaced: its answer as sent."""
        request = self._relay_request(relay, body, stream=False, path="/v1/messages/count_tokens")
        response = await relay.http.send(request)
        content = await response.aread()
        label = relay.target.provider_name
        if response.status_code != 200:
            raise classify_http_error(response.status_code, content, response.headers, label)
        try:
            if not isinstance(json.loads(content).get("input_tokens"), int):
                raise ValueError
        except (ValueError, AttributeError):
            raise AttemptFailed(ErrorClass.SERVER, f"{label}: malformed count_tokens response") from None
        return content

    async def relay_stream(self, relay: Relay, body: Mapping[str, Any]) -> AsyncIterator[SSEEvent]:
        """Anthropic's events as sent; ends normally only after ``message_stop``."""
        label = relay.target.provider_name
        response = await relay.http.send(self._relay_request(relay, body, stream=True), stream=True)
        try:
            if response.status_code != 200:
                content = await error_body(response)
                raise classify_http_error(response.status_code, content, response.headers, label)
            async for event in iter_events(response.aiter_bytes()):
                if not event.data:
                    continue
                try:
                    data = json.loads(event.data)
                    kind = str(data.get("type") or event.event)
                except (ValueError, AttributeError):
                    raise AttemptFailed(
                        ErrorClass.SERVER, f"{label}: malformed upstream stream event"
                    ) from None
                if kind == "error":
                    raise _error_event(label, data)
                yield SSEEvent(kind, event.data)
                if kind == "message_stop":
                    return
            raise AttemptFailed(ErrorClass.SERVER, f"{label}: upstream stream ended before it finished")
        finally:
            await response.aclose()


@dataclass(frozen=True, slots=True)
class Relay:
    """A pass-through attempt: the target, its key, the shared client, the caller's version headers."""

    target: PlannedTarget
    api_key: str | None
    http: httpx.AsyncClient
    client_headers: Mapping[str, str]
