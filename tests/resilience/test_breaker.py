"""The shared circuit breaker: two ``Breaker`` instances (two gateways' worth of state) over one
moto table, on a fake clock and a scripted random draw, so every transition is exact.

The HTTP test with two gateway processes is ``test_breaker_http.py``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from switchboard.routing.breaker import Breaker, status_at
from switchboard.routing.document import BreakerPolicy, RoutingDocument
from switchboard.routing.planner import Plan, plan

from tests.limits.conftest import make_table

POLICY = BreakerPolicy(
    window_s=60,
    min_requests=4,
    error_rate=0.5,
    open_s=10,
    ramp_s=10,
    probe_share=0.2,
    half_open_min_requests=2,
)
DOC = RoutingDocument.model_validate(
    {
        "version": 1,
        "providers": {n: {"kind": "openai", "base_url": "http://x"} for n in ("a", "b")},
        "models": {"m": {"targets": [{"provider": "a", "model": "x"}, {"provider": "b", "model": "x"}]}},
    }
)


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def table(aws: str) -> Iterator[str]:
    made = make_table()
    yield made.name
    made.client.delete_table(TableName=made.name)


def pair(table: str, clock: Clock, draws: list[float] | None = None) -> tuple[Breaker, Breaker]:
    client = boto3.client("dynamodb", region_name="us-east-1")
    gauges: list[tuple[str, float]] = []

    def make() -> Breaker:
        rand = iter(draws or []).__next__ if draws else (lambda: 0.0)
        return Breaker(
            table,
            lambda: client,
            report_s=0,
            cache_s=0,
            clock=clock,
            rand=rand,
            metric=lambda t, v: gauges.append((t, v)),
        )

    return make(), make()


async def settle(*breakers: Breaker) -> None:
    for breaker in breakers:
        while breaker._tasks:
            await asyncio.gather(*list(breaker._tasks))


async def targets(breaker: Breaker) -> tuple[list[str], str | None]:
    """The plan's targets after the breaker, once the breaker's background read is in."""
    breaker.filter(plan(DOC, "m"), POLICY)  # starts the read of any stale state
    await settle(breaker)
    filtered, _, header = breaker.filter(plan(DOC, "m"), POLICY)
    await settle(breaker)
    return [t.label for t in filtered.targets], header


def test_status_follows_opened_at() -> None:
    assert status_at(None, POLICY, 5).name == "closed"
    assert status_at(100, POLICY, 105).name == "open"
    half = status_at(100, POLICY, 115)
    assert half.name == "half-open" and half.share == pytest.approx(0.2 + 0.8 * 0.5)
    assert status_at(100, POLICY, 120.5).name == "closed"


async def test_opens_half_opens_and_closes_across_two_instances(table: str) -> None:
    clock = Clock()
    first, second = pair(table, clock)
    for b in (first, second):
        b.filter(plan(DOC, "m"), POLICY)
    await settle(first, second)
    # Three failures and one success on the first instance, one more failure on the second:
    # neither alone has min_requests failing at the error rate, together (in DynamoDB) they do.
    for ok in (False, False, True):
        first.record("a/x", ok=ok)
        await settle(first)
    assert (await targets(second))[0] == ["a/x", "b/x"]
    second.record("a/x", ok=False)
    await settle(second)
    assert await targets(second) == (["b/x"], "skipped a/x open")
    assert await targets(first) == (["b/x"], "skipped a/x open")  # read from DynamoDB

    clock.now += POLICY.open_s + POLICY.ramp_s / 2  # half-open: 60% let through
    first.rand = lambda: 0.59  # a draw under the share lets the target through
    assert await targets(first) == (["a/x", "b/x"], None)
    # A draw above the share holds the target back, with the header saying why.
    first.rand = lambda: 0.61
    held = first.filter(plan(DOC, "m"), POLICY)
    assert [t.label for t in held[0].targets] == ["b/x"] and held[2] == "skipped a/x half-open"
    assert held[1][0].reason == "breaker: half-open, 60% let through"

    clock.now += POLICY.ramp_s  # the ramp is over: closed on both
    first.rand = second.rand = lambda: 0.99
    assert await targets(first) == (["a/x", "b/x"], None)
    assert await targets(second) == (["a/x", "b/x"], None)


async def test_failing_probes_open_it_again(table: str) -> None:
    clock = Clock()
    first, second = pair(table, clock)
    first.filter(plan(DOC, "m"), POLICY)
    for _ in range(4):
        first.record("a/x", ok=False)
        await settle(first)
    opened = await targets(second)
    assert opened[0] == ["b/x"]
    clock.now += POLICY.open_s + 1  # half-open; its windows start afresh (keyed by opened_at)
    assert (await targets(second))[0] in (["a/x", "b/x"], ["b/x"])
    second.record("a/x", ok=False)
    await settle(second)
    assert status_at(second._targets["a/x"].opened_at, POLICY, clock.now).name == "half-open"
    second.record("a/x", ok=False)  # two failing probes: half_open_min_requests at 100%
    await settle(second)
    assert await targets(first) == (["b/x"], "skipped a/x open")
    reopened = first._targets["a/x"].opened_at
    assert reopened == clock.now


async def test_only_one_instance_opens_it(table: str) -> None:
    clock = Clock()
    first, second = pair(table, clock)
    for b in (first, second):
        b.filter(plan(DOC, "m"), POLICY)
    await settle(first, second)
    for _ in range(4):
        first.record("a/x", ok=False)
        second.record("a/x", ok=False)
        await settle(first, second)
    client = boto3.client("dynamodb", region_name="us-east-1")
    item = client.get_item(TableName=table, Key={"pk": {"S": "breaker#a/x"}, "sk": {"S": "state"}})["Item"]
    opened = float(item["opened_at"]["N"])
    clock.now += 1
    await targets(first)
    await targets(second)
    assert first._targets["a/x"].opened_at == second._targets["a/x"].opened_at == opened


async def test_every_target_open_tries_the_one_that_failed_least_recently(table: str) -> None:
    clock = Clock()
    first, _ = pair(table, clock)
    first.filter(plan(DOC, "m"), POLICY)
    for label in ("b/x", "a/x"):  # b opens first, then a
        for _ in range(4):
            first.record(label, ok=False)
            await settle(first)
        clock.now += 1
    filtered, decisions, header = first.filter(plan(DOC, "m"), POLICY)
    assert [t.label for t in filtered.targets] == ["b/x"]
    assert header == "all-open; tried b/x"
    assert {d.target: d.kept for d in decisions} == {"a/x": False, "b/x": True}


async def test_writes_are_bounded_by_the_report_interval(table: str) -> None:
    clock = Clock()
    client = boto3.client("dynamodb", region_name="us-east-1")
    calls: list[str] = []

    class Counting:
        def __getattr__(self, name: str) -> Any:
            calls.append(name)
            return getattr(client, name)

    breaker = Breaker(table, Counting, report_s=5, cache_s=1000, clock=clock, metric=lambda t, v: None)
    breaker.filter(plan(DOC, "m"), POLICY)
    await settle(breaker)
    calls.clear()
    for _ in range(50):  # 50 attempts within one report interval: one write
        breaker.record("b/x", ok=True)
        await settle(breaker)
    clock.now += 5
    breaker.record("b/x", ok=True)
    await settle(breaker)
    assert calls == ["update_item", "update_item"]
    key = {"pk": {"S": "breaker#b/x"}, "sk": {"S": f"w#0#{int(clock.now // 60)}"}}
    assert client.get_item(TableName=table, Key=key)["Item"]["ok"]["N"] == "51"


def test_off_without_a_policy() -> None:
    breaker = Breaker("t", lambda: None)
    filtered, decisions, header = breaker.filter(plan(DOC, "m"), None)
    assert isinstance(filtered, Plan) and len(filtered.targets) == 2 and header is None
    assert all(d.kept for d in decisions)
