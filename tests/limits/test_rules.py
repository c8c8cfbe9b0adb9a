"""Routing rules that read budget use: the schema, the pure function, and a reroute over HTTP."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import pytest
from switchboard.core.principal import Limits, Principal, Scope
from switchboard.limits.definitions import LimitStore
from switchboard.limits.table import Table
from switchboard.routing.document import Rule, load_document
from switchboard.routing.rules import Rerouted, apply_rules, reroute

from tests.conftest import routing_doc
from tests.limits.conftest import ledger, post
from tests.limits.test_side_endpoints_http import emf_events, message

MODELS = {
    "gpt-4o": {"targets": [{"provider": "mock", "model": "echo"}]},
    "cheap": {"targets": [{"provider": "backup", "model": "echo"}]},
    "other": {"targets": [{"provider": "mock", "model": "echo"}]},
    "embed": {
        "mode": "embeddings",
        "targets": [{"provider": "mock", "model": "text-embed", "dimensions": 8}],
    },
}


def rule(over: float, scope: str = "key", **reroute: str) -> Rule:
    return Rule.model_validate({"when": {"budget_used_over": over, "scope": scope}, "reroute": reroute})


def test_apply_rules_first_match_wins_and_needs_a_budget() -> None:
    rules = [rule(0.9, "team", **{"gpt-4o": "other"}), rule(0.8, **{"gpt-4o": "cheap"})]
    assert apply_rules(rules, "gpt-4o", {"key": 0.85, "team": 0.95}) == ("other", 0)
    assert apply_rules(rules, "gpt-4o", {"key": 0.85, "team": 0.5}) == ("cheap", 1)
    assert apply_rules(rules, "gpt-4o", {"key": 0.8, "team": None}) == ("gpt-4o", None)  # strictly over
    assert apply_rules(rules, "gpt-4o", {"key": None, "team": None}) == ("gpt-4o", None)  # no budget
    assert apply_rules(rules, "cheap", {"key": 1.0}) == ("cheap", None)  # rules do not chain


class _Used:
    """A ``BudgetUse`` that reports a fixed fraction for every scope, and what it was asked."""

    def __init__(self, fraction: float | None) -> None:
        self.fraction, self.asked = fraction, []

    async def budget_used(self, principal: Principal, alias: str, scope: Scope) -> float | None:
        self.asked.append(scope)
        return self.fraction


async def test_reroute_returns_the_rule_that_fired_as_data() -> None:
    """The served alias and the rule come back as a value; nothing is written into headers (the
    HTTP layer names the rule, the exchange keeps it for the cost event)."""
    doc, _ = load_document(
        json.dumps(
            routing_doc(
                "http://127.0.0.1:9",
                MODELS,
                rules=[{"when": {"budget_used_over": 0.8, "scope": "team"}, "reroute": {"gpt-4o": "cheap"}}],
            )
        )
    )
    who = Principal("k1", "ci", team="t")
    assert await reroute(_Used(0.9), doc, who, "gpt-4o") == Rerouted("cheap", "rules[0]: gpt-4o -> cheap")
    assert await reroute(_Used(0.5), doc, who, "gpt-4o") == Rerouted("gpt-4o", None)
    unasked = _Used(0.9)
    assert await reroute(unasked, doc, who, "other") == Rerouted("other") and unasked.asked == []
    assert await reroute(None, doc, who, "gpt-4o") == Rerouted("gpt-4o")


@pytest.mark.parametrize(
    ("rules", "message"),
    [
        ([{"when": {"budget_used_over": 0.8}, "reroute": {"gpt-4o": "nope"}}], "reroutes 'nope'"),
        ([{"when": {"budget_used_over": 0.8}, "reroute": {"gpt-4o": "gpt-4o"}}], "to itself"),
        ([{"when": {"budget_used_over": -1}, "reroute": {"gpt-4o": "cheap"}}], "greater than or equal"),
        (
            [{"when": {"budget_used_over": 0.5, "scope": "org"}, "reroute": {"gpt-4o": "cheap"}}],
            "rules.0.when.scope",
        ),
        ([{"when": {"budget_used_over": 0.5}, "reroute": {}}], "rules.0.reroute"),
        ([{"when": {"budget_used_over": 0.5}, "reroute": {"gpt-4o": "embed"}}], "an embeddings model"),
        ([{"when": {"budget_used_over": 0.5}, "reroute": {"embed": "gpt-4o"}}], "an embeddings model"),
    ],
)
def test_bad_rules_are_rejected_with_a_readable_reason(rules: list[dict[str, Any]], message: str) -> None:
    doc = routing_doc("http://127.0.0.1:9", MODELS, rules=rules)
    with pytest.raises(ValueError, match="invalid routing document") as caught:
        load_document(json.dumps(doc))
    assert message in str(caught.value)


def test_over_80_percent_of_the_month_reroutes_gpt_4o_to_the_cheap_alias(start, table: Table, capsys) -> None:  # type: ignore[no-untyped-def]
    prices = {
        "mock/echo": {"input_per_mtok": 0, "output_per_mtok": 2500},  # 1 cent a request
        "backup/echo": {"input_per_mtok": 0, "output_per_mtok": 250},  # a tenth of that
    }
    rules = [{"when": {"budget_used_over": 0.8, "scope": "key"}, "reroute": {"gpt-4o": "cheap"}}]
    gw, key = start(prices=prices, models=MODELS, rules=rules)
    for hook in gw.gateway.hooks:
        hook.use_max_age_s = 0  # read the budget on every request (5 s in production)
    secret, key_id = key(budget_usd=Decimal("0.10"))
    assert "x-switchboard-rule" not in post(gw, secret, "other").headers  # 1 cent; not named by the rule
    responses = [post(gw, secret, "gpt-4o") for _ in range(11)]
    assert all(r.status_code == 200 for r in responses)
    # 8 cents used is 80%, not over it: the 8th gpt-4o request still goes to gpt-4o, then the rule fires.
    assert [r.headers["x-switchboard-provider"] for r in responses] == ["mock"] * 8 + ["backup"] * 3
    assert responses[-1].headers["x-switchboard-rule"] == "rules[0]: gpt-4o -> cheap"
    assert "x-switchboard-rule" not in responses[0].headers
    events = emf_events(capsys.readouterr().out)  # the rule reaches the cost event through the exchange
    assert events[responses[-1].headers["x-request-id"]]["rule"] == "rules[0]: gpt-4o -> cheap"
    assert "rule" not in events[responses[0].headers["x-request-id"]]  # None values are left out
    assert ledger(table, "key", key_id)["spent"] == Decimal("0.09") + 3 * Decimal("0.001")


def test_a_rule_on_the_alias_budget(start, table: Table) -> None:  # type: ignore[no-untyped-def]
    rules = [{"when": {"budget_used_over": 0.5, "scope": "model"}, "reroute": {"gpt-4o": "cheap"}}]
    gw, key = start(
        models=MODELS, rules=rules, prices={"mock/echo": {"input_per_mtok": 0, "output_per_mtok": 2500}}
    )
    for hook in gw.gateway.hooks:
        hook.use_max_age_s = 0
    LimitStore(table).put(Scope.MODEL, "gpt-4o", Limits(budget_usd=Decimal("0.02")))
    plain, _ = key()
    served = [post(gw, plain, "gpt-4o").headers.get("x-switchboard-provider") for _ in range(3)]
    assert served == ["mock", "mock", "backup"]  # 1 of 2 cents is 50%, not over it; 2 of 2 is


def test_rules_apply_to_anthropic_messages_too(start) -> None:  # type: ignore[no-untyped-def]
    prices = {
        "mock/echo": {"input_per_mtok": 0, "output_per_mtok": 2500},  # 1 cent a request
        "backup/echo": {"input_per_mtok": 0, "output_per_mtok": 250},
    }
    rules = [{"when": {"budget_used_over": 0.05, "scope": "key"}, "reroute": {"gpt-4o": "cheap"}}]
    gw, key = start(prices=prices, models=MODELS, rules=rules)
    for hook in gw.gateway.hooks:
        hook.use_max_age_s = 0
    secret, _ = key(budget_usd=Decimal("0.10"))
    first, second = (message(gw, secret, "gpt-4o") for _ in range(2))
    assert first.status_code == second.status_code == 200, first.text
    assert [r.headers["x-switchboard-provider"] for r in (first, second)] == ["mock", "backup"]
    assert second.headers["x-switchboard-rule"] == "rules[0]: gpt-4o -> cheap"
    assert second.json()["type"] == "message"  # still the Anthropic shape
