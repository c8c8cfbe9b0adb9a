"""A shared rate limit in lanes, and what each instance remembers of full lanes (docs/limits.md,
"At scale"): never more than the rpm in a window, over moto, over the DynamoDB model at 2,000
requests/s, and through the gateway over HTTP; the 429's Retry-After unchanged."""

from __future__ import annotations

import json
import time
from decimal import Decimal
from typing import Any

import pytest
from switchboard.core.principal import Limits, Scope
from switchboard.devtools.scalesim import RATE_DESIGNS, run_load
from switchboard.limits.definitions import LimitStore
from switchboard.limits.ledger import LaneMemory, Ledger, RateLine, Reservation
from switchboard.limits.model import rate_window
from switchboard.limits.table import Table, call_counts

from tests.limits.conftest import fire, items, post

NOW = 1_800_000_030.0  # the middle of a minute
WINDOW, _ = rate_window(NOW)


def team_rate(rpm: int | None = 40, tpm: int | None = None, lanes: int = 4) -> RateLine:
    return RateLine(Scope.TEAM, "ml", "team 'ml'", rpm, tpm, WINDOW, lanes=lanes)


def admission(request_id: str, *rates: RateLine, tokens: int = 10) -> Reservation:
    return Reservation(request_id, Decimal("0.01"), tokens, (), rates, expires_at=int(NOW) + 600)


def windows(table: Table) -> dict[str, dict[str, Any]]:
    return {str(i["pk"]): i for i in items(table) if str(i["pk"]).startswith("rate#team#ml")}


def test_a_laned_rpm_admits_exactly_its_lanes_shares_and_names_the_whole_window(table: Table) -> None:
    ledger = Ledger(table, clock=lambda: NOW)
    line = team_rate(rpm=42)  # 4 lanes of 10: the rounding leaves 2 of the 42 unused
    answers = [ledger.reserve(admission(f"r{n}", line)) for n in range(41)]
    assert answers[:40] == [None] * 40
    refusal = answers[40]
    assert refusal is not None and refusal.rate is not None and refusal.rate.ident == "ml"
    assert refusal.item == {"req": 40, "tok": 400}  # every lane summed
    rows = windows(table)
    assert sorted(rows) == [f"rate#team#ml#L{n}" for n in range(4)]
    assert all(row["req"] == 10 and row["sk"] == f"m#{WINDOW}" for row in rows.values())


def test_a_laned_tpm_settles_on_the_lane_the_request_counted_on(table: Table) -> None:
    now = [NOW]
    ledger = Ledger(table, clock=lambda: now[0])
    line = team_rate(rpm=None, tpm=400, lanes=4)  # 100 tokens a lane
    held = [admission(f"t{n}", line, tokens=50) for n in range(8)]
    assert all(ledger.reserve(res) is None for res in held)  # two of 50 on each lane
    refused = ledger.reserve(admission("t8", line, tokens=50))
    assert refused is not None and refused.item == {"req": 8, "tok": 400}
    for res in held:
        assert ledger.settle(res.hold, Decimal("0.005"), 20) is True  # 50 reserved, 20 used
    rows = windows(table)
    assert sum(row["tok"] for row in rows.values()) == 160 and all(row["tok"] == 40 for row in rows.values())
    now[0] += 1.5  # the refusal above is no longer sure: the lanes are read, and have room
    assert ledger.reserve(admission("t9", line, tokens=50)) is None


def test_a_lane_smaller_than_the_request_is_never_written(table: Table) -> None:
    ledger = Ledger(table, clock=lambda: NOW)
    line = team_rate(rpm=None, tpm=400, lanes=4)
    refusal = ledger.reserve(admission("big", line, tokens=101))  # more than a lane's 100
    assert refusal is not None and refusal.rate is not None
    assert windows(table) == {} and [i for i in items(table) if str(i["pk"]).startswith("resv#")] == []


def test_an_instance_that_saw_every_lane_full_refuses_without_a_call_then_with_one_read(
    table: Table,
) -> None:
    """The first refusal spills lane by lane, then reads them all; the same instance's next
    refusal within a second needs no call (a window's count only grows), and later one read."""
    ledger = Ledger(table, clock=lambda: NOW)
    line = team_rate(rpm=8, lanes=4)
    for n in range(8):
        assert ledger.reserve(admission(f"f{n}", line)) is None
    calls: list[str] = []
    now = [NOW]
    fresh = Ledger(_Counting(table, calls), clock=lambda: now[0])
    assert fresh.reserve(admission("x1", line)) is not None
    assert calls.count("transact_write_items") == 3 and calls.count("batch_get_item") == 1
    calls.clear()
    refusal = fresh.reserve(admission("x2", line))
    assert refusal is not None and refusal.item == {"req": 8, "tok": 80} and calls == []
    now[0] += 1.5
    refusal = fresh.reserve(admission("x3", line))
    assert refusal is not None and refusal.item == {"req": 8, "tok": 80} and calls == ["batch_get_item"]


