"""SSM calls per second against the number of warm instances: today's polling vs the fleet's copy.

A discrete-event simulation on a virtual clock (deterministic, a few seconds): ``N`` warm
instances, each serving requests all the time, so each re-reads its routing source once its copy is
``max_age_s`` old (5 s). SSM is modelled as its default throughput quota, a token bucket of 40
``GetParameter`` calls a second, answering ``ThrottlingException`` beyond it; a throttled read is
retried as the gateway's client does (up to 3 attempts, backoff ``rand * 1 s * 2^k``), and a read
that fails is tried again ``max_age_s`` later while the last copy keeps serving.

``today``  every instance reads the parameter itself (``RoutingStore`` without a table).
``copy``   every instance reads the fleet's copy through the real ``switchboard.routing.copy.FleetCopy``
           over an in-memory table (its conditional writes evaluated as DynamoDB does) and the
           same SSM model; DynamoDB reads are counted, not limited (one item, eventually
           consistent reads of a few KB: 1,000 instances at 5 s are 200 reads/s, a tenth of one
           partition's 3,000 read units).

An edit is pushed at ``EDIT_AT_S``; an instance has it once a read that started after the edit
succeeds. Then a cold-start storm: all ``N`` instances start within ``STORM_S`` (a deploy, a
traffic spike) and each must load routing within its wait (``TIMEOUT_S``) or answer 503; with the
copy the storm reads DynamoDB (the copy written by the fleet before it).

One line per instance count (``make scale-sim-ssm``; docs/routing.md has a run)::

    instances 1000: today 443.7 SSM calls/s (403.7 throttled/s), edit everywhere: 99% after 120 s |
    copy 0.20 SSM calls/s, 198 DynamoDB reads/s, edit everywhere in 5.6 s |
    cold starts in 10 s served: today 47%, copy 100%

    python -m switchboard.devtools.ssmsim [--instances 10,100,1000,5000] [--seconds 180]
"""

from __future__ import annotations

import argparse
import heapq
import json
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from switchboard.routing.copy import FleetCopy, edit_bound_s

__all__ = ["Result", "cold_starts", "main", "simulate"]

PARAM = "/switchboard/routing"
SSM_RATE = 40.0  # GetParameter calls/s: SSM's default throughput quota
MAX_AGE_S = 5.0  # SWITCHBOARD_ROUTING_MAX_AGE_S
TIMEOUT_S = 1.0  # SWITCHBOARD_AWS_TIMEOUT_S
ATTEMPTS = 3  # the light client's attempts per call
THROTTLE_BASE_S = 1.0  # its backoff base after a throttle
REQUEST_GAP_S = 0.05  # a busy instance's next request after its copy expires
WARMUP_S = 30.0  # calls are counted after the cold starts have settled
EDIT_AT_S = 60.0
STORM_S = 10.0


class Throttled(Exception):
    def __init__(self) -> None:
        super().__init__("ThrottlingException")
        self.response = {"Error": {"Code": "ThrottlingException"}}


class ConditionFailed(Exception):
    def __init__(self) -> None:
        super().__init__("ConditionalCheckFailedException")
        self.response = {"Error": {"Code": "ConditionalCheckFailedException"}}


@dataclass
class VirtualClock:
    now: float = 0.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Ssm:
    """One parameter behind a token bucket of ``rate`` calls a second."""

    clock: VirtualClock
    value: str
    rate: float = SSM_RATE
    tokens: float = SSM_RATE
    last: float = 0.0
    calls: int = 0
    throttled: int = 0
    counting: bool = False

    def get_parameter(self, Name: str, WithDecryption: bool = False) -> dict[str, Any]:
        now = self.clock()
        self.tokens = min(self.rate, self.tokens + (now - self.last) * self.rate)
        self.last = now
        self.calls += self.counting
        if self.tokens < 1:
            self.throttled += self.counting
            raise Throttled
        self.tokens -= 1
        return {"Parameter": {"Name": Name, "Value": self.value}}


