"""The scale simulation: the limits code against a model of DynamoDB's limits, at rising loads.

``make scale-sim`` (or ``python -m switchboard.devtools.scalesim budget``) offers Poisson load at
100 to 5,000 requests/s, from many keys of one team, to one shared team budget, and prints per load::

    offered N rps: goodput G rps, p99 admission X ms, conflicts C/s, throttles T/s, overspend $O

and ``; round trips 1/2/3+: ...`` (the round trips per admission, while the budget is less
than half spent and after), first for today's design (the "before" rows), then for the new one,
and finally
``shared budget holds G rps with overspend $0`` for the highest load held (at least 95 % of
the requests that arrived while the budget had room admitted, and no overspend).

What runs is the gateway's own code: ``switchboard.limits.ledger.Ledger`` (reserve with its
conflict retries, settle, record, sweep) over ``switchboard.devtools.ddbmodel`` (per-partition
throughput, transaction conflicts, throttling, latency, on a virtual clock). Around it, each
request does what ``LimitsHook`` and ``Settler`` do: one reservation; then, after the response
(a lognormal stream of about a second), one settlement try and, when DynamoDB refuses it, the
``Settler``'s retries with its own ``Backoff`` and the ``record`` for the sweeper. 2 % of the
admitted requests fail upstream (refunded), 0.2 % lose their instance mid-request (left to the
sweeper, which runs once every reservation has expired).

Definitions, per load N over ``duration_s`` virtual seconds:

* goodput: requests admitted per second while the budget still had room (until the first 402);
* p99 admission: from the request's arrival to the ledger's answer, retries included, over the
  requests that arrived while the budget had room (the last dollars are another regime: spills,
  one read of every lane; docs/limits.md gives both);
* conflicts, throttles: refusals by the model per second (``Stats``), the client's retries counted;
* overspend: the metered cost of every settled request beyond the budget's limit (what the
  gateway knows it spent; an instance that died mid-request has no metered cost);
* round trips: the calls ``Ledger.reserve`` made per admission (1, 2, 3 or more).

The run finds the budget part-way through its period, each lane holding at least
``SHARE_ESTIMATES`` estimates, spent down so that a design that keeps up spends what is left at
about 85 % of the run, so every load ends with many requests racing for the last dollars: the
moment an overspend would happen. After the sweep the ledger must also agree with the requests:
spent equal to the earlier spend plus their metered costs, nothing reserved, no reservation left
(``Result.consistent``). Requests run on Lambda-like instances (one request at a time each), each
with its own ``Ledger`` and ``LaneMemory``.

Modes (the first argument): ``budget`` (this), and ``rate``: the same for a shared team rpm
(``rpm window used U of L`` instead of overspend; ``shared rpm holds G rps with no window
exceeded``). ``--short`` runs the bounded form the test suite runs (two loads, half a virtual
second each); the full form gives each load two virtual seconds. ``--steady``: a budget that never
runs out (round trips far from its end); ``--lane-rps 20,10``: the lanes design at other
densities; ``--memory-s 0``: without the remembered full lanes.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import math
import random
import sys
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from switchboard.core.principal import Period, Scope
from switchboard.devtools.ddbmodel import ModelClient, ModelDynamoDB, Sim
from switchboard.limits.ledger import (
    BudgetLine,
    LaneMemory,
    Leases,
    Ledger,
    LedgerBusy,
    RateLine,
    Reservation,
)
from switchboard.limits.model import MAX_LANES, MIN_LANE_RPM, ledger_usd, rate_window
from switchboard.limits.settlement import Backoff, failure_kind
from switchboard.limits.table import Table, dump, load

__all__ = ["DESIGNS", "Design", "Result", "main", "run_load"]

FULL_LOADS = (100, 250, 500, 1000, 2000, 3000, 5000)
SHORT_LOADS = (100, 2000)
SHORT_S = 0.5
ESTIMATE_USD = Decimal("0.01")  # each request's reservation (its bound)
MAX_REQUEST_S = 30.0
FAIL_UPSTREAM = 0.02
ORPHAN = 0.002
HELD_SHARE = 0.95
SHARE_ESTIMATES = 100  # a lane's share, in estimates, at the least (docs/limits.md, "Sizing")


@dataclass(frozen=True)
class Design:
    """How a request's limit lines are laid out on the table."""

    name: str
    description: str
    lines: Callable[[Decimal, str, float, int], tuple[list[BudgetLine], list[RateLine]]]
    memory_s: float = 0.0  # how long each instance's Ledger remembers the lanes it saw full
    kind: str = "budget"  # what is shared: the team's "budget", or its "rate" limit (rpm, tpm)
    leases: bool = False  # each settlement reserves ahead on the shared lines (``Leases``)
    keys: int = 2000  # the keys the requests come from, at random


