"""Anthropic Messages <-> OpenAI chat conversions behind /v1/messages (pure functions)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from switchboard.core.schemas import ChatCompletion, ChatCompletionChunk
from switchboard.http.endpoints.anthropic_format import (
    EventTranslator,
    MessagesRequest,
    Unconvertible,
    anthropic_id,
    fold_system,
    from_openai,
    to_openai,
)

from tests.support import fixture


def request(**body: Any) -> MessagesRequest:
    return MessagesRequest.model_validate({"model": "claude", "max_tokens": 100, **body})


def test_a_conversation_with_tools_images_and_results() -> None:
    png = {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}
    converted = to_openai(
        request(
            system=[{"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}],
            messages=[
                {
                    "role": "user",
                    "content": [{"type": "text", "text": "What is this?"}, {"type": "image", "source": png}],
                },
                {
                    "role": "assistant",
                    "content": [
                        {"type": "thinking", "thinking": "hmm", "signature": "x"},
                        {"type": "text", "text": "Let me look."},
                        {"type": "tool_use", "id": "toolu_1", "name": "lookup", "input": {"q": "png"}},
                    ],
                },
                {
                    "role": "user",
                    "content": [
                        {
                            "type": "tool_result",
                            "tool_use_id": "toolu_1",
                            "content": [{"type": "text", "text": "an image"}],
                        },
                        {"type": "text", "text": "So?"},
                    ],
                },
            ],
            tools=[{"name": "lookup", "description": "Look up", "input_schema": {"type": "object"}}],
            tool_choice={"type": "any", "disable_parallel_tool_use": True},
            stop_sequences=["END"],
            temperature=0.2,
            top_k=5,
            metadata={"user_id": "u1"},
        ),
        stream=True,
    )
    assert converted.model_dump(exclude_unset=True) == {
        "model": "claude",
        "max_tokens": 100,
        "messages": [
            {"role": "system", "content": "Be brief."},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What is this?"},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
                ],
            },
            {
                "role": "assistant",
                "content": "Let me look.",
                "tool_calls": [
                    {
                        "id": "toolu_1",
                        "type": "function",
                        "function": {"name": "lookup", "arguments": '{"q": "png"}'},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "toolu_1", "content": "an image"},
            {"role": "user", "content": "So?"},
        ],
        "stop": ["END"],
        "temperature": 0.2,
        "user": "u1",
        "tools": [
            {
                "type": "function",
                "function": {"name": "lookup", "parameters": {"type": "object"}, "description": "Look up"},
            }
        ],
        "tool_choice": "required",
        "parallel_tool_calls": False,
        "stream": True,
        "stream_options": {"include_usage": True},
    }


@pytest.mark.parametrize(
    "body",
    [
        {"messages": [{"role": "user", "content": [{"type": "document", "source": {}}]}]},
        {
            "messages": [{"role": "user", "content": "x"}],
            "tools": [{"type": "web_search_20250305", "name": "w"}],
        },
        {"messages": [{"role": "user", "content": "x"}], "stop_sequences": ["a", "b", "c", "d", "e"]},
    ],
)
def test_what_openai_cannot_carry_is_unconvertible(body: dict[str, Any]) -> None:
    with pytest.raises(Unconvertible):
        to_openai(request(**body), stream=False)


def test_a_completion_becomes_a_message() -> None:
    completion = ChatCompletion.model_validate(fixture("anthropic", "chat_tools")["openai_response"])
    assert from_openai(completion) == {
        "id": "msg_01Aq9w938a90dw8q",
        "type": "message",
        "role": "assistant",
        "model": "claude-sonnet-4-5-20250929",
        "content": [
            {"type": "text", "text": "I'll check the current weather in New York for you."},
            {
                "type": "tool_use",
                "id": "toolu_01T1x1fJ34qAmk2tNTrN7Up6",
                "name": "get_weather",
                "input": {"location": "New York, NY"},
            },
        ],
        "stop_reason": "tool_use",
        "stop_sequence": None,
        "usage": {
            "input_tokens": 472,
            "output_tokens": 57,
            "cache_read_input_tokens": 0,
            "cache_creation_input_tokens": 0,
        },
    }


def test_cached_prompt_tokens_are_split_back_out() -> None:
    completion = ChatCompletion.model_validate(fixture("anthropic", "chat_cache")["openai_response"])
    assert from_openai(completion)["usage"] == {
        "input_tokens": 12,
        "output_tokens": 40,
        "cache_read_input_tokens": 2048,
        "cache_creation_input_tokens": 100,
    }


def test_chunks_become_the_anthropic_event_sequence() -> None:
    """The Anthropic fixture's OpenAI chunks, translated back, give Anthropic's event structure."""
    case = fixture("anthropic", "stream_tools")
    translator = EventTranslator()
    events = []
    for raw in case["openai_chunks"]:
        events += translator.feed(ChatCompletionChunk.model_validate(raw))
    events += translator.finish()
    names = [e.event for e in events]
    # Same skeleton as Anthropic's own stream, less the empty partial_json delta it sends first.
    upstream = [(name, data.get("delta", {}).get("partial_json")) for name, data in case["anthropic_stream"]]
    kept = [name for name, partial in upstream if name != "ping" and partial != ""]
    assert names == kept
    data = [json.loads(e.data) for e in events]
    assert data[0]["message"]["id"] == "msg_014p7gG3wDgGV9EUtLvnow3U"
    tool = next(d for d in data if d["type"] == "content_block_start" and d["index"] == 1)
    assert tool["content_block"] == {
        "type": "tool_use",
        "id": "toolu_01T1x1fJ34qAmk2tNTrN7Up6",
        "name": "get_weather",
        "input": {},
    }
    arguments = "".join(
        d["delta"].get("partial_json", "") for d in data if d["type"] == "content_block_delta"
    )
    assert json.loads(arguments) == {"location": "San Francisco, CA", "unit": "fahrenheit"}
    assert data[-2]["delta"] == {"stop_reason": "tool_use", "stop_sequence": None}


def test_usage_details_with_nulls_from_any_upstream_are_accepted() -> None:
    """Some OpenAI-compatible servers send nulls inside prompt_tokens_details: not a malformed answer."""
    completion = ChatCompletion.model_validate(
        {
            "id": "c",
            "object": "chat.completion",
            "created": 1,
            "model": "m",
            "choices": [
                {"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}
            ],
            "usage": {
                "prompt_tokens": 5,
                "completion_tokens": 1,
                "total_tokens": 6,
                "prompt_tokens_details": {"cached_tokens": None, "audio_tokens": None},
            },
        }
    )
    assert from_openai(completion)["usage"] == {
        "input_tokens": 5,
        "output_tokens": 1,
        "cache_read_input_tokens": 0,
        "cache_creation_input_tokens": 0,
    }


def test_system_turns_fold_as_anthropics_api_accepts() -> None:
    cached = {"type": "text", "text": "rules", "cache_control": {"type": "ephemeral"}}
    body = {
        "model": "claude",
        "system": "base",
        "messages": [
            {"role": "system", "content": [cached]},
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": "hello"},
            {"role": "system", "content": "now in plan mode"},
        ],
    }
    folded = fold_system(body)
    assert folded["system"] == [{"type": "text", "text": "base"}, cached]
    assert folded["messages"][:2] == body["messages"][1:3]
    assert folded["messages"][2] == {
        "role": "user",
        "content": [{"type": "text", "text": "<system-reminder>\nnow in plan mode\n</system-reminder>"}],
    }
    assert body["messages"][0]["content"] == [cached] and body["system"] == "base"  # the input is untouched
    plain = {"model": "claude", "messages": [{"role": "user", "content": "hi"}]}
    assert fold_system(plain) is plain  # nothing to fold: the client's body exactly


def test_anthropic_ids_are_stable_and_in_anthropics_alphabet() -> None:
    assert anthropic_id("toolu_", "call_abc123") == "toolu_abc123" == anthropic_id("toolu_", "toolu_abc123")
    assert anthropic_id("msg_", "chatcmpl-9xY") == "msg_9xY"
    assert anthropic_id("toolu_", "fc/1:2.3") == "toolu_fc_1_2_3"
    made = anthropic_id("toolu_", None)
    assert made.startswith("toolu_") and len(made) > len("toolu_") + 8


def test_thinking_turns_and_anthropic_only_parameters_are_dropped_for_openai(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level("INFO", "switchboard.endpoints.messages")
    converted = to_openai(
        request(
            messages=[
                {"role": "user", "content": "hi"},
                {
                    "role": "assistant",
                    "content": [
                        {"type": "redacted_thinking", "data": "x"},
                        {"type": "thinking", "thinking": "t", "signature": "s"},
                        {"type": "text", "text": "hello"},
                    ],
                },
                {"role": "system", "content": [{"type": "text", "text": "be brief"}]},
                {"role": "user", "content": "more"},
            ],
            thinking={"type": "enabled", "budget_tokens": 2048},
            output_config={"effort": "low"},
            context_management={"edits": []},
        ),
        stream=False,
    )
    assert [m.role for m in converted.messages] == ["user", "assistant", "system", "user"]
    assert converted.messages[1].content == "hello" and converted.messages[2].content == "be brief"
    dumped = converted.model_dump(exclude_none=True)
    assert not {"thinking", "output_config", "context_management"} & set(dumped)
    logged = " ".join(r.getMessage() for r in caplog.records)
    assert "redacted_thinking" in logged and "output_config" in logged and "context_management" in logged
