"""Budgets over HTTP against the real moto server: concurrency, the ledger, refunds, idempotence.

Prices make every request's cost deterministic with the mock: its completion is the reply's words
("echo: a b c" is 4), and input is free, so a request that asks for ``max_tokens: 4`` reserves
exactly what it then costs.
"""

from __future__ import annotations

import time
from collections import Counter
from decimal import Decimal
from typing import Any

import pytest
from switchboard.billing.spendledger import SHARDS, period_of
from switchboard.core.money import Price, cost_usd
from switchboard.core.principal import Limits, Period, Scope
from switchboard.core.schemas import Usage
from switchboard.limits.definitions import LimitStore
from switchboard.limits.table import Table, call_counts

from tests.limits.conftest import SLOW, fire, ledger, post, reservations, wait_for


@pytest.mark.parametrize(
    ("n", "fits"),
    [pytest.param(200, 50, id="200-vs-50"), pytest.param(1000, 250, id="1000-vs-250", marks=SLOW)],
)
def test_concurrent_requests_against_a_budget_for_a_quarter_admit_exactly_that_many(  # type: ignore[no-untyped-def]
    limited, table: Table, n: int, fits: int
) -> None:
    gw, key = limited
    limit = Decimal("0.01") * fits
    secret, key_id = key(budget_usd=limit, period=Period.MONTH)
    responses = fire(gw, secret, n)
    assert Counter(r.status_code for r in responses) == {200: fits, 402: n - fits}
    row = ledger(table, "key", key_id)
    assert (row["spent"], row["reserved"], row["used"], row["requests"]) == (limit, 0, limit, fits)
    assert reservations(table) == []
    refused = next(r for r in responses if r.status_code == 402).json()["error"]
    assert refused["type"] == "insufficient_quota" and refused["code"] == "budget_exceeded"
    assert refused["budget"]["limit_usd"] == str(limit) and refused["budget"]["scope"] == "key"


def test_ledger_equals_the_sum_of_settled_costs_and_never_exceeds_the_limit(start, table: Table) -> None:  # type: ignore[no-untyped-def]
    # Input costs something here: the reservation (a prompt bound of 29 tokens) exceeds the actual
    # cost (7 prompt tokens), so admissions free headroom as they settle.
    gw, key = start(prices={"mock/echo": {"input_per_mtok": 100, "output_per_mtok": 2500}})
    secret, key_id = key(budget_usd=Decimal("0.3"), period=Period.DAY)
    responses = fire(gw, secret, 60)
    ok = [r for r in responses if r.status_code == 200]
    price = Price(input_per_mtok=Decimal(100), output_per_mtok=Decimal(2500))
    settled = sum((cost_usd(price, Usage(**r.json()["usage"])) for r in ok), Decimal(0))
    row = ledger(table, "key", key_id)
    assert row["spent"] == settled and row["reserved"] == 0 and row["used"] == settled
    assert round(row["spent"], 2) == round(settled, 2)
    assert row["spent"] <= Decimal("0.3")
    per_request = price.output_per_mtok * 4 / 1_000_000 + price.input_per_mtok * 29 / 1_000_000
    assert len(ok) >= int(Decimal("0.3") / per_request)  # at least what fits at the reserved estimate
    assert {r.status_code for r in responses} <= {200, 402}


def test_failures_refund_their_reservations(limited, table: Table) -> None:  # type: ignore[no-untyped-def]
    gw, key = limited
    secret, key_id = key(budget_usd=Decimal("0.02"))
    for _ in range(5):
        assert post(gw, secret, "broken").status_code == 502
    row = ledger(table, "key", key_id)
    assert (row["spent"], row["reserved"], row["used"], row["requests"]) == (0, 0, 0, 5)
    assert reservations(table) == []
    assert post(gw, secret).status_code == 200  # the budget is intact


def test_fallback_settles_at_the_served_targets_price(limited, table: Table) -> None:  # type: ignore[no-untyped-def]
    gw, key = limited
    secret, key_id = key(budget_usd=Decimal(1))
    response = post(gw, secret, "fallback")
    assert response.status_code == 200 and response.headers["x-switchboard-provider"] == "backup"
    usage = Usage(**response.json()["usage"])
    served = Price(input_per_mtok=Decimal(1000), output_per_mtok=Decimal(5000))
    assert ledger(table, "key", key_id)["spent"] == cost_usd(served, usage)


def test_every_applicable_budget_is_enforced(limited, table: Table) -> None:  # type: ignore[no-untyped-def]
    gw, key = limited
    LimitStore(table).put(Scope.TEAM, "ml", Limits(budget_usd=Decimal("0.02"), period=Period.WEEK))
    LimitStore(table).put(Scope.MODEL, "metered", Limits(budget_usd=Decimal("0.03"), period=Period.TOTAL))
    first, _ = key(budget_usd=Decimal(10), team="ml")
    second, _ = key(budget_usd=Decimal(10), team="ml")
    outsider, _ = key()
    assert [post(gw, k).status_code for k in (first, second, first)] == [200, 200, 402]
    refusal = post(gw, second).json()["error"]
    assert refusal["budget"]["scope"] == "team" and "team 'ml'" in refusal["message"]
    assert "It resets at" in refusal["message"] and refusal["budget"]["resets_at"].endswith("T00:00:00Z")
    assert post(gw, outsider).status_code == 200  # not in the team; the model's total budget: 3 cents
    total = post(gw, outsider).json()["error"]
    assert total["budget"]["scope"] == "model" and "never resets" in total["message"]
    assert ledger(table, "team", "ml")["spent"] == Decimal("0.02")
    assert ledger(table, "model", "metered")["spent"] == Decimal("0.03")


