"""OpenAI Responses <-> OpenAI chat, for ``POST /v1/responses`` served by a chat-only target.

Pure functions. When the target speaks the Responses API itself (an OpenAI target, or one whose
provider declares ``responses: true``) nothing here runs: the body passes through. Otherwise:

    request   ``instructions`` -> a system message first; ``input`` (a string: one user message;
              or items) -> chat messages: message items (``input_text``/``output_text`` ->
              text, ``input_image`` -> ``image_url``), ``function_call`` items -> the assistant
              message's ``tool_calls`` (consecutive calls join one message), ``function_call_output``
              -> tool messages; reasoning items -> ``reasoning_content`` on the assistant message
              after them, for a target that reasons (else dropped); function tools (a
              ``namespace`` tool's as ``<namespace>__<name>``) and ``tool_choice`` -> chat's;
              ``text.format`` -> ``response_format``; ``max_output_tokens`` -> ``max_tokens``;
              ``reasoning.effort`` -> ``reasoning_effort``; ``temperature``, ``top_p``,
              ``parallel_tool_calls``, ``user`` as they are. What has no chat form is in ``LOSSY``
              (dropped and logged, or a 400 for that target), the table ``docs/providers.md``
              shows.
    response  reasoning text (``reasoning_content``) -> a ``reasoning`` item first; the message's
              text -> one ``message`` output item (``output_text``; a refusal ->
              ``refusal``); each tool call -> a ``function_call`` item (its ``call_id`` is the
              chat tool call's id); ``finish_reason: length`` -> ``status: incomplete``; usage ->
              ``input_tokens`` (cached ones in ``input_tokens_details``), ``output_tokens``.
    stream    chat chunks -> ``response.created``, ``response.in_progress``, then per output item
              (reasoning text -> a ``reasoning`` item, ``response.reasoning_text.delta``/``.done``)
              ``response.output_item.added``, (text) ``response.content_part.added``,
              ``response.output_text.delta``..., ``response.output_text.done``,
              ``response.content_part.done``, (tool call) ``response.function_call_arguments.delta``
              ..., ``response.function_call_arguments.done``, ``response.output_item.done``; then
              ``response.completed`` (or ``response.incomplete``) with the whole response and its
              usage. Every event has a ``sequence_number`` from 0. Tool calls stay open until the
              chunks end (an upstream may interleave parallel calls' argument chunks: each delta
              names its own item), so their ``.done`` events come last, in output order.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import time
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from switchboard.core.schemas import ChatCompletion, ChatCompletionChunk, ChatCompletionRequest, Usage
from switchboard.core.sse import SSEEvent

__all__ = [
    "HOSTED_TOOLS",
    "LOSSY",
    "EventTranslator",
    "ResponsesRequest",
    "ToolNames",
    "Unconvertible",
    "all_tools",
    "custom_input",
    "dropped_tools",
    "event",
    "from_chat",
    "input_items",
    "new_id",
    "reasoning_of",
    "response_object",
    "response_usage",
    "to_chat",
    "usage_of",
]

log = logging.getLogger("switchboard.endpoints.responses")

# Each point where a converted request or answer loses something: (what, what the gateway does).
# docs/providers.md shows this table as it is (tests/unit/test_responses_format.py keeps them equal).
LOSSY: tuple[tuple[str, str], ...] = (
    (
        "reasoning items in input",
        (
            "carried as `reasoning_content` on the assistant message they precede (the item's "
            "`content` text, else its `summary` text) when the target is `kind: openai`, not "
            "api.openai.com, and its model reasons (o…, gpt-5…, gpt-oss…); dropped (logged) for every "
            "other target, Anthropic's included (a thinking block needs Anthropic's signature, which "
            "no converted turn has), and when the item has only `encrypted_content`"
        ),
    ),
    (
        "reasoning.summary",
        (
            "dropped (logged); an upstream's reasoning text (`reasoning_content`) comes back as "
            "a reasoning item's `content`, with no summary"
        ),
    ),
    ("include", "dropped (logged)"),
    ("metadata", "kept on the stored response, not sent upstream"),
    ("unknown request fields", "dropped (logged); OpenAI-compatible pass-through targets get them"),
    (
        "built-in tools OpenAI runs (web_search, web_search_preview, file_search, code_interpreter, "
        "image_generation, mcp)",
        (
            "dropped when offered (logged; the response has `x-switchboard-dropped-tools: web_search,...`); "
            "400 for that target when `tool_choice` forces one, or is `required` with no other tool"
        ),
    ),
    (
        "other built-in tools (computer_use_preview, local_shell, shell, apply_patch, tool_search, ...)",
        "400 for that target, param `tools`",
    ),
    (
        "namespace tools",
        (
            "each member function is the chat function `<namespace>__<name>` (hashed when longer than "
            "64 characters or taken); its calls come back as `function_call` items with `namespace`; the "
            "namespace's description is not sent"
        ),
    ),
    (
        "custom (free-form) tools",
        (
            "a chat function taking one string argument, `input` (a grammar is told in its "
            "description, not enforced); its calls come back as `custom_tool_call` items with that "
            "input, streamed as one `response.custom_tool_call_input.delta` and `.done` once the call "
            "is whole"
        ),
    ),
    ("additional_tools input items", "their tools join the request's `tools`, converted the same way"),
    ("tool_choice naming a built-in tool or allowed_tools", "400 for that target, param `tool_choice`"),
    ("input_file parts, file_id images", "400 for that target, param `input`"),
    ("item_reference and built-in tool call items", "400 for that target, param `input`"),
    ("background, conversation, prompt", "400 for that target, param named"),
    ("text.verbosity, truncation, top_logprobs", "dropped (logged)"),
    ("annotations and logprobs", "always empty"),
)

_DROPPED = ("include", "truncation", "top_logprobs", "service_tier", "safety_identifier", "prompt_cache_key")
_REFUSED = ("background", "conversation", "prompt")
_KNOWN = frozenset(
    {
        "model",
        "input",
        "instructions",
        "tools",
        "tool_choice",
        "text",
        "max_output_tokens",
        "temperature",
        "top_p",
        "parallel_tool_calls",
        "reasoning",
        "include",
        "metadata",
        "user",
        "store",
        "stream",
        "stream_options",
        "previous_response_id",
        *_DROPPED,
        *_REFUSED,
    }
)
_FINISH_INCOMPLETE = {"length": "max_output_tokens", "content_filter": "content_filter"}


class ResponsesRequest(BaseModel):
    """``POST /v1/responses``: what the gateway reads, typed; unknown fields are kept (``extra``)
    and passed to targets that speak the Responses API."""

    model_config = ConfigDict(extra="allow")

    model: str = Field(min_length=1, max_length=256)
    input: str | list[dict[str, Any]] | None = None
    instructions: str | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    text: dict[str, Any] | None = None
    max_output_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, ge=0, le=1)
    parallel_tool_calls: bool | None = None
    reasoning: dict[str, Any] | None = None
    include: list[str] | None = None
    metadata: dict[str, str] | None = None
    user: str | None = None
    store: bool | None = None
    stream: bool | None = None
    previous_response_id: str | None = Field(default=None, max_length=256)


class Unconvertible(ValueError):
    """Part of a Responses request that has no chat form."""

    def __init__(self, message: str, param: str) -> None:
        super().__init__(message)
        self.param = param


def new_id(prefix: str) -> str:
    return prefix + os.urandom(16).hex()


# --------------------------------------------------------------------------- request


def _content_parts(content: Any, where: str) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    if not isinstance(content, list):
        raise Unconvertible(f"{where} content that is neither a string nor a list of parts", "input")
    parts: list[dict[str, Any]] = []
    for part in content:
        kind = part.get("type") if isinstance(part, dict) else None
        if kind in ("input_text", "output_text", "text"):
            parts.append({"type": "text", "text": str(part.get("text", ""))})
        elif kind == "refusal":
            parts.append({"type": "text", "text": str(part.get("refusal", ""))})
        elif kind == "input_image" and isinstance(part, dict) and part.get("image_url"):
            image: dict[str, Any] = {"url": part["image_url"]}
            if part.get("detail") in ("low", "high", "auto"):
                image["detail"] = part["detail"]
            parts.append({"type": "image_url", "image_url": image})
        else:
            raise Unconvertible(f"{kind!r} content parts (file ids and files have no chat form)", "input")
    return parts


def _flat(parts: list[dict[str, Any]]) -> str | list[dict[str, Any]]:
    """Text-only parts as one string (every chat upstream takes that), else the parts."""
    if all(part["type"] == "text" for part in parts):
        return "".join(part["text"] for part in parts)
    return parts


def _output_text(output: Any) -> str:
    """A ``function_call_output``'s output as the tool message's text."""
    if isinstance(output, str):
        return output
    if isinstance(output, list):
        texts = [
            str(p.get("text", "")) for p in output if isinstance(p, dict) and p.get("type") == "input_text"
        ]
        if len(texts) != len(output):
            raise Unconvertible("function_call_output with parts other than text", "input")
        return "".join(texts)
    return json.dumps(output)


def reasoning_of(item: dict[str, Any]) -> str:
    """A reasoning item's text: its ``content`` (``reasoning_text`` parts), else its ``summary``
    (``summary_text`` parts, a blank line apart); "" when it has neither (``encrypted_content``
    only: opaque, for OpenAI alone)."""
    for field, kind, joiner in (("content", "reasoning_text", ""), ("summary", "summary_text", "\n\n")):
        parts = item.get(field)
        texts = [
            str(p.get("text") or "")
            for p in (parts if isinstance(parts, list) else ())
            if isinstance(p, dict) and p.get("type") == kind and p.get("text")
        ]
        if texts:
            return joiner.join(texts)
    return ""


def _messages(items: list[dict[str, Any]], names: ToolNames, reasoning: bool) -> list[dict[str, Any]]:
    """Chat messages for ``items``. With ``reasoning`` (a target that reasons), a reasoning item's
    text goes on the assistant message that follows it as ``reasoning_content``; else it is
    dropped (logged)."""
    messages: list[dict[str, Any]] = []
    thought: list[str] = []  # reasoning text waiting for its assistant message
    dropped = 0

    def assistant(message: dict[str, Any]) -> dict[str, Any]:
        if thought:
            message["reasoning_content"] = message.get("reasoning_content", "") + "".join(thought)
            thought.clear()
        return message

    for item in items:
        kind = item.get("type", "message")
        if kind == "message":
            role = item.get("role")
            if role not in ("user", "assistant", "system", "developer"):
                raise Unconvertible(f"message items with role {role!r}", "input")
            content = _flat(_content_parts(item.get("content", ""), f"{role} message"))
            if role == "assistant":
                text = (
                    content if isinstance(content, str) else "".join(str(p.get("text", "")) for p in content)
                )
                messages.append(assistant({"role": "assistant", "content": text}))
            else:
                dropped += len(thought)
                thought.clear()
                messages.append({"role": "system" if role == "developer" else role, "content": content})
        elif kind in ("function_call", "custom_tool_call"):
            arguments = (
                item.get("arguments") or "{}"
                if kind == "function_call"
                else json.dumps({"input": str(item.get("input") or "")}, ensure_ascii=False)
            )
            call = {
                "id": item.get("call_id"),
                "type": "function",
                "function": {
                    "name": names.chat(item.get("namespace"), str(item.get("name"))),
                    "arguments": arguments,
                },
            }
            last = messages[-1] if messages else None
            if last is not None and last["role"] == "assistant":
                last.setdefault("tool_calls", []).append(call)
                assistant(last)
            else:
                messages.append(assistant({"role": "assistant", "content": None, "tool_calls": [call]}))
        elif kind == "additional_tools":
            continue  # its tools are the request's too (all_tools)
        elif kind in ("function_call_output", "custom_tool_call_output"):
            dropped += len(thought)
            thought.clear()
            messages.append(
                {
                    "role": "tool",
                    "tool_call_id": item.get("call_id"),
                    "content": _output_text(item.get("output")),
                }
            )
        elif kind == "reasoning":
            text = reasoning_of(item) if reasoning else ""
            if text:
                thought.append(text)
            else:
                dropped += 1
        else:
            raise Unconvertible(f"input items of type {kind!r}", "input")
    dropped += len(thought)
    if dropped:
        why = "none of its text precedes an assistant turn" if reasoning else "the target does not reason"
        log.info("dropped %d reasoning input item(s): %s", dropped, why)
    return messages


# Built-in tools OpenAI runs on its side: a chat target cannot run them, so one merely offered is
# dropped for that target (logged, and named in ``x-switchboard-dropped-tools``); one that
# ``tool_choice`` forces is a 400. The other built-ins (computer use, shells, apply_patch, custom
# and tool_search tools) are the client's to run with call items chat has no form for: a 400.
HOSTED_TOOLS = frozenset(
    {
        "web_search",
        "web_search_2025_08_26",
        "web_search_preview",
        "web_search_preview_2025_03_11",
        "file_search",
        "code_interpreter",
        "image_generation",
        "mcp",
    }
)
_CHAT_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


_CALLABLE = ("function", "custom")  # the tools a chat function can stand for


class ToolNames:
    """The chat function name of each function and custom tool of a request, both ways.

    A plain tool keeps its name. A ``namespace`` tool's member ``name`` becomes
    ``<namespace>__<name>`` (chat has no namespaces), or, when that is no valid chat name (64
    characters of ``[A-Za-z0-9_-]``) or is taken, a shortened one with a hash of both, so a call
    maps back to its namespace, name and kind (``function`` or ``custom``). Pure and
    deterministic: the request's tools (``all_tools``) give the same names on the way in and out.
    """

    def __init__(self, tools: list[dict[str, Any]] | None) -> None:
        self._chat: dict[tuple[str | None, str], str] = {}
        self._item: dict[str, tuple[str | None, str, str]] = {}
        plain = {str(t.get("name")) for t in tools or () if t.get("type") in _CALLABLE}
        for tool in tools or ():
            if tool.get("type") in _CALLABLE:
                self._put(None, str(tool.get("name")), str(tool.get("name")), str(tool["type"]))
        for tool in tools or ():
            if tool.get("type") != "namespace":
                continue
            for member in _members(tool):
                if member.get("type") in _CALLABLE:
                    namespace, name = str(tool.get("name")), str(member.get("name"))
                    chat = _namespaced(namespace, name)
                    if chat in plain or chat in self._item:
                        chat = _namespaced(namespace, name, hashed=True)
                    self._put(namespace, name, chat, str(member["type"]))

    def _put(self, namespace: str | None, name: str, chat: str, kind: str) -> None:
        self._chat[(namespace, name)] = chat
        self._item.setdefault(chat, (namespace, name, kind))

    def chat(self, namespace: str | None, name: str) -> str:
        """The chat name of ``name`` (in ``namespace``, when it has one)."""
        known = self._chat.get((namespace, name))
        if known is not None:
            return known
        return name if not namespace else _namespaced(namespace, name)

    def item(self, chat: str) -> tuple[str | None, str, str]:
        """The namespace (None for a plain tool), name and kind (``function`` or ``custom``) a chat
        call's name stands for."""
        return self._item.get(chat, (None, chat, "function"))


