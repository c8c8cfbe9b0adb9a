"""The gateway over HTTP with the official OpenAI SDK and raw httpx: moto for AWS, the mock upstream.

Chat completions (``http.endpoints.chat``) through the front door and its event stream
(``http.asgi``): buffered, streamed as it arrives, and every error in OpenAI's shape."""

from __future__ import annotations

import itertools
import json
import time

import httpx
import openai
import pytest

from tests.conftest import API_KEY, RunningGateway


@pytest.fixture
def gw(gateway_factory) -> RunningGateway:  # type: ignore[no-untyped-def]
    return gateway_factory(
        models={
            "echo": {"targets": [{"provider": "mock", "model": "echo"}]},
            "tools": {"targets": [{"provider": "mock", "model": "tools"}]},
            "paced": {"targets": [{"provider": "mock", "model": "echo+delay-60"}]},
        }
    )


def sdk(gw: RunningGateway, **kwargs: object) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.v1, api_key=API_KEY, max_retries=0, **kwargs)  # type: ignore[arg-type]


def test_models_list_with_the_sdk(gw: RunningGateway) -> None:
    ids = [m.id for m in sdk(gw).models.list()]
    assert ids == ["echo", "paced", "tools"]
    assert sdk(gw).models.retrieve("echo").id == "echo"


def test_non_streaming_completion_with_the_sdk(gw: RunningGateway, mock) -> None:  # type: ignore[no-untyped-def]
    raw = sdk(gw).chat.completions.with_raw_response.create(
        model="echo", messages=[{"role": "user", "content": "hello there"}]
    )
    completion = raw.parse()
    assert completion.choices[0].message.content == "echo: hello there"
    assert completion.usage is not None and completion.usage.completion_tokens > 0
    assert raw.headers["x-switchboard-provider"] == "mock"
    assert raw.headers["x-switchboard-model"] == "echo"
    assert raw.headers["x-switchboard-attempts"] == "1"
    assert raw.headers["x-switchboard-trail"].startswith("mock/echo;ok;200;")
    assert raw.headers["x-request-id"].startswith("req_")
    assert raw.headers["x-switchboard-routing-version"]
    # the upstream saw the gateway's provider key, not the client's key
    sent = mock.requests[-1]
    assert sent["headers"]["authorization"] == "Bearer mock-provider-key"
    assert sent["json"]["model"] == "echo"


