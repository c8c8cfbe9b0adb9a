"""POST /v1/embeddings with the OpenAI SDK: routing, fallback across families, dimension guard."""

from __future__ import annotations

from typing import Any

import httpx
import openai
import pytest

from tests.conftest import API_KEY, RunningGateway, routing_doc
from tests.native_upstream import Reply, ScriptedUpstream

TITAN = "amazon.titan-embed-text-v2:0"


def start(
    gateway_factory: Any, mock: Any, native: ScriptedUpstream, models: dict[str, Any]
) -> RunningGateway:
    doc = routing_doc(mock.base_url, models)
    doc["providers"]["bedrock"] = {"kind": "bedrock", "region": "us-east-1", "base_url": native.url}
    return gateway_factory(doc=doc)


def embed_route(*targets: tuple[str, str], dims: int = 8, **route: Any) -> dict[str, Any]:
    return {
        "mode": "embeddings",
        "targets": [{"provider": p, "model": m, "dimensions": dims} for p, m in targets],
        **route,
    }


def sdk(gw: RunningGateway) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.v1, api_key=API_KEY, max_retries=0)


def test_embeddings_with_the_sdk_and_fallback(gateway_factory, mock, native) -> None:  # type: ignore[no-untyped-def]
    gw = start(
        gateway_factory, mock, native, {"embed": embed_route(("mock", "fail-503"), ("backup", "text-embed"))}
    )
    raw = sdk(gw).embeddings.with_raw_response.create(
        model="embed", input=["one", "two three"]
    )  # base64 by default
    result = raw.parse()
    assert [len(item.embedding) for item in result.data] == [8, 8]
    assert result.usage.prompt_tokens > 0
    assert raw.headers["x-switchboard-provider"] == "backup"
    assert [t.split(";")[1] for t in raw.headers["x-switchboard-trail"].split(",")] == [
        "server",
        "server",
        "ok",
    ]
    assert mock.requests[-1]["json"]["model"] == "text-embed"


def test_openai_compatible_falls_back_to_bedrock_titan(gateway_factory, mock, native) -> None:  # type: ignore[no-untyped-def]
    vector = [0.125] * 8
    native.script(TITAN, Reply(json={"embedding": vector, "inputTextTokenCount": 3}))
    gw = start(
        gateway_factory,
        mock,
        native,
        {"embed": embed_route(("mock", "fail-500"), ("bedrock", TITAN), retry={"attempts": 1})},
    )
    result = sdk(gw).embeddings.create(model="embed", input="hello there", encoding_format="float")
    assert result.data[0].embedding == vector
    assert result.usage.prompt_tokens == 3 and result.model == TITAN
    sent = native.requests[-1]
    assert sent["path"] == f"/model/{TITAN}/invoke"
    assert sent["json"] == {"inputText": "hello there", "dimensions": 8, "normalize": True}


def test_vectors_of_the_wrong_length_never_reach_the_client(gateway_factory, mock, native) -> None:  # type: ignore[no-untyped-def]
    gw = start(
        gateway_factory,
        mock,
        native,
        {"embed": embed_route(("mock", "text-embed"), dims=16, retry={"attempts": 1})},
    )
    response = httpx.post(
        gw.v1 + "/embeddings", headers=gw.headers(), timeout=30, json={"model": "embed", "input": "x"}
    )
    assert response.status_code == 502
    assert "server" in response.json()["error"]["message"]


def test_dimensions_other_than_the_routes_are_a_400(gateway_factory, mock, native) -> None:  # type: ignore[no-untyped-def]
    gw = start(gateway_factory, mock, native, {"embed": embed_route(("mock", "text-embed"))})
    with pytest.raises(openai.BadRequestError) as caught:
        sdk(gw).embeddings.create(model="embed", input="x", dimensions=256)
    assert "must be 8" in str(caught.value)


@pytest.mark.parametrize("field", [{"models": ["embed"]}, {"provider": {"order": ["mock"]}}])
def test_routing_overrides_are_refused_and_never_forwarded(gateway_factory, mock, native, field) -> None:  # type: ignore[no-untyped-def]
    """Issue 15: OpenRouter's ``models`` and ``provider`` mean nothing on embeddings (no routing
    rules there): a 400 naming the field, and the upstream never sees them."""
    gw = start(gateway_factory, mock, native, {"embed": embed_route(("mock", "text-embed"))})
    before = len(mock.requests)
    response = httpx.post(
        gw.v1 + "/embeddings",
        headers=gw.headers(),
        timeout=30,
        json={"model": "embed", "input": "x", **field},
    )
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert (error["param"], error["code"]) == (next(iter(field)), "unsupported_parameter")
    assert len(mock.requests) == before


def test_modes_do_not_cross(gateway_factory, mock, native) -> None:  # type: ignore[no-untyped-def]
    gw = start(
        gateway_factory,
        mock,
        native,
        {
            "embed": embed_route(("mock", "text-embed")),
            "chat": {"targets": [{"provider": "mock", "model": "echo"}]},
        },
    )
    with pytest.raises(openai.BadRequestError) as caught:
        sdk(gw).embeddings.create(model="chat", input="x")
    assert "use /v1/chat/completions" in str(caught.value)
    with pytest.raises(openai.BadRequestError) as caught:
        sdk(gw).chat.completions.create(model="embed", messages=[{"role": "user", "content": "x"}])
    assert "use /v1/embeddings" in str(caught.value)
    with pytest.raises(openai.BadRequestError):
        sdk(gw).embeddings.create(model="embed", input=[])