def _today(limit: Decimal, key_id: str, now: float, offered: int) -> tuple[list[BudgetLine], list[RateLine]]:
    """Today's design: the key's budget and rpm, and the team budget, one item each."""
    window, _ = rate_window(now)
    key = BudgetLine(Scope.KEY, key_id, key_id, Decimal(1000), Period.MONTH, "2027-01", None)
    team = BudgetLine(Scope.TEAM, "ml", "team 'ml'", limit, Period.MONTH, "2027-01", None)
    rate = RateLine(Scope.KEY, key_id, key_id, 100_000, None, window)
    return [key, team], [rate]


LANE_RPS = 5  # the rule docs/limits.md gives operators: a lane per 5 requests/s of peak load
MEMORY_S = 5.0  # LaneMemory's default


def lanes_for(offered: int, lane_rps: float = LANE_RPS) -> int:
    return max(1, min(MAX_LANES, math.ceil(offered / lane_rps)))


def laned(
    lane_rps: float = LANE_RPS, name: str = "after", memory_s: float = MEMORY_S, leases: bool = True
) -> Design:
    """The new design: the same transaction, with the team budget split into lanes (items of
    their own partition key, each holding an equal share of the limit), one per ``lane_rps`` of
    the offered load; each instance remembers the lanes it saw full for ``memory_s``; with
    ``leases``, each settlement reserves the next request's estimate on its lane ahead, which the
    instance's next admission takes over without writing the lane."""

    def lines(
        limit: Decimal, key_id: str, now: float, offered: int
    ) -> tuple[list[BudgetLine], list[RateLine]]:
        budgets, rates = _today(limit, key_id, now, offered)
        return [budgets[0], dataclasses.replace(budgets[1], lanes=lanes_for(offered, lane_rps))], rates

    memory = f", lanes seen full skipped for {memory_s:g} s" if memory_s else ""
    ahead = (
        "; each settlement leases the instance's next estimate on its lane, which the next "
        "admission takes over instead of writing the lane"
        if leases
        else ""
    )
    return Design(
        name,
        f"the team budget in lanes (one per {lane_rps:g} rps, at most {MAX_LANES}{memory}): one "
        "transaction over the reservation, the key's budget and rpm, and one lane drawn at random "
        f"(another on a conflict or a full lane){ahead}",
        lines,
        memory_s,
        leases=leases,
    )


def _team_rate(offered: int, lanes: int, window: int) -> RateLine:
    """A team rpm that the offered load fills in a minute (120,000 at 2,000 rps), and a tpm that
    never binds; in ``lanes``."""
    rpm = offered * 60
    return RateLine(Scope.TEAM, "ml", "team 'ml'", rpm, rpm * 2000, window, lanes=lanes)


