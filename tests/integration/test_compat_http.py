"""OpenAI-compatible flavours through the gateway: Azure deployments, Gemini, adapted parameters."""

from __future__ import annotations

import json
from typing import Any

import openai

from tests.conftest import API_KEY, RunningGateway, routing_doc
from tests.native_upstream import Reply, ScriptedUpstream
from tests.support import fixture

KEY = {"ssm": "/switchboard/secrets/mock"}


def start(
    gateway_factory: Any,
    mock: Any,
    native: ScriptedUpstream,
    providers: dict[str, Any],
    models: dict[str, Any],
) -> RunningGateway:
    doc = routing_doc(mock.base_url, models)
    doc["providers"].update(providers)
    return gateway_factory(doc=doc)


def sdk(gw: RunningGateway) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.v1, api_key=API_KEY, max_retries=0)


def test_azure_through_the_gateway(gateway_factory, mock, native) -> None:  # type: ignore[no-untyped-def]
    case = fixture("azure", "chat")
    native.script(
        "gpt-4o-prod",
        Reply(json=case["upstream_response"], expect=case["upstream_request"]),
        Reply(chunks=case["upstream_stream"]),
    )
    azure = {"kind": "azure", "base_url": native.url, "api_version": "2024-10-21", "api_key": KEY}
    gw = start(
        gateway_factory,
        mock,
        native,
        {"azure": azure},
        {"gpt4o": {"targets": [{"provider": "azure", "model": "gpt-4o-prod"}]}},
    )
    done = sdk(gw).chat.completions.create(**case["openai_request"])
    assert done.choices[0].message.content == "Hello! How can I help you today?"
    sent = native.requests[-1]
    assert sent["path"] == "/openai/deployments/gpt-4o-prod/chat/completions"
    assert sent["query"] == {"api-version": "2024-10-21"}
    assert sent["headers"]["api-key"] == "mock-provider-key" and "authorization" not in sent["headers"]
    chunks = list(sdk(gw).chat.completions.create(**case["openai_request"], stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "Hello"
    assert all(c.object == "chat.completion.chunk" for c in chunks)


def test_parameters_a_provider_rejects_are_adapted(gateway_factory, mock, native) -> None:  # type: ignore[no-untyped-def]
    """A Mistral-flavoured upstream: seed and max_completion_tokens renamed, user and logit_bias dropped."""
    answer = {
        "id": "x",
        "object": "chat.completion",
        "created": 1,
        "model": "mistral-small-latest",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}],
    }
    native.script("mistral-small-latest", Reply(json=answer))
    mistral = {
        "kind": "openai",
        "base_url": native.url + "/v1",
        "api_key": KEY,
        "param_rules": "mistral",
        "unsupported_params": ["presence_penalty"],
    }
    gw = start(
        gateway_factory,
        mock,
        native,
        {"mistral": mistral},
        {"small": {"targets": [{"provider": "mistral", "model": "mistral-small-latest"}]}},
    )
    sdk(gw).chat.completions.create(
        model="small",
        messages=[{"role": "user", "content": "hi"}],
        seed=7,
        max_completion_tokens=20,
        user="u1",
        logit_bias={"1": 1},
        presence_penalty=0.1,
        temperature=0.3,
    )
    assert native.requests[-1]["json"] == {
        "model": "mistral-small-latest",
        "messages": [{"role": "user", "content": "hi"}],
        "random_seed": 7,
        "max_tokens": 20,
        "temperature": 0.3,
    }


def test_n_above_one_to_a_single_choice_upstream_is_a_400(gateway_factory, mock, native) -> None:  # type: ignore[no-untyped-def]
    ollama = {"kind": "openai", "base_url": native.url + "/v1", "param_rules": "ollama"}
    gw = start(
        gateway_factory,
        mock,
        native,
        {"ollama": ollama},
        {"local": {"targets": [{"provider": "ollama", "model": "llama3.2"}]}},
    )
    try:
        sdk(gw).chat.completions.create(model="local", n=2, messages=[{"role": "user", "content": "hi"}])
    except openai.BadRequestError as exc:
        error = json.loads(exc.response.text)["error"]
    else:
        raise AssertionError("expected a 400")
    assert error["param"] == "n" and "ollama returns one choice" in error["message"]
    assert native.requests == []


def test_an_upstream_cookie_never_reaches_another_request(gateway_factory, mock, native) -> None:  # type: ignore[no-untyped-def]
    # One HTTP client serves every caller: a cookie one caller's answer set must not ride on the next.
    answer = fixture("azure", "chat")["upstream_response"]
    native.script("shared-model", Reply(json=answer, headers={"set-cookie": "session=caller-one; Path=/"}))
    compat = {"kind": "openai", "base_url": native.url + "/v1", "api_key": KEY}
    gw = start(
        gateway_factory,
        mock,
        native,
        {"compat": compat},
        {"shared": {"targets": [{"provider": "compat", "model": "shared-model"}]}},
    )
    for _ in range(2):
        sdk(gw).chat.completions.create(model="shared", messages=[{"role": "user", "content": "hi"}])
    assert [r["path"] for r in native.requests] == ["/v1/chat/completions"] * 2
    assert all("cookie" not in r["headers"] for r in native.requests)