def _members(tool: dict[str, Any]) -> list[dict[str, Any]]:
    """A namespace tool's member tools (the objects among them; none when ``tools`` is no list)."""
    members = tool.get("tools")
    return [member for member in members if isinstance(member, dict)] if isinstance(members, list) else []


def _namespaced(namespace: str, name: str, *, hashed: bool = False) -> str:
    chat = f"{namespace}__{name}"
    if not hashed and _CHAT_NAME.match(chat):
        return chat
    digest = hashlib.sha256(f"{namespace}\0{name}".encode()).hexdigest()[:8]
    return re.sub(r"[^A-Za-z0-9_-]", "_", chat)[:55] + "_" + digest


def all_tools(request: ResponsesRequest, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The request's ``tools`` and those of its ``additional_tools`` input items (Codex sends its
    tools there for the models it knows), in order."""
    tools = list(request.tools or ())
    for item in items:
        if item.get("type") == "additional_tools" and isinstance(item.get("tools"), list):
            tools += [tool for tool in item["tools"] if isinstance(tool, dict)]
    return tools


def _function(tool: dict[str, Any], name: str) -> dict[str, Any]:
    """A function or custom tool as a chat function: a custom tool takes its free-form text as the
    one string argument ``input`` (its grammar, if any, is told in the description)."""
    if tool.get("type") == "custom":
        description = str(tool.get("description") or "")
        fmt = tool.get("format")
        if isinstance(fmt, dict) and fmt.get("type") == "grammar":
            description += f"\n\nThe input follows this {fmt.get('syntax')} grammar:\n{fmt.get('definition')}"
        schema = {"type": "string", "description": "The tool's input, as free-form text."}
        parameters = {"type": "object", "properties": {"input": schema}, "required": ["input"]}
        return {
            "type": "function",
            "function": {"name": name, "description": description.strip(), "parameters": parameters},
        }
    function = {k: tool[k] for k in ("description", "parameters", "strict") if k in tool}
    return {"type": "function", "function": {"name": name, **function}}


def dropped_tools(request: ResponsesRequest, items: list[dict[str, Any]] | None = None) -> list[str]:
    """The built-in tools a chat target cannot run, offered (not forced): dropped for it."""
    tools = all_tools(request, items or [])
    found = [str(t.get("type")) for t in tools if t.get("type") in HOSTED_TOOLS]
    found += [
        str(member.get("type"))
        for tool in tools
        if tool.get("type") == "namespace"
        for member in _members(tool)
        if member.get("type") in HOSTED_TOOLS
    ]
    return found


def _chat_tools(tools: list[dict[str, Any]], names: ToolNames, extra: int) -> list[dict[str, Any]]:
    """The chat functions for ``tools``; the first ``extra`` are the request's ``tools`` (their
    errors name ``tools[i]``), the rest an ``additional_tools`` item's (named ``input``)."""
    out = []
    for index, tool in enumerate(tools):
        where = f"tools[{index}]" if index < extra else "input"
        kind = tool.get("type")
        if kind in _CALLABLE:
            out.append(_function(tool, names.chat(None, str(tool.get("name")))))
        elif kind == "namespace":
            if not isinstance(tool.get("tools"), list):
                raise Unconvertible(
                    "namespace tools without a list of tools", f"{where}.tools" if index < extra else where
                )
            for number, member in enumerate(tool["tools"]):
                member_kind = member.get("type") if isinstance(member, dict) else None
                if isinstance(member, dict) and member_kind in _CALLABLE:
                    out.append(_function(member, names.chat(str(tool.get("name")), str(member.get("name")))))
                elif member_kind not in HOSTED_TOOLS:
                    param = f"{where}.tools[{number}].type" if index < extra else where
                    raise Unconvertible(f"{member_kind!r} tools in a namespace", param)
        elif kind not in HOSTED_TOOLS:
            raise Unconvertible(
                f"built-in tools such as {kind!r}", f"{where}.type" if index < extra else where
            )
    return out


