"""A shared budget in lanes (docs/limits.md, "At scale"): never more than its limit, settled and
swept on the lane it was reserved on, over moto and over the DynamoDB model with its conflicts
and throttling."""

from __future__ import annotations

import asyncio
import dataclasses
import threading
from decimal import Decimal
from typing import Any

import pytest
from switchboard.core.principal import Period, Scope
from switchboard.devtools.scalesim import DESIGNS, run_load
from switchboard.infra.awsjson import TransportError
from switchboard.limits.ledger import BudgetLine, Ledger, LedgerBusy, Reservation
from switchboard.limits.settlement import Backoff, Settler
from switchboard.limits.table import Table

from tests.limits.conftest import items, reservations
from tests.limits.faults import admission, install

NOW = 1_800_000_000.0


def team(limit: str = "1.2", lanes: int = 4) -> BudgetLine:
    return BudgetLine(
        Scope.TEAM, "ml", "team 'ml'", Decimal(limit), Period.MONTH, "2027-01", None, lanes=lanes
    )


def reservation(request_id: str, line: BudgetLine, usd: str = "0.1") -> Reservation:
    return Reservation(request_id, Decimal(usd), 10, (line,), (), expires_at=int(NOW) + 600)


def lanes(table: Table) -> dict[str, dict[str, Any]]:
    return {str(i["pk"]): i for i in items(table) if str(i["pk"]).startswith("budget#team#ml#L")}


def test_a_laned_budget_admits_exactly_its_limit_and_names_the_whole_use(table: Table) -> None:
    ledger = Ledger(table, clock=lambda: NOW)
    line = team()  # 4 lanes of $0.30: three $0.10 reservations each
    answers = [ledger.reserve(reservation(f"r{n}", line)) for n in range(13)]
    assert answers[:12] == [None] * 12
    refusal = answers[12]
    assert refusal is not None and refusal.budget is not None
    assert refusal.budget.ident == "ml" and refusal.item == {"used": Decimal("1.2")}
    rows = lanes(table)
    assert sorted(rows) == [f"budget#team#ml#L{n}" for n in range(4)]
    assert all(row["used"] == Decimal("0.3") and row["limit_usd"] == Decimal("0.3") for row in rows.values())
    assert ledger.used(line)["used"] == Decimal("1.2")


def test_settlement_and_the_sweeper_close_each_reservation_on_its_own_lane(table: Table) -> None:
    ledger = Ledger(table, clock=lambda: NOW)
    line = team()
    held = [reservation(f"r{n}", line) for n in range(8)]
    for res in held:
        assert ledger.reserve(res) is None
    for res in held[:6]:  # six served at 4 cents, two orphaned
        assert ledger.settle(res.hold, Decimal("0.04"), 5) is True
    swept = ledger.sweep(now=NOW + 10_000)
    assert sorted(h.request_id for h in swept.refunded) == ["r6", "r7"]
    assert reservations(table) == []
    total = ledger.used(line)
    assert (total["spent"], total["reserved"], total["used"]) == (Decimal("0.24"), 0, Decimal("0.24"))
    assert all(row["reserved"] == 0 and row["used"] == row["spent"] for row in lanes(table).values())


def test_an_admission_whose_answer_was_lost_keeps_the_lanes_it_was_written_on(table: Table) -> None:
    ledger = Ledger(table, clock=lambda: NOW)
    faults = install(ledger)
    faults.add("transact_write_items", "lost", times=1, when=admission)
    line = team(limit="100", lanes=64)
    first = reservation("lost-1", line)
    with pytest.raises(TransportError):
        ledger.reserve(first)  # written, but the answer never came
    again = reservation("lost-1", line)  # tried again: another lane is drawn...
    assert ledger.reserve(again) is None
    stored = ledger.pending("lost-1")
    assert stored is not None and again.hold.budget_keys == stored.budget_keys  # ...and given up
    assert ledger.settle(again.hold, Decimal("0.05"), 5) is True
    total = ledger.used(line)
    assert (total["spent"], total["reserved"]) == (Decimal("0.05"), 0)


