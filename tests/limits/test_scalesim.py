"""The scale simulation's short form (``make scale-sim`` runs the long one): today's design over
the DynamoDB model does not hold a shared budget at 2,000 requests/s, and the ledger still agrees
with the requests to the nano-dollar after the sweep."""

from __future__ import annotations

from switchboard.devtools.scalesim import DESIGNS, run_load


def test_todays_design_does_not_hold_a_shared_budget_at_2000_rps() -> None:
    result = run_load(DESIGNS["before"], 2000, 1.0)
    assert result.goodput < 500  # one hot item: conflicts cap it far below the offered load
    assert result.conflicts > result.requests  # every admission retried, many several times
    assert result.busy > 0  # 503 limits_busy after the six tries
    assert result.overspend == 0
    assert result.consistent, (result.ledger_spent, result.metered, result.ledger_reserved)
