"""/v1/messages as coding agents send it (issue 13): mid-conversation system turns, thinking blocks,
Anthropic-only parameters, cache_control, images in tool results, Anthropic ids, count_tokens,
error shapes on every /v1/messages* path, and the ``api-key`` header. Over HTTP, through the
official Anthropic SDK where it fits, to the mock (OpenAI-compatible) and a scripted Anthropic."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import anthropic
import pytest

from tests.conftest import API_KEY, RunningGateway, routing_doc
from tests.native_upstream import Reply, ScriptedUpstream

KEY_REF = {"ssm": "/switchboard/secrets/mock"}
PNG = {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}
EPHEMERAL = {"type": "ephemeral"}
ANSWER = {
    "id": "msg_01",
    "type": "message",
    "role": "assistant",
    "model": "claude-real",
    "content": [{"type": "text", "text": "hi"}],
    "stop_reason": "end_turn",
    "stop_sequence": None,
    "usage": {"input_tokens": 10, "output_tokens": 1},
}


def start(gateway_factory: Any, mock: Any, native: ScriptedUpstream, **extra: Any) -> RunningGateway:
    models = {
        "echo": {"targets": [{"provider": "mock", "model": "echo"}]},
        "tools": {"targets": [{"provider": "mock", "model": "tools"}]},
        "claude": {"targets": [{"provider": "anthropic", "model": "claude-real"}]},
    }
    doc = routing_doc(mock.base_url, models)
    doc["providers"]["anthropic"] = {"kind": "anthropic", "base_url": native.url, "api_key": KEY_REF}
    return gateway_factory(doc=doc, **extra)


_clients: list[anthropic.Anthropic] = []


@pytest.fixture(autouse=True)
def _close_clients() -> Iterator[None]:
    yield
    while _clients:
        _clients.pop().close()


def client(gw: RunningGateway, key: str = API_KEY) -> anthropic.Anthropic:
    made = anthropic.Anthropic(base_url=gw.base_url, api_key=key, max_retries=0)
    _clients.append(made)
    return made


# Claude Code's shape: a system reminder between turns, a thinking turn, cache_control everywhere.
CONVERSATION: list[dict[str, Any]] = [
    {"role": "user", "content": [{"type": "text", "text": "list the files", "cache_control": EPHEMERAL}]},
    {
        "role": "assistant",
        "content": [
            {"type": "thinking", "thinking": "I should call ls.", "signature": "sig=="},
            {"type": "redacted_thinking", "data": "opaque=="},
            {"type": "tool_use", "id": "toolu_01A", "name": "ls", "input": {"path": "."}},
        ],
    },
    {
        "role": "user",
        "content": [
            {
                "type": "tool_result",
                "tool_use_id": "toolu_01A",
                "content": [{"type": "text", "text": "a.png"}, {"type": "image", "source": PNG}],
                "cache_control": EPHEMERAL,
            },
        ],
    },
    {"role": "system", "content": "The user switched to plan mode."},
    {"role": "user", "content": "and now?"},
]


def test_claude_code_turns_convert_for_an_openai_compatible_target(gateway_factory, mock, native) -> None:  # type: ignore[no-untyped-def]
    gw = start(gateway_factory, mock, native)
    message = client(gw).messages.create(
        model="echo",
        max_tokens=64,
        system=[{"type": "text", "text": "You are Claude Code.", "cache_control": EPHEMERAL}],
        messages=CONVERSATION,  # type: ignore[arg-type]
        tools=[{"name": "ls", "input_schema": {"type": "object"}, "cache_control": EPHEMERAL}],
        thinking={"type": "enabled", "budget_tokens": 1024},
        extra_body={"context_management": {"edits": []}, "output_config": {"effort": "high"}},
        extra_headers={"anthropic-beta": "interleaved-thinking-2025-05-14"},
    )
    assert message.content[0].text == "echo: and now?"  # type: ignore[union-attr]
    assert message.id.startswith("msg_")
    sent = mock.requests[-1]["json"]
    assert sent["messages"] == [
        {"role": "system", "content": "You are Claude Code."},
        {"role": "user", "content": "list the files"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "toolu_01A",
                    "type": "function",
                    "function": {"name": "ls", "arguments": '{"path": "."}'},
                }
            ],
        },
        {
            "role": "tool",
            "tool_call_id": "toolu_01A",
            "content": "a.png\n[1 image(s) returned by this tool follow in the next user message]",
        },
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "Images returned by tool call toolu_01A:"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
            ],
        },
        {"role": "system", "content": "The user switched to plan mode."},  # in place
        {"role": "user", "content": "and now?"},
    ]
    for name in ("thinking", "context_management", "output_config", "cache_control"):
        assert name not in sent
    assert "cache_control" not in json.dumps(sent)


def test_claude_code_turns_reach_an_anthropic_target_as_its_api_accepts(
    gateway_factory, mock, native
) -> None:  # type: ignore[no-untyped-def]
    native.script("claude-real", Reply(json=ANSWER))
    gw = start(gateway_factory, mock, native)
    body: dict[str, Any] = {
        "max_tokens": 64,
        "system": "You are Claude Code.",
        "messages": [{"role": "system", "content": "Reply tersely."}, *CONVERSATION],
        "thinking": {"type": "enabled", "budget_tokens": 1024},
        "context_management": {"edits": [{"type": "clear_tool_uses_20250919"}]},
        "output_config": {"effort": "high"},
    }
    known = {k: v for k, v in body.items() if k not in ("context_management", "output_config")}
    raw = client(gw).messages.with_raw_response.create(
        model="claude",
        **known,
        extra_body={k: body[k] for k in ("context_management", "output_config")},
        extra_headers={"anthropic-beta": "interleaved-thinking-2025-05-14,context-management-2025-06-27"},
    )
    assert raw.parse().content[0].text == "hi"  # type: ignore[union-attr]
    sent = native.requests[-1]
    assert (
        sent["headers"]["anthropic-beta"] == "interleaved-thinking-2025-05-14,context-management-2025-06-27"
    )
    # a leading system turn joins the top-level system; a later one is a reminder where it was
    assert sent["json"]["system"] == [
        {"type": "text", "text": "You are Claude Code."},
        {"type": "text", "text": "Reply tersely."},
    ]
    reminder = {
        "role": "user",
        "content": [
            {"type": "text", "text": "<system-reminder>\nThe user switched to plan mode.\n</system-reminder>"}
        ],
    }
    assert sent["json"]["messages"] == [*CONVERSATION[:3], reminder, CONVERSATION[4]]
    for name in ("thinking", "context_management", "output_config"):
        assert sent["json"][name] == body[name]  # passed on untouched, thinking blocks too


def test_converted_answers_carry_anthropic_ids(gateway_factory, mock, native) -> None:  # type: ignore[no-untyped-def]
    gw = start(gateway_factory, mock, native)
    sdk = client(gw)
    tools = [{"name": "lookup", "input_schema": {"type": "object"}}]
    ask = [{"role": "user", "content": "weather?"}]
    message = sdk.messages.create(model="tools", max_tokens=20, messages=ask, tools=tools)  # type: ignore[arg-type]
    assert message.id.startswith("msg_") and not message.id.startswith("msg_chatcmpl")
    call = message.content[-1]
    assert call.type == "tool_use" and call.id.startswith("toolu_") and "call_" not in call.id
    with sdk.messages.stream(model="tools", max_tokens=20, messages=ask, tools=tools) as s:  # type: ignore[arg-type]
        final = s.get_final_message()
    assert final.id.startswith("msg_") and final.content[-1].id.startswith("toolu_")  # type: ignore[union-attr]
    # the next turn sends that id back: it reaches the target as the tool call's id and result's
    follow = [
        *ask,
        {"role": "assistant", "content": [call.model_dump()]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call.id, "content": "sunny"}]},
    ]
    sdk.messages.create(model="echo", max_tokens=20, messages=follow, tools=tools)  # type: ignore[arg-type]
    sent = mock.requests[-1]["json"]["messages"]
    assert sent[1]["tool_calls"][0]["id"] == call.id == sent[2]["tool_call_id"]