def test_a_released_admission_refunds_the_lane_it_finally_chose(table: Table) -> None:
    """The request stops waiting while the admission is still drawing lanes (conflicts): the
    refund must follow the lane the admission ends on, not the one it had when the wait ended."""
    ledger = Ledger(table, clock=lambda: NOW)
    faults = install(ledger, seed=3)
    faults.add("transact_write_items", "conflict", times=3, when=admission)
    settler = Settler(ledger, backoff=Backoff(scale=0.001))
    line = team(limit="100", lanes=64)
    res = reservation("slow-1", line)
    gate = threading.Event()

    def admit() -> Any:
        gate.wait(5)
        return ledger.reserve(res)

    async def run() -> None:
        call = asyncio.ensure_future(asyncio.to_thread(admit))
        settler.release(res, after=call)  # the request gave up before the call ended
        gate.set()
        await settler.join()

    asyncio.run(run())
    assert faults.calls["transact_write_items"] >= 4  # three conflicts, then the admission, the refund
    assert reservations(table) == []
    assert all(row["used"] == 0 and row["reserved"] == 0 for row in lanes(table).values())


def test_a_lane_smaller_than_the_estimate_refuses_without_writing(table: Table) -> None:
    ledger = Ledger(table, clock=lambda: NOW)
    refusal = ledger.reserve(reservation("big", team(limit="0.4", lanes=8)))  # lanes of $0.05
    assert refusal is not None and refusal.budget is not None
    assert lanes(table) == {} and reservations(table) == []


def test_over_the_model_throttling_loses_no_cost_and_overspends_nothing() -> None:
    """Partitions that take 25 write units a second (a lane gets about 20, in bursts): admissions and
    settlements are throttled (the client retries, then the ledger gives up: 503, or a settlement
    retried in the background and recorded for the sweeper), and still every metered cost is
    charged exactly once and the budget is never exceeded."""
    result = run_load(DESIGNS["after"], 600, 1.0, wcu_per_s=25.0)
    assert result.throttles > 50
    assert result.overspend == 0
    assert result.consistent, (result.ledger_spent, result.metered, result.ledger_reserved, result.stranded)


def test_throttling_on_a_laned_admission_is_not_retried_on_another_lane(table: Table) -> None:
    ledger = Ledger(table, clock=lambda: NOW)
    faults = install(ledger)
    faults.add("transact_write_items", "pte", when=admission)
    with pytest.raises(LedgerBusy) as busy:
        ledger.reserve(reservation("t1", team(lanes=16)))
    assert busy.value.throttled and faults.calls["transact_write_items"] == 1


def test_lanes_are_part_of_a_budget_definition_and_the_hook_uses_them(start, table: Table) -> None:  # type: ignore[no-untyped-def]
    from switchboard.core.principal import Limits
    from switchboard.limits.definitions import LimitStore

    from tests.limits.conftest import fire

    LimitStore(table).put(Scope.TEAM, "ml", Limits(budget_usd=Decimal("1"), lanes=8))
    assert LimitStore(table).get(Scope.TEAM, "ml") == Limits(budget_usd=Decimal("1"), lanes=8)
    gw, key = start()
    secret, _ = key(budget_usd=Decimal(10), team="ml")
    answers = fire(gw, secret, 12)
    assert {r.status_code for r in answers} == {200}
    served = sum(Decimal(str(r.json()["usage"]["cost"])) for r in answers)
    hook = gw.gateway.hooks[0]
    from tests.limits.conftest import wait_for

    wait_for(lambda: hook.settler.pending == 0)
    rows = lanes(table)
    assert rows and all(k.startswith("budget#team#ml#L") for k in rows)
    assert sum((row["spent"] for row in rows.values()), Decimal(0)) == served
    line = dataclasses.replace(team(limit="1", lanes=8), period_id=next(iter(rows.values()))["sk"])
    assert hook.ledger.used(line)["spent"] == served


