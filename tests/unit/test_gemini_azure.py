"""Gemini (OpenAI-compatible endpoint) and Azure OpenAI: URLs, auth, adapted bodies, pass-through answers."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from switchboard.core.errors import AttemptFailed, ErrorClass
from switchboard.routing.document import ProviderConfig
from switchboard.upstream.providers import get

from tests.support import chat_call, fixture, validate_openai

GEMINI = {"kind": "gemini", "api_key": {"ssm": "/switchboard/secrets/gemini"}}
AZURE = {
    "kind": "azure",
    "base_url": "https://contoso.openai.azure.com",
    "api_version": "2024-10-21",
    "api_key": {"ssm": "/switchboard/secrets/azure"},
}


def replay(
    case: dict[str, Any], seen: list[httpx.Request], status: int = 200, body: Any = None
) -> httpx.MockTransport:
    async def sse() -> AsyncIterator[bytes]:
        for chunk in case["upstream_stream"]:
            yield f"data: {json.dumps(chunk)}\n\n".encode()
        yield b"data: [DONE]\n\n"

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if body is not None:
            return httpx.Response(status, json=body)
        if json.loads(request.content).get("stream"):
            return httpx.Response(200, headers={"content-type": "text/event-stream"}, content=sse())
        return httpx.Response(200, json=case["upstream_response"])

    return httpx.MockTransport(handler)


async def test_gemini_defaults_its_url_drops_what_it_rejects_and_keeps_extensions() -> None:
    case = fixture("gemini", "chat_tools")
    seen: list[httpx.Request] = []
    async with httpx.AsyncClient(transport=replay(case, seen)) as http:
        call = chat_call(case["openai_request"], GEMINI, case["target_model"], http=http)
        completion, raw = await get("gemini").complete(call)
    request = seen[0]
    assert str(request.url) == "https://generativelanguage.googleapis.com/v1beta/openai/chat/completions"
    assert request.headers["authorization"] == "Bearer sk-provider-key"
    assert json.loads(request.content) == case["upstream_request"]
    assert raw is not None and json.loads(raw) == case["upstream_response"]  # passed through as sent
    assert completion.choices[0].finish_reason == "tool_calls"


def test_gemini_needs_a_key() -> None:
    assert (
        ProviderConfig.model_validate(GEMINI).base_url
        == "https://generativelanguage.googleapis.com/v1beta/openai"
    )
    with pytest.raises(ValueError, match="Gemini API key"):
        ProviderConfig.model_validate({"kind": "gemini"})


async def test_azure_deployment_url_api_version_and_api_key_header() -> None:
    case = fixture("azure", "chat")
    seen: list[httpx.Request] = []
    async with httpx.AsyncClient(transport=replay(case, seen)) as http:
        call = chat_call(case["openai_request"], AZURE, case["target_model"], http=http)
        completion, raw = await get("azure").complete(call)
    request = seen[0]
    assert str(request.url) == (
        "https://contoso.openai.azure.com/openai/deployments/gpt-4o-prod/chat/completions?api-version=2024-10-21"
    )
    assert request.headers["api-key"] == "sk-provider-key"
    assert "authorization" not in request.headers
    assert json.loads(request.content) == case["upstream_request"]
    assert raw is not None and json.loads(raw)["prompt_filter_results"]  # Azure's extensions reach the client
    validate_openai("CreateChatCompletionResponse", json.loads(raw))
    assert completion.choices[0].message.content == "Hello! How can I help you today?"


async def test_azure_v1_api_without_api_version() -> None:
    case = fixture("azure", "chat")
    seen: list[httpx.Request] = []
    provider = {k: v for k, v in AZURE.items() if k != "api_version"}
    async with httpx.AsyncClient(transport=replay(case, seen)) as http:
        await get("azure").complete(chat_call(case["openai_request"], provider, "gpt-4o-prod", http=http))
    assert str(seen[0].url) == "https://contoso.openai.azure.com/openai/v1/chat/completions"
    assert json.loads(seen[0].content)["model"] == "gpt-4o-prod"


async def test_azure_stream_with_its_filter_results_chunk() -> None:
    case = fixture("azure", "chat")
    seen: list[httpx.Request] = []
    request = {**case["openai_request"], "stream": True}
    async with httpx.AsyncClient(transport=replay(case, seen)) as http:
        chunks = [c async for c in get("azure").stream(chat_call(request, AZURE, "gpt-4o-prod", http=http))]
    assert [c.chunk.choices[0].delta.get("content") for c in chunks if c.chunk.choices] == ["", "Hello", None]
    assert chunks[-1].chunk.choices[0].finish_reason == "stop"
    assert seen[0].headers["accept"] == "text/event-stream"


async def test_azure_content_filter_is_content_policy() -> None:
    case = fixture("azure", "chat")
    error = case["content_filter_error"]
    async with httpx.AsyncClient(transport=replay(case, [], error["status"], error["body"])) as http:
        with pytest.raises(AttemptFailed) as caught:
            await get("azure").complete(chat_call(case["openai_request"], AZURE, "gpt-4o-prod", http=http))
    assert caught.value.error_class is ErrorClass.CONTENT_POLICY


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"kind": "azure", "api_key": {"ssm": "/k"}}, "needs base_url"),
        (
            {"kind": "azure", "base_url": "https://x.openai.azure.com/openai", "api_key": {"ssm": "/k"}},
            "without /openai",
        ),
        ({"kind": "azure", "base_url": "https://x.openai.azure.com"}, "needs an api_key"),
    ],
)
def test_azure_config_is_checked(entry: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ProviderConfig.model_validate(entry)