def _tools(request: ResponsesRequest, tools: list[dict[str, Any]], names: ToolNames) -> dict[str, Any]:
    """The chat ``tools`` and ``tool_choice`` for the request's tools (``all_tools``)."""
    out: dict[str, Any] = {}
    chat_tools = _chat_tools(tools, names, len(request.tools or ()))
    if chat_tools:
        out["tools"] = chat_tools
    choice = request.tool_choice
    if isinstance(choice, str):
        if choice == "required" and "tools" not in out:
            raise Unconvertible("tool_choice 'required' with only built-in tools", "tool_choice")
        if "tools" in out or not tools:
            out["tool_choice"] = choice
    elif isinstance(choice, dict):
        if choice.get("type") not in _CALLABLE:
            raise Unconvertible(f"tool_choice of type {choice.get('type')!r}", "tool_choice")
        name = names.chat(choice.get("namespace"), str(choice.get("name")))
        out["tool_choice"] = {"type": "function", "function": {"name": name}}
    return out


def _response_format(text: dict[str, Any] | None) -> dict[str, Any] | None:
    fmt = (text or {}).get("format")
    if not isinstance(fmt, dict) or fmt.get("type") in (None, "text"):
        return None
    if fmt.get("type") == "json_object":
        return {"type": "json_object"}
    if fmt.get("type") == "json_schema":
        schema = {k: fmt[k] for k in ("name", "schema", "strict", "description") if k in fmt}
        return {"type": "json_schema", "json_schema": schema}
    raise Unconvertible(f"text.format of type {fmt.get('type')!r}", "text.format")


