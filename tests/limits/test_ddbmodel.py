"""The DynamoDB model of the scale simulation (``switchboard.devtools.ddbmodel``): it must refuse
what DynamoDB refuses (throughput per partition, overlapping transactions, failed conditions),
answer the ledger as moto does when nothing is refused, and run deterministically."""

from __future__ import annotations

import random
from decimal import Decimal
from typing import Any

import pytest
from switchboard.devtools.ddbmodel import Latency, ModelClient, ModelDynamoDB, Sim
from switchboard.infra.awsjson import ClientError
from switchboard.limits.ledger import Ledger, LedgerBusy
from switchboard.limits.table import Table, load

from tests.limits.test_ledger import budget, rate, reservation


def _run(sim: Sim, *tasks: Any, at: float = 0.0) -> None:
    for task in tasks:
        sim.spawn(task, at=at)
    sim.run()


def model(seed: int = 1, **options: Any) -> tuple[Sim, ModelDynamoDB, Ledger]:
    sim = Sim(seed)
    db = ModelDynamoDB(sim, seed=seed, **options)
    return sim, db, Ledger(Table(ModelClient(db), "t"), clock=lambda: 1_800_000_000.0, sleep=sim.wait)


def _update(pk: str, expression: str = "ADD n :one", **extra: Any) -> dict[str, Any]:
    return {
        "TableName": "t",
        "Key": {"pk": {"S": pk}, "sk": {"S": "x"}},
        "UpdateExpression": expression,
        "ExpressionAttributeValues": {":one": {"N": "1"}},
        **extra,
    }


def test_overlapping_transactions_on_one_item_cancel_with_transaction_conflict() -> None:
    sim, db, _ = model()
    client = ModelClient(db)
    outcomes: list[Any] = []

    def tx() -> None:
        try:
            client.transact_write_items(TransactItems=[{"Update": _update("hot")}])
            outcomes.append("ok")
        except ClientError as exc:
            outcomes.append([r["Code"] for r in exc.response["CancellationReasons"]])

    _run(sim, tx, tx)  # arrive together: the second finds the first in progress
    assert outcomes == ["ok", ["TransactionConflict"]]
    assert db.stats.conflicts == 1
    assert load(db.items[("hot", "x")])["n"] == 1

    def plain() -> None:
        try:
            client.update_item(**_update("hot"))
        except ClientError as exc:
            outcomes.append(exc.response["Error"]["Code"])

    _run(sim, tx, plain, at=sim.now + 1)
    assert sorted(outcomes[-2:]) == ["TransactionConflictException", "ok"]  # the refusal answers first


def test_one_item_takes_about_a_thousand_write_units_a_second_then_throttles() -> None:
    # No latency to speak of: 3,000 plain writes of one item inside one virtual second.
    sim, db, _ = model(latency=Latency(one_way_s=0.0, medians_s={}, sigma=0.0, tail_p=0.0))
    db.latency.medians_s["UpdateItem"] = 0.0001
    client = ModelClient(db)
    refused: list[str] = []

    def write() -> None:
        try:
            client.update_item(**_update("hot"))
        except ClientError as exc:
            refused.append(exc.response["Error"]["Code"])

    for i in range(3000):
        sim.spawn(write, at=i / 3000)
    sim.run(1.0)
    written = int(load(db.items[("hot", "x")])["n"])
    # 1,000 a second plus the 0.25 s burst; the refused ones were retried by the client (3 tries).
    assert 1000 <= written <= 1300
    assert db.stats.throttles > 1000
    sim.run()
    assert set(refused) == {"ProvisionedThroughputExceededException"}


def test_a_transactional_write_costs_two_units_and_a_failed_condition_still_costs() -> None:
    sim, db, ledger = model()
    line = budget("0.3")
    _run(sim, lambda: ledger.reserve(reservation("r1", budgets=(line,))))
    first = db.stats.write_units
    assert first == 2 + 2 + 1  # reservation, budget line, the reservation's index entry
    refused: list[Any] = []
    _run(sim, lambda: refused.append(ledger.reserve(reservation("r2", budgets=(line,)))))
    assert refused[0] is not None and refused[0].budget == line
    assert db.stats.write_units > first


def test_the_ledger_over_the_model_answers_as_over_moto() -> None:
    """Admission, refusal, duplicate settle and the sweeper: the same answers test_ledger.py
    gets from moto."""
    sim, db, ledger = model()
    line, window = budget("1"), rate(rpm=2)
    answers: list[Any] = []

    def flow() -> None:
        first = reservation("a", budgets=(line,), rates=(window,))
        answers.append(ledger.reserve(first))
        answers.append(ledger.reserve(first))  # idempotent
        answers.append(ledger.reserve(reservation("b", budgets=(line,), rates=(window,))))
        answers.append(ledger.reserve(reservation("c", budgets=(line,), rates=(window,))))  # rpm 2
        answers.append(ledger.settle(first.hold, Decimal("0.1"), 7))
        answers.append(ledger.settle(first.hold, Decimal("0.1"), 7))  # a no-op

    _run(sim, flow)
    assert answers[:3] == [None, None, None]
    assert answers[3] is not None and answers[3].rate == window
    assert answers[4:] == [True, False]
    row = load(db.items[(line.key["pk"]["S"], line.key["sk"]["S"])])
    assert (row["spent"], row["reserved"], row["used"]) == (Decimal("0.1"), Decimal("0.25"), Decimal("0.35"))
    swept: list[Any] = []
    _run(sim, lambda: swept.append(ledger.sweep(now=2_000_000_000)))
    assert [h.request_id for h in swept[0].refunded] == ["b"]
    row = load(db.items[(line.key["pk"]["S"], line.key["sk"]["S"])])
    assert (row["reserved"], row["used"]) == (Decimal(0), Decimal("0.1"))


def test_unsupported_expressions_are_refused_not_guessed() -> None:
    sim, db, _ = model()
    client = ModelClient(db)
    codes: list[str] = []

    def bad() -> None:
        try:
            client.update_item(**_update("k", "SET n = list_append(n, :one)"))
        except ClientError as exc:
            codes.append(exc.response["Error"]["Code"])

    _run(sim, bad)
    assert codes == ["ValidationException"]


def test_a_run_is_deterministic_for_its_seed() -> None:
    def once() -> tuple[Any, ...]:
        random.seed(5)  # the ledger's own jitter
        sim, db, ledger = model(seed=5)
        line = budget("0.6", ident="team")
        out: list[Any] = []

        def one(n: int) -> None:
            try:
                out.append(
                    (n, ledger.reserve(reservation(f"r{n}", usd="0.1", budgets=(line,))) is None, sim.now)
                )
            except LedgerBusy:
                out.append((n, "busy", sim.now))

        for n in range(40):
            sim.spawn(lambda n=n: one(n), at=n * 0.001)  # type: ignore[misc]
        sim.run()
        return tuple(out), db.stats.conflicts

    first = once()
    assert first == once()
    assert first[1] > 0  # 40 transactions on one item within 40 ms: conflicts, retried


@pytest.mark.parametrize("mode", ["budget"])
def test_the_simulation_takes_a_mode(mode: str, capsys: pytest.CaptureFixture[str]) -> None:
    from switchboard.devtools import scalesim

    assert scalesim.main([mode, "--design", "before", "--loads", "50", "--duration", "0.5"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].startswith("offered 50 rps: goodput ")
    assert lines[-1].startswith("shared budget holds")
