"""Rule conditions, evaluated in order: budget use, key tags, user, metadata, endpoint, time of day
and day of week (UTC, from an injected clock); reroutes and target skips, with their reasons."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest
from switchboard.core.errors import InvalidRequest
from switchboard.routing.decide import Reason, RequestFacts, decide
from switchboard.routing.document import RoutingDocument, load_document

PROVIDERS = {name: {"kind": "openai", "base_url": f"http://{name}.test/v1"} for name in "abc"}
MODELS = {
    "big": {"targets": [{"provider": "a", "model": "big"}, {"provider": "b", "model": "big"}]},
    "small": {"targets": [{"provider": "c", "model": "small"}]},
}
# A Wednesday at 14:30 UTC, and a Saturday at 03:00 UTC.
WEDNESDAY = datetime(2026, 12, 2, 14, 30, tzinfo=UTC)
SATURDAY_NIGHT = datetime(2026, 12, 5, 3, 0, tzinfo=UTC)


def doc(*rules: dict[str, Any]) -> RoutingDocument:
    return RoutingDocument.model_validate(
        {"version": 1, "providers": PROVIDERS, "models": MODELS, "rules": list(rules)}
    )


def served(d: RoutingDocument, **facts: Any) -> tuple[str, list[str]]:
    facts.setdefault("now", WEDNESDAY)
    decision = decide(d, "big", RequestFacts(**facts))
    return decision.alias, [v.target.label for v in decision.verdicts if v.kept]


def reroute(**when: Any) -> dict[str, Any]:
    return {"when": when, "reroute": {"big": "small"}}


@pytest.mark.parametrize(
    ("when", "holds", "fails"),
    [
        ({"budget_used_over": 0.8}, {"budget_used": {"key": 0.81}}, {"budget_used": {"key": 0.8}}),
        (
            {"budget_used_over": 0.5, "scope": "team"},
            {"budget_used": {"team": 0.9}},
            {"budget_used": {"key": 0.9, "team": None}},
        ),
        ({"key_tags": ["batch", "intern"]}, {"key_tags": ("intern",)}, {"key_tags": ("prod",)}),
        ({"user": ["alice"]}, {"user": "alice"}, {"user": "bob"}),
        (
            {"metadata": {"tier": "free"}},
            {"metadata": {"tier": "free", "x": "y"}},
            {"metadata": {"tier": "pro"}},
        ),
        ({"endpoint": ["messages"]}, {"endpoint": "messages"}, {"endpoint": "chat"}),
        ({"hours_utc": {"from": 9, "to": 17}}, {"now": WEDNESDAY}, {"now": SATURDAY_NIGHT}),
        ({"hours_utc": {"from": 22, "to": 6}}, {"now": SATURDAY_NIGHT}, {"now": WEDNESDAY}),
        ({"days_utc": ["sat", "sun"]}, {"now": SATURDAY_NIGHT}, {"now": WEDNESDAY}),
    ],
    ids=["budget", "team-budget", "key-tags", "user", "metadata", "endpoint", "hours", "night", "weekend"],
)
def test_each_condition_reroutes_when_it_holds_and_not_otherwise(
    when: dict[str, Any], holds: dict[str, Any], fails: dict[str, Any]
) -> None:
    d = doc(reroute(**when))
    assert served(d, **holds)[0] == "small"
    assert served(d, **fails)[0] == "big"


def test_conditions_in_one_rule_must_all_hold() -> None:
    d = doc(reroute(key_tags=["batch"], days_utc=["sat", "sun"]))
    assert served(d, key_tags=("batch",), now=SATURDAY_NIGHT)[0] == "small"
    assert served(d, key_tags=("batch",), now=WEDNESDAY)[0] == "big"
    assert served(d, key_tags=(), now=SATURDAY_NIGHT)[0] == "big"


def test_rules_are_read_in_order_and_the_first_reroute_decides() -> None:
    d = doc(
        {"when": {"user": ["alice"]}, "reroute": {"big": "small"}, "description": "alice tries small"},
        {"when": {"key_tags": ["batch"]}, "reroute": {"big": "small"}},
    )
    decision = decide(d, "big", RequestFacts(user="alice", key_tags=("batch",), now=WEDNESDAY))
    assert [(r.index, r.action, r.description) for r in decision.rules] == [
        (0, "reroute big -> small", "alice tries small")
    ]
    assert decision.rule_header == "rules[0]: big -> small"


def test_a_skip_rule_on_a_budget_skips_targets_with_the_budget_reason() -> None:
    d = doc({"when": {"budget_used_over": 0.8}, "skip": ["a/big"], "models": ["big"]})
    decision = decide(d, "big", RequestFacts(budget_used={"key": 0.9}))
    assert [(v.target.label, v.reason, v.detail) for v in decision.verdicts] == [
        ("a/big", Reason.BUDGET_RULE, "skipped by rules[0]"),
        ("b/big", Reason.KEPT, "fallback order in 'big'"),
    ]
    assert decision.rule_header is None  # a skip is no reroute
    assert served(d, budget_used={"key": 0.5})[1] == ["a/big", "b/big"]


def test_a_skip_rule_on_other_conditions_skips_with_the_condition_reason() -> None:
    d = doc({"when": {"hours_utc": {"from": 9, "to": 17}}, "skip": ["b/big"]})
    decision = decide(d, "big", RequestFacts(now=WEDNESDAY))
    assert [v.reason for v in decision.verdicts] == [Reason.KEPT, Reason.CONDITION]


def test_a_reroute_then_a_skip_on_the_served_alias() -> None:
    d = doc(
        reroute(key_tags=["batch"]),
        {"when": {"key_tags": ["batch"]}, "skip": ["a/big"], "models": ["big"]},  # names big: not served
    )
    assert served(d, key_tags=("batch",)) == ("small", ["c/small"])


def test_skipping_every_target_is_a_clear_400() -> None:
    d = doc({"when": {"user": ["mallory"]}, "skip": ["a/big", "b/big"]})
    with pytest.raises(InvalidRequest) as caught:
        decide(d, "big", RequestFacts(user="mallory"))
    assert caught.value.code == "no_target_available"
    assert "a/big: condition (skipped by rules[0])" in caught.value.message


def test_the_json_schema_takes_the_conditions_as_the_loader_does() -> None:
    from jsonschema import Draft202012Validator

    rule = {"when": {"hours_utc": {"from": 22, "to": 6}, "days_utc": ["sat"]}, "skip": ["a/big"]}
    document = {"version": 1, "providers": PROVIDERS, "models": MODELS, "rules": [rule]}
    load_document(json.dumps(document))
    assert Draft202012Validator(RoutingDocument.model_json_schema()).is_valid(document)
    rule["when"]["hours_utc"] = {"start": 1, "to": 2}
    assert not Draft202012Validator(RoutingDocument.model_json_schema()).is_valid(document)


@pytest.mark.parametrize(
    ("rule", "message"),
    [
        ({"when": {}, "reroute": {"big": "small"}}, "needs at least one condition"),
        ({"when": {"user": ["x"]}}, "needs 'reroute' or 'skip'"),
        ({"when": {"hours_utc": {"from": 25, "to": 3}}, "skip": ["a/big"]}, "rules.0.when.hours_utc.from"),
        ({"when": {"days_utc": ["someday"]}, "skip": ["a/big"]}, "rules.0.when.days_utc.0"),
        ({"when": {"endpoint": ["embeddings"]}, "skip": ["a/big"]}, "rules.0.when.endpoint.0"),
        ({"when": {"user": ["x"]}, "skip": ["a/big"], "models": ["nope"]}, "names 'nope'"),
        ({"when": {"user": ["x"]}, "skip": ["a/bigg"]}, "skips 'a/bigg', which no chat model's targets name"),
    ],
    ids=["empty-when", "no-action", "hour", "day", "endpoint", "models", "skip-typo"],
)
def test_bad_conditions_are_refused_when_the_document_loads(rule: dict[str, Any], message: str) -> None:
    text = json.dumps({"version": 1, "providers": PROVIDERS, "models": MODELS, "rules": [rule]})
    with pytest.raises(ValueError, match="invalid routing document") as caught:
        load_document(text)
    assert message in str(caught.value)
