"""Thinking over /v1/messages with OpenAI-compatible targets, through the Anthropic SDK over HTTP:
the request's thinking reaches a reasoning model as ``reasoning_effort``, an upstream's
``reasoning_content`` comes back as a thinking block (streamed as ``thinking_delta``), and a
converted thinking block is left out when the next turn goes to an Anthropic target."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import anthropic
import pytest

from tests.conftest import API_KEY, RunningGateway, routing_doc
from tests.native_upstream import Reply, ScriptedUpstream

KEY_REF = {"ssm": "/switchboard/secrets/mock"}
ASK = [{"role": "user", "content": "what is six times seven"}]
ANSWER = {
    "id": "msg_01",
    "type": "message",
    "role": "assistant",
    "model": "claude-real",
    "content": [{"type": "text", "text": "42"}],
    "stop_reason": "end_turn",
    "stop_sequence": None,
    "usage": {"input_tokens": 10, "output_tokens": 1},
}


@pytest.fixture
def sdk(gateway_factory: Any, mock: Any, native: ScriptedUpstream) -> Iterator[anthropic.Anthropic]:
    models = {
        "reasoner": {"targets": [{"provider": "mock", "model": "echo+reasoning"}]},
        "o-model": {"targets": [{"provider": "mock", "model": "o4-mini"}]},
        "plain": {"targets": [{"provider": "mock", "model": "gpt-4o"}]},
        "claude": {"targets": [{"provider": "anthropic", "model": "claude-real"}]},
    }
    doc = routing_doc(mock.base_url, models)
    doc["providers"]["anthropic"] = {"kind": "anthropic", "base_url": native.url, "api_key": KEY_REF}
    gw: RunningGateway = gateway_factory(doc=doc)
    with anthropic.Anthropic(base_url=gw.base_url, api_key=API_KEY, max_retries=0) as client:
        yield client


def test_an_upstreams_reasoning_comes_back_as_a_thinking_block(sdk: anthropic.Anthropic) -> None:
    message = sdk.messages.create(model="reasoner", max_tokens=64, messages=ASK)  # type: ignore[arg-type]
    assert [block.type for block in message.content] == ["thinking", "text"]
    assert message.content[0].thinking == "Thinking it over."  # type: ignore[union-attr]
    assert message.content[1].text == "echo: what is six times seven"  # type: ignore[union-attr]


def test_streamed_reasoning_arrives_as_thinking_deltas(sdk: anthropic.Anthropic) -> None:
    with sdk.messages.stream(model="reasoner", max_tokens=64, messages=ASK) as stream:  # type: ignore[arg-type]
        events = list(stream)
        final = stream.get_final_message()
    thoughts = [
        e.delta.thinking
        for e in events
        if e.type == "content_block_delta" and e.delta.type == "thinking_delta"
    ]
    assert "".join(thoughts) == "Thinking it over." and len(thoughts) == 3
    assert [block.type for block in final.content] == ["thinking", "text"]
    assert final.content[0].thinking == "Thinking it over."  # type: ignore[union-attr]
    assert final.content[1].text == "echo: what is six times seven"  # type: ignore[union-attr]


def test_thinking_reaches_a_reasoning_model_as_reasoning_effort(
    sdk: anthropic.Anthropic, mock: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="switchboard.endpoints.messages")
    sdk.messages.create(
        model="o-model",
        max_tokens=4000,
        messages=ASK,  # type: ignore[arg-type]
        thinking={"type": "enabled", "budget_tokens": 2048},
    )
    sent = mock.requests[-1]["json"]
    assert sent["reasoning_effort"] == "low" and sent["max_completion_tokens"] == 4000
    assert "max_tokens" not in sent and "thinking" not in sent
    assert not [r for r in caplog.records if "thinking" in r.getMessage()]  # mapped, not dropped
    # Claude Code's form: adaptive thinking, the effort in output_config
    sdk.messages.create(
        model="o-model",
        max_tokens=4000,
        messages=ASK,  # type: ignore[arg-type]
        extra_body={"thinking": {"type": "adaptive"}, "output_config": {"effort": "high"}},
    )
    assert mock.requests[-1]["json"]["reasoning_effort"] == "high"


def test_a_model_that_does_not_reason_gets_no_reasoning_effort(
    sdk: anthropic.Anthropic, mock: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="switchboard.endpoints.messages")
    sdk.messages.create(
        model="plain",
        max_tokens=100,
        messages=ASK,  # type: ignore[arg-type]
        thinking={"type": "enabled", "budget_tokens": 2048},
    )
    sent = mock.requests[-1]["json"]
    assert "reasoning_effort" not in sent and "thinking" not in sent and sent["max_tokens"] == 100
    assert [r.getMessage() for r in caplog.records if "thinking" in r.getMessage()] == [
        "dropped Anthropic parameters ['thinking'] with no OpenAI form"
    ]


def test_a_converted_thinking_block_is_left_out_for_an_anthropic_target(
    sdk: anthropic.Anthropic, native: ScriptedUpstream
) -> None:
    first = sdk.messages.create(model="reasoner", max_tokens=64, messages=ASK)  # type: ignore[arg-type]
    native.script("claude-real", Reply(json=ANSWER))
    history = [
        *ASK,
        {"role": "assistant", "content": [block.model_dump() for block in first.content]},
        {"role": "user", "content": "and eight times?"},
    ]
    sdk.messages.create(model="claude", max_tokens=64, messages=history)  # type: ignore[arg-type]
    sent = native.requests[-1]["json"]["messages"]
    assert [block["type"] for block in sent[1]["content"]] == ["text"]
