"""The scale simulation: the limits code against a model of DynamoDB's limits, at rising loads.

``make scale-sim`` (or ``python -m switchboard.devtools.scalesim budget``) offers Poisson load at
100 to 5,000 requests/s, from many keys of one team, to one shared team budget, and prints per load::

    offered N rps: goodput G rps, p99 admission X ms, conflicts C/s, throttles T/s, overspend $O

first for today's design (the "before" rows), then for the new one, and finally
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
  gateway knows it spent; an instance that died mid-request has no metered cost).

The budget's limit is sized so that a design that keeps up spends it at about 85 % of the run, so
every load ends with many requests racing for the last dollars: the moment an overspend would
happen. After the sweep the ledger must also agree with the requests: spent equal to the sum of
their metered costs, nothing reserved, no reservation left (``Result.consistent``).

Modes (the first argument): ``budget`` (this). ``--short`` runs the bounded form the test suite
runs (two loads, one virtual second each); the full form gives each load two virtual seconds.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import math
import random
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from switchboard.core.principal import Period, Scope
from switchboard.devtools.ddbmodel import ModelClient, ModelDynamoDB, Sim
from switchboard.limits.ledger import BudgetLine, Ledger, LedgerBusy, RateLine, Reservation
from switchboard.limits.model import ledger_usd, rate_window
from switchboard.limits.settlement import Backoff, failure_kind
from switchboard.limits.table import Table, load

__all__ = ["DESIGNS", "Design", "Result", "main", "run_load"]

FULL_LOADS = (100, 250, 500, 1000, 2000, 3000, 5000)
SHORT_LOADS = (100, 2000)
KEYS = 2000
ESTIMATE_USD = Decimal("0.01")  # each request's reservation (its bound)
MAX_REQUEST_S = 30.0
FAIL_UPSTREAM = 0.02
ORPHAN = 0.002
HELD_SHARE = 0.95


@dataclass(frozen=True)
class Design:
    """How a request's limit lines are laid out on the table."""

    name: str
    description: str
    lines: Callable[[Decimal, str, float, int], tuple[list[BudgetLine], list[RateLine]]]


def _today(limit: Decimal, key_id: str, now: float, offered: int) -> tuple[list[BudgetLine], list[RateLine]]:
    """Today's design: the key's budget and rpm, and the team budget, one item each."""
    window, _ = rate_window(now)
    key = BudgetLine(Scope.KEY, key_id, key_id, Decimal(1000), Period.MONTH, "2027-01", None)
    team = BudgetLine(Scope.TEAM, "ml", "team 'ml'", limit, Period.MONTH, "2027-01", None)
    rate = RateLine(Scope.KEY, key_id, key_id, 100_000, None, window)
    return [key, team], [rate]


LANE_RPS = 20  # the rule docs/limits.md gives operators: a lane per 40 requests/s of peak load
MAX_LANES = 256


def lanes_for(offered: int) -> int:
    return max(1, min(MAX_LANES, math.ceil(offered / LANE_RPS)))


def _laned(limit: Decimal, key_id: str, now: float, offered: int) -> tuple[list[BudgetLine], list[RateLine]]:
    """The new design: the same transaction, with the team budget split into lanes (items of
    their own partition key, each holding an equal share of the limit), sized for the load."""
    budgets, rates = _today(limit, key_id, now, offered)
    return [budgets[0], dataclasses.replace(budgets[1], lanes=lanes_for(offered))], rates


