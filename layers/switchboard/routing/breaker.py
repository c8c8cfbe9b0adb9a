"""The shared circuit breaker: per target, shared by every instance through DynamoDB.

A target's state follows from one time, ``opened_at`` (epoch seconds), and the document's
``breaker`` policy (``routing.document.BreakerPolicy``)::

    never opened, or opened_at + open_s + ramp_s has passed   closed: all traffic
    now < opened_at + open_s                                   open: none
    then, for ramp_s                                           half-open: a share rising linearly
                                                               from probe_share to 1

It opens when one window's failure share reaches ``error_rate`` over at least ``min_requests``
attempts (``half_open_min_requests`` while half-open, which re-opens it with a new ``opened_at``).

Items (the single table; ``limits.table`` spells the other prefixes)::

    pk = breaker#<provider>/<model>   sk = state                      opened_at, ttl
    pk = breaker#<provider>/<model>   sk = w#<epoch ms>#<window no>   ADD ok, failed; ttl

Writes are bounded: an instance counts attempts in memory and reports each target's counts at most
once per ``report_s`` (one ``UpdateItem ADD`` whose answer is the window's totals from every
instance, so no read is needed to decide), and the state item is written only when the breaker
opens, under a condition so two instances cannot both open it. With N instances a target's window
item takes at most N / report_s writes a second (200 at 1,000 instances and 5 s, a fifth of an
item's limit). Reads are one ``GetItem`` of the state item per target per ``cache_s`` per
instance, in the background: a request never waits for the breaker; it reads the last state seen.
The window counts are keyed by the state's ``opened_at`` (``epoch``), so a half-open breaker
judges only what happened since it opened.

When every target of a plan is open, the one opened longest ago (the one that failed least
recently) is tried anyway, and the response says so (``x-switchboard-breaker``).

``state(label)`` and ``filter(plan, policy)`` are what the planner and the explain endpoint call;
``filter`` returns a ``Decision`` per target, as ``routing.overrides.apply`` does.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, Literal, Protocol

from switchboard.core.attempts import AttemptRecord
from switchboard.routing.document import BreakerPolicy
from switchboard.routing.overrides import Decision
from switchboard.routing.planner import Plan, PlannedTarget

__all__ = ["HEADER", "Breaker", "Status", "status_at"]

log = logging.getLogger("switchboard.breaker")

HEADER = "x-switchboard-breaker"
_STATE_SK = "state"
_KEEP_S = 86400.0  # items outlive their use by a day (TTL), then DynamoDB removes them
_GAUGE = {"closed": 0.0, "half-open": 1.0, "open": 2.0}

Name = Literal["closed", "open", "half-open"]


class Attempted(Protocol):
    """What the breaker reads of a settled exchange (``exchange.Exchange``): its attempts."""

    @property
    def attempts(self) -> list[AttemptRecord]: ...


@dataclass(frozen=True, slots=True)
class Status:
    """A target's breaker now: its name, the share of traffic let through, and when it opened."""

    name: Name
    share: float
    opened_at: float | None


def status_at(opened_at: float | None, policy: BreakerPolicy, now: float) -> Status:
    """The state that ``opened_at`` means at ``now`` under ``policy`` (pure)."""
    if opened_at is None:
        return Status("closed", 1.0, None)
    since = now - opened_at
    if since < policy.open_s:
        return Status("open", 0.0, opened_at)
    ramp = (since - policy.open_s) / policy.ramp_s
    if ramp < 1:
        share = policy.probe_share + (1 - policy.probe_share) * ramp
        return Status("half-open", share, opened_at)
    return Status("closed", 1.0, opened_at)


@dataclass(slots=True)
class _Target:
    ok: int = 0  # not yet reported
    fail: int = 0
    opened_at: float | None = None  # the shared state, as last read or written
    read_at: float = -math.inf
    reported_at: float = -math.inf
    busy: bool = False  # a read or a report in flight


