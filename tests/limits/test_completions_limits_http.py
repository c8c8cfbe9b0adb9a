"""Budgets, rate limits, restricted keys and cost events on /v1/completions, as on chat.

The mock's usage for the prompt "a b c": 3 words + 4 = 7 prompt tokens; the text "echo: a b c" is
4 completion tokens, $0.01 at ``CENT_PRICE``.
"""

from __future__ import annotations

import json
import time
from decimal import Decimal
from typing import Any

import httpx
import pytest
from switchboard.limits.keys import KeyStore
from switchboard.limits.table import Table

from tests.integration.test_costs_http import Recorder
from tests.limits.conftest import MODELS, ledger, reservations, wait_for
from tests.limits.test_rates_http import freeze
from tests.limits.test_side_endpoints_http import emf_events


@pytest.fixture
def side(start):  # type: ignore[no-untyped-def]
    gw, key = start(models=MODELS)
    recorder = Recorder()
    gw.gateway.hooks.append(recorder)
    return gw, key, recorder


def complete(gw, key: str, model: str = "metered", **body: Any) -> httpx.Response:  # type: ignore[no-untyped-def]
    payload = {"model": model, "prompt": "a b c", "max_tokens": 4, **body}
    return httpx.post(
        gw.v1 + "/completions", json=payload, headers={"authorization": f"Bearer {key}"}, timeout=30
    )


def test_a_budgeted_key_completes_until_the_budget_is_spent(side, table: Table, capsys) -> None:  # type: ignore[no-untyped-def]
    gw, key, recorder = side
    secret, key_id = key(budget_usd=Decimal("0.02"))
    first, second, third = (complete(gw, secret) for _ in range(3))
    assert first.status_code == second.status_code == 200, first.text
    assert first.json()["usage"] == {
        "prompt_tokens": 7,
        "completion_tokens": 4,
        "total_tokens": 11,
        "cost": 0.01,
    }
    assert first.headers["x-switchboard-cost-usd"] == "0.01"
    assert third.status_code == 402 and third.json()["error"]["type"] == "insufficient_quota"
    row = ledger(table, "key", key_id)
    assert (row["spent"], row["reserved"], row["requests"]) == (Decimal("0.02"), 0, 2)
    assert reservations(table) == []
    [settled] = recorder.of(first.headers["x-request-id"])
    assert settled.kind == "completions" and settled.outcome == "ok" and not settled.usage_estimated
    events = emf_events(capsys.readouterr().out)
    assert events[first.headers["x-request-id"]]["endpoint"] == "completions"
    assert events[first.headers["x-request-id"]]["CostUSD"] == 0.01
    assert events[third.headers["x-request-id"]]["outcome"] == "rejected"


def test_a_streamed_completion_settles_once_on_its_usage(side, table: Table) -> None:  # type: ignore[no-untyped-def]
    gw, key, recorder = side
    secret, key_id = key(budget_usd=Decimal(1))
    response = complete(gw, secret, stream=True)
    assert response.status_code == 200 and response.text.endswith("data: [DONE]\n\n")
    assert '"usage"' not in response.text  # the client did not ask for it
    request_id = response.headers["x-request-id"]
    wait_for(lambda: bool(recorder.of(request_id)))
    time.sleep(0.1)  # a second settlement would show up here
    [settled] = recorder.of(request_id)
    assert settled.outcome == "ok" and not settled.usage_estimated and settled.cost_usd == Decimal("0.01")
    wait_for(lambda: ledger(table, "key", key_id).get("spent") == Decimal("0.01"))
    assert reservations(table) == []


def test_a_failed_completion_refunds_its_reservation(side, table: Table) -> None:  # type: ignore[no-untyped-def]
    gw, key, recorder = side
    secret, key_id = key(budget_usd=Decimal("0.02"))
    failed = complete(gw, secret, "broken")
    assert failed.status_code == 502 and failed.json()["error"]["message"]
    row = ledger(table, "key", key_id)
    assert (row["spent"], row["reserved"]) == (0, 0)
    assert [ex.outcome for ex in recorder.settled] == ["error"]


def test_rate_limits_and_allowed_models_apply(side, table: Table) -> None:  # type: ignore[no-untyped-def]
    gw, key, _recorder = side
    freeze(gw)  # one minute's window: the two requests could straddle a minute's end
    secret, _key_id = key(rpm=1)
    assert complete(gw, secret).status_code == 200
    limited = complete(gw, secret)
    assert limited.status_code == 429 and "retry-after" in limited.headers
    assert json.loads(limited.text)["error"]["type"] == "rate_limit_error"
    restricted, _record = KeyStore(table).create("r", models=["fallback"])
    refused = complete(gw, restricted)
    assert refused.status_code == 403 and refused.json()["error"]["param"] == "model"
    assert complete(gw, restricted, "fallback").status_code == 200
