"""POST /v1/responses with the official OpenAI client: converted through chat, and passed through."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest

from tests.conftest import API_KEY, RunningGateway, routing_doc
from tests.native_upstream import Reply, ScriptedUpstream
from tests.support import fixture

KEY_REF = {"ssm": "/switchboard/secrets/mock"}
WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "The weather in a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}

_clients: list[openai.OpenAI] = []


@pytest.fixture(autouse=True)
def _close_clients() -> Iterator[None]:
    yield
    while _clients:
        _clients.pop().close()


def client(gw: RunningGateway, key: str = API_KEY) -> openai.OpenAI:
    made = openai.OpenAI(base_url=gw.v1, api_key=key, max_retries=0)
    _clients.append(made)
    return made


def to(*targets: tuple[str, str], **route: Any) -> dict[str, Any]:
    return {"targets": [{"provider": p, "model": m} for p, m in targets], **route}


def start(
    gateway_factory: Any, mock: Any, native: ScriptedUpstream, models: dict[str, Any]
) -> RunningGateway:
    """The mock twice: ``mock`` (chat only, converted) and ``oai`` (declares the Responses API:
    passed through); and the scripted Anthropic upstream."""
    doc = routing_doc(mock.base_url, models)
    doc["providers"]["oai"] = {
        "kind": "openai",
        "base_url": mock.base_url,
        "api_key": KEY_REF,
        "responses": True,
    }
    doc["providers"]["anthropic"] = {"kind": "anthropic", "base_url": native.url, "api_key": KEY_REF}
    return gateway_factory(doc=doc)


MODELS = {
    "echo": to(("mock", "echo")),
    "tools": to(("mock", "tools")),
    "pass": to(("oai", "echo")),
    "pass-tools": to(("oai", "tools")),
    "claude": to(("anthropic", "claude-real")),
}


@pytest.fixture
def gw(gateway_factory: Any, mock: Any, native: ScriptedUpstream) -> RunningGateway:
    return start(gateway_factory, mock, native, MODELS)


def test_converted_text_answer(gw: RunningGateway, mock: Any) -> None:
    response = client(gw).responses.create(model="echo", input="hello there", instructions="Be brief.")
    assert response.output_text == "echo: hello there"
    assert response.status == "completed" and response.id.startswith("resp_")
    assert response.usage is not None and response.usage.input_tokens > 0 and response.usage.output_tokens > 0
    sent = mock.requests[-1]
    assert sent["path"] == "/v1/chat/completions"
    assert sent["json"]["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "hello there"},
    ]
