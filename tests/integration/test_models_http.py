"""GET /v1/models with what the routing document knows, and the modalities a route declares."""

from __future__ import annotations

from typing import Any

import anthropic
import httpx
import openai
import pytest

from tests.conftest import API_KEY, RunningGateway, routing_doc
from tests.support import validate_openai

PNG = (
    "data:image/png;base64,"
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="
)
MODELS = {
    "vision": {
        "owned_by": "openai",
        "description": "GPT-4o with a fallback",
        "modalities": ["text", "image"],
        "max_output_tokens": 16384,
        "targets": [
            {"provider": "mock", "model": "echo", "context_window": 128000},
            {"provider": "backup", "model": "echo", "context_window": 32000},
        ],
    },
    "text-only": {"modalities": ["text"], "targets": [{"provider": "mock", "model": "echo"}]},
    "embed": {"mode": "embeddings", "targets": [{"provider": "mock", "model": "e", "dimensions": 8}]},
}


@pytest.fixture
def gw(gateway_factory: Any, mock: Any) -> RunningGateway:
    return gateway_factory(doc=routing_doc(mock.base_url, MODELS))


def test_the_listing_says_what_the_document_knows(gw: RunningGateway) -> None:
    response = httpx.get(gw.v1 + "/models", headers=gw.headers(), timeout=10)
    body = response.json()
    validate_openai("ListModelsResponse", body)
    cards = {m["id"]: m for m in body["data"]}
    assert cards["vision"] == {
        "id": "vision",
        "object": "model",
        "created": 0,
        "owned_by": "openai",
        "context_window": 32000,  # the window every target can hold
        "max_output_tokens": 16384,
        "modalities": ["image", "text"],
        "endpoints": ["/v1/chat/completions", "/v1/messages"],
        "description": "GPT-4o with a fallback",
    }
    assert cards["text-only"] == {
        "id": "text-only",
        "object": "model",
        "created": 0,
        "owned_by": "mock",
        "modalities": ["text"],
        "endpoints": ["/v1/chat/completions", "/v1/messages"],
    }
    assert cards["embed"]["dimensions"] == 8 and cards["embed"]["endpoints"] == ["/v1/embeddings"]
    sdk = openai.OpenAI(base_url=gw.v1, api_key=API_KEY, max_retries=0)
    assert [m.id for m in sdk.models.list()] == ["embed", "text-only", "vision"]
    assert sdk.models.retrieve("embed").owned_by == "mock"


def test_images_to_a_text_only_alias_are_a_400_before_any_upstream_call(
    gw: RunningGateway, mock: Any
) -> None:
    sdk = openai.OpenAI(base_url=gw.v1, api_key=API_KEY, max_retries=0)
    before = len(mock.requests)
    content = [{"type": "text", "text": "what is this?"}, {"type": "image_url", "image_url": {"url": PNG}}]
    with pytest.raises(openai.BadRequestError) as caught:
        sdk.chat.completions.create(model="text-only", messages=[{"role": "user", "content": content}])
    assert caught.value.code == "unsupported_modality"
    assert "accepts text input only; this request has image input" in caught.value.message
    done = sdk.chat.completions.create(model="vision", messages=[{"role": "user", "content": content}])
    assert done.choices[0].message.content is not None
    assert len(mock.requests) == before + 1  # only the vision request reached an upstream

    image = {
        "type": "image",
        "source": {"type": "base64", "media_type": "image/png", "data": PNG.split(",")[1]},
    }
    client = anthropic.Anthropic(base_url=gw.base_url, api_key=API_KEY, max_retries=0)
    with pytest.raises(anthropic.BadRequestError):
        client.messages.create(
            model="text-only", max_tokens=10, messages=[{"role": "user", "content": [image]}]
        )
