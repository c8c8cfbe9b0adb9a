"""Leases (docs/limits.md, "Leases"): a settlement reserves the instance's next estimate ahead on
each shared lane, in its own transaction, and the next admission takes that reservation over
instead of writing the lane. Over moto, with every transaction's items recorded, and through the
gateway over HTTP."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import httpx
from switchboard.core.principal import Period, Scope
from switchboard.limits.ledger import LEASE_S, BudgetLine, Leases, Ledger, RateLine, Reservation
from switchboard.limits.model import rate_window
from switchboard.limits.table import Table

from tests.limits.conftest import items, post, reservations, wait_for

NOW = 1_800_000_000.0  # the start of a minute: a rate window with 60 s left


class _Recording:
    """A table client that keeps the items of every transaction (then makes it)."""

    def __init__(self, client: Any) -> None:
        self._client = client
        self.transactions: list[list[dict[str, Any]]] = []

    def transact_write_items(self, **kwargs: Any) -> Any:
        self.transactions.append(kwargs["TransactItems"])
        return self._client.transact_write_items(**kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)


def recorded(table: Table) -> tuple[Table, _Recording]:
    client = _Recording(table.client)
    return Table(client, table.name), client


def written(transaction: list[dict[str, Any]]) -> list[str]:
    """``Op pk`` for each item of a transaction."""
    out = []
    for item in transaction:
        ((op, body),) = item.items()
        out.append(f"{op} {body['Key']['pk']['S'] if 'Key' in body else body['Item']['pk']['S']}")
    return out


def team(limit: str = "100", lanes: int = 4) -> BudgetLine:
    return BudgetLine(
        Scope.TEAM, "ml", "team 'ml'", Decimal(limit), Period.MONTH, "2027-01", None, lanes=lanes
    )


def key_budget(limit: str = "10") -> BudgetLine:
    return BudgetLine(Scope.KEY, "key_1", "key 'k'", Decimal(limit), Period.MONTH, "2027-01", None)


def res(
    request_id: str, *budgets: BudgetLine, usd: str = "0.1", rates: tuple[RateLine, ...] = ()
) -> Reservation:
    return Reservation(request_id, Decimal(usd), 50, budgets, rates, expires_at=int(NOW) + 600)


def lanes(table: Table, prefix: str = "budget#team#ml#L") -> dict[str, dict[str, Any]]:
    return {str(i["pk"]): i for i in items(table) if str(i["pk"]).startswith(prefix)}


def totals(table: Table) -> tuple[Decimal, Decimal, Decimal]:
    rows = lanes(table).values()
    return (
        sum((Decimal(r.get("spent", 0)) for r in rows), Decimal(0)),
        sum((Decimal(r.get("reserved", 0)) for r in rows), Decimal(0)),
        sum((Decimal(r.get("used", 0)) for r in rows), Decimal(0)),
    )


def leases_in(table: Table) -> list[dict[str, Any]]:
    return [r for r in reservations(table) if str(r["pk"]).startswith("resv#lease.")]


def test_the_next_admission_takes_the_lease_over_without_writing_the_lane(table: Table) -> None:
    recording, client = recorded(table)
    ledger = Ledger(recording, clock=lambda: NOW, leases=Leases(clock=lambda: NOW))
    line = team()
    first = res("r1", line)
    assert ledger.reserve(first) is None
    assert any(w.startswith("Update budget#team#ml#L") for w in written(client.transactions[-1]))
    assert ledger.settle(first.hold, Decimal("0.04"), 40, refill=first) is True
    # One transaction: r1 settled and the lease reserved, on r1's lane in one update.
    assert len(client.transactions) == 2
    assert sorted(w.split()[0] for w in written(client.transactions[-1])) == ["Delete", "Put", "Update"]
    assert len(ledger.leases or ()) == 1 and len(leases_in(table)) == 1
    assert totals(table) == (Decimal("0.04"), Decimal("0.1"), Decimal("0.14"))
    before = lanes(table)

    second = res("r2", team())
    assert ledger.reserve(second) is None
    admission = written(client.transactions[-1])
    assert admission[0] == "Put resv#r2" and admission[1].startswith("Delete resv#lease.")
    assert not any("budget#" in w for w in admission)  # the lane is not written
    assert lanes(table) == before and leases_in(table) == [] and len(ledger.leases or ()) == 0
    assert second.budgets[0].lane == first.budgets[0].lane  # reserved on the lease's lane

    assert ledger.settle(second.hold, Decimal("0.07"), 60, refill=second) is True
    assert totals(table) == (Decimal("0.11"), Decimal("0.1"), Decimal("0.21"))  # a new lease held
    requests = lambda: sum(int(r.get("requests", 0)) for r in lanes(table).values())  # noqa: E731
    assert requests() == 2  # r1 and r2: a lease is counted when a request settles it
    # The lease nobody takes is the sweeper's, once it expires: returned in full.
    swept = ledger.sweep(now=NOW + LEASE_S + 1)
    assert [h.request_id.startswith("lease.") for h in swept.returned] == [True] and not swept.refunded
    assert totals(table) == (Decimal("0.11"), Decimal(0), Decimal("0.11"))
    assert reservations(table) == [] and requests() == 2


def test_a_lease_larger_than_the_estimate_is_held_and_settled_at_its_own_amount(table: Table) -> None:
    ledger = Ledger(table, clock=lambda: NOW, leases=Leases(clock=lambda: NOW))
    first = res("r1", team(), usd="0.2")
    assert ledger.reserve(first) is None
    assert ledger.settle(first.hold, Decimal("0.15"), 40, refill=first) is True
    small = res("r2", team(), usd="0.05")
    assert ledger.reserve(small) is None and small.leases  # the $0.20 lease covers $0.05
    stored = ledger.pending("r2")
    assert stored is not None and stored.usd == Decimal("0.05")
    assert stored.usd_on(stored.budget_keys[0]) == Decimal("0.2")  # what the lane holds for it
    assert ledger.settle(stored, Decimal("0.03"), 10) is True  # no refill: nothing more held
    assert totals(table) == (Decimal("0.18"), Decimal(0), Decimal("0.18"))
    # A request estimated above the lease's amount reserves on the lane itself; the lease stays.
    assert ledger.settle(first.hold, Decimal("0.15"), 40) is False  # settled before: a no-op
    third = res("r3", team(), usd="0.2")
    assert ledger.reserve(third) is None
    assert ledger.settle(third.hold, Decimal("0.1"), 40, refill=third) is True
    big = res("r4", team(), usd="0.5")
    assert ledger.reserve(big) is None and not big.leases and len(ledger.leases or ()) == 1


def test_a_lane_without_room_for_a_lease_still_settles_exactly(table: Table) -> None:
    ledger = Ledger(table, clock=lambda: NOW, leases=Leases(clock=lambda: NOW))
    line = team(limit="40", lanes=4)  # $10 a lane: 100 estimates of $0.10, the least leased
    for lane in range(4):  # each lane nearly spent: room for one more estimate, not two
        ledger.table.client.put_item(
            TableName=table.name,
            Item={
                **line.lane_key(lane),
                "used": {"N": "9.85"},
                "spent": {"N": "9.85"},
                "reserved": {"N": "0"},
            },
        )
    first = res("r1", line)
    assert ledger.reserve(first) is None
    assert ledger.settle(first.hold, Decimal("0.1"), 40, refill=first) is True
    assert len(ledger.leases or ()) == 0 and leases_in(table) == []
    spent, reserved, used = totals(table)
    assert (spent, reserved, used) == (Decimal("39.5"), Decimal(0), Decimal("39.5"))


def test_small_lanes_take_no_leases(table: Table) -> None:
    ledger = Ledger(table, clock=lambda: NOW, leases=Leases(clock=lambda: NOW))
    first = res("r1", team(limit="1.2", lanes=4))  # $0.30 a lane: 3 estimates
    assert ledger.reserve(first) is None
    assert ledger.settle(first.hold, Decimal("0.1"), 40, refill=first) is True
    assert len(ledger.leases or ()) == 0 and reservations(table) == []


def test_a_lease_the_sweeper_returned_first_falls_back_to_the_lane(table: Table) -> None:
    # The instance's clock lags the sweeper's: it still thinks its lease is fresh.
    ledger = Ledger(table, clock=lambda: NOW, leases=Leases(clock=lambda: NOW))
    first = res("r1", team())
    assert ledger.reserve(first) is None
    assert ledger.settle(first.hold, Decimal("0.04"), 40, refill=first) is True
    swept = Ledger(table).sweep(now=NOW + LEASE_S + 1)
    assert len(swept.returned) == 1 and totals(table) == (Decimal("0.04"), 0, Decimal("0.04"))
    second = res("r2", team())
    assert ledger.reserve(second) is None and not second.leases
    assert totals(table) == (Decimal("0.04"), Decimal("0.1"), Decimal("0.14"))  # r2 on the lane


def test_a_refusal_on_another_line_gives_the_lease_back(table: Table) -> None:
    ledger = Ledger(table, clock=lambda: NOW, leases=Leases(clock=lambda: NOW))
    first = res("r1", team(), key_budget(limit="0.15"))
    assert ledger.reserve(first) is None
    assert ledger.settle(first.hold, Decimal("0.1"), 40, refill=first) is True  # key: $0.05 left
    second = res("r2", team(), key_budget(limit="0.15"))
    refusal = ledger.reserve(second)
    assert refusal is not None and refusal.budget is not None and refusal.budget.scope is Scope.KEY
    assert len(ledger.leases or ()) == 1 and len(leases_in(table)) == 1 and not second.leases
    third = res("r3", team(), usd="0.1")
    assert ledger.reserve(third) is None and third.leases  # still there for the next one


def test_a_rate_lease_holds_one_request_of_its_window_only(table: Table) -> None:
    window, _ = rate_window(NOW)
    line = RateLine(Scope.TEAM, "ml", "team 'ml'", 600, None, window, lanes=2)  # 300 a lane
    ledger = Ledger(table, clock=lambda: NOW, leases=Leases(clock=lambda: NOW))
    first = res("r1", rates=(line,))
    assert ledger.reserve(first) is None
    assert ledger.settle(first.hold, Decimal(0), 40, refill=first) is True
    count = lambda: sum(int(r.get("req", 0)) for r in lanes(table, "rate#team#ml#L").values())  # noqa: E731
    assert count() == 2  # r1, and the lease's request
    second = res("r2", rates=(line,))
    assert ledger.reserve(second) is None and second.leases and count() == 2  # r2 is the lease's
    assert ledger.settle(second.hold, Decimal(0), 30, refill=second) is True and count() == 3
    toks = sum(int(r.get("tok", 0)) for r in lanes(table, "rate#team#ml#L").values())
    assert toks == 40 + 30 + 50  # actual, actual, and the new lease's estimate
    later = res("r3", rates=(RateLine(Scope.TEAM, "ml", "team 'ml'", 600, None, window + 1, lanes=2),))
    assert ledger.reserve(later) is None and not later.leases  # the next minute: its own request


def three_requests(gw: Any, secret: str) -> tuple[Decimal, list[list[str]]]:
    """Three requests one after the other, each settled before the next: what they cost, and what
    each one's admission transaction wrote (``written``)."""
    hook = gw.gateway.hooks[0]
    hook.ledger.table, client = recorded(hook.ledger.table)
    served = Decimal(0)
    for _ in range(3):
        answer: httpx.Response = post(gw, secret)
        assert answer.status_code == 200
        served += Decimal(str(answer.json()["usage"]["cost"]))
        wait_for(lambda: hook.settler.pending == 0)
    admissions = [written(t) for t in client.transactions if written(t)[0].startswith("Put resv#req_")]
    assert len(admissions) == 3
    return served, admissions


