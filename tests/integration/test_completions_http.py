"""POST /v1/completions (legacy text completions) through the official OpenAI client, over HTTP:
passed through to OpenAI-compatible and Azure targets, streaming and not; a clear 400 naming
/v1/chat/completions for an alias served by Anthropic, Bedrock or Gemini only."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest

from tests.conftest import API_KEY, RunningGateway, routing_doc
from tests.native_upstream import Reply, ScriptedUpstream

KEY_REF = {"ssm": "/switchboard/secrets/mock"}


def to(*targets: tuple[str, str], **route: Any) -> dict[str, Any]:
    return {"targets": [{"provider": p, "model": m} for p, m in targets], **route}


MODELS = {
    "instruct": to(("mock", "echo")),
    "fallback": to(("mock", "fail-503"), ("backup", "echo"), retry={"attempts": 1}),
    "claude": to(("anthropic", "claude-real")),
    "gemini": to(("gemini", "gemini-2.5-flash")),
    "mixed": to(("anthropic", "claude-real"), ("mock", "echo")),
    "breaks": to(("mock", "break-2+chunks-5")),
    "azure-instruct": to(("azure", "instruct-prod")),
    "garbage": to(("mock", "garbage"), ("backup", "echo"), retry={"attempts": 1}),
    "cut-early": to(("mock", "break-0"), ("backup", "echo"), retry={"attempts": 1}),
}


def start(gateway_factory: Any, mock: Any, native: ScriptedUpstream) -> RunningGateway:
    doc = routing_doc(mock.base_url, MODELS)
    doc["providers"]["anthropic"] = {"kind": "anthropic", "base_url": native.url, "api_key": KEY_REF}
    doc["providers"]["gemini"] = {"kind": "gemini", "base_url": native.url + "/v1", "api_key": KEY_REF}
    doc["providers"]["azure"] = {
        "kind": "azure",
        "base_url": native.url,
        "api_version": "2024-10-21",
        "api_key": KEY_REF,
    }
    return gateway_factory(doc=doc)


@pytest.fixture
def sdk(
    gateway_factory: Any, mock: Any, native: ScriptedUpstream
) -> Iterator[tuple[openai.OpenAI, RunningGateway]]:
    gw = start(gateway_factory, mock, native)
    with openai.OpenAI(base_url=gw.v1, api_key=API_KEY, max_retries=0) as client:
        yield client, gw


def test_a_completion_passes_through(sdk, mock) -> None:  # type: ignore[no-untyped-def]
    client, _gw = sdk
    raw = client.completions.with_raw_response.create(
        model="instruct", prompt="say this is a test", max_tokens=7, extra_body={"suffix": "!", "seed": 3}
    )
    completion = raw.parse()
    assert completion.object == "text_completion" and completion.id.startswith("cmpl-")
    assert completion.choices[0].text == "echo: say this is a test"
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage is not None and completion.usage.completion_tokens == 6
    assert json.loads(raw.http_response.content)["usage"]["cost"] is None  # no price configured
    sent = mock.requests[-1]
    assert sent["path"] == "/v1/completions"
    # the body as the client sent it, the routed model in place of the alias
    assert sent["json"] == {
        "model": "echo",
        "prompt": "say this is a test",
        "max_tokens": 7,
        "suffix": "!",
        "seed": 3,
    }
    assert sent["headers"]["authorization"] == "Bearer mock-provider-key"
    assert raw.headers["x-switchboard-provider"] == "mock" and raw.headers["x-switchboard-model"] == "echo"
    assert raw.headers["x-switchboard-attempts"] == "1"


def test_a_completion_falls_back_like_chat(sdk, mock) -> None:  # type: ignore[no-untyped-def]
    client, _gw = sdk
    raw = client.completions.with_raw_response.create(model="fallback", prompt=["one two"], max_tokens=5)
    assert raw.parse().choices[0].text == "echo: one two"
    assert raw.headers["x-switchboard-provider"] == "backup"
    assert raw.headers["x-switchboard-trail"].startswith("mock/fail-503;server;503")


def test_a_streamed_completion(sdk, mock) -> None:  # type: ignore[no-untyped-def]
    client, _gw = sdk
    chunks = list(client.completions.create(model="instruct", prompt="a b c", stream=True))
    assert "".join(c.choices[0].text for c in chunks if c.choices) == "echo: a b c"
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert all(c.usage is None for c in chunks)  # not asked for: the usage chunk is left out
    assert mock.requests[-1]["json"]["stream_options"] == {"include_usage": True}  # asked for, to settle


def test_a_streamed_completion_with_usage_carries_its_cost(sdk) -> None:  # type: ignore[no-untyped-def]
    client, _gw = sdk
    stream = client.completions.create(
        model="instruct", prompt="a b c", stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)
    last = chunks[-1]
    assert last.choices == [] and last.usage is not None
    assert (last.usage.prompt_tokens, last.usage.completion_tokens) == (7, 4)
    assert last.usage.model_extra == {"cost": None}  # no price configured: null, as on chat


def test_a_stream_broken_after_output_ends_in_an_error_event(sdk) -> None:  # type: ignore[no-untyped-def]
    _client, gw = sdk
    body = {"model": "breaks", "prompt": "x", "stream": True}
    with httpx.stream(
        "POST", gw.v1 + "/completions", json=body, headers=gw.headers(), timeout=30
    ) as response:
        lines = [line for line in response.iter_lines() if line.startswith("data: ")]
    assert response.status_code == 200
    last = json.loads(lines[-1][6:])
    assert last["error"]["code"] == "stream_interrupted"
    assert "[DONE]" not in lines[-1]


@pytest.mark.parametrize("alias", ["claude", "gemini"])
def test_a_target_without_text_completions_is_a_clear_400(sdk, native, alias: str) -> None:  # type: ignore[no-untyped-def]
    client, _gw = sdk
    with pytest.raises(openai.BadRequestError) as caught:
        client.completions.create(model=alias, prompt="hi")
    error = caught.value.body
    assert isinstance(error, dict)
    assert set(error) == {"message", "type", "param", "code"}  # OpenAI's error object
    assert error["type"] == "invalid_request_error" and error["code"] == "unsupported_endpoint"
    assert error["param"] == "model" and "/v1/chat/completions" in error["message"]
    assert native.requests == []  # nothing was sent upstream


def test_a_mixed_plan_skips_the_targets_without_text_completions(sdk, native) -> None:  # type: ignore[no-untyped-def]
    client, _gw = sdk
    raw = client.completions.with_raw_response.create(model="mixed", prompt="hello")
    assert raw.parse().choices[0].text == "echo: hello"
    assert raw.headers["x-switchboard-provider"] == "mock" and raw.headers["x-switchboard-attempts"] == "1"
    assert native.requests == []


def test_azure_serves_completions_at_its_deployment(sdk, native) -> None:  # type: ignore[no-untyped-def]
    client, _gw = sdk
    answer = {
        "id": "cmpl-az1",
        "object": "text_completion",
        "created": 1,
        "model": "gpt-35-turbo-instruct",
        "choices": [{"text": " yes", "index": 0, "logprobs": None, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4},
    }
    native.script("instruct-prod", Reply(json=answer))
    completion = client.completions.create(model="azure-instruct", prompt="ok?")
    assert completion.choices[0].text == " yes"
    sent = native.requests[-1]
    assert sent["path"] == "/openai/deployments/instruct-prod/completions"
    assert sent["query"] == {"api-version": "2024-10-21"}
    assert sent["headers"]["api-key"] == "mock-provider-key"


def test_bad_input_is_a_400_not_a_500(sdk) -> None:  # type: ignore[no-untyped-def]
    _client, gw = sdk
    for body in ({"prompt": "x"}, {"model": "instruct", "prompt": "x", "n": 0}, [1]):
        response = httpx.post(gw.v1 + "/completions", json=body, headers=gw.headers(), timeout=10)
        assert response.status_code == 400, response.text
        assert response.json()["error"]["type"] == "invalid_request_error"
    unknown = httpx.post(gw.v1 + "/completions", json={"model": "nope", "prompt": "x"}, headers=gw.headers())
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "model_not_found"


@pytest.mark.parametrize("stream", [False, True])
def test_a_malformed_answer_falls_back_invisibly(sdk, stream: bool) -> None:  # type: ignore[no-untyped-def]
    client, _gw = sdk
    if stream:
        chunks = list(client.completions.create(model="garbage", prompt="q", stream=True))
        assert "".join(c.choices[0].text for c in chunks if c.choices) == "echo: q"
    else:
        raw = client.completions.with_raw_response.create(model="garbage", prompt="q")
        assert raw.parse().choices[0].text == "echo: q" and raw.headers["x-switchboard-provider"] == "backup"


def test_a_stream_cut_before_any_text_falls_back_invisibly(sdk) -> None:  # type: ignore[no-untyped-def]
    _client, gw = sdk
    body = {"model": "cut-early", "prompt": "q", "stream": True}
    with httpx.stream(
        "POST", gw.v1 + "/completions", json=body, headers=gw.headers(), timeout=30
    ) as response:
        lines = [line for line in response.iter_lines() if line.startswith("data: ")]
    assert response.headers["x-switchboard-provider"] == "backup"
    assert lines[-1] == "data: [DONE]" and "error" not in "".join(lines)
    assert "".join(json.loads(line[6:])["choices"][0]["text"] for line in lines[:-1]) == "echo: q"
