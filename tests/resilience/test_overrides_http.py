"""Per-request overrides (``models``, ``provider``) through the gateway, with the official SDK.

Denied by default with a 403 naming the field; allowed per key (``overrides`` on the key record);
never forwarded: the mock records every body it receives, and none holds ``models`` or ``provider``.
"""

from __future__ import annotations

import uuid
from typing import Any

import anthropic
import boto3
import httpx
import openai
import pytest
from switchboard.limits.keys import KeyStore
from switchboard.limits.table import Table
from switchboard.routing.document import RoutingDocument
from switchboard.routing.overrides import ProviderPreferences, apply
from switchboard.routing.planner import plan

from tests.conftest import routing_doc

MSG = [{"role": "user", "content": "ping pong"}]


def models(tag: str) -> dict[str, Any]:
    return {
        "main": {"targets": [{"provider": "mock", "model": f"fail-500+{tag}"}], "retry": {"attempts": 1}},
        "spare": {"targets": [{"provider": "backup", "model": f"echo+{tag}"}]},
        "both": {
            "targets": [
                {"provider": "mock", "model": f"echo+mock+{tag}"},
                {"provider": "backup", "model": f"echo+backup+{tag}"},
            ]
        },
    }


def prices(tag: str) -> dict[str, Any]:
    return {
        f"mock/echo+mock+{tag}": {"input_per_mtok": 5, "output_per_mtok": 15},
        f"backup/echo+backup+{tag}": {"input_per_mtok": 1, "output_per_mtok": 2},
    }


@pytest.fixture
def setup(gateway_factory: Any, mock: Any) -> Any:
    tag = "id-" + uuid.uuid4().hex[:8]
    gw = gateway_factory(doc=routing_doc(mock.base_url, models(tag), prices=prices(tag)))
    store = KeyStore(Table(boto3.client("dynamodb", region_name="us-east-1"), gw.settings.table))
    return gw, store, tag


def bodies(mock: Any, tag: str) -> list[dict[str, Any]]:
    return [r["json"] for r in mock.requests if tag in str((r["json"] or {}).get("model"))]


def test_overrides_are_denied_by_default_naming_the_field(setup: Any, mock: Any) -> None:
    gw, store, tag = setup
    client = openai.OpenAI(base_url=gw.v1, api_key=gw.api_key, max_retries=0)
    for extra, field in (
        ({"models": ["spare"]}, "models"),
        ({"provider": {"sort": "price"}}, "provider.sort"),
        ({"provider": {"order": ["backup"], "allow_fallbacks": False}}, "provider.allow_fallbacks"),
    ):
        with pytest.raises(openai.PermissionDeniedError) as caught:
            client.chat.completions.create(model="both", messages=MSG, extra_body=extra)  # type: ignore[arg-type]
        error = caught.value.body
        assert isinstance(error, dict)
        assert error["param"] == field and error["code"] == "override_not_allowed"
        assert error["type"] == "permission_error" and field in error["message"]
    # A key allowed ``provider.order`` only is still refused ``provider.sort``.
    key, _ = store.create("some", overrides=["provider.order"])
    response = httpx.post(
        gw.v1 + "/chat/completions",
        json={"model": "both", "messages": MSG, "provider": {"order": ["backup"], "sort": "price"}},
        headers={"authorization": f"Bearer {key}"},
        timeout=10,
    )
    assert response.status_code == 403 and response.json()["error"]["param"] == "provider.sort"
    assert bodies(mock, tag) == []  # nothing reached an upstream


def test_models_is_an_ordered_fallback_list(setup: Any, mock: Any) -> None:
    gw, store, tag = setup
    key, _ = store.create("fallbacks", overrides=["models"])
    client = openai.OpenAI(base_url=gw.v1, api_key=key, max_retries=0)
    raw = client.chat.completions.with_raw_response.create(
        model="main",
        messages=MSG,
        extra_body={"models": ["spare"]},  # type: ignore[arg-type]
    )
    completion = raw.parse()
    assert completion.choices[0].message.content == "echo: ping pong"
    assert raw.headers["x-switchboard-provider"] == "backup"
    assert raw.headers["x-switchboard-overrides"] == "models"
    steps = [e.split(";")[:2] for e in raw.headers["x-switchboard-trail"].split(",")]
    assert steps == [[f"mock/fail-500+{tag}", "server"], [f"backup/echo+{tag}", "ok"]]
    sent = bodies(mock, tag)
    assert len(sent) == 2 and all("models" not in b and "provider" not in b for b in sent)


