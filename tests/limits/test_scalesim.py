"""The scale simulation's short form (``make scale-sim`` runs the long one): today's design over
the DynamoDB model does not hold a shared budget at 2,000 requests/s, the lanes do, and either way
the ledger agrees with the requests to the nano-dollar after the sweep.

A load's run is deterministic (seeded), so each (design, load) is simulated once per run and the
tests below read the same result: the short form's printed rows and the assertions on the counts
are about the same four runs, not four more.
"""

from __future__ import annotations

import functools

import pytest
from switchboard.devtools import scalesim
from switchboard.devtools.scalesim import DESIGNS, LANE_RPS, SHORT_S, Design, Result, laned, run_load

from tests.limits.conftest import SLOW


@functools.cache  # keyed as scalesim.run calls it: runs_out by keyword
def simulated(design: Design, offered: int, duration_s: float, runs_out: float = 0.85) -> Result:
    return run_load(design, offered, duration_s, runs_out=runs_out)


def test_todays_design_does_not_hold_a_shared_budget_at_2000_rps() -> None:
    result = simulated(DESIGNS["before"], 2000, SHORT_S, runs_out=0.85)
    assert result.goodput < 500  # one hot item: conflicts cap it far below the offered load
    assert result.conflicts > result.requests  # every admission retried, many several times
    assert result.busy > 0  # 503 limits_busy after the six tries
    assert result.overspend == 0
    assert result.consistent, (result.ledger_spent, result.metered, result.ledger_reserved)


def test_over_the_model_a_laned_budget_holds_2000_rps_with_no_overspend() -> None:
    result = simulated(DESIGNS["after"], 2000, SHORT_S, runs_out=0.85)
    assert result.held and result.overspend == 0
    assert result.conflicts > 0  # the model did refuse transactions: the retries drew other lanes
    assert result.refused_budget > 0  # the budget ran out while requests raced for it
    assert result.consistent, (result.ledger_spent, result.metered, result.ledger_reserved)
    assert result.trip_shares[0] > 0.85  # before the budget is half spent: mostly one round trip


def test_the_short_form_prints_before_and_after_rows_and_the_held_load(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """What ``make scale-sim`` prints, in its bounded form: the lanes hold 2,000 requests/s."""
    monkeypatch.setattr(scalesim, "run_load", simulated)
    assert scalesim.main(["budget", "--short"]) == 0
    lines = capsys.readouterr().out.splitlines()
    rows = [line for line in lines if line.startswith("offered ")]
    assert [row.split(" rps:")[0] for row in rows] == ["offered 100", "offered 2000"] * 2
    assert all("overspend $0.00" in row and "disagree" not in row for row in rows)  # ledger = metered
    assert all("round trips 1/2/3+: " in row for row in rows)
    assert lines[-1].startswith("shared budget holds ") and lines[-1].endswith(" rps with overspend $0")
    assert int(lines[-1].split()[3]) >= 1900  # the 2,000 rps load (Poisson arrivals: within a few %)


@pytest.mark.parametrize("offered", [pytest.param(2000, marks=SLOW)])
def test_far_from_its_end_a_budget_at_the_default_sizing_admits_most_requests_in_one_round_trip(
    offered: int,
) -> None:
    """docs/limits.md, "Sizing": at 2,000 requests/s, once settlements hold lanes too, one lane
    per 5 requests/s keeps more than 90 % of admissions to one round trip; one per 20 (the first
    sizing) about 78 %."""
    dense = run_load(laned(LANE_RPS), offered, 3.0, runs_out=100.0)
    sparse = run_load(laned(20, memory_s=0.0), offered, 3.0, runs_out=100.0)
    assert dense.trip_shares[0] > 0.90 and sparse.trip_shares[0] < 0.85
    assert dense.overspend == 0 and dense.consistent


def test_with_leases_a_warm_instance_admits_in_one_round_trip_whatever_the_lanes_see() -> None:
    """docs/limits.md, "Leases": keys with no limits of their own, one team budget in lanes, far
    from its end. Once an instance has served a request it holds a lease, and its admission writes
    no shared item, so no conflict can cancel it: every admission on a warm instance took one
    round trip, while the lanes themselves still saw conflicts (the settlements')."""
    result = run_load(scalesim.team_only(DESIGNS["after"]), 250, 3.5, runs_out=100.0)
    assert result.warm_trips[0] > 300 and result.warm_trips[1:] == [0, 0], result.warm_trips
    assert result.conflicts > 0  # the model did cancel transactions: settlements racing on lanes
    assert result.overspend == 0 and result.consistent
    without = run_load(scalesim.team_only(DESIGNS["lanes"]), 250, 3.5, runs_out=100.0)
    assert sum(without.warm_trips[1:]) > 0  # the same run without leases: some took two


@pytest.mark.parametrize("offered", [pytest.param(400, marks=SLOW)])
def test_one_busy_key_with_its_own_limits_in_lanes_holds_and_admits_warm_in_one_round_trip(
    offered: int,
) -> None:
    """docs/limits.md, "Leases": one key sends the whole load, its own budget and rpm in lanes
    (``keys create --lanes``) beside the team budget's; in today's design the key's items cap it
    as a shared budget's item did."""
    after = run_load(scalesim.one_key(DESIGNS["after"]), offered, 4.0, runs_out=100.0)
    assert after.warm_trips[0] > 500 and after.warm_trips[1:] == [0, 0], after.warm_trips
    assert after.overspend == 0 and after.consistent
    before = run_load(scalesim.one_key(DESIGNS["before"]), offered, 1.0, runs_out=100.0)
    assert before.goodput < 0.8 * offered and after.goodput > 0.95 * offered
