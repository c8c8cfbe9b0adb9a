"""/v1/responses through the one pipeline (issue 11): what the pipeline settles for it, and what it
stores before settling, over HTTP against a fresh table.

``tests/limits/test_responses_limits_http.py`` covers the answers that complete (budgets, the cost
event, rate limits); these are the other ends: a stream the upstream breaks after output began
(settled once, as interrupted, on an estimate), and the stored answer being the one sent, its
``usage.cost`` included (stored before settlement, buffered or streamed).
"""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import httpx
import pytest
from switchboard.limits.table import Table

from tests.integration.test_costs_http import Recorder
from tests.limits.conftest import CENT_PRICE, ledger, reservations, wait_for
from tests.limits.test_responses_limits_http import PASS_MODELS, create

BROKEN = "break-2+chunks-6"  # the mock: two chunks of output, then the connection breaks
MODELS = {
    **PASS_MODELS,
    "broken": {"targets": [{"provider": "mock", "model": BROKEN}], "retry": {"attempts": 1}},
    "broken-pass": {"targets": [{"provider": "oai", "model": BROKEN}], "retry": {"attempts": 1}},
}


@pytest.fixture
def side(start, mock):  # type: ignore[no-untyped-def]
    """``mock`` (chat only: converted) and ``oai`` (the mock again, declaring the Responses API:
    passed through), every model priced."""
    key_ref = {"ssm": "/switchboard/secrets/mock"}
    providers: dict[str, Any] = {
        name: {"kind": "openai", "base_url": mock.base_url, "api_key": key_ref} for name in ("mock", "backup")
    }
    providers["oai"] = {**providers["mock"], "responses": True}
    prices = {f"{p}/{m}": CENT_PRICE for p in ("mock", "oai") for m in ("echo", BROKEN)}
    gw, key = start(prices=prices, models=MODELS, providers=providers)
    recorder = Recorder()
    gw.gateway.hooks.append(recorder)
    return gw, key, recorder


def _data(text: str) -> list[dict[str, Any]]:
    return [json.loads(line[6:]) for line in text.splitlines() if line.startswith("data: ")]


@pytest.mark.parametrize("model", ["broken", "broken-pass"])
def test_a_stream_broken_after_output_settles_once_as_interrupted_on_an_estimate(
    side, table: Table, model: str
) -> None:  # type: ignore[no-untyped-def]
    gw, key, recorder = side
    secret, key_id = key(budget_usd=Decimal(1))
    response = create(gw, secret, model, stream=True)
    assert response.status_code == 200, response.text
    assert [event["type"] for event in _data(response.text)][-1] == "response.failed"
    request_id = response.headers["x-request-id"]
    wait_for(lambda: bool(recorder.of(request_id)))
    [settled] = recorder.of(request_id)
    assert settled.kind == "responses" and settled.outcome == "interrupted"
    assert settled.error_code == "stream_interrupted"
    assert settled.usage is not None and settled.usage_estimated and settled.usage.completion_tokens > 0
    assert settled.cost_usd is not None and settled.cost_usd > 0
    wait_for(lambda: ledger(table, "key", key_id).get("spent") == settled.cost_usd)
    assert reservations(table) == []


@pytest.mark.parametrize("model", ["metered", "passed"])
def test_the_stored_answer_is_the_one_sent_with_its_cost(side, model: str) -> None:  # type: ignore[no-untyped-def]
    gw, key, _ = side
    secret, _ = key(budget_usd=Decimal(1))
    auth = {"authorization": f"Bearer {secret}"}

    made = create(gw, secret, model)
    assert made.status_code == 200 and made.headers["x-switchboard-stored"] == "true"
    got = httpx.get(f"{gw.v1}/responses/{made.json()['id']}", headers=auth, timeout=30)
    assert got.status_code == 200 and got.json() == made.json()
    assert got.json()["usage"]["cost"] == 0.01

    streamed = create(gw, secret, model, stream=True)
    final = _data(streamed.text)[-1]
    assert final["type"] == "response.completed" and final["response"]["usage"]["cost"] == 0.01
    got = httpx.get(f"{gw.v1}/responses/{final['response']['id']}", headers=auth, timeout=30)
    assert got.status_code == 200 and got.json() == final["response"]

    unstored = create(gw, secret, model, store=False)
    assert unstored.status_code == 200 and "x-switchboard-stored" not in unstored.headers
    assert unstored.json()["usage"]["cost"] == 0.01
    gone = httpx.get(f"{gw.v1}/responses/{unstored.json()['id']}", headers=auth, timeout=30)
    assert gone.status_code == 404