@dataclass
class Breaker:
    """One per process: the local counts, the cached shared state, and the hook that counts."""

    table: str
    client: Callable[[], Any]  # a DynamoDB client (awsjson or boto3), called in a thread
    report_s: float = 5.0
    cache_s: float = 2.0
    clock: Callable[[], float] = time.time
    rand: Callable[[], float] = random.random
    metric: Callable[[str, float], None] | None = None  # (target, gauge); default: an EMF line
    policy: BreakerPolicy | None = None  # the routing document's, as last seen by ``filter``
    _targets: dict[str, _Target] = field(default_factory=dict)
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    # ------------------------------------------------------------------ what routing calls

    def state(self, label: str) -> Status:
        """``label``'s state from what this instance last saw (a stale view is refreshed in the
        background; never waited for)."""
        policy = self.policy
        if policy is None:
            return Status("closed", 1.0, None)
        entry = self._entry(label)
        if self.clock() - entry.read_at >= self.cache_s:
            self._spawn(entry, self._read(label, entry))
        return status_at(entry.opened_at, policy, self.clock())

    def filter(self, plan: Plan, policy: BreakerPolicy | None) -> tuple[Plan, list[Decision], str | None]:
        """The plan without the targets whose breaker holds them back, a ``Decision`` per target,
        and the ``x-switchboard-breaker`` header's value (None when nothing was held back)."""
        self.policy = policy
        if policy is None:
            return plan, [Decision(t.label, True, "breaker: off") for t in plan.targets], None
        kept: list[PlannedTarget] = []
        decisions: list[Decision] = []
        held: list[tuple[PlannedTarget, Status]] = []
        for target in plan.targets:
            status = self.state(target.label)
            if status.name == "closed" or (status.name == "half-open" and self.rand() < status.share):
                kept.append(target)
                decisions.append(Decision(target.label, True, f"breaker: {status.name}"))
            else:
                held.append((target, status))
                detail = "" if status.name == "open" else f", {status.share:.0%} let through"
                decisions.append(
                    Decision(target.label, False, f"breaker: {status.name}{detail}", "breaker_open")
                )
        if not held:
            return plan, decisions, None
        if not kept:
            # Every target held back: try the one that failed least recently rather than none.
            target, _ = min(held, key=lambda pair: pair[1].opened_at or 0.0)
            decisions = [
                Decision(d.target, True, "breaker: every target open, this one failed least recently")
                if d.target == target.label
                else d
                for d in decisions
            ]
            return replace(plan, targets=(target,)), decisions, f"all-open; tried {target.label}"
        skipped = ",".join(f"{t.label} {s.name}" for t, s in held)
        return replace(plan, targets=tuple(kept)), decisions, f"skipped {skipped}"

    # ------------------------------------------------------------------ the hook: counting

    async def admit(self, ex: Attempted) -> None:
        return None

    async def settle(self, ex: Attempted) -> None:
        policy = self.policy
        if policy is None:
            return
        for attempt in ex.attempts:
            outcome = str(attempt.outcome)
            if outcome == "ok":
                self.record(str(attempt.target), ok=True)
            elif outcome in policy.count:
                self.record(str(attempt.target), ok=False)

    def record(self, label: str, *, ok: bool) -> None:
        """Count one attempt; report this target's counts if its last report is ``report_s`` old."""
        entry = self._entry(label)
        if ok:
            entry.ok += 1
        else:
            entry.fail += 1
        if self.clock() - entry.reported_at >= self.report_s:
            self._spawn(entry, self._report(label, entry))

    async def drain(self) -> None:
        """Report what is still counted (at shutdown)."""
        if self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
        pending = [self._report(label, e) for label, e in self._targets.items() if e.ok or e.fail]
        await asyncio.gather(*pending, return_exceptions=True)

    # ------------------------------------------------------------------ DynamoDB

    def _entry(self, label: str) -> _Target:
        entry = self._targets.get(label)
        if entry is None:
            entry = self._targets[label] = _Target()
        return entry

    def _spawn(self, entry: _Target, work: Any) -> None:
        if entry.busy:
            work.close()
            return
        entry.busy = True

        async def run() -> None:
            try:
                await work
            except Exception:
                log.warning("breaker: a DynamoDB call failed; the last state seen stands", exc_info=True)
            finally:
                entry.busy = False

        task = asyncio.ensure_future(run())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _read(self, label: str, entry: _Target) -> None:
        answer = await asyncio.to_thread(
            self.client().get_item,
            TableName=self.table,
            Key={"pk": {"S": f"breaker#{label}"}, "sk": {"S": _STATE_SK}},
        )
        item = answer.get("Item")
        entry.read_at = self.clock()
        entry.opened_at = float(item["opened_at"]["N"]) if item and "opened_at" in item else None

    async def _report(self, label: str, entry: _Target) -> None:
        """Report the counts; again while more came in meanwhile and ``report_s`` has passed."""
        await self._report_once(label, entry)
        while (entry.ok or entry.fail) and self.clock() - entry.reported_at >= self.report_s:
            await self._report_once(label, entry)

    async def _report_once(self, label: str, entry: _Target) -> None:
        policy = self.policy
        ok, fail = entry.ok, entry.fail
        if policy is None or not (ok or fail):
            return
        entry.ok, entry.fail = 0, 0
        now = self.clock()
        entry.reported_at = now
        epoch = entry.opened_at
        window = int(now // policy.window_s)
        try:
            answer = await asyncio.to_thread(
                self.client().update_item,
                TableName=self.table,
                Key={
                    "pk": {"S": f"breaker#{label}"},
                    "sk": {"S": f"w#{int((epoch or 0) * 1000)}#{window}"},
                },
                UpdateExpression="ADD ok :ok, failed :fail SET #ttl = :ttl",
                ExpressionAttributeNames={"#ttl": "ttl"},
                ExpressionAttributeValues={
                    ":ok": {"N": str(ok)},
                    ":fail": {"N": str(fail)},
                    ":ttl": {"N": str(int(now + policy.window_s + _KEEP_S))},
                },
                ReturnValues="ALL_NEW",
            )
        except Exception:
            entry.ok, entry.fail = entry.ok + ok, entry.fail + fail  # kept for the next report
            raise
        totals = answer.get("Attributes", {})
        total_ok = int(totals.get("ok", {}).get("N", 0))
        total_fail = int(totals.get("failed", {}).get("N", 0))
        status = status_at(epoch, policy, now)
        if self._trips(status, total_ok, total_fail, policy):
            await self._open(label, entry, epoch, now)
        self._gauge(label, status_at(entry.opened_at, policy, self.clock()))

    @staticmethod
    def _trips(status: Status, ok: int, fail: int, policy: BreakerPolicy) -> bool:
        if status.name == "open":
            return False
        least = policy.half_open_min_requests if status.name == "half-open" else policy.min_requests
        total = ok + fail
        return total >= least and fail / total >= policy.error_rate

    async def _open(self, label: str, entry: _Target, epoch: float | None, now: float) -> None:
        """Write ``opened_at = now`` unless another instance changed the state since ``epoch``."""
        policy = self.policy
        assert policy is not None
        if epoch is None:
            condition, values = "attribute_not_exists(opened_at)", {}
        else:
            condition, values = "opened_at = :epoch", {":epoch": {"N": repr(epoch)}}
        try:
            await asyncio.to_thread(
                self.client().put_item,
                TableName=self.table,
                Item={
                    "pk": {"S": f"breaker#{label}"},
                    "sk": {"S": _STATE_SK},
                    "opened_at": {"N": repr(now)},
                    "ttl": {"N": str(int(now + policy.open_s + policy.ramp_s + _KEEP_S))},
                },
                ConditionExpression=condition,
                **({"ExpressionAttributeValues": values} if values else {}),
            )
        except Exception as exc:
            if _code(exc) != "ConditionalCheckFailedException":
                raise
            entry.read_at = -math.inf  # another instance got there first: read its state next time
            return
        entry.opened_at, entry.read_at = now, now
        log.warning("breaker: %s opened (window error rate at or over %s)", label, policy.error_rate)

    def _gauge(self, label: str, status: Status) -> None:
        value = _GAUGE[status.name]
        if self.metric is not None:
            self.metric(label, value)
            return
        from aws_lambda_powertools.metrics import MetricUnit, single_metric

        with single_metric(
            name="BreakerState", unit=MetricUnit.NoUnit, value=value, namespace="Switchboard"
        ) as metric:
            # The stack's service name, as the cost events' (dashboards filter on it).
            metric.add_dimension(
                name="service", value=os.environ.get("POWERTOOLS_SERVICE_NAME") or "switchboard"
            )
            metric.add_dimension(name="target", value=label)


def _code(exc: BaseException) -> str | None:
    response = getattr(exc, "response", None)
    if not isinstance(response, dict):
        return None
    code = response.get("Error", {}).get("Code")
    return str(code) if code else None
