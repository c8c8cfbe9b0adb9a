"""The limits hook in-process against moto: settle idempotence, refunds, and orphaned reservations."""

from __future__ import annotations

import asyncio
from decimal import Decimal
from typing import Any

import pytest
from switchboard.billing import metering
from switchboard.core.money import Price
from switchboard.core.principal import Limits, Principal
from switchboard.core.schemas import ChatCompletionRequest, Usage
from switchboard.exchange import Exchange
from switchboard.limits.definitions import LimitCache, LimitStore
from switchboard.limits.hook import STATE, LimitsHook
from switchboard.limits.ledger import Ledger
from switchboard.limits.table import Table
from switchboard.routing.document import load_document
from switchboard.routing.planner import plan
from switchboard.routing.pricing import PriceMatch
from switchboard.routing.store import LoadedRouting

from tests.conftest import routing_doc
from tests.limits.conftest import ledger, reservations

NOW = 1_800_000_000.0
PRICE = {"input_per_mtok": 0, "output_per_mtok": 2500}  # $0.0025 per output token: 4 tokens = 1 cent


class FixedRouting:
    def __init__(self, text: str) -> None:
        document, revision = load_document(text)
        self.loaded = LoadedRouting(document, revision)

    async def current(self) -> LoadedRouting:
        return self.loaded


@pytest.fixture
def hook(table: Table) -> LimitsHook:
    import json

    doc = routing_doc("http://127.0.0.1:9", {"m": {"targets": [{"provider": "mock", "model": "echo"}]}})
    doc["prices"] = {"mock/echo": PRICE}
    routing = FixedRouting(json.dumps(doc))
    return LimitsHook(
        Ledger(table, clock=lambda: NOW),
        LimitCache(LimitStore(table), 30),
        routing,  # type: ignore[arg-type]
        max_request_s=60,
        clock=lambda: NOW,
    )


def exchange(hook: LimitsHook, request_id: str, budget: str = "1", **chat: Any) -> Exchange:
    routing: Any = hook.routing
    principal = Principal("key_h", "h", limits=Limits(budget_usd=Decimal(budget)))
    request = ChatCompletionRequest(
        model="m", messages=[{"role": "user", "content": "a b c"}], max_tokens=4, **chat
    )
    return Exchange(request_id, principal, request, "r1", plan(routing.loaded.document, "m"))


def answered(ex: Exchange, completion: int = 4) -> Exchange:
    """``ex`` answered, metered as the pipeline meters it: the hook reads the cost from it."""
    ex.target, ex.outcome, ex.status = ex.plan.targets[0], "ok", 200
    usage = Usage(prompt_tokens=7, completion_tokens=completion, total_tokens=7 + completion)
    metering.record(ex, usage, 0, PriceMatch(Price.model_validate(PRICE), "mock/echo", "override"))
    return ex


def test_settling_twice_counts_once(hook: LimitsHook, table: Table) -> None:
    ex = exchange(hook, "req_twice")
    asyncio.run(hook.admit(ex))
    assert ledger(table, "key", "key_h")["reserved"] == Decimal("0.01")
    answered(ex, completion=2)
    asyncio.run(hook.settle(ex))
    asyncio.run(hook.settle(ex))
    row = ledger(table, "key", "key_h")
    assert (row["spent"], row["reserved"], row["used"]) == (Decimal("0.005"), 0, Decimal("0.005"))


@pytest.mark.parametrize("outcome", ["error", "rejected", "pending"])
def test_every_unanswered_outcome_refunds(hook: LimitsHook, table: Table, outcome: str) -> None:
    ex = exchange(hook, f"req_{outcome}")
    asyncio.run(hook.admit(ex))
    ex.outcome = outcome
    asyncio.run(hook.settle(ex))
    row = ledger(table, "key", "key_h")
    assert (row["spent"], row["reserved"], row["used"]) == (0, 0, 0)
    assert reservations(table) == []


