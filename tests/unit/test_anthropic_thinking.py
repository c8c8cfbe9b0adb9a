"""Thinking <-> reasoning between Anthropic Messages and OpenAI chat (``anthropic_format``): the
request's thinking as ``reasoning_effort`` for targets that reason, an upstream's reasoning text as
``thinking`` blocks (whole answers and streams), and unsigned blocks kept from Anthropic targets."""

from __future__ import annotations

import json
from typing import Any

import pytest
from anthropic.types import RawMessageStreamEvent
from pydantic import TypeAdapter
from switchboard.core.schemas import ChatCompletion, ChatCompletionChunk
from switchboard.http.endpoints.anthropic_format import (
    EventTranslator,
    MessagesRequest,
    can_reason,
    from_openai,
    reasoning_effort,
    to_openai,
    unsigned_thinking_dropped,
)

EVENT: TypeAdapter[Any] = TypeAdapter(RawMessageStreamEvent)


def request(**extra: Any) -> MessagesRequest:
    body = {"model": "m", "max_tokens": 2048, "messages": [{"role": "user", "content": "hi"}], **extra}
    return MessagesRequest.model_validate(body)


@pytest.mark.parametrize(
    ("model", "reasons"),
    [
        ("o1", True),
        ("o3-mini", True),
        ("o4-mini-2025-04-16", True),
        ("gpt-5", True),
        ("gpt-5.1-codex", True),
        ("openai/gpt-oss-120b", True),
        ("gpt-4o", False),
        ("gpt-4.1-mini", False),
        ("deepseek-reasoner", False),
        ("llama-3.3-70b", False),
        ("foo/o3", True),
        ("ollama", False),
    ],
)
def test_which_models_take_reasoning_effort(model: str, reasons: bool) -> None:
    assert can_reason(model) is reasons


@pytest.mark.parametrize(
    ("extra", "effort"),
    [
        ({}, None),
        ({"thinking": {"type": "disabled"}}, None),
        ({"thinking": {"type": "enabled", "budget_tokens": 1024}}, "low"),
        ({"thinking": {"type": "enabled", "budget_tokens": 4096}}, "medium"),
        ({"thinking": {"type": "enabled", "budget_tokens": 16384}}, "high"),
        ({"thinking": {"type": "enabled"}}, "medium"),
        ({"thinking": {"type": "adaptive"}}, "medium"),
        ({"thinking": {"type": "adaptive"}, "output_config": {"effort": "high"}}, "high"),  # Claude Code
        ({"thinking": {"type": "adaptive"}, "output_config": {"effort": "max"}}, "high"),
        (
            {"thinking": {"type": "enabled", "budget_tokens": 30000}, "output_config": {"effort": "low"}},
            "low",
        ),
        ({"thinking": {"type": "disabled"}, "output_config": {"effort": "high"}}, None),
    ],
)
def test_thinking_maps_to_an_effort(extra: dict[str, Any], effort: str | None) -> None:
    assert reasoning_effort(request(**extra)) == effort


def test_a_reasoning_target_gets_reasoning_effort_and_max_completion_tokens() -> None:
    thinking = request(thinking={"type": "enabled", "budget_tokens": 8000})
    sent = to_openai(thinking, stream=False, reasoning=True).model_dump(exclude_unset=True)
    assert sent["reasoning_effort"] == "medium"
    assert sent["max_completion_tokens"] == 2048 and "max_tokens" not in sent
    other = to_openai(thinking, stream=False).model_dump(exclude_unset=True)
    assert "reasoning_effort" not in other and other["max_tokens"] == 2048
    plain = to_openai(request(), stream=False, reasoning=True).model_dump(exclude_unset=True)
    assert "reasoning_effort" not in plain and plain["max_tokens"] == 2048  # no thinking asked


def completion(**message: Any) -> ChatCompletion:
    return ChatCompletion.model_validate(
        {
            "id": "chatcmpl-1",
            "object": "chat.completion",
            "created": 1,
            "model": "deepseek-reasoner",
            "choices": [{"index": 0, "message": {"role": "assistant", **message}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 5, "completion_tokens": 9, "total_tokens": 14},
        }
    )


@pytest.mark.parametrize("field", ["reasoning_content", "reasoning"])
def test_an_upstreams_reasoning_is_a_thinking_block_first(field: str) -> None:
    message = from_openai(completion(content="42", **{field: "Six times seven."}))
    assert message["content"] == [
        {"type": "thinking", "thinking": "Six times seven.", "signature": ""},
        {"type": "text", "text": "42"},
    ]
    assert from_openai(completion(content="42"))["content"] == [{"type": "text", "text": "42"}]


def chunk(delta: dict[str, Any], finish: str | None = None) -> ChatCompletionChunk:
    return ChatCompletionChunk.model_validate(
        {
            "id": "chatcmpl-1",
            "object": "chat.completion.chunk",
            "created": 1,
            "model": "m",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        }
    )


def test_streamed_reasoning_is_a_thinking_block_with_thinking_deltas() -> None:
    translator = EventTranslator()
    events = []
    for delta in (
        {"role": "assistant", "content": ""},
        {"reasoning_content": "Six "},
        {"reasoning_content": "times seven."},
        {"content": "42"},
    ):
        events += translator.feed(chunk(delta))
    events += translator.feed(chunk({}, "stop")) + translator.finish()
    parsed = [EVENT.validate_python(json.loads(event.data)) for event in events]
    assert [(e.type, getattr(e, "index", None)) for e in parsed] == [
        ("message_start", None),
        ("content_block_start", 0),
        ("content_block_delta", 0),
        ("content_block_delta", 0),
        ("content_block_delta", 0),
        ("content_block_stop", 0),
        ("content_block_start", 1),
        ("content_block_delta", 1),
        ("content_block_stop", 1),
        ("message_delta", None),
        ("message_stop", None),
    ]
    assert parsed[1].content_block.type == "thinking"
    assert [parsed[2].delta.thinking, parsed[3].delta.thinking] == ["Six ", "times seven."]
    assert parsed[4].delta.type == "signature_delta"
    assert parsed[7].delta.text == "42"


def test_unsigned_thinking_never_reaches_an_anthropic_target() -> None:
    signed = {"type": "thinking", "thinking": "real", "signature": "c2ln"}
    unsigned = {"type": "thinking", "thinking": "converted", "signature": ""}
    body = {
        "messages": [
            {"role": "user", "content": "q"},
            {"role": "assistant", "content": [unsigned, {"type": "text", "text": "a"}]},
            {"role": "assistant", "content": [signed, {"type": "text", "text": "b"}]},
        ]
    }
    kept = unsigned_thinking_dropped(body)
    assert kept["messages"][1]["content"] == [{"type": "text", "text": "a"}]
    assert kept["messages"][2]["content"] == [signed, {"type": "text", "text": "b"}]
    assert body["messages"][1]["content"][0] is unsigned  # the client's body is not changed
    clean = {"messages": [{"role": "assistant", "content": [signed]}]}
    assert unsigned_thinking_dropped(clean) is clean
