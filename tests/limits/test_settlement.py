"""Settlement under DynamoDB faults: every served request's cost is charged exactly once.

The faults sit at the ledger's seam (``tests/limits/faults.py``): moto alone never conflicts,
throttles or stops answering.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from decimal import Decimal
from typing import Any

import pytest
from switchboard.core.principal import Limits, Principal
from switchboard.core.schemas import ChatCompletionRequest
from switchboard.exchange import Exchange
from switchboard.limits.definitions import LimitCache, LimitStore
from switchboard.limits.hook import STATE, LimitsHook
from switchboard.limits.ledger import Ledger
from switchboard.limits.settlement import Backoff, Settler
from switchboard.limits.table import Table
from switchboard.routing.planner import plan

from tests.conftest import routing_doc
from tests.limits.conftest import fire, items, ledger, reservations, wait_for
from tests.limits.faults import install, settlement
from tests.limits.test_hook import PRICE, FixedRouting, answered

NOW = 1_800_000_000.0
FAST = Backoff(scale=0.001)  # the real shape, a thousandth of the waits


@pytest.fixture
def hook(table: Table) -> LimitsHook:
    doc = routing_doc("http://127.0.0.1:9", {"m": {"targets": [{"provider": "mock", "model": "echo"}]}})
    doc["prices"] = {"mock/echo": PRICE}
    ledger_ = Ledger(table, clock=lambda: NOW)
    return LimitsHook(
        ledger_,
        LimitCache(LimitStore(table), 30),
        FixedRouting(json.dumps(doc)),  # type: ignore[arg-type]
        max_request_s=60,
        clock=lambda: NOW,
        settler=Settler(ledger_, backoff=FAST),
    )


def exchange(request_id: str, hook: LimitsHook) -> Exchange:
    routing: Any = hook.routing
    principal = Principal("key_s", "s", limits=Limits(budget_usd=Decimal("1")))
    chat = ChatCompletionRequest(model="m", messages=[{"role": "user", "content": "a b c"}], max_tokens=4)
    return Exchange(request_id, principal, chat, "r1", plan(routing.loaded.document, "m"))


def served(ex: Exchange, completion: int = 2) -> Exchange:
    """Answered with ``completion`` output tokens: $0.0025 each (metered, as the pipeline does)."""
    return answered(ex, completion)


def run(hook: LimitsHook, body: Callable[[], Awaitable[None]]) -> None:
    """``body`` and then every background settlement, in one event loop."""

    async def go() -> None:
        await body()
        await hook.settler.join()

    asyncio.run(go())


def budget_row(table: Table) -> tuple[Any, Any, Any]:
    row = ledger(table, "key", "key_s")
    return row.get("spent", 0), row.get("reserved", 0), row.get("used", 0)


# ------------------------------------------------------------------------------ in process


def test_a_settlement_that_never_commits_is_recorded_and_the_sweeper_charges_that_cost(
    hook: LimitsHook, table: Table
) -> None:
    faults = install(hook.ledger)
    ex = exchange("req_throttled", hook)

    async def body() -> None:
        await hook.admit(ex)
        faults.add("transact_write_items", "pte", when=settlement)  # every settlement, for good
        await hook.settle(served(ex))  # answered at once; the settlement goes on behind it

    run(hook, body)
    [held] = reservations(table)
    assert held["pending_usd"] == Decimal("0.005") and held["pending_tokens"] == 9
    assert budget_row(table) == (0, Decimal("0.01"), Decimal("0.01"))  # still held at the estimate
    assert hook.settler.stats.recorded == 1 and hook.settler.pending == 0
    faults.clear()
    swept = hook.ledger.sweep(now=ex.state[STATE].expires_at + 1)
    assert swept.refunded == [] and [(h.request_id, usd) for h, usd in swept.settled] == [
        ("req_throttled", Decimal("0.005"))
    ]
    assert budget_row(table) == (Decimal("0.005"), 0, Decimal("0.005"))  # charged, not refunded
    assert reservations(table) == []
    assert hook.ledger.sweep(now=NOW + 10_000).settled == []  # once


def test_the_buffered_handler_records_a_failed_settlement_before_the_response(
    hook: LimitsHook, table: Table
) -> None:
    hook.settler.record_inline = True  # Mangum: nothing may run after the response
    faults = install(hook.ledger)
    ex = exchange("req_buffered", hook)

    async def body() -> None:
        await hook.admit(ex)
        faults.add("transact_write_items", "pte", when=settlement)
        await hook.settle(served(ex))
        [held] = reservations(table)  # before the response, not in the background
        assert held["pending_usd"] == Decimal("0.005")

    run(hook, body)
    assert faults.calls["update_item"] == 1  # recorded once, not again by the background


def test_throttling_then_recovery_settles_in_the_background(hook: LimitsHook, table: Table) -> None:
    faults = install(hook.ledger)
    ex = exchange("req_recovers", hook)

    async def body() -> None:
        await hook.admit(ex)
        faults.add("transact_write_items", "throttle", when=settlement, times=3)
        await hook.settle(served(ex))
        assert budget_row(table)[0] == 0  # not yet: the response did not wait

    run(hook, body)
    assert budget_row(table) == (Decimal("0.005"), 0, Decimal("0.005"))
    assert reservations(table) == []
    assert faults.calls["update_item"] == 1  # the cost was recorded before the long waits
    assert hook.settler.stats.deferred == 1


def test_a_settlement_that_committed_but_lost_its_answer_is_not_charged_twice(
    hook: LimitsHook, table: Table
) -> None:
    faults = install(hook.ledger)
    ex = exchange("req_lost", hook)

    async def body() -> None:
        await hook.admit(ex)
        faults.add("transact_write_items", "lost", when=settlement, times=1)
        await hook.settle(served(ex))

    run(hook, body)
    assert hook.settler.stats.deferred == 1  # it looked failed and was retried...
    assert budget_row(table) == (Decimal("0.005"), 0, Decimal("0.005"))  # ...and charged once
    assert reservations(table) == []
    assert hook.ledger.sweep(now=NOW + 10_000).settled == []


def test_a_settlement_whose_answer_comes_after_the_inline_wait_is_not_retried(
    hook: LimitsHook, table: Table
) -> None:
    faults = install(hook.ledger)
    hook.settler.inline_timeout_s = 0.05
    ex = exchange("req_slow", hook)

    async def body() -> None:
        await hook.admit(ex)
        faults.add("transact_write_items", "late", when=settlement, times=1, block_s=0.5)
        await hook.settle(served(ex))

    run(hook, body)
    assert budget_row(table) == (Decimal("0.005"), 0, Decimal("0.005"))
    assert faults.calls["transact_write_items"] == 2  # the admission and the one settlement


def test_a_settlement_whose_caller_is_cancelled_still_completes(hook: LimitsHook, table: Table) -> None:
    faults = install(hook.ledger)
    ex = exchange("req_cancelled", hook)

    async def body() -> None:
        await hook.admit(ex)
        faults.add("transact_write_items", "conflict", when=settlement, times=6)  # the inline tries fail...
        settling = asyncio.ensure_future(hook.settle(served(ex)))
        await asyncio.sleep(0)
        settling.cancel()  # ...after the client went away (a buffered response abandoned)
        with pytest.raises(asyncio.CancelledError):
            await settling

    run(hook, body)
    assert budget_row(table) == (Decimal("0.005"), 0, Decimal("0.005"))
    assert reservations(table) == []


def test_when_even_the_record_fails_the_settlement_is_kept_in_memory_until_shutdown(
    hook: LimitsHook, table: Table
) -> None:
    faults = install(hook.ledger)
    hook.settler.retry_every_s = 60.0
    ex = exchange("req_stranded", hook)

    async def body() -> None:
        await hook.admit(ex)
        faults.add("transact_write_items", "blackhole", when=settlement, block_s=0.01)
        faults.add("update_item", "blackhole", block_s=0.01)
        await hook.settle(served(ex))
        await hook.settler.join(timeout_s=5)
        assert hook.settler.stats.stranded == 1 and hook.settler.pending == 1  # held in memory
        faults.clear()
        await hook.drain()  # the shutdown flush

    run(hook, body)
    assert budget_row(table) == (Decimal("0.005"), 0, Decimal("0.005"))
    assert hook.settler.pending == 0


def test_limit_definitions_that_do_not_load_refuse_with_503_within_the_deadline(
    hook: LimitsHook, table: Table
) -> None:
    import time

    from switchboard.limits.hook import LimitsUnavailable

    faults = install(hook.ledger)  # the definitions share the ledger's table
    faults.add("query", "blackhole", block_s=10)
    ex = exchange("req_nodefs", hook)
    ex.deadline = time.monotonic() + 0.5

    async def body() -> None:
        try:
            with pytest.raises(LimitsUnavailable) as refused:
                await asyncio.wait_for(hook.admit(ex), 3)  # bounded: a stall fails the test
        finally:
            faults.clear()  # the blocked read may end now
        assert refused.value.status == 503 and refused.value.headers["retry-after"] == "2"

    run(hook, body)
    assert reservations(table) == []


def test_a_settlement_held_in_memory_is_retried_until_dynamodb_answers(
    hook: LimitsHook, table: Table
) -> None:
    faults = install(hook.ledger)
    hook.settler.retry_every_s = 0.01
    ex = exchange("req_retried", hook)

    async def body() -> None:
        await hook.admit(ex)
        faults.add("transact_write_items", "throttle", when=settlement)
        faults.add("update_item", "throttle")
        await hook.settle(served(ex))
        await hook.settler.join(timeout_s=5)
        assert hook.settler.stats.stranded == 1
        faults.clear()
        for _ in range(500):  # bounded: the retry loop runs every 10 ms
            if hook.settler.pending == 0:
                break
            await asyncio.sleep(0.01)

    run(hook, body)
    assert hook.settler.pending == 0
    assert budget_row(table) == (Decimal("0.005"), 0, Decimal("0.005"))


def test_the_backoff_is_short_for_conflicts_and_botocore_standard_for_throttling(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import switchboard.limits.settlement as module

    monkeypatch.setattr(module.random, "random", lambda: 1.0)  # the ceiling of each full-jitter wait
    backoff = Backoff()
    assert [backoff.delay(n, slow=False) for n in range(1, 8)] == [0.02, 0.04, 0.08, 0.16, 0.32, 0.5, 0.5]
    assert [backoff.delay(n, slow=True) for n in range(1, 8)] == [1, 2, 4, 8, 16, 20, 20]
    assert sum(backoff.delay(n, slow=True) for n in range(1, backoff.max_attempts + 1)) > backoff.max_total_s


# ---------------------------------------------------------------------------------- HTTP


def test_under_heavy_conflicts_every_served_cost_is_charged_exactly_once(limited, table: Table) -> None:  # type: ignore[no-untyped-def]
    gw, key = limited
    secret, key_id = key(budget_usd=100)
    hook = gw.gateway.hooks[0]
    faults = install(hook.ledger, seed=11)
    # 80% of every transaction (admissions and settlements) is cancelled for a conflict: six
    # inline tries fail a quarter of the settlements, and the background still loses some.
    faults.add("transact_write_items", "conflict", rate=0.8)
    answers = fire(gw, secret, 40)
    codes = sorted(
        {(r.status_code, r.json()["error"]["code"] if r.status_code != 200 else None) for r in answers}
    )
    assert set(codes) <= {(200, None), (503, "limits_busy")}
    served_usd = sum(Decimal(str(r.json()["usage"]["cost"])) for r in answers if r.status_code == 200)
    assert served_usd > 0
    wait_for(lambda: hook.settler.pending == 0, timeout=30)
    faults.clear()
    assert hook.settler.stats.deferred > 0  # the background did work
    hook.ledger.sweep(now=10**10)  # what is left is recorded: the sweeper charges it
    assert reservations(table) == []
    row = ledger(table, "key", key_id)
    assert row["spent"] == served_usd and row["used"] == served_usd and row["reserved"] == 0
    wait_for(lambda: gw.gateway.spend is None or gw.gateway.spend.pending == 0)
    booked = sum(Decimal(i["cost_usd"]) for i in items(table) if str(i["pk"]).startswith("spend#"))
    assert booked == served_usd  # and the spend ledger booked each one once, with its settlement


def test_admission_with_conflicts_exhausted_is_a_503_limits_busy(limited, table: Table) -> None:  # type: ignore[no-untyped-def]
    from tests.limits.conftest import post

    gw, key = limited
    secret, key_id = key(budget_usd=1)
    faults = install(gw.gateway.hooks[0].ledger)
    faults.add("transact_write_items", "conflict")
    busy = post(gw, secret)
    assert busy.status_code == 503 and busy.headers["retry-after"] == "1"
    error = busy.json()["error"]
    assert error["code"] == "limits_busy" and error["type"] == "server_error"
    faults.clear()
    faults.add("transact_write_items", "pte")
    throttled = post(gw, secret)
    assert throttled.status_code == 503 and throttled.json()["error"]["code"] == "limits_busy"
    assert throttled.headers["retry-after"] == "2"
    faults.clear()
    assert post(gw, secret).status_code == 200
    assert ledger(table, "key", key_id)["requests"] == 1  # the refused ones wrote nothing


def test_admission_against_a_blackholed_table_is_a_503_within_the_clients_timeout(
    limited,  # type: ignore[no-untyped-def]
    table: Table,
) -> None:
    import httpx

    gw, key = limited
    secret, key_id = key(budget_usd=1)
    hook = gw.gateway.hooks[0]
    faults = install(hook.ledger)
    # The admission hangs, then commits after the gateway stopped waiting: it must be given back.
    faults.add("transact_write_items", "late", times=1, block_s=10)
    answer = httpx.post(
        gw.v1 + "/chat/completions",
        json={"model": "metered", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4},
        headers={"authorization": f"Bearer {secret}", "x-switchboard-timeout": "1"},
        timeout=2.5,  # bounded, under admit_timeout_s (3 s): it must answer within the client's 1 s
    )
    assert answer.status_code == 503 and answer.headers["retry-after"] == "2"
    assert answer.json()["error"]["code"] == "limits_unavailable"
    faults.clear()  # DynamoDB answers again: the late admission commits, and is refunded
    wait_for(lambda: hook.settler.pending == 0, timeout=10)
    row = ledger(table, "key", key_id)
    assert (row["used"], row["reserved"], row.get("spent", 0)) == (0, 0, 0)
    assert reservations(table) == []


def test_fail_open_serves_and_books_the_request_once_dynamodb_answers(start, table: Table) -> None:  # type: ignore[no-untyped-def]
    import httpx

    # The admission gives up after 0.5 s and the request has 5 s: on a loaded machine a 1 s
    # deadline, the admission waiting for all but its last 0.1 s, left the upstream too little.
    gw, key = start(settings={"limits_fail_open": "on", "admit_timeout_s": 0.5})
    secret, key_id = key(budget_usd=1)
    hook = gw.gateway.hooks[0]
    assert hook.fail_open
    faults = install(hook.ledger)
    faults.add("transact_write_items", "blackhole", times=1, block_s=10)
    answer = httpx.post(
        gw.v1 + "/chat/completions",
        json={"model": "metered", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4},
        headers={"authorization": f"Bearer {secret}", "x-switchboard-timeout": "5"},
        timeout=10,
    )
    assert answer.status_code == 200, answer.text
    cost = Decimal(str(answer.json()["usage"]["cost"]))
    faults.clear()
    wait_for(lambda: hook.settler.pending == 0, timeout=15)
    row = ledger(table, "key", key_id)
    assert (row["spent"], row["reserved"], row["used"]) == (cost, 0, cost)  # booked late, once
    assert reservations(table) == []


def test_fail_closed_is_the_default(limited) -> None:  # type: ignore[no-untyped-def]
    gw, _ = limited
    assert gw.gateway.hooks[0].fail_open is False


def test_the_sweeper_leaves_a_busy_reservation_for_the_next_sweep(table: Table) -> None:
    from tests.limits.test_ledger import reservation

    book = Ledger(table, clock=lambda: NOW, sleep=lambda s: None)
    book.reserve(reservation("req_one"))
    book.reserve(reservation("req_two"))
    faults = install(book)
    faults.add("transact_write_items", "conflict", when=settlement, times=6)  # one settlement's tries
    first = book.sweep(now=NOW + 601)
    assert (first.busy, len(first.refunded)) == (1, 1)
    second = book.sweep(now=NOW + 601)
    assert (second.busy, len(second.refunded)) == (0, 1)
    assert reservations(table) == [] and ledger(table, "key", "k1")["used"] == 0


def test_a_stream_whose_settlement_meets_a_dynamodb_outage_is_charged_once_it_ends(
    limited, table: Table
) -> None:  # type: ignore[no-untyped-def]
    from tests.limits.conftest import post

    gw, key = limited
    secret, key_id = key(budget_usd=1)
    hook = gw.gateway.hooks[0]
    faults = install(hook.ledger)
    # DynamoDB drops while the stream runs: the settlement after its last byte gets no answer,
    # nor does the record; then it comes back.
    faults.add("transact_write_items", "blackhole", when=settlement, times=2, block_s=0.2)
    faults.add("update_item", "blackhole", times=1, block_s=0.2)
    answer = post(gw, secret, stream=True, stream_options={"include_usage": True}, max_tokens=100)
    assert answer.status_code == 200 and answer.text.endswith("[DONE]\n\n")
    wait_for(lambda: hook.settler.pending == 0, timeout=20)
    assert reservations(table) == []
    row = ledger(table, "key", key_id)
    assert (row["spent"], row["reserved"]) == (Decimal("0.01"), 0)  # reserved $0.25, served $0.01


def test_fail_open_is_a_deployment_parameter_that_defaults_to_closed() -> None:
    from switchboard.core.settings import Settings
    from switchboard.devtools.cfn import load_template
    from switchboard.devtools.devstack import TEMPLATE

    template = load_template(TEMPLATE)
    assert template["Parameters"]["LimitsFailOpen"]["Default"] == "off"
    env = template["Resources"]["GatewayFunction"]["Properties"]["Environment"]["Variables"]
    assert env["SWITCHBOARD_LIMITS_FAIL_OPEN"] == {"Ref": "LimitsFailOpen"}
    assert Settings.from_env({}).limits_fail_open == "off"
    assert Settings.from_env({"SWITCHBOARD_LIMITS_FAIL_OPEN": "on"}).limits_fail_open == "on"


def test_the_gateways_shutdown_writes_the_settlements_held_in_memory(limited, table: Table) -> None:  # type: ignore[no-untyped-def]
    from tests.limits.conftest import post

    gw, key = limited
    secret, key_id = key(budget_usd=1)
    hook = gw.gateway.hooks[0]
    hook.settler.backoff, hook.settler.retry_every_s = FAST, 3600.0
    faults = install(hook.ledger)
    faults.add("transact_write_items", "throttle", when=settlement)
    faults.add("update_item", "throttle")
    answer = post(gw, secret)
    assert answer.status_code == 200
    wait_for(lambda: hook.settler.stats.stranded == 1, timeout=10)
    faults.clear()  # DynamoDB is back; the next retry would be in an hour, but the server stops
    gw.stop()  # uvicorn's lifespan shutdown: Gateway.flush
    row = ledger(table, "key", key_id)
    assert (row["spent"], row["reserved"]) == (Decimal(str(answer.json()["usage"]["cost"])), 0)
    assert reservations(table) == []


def test_messages_and_embeddings_refuse_in_their_own_shape_within_the_deadline(start, table: Table) -> None:  # type: ignore[no-untyped-def]
    import httpx

    from tests.limits.conftest import MODELS
    from tests.limits.test_side_endpoints_http import BROKEN_EMBED, EMBED, PRICES

    gw, key = start(prices=PRICES, models={**MODELS, "embed": EMBED, "broken-embed": BROKEN_EMBED})
    secret, _ = key(budget_usd=1)
    faults = install(gw.gateway.hooks[0].ledger)
    faults.add("transact_write_items", "blackhole", block_s=5)
    timeout = {"x-switchboard-timeout": "1"}
    try:
        message = httpx.post(
            gw.v1 + "/messages",
            json={"model": "metered", "max_tokens": 4, "messages": [{"role": "user", "content": "a b c"}]},
            headers={"x-api-key": secret, **timeout},
            timeout=2.5,  # bounded, and under admit_timeout_s (3 s): the deadline is 1 s
        )
        vectors = httpx.post(
            gw.v1 + "/embeddings",
            json={"model": "embed", "input": "one two"},
            headers={"authorization": f"Bearer {secret}", **timeout},
            timeout=2.5,
        )
    finally:
        faults.clear()
    assert message.status_code == 503 and message.headers["retry-after"] == "2"
    assert message.json()["type"] == "error" and message.json()["error"]["type"] in {
        "api_error",
        "overloaded_error",
    }
    assert vectors.status_code == 503 and vectors.json()["error"]["code"] == "limits_unavailable"
