"""The per-upstream parameter rules (providers/compat.py) and their table in docs/providers.md."""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

import pytest
from switchboard.core.errors import AttemptFailed
from switchboard.routing.document import ProviderConfig
from switchboard.upstream.providers import get
from switchboard.upstream.providers.compat import RULES, adapt, rules_for

from tests.support import chat_call

DOC = Path(__file__).resolve().parents[2] / "docs" / "providers.md"


@pytest.mark.parametrize(
    ("base_url", "expected"),
    [
        ("https://api.openai.com/v1", "openai"),
        ("https://api.groq.com/openai/v1", "groq"),
        ("https://api.together.xyz/v1", "together"),
        ("https://api.mistral.ai/v1", "mistral"),
        ("https://api.deepseek.com/v1", "deepseek"),
        ("https://api.fireworks.ai/inference/v1", "fireworks"),
        ("https://openrouter.ai/api/v1", "openrouter"),
        ("https://generativelanguage.googleapis.com/v1beta/openai", "gemini"),
        ("http://10.0.0.5:11434/v1", "ollama"),
        ("http://10.0.0.12:8000/v1", "none"),  # a vLLM server says nothing about itself: name it
        ("https://evil-api.groq.com.example.org/v1", "none"),
    ],
)
def test_rules_are_recognised_by_host(base_url: str, expected: str) -> None:
    assert rules_for("auto", base_url).name == expected


def test_a_named_rule_set_or_none_overrides_the_host() -> None:
    assert rules_for("vllm", "http://10.0.0.12:8000/v1").name == "vllm"
    assert rules_for("none", "https://api.groq.com/openai/v1").name == "none"
    assert rules_for("auto", "https://example.com", kind_default="gemini").name == "gemini"
    with pytest.raises(ValueError, match="unknown param_rules"):
        ProviderConfig.model_validate({"kind": "openai", "param_rules": "groqq"})


def test_groq_drops_its_rejected_fields_and_message_names() -> None:
    body: dict[str, Any] = {
        "model": "m",
        "messages": [{"role": "user", "content": "x", "name": "alice"}, {"role": "user", "content": "y"}],
        "logprobs": True,
        "top_logprobs": 2,
        "logit_bias": {"1": 2},
        "n": 1,
        "temperature": 0.2,
    }
    change = adapt(body, RULES["groq"])
    assert body == {
        "model": "m",
        "messages": [{"role": "user", "content": "x"}, {"role": "user", "content": "y"}],
        "temperature": 0.2,
    }
    assert change.dropped == ["logit_bias", "logprobs", "top_logprobs", "messages[].name"]


def test_a_rename_never_overwrites_what_the_client_sent() -> None:
    body = {"max_tokens": 10, "max_completion_tokens": 99}
    change = adapt(body, RULES["mistral"])
    assert body == {"max_tokens": 10}
    assert change.dropped == ["max_completion_tokens"] and change.renamed == []


def test_n_above_one_is_refused_not_dropped() -> None:
    body = {"n": 3}
    assert adapt(body, RULES["deepseek"]).refused == "n"
    assert body == {"n": 3}


def test_the_adaptation_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    provider = {"kind": "openai", "base_url": "https://api.mistral.ai/v1", "unsupported_params": ["top_p"]}
    call = chat_call(
        {"model": "a", "messages": [{"role": "user", "content": "x"}], "seed": 1, "top_p": 0.5}, provider
    )
    with caplog.at_level(logging.INFO, logger="switchboard.providers.openai"):
        spec = get("openai").build_request(call)  # type: ignore[attr-defined]
    assert b'"random_seed":1' in spec.content and b"top_p" not in spec.content
    assert "mistral rules" in caplog.text and "seed->random_seed" in caplog.text and "top_p" in caplog.text


def test_groq_n2_is_a_clear_400() -> None:
    provider = {"kind": "openai", "base_url": "https://api.groq.com/openai/v1"}
    call = chat_call({"model": "a", "messages": [{"role": "user", "content": "x"}], "n": 2}, provider)
    with pytest.raises(AttemptFailed) as caught:
        get("openai").build_request(call)  # type: ignore[attr-defined]
    assert caught.value.status == 400 and caught.value.upstream_param == "n"


def test_the_documented_table_matches_the_rules() -> None:
    """docs/providers.md lists, per rule set, exactly what the code drops, renames and refuses."""
    text = DOC.read_text()
    section = text.split("## Parameters each OpenAI-compatible upstream rejects")[1].split("\n## ")[0]
    rows = {}
    for line in section.splitlines():
        match = re.match(r"^\| `(\w+)` \|([^|]*)\|([^|]*)\|([^|]*)\|", line)
        if match:
            rows[match.group(1)] = [cell.strip() for cell in match.groups()[1:]]
    assert set(rows) == set(RULES) - {"none"}
    for name, (dropped, renamed, refused) in rows.items():
        rules = RULES[name]
        expected_drop = sorted(rules.drop) + (["messages[].name"] if rules.drop_message_names else [])
        assert sorted(re.findall(r"`([^`]+)`", dropped)) == sorted(expected_drop), name
        assert re.findall(r"`(\w+)` → `(\w+)`", renamed) == list(rules.rename), name
        assert ("`n` > 1" in refused) == rules.single_choice, name