def input_items(value: str | list[dict[str, Any]] | None) -> list[dict[str, Any]]:
    """The request's ``input`` as items, each with an id (stored, and listed by ``input_items``)."""
    if value is None:
        return []
    if isinstance(value, str):
        value = [{"type": "message", "role": "user", "content": value}]
    items = []
    for item in value:
        item = dict(item)
        kind = item.setdefault("type", "message")
        if kind == "message":
            content = item.get("content")
            if isinstance(content, str):
                part = "output_text" if item.get("role") == "assistant" else "input_text"
                extra: dict[str, Any] = {"annotations": []} if part == "output_text" else {}
                item["content"] = [{"type": part, "text": content, **extra}]
            item.setdefault("id", new_id("msg_"))
            item.setdefault("status", "completed")
        elif kind == "function_call":
            item.setdefault("id", new_id("fc_"))
            item.setdefault("status", "completed")
        elif kind == "function_call_output":
            item.setdefault("id", new_id("fco_"))
            item.setdefault("status", "completed")
        items.append(item)
    return items


def to_chat(
    request: ResponsesRequest, items: list[dict[str, Any]], *, stream: bool, reasoning: bool = False
) -> ChatCompletionRequest:
    """The chat request for a Responses one whose whole input (history included) is ``items``
    (pure); raises ``Unconvertible``. ``reasoning``: the target reasons, so reasoning items are
    carried as ``reasoning_content`` (else dropped)."""
    extra = request.model_extra or {}
    for name in _REFUSED:
        if extra.get(name):
            raise Unconvertible(f"'{name}'", name)
    messages: list[dict[str, Any]] = []
    if request.instructions:
        messages.append({"role": "system", "content": request.instructions})
    tools = all_tools(request, items)
    names = ToolNames(tools)
    messages += _messages(items, names, reasoning)
    body: dict[str, Any] = {"model": request.model, "messages": messages}
    if request.max_output_tokens is not None:
        body["max_tokens"] = request.max_output_tokens
    for name in ("temperature", "top_p", "parallel_tool_calls", "user"):
        if getattr(request, name) is not None:
            body[name] = getattr(request, name)
    if request.parallel_tool_calls is not None and not request.tools:
        del body["parallel_tool_calls"]  # chat refuses it without tools
    response_format = _response_format(request.text)
    if response_format is not None:
        body["response_format"] = response_format
    effort = (request.reasoning or {}).get("effort")
    if effort:
        body["reasoning_effort"] = effort
    body.update(_tools(request, tools, names))
    if stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    dropped = [n for n in (*_DROPPED, *sorted(set(extra) - _KNOWN)) if extra.get(n) is not None]
    dropped += ["include"] if request.include else []
    dropped += ["reasoning.summary"] if (request.reasoning or {}).get("summary") else []
    if dropped:
        log.info("dropped Responses parameters %s with no chat form", dropped)
    try:
        return ChatCompletionRequest.model_validate(body)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "request"
        raise Unconvertible(
            f"a request whose chat form is invalid at '{where}': {first['msg']}", "input"
        ) from None


