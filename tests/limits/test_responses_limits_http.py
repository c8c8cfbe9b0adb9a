"""Budgets, rate limits, the spend ledger and cost events on /v1/responses.

The mock's usage is deterministic: "a b c" as one user message is a 7-token prompt and the reply
"echo: a b c" 4 tokens, so at CENT_PRICE each answer costs $0.01 (streamed or not, converted or
passed through).
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import httpx
import pytest
from switchboard.limits.table import Table

from tests.integration.test_costs_http import Recorder
from tests.limits.conftest import CENT_PRICE, MODELS, ledger, reservations, wait_for
from tests.limits.test_rates_http import freeze
from tests.limits.test_side_endpoints_http import emf_events

PASS_MODELS = {**MODELS, "passed": {"targets": [{"provider": "oai", "model": "echo"}]}}


@pytest.fixture
def side(start, mock):  # type: ignore[no-untyped-def]
    """A gateway whose ``oai`` provider (the mock again) declares the Responses API."""
    key_ref = {"ssm": "/switchboard/secrets/mock"}
    providers = {
        name: {"kind": "openai", "base_url": mock.base_url, "api_key": key_ref} for name in ("mock", "backup")
    }
    providers["oai"] = {**providers["mock"], "responses": True}
    prices = {"mock/echo": CENT_PRICE, "oai/echo": CENT_PRICE}
    gw, key = start(prices=prices, models=PASS_MODELS, providers=providers)
    recorder = Recorder()
    gw.gateway.hooks.append(recorder)
    return gw, key, recorder


def create(gw, key: str, model: str = "metered", **body: Any) -> httpx.Response:  # type: ignore[no-untyped-def]
    payload = {"model": model, "input": "a b c", "max_output_tokens": 4, **body}
    return httpx.post(
        gw.v1 + "/responses", json=payload, headers={"authorization": f"Bearer {key}"}, timeout=30
    )


@pytest.mark.parametrize("model", ["metered", "passed"])
def test_a_budgeted_key_uses_responses_until_the_budget_is_spent(
    side, table: Table, capsys, model: str
) -> None:  # type: ignore[no-untyped-def]
    gw, key, recorder = side
    secret, key_id = key(budget_usd=Decimal("0.02"))
    first, second, third = (create(gw, secret, model) for _ in range(3))
    assert first.status_code == second.status_code == 200, first.text
    usage = first.json()["usage"]
    assert (usage["input_tokens"], usage["output_tokens"], usage["cost"]) == (7, 4, 0.01)
    assert first.headers["x-switchboard-cost-usd"] == "0.01"
    assert third.status_code == 402 and third.json()["error"]["type"] == "insufficient_quota"
    row = ledger(table, "key", key_id)
    assert (row["spent"], row["reserved"], row["requests"]) == (Decimal("0.02"), 0, 2)
    assert reservations(table) == []
    [settled] = recorder.of(first.headers["x-request-id"])
    assert settled.kind == "responses" and settled.outcome == "ok" and settled.cost_usd == Decimal("0.01")
    events = emf_events(capsys.readouterr().out)
    assert events[first.headers["x-request-id"]]["endpoint"] == "responses"
    assert events[first.headers["x-request-id"]]["CostUSD"] == 0.01
    assert events[third.headers["x-request-id"]]["outcome"] == "rejected"


@pytest.mark.parametrize("model", ["metered", "passed"])
def test_a_streamed_response_settles_once_with_its_usage_and_cost(side, table: Table, model: str) -> None:  # type: ignore[no-untyped-def]
    gw, key, recorder = side
    secret, key_id = key(budget_usd=Decimal(1))
    response = create(gw, secret, model, stream=True)
    assert response.status_code == 200 and "event: response.completed" in response.text
    final = [line for line in response.text.splitlines() if line.startswith("data: ")][-1]
    assert '"cost":0.01' in final and '"output_tokens":4' in final
    request_id = response.headers["x-request-id"]
    wait_for(lambda: bool(recorder.of(request_id)))
    [settled] = recorder.of(request_id)
    assert settled.outcome == "ok" and not settled.usage_estimated and settled.cost_usd == Decimal("0.01")
    wait_for(lambda: ledger(table, "key", key_id).get("spent") == Decimal("0.01"))
    assert reservations(table) == []


def test_rpm_applies_to_responses(side) -> None:  # type: ignore[no-untyped-def]
    gw, key, _ = side
    freeze(gw)  # one minute's window: the two requests could straddle a minute's end
    secret, _ = key(rpm=1)
    assert create(gw, secret).status_code == 200
    limited = create(gw, secret)
    assert limited.status_code == 429 and limited.json()["error"]["type"] == "rate_limit_error"