@dataclass
class Table:
    """One item, the copy; ``update_item`` evaluates the two conditions ``FleetCopy`` writes with."""

    item: dict[str, Any] | None = None
    reads: int = 0
    writes: int = 0
    counting: bool = False

    def get_item(self, **_: Any) -> dict[str, Any]:
        self.reads += self.counting
        return {"Item": dict(self.item)} if self.item is not None else {}

    def update_item(self, **params: Any) -> dict[str, Any]:
        self.writes += self.counting
        values = params["ExpressionAttributeValues"]
        condition = params["ConditionExpression"]
        current = (self.item or {}).get("checked_at", {}).get("N")
        if condition == "attribute_not_exists(pk)":
            ok = self.item is None
        else:  # "checked_at = :seen" / "checked_at = :mine"
            wanted = values.get(":seen", values.get(":mine"))["N"]
            ok = current is not None and float(current) == float(wanted)
        if not ok:
            raise ConditionFailed
        item = dict(self.item or {})
        update: str = params["UpdateExpression"]
        if ":now" in values:
            item["checked_at"] = values[":now"]
        if ":source" in values:
            item["source"] = values[":source"]
            if ":body" in values:
                item["body"] = values[":body"]
            else:
                item.pop("body", None)
        assert update.startswith("SET")
        self.item = item
        return {}


def document(revision: str) -> str:
    return json.dumps({"version": 1, "revision": revision, "providers": {}, "models": {}})


@dataclass
class Result:
    instances: int
    mode: str
    ssm_calls_s: float
    throttled_s: float
    table_reads_s: float
    edit_s: float  # until the last instance has the edit (inf: not within the run)
    reached: float  # the share of instances that had it by the end of the run
    after_s: float  # the run's time after the edit


@dataclass(order=True)
class _Event:
    at: float
    instance: int
    attempt: int = field(default=1, compare=False)
    started: float = field(default=0.0, compare=False)


def simulate(instances: int, mode: str, seconds: float = 180.0, seed: int = 1) -> Result:
    """One run: ``mode`` is ``today`` or ``copy``."""
    rng = random.Random(seed)
    clock = VirtualClock()
    ssm = Ssm(clock, document("r1"))
    table = Table()
    copies = [
        FleetCopy(table, "t", PARAM, ssm, MAX_AGE_S, budget_s=None, clock=clock) for _ in range(instances)
    ]
    has_edit = [False] * instances
    reached: list[float] = []
    events = [_Event(rng.uniform(0, MAX_AGE_S), i) for i in range(instances)]  # cold starts, spread
    heapq.heapify(events)
    edited = False
    while events:
        event = heapq.heappop(events)
        if event.at > seconds:
            break
        clock.now = event.at
        counting = event.at >= WARMUP_S
        ssm.counting = table.counting = counting
        if not edited and event.at >= EDIT_AT_S:
            ssm.value, edited = document("r2"), True
        started = event.started if event.attempt > 1 else event.at
        try:
            text = (
                ssm.get_parameter(Name=PARAM)["Parameter"]["Value"]
                if mode == "today"
                else copies[event.instance].fetch()
            )
        except Throttled:
            if event.attempt < ATTEMPTS:  # the client's retry, after its backoff
                delay = rng.random() * THROTTLE_BASE_S * 2 ** (event.attempt - 1)
                heapq.heappush(events, _Event(event.at + delay, event.instance, event.attempt + 1, started))
            else:  # the read failed: the last copy serves; the next read after max_age_s
                heapq.heappush(events, _Event(event.at + MAX_AGE_S, event.instance))
            continue
        if edited and not has_edit[event.instance] and '"r2"' in text and started >= EDIT_AT_S:
            has_edit[event.instance] = True
            reached.append(event.at - EDIT_AT_S)
        heapq.heappush(events, _Event(started + MAX_AGE_S + REQUEST_GAP_S, event.instance))
    window = seconds - WARMUP_S
    return Result(
        instances,
        mode,
        ssm.calls / window,
        ssm.throttled / window,
        table.reads / window,
        max(reached) if len(reached) == instances else float("inf"),
        len(reached) / instances,
        seconds - EDIT_AT_S,
    )