DESIGNS: dict[str, Design] = {
    "before": Design(
        "before",
        "today's design: one transaction over the reservation, the key's budget and rpm, and the "
        "one team budget item, at admission and at settlement",
        _today,
    ),
    "after": Design(
        "after",
        f"the team budget in lanes (one per {LANE_RPS} rps, at most {MAX_LANES}): one transaction over "
        "the reservation, the key's budget and rpm, and one lane drawn at random (another on a "
        "conflict or a full lane)",
        _laned,
    ),
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
        return max(Decimal(0), self.metered - self.limit)

    @property
    def consistent(self) -> bool:
        """The ledger agrees with the requests after the sweep."""
        return (
            self.ledger_spent == self.metered
            and self.ledger_reserved == 0
            and self.open_reservations == 0
            and self.stranded == 0
        )

    @property
    def held(self) -> bool:
        """At least 95 % of the requests that arrived while the budget had room were admitted
        (arrivals are Poisson: a short run's count is off the offered rate by a few percent)."""
        share = self.window_admitted / self.window_arrived if self.window_arrived else 0.0
        return share >= HELD_SHARE and self.overspend == 0

    def line(self) -> str:
        return (
            f"offered {self.offered} rps: goodput {self.goodput:.0f} rps, p99 admission "
            f"{self.p99_ms:.1f} ms, conflicts {self.conflicts / self.duration_s:.0f}/s, throttles "
            f"{self.throttles / self.duration_s:.0f}/s, overspend ${self.overspend:.2f}"
        )


def run_load(design: Design, offered: int, duration_s: float, seed: int = 1, **model: Any) -> Result:
    """One load on a fresh model: ``offered`` requests/s for ``duration_s`` virtual seconds.
    ``model``: options of ``ModelDynamoDB`` (a smaller ``wcu_per_s`` throttles sooner)."""
    return _Run(design, offered, duration_s, seed, model).result


class _Run:
    """One load: the arrivals, each request's admission and settlement, the sweep, the tally."""

    def __init__(
        self, design: Design, offered: int, duration_s: float, seed: int, model: dict[str, Any]
    ) -> None:
        random.seed(seed)  # the Ledger's and Backoff's jitter
        self.design = design
        self.sim = Sim(seed)
        self.model = ModelDynamoDB(self.sim, seed=seed + 1, **model)
        self.ledger = Ledger(
            Table(ModelClient(self.model), "switchboard"), clock=self.sim.clock, sleep=self.sim.wait
        )
        self.rng = random.Random(seed + 2)
        self.duration_s = duration_s
        # Spent at about 85 % of the run by a design that keeps up: by then the requests hold the
        # reservations of about a second's streams (1.2 s on average) and have spent 0.65 of
        # their estimate for the rest.
        spent_at = Decimal(str(0.85 * duration_s))
        streams = min(spent_at, Decimal("1.2"))
        per_rps = ESTIMATE_USD * (streams + Decimal("0.65") * (spent_at - streams))
        limit = (per_rps * offered).quantize(Decimal("0.01"))
        self.result = Result(offered, duration_s, limit=limit)
        self.first_refusal: float | None = None
        self.admitted_at: list[float] = []
        self.one_trip_at: list[float] = []  # admitted in one round trip
        self.admissions: list[tuple[float, float]] = []  # (arrival, time to the ledger's answer)
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

    def request(self, number: int) -> None:
        result, sim, rng = self.result, self.sim, self.rng
        key_id = f"key_{rng.randrange(KEYS):05d}"
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
        result.requests += 1
        sim.count()
        try:
            refusal = self.ledger.reserve(res)
        except LedgerBusy:  # 503 limits_busy
            result.busy += 1
            self.admissions.append((started, sim.now - started))
            return
        self.admissions.append((started, sim.now - started))
        if refusal is None and sim.count() == 1:
            self.one_trip_at.append(started)
        if refusal is not None:
            if refusal.budget is not None:
                result.refused_budget += 1
                self.first_refusal = min(started, self.first_refusal or started)
            else:
                result.refused_rate += 1
            return
        result.admitted += 1
        self.admitted_at.append(started)
        fate = rng.random()
        if fate < ORPHAN:
            return  # the instance died: the sweeper refunds it
        usd = (
            Decimal(0)
            if fate < ORPHAN + FAIL_UPSTREAM
            else ledger_usd(ESTIMATE_USD * Decimal(rng.uniform(0.3, 1.0)))
        )
        sim.spawn(lambda: self.settle(res, usd), at=sim.now + rng.lognormvariate(0.0, 0.6), name="settle")

    def settle(self, res: Reservation, usd: Decimal) -> None:
        """What ``Settler.settle`` and its background retries do, on the virtual clock."""
        hold, tokens, tries = res.hold, 400, 1
        kind = self.try_settle(hold, usd, tokens, tries)
        recorded, attempt, started = False, 0, self.sim.now
        while kind not in ("done", "fatal") and attempt < self.backoff.max_attempts:
            if kind == "slow" and not recorded:
                recorded = _record(self.ledger, res, usd, tokens)
            attempt += 1
            wait = self.backoff.delay(attempt, slow=kind == "slow")
            if self.sim.now - started + wait > self.backoff.max_total_s:
                break
            self.sim.wait(wait)
            tries += 1
            kind = self.try_settle(hold, usd, tokens, tries)
        if kind == "done" or recorded or _record(self.ledger, res, usd, tokens):
            self.result.metered += usd  # settled, or recorded: the sweeper charges it
        else:
            self.result.stranded += 1

    def try_settle(self, hold: Any, usd: Decimal, tokens: int, tries: int) -> str:
        try:
            self.ledger.settle(hold, usd, tokens, tries=1, first_try=tries)
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
        result.conflicts = self.model.stats.conflicts
        result.throttles = self.model.stats.throttles
        result.write_units = self.model.stats.write_units
        for (pk, _), item in self.model.items.items():
            values = load(item)
            if pk.startswith("budget#team#ml"):
                result.ledger_spent += Decimal(values.get("spent", 0))
                result.ledger_reserved += Decimal(values.get("reserved", 0))
            if pk.startswith("resv#"):
                result.open_reservations += 1


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
        f"first 402 in one round trip), {result.busy} busy (503), {result.refused_budget} refused "
        f"(402, from {result.window_s:.2f} s), {result.write_units / max(1, result.requests):.1f} WCU "
        f"a request, limit ${result.limit}, metered ${result.metered}, ledger spent "
        f"${result.ledger_spent}, consistent {result.consistent}"
    )


