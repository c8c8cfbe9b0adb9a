"""The Anthropic provider's pure transforms, each checked against a golden fixture.

Fixtures (tests/fixtures/providers/anthropic) were written from Anthropic's API reference; each
names its source. Every OpenAI-side output is also validated against OpenAI's published schema.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from switchboard.core.errors import AttemptFailed, ErrorClass
from switchboard.core.sse import SSEEvent
from switchboard.upstream.providers.anthropic import Anthropic

from tests.support import chat_call, fixture, fixtures, normalise, validate_openai

PROVIDER = {"kind": "anthropic", "api_key": {"ssm": "/switchboard/secrets/anthropic"}}
ANTHROPIC = Anthropic()


def sse(events: list[list[Any]]) -> bytes:
    return b"".join(f"event: {name}\ndata: {json.dumps(data)}\n\n".encode() for name, data in events)


async def pieces(data: bytes, size: int = 37) -> AsyncIterator[bytes]:
    """``data`` in small pieces, so that events arrive split across reads."""
    for start in range(0, len(data), size):
        yield data[start : start + size]


@pytest.mark.parametrize("name", fixtures("anthropic", "chat_"))
def test_request_and_response_match_the_golden_pair(name: str) -> None:
    case = fixture("anthropic", name)
    call = chat_call(case["openai_request"], PROVIDER, case["target_model"])
    spec = ANTHROPIC.build_request(call)
    assert spec.url == "https://api.anthropic.com/v1/messages"
    assert spec.headers["x-api-key"] == "sk-provider-key"
    assert spec.headers["anthropic-version"] == "2023-06-01"
    assert "authorization" not in spec.headers
    assert json.loads(spec.content) == case["anthropic_request"]

    completion, raw = ANTHROPIC.parse_response(json.dumps(case["anthropic_response"]).encode(), call)
    assert raw is None
    assert normalise(completion) == case["openai_response"]
    validate_openai("CreateChatCompletionResponse", completion)


@pytest.mark.parametrize("name", fixtures("anthropic", "stream_"))
def test_stream_events_map_to_the_golden_chunks(name: str) -> None:
    case = fixture("anthropic", name)
    call = chat_call(case["openai_request"], PROVIDER, case["target_model"])
    if "anthropic_request" in case:
        assert json.loads(ANTHROPIC.build_request(call).content) == case["anthropic_request"]
    state: dict[str, Any] = {}
    chunks: list[Any] = []
    ended = False
    failure: AttemptFailed | None = None
    try:
        for event_name, data in case["anthropic_stream"]:
            out = ANTHROPIC.parse_event(SSEEvent(event_name, json.dumps(data).encode()), call, state)
            if out is None:
                ended = True
                break
            chunks += out
    except AttemptFailed as exc:
        failure = exc
    assert [normalise(c.chunk) for c in chunks] == case["openai_chunks"]
    for chunk in chunks:
        validate_openai("CreateChatCompletionStreamResponse", chunk.chunk)
    if "error_class" in case:
        assert failure is not None and failure.error_class == case["error_class"]
    else:
        assert ended and failure is None


@pytest.mark.parametrize("case", fixture("anthropic", "errors")["cases"], ids=lambda c: c["name"])
def test_http_errors_are_classed(case: dict[str, Any]) -> None:
    call = chat_call({"model": "a", "messages": [{"role": "user", "content": "x"}]}, PROVIDER)
    failure = ANTHROPIC.classify(case["status"], json.dumps(case["body"]).encode(), case["headers"], call)
    assert failure.error_class == case["error_class"]
    assert failure.status == case["status"]
    assert failure.retry_after_s == case["retry_after_s"]
    if case["status"] == 401:
        assert "x-api-key" not in failure.message  # the upstream's text about our key is not echoed


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"n": 2}, "n"),
        ({"logprobs": True}, "logprobs"),
        ({"modalities": ["text", "audio"]}, "modalities"),
        (
            {
                "response_format": {
                    "type": "json_schema",
                    "json_schema": {"name": "x", "schema": {"type": "array"}},
                }
            },
            "response_format",
        ),
        (
            {"messages": [{"role": "user", "content": [{"type": "input_audio", "input_audio": {}}]}]},
            "messages",
        ),
        (
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [{"type": "image_url", "image_url": {"url": "ftp://x/y.png"}}],
                    }
                ]
            },
            "messages",
        ),
        (
            {
                "messages": [
                    {
                        "role": "assistant",
                        "tool_calls": [
                            {
                                "id": "t",
                                "type": "function",
                                "function": {"name": "f", "arguments": "not json"},
                            }
                        ],
                    }
                ]
            },
            "messages",
        ),
    ],
)
def test_what_anthropic_cannot_do_is_a_clear_400(extra: dict[str, Any], param: str) -> None:
    request = {"model": "a", "messages": [{"role": "user", "content": "x"}], **extra}
    with pytest.raises(AttemptFailed) as caught:
        ANTHROPIC.build_request(chat_call(request, PROVIDER, "claude-x"))
    failure = caught.value
    assert failure.error_class is ErrorClass.CLIENT and failure.status == 400
    assert failure.upstream_param == param
    assert "p/claude-x cannot serve this request" in failure.message


def test_adaptations() -> None:
    request = {
        "model": "a",
        "messages": [
            {"role": "user", "content": "one"},
            {"role": "user", "content": [{"type": "text", "text": "two"}, {"type": "text", "text": ""}]},
            {"role": "developer", "content": "be brief"},
            {"role": "assistant", "content": ""},
        ],
        "temperature": 1.7,
        "stop": "END",
        "top_k": 5,
        "presence_penalty": 0.5,
        "tool_choice": "auto",  # no tools: dropped
    }
    provider = {**PROVIDER, "default_max_tokens": 1000}
    body = json.loads(ANTHROPIC.build_request(chat_call(request, provider)).content)
    assert body == {
        "model": "m",
        "max_tokens": 1000,
        "system": "be brief",
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": "one"}, {"type": "text", "text": "two"}]}
        ],
        "temperature": 1.0,
        "stop_sequences": ["END"],
        "top_k": 5,
    }


def test_json_mode_with_client_tools_lets_the_model_choose() -> None:
    tools = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]
    request = {
        "model": "a",
        "messages": [{"role": "user", "content": "x"}],
        "tools": tools,
        "response_format": {"type": "json_object"},
        "parallel_tool_calls": False,
    }
    body = json.loads(ANTHROPIC.build_request(chat_call(request, PROVIDER)).content)
    assert [t["name"] for t in body["tools"]] == ["f", "json_response"]
    assert body["tool_choice"] == {"type": "any", "disable_parallel_tool_use": True}


def test_a_stream_that_stops_without_a_reason_is_a_server_failure() -> None:
    call = chat_call({"model": "a", "messages": [{"role": "user", "content": "x"}], "stream": True}, PROVIDER)
    state: dict[str, Any] = {}
    start = {"type": "message_start", "message": {"id": "m", "model": "c", "usage": {}}}
    ANTHROPIC.parse_event(SSEEvent("message_start", json.dumps(start).encode()), call, state)
    with pytest.raises(AttemptFailed) as caught:
        ANTHROPIC.parse_event(SSEEvent("message_stop", b'{"type":"message_stop"}'), call, state)
    assert caught.value.error_class is ErrorClass.SERVER
    assert ANTHROPIC.finished(state) is False


# --------------------------------------------------------------------------- over HTTP (MockTransport)


def _transport(case: dict[str, Any], seen: list[httpx.Request]) -> httpx.MockTransport:
    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        assert json.loads(request.content) == case["anthropic_request"]
        if "anthropic_stream" in case:
            return httpx.Response(
                200,
                headers={"content-type": "text/event-stream"},
                content=pieces(sse(case["anthropic_stream"])),
            )
        return httpx.Response(200, json=case["anthropic_response"])

    return httpx.MockTransport(handler)


async def test_complete_over_http() -> None:
    case = fixture("anthropic", "chat_tools")
    seen: list[httpx.Request] = []
    async with httpx.AsyncClient(transport=_transport(case, seen)) as http:
        call = chat_call(case["openai_request"], PROVIDER, case["target_model"], http=http)
        completion, _ = await ANTHROPIC.complete(call)
    assert normalise(completion) == case["openai_response"]
    assert seen[0].headers["x-api-key"] == "sk-provider-key"


async def test_stream_over_http() -> None:
    case = fixture("anthropic", "stream_text")
    seen: list[httpx.Request] = []
    async with httpx.AsyncClient(transport=_transport(case, seen)) as http:
        call = chat_call(case["openai_request"], PROVIDER, case["target_model"], http=http)
        chunks = [normalise(c.chunk) async for c in ANTHROPIC.stream(call)]
    assert chunks == case["openai_chunks"]
    assert seen[0].headers["accept"] == "text/event-stream"


async def test_overloaded_over_http_is_a_server_failure() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            529, json={"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
        )

    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as http:
        call = chat_call({"model": "a", "messages": [{"role": "user", "content": "x"}]}, PROVIDER, http=http)
        with pytest.raises(AttemptFailed) as caught:
            await ANTHROPIC.complete(call)
    assert caught.value.error_class is ErrorClass.SERVER and caught.value.status == 529


def test_config_needs_a_key_and_defaults_the_base_url() -> None:
    from switchboard.routing.document import ProviderConfig

    config = ProviderConfig.model_validate(PROVIDER)
    assert config.base_url == "https://api.anthropic.com"
    with pytest.raises(ValueError, match="needs an api_key"):
        ProviderConfig.model_validate({"kind": "anthropic"})