def test_an_answer_without_usage_is_charged_its_reservation(hook: LimitsHook, table: Table) -> None:
    ex = exchange(hook, "req_blind", n=2)  # two choices: 8 output tokens reserved
    asyncio.run(hook.admit(ex))
    ex.target, ex.outcome = ex.plan.targets[0], "interrupted"
    asyncio.run(hook.settle(ex))
    assert ledger(table, "key", "key_h")["spent"] == Decimal("0.02")


def test_a_killed_instance_leaves_a_reservation_that_expires_and_is_swept(
    hook: LimitsHook, table: Table
) -> None:
    ex = exchange(hook, "req_killed")
    asyncio.run(hook.admit(ex))  # ... and the instance dies: no settle
    held = ex.state[STATE]
    assert held.expires_at == int(NOW) + 60 + 60  # the request's deadline plus the sweeper's grace
    [item] = reservations(table)
    assert item["ttl"] == held.expires_at + 7 * 86_400  # TTL is the backstop; the sweeper refunds
    assert hook.ledger.sweep(now=held.expires_at - 1).refunded == []  # not expired yet
    assert [h.request_id for h in hook.ledger.sweep(now=held.expires_at + 1).refunded] == ["req_killed"]
    assert ledger(table, "key", "key_h")["used"] == 0
    asyncio.run(hook.settle(answered(ex)))  # the request turns up after all: too late, a no-op
    assert ledger(table, "key", "key_h")["spent"] == 0


def test_the_reservation_expires_with_the_request_deadline(hook: LimitsHook, table: Table) -> None:
    """The reservation lives as long as its request may (the deadline: the client's timeout capped
    by the function's), not ``max_request_s``: the next sweep after it refunds a killed request."""
    import time

    ex = exchange(hook, "req_bounded")
    ex.deadline = time.monotonic() + 20
    asyncio.run(hook.admit(ex))
    held = ex.state[STATE]
    assert int(NOW) + 19 + 60 <= held.expires_at <= int(NOW) + 20 + 60
    assert [h.request_id for h in hook.ledger.sweep(now=held.expires_at + 1).refunded] == ["req_bounded"]


def test_a_request_with_no_limits_costs_no_call(hook: LimitsHook, table: Table) -> None:
    ex = exchange(hook, "req_free")
    ex.principal = Principal("key_free", "free")
    asyncio.run(hook.admit(ex))
    assert STATE not in ex.state and ex.headers == {}
    asyncio.run(hook.settle(ex))
    assert reservations(table) == []


def test_admission_estimates_at_the_built_in_price_when_the_document_has_none(table: Table) -> None:
    """One price lookup (``routing.pricing.PriceBook``): the routing document's prices over the
    built-in table. A hook built without one of its own uses it, so a budgeted request to a model
    with a built-in list price is admitted and reserved at that price, not refused as unpriced."""
    import json

    from switchboard.core.money import estimate_prompt_tokens
    from switchboard.limits.model import estimate_usd, ledger_usd, output_bound
    from switchboard.routing.pricing import builtin_prices

    doc = routing_doc(
        "http://127.0.0.1:9", {"m": {"targets": [{"provider": "openai", "model": "gpt-4o-mini"}]}}
    )
    doc["providers"]["openai"] = {
        "kind": "openai",
        "base_url": "https://api.openai.com/v1",
        "api_key": {"ssm": "/x"},
    }
    routing: Any = FixedRouting(json.dumps(doc))
    assert routing.loaded.document.prices == {}
    hook = LimitsHook(
        Ledger(table, clock=lambda: NOW),
        LimitCache(LimitStore(table), 30),
        routing,
        max_request_s=60,
        clock=lambda: NOW,
    )
    ex = exchange(hook, "req_builtin")
    asyncio.run(hook.admit(ex))  # before: 402 price_unknown (the hook read the document's prices only)
    price = builtin_prices().prices["openai/gpt-4o-mini"]
    chat = ex.chat
    expected = estimate_usd(price, estimate_prompt_tokens(chat), output_bound(chat.output_cap, price, 1))
    assert expected > 0 and ex.state[STATE].usd == expected
    assert ledger(table, "key", "key_h")["reserved"] == ledger_usd(expected)
