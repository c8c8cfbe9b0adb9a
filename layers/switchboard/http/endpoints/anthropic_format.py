"""Anthropic Messages <-> OpenAI chat, for ``POST /v1/messages`` served by a non-Anthropic target.

Pure functions, the mirror of ``providers.anthropic`` (which goes the other way). When the target
is Anthropic nothing here runs: the body passes through. Otherwise:

    request   system -> a system message; ``system`` turns inside ``messages`` (Claude Code sends
              them) -> system messages in place; text and images (base64 -> data URL, url -> URL)
              -> content parts; ``tool_use`` -> ``tool_calls``; ``tool_result`` -> tool messages
              (placed before the rest of that user turn); images in a tool result -> the tool
              message says so and the images follow in the next user message (OpenAI's tool
              messages carry text only); tools / tool_choice / disable_parallel_tool_use ->
              OpenAI's; stop_sequences -> stop (at most 4); metadata.user_id -> user.
              ``thinking`` / ``redacted_thinking`` blocks, ``cache_control``, ``top_k``,
              ``thinking``, ``context_management`` and ``output_config`` have no OpenAI form and
              are dropped (logged). Documents and server tools cannot be converted: a 400 for
              that target.
    response  content -> a text block, tool_calls -> tool_use blocks (arguments must be JSON);
              finish_reason -> stop_reason; usage -> input (minus cache reads and writes), output
              and cache tokens. Ids are Anthropic's: ``msg_…`` and ``toolu_…`` (``anthropic_id``).
    stream    OpenAI chunks -> message_start, content_block_start/delta/stop per text or tool
              block, then message_delta (stop reason, usage) and message_stop.

For an Anthropic target the body passes through. ``system`` turns inside ``messages`` are taken
as they are only under the ``mid-conversation-system-2026-04-07`` beta (Claude Code sends it);
without it Anthropic's turns are ``user`` and ``assistant`` only, so ``fold_system`` moves those
before the first turn into the top-level ``system``, and wraps each later one in
``<system-reminder>`` tags as a user turn at its place, Claude Code's own form for instructions
that arrive mid-conversation (Anthropic joins consecutive user turns into one).
"""

from __future__ import annotations

import json
import logging
import os
import re
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from switchboard.core.schemas import ChatCompletion, ChatCompletionChunk, ChatCompletionRequest, Usage
from switchboard.core.sse import SSEEvent

__all__ = [
    "EventTranslator",
    "MessagesRequest",
    "Unconvertible",
    "anthropic_id",
    "fold_system",
    "from_openai",
    "stop_reason",
    "to_openai",
]

log = logging.getLogger("switchboard.endpoints.messages")

_STOP = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "refusal",
}
_DROPPED = (
    "top_k",
    "thinking",
    "service_tier",
    "container",
    "mcp_servers",
    "context_management",
    "output_config",
    "cache_control",
)
_THINKING = ("thinking", "redacted_thinking")
_ID_PREFIXES = ("chatcmpl-", "call_", "msg_", "toolu_")
_NOT_ID = re.compile(r"[^A-Za-z0-9_-]")


class MessagesRequest(BaseModel):
    """What the gateway checks of an inbound Anthropic request; the rest passes through as is."""

    model_config = ConfigDict(extra="allow")

    model: str = Field(min_length=1, max_length=256)
    messages: list[dict[str, Any]] = Field(min_length=1)
    max_tokens: int = Field(ge=1)
    system: str | list[dict[str, Any]] | None = None
    stream: bool | None = None
    stop_sequences: list[str] | None = None
    temperature: float | None = Field(default=None, ge=0, le=1)
    top_p: float | None = Field(default=None, ge=0, le=1)
    tools: list[dict[str, Any]] | None = None
    tool_choice: dict[str, Any] | None = None
    metadata: dict[str, Any] | None = None


class Unconvertible(ValueError):
    """Part of an Anthropic request that has no OpenAI form."""

    def __init__(self, message: str, param: str) -> None:
        super().__init__(message)
        self.param = param


def stop_reason(finish_reason: str | None) -> str:
    return _STOP.get(finish_reason or "stop", "end_turn")


# --------------------------------------------------------------------------- request


def _blocks(content: Any, where: str) -> list[dict[str, Any]]:
    """``content`` as a list of content blocks. The request model leaves messages unchecked, so a
    content that is neither text nor a list of block objects (``true``, ``[1]``) is refused here."""
    if not isinstance(content, list) or not all(isinstance(block, dict) for block in content):
        raise Unconvertible(
            f"{where} content that is neither a string nor a list of content blocks", "messages"
        )
    return content


