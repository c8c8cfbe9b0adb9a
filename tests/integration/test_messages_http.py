"""POST /v1/messages with the official Anthropic SDK: pass-through to Anthropic, conversion elsewhere."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import anthropic
import httpx
import pytest

from tests.conftest import API_KEY, RunningGateway, routing_doc
from tests.native_upstream import Reply, ScriptedUpstream
from tests.support import fixture

KEY_REF = {"ssm": "/switchboard/secrets/mock"}
OVERLOADED = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}


def start(
    gateway_factory: Any, mock: Any, native: ScriptedUpstream, models: dict[str, Any]
) -> RunningGateway:
    doc = routing_doc(mock.base_url, models)
    doc["providers"]["anthropic"] = {"kind": "anthropic", "base_url": native.url, "api_key": KEY_REF}
    return gateway_factory(doc=doc)


_clients: list[anthropic.Anthropic] = []


@pytest.fixture(autouse=True)
def _close_clients() -> Iterator[None]:
    """Close the test's SDK clients: a stream read to ``message_stop`` may leave its connection
    open while the gateway settles, and a client left to the garbage collector warns."""
    yield
    while _clients:
        _clients.pop().close()


def client(gw: RunningGateway) -> anthropic.Anthropic:
    made = anthropic.Anthropic(base_url=gw.base_url, api_key=API_KEY, max_retries=0)
    _clients.append(made)
    return made


def to(*targets: tuple[str, str], **route: Any) -> dict[str, Any]:
    return {"targets": [{"provider": p, "model": m} for p, m in targets], **route}


def test_anthropic_target_passes_the_body_through(gateway_factory, mock, native) -> None:  # type: ignore[no-untyped-def]
    upstream_answer = fixture("anthropic", "chat_tools")["anthropic_response"]
    native.script("claude-real", Reply(json=upstream_answer))
    gw = start(gateway_factory, mock, native, {"claude": to(("anthropic", "claude-real"))})
    body = {
        "model": "claude",
        "max_tokens": 512,
        "system": [{"type": "text", "text": "Policy...", "cache_control": {"type": "ephemeral"}}],
        "messages": [{"role": "user", "content": "Weather in New York?"}],
        "tools": [{"name": "get_weather", "input_schema": {"type": "object"}}],
        "thinking": {"type": "enabled", "budget_tokens": 1024},  # Anthropic-only: must survive untouched
        "service_tier": "auto",
    }
    raw = client(gw).messages.with_raw_response.create(
        **body, extra_body={"top_k": 3}, extra_headers={"anthropic-beta": "tools-2024-05-16"}
    )
    body["top_k"] = 3
    message = raw.parse()
    assert message.stop_reason == "tool_use"
    assert message.content[1].type == "tool_use" and message.content[1].input == {"location": "New York, NY"}
    assert json.loads(raw.http_response.content) == upstream_answer  # the answer as Anthropic sent it
    sent = native.requests[-1]
    assert sent["json"] == {**body, "model": "claude-real"}  # only the model replaced
    assert sent["headers"]["x-api-key"] == "mock-provider-key"
    # the caller's API version and betas go along with its body
    assert sent["headers"]["anthropic-version"] == raw.http_request.headers["anthropic-version"]
    assert sent["headers"]["anthropic-beta"] == "tools-2024-05-16"
    assert raw.headers["x-switchboard-provider"] == "anthropic"


def test_anthropic_target_stream_events_pass_through(gateway_factory, mock, native) -> None:  # type: ignore[no-untyped-def]
    case = fixture("anthropic", "stream_tools")
    native.script("claude-real", Reply(sse=case["anthropic_stream"]))
    gw = start(gateway_factory, mock, native, {"claude": to(("anthropic", "claude-real"))})
    with client(gw).messages.stream(
        model="claude", max_tokens=100, messages=[{"role": "user", "content": "weather?"}]
    ) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == "Okay, let's check the weather for San Francisco, CA:"
    assert final.content[1].input == {"location": "San Francisco, CA", "unit": "fahrenheit"}
    assert final.usage.output_tokens == 89
    # byte for byte: every upstream event reaches the client unchanged
    with httpx.stream(
        "POST",
        gw.v1 + "/messages",
        headers=gw.headers(),
        timeout=30,
        json={
            "model": "claude",
            "max_tokens": 100,
            "stream": True,
            "messages": [{"role": "user", "content": "x"}],
        },
    ) as response:
        received = [json.loads(line[6:]) for line in response.iter_lines() if line.startswith("data: ")]
    assert received == [data for _, data in case["anthropic_stream"]]


def test_openai_compatible_target_is_converted(gateway_factory, mock, native) -> None:  # type: ignore[no-untyped-def]
    gw = start(gateway_factory, mock, native, {"echo": to(("mock", "echo")), "tools": to(("mock", "tools"))})
    sdk = client(gw)
    message = sdk.messages.create(
        model="echo", max_tokens=50, system="Be brief.", messages=[{"role": "user", "content": "hello there"}]
    )
    assert message.content[0].type == "text" and message.content[0].text == "echo: hello there"
    assert message.stop_reason == "end_turn"
    assert message.usage.input_tokens > 0 and message.usage.output_tokens > 0
    sent = mock.requests[-1]["json"]
    assert sent["messages"][0] == {"role": "system", "content": "Be brief."}
    assert sent["max_tokens"] == 50

    message = sdk.messages.create(
        model="tools",
        max_tokens=50,
        messages=[{"role": "user", "content": "weather?"}],
        tools=[
            {"name": "lookup", "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}
        ],
    )
    assert message.stop_reason == "tool_use"
    assert message.content[-1].type == "tool_use" and message.content[-1].input == {"city": "Paris"}

    with sdk.messages.stream(
        model="echo", max_tokens=50, messages=[{"role": "user", "content": "one two"}]
    ) as s:
        text = "".join(s.text_stream)
        final = s.get_final_message()
    assert text == "echo: one two"
    assert final.stop_reason == "end_turn" and final.usage.output_tokens > 0 and final.usage.input_tokens > 0


def test_a_mixed_family_chain_falls_back(gateway_factory, mock, native) -> None:  # type: ignore[no-untyped-def]
    native.script("claude-busy", Reply(529, json=OVERLOADED))
    gw = start(
        gateway_factory,
        mock,
        native,
        {"m": to(("anthropic", "claude-busy"), ("mock", "echo"), retry={"attempts": 1})},
    )
    raw = client(gw).messages.with_raw_response.create(
        model="m", max_tokens=20, messages=[{"role": "user", "content": "fall"}]
    )
    assert raw.parse().content[0].text == "echo: fall"  # type: ignore[union-attr]
    assert raw.headers["x-switchboard-trail"].split(",")[0].startswith("anthropic/claude-busy;server;529")
    with client(gw).messages.stream(
        model="m", max_tokens=20, messages=[{"role": "user", "content": "x y"}]
    ) as s:
        assert "".join(s.text_stream) == "echo: x y"


def test_errors_come_in_anthropic_shape(gateway_factory, mock, native) -> None:  # type: ignore[no-untyped-def]
    native.script("claude-busy", Reply(529, json=OVERLOADED))
    gw = start(
        gateway_factory, mock, native, {"busy": to(("anthropic", "claude-busy"), retry={"attempts": 1})}
    )
    sdk = client(gw)
    with pytest.raises(anthropic.NotFoundError) as missing:
        sdk.messages.create(model="nope", max_tokens=5, messages=[{"role": "user", "content": "x"}])
    assert missing.value.body["error"]["type"] == "not_found_error"  # type: ignore[index]
    with pytest.raises(anthropic.BadRequestError):
        sdk.messages.create(model="busy", max_tokens=0, messages=[{"role": "user", "content": "x"}])
    with pytest.raises(anthropic.AuthenticationError):
        anthropic.Anthropic(base_url=gw.base_url, api_key="wrong", max_retries=0).messages.create(
            model="busy", max_tokens=5, messages=[{"role": "user", "content": "x"}]
        )
    with pytest.raises(anthropic.APIStatusError) as failed:
        sdk.messages.create(model="busy", max_tokens=5, messages=[{"role": "user", "content": "x"}])
    assert failed.value.status_code == 502
    assert failed.value.body["error"]["type"] == "api_error"  # type: ignore[index]


def test_an_unconvertible_request_to_an_openai_target_is_a_400(gateway_factory, mock, native) -> None:  # type: ignore[no-untyped-def]
    gw = start(gateway_factory, mock, native, {"echo": to(("mock", "echo"))})
    with pytest.raises(anthropic.BadRequestError) as caught:
        client(gw).messages.create(
            model="echo",
            max_tokens=5,
            messages=[
                {
                    "role": "user",
                    "content": [
                        {
                            "type": "document",
                            "source": {"type": "text", "media_type": "text/plain", "data": "x"},
                        }
                    ],
                }
            ],
        )
    assert "mock/echo cannot serve this request" in str(caught.value)


def test_a_failure_after_output_ends_with_an_error_event(gateway_factory, mock, native) -> None:  # type: ignore[no-untyped-def]
    case = fixture("anthropic", "stream_error")
    native.script("claude-broken", Reply(sse=case["anthropic_stream"]))
    gw = start(gateway_factory, mock, native, {"m": to(("anthropic", "claude-broken"), ("mock", "echo"))})
    text: list[str] = []
    stream = client(gw).messages.stream(model="m", max_tokens=20, messages=[{"role": "user", "content": "x"}])
    with pytest.raises(anthropic.APIStatusError) as caught, stream as s:
        text.extend(s.text_stream)
    assert "".join(text) == "Hel"
    assert "failed after output began" in str(caught.value)