def test_streaming_with_the_sdk_yields_chunks(gw: RunningGateway) -> None:
    stream = sdk(gw).chat.completions.create(
        model="echo",
        messages=[{"role": "user", "content": "one two three"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "echo: one two three"
    assert chunks[-1].usage is not None and chunks[-1].usage.total_tokens > 0


def test_parameters_and_unknown_fields_pass_through(gw: RunningGateway, mock) -> None:  # type: ignore[no-untyped-def]
    client = sdk(gw)
    tools = [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}]
    done = client.chat.completions.create(
        model="tools", messages=[{"role": "user", "content": "weather?"}], tools=tools, tool_choice="auto"
    )
    call = done.choices[0].message.tool_calls[0]  # type: ignore[index]
    assert call.function.name == "lookup" and done.choices[0].finish_reason == "tool_calls"

    done = client.chat.completions.create(
        model="echo",
        messages=[{"role": "user", "content": "a b c d e f"}],
        n=2,
        stop=["zzz"],
        max_completion_tokens=50,
        response_format={"type": "json_object"},
        extra_body={"my_vendor_flag": {"x": 1}, "seed": 7},
    )
    assert len(done.choices) == 2
    assert json.loads(done.choices[0].message.content or "")["echo"]
    sent = mock.requests[-1]["json"]
    assert sent["n"] == 2 and sent["stop"] == ["zzz"] and sent["max_completion_tokens"] == 50
    assert sent["response_format"] == {"type": "json_object"}
    assert sent["my_vendor_flag"] == {"x": 1} and sent["seed"] == 7

    done = client.chat.completions.create(
        model="echo", messages=[{"role": "user", "content": "a b c d e f"}], max_tokens=2
    )
    assert done.choices[0].finish_reason == "length"
    assert mock.requests[-1]["json"]["max_tokens"] == 2


def test_streamed_tool_call_arguments_reassemble(gw: RunningGateway) -> None:
    stream = sdk(gw).chat.completions.create(
        model="tools",
        messages=[{"role": "user", "content": "weather?"}],
        tools=[{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}],
        stream=True,
    )
    args = ""
    name = None
    for chunk in stream:
        for tc in chunk.choices[0].delta.tool_calls or [] if chunk.choices else []:
            name = tc.function.name or name  # type: ignore[union-attr]
            args += tc.function.arguments or ""  # type: ignore[union-attr]
    assert name == "get_weather"
    assert json.loads(args) == {"city": "Paris"}


def test_stream_is_forwarded_as_it_arrives(gw: RunningGateway) -> None:
    """The mock waits 60 ms between chunks; the client must see the same spacing, not one burst."""
    body = {"model": "paced", "messages": [{"role": "user", "content": "a b c d e"}], "stream": True}
    arrivals: list[float] = []
    with (
        httpx.Client(timeout=10) as client,
        client.stream("POST", gw.v1 + "/chat/completions", json=body, headers=gw.headers()) as response,
    ):
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        for line in response.iter_lines():
            if line.startswith("data: {"):
                arrivals.append(time.monotonic())
    # role chunk, five words 60 ms apart, then the finish chunk at once
    gaps = [b - a for a, b in itertools.pairwise(arrivals[1:-1])]
    assert len(gaps) >= 4
    assert min(gaps) > 0.03, gaps


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        (b"{not json", 400, "invalid_json"),
        (b"[1, 2]", 400, "invalid_json"),
        (b'{"model": "echo"}', 400, "invalid_value"),
        (b'{"model": "echo", "messages": [{"role": "wizard", "content": "x"}]}', 400, "invalid_value"),
        (b'{"model": "echo", "messages": [{"role": "user", "content": "x"}], "n": 0}', 400, "invalid_value"),
        (b'{"model": "nope", "messages": [{"role": "user", "content": "x"}]}', 404, "model_not_found"),
    ],
)
def test_bad_requests_get_openai_shaped_errors(
    gw: RunningGateway, body: bytes, status: int, code: str
) -> None:
    response = httpx.post(gw.v1 + "/chat/completions", content=body, headers=gw.headers())
    assert response.status_code == status
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["code"] == code
    assert "Traceback" not in response.text
    if status == 404:
        assert "echo, paced, tools" in error["message"]


def test_sdk_raises_typed_errors(gw: RunningGateway) -> None:
    with pytest.raises(openai.NotFoundError) as info:
        sdk(gw).chat.completions.create(model="missing", messages=[{"role": "user", "content": "x"}])
    assert info.value.code == "model_not_found"
    bad = openai.OpenAI(base_url=gw.v1, api_key="sk-wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad.models.list()


def test_authentication(gw: RunningGateway) -> None:
    url = gw.v1 + "/chat/completions"
    body = {"model": "echo", "messages": [{"role": "user", "content": "x"}]}
    missing = httpx.post(url, json=body)
    assert missing.status_code == 401 and missing.json()["error"]["code"] == "missing_api_key"
    wrong = httpx.post(url, json=body, headers={"authorization": "Bearer sk-nope-123456789"})
    assert wrong.status_code == 401 and "sk-nope" not in wrong.text
    assert httpx.post(url, json=body, headers={"x-api-key": API_KEY}).status_code == 200


def test_oversized_body_is_413(gateway_factory) -> None:  # type: ignore[no-untyped-def]
    gw = gateway_factory(max_body_bytes=2048)
    big = {"model": "echo", "messages": [{"role": "user", "content": "x" * 4096}]}
    response = httpx.post(gw.v1 + "/chat/completions", json=big, headers=gw.headers())
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "payload_too_large"

    def chunked():  # no content-length: the limit holds while reading
        yield b'{"model": "echo", "messages": [{"role": "user", "content": "'
        yield b"y" * 4096
        yield b'"}]}'

    response = httpx.post(gw.v1 + "/chat/completions", content=chunked(), headers=gw.headers())
    assert response.status_code == 413


def test_a_unicode_target_model_name_survives_the_headers(gateway_factory) -> None:  # type: ignore[no-untyped-def]
    gw = gateway_factory(models={"u": {"targets": [{"provider": "mock", "model": "echo+modèle-ü"}]}})
    response = httpx.post(
        gw.v1 + "/chat/completions",
        json={"model": "u", "messages": [{"role": "user", "content": "hi"}]},
        headers=gw.headers(),
    )
    assert response.status_code == 200
    assert response.headers["x-switchboard-model"] == "echo+mod%C3%A8le-%C3%BC"
    assert "mod%C3%A8le" in response.headers["x-switchboard-trail"]