def _text(content: str | list[dict[str, Any]] | None, where: str) -> str:
    if content is None or isinstance(content, str):
        return content or ""
    parts = []
    for block in _blocks(content, where):
        if block.get("type") != "text":
            raise Unconvertible(f"{block.get('type')!r} blocks in {where}", "messages")
        parts.append(str(block.get("text", "")))
    return "\n".join(parts)


def _image(block: dict[str, Any]) -> dict[str, Any]:
    source = block.get("source")
    if not isinstance(source, dict):
        source = {}
    if source.get("type") == "base64":
        url = f"data:{source.get('media_type')};base64,{source.get('data')}"
    elif source.get("type") == "url":
        url = str(source.get("url"))
    else:
        raise Unconvertible(f"image sources of type {source.get('type')!r}", "messages")
    return {"type": "image_url", "image_url": {"url": url}}


def _tool_result(block: dict[str, Any]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The tool message for a ``tool_result`` block, and the image parts it carried."""
    content = block.get("content")
    ident = block.get("tool_use_id")
    if content is None or isinstance(content, str):
        return {"role": "tool", "tool_call_id": ident, "content": content or ""}, []
    texts: list[str] = []
    images: list[dict[str, Any]] = []
    for part in _blocks(content, "tool results"):
        kind = part.get("type")
        if kind == "text":
            texts.append(str(part.get("text", "")))
        elif kind == "image":
            images.append(_image(part))
        else:
            raise Unconvertible(f"{kind!r} blocks in tool results", "messages")
    if images:
        texts.append(f"[{len(images)} image(s) returned by this tool follow in the next user message]")
        images.insert(0, {"type": "text", "text": f"Images returned by tool call {ident}:"})
    return {"role": "tool", "tool_call_id": ident, "content": "\n".join(texts)}, images


def _user(content: str | list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The OpenAI messages for one user turn: its tool results first, then the rest (with the
    images the tool results carried at its head)."""
    if isinstance(content, str):
        return [{"role": "user", "content": content}]
    results: list[dict[str, Any]] = []
    parts: list[dict[str, Any]] = []
    tool_images: list[dict[str, Any]] = []
    for block in _blocks(content, "user message"):
        kind = block.get("type")
        if kind == "tool_result":
            message, images = _tool_result(block)
            results.append(message)
            tool_images += images
        elif kind == "text":
            parts.append({"type": "text", "text": block.get("text", "")})
        elif kind == "image":
            parts.append(_image(block))
        elif kind in _THINKING:
            log.info("dropped a %s block with no OpenAI form", kind)
        else:
            raise Unconvertible(f"{kind!r} blocks", "messages")
    parts = tool_images + parts
    if parts:
        only_text = len(parts) == 1 and parts[0]["type"] == "text"
        results.append({"role": "user", "content": parts[0]["text"] if only_text else parts})
    return results


def _assistant(content: str | list[dict[str, Any]]) -> dict[str, Any]:
    if isinstance(content, str):
        return {"role": "assistant", "content": content}
    texts: list[str] = []
    calls: list[dict[str, Any]] = []
    for block in _blocks(content, "assistant message"):
        kind = block.get("type")
        if kind == "text":
            texts.append(str(block.get("text", "")))
        elif kind == "tool_use":
            arguments = json.dumps(block.get("input") or {}, ensure_ascii=False)
            calls.append(
                {
                    "id": block.get("id"),
                    "type": "function",
                    "function": {"name": block.get("name"), "arguments": arguments},
                }
            )
        elif kind in _THINKING:
            log.info("dropped a %s block with no OpenAI form", kind)
        else:
            raise Unconvertible(f"{kind!r} blocks", "messages")
    message: dict[str, Any] = {"role": "assistant", "content": "".join(texts) or None}
    if calls:
        message["tool_calls"] = calls
    return message


def _tools(request: MessagesRequest) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if request.tools:
        tools = []
        for tool in request.tools:
            if "input_schema" not in tool:
                raise Unconvertible(f"server tools such as {tool.get('type')!r}", "tools")
            function = {"name": tool.get("name"), "parameters": tool["input_schema"]}
            if tool.get("description"):
                function["description"] = tool["description"]
            tools.append({"type": "function", "function": function})
        out["tools"] = tools
    choice = request.tool_choice
    if choice:
        kind = choice.get("type")
        if kind == "tool":
            out["tool_choice"] = {"type": "function", "function": {"name": choice.get("name")}}
        elif kind in ("auto", "any", "none"):
            out["tool_choice"] = {"auto": "auto", "any": "required", "none": "none"}[kind]
        if choice.get("disable_parallel_tool_use") and request.tools:
            out["parallel_tool_calls"] = False
    return out


def to_openai(request: MessagesRequest, *, stream: bool) -> ChatCompletionRequest:
    """The OpenAI chat request for an Anthropic one (pure); raises ``Unconvertible``."""
    messages: list[dict[str, Any]] = []
    if request.system:
        messages.append({"role": "system", "content": _text(request.system, "system")})
    for message in request.messages:
        content = message.get("content", "")
        if message.get("role") == "user":
            messages += _user(content)
        elif message.get("role") == "assistant":
            messages.append(_assistant(content))
        elif message.get("role") == "system":
            messages.append({"role": "system", "content": _text(content, "system messages")})
        else:
            raise Unconvertible(f"messages with role {message.get('role')!r}", "messages")
    body: dict[str, Any] = {"model": request.model, "messages": messages, "max_tokens": request.max_tokens}
    if request.stop_sequences:
        if len(request.stop_sequences) > 4:
            raise Unconvertible("more than 4 stop sequences", "stop_sequences")
        body["stop"] = request.stop_sequences
    for name in ("temperature", "top_p"):
        if getattr(request, name) is not None:
            body[name] = getattr(request, name)
    if request.metadata and request.metadata.get("user_id"):
        body["user"] = str(request.metadata["user_id"])
    body.update(_tools(request))
    if stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    dropped = [name for name in _DROPPED if (request.model_extra or {}).get(name) is not None]
    if dropped:
        log.info("dropped Anthropic parameters %s with no OpenAI form", dropped)
    try:
        return ChatCompletionRequest.model_validate(body)
    except ValidationError as exc:  # e.g. only empty turns: no chat message at all
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "request"
        raise Unconvertible(
            f"a request whose chat form is invalid at '{where}': {first['msg']}", "messages"
        ) from None


def _system_blocks(content: Any) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    return [dict(block) for block in content or () if isinstance(block, dict)]


def _reminder(content: Any) -> dict[str, Any]:
    """A mid-conversation system turn as Anthropic accepts it: a user turn, its text in
    ``<system-reminder>`` tags (each block's ``cache_control`` kept)."""
    blocks = []
    for block in _system_blocks(content):
        if block.get("type") == "text":
            block["text"] = f"<system-reminder>\n{block.get('text', '')}\n</system-reminder>"
        blocks.append(block)
    return {"role": "user", "content": blocks}


def fold_system(body: dict[str, Any]) -> dict[str, Any]:
    """``body`` as Anthropic's API accepts it: ``system`` turns in ``messages`` moved out (pure).

    Those before the first user or assistant turn join the top-level ``system``, after it; later
    ones become user turns in ``<system-reminder>`` tags, where they were. A body without system
    turns comes back as it is (the same object).
    """
    messages = body.get("messages")
    if not isinstance(messages, list) or not any(
        isinstance(m, dict) and m.get("role") == "system" for m in messages
    ):
        return body
    system = _system_blocks(body.get("system"))
    turns: list[Any] = []
    for message in messages:
        if not (isinstance(message, dict) and message.get("role") == "system"):
            turns.append(message)
        elif not turns:
            system += _system_blocks(message.get("content"))
        else:
            turns.append(_reminder(message.get("content")))
    folded = {**body, "messages": turns}
    if system:
        folded["system"] = system
    return folded


def anthropic_id(prefix: str, ident: Any) -> str:
    """An Anthropic-style id (``msg_…``, ``toolu_…``) for an upstream's id (``chatcmpl-…``,
    ``call_…``): the same id always maps to the same one, in Anthropic's alphabet, so that a tool
    call's id round-trips through the client's next turn, whichever family serves that."""
    text = str(ident) if ident else ""
    for known in _ID_PREFIXES:
        if text.startswith(known):
            text = text[len(known) :]
            break
    text = _NOT_ID.sub("_", text) or os.urandom(12).hex()
    return prefix + text


# --------------------------------------------------------------------------- response


def _usage(usage: Usage | None) -> dict[str, int]:
    if usage is None:
        return {"input_tokens": 0, "output_tokens": 0}
    details = usage.prompt_tokens_details or {}
    read = int(details.get("cached_tokens") or 0)
    written = int(details.get("cache_write_tokens") or 0)
    return {
        "input_tokens": max(0, usage.prompt_tokens - read - written),
        "output_tokens": usage.completion_tokens,
        "cache_read_input_tokens": read,
        "cache_creation_input_tokens": written,
    }


def _arguments(raw: str | None) -> dict[str, Any]:
    value = json.loads(raw or "{}")
    if not isinstance(value, dict):
        raise ValueError("tool arguments are not a JSON object")
    return value


def from_openai(completion: ChatCompletion) -> dict[str, Any]:
    """An Anthropic message from an OpenAI completion (pure).

    Raises ``ValueError`` when tool arguments are not a JSON object.
    """
    choice = completion.choices[0]
    content: list[dict[str, Any]] = []
    if choice.message.content:
        content.append({"type": "text", "text": choice.message.content})
    for call in choice.message.tool_calls or ():
        function = call.get("function") or {}
        content.append(
            {
                "type": "tool_use",
                "id": anthropic_id("toolu_", call.get("id")),
                "name": function.get("name"),
                "input": _arguments(function.get("arguments")),
            }
        )
    return {
        "id": anthropic_id("msg_", completion.id),
        "type": "message",
        "role": "assistant",
        "model": completion.model,
        "content": content,
        "stop_reason": stop_reason(choice.finish_reason),
        "stop_sequence": None,
        "usage": _usage(completion.usage),
    }


class EventTranslator:
    """OpenAI chunks in, Anthropic events out. ``finish`` closes the message once chunks end."""

    def __init__(self) -> None:
        self.started = False
        self.index = -1
        self.open: str | None = None  # "text", or "tool:<openai index>"
        self.tools: dict[int, int] = {}  # OpenAI tool-call index -> Anthropic block index
        self.stop: str | None = None
        self.usage: Usage | None = None

    @staticmethod
    def _event(kind: str, data: dict[str, Any]) -> SSEEvent:
        return SSEEvent(kind, json.dumps({"type": kind, **data}, separators=(",", ":")).encode())

    def _start(self, block: dict[str, Any], key: str) -> list[SSEEvent]:
        events = self._close()
        self.index += 1
        self.open = key
        events.append(self._event("content_block_start", {"index": self.index, "content_block": block}))
        return events

    def _close(self) -> list[SSEEvent]:
        if self.open is None:
            return []
        self.open = None
        return [self._event("content_block_stop", {"index": self.index})]

    def feed(self, chunk: ChatCompletionChunk) -> list[SSEEvent]:
        events: list[SSEEvent] = []
        if not self.started:
            self.started = True
            message: dict[str, Any] = {
                "id": anthropic_id("msg_", chunk.id),
                "type": "message",
                "role": "assistant",
                "model": chunk.model,
                "content": [],
                "stop_reason": None,
                "stop_sequence": None,
                "usage": {"input_tokens": 0, "output_tokens": 0},
            }
            events.append(self._event("message_start", {"message": message}))
        if chunk.usage is not None:
            self.usage = chunk.usage
        for choice in chunk.choices:
            if choice.index != 0:
                continue
            events += self._delta(choice.delta)
            if choice.finish_reason:
                self.stop = stop_reason(choice.finish_reason)
        return events

    def _delta(self, delta: dict[str, Any]) -> list[SSEEvent]:
        events: list[SSEEvent] = []
        if delta.get("content"):
            if self.open != "text":
                events += self._start({"type": "text", "text": ""}, "text")
            text = {"type": "text_delta", "text": delta["content"]}
            events.append(self._event("content_block_delta", {"index": self.index, "delta": text}))
        for call in delta.get("tool_calls") or ():
            number = int(call.get("index", 0))
            function = call.get("function") or {}
            if number not in self.tools:
                ident = anthropic_id("toolu_", call.get("id"))
                block: dict[str, Any] = {
                    "type": "tool_use",
                    "id": ident,
                    "name": function.get("name"),
                    "input": {},
                }
                events += self._start(block, f"tool:{number}")
                self.tools[number] = self.index
            if function.get("arguments"):
                partial = {"type": "input_json_delta", "partial_json": function["arguments"]}
                events.append(
                    self._event("content_block_delta", {"index": self.tools[number], "delta": partial})
                )
        return events

    def finish(self) -> list[SSEEvent]:
        events = self._close()
        delta = {"stop_reason": self.stop or "end_turn", "stop_sequence": None}
        events.append(self._event("message_delta", {"delta": delta, "usage": _usage(self.usage)}))
        events.append(self._event("message_stop", {}))
        return events
