"""The routing document's Responses settings: the provider flag, the TTL, their schema and docs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator
from switchboard.http.endpoints.responses import passes_through
from switchboard.routing.document import RoutingDocument

from tests.support import target

ROUTING_MD = (Path(__file__).resolve().parents[2] / "docs" / "routing.md").read_text()


def doc(provider: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {
        "version": 1,
        "providers": {"p": provider},
        "models": {"a": {"targets": [{"provider": "p", "model": "m"}]}},
        **extra,
    }


def test_schema_and_docs_know_both_settings() -> None:
    schema = RoutingDocument.model_json_schema()
    assert "responses" in schema["$defs"]["ProviderConfig"]["properties"]
    assert schema["properties"]["responses_ttl_days"]["default"] == 30
    assert "| `providers.<name>.responses` |" in ROUTING_MD and "| `responses_ttl_days` |" in ROUTING_MD
    validator = Draft202012Validator(schema)
    assert validator.is_valid(
        doc({"kind": "openai", "base_url": "http://x", "responses": True}, responses_ttl_days=7)
    )
    assert not validator.is_valid(doc({"kind": "openai", "base_url": "http://x"}, responses_ttl_days=0))


def test_responses_true_is_for_openai_kinds_only() -> None:
    with pytest.raises(ValueError, match="responses: true is for kind 'openai'"):
        RoutingDocument.model_validate(doc({"kind": "anthropic", "responses": True}))


@pytest.mark.parametrize(
    ("provider", "expected"),
    [
        ({"kind": "openai", "base_url": "https://api.openai.com/v1"}, True),
        ({"kind": "openai", "base_url": "https://api.openai.com/v1", "responses": False}, False),
        ({"kind": "openai", "base_url": "https://api.groq.com/openai/v1"}, False),
        ({"kind": "openai", "base_url": "http://127.0.0.1:9100/v1", "responses": True}, True),
        ({"kind": "openai", "base_url": "https://api.openai.com.evil.test/v1"}, False),
        ({"kind": "azure", "base_url": "https://x.openai.azure.com", "api_key": {"ssm": "/k"}}, False),
    ],
)
def test_which_targets_pass_through(provider: dict[str, Any], expected: bool) -> None:
    assert passes_through(target(provider)) is expected
