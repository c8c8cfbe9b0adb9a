"""OpenAI clients through the gateway to an Anthropic upstream (scripted from golden fixtures)."""

from __future__ import annotations

import json
from typing import Any

import httpx
import openai

from tests.conftest import API_KEY, RunningGateway, routing_doc
from tests.native_upstream import Reply, ScriptedUpstream
from tests.support import fixture, validate_openai

KEY_REF = {"ssm": "/switchboard/secrets/mock"}  # seeded with "mock-provider-key"


def start(
    gateway_factory: Any, mock: Any, native: ScriptedUpstream, models: dict[str, Any]
) -> RunningGateway:
    doc = routing_doc(mock.base_url, models)
    doc["providers"]["anthropic"] = {"kind": "anthropic", "base_url": native.url, "api_key": KEY_REF}
    return gateway_factory(doc=doc)


def sdk(gw: RunningGateway) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.v1, api_key=API_KEY, max_retries=0)


def test_tool_call_round_trip_with_the_openai_sdk(gateway_factory, mock, native) -> None:  # type: ignore[no-untyped-def]
    case = fixture("anthropic", "chat_tools")
    native.script(
        case["target_model"], Reply(json=case["anthropic_response"], expect=case["anthropic_request"])
    )
    gw = start(
        gateway_factory,
        mock,
        native,
        {"claude": {"targets": [{"provider": "anthropic", "model": case["target_model"]}]}},
    )
    raw = sdk(gw).chat.completions.with_raw_response.create(**case["openai_request"])
    done = raw.parse()
    call = done.choices[0].message.tool_calls[0]  # type: ignore[index]
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"location": "New York, NY"}
    assert done.choices[0].finish_reason == "tool_calls"
    assert done.usage is not None and done.usage.total_tokens == 529
    assert raw.headers["x-switchboard-provider"] == "anthropic"
    sent = native.requests[-1]
    assert sent["headers"]["x-api-key"] == "mock-provider-key"
    assert "authorization" not in sent["headers"]
    validate_openai("CreateChatCompletionResponse", json.loads(raw.http_response.content))


def test_streamed_tool_call_with_the_openai_sdk(gateway_factory, mock, native) -> None:  # type: ignore[no-untyped-def]
    case = fixture("anthropic", "stream_tools")
    native.script(case["target_model"], Reply(sse=case["anthropic_stream"], expect=case["anthropic_request"]))
    gw = start(
        gateway_factory,
        mock,
        native,
        {"claude": {"targets": [{"provider": "anthropic", "model": case["target_model"]}]}},
    )
    chunks = list(sdk(gw).chat.completions.create(**case["openai_request"]))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    arguments = "".join(
        tc.function.arguments or ""
        for c in chunks
        if c.choices
        for tc in c.choices[0].delta.tool_calls or ()
        if tc.function
    )
    assert text == "Okay, let's check the weather for San Francisco, CA:"
    assert json.loads(arguments) == {"location": "San Francisco, CA", "unit": "fahrenheit"}
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


def test_overloaded_anthropic_falls_back(gateway_factory, mock, native) -> None:  # type: ignore[no-untyped-def]
    overloaded = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
    native.script("claude-busy", Reply(529, json=overloaded))
    gw = start(
        gateway_factory,
        mock,
        native,
        {
            "m": {
                "targets": [
                    {"provider": "anthropic", "model": "claude-busy"},
                    {"provider": "mock", "model": "echo"},
                ]
            }
        },
    )
    response = httpx.post(
        gw.v1 + "/chat/completions",
        headers=gw.headers(),
        timeout=30,
        json={"model": "m", "messages": [{"role": "user", "content": "hi"}]},
    )
    assert response.status_code == 200
    assert response.json()["choices"][0]["message"]["content"] == "echo: hi"
    trail = [t.split(";")[:3] for t in response.headers["x-switchboard-trail"].split(",")]
    assert trail == [["anthropic/claude-busy", "server", "529"]] * 2 + [["mock/echo", "ok", "200"]]


def test_rate_limited_stream_falls_back_before_output(gateway_factory, mock, native) -> None:  # type: ignore[no-untyped-def]
    limited = {"type": "error", "error": {"type": "rate_limit_error", "message": "slow down"}}
    native.script("claude-limited", Reply(429, json=limited))
    gw = start(
        gateway_factory,
        mock,
        native,
        {
            "m": {
                "retry": {"attempts": 1},
                "targets": [
                    {"provider": "anthropic", "model": "claude-limited"},
                    {"provider": "mock", "model": "echo"},
                ],
            }
        },
    )
    chunks = list(
        sdk(gw).chat.completions.create(model="m", messages=[{"role": "user", "content": "a b"}], stream=True)
    )
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "echo: a b"


def test_an_error_event_after_output_ends_the_stream_with_an_error(gateway_factory, mock, native) -> None:  # type: ignore[no-untyped-def]
    case = fixture("anthropic", "stream_error")
    native.script(case["target_model"], Reply(sse=case["anthropic_stream"]))
    gw = start(
        gateway_factory,
        mock,
        native,
        {
            "claude": {
                "targets": [
                    {"provider": "anthropic", "model": case["target_model"]},
                    {"provider": "mock", "model": "echo"},
                ]
            }
        },
    )
    with httpx.stream(
        "POST", gw.v1 + "/chat/completions", headers=gw.headers(), timeout=30, json=case["openai_request"]
    ) as response:
        events = [line[6:] for line in response.iter_lines() if line.startswith("data: ")]
    assert json.loads(events[1])["choices"][0]["delta"]["content"] == "Hel"
    assert json.loads(events[-1])["error"]["code"] == "stream_interrupted"
    assert "[DONE]" not in events


def test_n_above_one_is_a_clear_400(gateway_factory, mock, native) -> None:  # type: ignore[no-untyped-def]
    gw = start(
        gateway_factory, mock, native, {"claude": {"targets": [{"provider": "anthropic", "model": "c"}]}}
    )
    response = httpx.post(
        gw.v1 + "/chat/completions",
        headers=gw.headers(),
        timeout=30,
        json={"model": "claude", "n": 2, "messages": [{"role": "user", "content": "hi"}]},
    )
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["param"] == "n" and error["code"] == "unsupported_parameter"
    assert "n > 1" in error["message"]
    assert native.requests == []