def run(
    designs: Sequence[str], loads: Sequence[int], duration_s: float, out: Any = None, *, details: bool = False
) -> list[Result]:
    """Every load for every design, one line each; the final line names the highest load held."""
    out = out or sys.stdout
    logging.getLogger("switchboard.limits").setLevel(logging.ERROR)  # one line per swept reservation
    results: list[Result] = []
    held: Result | None = None
    for name in designs:
        design = DESIGNS[name]
        print(f"{name}: {design.description}", file=out, flush=True)
        for offered in loads:
            result = run_load(design, offered, duration_s)
            results.append(result)
            note = "" if result.consistent else "  (ledger and requests disagree!)"
            print(result.line() + note, file=out, flush=True)
            if details:
                print(detail(result), file=out, flush=True)
            if name == designs[-1] and result.held:
                held = result
    if held is not None:
        print(f"shared budget holds {held.goodput:.0f} rps with overspend ${held.overspend:.0f}", file=out)
    else:
        print("shared budget holds no offered load", file=out)
    return results


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m switchboard.devtools.scalesim", description=__doc__)
    parser.add_argument("mode", nargs="?", default="budget", choices=["budget"])
    parser.add_argument("--mode", dest="mode_option", choices=["budget"])
    parser.add_argument("--short", action="store_true", help="the bounded form (two loads, 1 s each)")
    parser.add_argument("--design", action="append", choices=sorted(DESIGNS), help="default: all, in order")
    parser.add_argument("--loads", help="comma-separated requests/s")
    parser.add_argument("--duration", type=float, help="virtual seconds per load")
    parser.add_argument("--detail", action="store_true", help="a second line per load: counts, WCU, ledger")
    args = parser.parse_args(argv)
    loads = (
        [int(x) for x in args.loads.split(",")]
        if args.loads
        else list(SHORT_LOADS if args.short else FULL_LOADS)
    )
    duration = args.duration or (1.0 if args.short else 2.0)
    run(args.design or list(DESIGNS), loads, duration, details=args.detail)
    return 0


if __name__ == "__main__":
    sys.exit(main())