def test_through_the_gateway_the_second_request_takes_over_the_first_ones_lease(start, table: Table) -> None:  # type: ignore[no-untyped-def]
    from switchboard.core.principal import Limits
    from switchboard.limits.definitions import LimitStore

    LimitStore(table).put(Scope.TEAM, "ml", Limits(budget_usd=Decimal("100"), lanes=4))
    gw, key = start()
    secret, _ = key(team="ml")
    hook = gw.gateway.hooks[0]
    served, admissions = three_requests(gw, secret)
    assert any(w.startswith("Update budget#team#ml#L") for w in admissions[0])
    for later in admissions[1:]:  # each taken over from the lease the one before left
        assert not any(w.startswith("Update budget#team#ml#L") for w in later)
        assert any(w.startswith("Delete resv#lease.") for w in later)
    spent, reserved, used = totals(table)
    assert spent == served and reserved > 0 and used == spent + reserved  # the one lease held
    assert len(leases_in(table)) == 1
    gw.stop()  # a graceful shutdown gives the lease back (else the sweeper would, once expired)
    assert totals(table) == (served, Decimal(0), served) and reservations(table) == []
    assert hook.ledger.sweep(now=NOW * 2).returned == []


def test_under_conflicts_and_lost_answers_every_cost_is_charged_once_and_every_lease_returned(
    table: Table,
) -> None:
    """The hook's paths at the ledger's seam, with 30 % of transactions cancelled for conflicts and
    10 % committed but their answer lost: an admission that raised ``LedgerBusy`` wrote nothing
    (and keeps its leases); one whose answer was lost is released (refunded, its leases spent);
    a settlement is retried until it commits or finds itself settled before. A lost settlement may
    have made a lease the instance never learnt of: the sweeper returns it. In the end the lanes
    hold exactly the costs charged, nothing reserved, no reservation left."""
    from switchboard.infra.awsjson import TransportError
    from switchboard.limits.ledger import LedgerBusy

    from tests.limits.faults import install

    ledger = Ledger(table, clock=lambda: NOW, sleep=lambda _s: None, leases=Leases(clock=lambda: NOW))
    faults = install(ledger, seed=3)
    faults.add("transact_write_items", "conflict", rate=0.3)
    faults.add("transact_write_items", "lost", rate=0.1)

    def until_done(call: Any) -> Any:
        for _ in range(50):
            try:
                return call()
            except (LedgerBusy, TransportError):
                continue
        raise AssertionError("never committed")

    charged, leased, released = Decimal(0), 0, 0
    for n in range(80):
        request = res(f"r{n}", team())
        try:
            assert ledger.reserve(request, tries=1) is None
        except LedgerBusy:  # 503 limits_busy: nothing written
            continue
        except TransportError:  # no answer: the hook releases whatever it wrote
            until_done(lambda request=request: ledger.settle(request.hold, Decimal(0), 0))
            released += 1
            continue
        leased += bool(request.leases)
        cost = Decimal("0.01") * (n % 7 + 1)
        until_done(lambda request=request, cost=cost: ledger.settle(request.hold, cost, 30, refill=request))
        charged += cost
    assert leased > 20 and released > 0  # both paths taken
    faults.clear()
    ledger.return_leases()
    ledger.sweep(now=NOW + LEASE_S + 1)  # the leases made by settlements whose answer was lost
    assert totals(table) == (charged, Decimal(0), charged)
    assert reservations(table) == []