def rated(lane_rps: float | None, name: str, memory_s: float = MEMORY_S, leases: bool = True) -> Design:
    """A shared team rpm/tpm (beside the key's own budget and rpm): one item per minute window
    (``lane_rps`` None), or in lanes, one per ``lane_rps`` of the offered load, at most one per
    ``MIN_LANE_RPM`` of the rpm."""

    def lines(
        limit: Decimal, key_id: str, now: float, offered: int
    ) -> tuple[list[BudgetLine], list[RateLine]]:
        budgets, rates = _today(limit, key_id, now, offered)
        lanes = 1 if lane_rps is None else min(lanes_for(offered, lane_rps), offered * 60 // MIN_LANE_RPM)
        return budgets[:1], [*rates, _team_rate(offered, lanes, rates[0].window)]

    layout = (
        "one item per minute window"
        if lane_rps is None
        else f"in lanes (one per {lane_rps:g} rps, at most {MAX_LANES}), one drawn at random"
    )
    if leases and lane_rps is not None:
        layout += "; each settlement leases the instance's next request on its lane"
    return Design(
        name,
        f"a team rpm of 60 x the offered load, {layout}",
        lines,
        memory_s,
        kind="rate",
        leases=leases and lane_rps is not None,
    )


def team_only(design: Design) -> Design:
    """``design`` for keys with no limits of their own: a request's lines are the team's only."""

    def lines(
        limit: Decimal, key_id: str, now: float, offered: int
    ) -> tuple[list[BudgetLine], list[RateLine]]:
        budgets, rates = design.lines(limit, key_id, now, offered)
        return [b for b in budgets if b.scope is not Scope.KEY], [
            r for r in rates if r.scope is not Scope.KEY
        ]

    return dataclasses.replace(
        design,
        name=f"{design.name} (team only)",
        description=design.description.replace("the key's budget and rpm, and ", "")
        + "; the keys have no limits of their own",
        lines=lines,
    )


def one_key(design: Design) -> Design:
    """``design`` for one service's key sending the whole load: its own budget and rpm (twice the
    load's) in lanes as the team's are (``keys create --lanes``), except in the "before" design."""
    laned_keys = design.name != "before"

    def lines(
        limit: Decimal, key_id: str, now: float, offered: int
    ) -> tuple[list[BudgetLine], list[RateLine]]:
        budgets, rates = design.lines(limit, key_id, now, offered)
        rpm = offered * 120
        lanes = min(lanes_for(offered), rpm // MIN_LANE_RPM) if laned_keys else 1
        budgets = [
            dataclasses.replace(b, limit=Decimal(offered * 10), lanes=lanes) if b.scope is Scope.KEY else b
            for b in budgets
        ]
        rates = [dataclasses.replace(r, rpm=rpm, lanes=lanes) if r.scope is Scope.KEY else r for r in rates]
        return budgets, rates

    return dataclasses.replace(
        design,
        name=f"{design.name} (one key)",
        description=f"{design.description}; one key sends the whole load, its own budget and rpm "
        + ("in lanes as the team's" if laned_keys else "one item each"),
        lines=lines,
        keys=1,
    )


RATE_DESIGNS: dict[str, Design] = {
    "before": rated(None, "before", memory_s=0.0),
    "lanes": rated(LANE_RPS, "lanes", leases=False),
    "after": rated(LANE_RPS, "after"),
}

DESIGNS: dict[str, Design] = {
    "before": Design(
        "before",
        "today's design: one transaction over the reservation, the key's budget and rpm, and the "
        "one team budget item, at admission and at settlement",
        _today,
    ),
    "lanes": laned(name="lanes", leases=False),
    "after": laned(),
}


@dataclass
class Result:
    offered: int
    duration_s: float
    requests: int = 0
    admitted: int = 0
    window_admitted: int = 0
    window_arrived: int = 0
    one_trip: int = 0  # admitted (in the window) with one DynamoDB round trip
    # Round trips to DynamoDB per admission (the calls ``Ledger.reserve`` made, the client's own
    # retries counted), over the requests that arrived while the budget had room: 1, 2, 3 or more.
    # ``trips`` counts the requests that arrived while the budget was less than half used (the
    # steady state: lanes far from full); ``end_trips`` those from then to the first 402.
    trips: list[int] = field(default_factory=lambda: [0, 0, 0])
    end_trips: list[int] = field(default_factory=lambda: [0, 0, 0])
    # ``trips`` for the admissions on a warm instance (one that served a request before): with
    # leases, those that take over the instance's lease (a new instance has none yet).
    warm_trips: list[int] = field(default_factory=lambda: [0, 0, 0])
    # What the calls beyond each admission's first were for (same requests): a conflict, a full
    # lane (a failed condition), the read of every lane, throttling.
    extra: Counter[str] = field(default_factory=Counter)
    window_s: float = 0.0
    refused_budget: int = 0
    refused_rate: int = 0
    busy: int = 0
    errors: int = 0
    admission_s: list[float] = field(default_factory=list)
    conflicts: int = 0
    throttles: int = 0
    limit: Decimal = Decimal(0)
    metered: Decimal = Decimal(0)  # sum of the settled requests' metered costs
    prefilled: Decimal = Decimal(0)  # spent before the run, earlier in the period
    kind: str = "budget"
    rpm: int = 0  # the team's rpm (rate mode)
    window_req: int = 0  # the most requests any team rate window counted, its lanes summed
    ledger_spent: Decimal = Decimal(0)
    ledger_reserved: Decimal = Decimal(0)
    open_reservations: int = 0
    stranded: int = 0
    write_units: float = 0.0

    @property
    def goodput(self) -> float:
        return self.window_admitted / self.window_s if self.window_s else 0.0

    @property
    def p99_ms(self) -> float:
        if not self.admission_s:
            return 0.0
        ordered = sorted(self.admission_s)
        return ordered[min(len(ordered) - 1, math.ceil(0.99 * len(ordered)) - 1)] * 1000

    @property
    def overspend(self) -> Decimal:
        return max(Decimal(0), self.prefilled + self.metered - self.limit)

    @property
    def consistent(self) -> bool:
        """The ledger agrees with the requests after the sweep."""
        return (
            self.ledger_spent == self.prefilled + self.metered
            and self.ledger_reserved == 0
            and self.open_reservations == 0
            and self.stranded == 0
        )

    @property
    def exceeded(self) -> bool:
        """Spent beyond the budget, or a rate window counted beyond the rpm."""
        return self.overspend > 0 or self.window_req > self.rpm > 0

    @property
    def held(self) -> bool:
        """At least 95 % of the requests that arrived while the budget (or the rpm) had room were
        admitted (arrivals are Poisson: a short run's count is off the offered rate by a few
        percent), and nothing exceeded."""
        share = self.window_admitted / self.window_arrived if self.window_arrived else 0.0
        return share >= HELD_SHARE and not self.exceeded

    @property
    def trip_shares(self) -> tuple[float, float, float]:
        """The shares of admissions that took 1, 2, and 3 or more round trips (steady state)."""
        return _shares(self.trips)

    def line(self) -> str:
        """The issue's line, then the round trips per admission as extra fields: while the budget
        is less than half used (and of those, on warm instances), and from then to the first 402
        (the last dollars)."""
        limit = (
            f"overspend ${self.overspend:.2f}"
            if self.kind == "budget"
            else f"rpm window used {self.window_req} of {self.rpm}"
        )
        return (
            f"offered {self.offered} rps: goodput {self.goodput:.0f} rps, p99 admission "
            f"{self.p99_ms:.1f} ms, conflicts {self.conflicts / self.duration_s:.0f}/s, throttles "
            f"{self.throttles / self.duration_s:.0f}/s, {limit}; "
            f"round trips 1/2/3+: {_trips_text(self.trips)} under half used "
            f"({_trips_text(self.warm_trips)} of the {sum(self.warm_trips)} on warm instances), "
            f"{_trips_text(self.end_trips)} after"
        )


def _shares(counts: Sequence[int]) -> tuple[float, float, float]:
    total = sum(counts) or 1
    one, two, more = (n / total for n in counts)
    return one, two, more


def _trips_text(counts: Sequence[int]) -> str:
    return "/".join(f"{share:.1%}" for share in _shares(counts))


def run_load(
    design: Design, offered: int, duration_s: float, seed: int = 1, *, runs_out: float = 0.85, **model: Any
) -> Result:
    """One load on a fresh model: ``offered`` requests/s for ``duration_s`` virtual seconds; the
    budget runs out at about ``runs_out`` of the run (a large value: never, the steady state).
    ``model``: options of ``ModelDynamoDB`` (a smaller ``wcu_per_s`` throttles sooner)."""
    return _Run(design, offered, duration_s, seed, model, runs_out).result


class _Run:
    """One load: the arrivals, each request's admission and settlement, the sweep, the tally."""

    def __init__(
        self,
        design: Design,
        offered: int,
        duration_s: float,
        seed: int,
        model: dict[str, Any],
        runs_out: float = 0.85,
    ) -> None:
        random.seed(seed)  # the Ledger's and Backoff's jitter
        self.design = design
        self.sim = Sim(seed)
        self.model = ModelDynamoDB(self.sim, seed=seed + 1, **model)
        self.table = Table(ModelClient(self.model), "switchboard")
        self.ledger = Ledger(self.table, clock=self.sim.clock, sleep=self.sim.wait)  # the sweeper's
        # Instances as Lambda runs them: one request at a time each, a warm idle one reused first,
        # a new one when none is idle; each has its own Ledger (and LaneMemory).
        self.idle: list[Ledger] = []
        self.instances = 0
        self.rng = random.Random(seed + 2)
        self.duration_s = duration_s
        # Spent at about 85 % of the run by a design that keeps up: by then the requests hold the
        # reservations of about a second's streams (1.2 s on average) and have spent 0.65 of
        # their estimate for the rest.
        spent_at = Decimal(str(runs_out * duration_s))
        self.warm_s = 2.0 if runs_out > 1 else 0.0
        streams = min(spent_at, Decimal("1.2"))
        per_rps = ESTIMATE_USD * (streams + Decimal("0.65") * (spent_at - streams))
        self.left = (per_rps * offered).quantize(Decimal("0.01"))
        self.result = Result(offered, duration_s, kind=design.kind)
        if design.kind == "budget":
            self.prefill()
        else:
            self.prefill_window()
        self.first_refusal: float | None = None
        self.admitted_at: list[float] = []
        self.one_trip_at: list[float] = []  # admitted in one round trip
        self.admissions: list[tuple[float, float]] = []  # (arrival, time to the ledger's answer)
        # (arrival, budget less than half used then, round trips the admission took, how its calls
        # ended, whether its instance had served a request before)
        self.trips: list[tuple[float, bool, int, Counter[str], bool]] = []
        self.warm: set[int] = set()  # the instances (their Ledgers' ids) that served a request
        self.used = self.result.prefilled  # the team budget's use: what its lanes' ``used`` add up to
        self.backoff = Backoff()
        when, number = 0.0, 0
        while True:
            when += self.rng.expovariate(offered)
            if when >= duration_s:
                break
            self.sim.spawn(lambda n=number: self.request(n), at=when, name="request")  # type: ignore[misc]
            number += 1
        self.sim.run(duration_s + 60.0)  # every stream ended, every settlement's retries done (45 s)
        self.sim.spawn(lambda: _sweep(self.ledger), at=self.sim.now + MAX_REQUEST_S + 70)
        self.sim.run()
        self.sim.close()
        self.tally()

    def prefill(self) -> None:
        """The team budget as the run finds it, part-way through its period: each lane holds at
        least ``SHARE_ESTIMATES`` estimates (docs/limits.md's minimum share), partly spent by
        earlier requests, the same amount on every lane, so that what is left (``self.left``)
        runs out at about 85 % of the run. (A real history leaves the lanes unevenly full, by about
        the square root of the requests each took; that only makes the last dollars, the regime
        after the budget is half spent here, start earlier.)"""
        budgets = self.design.lines(Decimal(1), "key_00000", self.sim.clock(), self.result.offered)[0]
        line = next(b for b in budgets if b.scope is Scope.TEAM)
        lanes = line.lanes
        limit = max(self.left, lanes * SHARE_ESTIMATES * ESTIMATE_USD)
        share = dataclasses.replace(line, limit=limit).share
        room = ledger_usd(self.left / lanes)
        for lane in range(lanes):
            key = line.lane_key(lane)
            spent = share - room
            self.model.items[(key["pk"]["S"], key["sk"]["S"])] = {
                **key,
                **dump({"used": spent, "spent": spent, "reserved": 0, "requests": 0, "limit_usd": share}),
            }
        self.result.prefilled = (share - room) * lanes
        self.result.limit = limit

    def prefill_window(self) -> None:
        """The team's rate window as the run finds it, near its minute's end: every lane holds its
        share of the rpm less an equal part of what is left, which the offered load fills at
        about 85 % of the run (``self.left`` dollars of estimates, in requests)."""
        rates = self.design.lines(Decimal(1000), "key_00000", self.sim.clock(), self.result.offered)[1]
        line = next(r for r in rates if r.scope is Scope.TEAM)
        assert line.rpm is not None and line.rpm_share is not None
        left = min(line.rpm, int(0.85 * self.duration_s * self.result.offered))
        room = max(1, left // line.lanes)
        for lane in range(line.lanes):
            key = line.lane_key(lane)
            self.model.items[(key["pk"]["S"], key["sk"]["S"])] = {
                **key,
                **dump({"req": line.rpm_share - room, "tok": 0, "ttl": 0}),
            }
        self.left = Decimal(room * line.lanes) * ESTIMATE_USD  # requests left, in estimates
        self.result.rpm = line.rpm
        self.result.limit = Decimal(1000)

    def instance(self) -> Ledger:
        memory = LaneMemory(self.design.memory_s, clock=self.sim.clock)
        leases = Leases(clock=self.sim.clock) if self.design.leases else None
        return Ledger(self.table, clock=self.sim.clock, sleep=self.sim.wait, memory=memory, leases=leases)

    def request(self, number: int) -> None:
        if self.idle:
            ledger = self.idle.pop()
        else:
            ledger = self.instance()
            self.instances += 1
        if self.serve(number, ledger):
            self.idle.append(ledger)

    def serve(self, number: int, ledger: Ledger) -> bool:
        """One request on one instance; False when the instance died with it."""
        result, sim, rng = self.result, self.sim, self.rng
        key_id = f"key_{rng.randrange(self.design.keys):05d}"
        budgets, rates = self.design.lines(result.limit, key_id, sim.clock(), result.offered)
        res = Reservation(
            request_id=f"req-{result.offered}-{number}",
            usd=ESTIMATE_USD,
            tokens=500,
            budgets=tuple(budgets),
            rates=tuple(rates),
            expires_at=int(sim.clock() + MAX_REQUEST_S + 60),
            key_id=key_id,
        )
        started = sim.now
        # Steady: the budget less than half spent; in a run where it never runs out, once the
        # first streams have settled (settlements hold lanes too).
        steady = (self.used - result.prefilled) * 2 < self.left and started >= self.warm_s
        if result.kind == "rate":
            steady = (result.admitted * ESTIMATE_USD) * 2 < self.left and started >= self.warm_s
        result.requests += 1
        sim.count()
        sim.outcomes()
        warm = id(ledger) in self.warm
        self.warm.add(id(ledger))
        try:
            refusal = ledger.reserve(res)
        except LedgerBusy:  # 503 limits_busy
            result.busy += 1
            self.admissions.append((started, sim.now - started))
            self.trips.append((started, steady, sim.count(), sim.outcomes(), warm))
            return True
        self.admissions.append((started, sim.now - started))
        trips = sim.count()
        self.trips.append((started, steady, trips, sim.outcomes(), warm))
        if refusal is None and trips == 1:
            self.one_trip_at.append(started)
        if refusal is not None:
            if refusal.budget is not None:
                result.refused_budget += 1
                self.first_refusal = min(started, self.first_refusal or started)
            else:
                result.refused_rate += 1
                if refusal.rate is not None and refusal.rate.scope is Scope.TEAM:
                    self.first_refusal = min(started, self.first_refusal or started)
            return True
        result.admitted += 1
        self.used += ESTIMATE_USD
        self.admitted_at.append(started)
        fate = rng.random()
        if fate < ORPHAN:
            return False  # the instance died: the sweeper refunds it
        usd = (
            Decimal(0)
            if fate < ORPHAN + FAIL_UPSTREAM
            else ledger_usd(ESTIMATE_USD * Decimal(rng.uniform(0.3, 1.0)))
        )
        sim.wait(rng.lognormvariate(0.0, 0.6))  # the stream
        self.settle(ledger, res, usd)
        return True

    def settle(self, ledger: Ledger, res: Reservation, usd: Decimal) -> None:
        """What ``Settler.settle`` and its background retries do, on the virtual clock."""
        hold, tokens, tries = res.hold, 400, 1
        kind = self.try_settle(ledger, hold, usd, tokens, tries, res)
        recorded, attempt, started = False, 0, self.sim.now
        while kind not in ("done", "fatal") and attempt < self.backoff.max_attempts:
            if kind == "slow" and not recorded:
                recorded = _record(ledger, res, usd, tokens)
            attempt += 1
            wait = self.backoff.delay(attempt, slow=kind == "slow")
            if self.sim.now - started + wait > self.backoff.max_total_s:
                break
            self.sim.wait(wait)
            tries += 1
            kind = self.try_settle(ledger, hold, usd, tokens, tries, res)
        if kind == "done":
            self.used -= ESTIMATE_USD - usd
        if kind == "done" or recorded or _record(ledger, res, usd, tokens):
            self.result.metered += usd  # settled, or recorded: the sweeper charges it
        else:
            self.result.stranded += 1

    def try_settle(
        self, ledger: Ledger, hold: Any, usd: Decimal, tokens: int, tries: int, res: Reservation
    ) -> str:
        try:
            ledger.settle(hold, usd, tokens, tries=1, first_try=tries, refill=res)
            return "done"
        except Exception as exc:
            return failure_kind(exc)

    def tally(self) -> None:
        result = self.result
        result.window_s = min(self.duration_s, self.first_refusal) if self.first_refusal else self.duration_s
        result.window_admitted = sum(1 for when in self.admitted_at if when < result.window_s)
        result.admission_s = [took for when, took in self.admissions if when < result.window_s]
        result.window_arrived = len(result.admission_s)
        result.one_trip = sum(1 for when in self.one_trip_at if when < result.window_s)
        for when, steady, trips, outcomes, warm in self.trips:
            if when < result.window_s:
                (result.trips if steady else result.end_trips)[min(trips, 3) - 1] += 1
                if steady and warm:
                    result.warm_trips[min(trips, 3) - 1] += 1
                if trips > 1:
                    result.extra.update(
                        {
                            "conflict": outcomes["conflict"],
                            "full lane": outcomes["TransactWriteItems:condition"],
                            "read of the lanes": outcomes["BatchGetItem:ok"],
                            "throttled": outcomes["throttled"],
                        }
                    )
        result.conflicts = self.model.stats.conflicts
        result.throttles = self.model.stats.throttles
        result.write_units = self.model.stats.write_units
        for (pk, _), item in self.model.items.items():
            values = load(item)
            if pk.startswith("budget#team#ml" if result.kind == "budget" else "budget#key#"):
                result.ledger_spent += Decimal(values.get("spent", 0))
                result.ledger_reserved += Decimal(values.get("reserved", 0))
            if pk.startswith("resv#"):
                result.open_reservations += 1
        windows: Counter[str] = Counter()
        for (pk, sk), item in self.model.items.items():
            if pk.startswith("rate#team#ml"):
                windows[sk] += int(load(item).get("req", 0))
        result.window_req = max(windows.values(), default=0)


def _record(ledger: Ledger, res: Reservation, usd: Decimal, tokens: int) -> bool:
    try:
        return ledger.record(res.hold, usd, tokens)
    except Exception:
        return False


def _sweep(ledger: Ledger) -> None:
    for _ in range(10):  # a busy sweep leaves work for the next one
        if not ledger.sweep().busy:
            return


def detail(result: Result) -> str:
    """More of a load's figures (``--detail``)."""
    share = result.one_trip / result.window_admitted if result.window_admitted else 0.0
    return (
        f"    {result.requests} requests, {result.admitted} admitted ({share:.1%} of those before the "
        f"first refusal in one round trip), {result.busy} busy (503), {result.refused_budget} refused "
        f"402 and {result.refused_rate} 429 (from {result.window_s:.2f} s), "
        f"{result.write_units / max(1, result.requests):.1f} WCU "
        f"a request, limit ${result.limit} (${result.prefilled} spent before), metered "
        f"${result.metered}, ledger spent "
        f"${result.ledger_spent}, consistent {result.consistent}; calls beyond the first: "
        + (", ".join(f"{kind} {n}" for kind, n in result.extra.items() if n) or "none")
    )


def run(
    designs: Sequence[str | Design],
    loads: Sequence[int],
    duration_s: float,
    out: Any = None,
    *,
    details: bool = False,
    runs_out: float = 0.85,
    mode: str = "budget",
) -> list[Result]:
    """Every load for every design, one line each; the final line names the highest load held
    by the last design."""
    out = out or sys.stdout
    logging.getLogger("switchboard.limits").setLevel(logging.ERROR)  # one line per swept reservation
    results: list[Result] = []
    held: Result | None = None
    last: Design | None = None
    for entry in designs:
        design = last = (
            (RATE_DESIGNS if mode == "rate" else DESIGNS)[entry] if isinstance(entry, str) else entry
        )
        name = design.name
        print(f"{name}: {design.description}", file=out, flush=True)
        for offered in loads:
            result = run_load(design, offered, duration_s, runs_out=runs_out)
            results.append(result)
            note = "" if result.consistent else "  (ledger and requests disagree!)"
            print(result.line() + note, file=out, flush=True)
            if details:
                print(detail(result), file=out, flush=True)
            if entry is designs[-1] and result.held:
                held = result
    rate = last is not None and last.kind == "rate"
    if held is None:
        print(f"shared {'rpm' if rate else 'budget'} holds no offered load", file=out)
    elif rate:
        print(f"shared rpm holds {held.goodput:.0f} rps with no window exceeded", file=out)
    else:
        print(f"shared budget holds {held.goodput:.0f} rps with overspend ${held.overspend:.0f}", file=out)
    return results


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m switchboard.devtools.scalesim", description=__doc__)
    parser.add_argument("mode", nargs="?", default="budget", choices=["budget", "rate"])
    parser.add_argument("--mode", dest="mode_option", choices=["budget", "rate"])
    parser.add_argument("--short", action="store_true", help="the bounded form (two loads, 0.5 s each)")
    parser.add_argument(
        "--design",
        action="append",
        choices=sorted(DESIGNS),
        help="default: before, after (lanes: the after design without leases)",
    )
    parser.add_argument("--loads", help="comma-separated requests/s")
    parser.add_argument("--duration", type=float, help="virtual seconds per load")
    parser.add_argument("--detail", action="store_true", help="a second line per load: counts, WCU, ledger")
    parser.add_argument(
        "--lane-rps",
        help="comma-separated requests/s per lane: the lanes design at each density, after the others",
    )
    parser.add_argument(
        "--steady",
        action="store_true",
        help="a budget that does not run out: the round trips far from a budget's end",
    )
    parser.add_argument(
        "--memory-s",
        type=float,
        default=MEMORY_S,
        help="with --lane-rps: seconds each instance remembers the lanes it saw full (0: none; "
        f"default {MEMORY_S:g})",
    )
    parser.add_argument(
        "--one-key",
        action="store_true",
        help="budget mode: one key sends the whole load, with its own budget and rpm (in lanes, "
        "but in the before design)",
    )
    parser.add_argument(
        "--team-only",
        action="store_true",
        help="budget mode: keys with no budget or rpm of their own (the team budget's lines only)",
    )
    args = parser.parse_args(argv)
    loads = (
        [int(x) for x in args.loads.split(",")]
        if args.loads
        else list(SHORT_LOADS if args.short else FULL_LOADS)
    )
    duration = args.duration or (SHORT_S if args.short else 2.0)
    mode = args.mode_option or args.mode
    designs: list[str | Design] = list(args.design or ("before", "after"))  # "lanes": without leases
    for rps in args.lane_rps.split(",") if args.lane_rps else ():
        name = f"lanes per {float(rps):g} rps"
        designs.append(
            rated(float(rps), name, args.memory_s)
            if mode == "rate"
            else laned(float(rps), name=name, memory_s=args.memory_s)
        )
    if args.team_only or args.one_key:
        if mode == "rate":
            parser.error("--team-only and --one-key are for the budget mode")
        wrap = team_only if args.team_only else one_key
        designs = [wrap(DESIGNS[d]) if isinstance(d, str) else wrap(d) for d in designs]
    run(designs, loads, duration, details=args.detail, runs_out=100.0 if args.steady else 0.85, mode=mode)
    return 0


if __name__ == "__main__":
    sys.exit(main())