def test_a_memory_older_than_a_second_only_steers_a_lane_with_room_again_admits(table: Table) -> None:
    """Lanes remembered full more than a second ago are read, not refused; within the second,
    the refusal comes from memory (no call)."""
    now = [NOW]
    memory = LaneMemory(memory_s=60, clock=lambda: now[0])
    ledger = Ledger(table, clock=lambda: NOW, memory=memory)
    line = team_rate(rpm=8, lanes=2)
    for lane in range(2):
        memory.saw(line, lane, {"req": 4})  # both "full", but nothing was written
    assert memory.full(line, admission("m", line)) == {0, 1}
    assert memory.sure(line, admission("m", line)) == [{"req": 4}, {"req": 4}]
    refused = ledger.reserve(admission("m0", line))
    assert refused is not None and refused.item == {"req": 8, "tok": 0} and windows(table) == {}
    now[0] += 1.5  # older than a second: steering only
    assert memory.sure(line, admission("m", line)) is None
    assert ledger.reserve(admission("m1", line)) is None
    assert sum(row["req"] for row in windows(table).values()) == 1


def test_budgets_and_rates_of_one_scope_share_its_lanes_setting(
    cli_env: Table, capsys: pytest.CaptureFixture[str]
) -> None:
    from switchboard.cli import main

    assert (
        main(
            [
                "budgets",
                "set",
                "team:ml",
                "--rpm",
                "120000",
                "--lanes",
                "auto",
                "--peak-rps",
                "2000",
                "--json",
            ]
        )
        == 0
    )
    out = capsys.readouterr()
    assert json.loads(out.out)["lanes"] == 400 and "400 lanes: one per 5 requests/s" in out.err
    assert LimitStore(cli_env).get(Scope.TEAM, "ml") == Limits(rpm=120_000, lanes=400)
    # auto never gives a lane less than 20 of the rpm
    assert main(["budgets", "set", "team:ml", "--rpm", "600", "--lanes", "auto", "--peak-rps", "2000"]) == 0
    assert LimitStore(cli_env).get(Scope.TEAM, "ml").lanes == 30  # type: ignore[union-attr]
    capsys.readouterr()
    assert main(["budgets", "set", "team:ml", "--rpm", "600", "--lanes", "40"]) == 1
    assert "a lane needs at least 20: use at most 30 lanes" in capsys.readouterr().err
    assert main(["budgets", "set", "team:ml", "--rpm", "610", "--tpm", "1000000", "--lanes", "30"]) == 0
    err = capsys.readouterr().err
    assert "admit 600 of the 610 rpm" in err and "holds 33333 of the 1000000 tpm" in err
    assert main(["budgets", "set", "team:ml", "--rpm", "600", "--lanes", "auto"]) == 1
    assert "--peak-rps" in capsys.readouterr().err
    assert main(["budgets", "show", "team:ml", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["use"]["rate"]["requests_this_minute"] == 0


def test_over_the_model_a_laned_rpm_of_120000_holds_2000_rps_and_no_window_exceeds_it() -> None:
    """The team's window near its minute's end, every lane near its share: the offered load
    fills it in the run, racing for the last requests on 400 lanes."""
    result = run_load(RATE_DESIGNS["after"], 2000, 0.4)
    assert result.rpm == 120_000
    assert result.held and result.window_req <= result.rpm
    assert result.window_req == result.rpm  # filled exactly: 400 lanes of 300
    assert result.refused_rate > 0 and result.consistent
    before = run_load(RATE_DESIGNS["before"], 2000, 0.2)  # one item per window: conflicts cap it
    assert before.goodput < 500 and before.window_req <= before.rpm


def test_through_the_gateway_a_laned_team_rpm_is_never_exceeded(start, table: Table) -> None:  # type: ignore[no-untyped-def]
    LimitStore(table).put(Scope.TEAM, "ml", Limits(rpm=24, lanes=3))  # 3 lanes of 8
    gw, key = start()
    at = (time.time() // 60) * 60 + 30  # the middle of a minute: no window boundary
    for hook in gw.gateway.hooks:
        hook.clock = lambda: at
    secret, _ = key(team="ml")
    answers = fire(gw, secret, 40)
    codes = [r.status_code for r in answers]
    assert codes.count(200) == 24 and codes.count(429) == 16
    refused = next(r for r in answers if r.status_code == 429)
    assert refused.headers["retry-after"] == "30"  # the window's end, as without lanes
    assert refused.json()["error"]["code"] == "rate_limit_exceeded"
    assert "Limit 24, Used 24" in refused.json()["error"]["message"]
    rows = windows(table)
    assert len(rows) == 3 and sum(int(row["req"]) for row in rows.values()) == 24
    assert all(int(row["req"]) == 8 for row in rows.values())
    ok = next(r for r in answers if r.status_code == 200)
    assert ok.headers["x-ratelimit-limit-requests"] == "24"
    # This instance has now seen every lane full within the second: the next request is refused
    # from its memory, with no write and no read of the lanes (docs/limits.md, "At scale").
    before = call_counts()
    again = post(gw, secret)
    assert again.status_code == 429 and again.headers["retry-after"] == "30"
    ledger_ops = ("TransactWriteItems", "BatchGetItem")  # the breaker's and speed's syncs use others
    made = {
        op: n - before.get(op, 0)
        for op, n in call_counts().items()
        if op in ledger_ops and n != before.get(op, 0)
    }
    assert made == {"BatchGetItem": 1}  # the rate headers' read beside admission; without the memory, 2


class _Counting(Table):
    """The table's client, with the name of each call recorded."""

    def __init__(self, table: Table, calls: list[str]) -> None:
        super().__init__(_CountingClient(table.client, calls), table.name)


class _CountingClient:
    def __init__(self, client: Any, calls: list[str]) -> None:
        self._client = client
        self._calls = calls

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._client, name)
        if not callable(method):
            return method

        def call(*args: Any, **kwargs: Any) -> Any:
            self._calls.append(name)
            return method(*args, **kwargs)

        return call