# --------------------------------------------------------------------------- response


def response_usage(usage: Usage | None) -> dict[str, Any] | None:
    """Chat usage as the Responses API counts it."""
    if usage is None:
        return None
    details = usage.prompt_tokens_details or {}
    reasoning = ((usage.model_extra or {}).get("completion_tokens_details") or {}).get("reasoning_tokens")
    return {
        "input_tokens": usage.prompt_tokens,
        "input_tokens_details": {
            "cached_tokens": int(details.get("cached_tokens") or 0),
            "cache_write_tokens": int(details.get("cache_write_tokens") or 0),
        },
        "output_tokens": usage.completion_tokens,
        "output_tokens_details": {"reasoning_tokens": int(reasoning or 0)},
        "total_tokens": usage.total_tokens or usage.prompt_tokens + usage.completion_tokens,
    }


def usage_of(usage: Any) -> Usage | None:
    """A Responses ``usage`` object as chat usage (what metering prices); None when absent or 0."""
    if not isinstance(usage, dict):
        return None
    prompt = usage.get("input_tokens")
    completion = usage.get("output_tokens")
    if not isinstance(prompt, int) or not isinstance(completion, int) or not (prompt or completion):
        return None
    details = usage.get("input_tokens_details") if isinstance(usage.get("input_tokens_details"), dict) else {}
    cached = {k: v for k, v in (details or {}).items() if isinstance(v, int) and v}
    return Usage.model_validate(
        {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": usage.get("total_tokens") or prompt + completion,
            **({"prompt_tokens_details": cached} if cached else {}),
        }
    )


