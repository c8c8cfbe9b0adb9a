"""The ledger against moto: idempotent admission and settlement, rate windows, the sweeper
(``limits.sweeper``, the scheduled handler included)."""

from __future__ import annotations

import json
import time
from decimal import Decimal
from typing import Any

import pytest
from botocore.stub import Stubber
from switchboard.cli import main
from switchboard.core.principal import Period, Scope
from switchboard.limits.ledger import BudgetLine, Ledger, RateLine, Reservation
from switchboard.limits.table import Table

from tests.limits.conftest import ledger, reservations

NOW = 1_800_000_000.0  # 2027-01-15T08:00:00Z


def budget(limit: str = "1", ident: str = "k1") -> BudgetLine:
    return BudgetLine(Scope.KEY, ident, f"key {ident}", Decimal(limit), Period.MONTH, "2027-01", None)


def rate(rpm: int | None = None, tpm: int | None = None, ident: str = "k1") -> RateLine:
    return RateLine(Scope.KEY, ident, f"key {ident}", rpm, tpm, int(NOW // 60))


def reservation(request_id: str, usd: str = "0.25", tokens: int = 100, **lines: Any) -> Reservation:
    return Reservation(
        request_id=request_id,
        usd=Decimal(usd),
        tokens=tokens,
        budgets=tuple(lines.get("budgets", (budget(),))),
        rates=tuple(lines.get("rates", ())),
        expires_at=int(NOW) + 600,
    )


def test_admission_is_idempotent_on_the_request_id(table: Table) -> None:
    book = Ledger(table, clock=lambda: NOW)
    res = reservation("req_a")
    assert book.reserve(res) is None
    assert book.reserve(res) is None  # the same request admitted again: nothing counted twice
    row = ledger(table, "key", "k1")
    assert (row["used"], row["reserved"], row["requests"]) == (Decimal("0.25"), Decimal("0.25"), 1)


def test_a_duplicate_settle_is_a_no_op(table: Table) -> None:
    book = Ledger(table, clock=lambda: NOW)
    res = reservation("req_b", rates=[rate(rpm=10, tpm=1000)])
    book.reserve(res)
    assert book.settle(res.hold, Decimal("0.1"), 40) is True
    settled = ledger(table, "key", "k1")
    assert (settled["spent"], settled["reserved"], settled["used"]) == (Decimal("0.1"), 0, Decimal("0.1"))
    assert book.settle(res.hold, Decimal("0.1"), 40) is False  # retried with the same amounts
    assert book.settle(res.hold, Decimal("0.2"), 99) is False  # or with others
    assert book.settle(res.hold, Decimal(0), 0) is False  # or as a refund
    assert ledger(table, "key", "k1") == settled
    assert ledger_rate(table)["tok"] == 40 and ledger_rate(table)["req"] == 1


def ledger_rate(table: Table) -> dict[str, Any]:
    from tests.limits.conftest import items

    [row] = [i for i in items(table) if str(i["pk"]).startswith("rate#")]
    return row


def test_a_refused_admission_writes_nothing_and_says_which_line(table: Table) -> None:
    book = Ledger(table, clock=lambda: NOW)
    assert book.reserve(reservation("r1", usd="0.6", budgets=[budget("1"), budget("5", "k2")])) is None
    refusal = book.reserve(reservation("r2", usd="0.6", budgets=[budget("5", "k2"), budget("1")]))
    assert refusal is not None and refusal.budget == budget("1") and refusal.item["used"] == Decimal("0.6")
    assert ledger(table, "key", "k2")["used"] == Decimal("0.6")  # not 1.2: the transaction was undone
    assert [r["request_id"] for r in reservations(table)] == ["r1"]


def test_rate_windows_count_requests_and_tokens(table: Table) -> None:
    book = Ledger(table, clock=lambda: NOW)
    lines = {"budgets": (), "rates": [rate(rpm=2, tpm=250)]}
    assert book.reserve(reservation("q1", **lines)) is None
    assert book.reserve(reservation("q2", **lines)) is None
    refused = book.reserve(reservation("q3", **lines))
    assert refused is not None and refused.rate is not None and refused.item["req"] == 2
    tokens = {"budgets": (), "rates": [rate(tpm=250, ident="k9")]}
    assert book.reserve(reservation("t1", tokens=200, **tokens)) is None
    assert book.reserve(reservation("t2", tokens=100, **tokens)) is not None  # 300 > 250
    book.settle(reservation("t1", tokens=200, **tokens).hold, Decimal(0), 20)  # used 20 of the 200
    assert book.reserve(reservation("t2", tokens=100, **tokens)) is None


def test_the_sweeper_refunds_only_expired_reservations_once(table: Table) -> None:
    book = Ledger(table, clock=lambda: NOW)
    old = reservation("req_old")
    fresh = reservation("req_fresh")
    fresh.expires_at = int(NOW) + 3600
    book.reserve(old)
    book.reserve(fresh)
    assert ledger(table, "key", "k1")["used"] == Decimal("0.5")
    assert book.sweep(now=NOW + 601).refunded == [old.hold]
    assert len(book.sweep(now=NOW + 601)) == 0
    row = ledger(table, "key", "k1")
    assert (row["used"], row["reserved"], row["spent"]) == (Decimal("0.25"), Decimal("0.25"), 0)
    assert book.settle(old.hold, Decimal("0.25"), 1) is False  # its request came back too late: no-op
    assert [r["request_id"] for r in reservations(table)] == ["req_fresh"]


def test_budgets_sweep_command(cli_env: Table, capsys: pytest.CaptureFixture[str]) -> None:
    book = Ledger(cli_env, clock=lambda: time.time() - 7200)  # admitted two hours ago
    res = reservation("req_dead")
    res.expires_at = int(time.time()) - 3600
    book.reserve(res)
    assert main(["budgets", "sweep", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out == {
        "refunded": 1,
        "usd": "0.25",
        "settled": 0,
        "settled_usd": "0",
        "busy": 0,
        "leases_returned": 0,
        "requests": ["req_dead"],
    }
    assert ledger(cli_env, "key", "k1")["used"] == 0


def test_transaction_conflicts_are_retried(table: Table) -> None:
    sleeps: list[float] = []
    book = Ledger(table, clock=lambda: NOW, sleep=sleeps.append)
    conflict = {"CancellationReasons": [{"Code": "None"}, {"Code": "TransactionConflict"}]}
    with Stubber(table.client) as stub:
        for _ in range(2):
            stub.add_client_error(
                "transact_write_items", "TransactionCanceledException", modeled_fields=conflict
            )
        stub.add_response("transact_write_items", {})
        assert book.reserve(reservation("req_c")) is None
        stub.assert_no_pending_responses()
    assert len(sleeps) == 2


def test_the_scheduled_sweeper_handler(table: Table, monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    from switchboard.devtools.devstack import ROOT

    monkeypatch.setenv("SWITCHBOARD_TABLE", table.name)
    res = reservation("req_orphan")
    res.expires_at = int(time.time()) - 1
    Ledger(table).reserve(res)
    spec = importlib.util.spec_from_file_location("sweeper_handler", ROOT / "functions/sweeper/handler.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    nothing = {"refunded": 0, "usd": "0", "settled": 0, "settled_usd": "0", "busy": 0, "leases_returned": 0}
    assert module.handler({"source": "aws.events"}, None) == {**nothing, "refunded": 1, "usd": "0.25"}
    assert module.handler({}, None) == nothing
    assert ledger(table, "key", "k1")["used"] == 0
