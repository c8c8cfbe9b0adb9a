"""One fallback chain across provider families: OpenAI-compatible fails, Anthropic fails, Bedrock serves.

The client sees one consistent OpenAI response (validated against OpenAI's schema), streamed or not,
with the whole trail in the attribution headers; the Anthropic SDK sees the same through /v1/messages.
"""

from __future__ import annotations

import json
from typing import Any

import anthropic
import httpx
import openai

from tests.conftest import API_KEY, RunningGateway, routing_doc
from tests.native_upstream import Reply, ScriptedUpstream
from tests.support import fixture, validate_openai

OVERLOADED = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
CHAIN = {
    "retry": {"attempts": 1},
    "targets": [
        {"provider": "mock", "model": "fail-500"},
        {"provider": "anthropic", "model": "claude-down"},
        {"provider": "bedrock", "model": "us.anthropic.claude-sonnet-4-5-20250929-v1:0"},
    ],
}


def start(gateway_factory: Any, mock: Any, native: ScriptedUpstream) -> RunningGateway:
    doc = routing_doc(mock.base_url, {"smart": CHAIN})
    doc["providers"]["anthropic"] = {
        "kind": "anthropic",
        "base_url": native.url,
        "api_key": {"ssm": "/switchboard/secrets/mock"},
    }
    doc["providers"]["bedrock"] = {"kind": "bedrock", "region": "us-east-1", "base_url": native.url}
    native.script("claude-down", Reply(529, json=OVERLOADED))
    return gateway_factory(doc=doc)


def trail(headers: Any) -> list[list[str]]:
    return [entry.split(";")[:3] for entry in headers["x-switchboard-trail"].split(",")]


EXPECTED_TRAIL = [
    ["mock/fail-500", "server", "500"],
    ["anthropic/claude-down", "server", "529"],
    ["bedrock/us.anthropic.claude-sonnet-4-5-20250929-v1:0", "ok", "200"],
]


def test_the_chain_serves_one_openai_response(gateway_factory, mock, native) -> None:  # type: ignore[no-untyped-def]
    case = fixture("bedrock", "chat_tools")
    body = {k: v for k, v in case["converse_response"].items() if k != "ResponseMetadata"}
    native.script(case["target_model"], Reply(json=body))
    gw = start(gateway_factory, mock, native)
    client = openai.OpenAI(base_url=gw.v1, api_key=API_KEY, max_retries=0)
    raw = client.chat.completions.with_raw_response.create(**{**case["openai_request"], "model": "smart"})
    done = raw.parse()
    assert done.choices[0].message.tool_calls[0].function.name == "top_song"  # type: ignore[index]
    assert trail(raw.headers) == EXPECTED_TRAIL
    assert raw.headers["x-switchboard-provider"] == "bedrock"
    validate_openai("CreateChatCompletionResponse", json.loads(raw.http_response.content))


def test_the_chain_streams_one_openai_stream(gateway_factory, mock, native) -> None:  # type: ignore[no-untyped-def]
    case = fixture("bedrock", "stream_tools")
    stream = [
        ("event", name, payload) for event in case["converse_stream"] for name, payload in event.items()
    ]
    native.script(case["target_model"], Reply(events=stream))
    gw = start(gateway_factory, mock, native)
    request = {**case["openai_request"], "model": "smart"}
    with httpx.stream(
        "POST", gw.v1 + "/chat/completions", headers=gw.headers(), json=request, timeout=30
    ) as r:
        assert trail(r.headers) == EXPECTED_TRAIL
        lines = [line[6:] for line in r.iter_lines() if line.startswith("data: ")]
    assert lines[-1] == "[DONE]"
    chunks = [json.loads(line) for line in lines[:-1]]
    for chunk in chunks:
        validate_openai("CreateChatCompletionStreamResponse", chunk)
    assert {c["id"] for c in chunks} == {chunks[0]["id"]}  # one stream, not pieces of three
    assert (
        "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
        == "I'll look that up."
    )
    assert chunks[-1]["usage"]["total_tokens"] == 458


def test_the_chain_through_the_messages_endpoint(gateway_factory, mock, native) -> None:  # type: ignore[no-untyped-def]
    case = fixture("bedrock", "chat_text")
    body = {k: v for k, v in case["converse_response"].items() if k != "ResponseMetadata"}
    native.script(CHAIN["targets"][2]["model"], Reply(json=body))  # type: ignore[index]
    gw = start(gateway_factory, mock, native)
    client = anthropic.Anthropic(base_url=gw.base_url, api_key=API_KEY, max_retries=0)
    raw = client.messages.with_raw_response.create(
        model="smart", max_tokens=100, messages=[{"role": "user", "content": "A haiku, please."}]
    )
    message = raw.parse()
    assert message.content[0].text.startswith("Waves fold into foam")  # type: ignore[union-attr]
    assert message.stop_reason == "end_turn"
    assert message.usage.cache_read_input_tokens == 1000 and message.usage.input_tokens == 22
    assert trail(raw.headers) == EXPECTED_TRAIL