def test_a_request_dearer_than_the_whole_budget_is_refused_without_a_write(limited, table: Table) -> None:  # type: ignore[no-untyped-def]
    gw, key = limited
    secret, key_id = key(budget_usd=Decimal("0.01"))
    refused = post(gw, secret, max_tokens=1000)
    assert refused.status_code == 402 and "more than the whole budget" in refused.json()["error"]["message"]
    assert ledger(table, "key", key_id) == {}


def test_a_model_without_a_price_is_refused_under_a_budget_but_not_counted_free(limited) -> None:  # type: ignore[no-untyped-def]
    gw, key = limited
    budgeted, _ = key(budget_usd=Decimal(5))
    refused = post(gw, budgeted, "unpriced")
    assert refused.status_code == 402 and refused.json()["error"]["code"] == "price_unknown"
    assert "mock/echo+unpriced" in refused.json()["error"]["message"]
    rated, _ = key(rpm=100)
    assert post(gw, rated, "unpriced").status_code == 200  # no budget: the price is not needed


def test_streams_settle_to_their_usage(limited, table: Table) -> None:  # type: ignore[no-untyped-def]
    gw, key = limited
    secret, key_id = key(budget_usd=Decimal(1))
    with_usage = post(gw, secret, stream=True, stream_options={"include_usage": True}, max_tokens=100)
    assert with_usage.status_code == 200 and with_usage.text.endswith("[DONE]\n\n")
    wait_for(lambda: not reservations(table))
    assert ledger(table, "key", key_id)["spent"] == Decimal("0.01")  # reserved $0.25 (100 tokens)
    # The gateway asks the upstream for usage even when the client did not (and strips it), so a
    # stream without include_usage settles to its usage too, not to its reservation.
    without = post(gw, secret, stream=True, max_tokens=100)
    assert without.status_code == 200 and '"usage":{' not in without.text
    wait_for(lambda: not reservations(table))
    assert ledger(table, "key", key_id)["spent"] == Decimal("0.02")


def test_round_trips_per_request(start, table: Table) -> None:  # type: ignore[no-untyped-def]
    # A flush far away: the spend ledger's write-behind stays out of the counted window.
    gw, key = start(settings={"spend_flush_s": 600.0})
    budgeted, _ = key(budget_usd=Decimal(5))
    rated, _ = key(budget_usd=Decimal(5), rpm=100, tpm=100_000)
    plain, plain_id = key()
    for secret in (budgeted, rated, plain):
        post(gw, secret)  # warm the key cache and the limit definitions
    measured = {}
    for name, secret in (("budget", budgeted), ("budget+rate", rated), ("none", plain)):
        before = call_counts()
        assert post(gw, secret).status_code == 200
        after = call_counts()
        measured[name] = {op: after[op] - before.get(op, 0) for op in after if after[op] != before.get(op, 0)}
    # The spend ledger rides on the settlement transaction; with no limits it waits for its flush.
    assert measured["budget"] == {"TransactWriteItems": 2}  # admit + settle
    assert measured["budget+rate"] == {"TransactWriteItems": 2, "BatchGetItem": 1}  # + headers' read
    assert measured["none"] == {}
    before = call_counts()
    gw.stop()  # shutdown flushes: one write for the plain key's two requests
    assert {op: n - before.get(op, 0) for op, n in call_counts().items() if n != before.get(op, 0)} == {
        "UpdateItem": 1
    }
    booked = spend_rows(table)
    assert [booked[k]["requests"] for k in sorted(booked)] == [2, 2, 2]
    assert booked[plain_id]["cost_usd"] == Decimal("0.02")


def test_a_request_with_limits_is_in_the_spend_ledger_once_it_is_settled(limited, table: Table) -> None:  # type: ignore[no-untyped-def]
    gw, key = limited
    secret, key_id = key(budget_usd=Decimal(1))
    assert post(gw, secret).status_code == 200
    assert post(gw, secret, "broken").status_code == 502  # refunded, and booked as an error
    assert post(gw, secret, stream=True).status_code == 200
    wait_for(lambda: not reservations(table))
    row = spend_rows(table)[key_id]  # no flush needed: the settlement transaction wrote it
    assert (row["requests"], row["errors"], row["cost_usd"]) == (3, 1, Decimal("0.02"))
    assert gw.gateway.spend is not None and gw.gateway.spend.pending == 0


def spend_rows(table: Table) -> dict[str, dict[str, Any]]:
    """This month's spend-ledger items of ``table``, summed over shards, by key id."""
    rows: dict[str, dict[str, Any]] = {}
    for shard in range(SHARDS):
        found = table.client.query(
            TableName=table.name,
            KeyConditionExpression="pk = :p",
            ExpressionAttributeValues={":p": {"S": f"spend#{period_of(time.time())}#{shard}"}},
        )
        for item in found["Items"]:
            row = rows.setdefault(item["key_id"]["S"], {"requests": 0, "errors": 0, "cost_usd": Decimal(0)})
            for name in row:
                row[name] += Decimal(item[name]["N"])
    return rows


class Refuser:
    """A hook after the limits that refuses every request, as a later check might."""

    async def admit(self, ex: Any) -> None:
        from switchboard.core.errors import RateLimited

        raise RateLimited("refused by a later hook")

    async def settle(self, ex: Any) -> None:
        pass


def test_a_refusal_by_a_later_hook_releases_the_reservation(limited, table: Table) -> None:  # type: ignore[no-untyped-def]
    gw, key = limited
    gw.gateway.hooks.insert(1, Refuser())
    secret, key_id = key(budget_usd=Decimal(1), rpm=10)
    assert post(gw, secret).status_code == 429
    row = ledger(table, "key", key_id)
    assert (row["used"], row["reserved"], row["spent"]) == (0, 0, 0)
    assert reservations(table) == []
