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
from switchboard.devtools.scalesim import DESIGNS, Design, Result, run_load


@functools.cache
def simulated(design: Design, offered: int, duration_s: float) -> Result:
    return run_load(design, offered, duration_s)


def test_todays_design_does_not_hold_a_shared_budget_at_2000_rps() -> None:
    result = simulated(DESIGNS["before"], 2000, 1.0)
    assert result.goodput < 500  # one hot item: conflicts cap it far below the offered load
    assert result.conflicts > result.requests  # every admission retried, many several times
    assert result.busy > 0  # 503 limits_busy after the six tries
    assert result.overspend == 0
    assert result.consistent, (result.ledger_spent, result.metered, result.ledger_reserved)


def test_over_the_model_a_laned_budget_holds_2000_rps_with_no_overspend() -> None:
    result = simulated(DESIGNS["after"], 2000, 1.0)
    assert result.held and result.overspend == 0
    assert result.conflicts > 0  # the model did refuse transactions: the retries drew other lanes
    assert result.refused_budget > 0  # the budget ran out while requests raced for it
    assert result.consistent, (result.ledger_spent, result.metered, result.ledger_reserved)


def test_the_short_form_prints_before_and_after_rows_and_the_held_load(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """What ``make scale-sim`` prints, in its bounded form: the lanes hold 2,000 requests/s."""
    monkeypatch.setattr(scalesim, "run_load", simulated)
    assert scalesim.main(["budget", "--short"]) == 0
    lines = capsys.readouterr().out.splitlines()
    rows = [line for line in lines if line.startswith("offered ")]
    assert [row.split(" rps:")[0] for row in rows] == ["offered 100", "offered 2000"] * 2
    assert all("overspend $0.00" in row for row in rows)
    assert lines[-1].startswith("shared budget holds ") and lines[-1].endswith(" rps with overspend $0")
    assert int(lines[-1].split()[3]) >= 1900  # the 2,000 rps load (Poisson arrivals: within a few %)