def test_a_fail_open_booking_leaves_the_released_admissions_lease_to_it(table: Table) -> None:
    """The hook's fail-open path: an admission whose answer was lost took over a $0.20 lease for a
    $0.10 estimate, the request is served and booked late (``late_booking``), and the first
    admission is released. The release gives back the lease's $0.20, the late booking holds its
    own estimate on the lane, and nothing stays reserved."""
    from switchboard.infra.awsjson import TransportError
    from switchboard.limits.hook import late_booking

    from tests.limits.faults import admission, install

    ledger = Ledger(table, clock=lambda: NOW, leases=Leases(clock=lambda: NOW))
    first = res("r1", team(), usd="0.2")
    assert ledger.reserve(first) is None
    assert ledger.settle(first.hold, Decimal("0.15"), 40, refill=first) is True  # a $0.20 lease
    faults = install(ledger)
    faults.add("transact_write_items", "lost", times=1, when=admission)
    second = res("r2", team(), usd="0.1")
    try:
        ledger.reserve(second)  # committed, on the lease; the answer never came
    except TransportError:
        pass
    else:
        raise AssertionError("the admission's answer was not lost")
    late = late_booking(second)
    assert ledger.reserve(late, enforce=False) is None  # on the lane itself: the lease is gone
    assert ledger.settle(second.hold, Decimal(0), 0) is True  # the release: $0.20 back
    assert ledger.settle(late.hold, Decimal("0.05"), 20) is True
    assert totals(table) == (Decimal("0.20"), Decimal(0), Decimal("0.20"))
    assert reservations(table) == []


def test_through_the_gateway_a_busy_keys_own_budget_in_lanes_is_leased_too(start, table: Table) -> None:  # type: ignore[no-untyped-def]
    """A key's own budget in lanes (``keys create --lanes``) is reserved, settled and leased as a
    team's: after the first request, an admission writes none of the key's lanes."""
    gw, key = start()
    secret, key_id = key(budget_usd=Decimal("100"), lanes=4)
    served, admissions = three_requests(gw, secret)
    prefix = f"budget#key#{key_id}#L"
    assert any(w.startswith(f"Update {prefix}") for w in admissions[0])
    for later in admissions[1:]:
        assert not any(w.startswith(f"Update {prefix}") for w in later)
        assert any(w.startswith("Delete resv#lease.") for w in later)
    rows = lanes(table, prefix)
    assert rows and sum(Decimal(r.get("spent", 0)) for r in rows.values()) == served
    gw.stop()
    assert sum(Decimal(r.get("reserved", 0)) for r in lanes(table, prefix).values()) == 0
    assert reservations(table) == []