def response_object(
    request: ResponsesRequest,
    *,
    response_id: str,
    created_at: int,
    model: str,
    status: str,
    output: list[dict[str, Any]],
    usage: dict[str, Any] | None,
    incomplete: str | None = None,
    error: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The ``response`` object, echoing the request's settings as OpenAI does."""
    reasoning = request.reasoning or {}
    tools = [_echo_tool(tool) for tool in request.tools or ()]
    response: dict[str, Any] = {
        "id": response_id,
        "object": "response",
        "created_at": created_at,
        "status": status,
        "completed_at": int(time.time()) if status == "completed" else None,
        "error": error,
        "incomplete_details": {"reason": incomplete} if incomplete else None,
        "instructions": request.instructions,
        "max_output_tokens": request.max_output_tokens,
        "model": model,
        "output": output,
        "parallel_tool_calls": request.parallel_tool_calls
        if request.parallel_tool_calls is not None
        else True,
        "previous_response_id": request.previous_response_id,
        "reasoning": {"effort": reasoning.get("effort"), "summary": reasoning.get("summary")},
        "store": request.store if request.store is not None else True,
        "temperature": request.temperature if request.temperature is not None else 1.0,
        "text": request.text or {"format": {"type": "text"}},
        "tool_choice": request.tool_choice if request.tool_choice is not None else "auto",
        "tools": tools,
        "top_p": request.top_p if request.top_p is not None else 1.0,
        "truncation": "disabled",
        "metadata": request.metadata or {},
    }
    # OpenAI leaves these out rather than null: its schema allows no null for them.
    if usage is not None:
        response["usage"] = usage
    if request.user is not None:
        response["user"] = request.user
    return response


def _echo_tool(tool: dict[str, Any]) -> dict[str, Any]:
    """A function tool as a response shows it: ``strict`` and ``parameters`` always present."""
    if tool.get("type") != "function":
        return tool
    return {"description": None, **tool, "strict": tool.get("strict"), "parameters": tool.get("parameters")}


def _message_item(item_id: str, text: str, status: str, refusal: str | None = None) -> dict[str, Any]:
    content: list[dict[str, Any]] = []
    if text:
        content.append({"type": "output_text", "text": text, "annotations": [], "logprobs": []})
    if refusal:
        content.append({"type": "refusal", "refusal": refusal})
    return {"id": item_id, "type": "message", "role": "assistant", "status": status, "content": content}


def _reasoning_text(fields: dict[str, Any]) -> str:
    """The reasoning text a chat upstream sent (``reasoning_content``: DeepSeek, vLLM; ``reasoning``)."""
    for name in ("reasoning_content", "reasoning"):
        if isinstance(fields.get(name), str) and fields[name]:
            return str(fields[name])
    return ""


def _reasoning_item(item_id: str, text: str, status: str) -> dict[str, Any]:
    content = [{"type": "reasoning_text", "text": text}]
    return {"id": item_id, "type": "reasoning", "summary": [], "content": content, "status": status}


def _call_item(
    item_id: str, call_id: str, chat_name: str, arguments: str, status: str, names: ToolNames
) -> dict[str, Any]:
    """The output item for a chat tool call: a ``function_call``, or a ``custom_tool_call`` whose
    ``input`` is the call's ``input`` argument; a namespace member's call carries its
    ``namespace`` and its own name."""
    namespace, name, kind = names.item(chat_name)
    custom = kind == "custom"
    item: dict[str, Any] = {"id": item_id, "type": "custom_tool_call" if custom else "function_call"}
    item["call_id"] = call_id
    if namespace is not None:
        item["namespace"] = namespace
    item["name"] = name
    if custom:
        item["input"] = custom_input(arguments)
    else:
        item["arguments"] = arguments
    item["status"] = status
    return item


def custom_input(arguments: str) -> str:
    """A custom tool's input from its chat call's arguments (``{"input": "..."}``); the arguments
    as they are when the model did not keep to that shape."""
    try:
        parsed = json.loads(arguments)
    except ValueError:
        return arguments
    if isinstance(parsed, dict) and isinstance(parsed.get("input"), str) and len(parsed) == 1:
        return str(parsed["input"])
    return arguments


def from_chat(
    completion: ChatCompletion,
    request: ResponsesRequest,
    *,
    response_id: str,
    created_at: int,
    names: ToolNames | None = None,
) -> dict[str, Any]:
    """The Responses answer for a chat completion (pure); raises ``IndexError`` without choices.
    ``names``: the request's tool names (``ToolNames(all_tools(...))``; its ``tools`` by default)."""
    choice = completion.choices[0]
    message = choice.message
    output: list[dict[str, Any]] = []
    thought = _reasoning_text(message.model_extra or {})
    if thought:
        output.append(_reasoning_item(new_id("rs_"), thought, "completed"))
    refusal = (message.model_extra or {}).get("refusal")
    if message.content or refusal:
        output.append(_message_item(new_id("msg_"), message.content or "", "completed", refusal))
    names = names or ToolNames(request.tools)
    for call in message.tool_calls or ():
        function = call.get("function") or {}
        call_id = str(call.get("id") or new_id("call_"))
        name = str(function.get("name") or "")
        arguments = function.get("arguments") or "{}"
        output.append(_call_item(new_id("fc_"), call_id, name, arguments, "completed", names))
    incomplete = _FINISH_INCOMPLETE.get(choice.finish_reason or "")
    return response_object(
        request,
        response_id=response_id,
        created_at=created_at,
        model=completion.model,
        status="incomplete" if incomplete else "completed",
        output=output,
        usage=response_usage(completion.usage),
        incomplete=incomplete,
    )


def event(kind: str, sequence: int, **data: Any) -> SSEEvent:
    """One Responses stream event (the SSE event name is its ``type``)."""
    body = {"type": kind, **data, "sequence_number": sequence}
    return SSEEvent(kind, json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode())


class EventTranslator:
    """Chat chunks in, Responses events out. ``finish`` closes the response once chunks end.

    ``output`` holds the output items as they stand (for a ``response.failed`` after a break).
    """

    def __init__(
        self, request: ResponsesRequest, response_id: str, created_at: int, names: ToolNames | None = None
    ) -> None:
        self.request = request
        self.response_id = response_id
        self.created_at = created_at
        self.sequence = 0
        self.model = request.model
        self.started = False
        self.output: list[dict[str, Any]] = []
        self.open: dict[str, Any] | None = None  # the text or reasoning item being streamed
        # Tool calls stay open until the stream ends: a chat upstream may interleave the argument
        # chunks of parallel calls (index 0, 1, 0, 1, ...), so none is complete before then.
        self.open_calls: list[dict[str, Any]] = []
        self.calls: dict[int, int] = {}  # chat tool-call index -> output index
        self.names = names or ToolNames(request.tools)
        self.raw: dict[str, str] = {}  # a custom tool call's item id -> its chat arguments so far
        self.finish_reason: str | None = None
        self.usage: Usage | None = None

    def _event(self, kind: str, **data: Any) -> SSEEvent:
        made = event(kind, self.sequence, **data)
        self.sequence += 1
        return made

    def snapshot(self, status: str, **fields: Any) -> dict[str, Any]:
        return response_object(
            self.request,
            response_id=self.response_id,
            created_at=self.created_at,
            model=self.model,
            status=status,
            output=self.output,
            usage=fields.pop("usage", None),
            **fields,
        )

    def _close(self) -> list[SSEEvent]:
        """The done events of the open text or reasoning item."""
        item = self.open
        if item is None:
            return []
        self.open = None
        return self._done(item)

    def _done(self, item: dict[str, Any]) -> list[SSEEvent]:
        index = self.output.index(item)
        events: list[SSEEvent] = []
        item["status"] = "completed"
        if item["type"] == "reasoning":
            events.append(
                self._event(
                    "response.reasoning_text.done",
                    item_id=item["id"],
                    output_index=index,
                    content_index=0,
                    text=item["content"][0]["text"],
                )
            )
        elif item["type"] == "message":
            part = item["content"][0]
            events.append(
                self._event(
                    "response.output_text.done",
                    item_id=item["id"],
                    output_index=index,
                    content_index=0,
                    text=part["text"],
                    logprobs=[],
                )
            )
            events.append(
                self._event(
                    "response.content_part.done",
                    item_id=item["id"],
                    output_index=index,
                    content_index=0,
                    part=part,
                )
            )
        elif item["type"] == "custom_tool_call":
            # Its input is known once the chat arguments ({"input": ...}) are whole: one delta of
            # all of it, then done.
            item["input"] = custom_input(self.raw.pop(item["id"], ""))
            for kind, field in (("delta", "delta"), ("done", "input")):
                events.append(
                    self._event(
                        f"response.custom_tool_call_input.{kind}",
                        item_id=item["id"],
                        output_index=index,
                        **{field: item["input"]},
                    )
                )
        else:
            events.append(
                self._event(
                    "response.function_call_arguments.done",
                    item_id=item["id"],
                    output_index=index,
                    name=item["name"],
                    arguments=item["arguments"],
                )
            )
        events.append(self._event("response.output_item.done", output_index=index, item=item))
        return events

    def _add(self, item: dict[str, Any]) -> list[SSEEvent]:
        events = self._close()
        self.output.append(item)
        if item["type"] in ("function_call", "custom_tool_call"):
            self.open_calls.append(item)
        else:
            self.open = item
        shown = {**item, "content": []} if item["type"] in ("message", "reasoning") else dict(item)
        events.append(
            self._event("response.output_item.added", output_index=len(self.output) - 1, item=shown)
        )
        return events

    def feed(self, chunk: ChatCompletionChunk) -> list[SSEEvent]:
        events: list[SSEEvent] = []
        if not self.started:
            self.started = True
            self.model = chunk.model or self.model
            events.append(self._event("response.created", response=self.snapshot("in_progress")))
            events.append(self._event("response.in_progress", response=self.snapshot("in_progress")))
        if chunk.usage is not None:
            self.usage = chunk.usage
        for choice in chunk.choices:
            if choice.index != 0:
                continue
            events += self._delta(choice.delta)
            if choice.finish_reason:
                self.finish_reason = choice.finish_reason
        return events

    def _text(self, text: str) -> list[SSEEvent]:
        events: list[SSEEvent] = []
        if self.open is None or self.open["type"] != "message":
            item = _message_item(new_id("msg_"), "", "in_progress")
            part = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
            events += self._add(item)
            index = len(self.output) - 1
            events.append(
                self._event(
                    "response.content_part.added",
                    item_id=item["id"],
                    output_index=index,
                    content_index=0,
                    part=dict(part),
                )
            )
            item["content"] = [part]
        current = self.open
        assert current is not None
        current["content"][0]["text"] += text
        events.append(
            self._event(
                "response.output_text.delta",
                item_id=current["id"],
                output_index=self.output.index(current),
                content_index=0,
                delta=text,
                logprobs=[],
            )
        )
        return events

    def _thought(self, text: str) -> list[SSEEvent]:
        events: list[SSEEvent] = []
        if self.open is None or self.open["type"] != "reasoning":
            events += self._add(_reasoning_item(new_id("rs_"), "", "in_progress"))
        current = self.open
        assert current is not None
        current["content"][0]["text"] += text
        events.append(
            self._event(
                "response.reasoning_text.delta",
                item_id=current["id"],
                output_index=self.output.index(current),
                content_index=0,
                delta=text,
            )
        )
        return events

    def _delta(self, delta: dict[str, Any]) -> list[SSEEvent]:
        events: list[SSEEvent] = []
        thought = _reasoning_text(delta)
        if thought:
            events += self._thought(thought)
        if delta.get("content"):
            events += self._text(str(delta["content"]))
        for call in delta.get("tool_calls") or ():
            number = int(call.get("index", 0))
            function = call.get("function") or {}
            if number not in self.calls:
                call_id = str(call.get("id") or new_id("call_"))
                name = str(function.get("name") or "")
                item = _call_item(new_id("fc_"), call_id, name, "", "in_progress", self.names)
                events += self._add(item)
                self.calls[number] = len(self.output) - 1
            item = self.output[self.calls[number]]
            if function.get("arguments") and item["type"] == "custom_tool_call":
                self.raw[item["id"]] = self.raw.get(item["id"], "") + function["arguments"]
            elif function.get("arguments"):
                item["arguments"] += function["arguments"]
                events.append(
                    self._event(
                        "response.function_call_arguments.delta",
                        item_id=item["id"],
                        output_index=self.calls[number],
                        delta=function["arguments"],
                    )
                )
        return events

    def finish(self) -> list[SSEEvent]:
        still = sorted([*self.open_calls, *([self.open] if self.open else [])], key=self.output.index)
        self.open, self.open_calls = None, []
        events = [made for item in still for made in self._done(item)]  # in output order
        incomplete = _FINISH_INCOMPLETE.get(self.finish_reason or "")
        final = self.snapshot(
            "incomplete" if incomplete else "completed",
            usage=response_usage(self.usage),
            incomplete=incomplete,
        )
        events.append(
            self._event("response.incomplete" if incomplete else "response.completed", response=final)
        )
        return events
