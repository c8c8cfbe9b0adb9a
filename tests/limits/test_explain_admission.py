"""Explain's admission decision: budgets and rate limits read, never reserved; and a budget rule
shown as it fires."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import httpx
from switchboard.limits.table import Table

from tests.limits.conftest import MSG, items, ledger, post, reservations, wait_for


def ledger_items(table: Table) -> list[dict[str, Any]]:
    """What admission writes: budget lines, rate windows and reservations (not the routing copy
    the gateway keeps in the same table)."""
    return [i for i in items(table) if str(i["pk"]).startswith(("budget#", "rate#", "resv#"))]


def explain(gw: Any, key: str, model: str = "metered", **body: Any) -> dict[str, Any]:
    response = httpx.post(
        gw.v1 + "/route/explain",
        json={"model": model, "messages": MSG, "max_tokens": 4, **body},
        headers={"authorization": f"Bearer {key}"},
        timeout=30,
    )
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


def test_admission_is_read_not_reserved(limited, table: Table) -> None:  # type: ignore[no-untyped-def]
    gw, key = limited
    secret, key_id = key(budget_usd=Decimal("0.02"), rpm=5)
    before = ledger_items(table)
    first = explain(gw, secret)
    assert first["admission"]["allowed"] is True and first["admission"]["reserved"] is False
    budget, rate = first["admission"]["checks"]
    assert (budget["kind"], budget["scope"], budget["limit_usd"], budget["used_usd"]) == (
        "budget",
        "key",
        "0.02",
        "0",
    )
    assert budget["request_max_usd"] == "0.01" and budget["admits"] is True
    assert (rate["kind"], rate["rpm"], rate["requests_this_minute"], rate["admits"]) == ("rate", 5, 0, True)
    assert ledger_items(table) == before  # nothing written: no reservation, no ledger line
    for _ in range(2):
        assert post(gw, secret).status_code == 200
    wait_for(lambda: not reservations(table))
    spent = ledger(table, "key", key_id)
    after = explain(gw, secret)
    assert after["admission"]["allowed"] is False
    assert after["admission"]["checks"][0]["admits"] is False
    assert after["admission"]["checks"][0]["used_usd"] == "0.02"
    assert post(gw, secret).status_code == 402  # the call agrees
    assert ledger(table, "key", key_id)["spent"] == spent["spent"]


def test_a_budget_rule_is_shown_with_its_skip_reason(start) -> None:  # type: ignore[no-untyped-def]
    models = {
        "pair": {"targets": [{"provider": "mock", "model": "echo"}, {"provider": "backup", "model": "echo"}]},
    }
    prices = {
        "mock/echo": {"input_per_mtok": 0, "output_per_mtok": 2500},
        "backup/echo": {"input_per_mtok": 0, "output_per_mtok": 25},
    }
    rules = [{"when": {"budget_used_over": 0.5}, "skip": ["mock/echo"], "description": "save money"}]
    gw, key = start(prices=prices, models=models, rules=rules)
    for hook in gw.gateway.hooks:
        if hasattr(hook, "use_max_age_s"):
            hook.use_max_age_s = 0
    secret, _ = key(budget_usd=Decimal("0.015"))
    assert explain(gw, secret, "pair")["rules"] == []
    assert post(gw, secret, "pair").headers["x-switchboard-provider"] == "mock"  # 1 of 1.5 cents
    answer = explain(gw, secret, "pair")
    assert answer["rules"] == [{"index": 0, "action": "skip mock/echo", "description": "save money"}]
    assert [(t["provider"], t["reason"]) for t in answer["targets"]] == [
        ("mock", "budget_rule"),
        ("backup", "kept"),
    ]
    assert post(gw, secret, "pair").headers["x-switchboard-provider"] == "backup"