def cold_starts(instances: int, mode: str, seed: int = 1) -> float:
    """The share of ``instances`` cold starts within ``STORM_S`` that load routing within their
    wait, against SSM's quota (``today``) or through the fleet's copy (``copy``)."""
    rng = random.Random(seed)
    clock = VirtualClock()
    ssm = Ssm(clock, document("r1"))
    table = Table()
    FleetCopy(table, "t", PARAM, ssm, MAX_AGE_S, budget_s=None, clock=clock).fetch()  # the warm fleet's copy
    clock.now = 1.0  # the storm starts within the copy's max age
    events = sorted((1.0 + rng.uniform(0, STORM_S), i, 1, 0.0) for i in range(instances))
    heapq.heapify(events)
    served = 0
    while events:
        at, index, attempt, started = heapq.heappop(events)
        clock.now = at
        started = at if attempt == 1 else started
        try:
            if mode == "today":
                ssm.get_parameter(Name=PARAM)
            else:
                FleetCopy(table, "t", PARAM, ssm, MAX_AGE_S, budget_s=None, clock=clock).fetch()
        except Throttled:
            retry = at + rng.random() * THROTTLE_BASE_S * 2 ** (attempt - 1)
            if attempt < ATTEMPTS and retry < started + TIMEOUT_S:
                heapq.heappush(events, (retry, index, attempt + 1, started))
            continue
        served += 1
    return served / instances


def _edit(result: Result) -> str:
    if result.edit_s != float("inf"):
        return f"edit everywhere in {result.edit_s:.1f} s"
    return f"edit everywhere: {result.reached:.0%} after {result.after_s:.0f} s"


def line(today: Result, copy: Result, cold: tuple[float, float] | None = None) -> str:
    storm = (
        ""
        if cold is None
        else f" | cold starts in {STORM_S:.0f} s served: today {cold[0]:.0%}, copy {cold[1]:.0%}"
    )
    return (
        f"instances {today.instances}: today {today.ssm_calls_s:.1f} SSM calls/s "
        f"({today.throttled_s:.1f} throttled/s), {_edit(today)} | "
        f"copy {copy.ssm_calls_s:.2f} SSM calls/s, {copy.table_reads_s:.0f} DynamoDB reads/s, {_edit(copy)}"
        f"{storm}"
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m switchboard.devtools.ssmsim", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--instances", default="10,100,1000,5000", help="comma-separated instance counts")
    parser.add_argument("--seconds", type=float, default=180.0, help="virtual seconds per run")
    args = parser.parse_args(argv)
    counts = [int(n) for n in args.instances.split(",")]
    print(
        f"SSM routing reads: {SSM_RATE:.0f} GetParameter/s quota, max age {MAX_AGE_S:.0f} s, "
        f"edit at {EDIT_AT_S:.0f} s, counted from {WARMUP_S:.0f} s to {args.seconds:.0f} s (virtual)"
    )
    results = []
    for count in counts:
        today, copy = simulate(count, "today", args.seconds), simulate(count, "copy", args.seconds)
        results.append(copy)
        cold = cold_starts(count, "today"), cold_starts(count, "copy")
        print(line(today, copy, cold), flush=True)
    worst = max(results, key=lambda r: r.instances)
    bound = edit_bound_s(MAX_AGE_S, TIMEOUT_S)
    print(
        f"copy at {worst.instances} instances: {worst.ssm_calls_s:.2f} SSM calls/s (quota {SSM_RATE:.0f}), "
        f"{_edit(worst)} (bound {bound:.0f} s, issue's limit 60 s)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