def test_provider_preferences_reorder_and_filter(setup: Any, mock: Any) -> None:
    gw, store, tag = setup
    key, _ = store.create("prefs", overrides=["provider"])
    client = openai.OpenAI(base_url=gw.v1, api_key=key, max_retries=0)

    def served(provider: dict[str, Any]) -> str:
        raw = client.chat.completions.with_raw_response.create(
            model="both",
            messages=MSG,
            extra_body={"provider": provider},  # type: ignore[arg-type]
        )
        return raw.headers["x-switchboard-provider"]

    assert served({}) == "mock"
    assert served({"order": ["backup", "mock"]}) == "backup"
    assert served({"sort": "price"}) == "backup"  # backup's price is lower
    assert served({"ignore": ["mock"]}) == "backup"
    assert served({"only": ["mock"]}) == "mock"
    assert served({"max_price": {"prompt": 2}}) == "backup"
    sent = bodies(mock, tag)
    assert len(sent) == 6 and all("models" not in b and "provider" not in b for b in sent)
    # Everything filtered out: a 400 that says why, in OpenAI's shape.
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(
            model="both",
            messages=MSG,
            extra_body={"provider": {"max_price": {"prompt": 0.5}}},  # type: ignore[arg-type]
        )
    assert isinstance(caught.value.body, dict) and caught.value.body["code"] == "no_target_left"
    assert "max_price" in caught.value.body["message"]


def test_overrides_on_messages_are_checked_and_not_forwarded(setup: Any, mock: Any) -> None:
    gw, store, tag = setup
    denied = anthropic.Anthropic(base_url=gw.base_url, api_key=gw.api_key, max_retries=0)
    with pytest.raises(anthropic.PermissionDeniedError):
        denied.messages.create(model="main", max_tokens=5, messages=MSG, extra_body={"models": ["spare"]})  # type: ignore[arg-type]
    key, _ = store.create("anthropic", overrides=["models", "provider"])
    client = anthropic.Anthropic(base_url=gw.base_url, api_key=key, max_retries=0)
    message = client.messages.create(
        model="main",
        max_tokens=5,
        messages=MSG,
        extra_body={"models": ["spare"]},  # type: ignore[arg-type]
    )
    assert message.content[0].text == "echo: ping pong"  # type: ignore[union-attr]
    sent = bodies(mock, tag)
    assert len(sent) == 2 and all("models" not in b and "provider" not in b for b in sent)


def test_a_malformed_override_is_a_400_naming_it(setup: Any) -> None:
    gw, store, _tag = setup
    key, _ = store.create("typo", overrides=["provider", "models"])
    for extra, param in (({"models": "spare"}, "models"), ({"provider": {"sort": "cheap"}}, "provider.sort")):
        response = httpx.post(
            gw.v1 + "/chat/completions",
            json={"model": "both", "messages": MSG, **extra},
            headers={"authorization": f"Bearer {key}"},
            timeout=10,
        )
        assert response.status_code == 400 and response.json()["error"]["param"] == param


def test_apply_explains_each_target() -> None:
    doc = RoutingDocument.model_validate(
        {
            "version": 1,
            "providers": {n: {"kind": "openai", "base_url": "http://x"} for n in ("a", "b", "c")},
            "models": {"m": {"targets": [{"provider": n, "model": "x"} for n in ("a", "b", "c")]}},
        }
    )
    prefs = ProviderPreferences.model_validate({"ignore": ["b"], "order": ["c"], "allow_fallbacks": False})
    result, decisions = apply(plan(doc, "m"), prefs, lambda t: None)
    assert [t.provider_name for t in result.targets] == ["c"]
    assert [(d.target, d.kept) for d in decisions] == [("c/x", True), ("b/x", False), ("a/x", False)]
    assert "provider.ignore" in decisions[1].reason and "allow_fallbacks" in decisions[2].reason


def test_overrides_on_responses_are_checked_and_not_forwarded(setup: Any, mock: Any) -> None:
    gw, store, tag = setup
    denied = openai.OpenAI(base_url=gw.v1, api_key=gw.api_key, max_retries=0)
    with pytest.raises(openai.PermissionDeniedError):
        denied.responses.create(
            model="main", input="ping pong", store=False, extra_body={"models": ["spare"]}
        )
    key, _ = store.create("responses", overrides=["models"])
    client = openai.OpenAI(base_url=gw.v1, api_key=key, max_retries=0)
    answer = client.responses.create(
        model="main", input="ping pong", store=False, extra_body={"models": ["spare"]}
    )
    assert answer.output_text == "echo: ping pong"
    sent = bodies(mock, tag)
    assert len(sent) == 2 and all("models" not in b and "provider" not in b for b in sent)