def test_budgets_set_lanes_keeps_them_warns_when_they_change_and_show_sums_them(
    cli_env: Table, capsys: pytest.CaptureFixture[str]
) -> None:
    import json

    from switchboard.cli import main
    from switchboard.limits.definitions import LimitStore

    assert main(["budgets", "set", "team:ml", "--budget-usd", "100", "--lanes", "8", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["lanes"] == 8
    assert main(["budgets", "set", "team:ml", "--budget-usd", "120"]) == 0  # the lanes are kept
    out = capsys.readouterr()
    assert "in 8 lanes" in out.out and "warning" not in out.err
    assert LimitStore(cli_env).get(Scope.TEAM, "ml").lanes == 8  # type: ignore[union-attr]
    assert main(["budgets", "set", "team:ml", "--budget-usd", "120", "--lanes", "16"]) == 0
    assert "goes from 8 to 16 lanes" in capsys.readouterr().err
    with pytest.raises(SystemExit) as bad:
        main(["budgets", "set", "team:ml", "--rpm", "5", "--lanes", "4000"])
    assert bad.value.code == 2
    assert "lanes go from 1 to 1000" in capsys.readouterr().err

    from datetime import UTC, datetime

    period = datetime.now(UTC).strftime("%Y-%m")
    line = BudgetLine(Scope.TEAM, "ml", "team 'ml'", Decimal(120), Period.MONTH, period, None, lanes=16)
    book = Ledger(cli_env)
    for n in range(5):
        assert (
            book.reserve(Reservation(f"s{n}", Decimal("1"), 1, (line,), (), expires_at=2_000_000_000)) is None
        )
    assert main(["budgets", "show", "team:ml", "--json"]) == 0
    use = json.loads(capsys.readouterr().out)["use"]["budget"]
    assert use["reserved_usd"] == "5" and use["requests"] == 5 and use["limit_usd"] == "120"


def test_through_the_gateway_under_conflicts_a_laned_team_budget_charges_every_cost_once(
    start, table: Table
) -> None:  # type: ignore[no-untyped-def]
    """The hook's admission, settlement, background retries and the sweeper, with a team budget
    in lanes and half of all transactions cancelled for conflicts (over moto)."""
    from switchboard.core.principal import Limits
    from switchboard.limits.definitions import LimitStore

    from tests.limits.conftest import fire, wait_for

    LimitStore(table).put(Scope.TEAM, "ml", Limits(budget_usd=Decimal("100"), lanes=16))
    gw, key = start()
    secret, _ = key(budget_usd=Decimal(100), team="ml")
    hook = gw.gateway.hooks[0]
    faults = install(hook.ledger, seed=5)
    faults.add("transact_write_items", "conflict", rate=0.5)
    answers = fire(gw, secret, 30)
    assert {r.status_code for r in answers} <= {200, 503}
    served = sum(Decimal(str(r.json()["usage"]["cost"])) for r in answers if r.status_code == 200)
    assert served > 0
    wait_for(lambda: hook.settler.pending == 0, timeout=30)
    faults.clear()
    hook.ledger.sweep(now=10**10)
    assert reservations(table) == []
    rows = lanes(table)
    assert len(rows) > 1  # spread over lanes
    assert sum((row["spent"] for row in rows.values()), Decimal(0)) == served
    assert all(row["reserved"] == 0 for row in rows.values())


def test_a_busy_keys_own_limits_take_lanes_too(cli_env: Table, capsys: pytest.CaptureFixture[str]) -> None:
    """A key busier than one item takes (a service's key at hundreds of requests a second) has its
    own budget and rpm/tpm in lanes, set as a team's are: ``keys create/update --lanes``."""
    import json

    from switchboard.cli import main
    from switchboard.limits.keys import KeyStore

    argv = ["keys", "create", "--name", "svc", "--budget-usd", "5000", "--rpm", "120000"]
    assert main([*argv, "--lanes", "auto", "--peak-rps", "500", "--json"]) == 0
    created = json.loads(capsys.readouterr().out)
    assert created["lanes"] == 100  # one per 5 requests/s
    record = KeyStore(cli_env).get(created["id"])
    assert record.limits.lanes == 100 and record.limits.rpm == 120000
    assert main(["keys", "update", created["id"], "--lanes", "8"]) == 0
    out = capsys.readouterr()
    assert "goes from 100 to 8 lanes" in out.err and "in 8 lanes" in out.out
    assert main(["keys", "update", created["id"], "--rpm", "1000"]) == 0  # the lanes are kept
    capsys.readouterr()
    assert KeyStore(cli_env).get(created["id"]).limits.lanes == 8
    with pytest.raises(SystemExit) as bad:
        main(["keys", "update", created["id"], "--lanes", "4000"])
    assert bad.value.code == 2
    assert main(["keys", "update", created["id"], "--lanes", "100"]) == 1  # 10 of the 1,000 rpm a lane
    assert "a lane needs at least 20" in capsys.readouterr().err
    assert main(["keys", "update", created["id"], "--peak-rps", "50"]) == 1
    assert "--peak-rps goes with --lanes auto" in capsys.readouterr().err
    plain = ["keys", "create", "--name", "p", "--budget-usd", "5", "--json"]
    assert main(plain) == 0 and "lanes" not in json.loads(capsys.readouterr().out)
