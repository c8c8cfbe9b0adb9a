"""The speed board behind ``fastest``: shared through one DynamoDB item per target (moto), written
at a bounded rate, fed by served requests over HTTP."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from switchboard.limits.table import Table
from switchboard.routing.speed import Measure, SpeedBoard, SpeedStore, Window, fold

from tests.conftest import API_KEY, routing_doc


def test_folding_a_window_weighs_it_as_that_many_updates() -> None:
    old = Measure(1.0, 100.0, 10, 0.0, 3)
    window = Window()
    for _ in range(3):
        window.add(2.0, 50.0)
    new = fold(old, window, 0.2, 5.0)
    one_by_one = 1.0
    for _ in range(3):
        one_by_one = one_by_one * 0.8 + 2.0 * 0.2
    assert new.ttft_s == pytest.approx(one_by_one)
    assert new.tokens_per_s == pytest.approx(100 * 0.8**3 + 50 * (1 - 0.8**3))
    assert (new.samples, new.at, new.version) == (13, 5.0, 4)
    assert fold(None, window, 0.2, 1.0).ttft_s == 2.0  # no history: the window's mean


def test_two_instances_share_one_item_per_target_at_a_bounded_rate(table: Table) -> None:
    now = [1000.0]
    store = SpeedStore(table.name, lambda: table.client)
    writes: list[str] = []
    original = store.write

    def counted(label: str, new: Measure, expected: int) -> bool:
        writes.append(label)
        return original(label, new, expected)

    store.write = counted  # type: ignore[method-assign]
    first = SpeedBoard(store, flush_s=10, clock=lambda: now[0])
    second = SpeedBoard(store, flush_s=10, clock=lambda: now[0])

    async def run() -> None:
        for _ in range(50):
            first.observe("a/m", 0.5, 40.0)
            first.poke()  # 50 observations, one sync: the rate bound
        assert first._task is not None
        await first._task
        assert writes == ["a/m"]
        assert second.speed("b/m") is None and second.speed("a/m") is None  # cold: never read yet
        second.poke()
        await second._task  # type: ignore[misc]
        seen = second.speed("a/m")
        assert (
            seen is not None and seen.ttft_s == pytest.approx(0.5) and seen.tokens_per_s == pytest.approx(40)
        )
        # The second instance folds its own window into the same item; the first reads it back.
        second.observe("a/m", 1.5)
        now[0] += 10
        second.poke()
        await second._task  # type: ignore[misc]
        first.poke()
        await first._task
        shared = first.speed("a/m")
        assert shared is not None and shared.ttft_s == pytest.approx(0.5 * 0.8 + 1.5 * 0.2)

    asyncio.run(run())
    assert writes == ["a/m", "a/m"]
    items = table.client.scan(TableName=table.name)["Items"]
    speed_items = [i for i in items if i["pk"]["S"].startswith("speed#")]
    assert [i["pk"]["S"] for i in speed_items] == ["speed#a/m"]
    assert int(speed_items[0]["n"]["N"]) == 51 and "ttl" in speed_items[0]


def test_a_lost_race_folds_again_over_the_winner(table: Table) -> None:
    store = SpeedStore(table.name, lambda: table.client)
    one, two = Window(), Window()
    one.add(1.0, None)
    two.add(3.0, None)
    assert store.write("x/y", fold(None, one, 0.5, 1.0), 0)
    assert not store.write("x/y", fold(None, two, 0.5, 1.0), 0)  # the version moved on
    merged = store.fold_in("x/y", two, 0.5, 2.0)
    assert merged is not None and merged.ttft_s == pytest.approx(2.0) and merged.version == 2


def test_served_requests_feed_the_board_and_fastest_follows_it(gateway_factory, mock, table: Table) -> None:  # type: ignore[no-untyped-def]
    models = {
        "quick": {
            "strategy": "fastest",
            "targets": [{"provider": "mock", "model": "slow-0.2"}, {"provider": "backup", "model": "echo"}],
        },
        "plain": {"targets": [{"provider": "mock", "model": "echo+plain"}]},
    }
    gw = gateway_factory(doc=routing_doc(mock.base_url, models), table=table.name)
    speeds = gw.gateway.router.speeds
    speeds.explore = 0.0
    speeds.flush_s = 0.0  # share on every settle in this test
    headers = {"authorization": f"Bearer {API_KEY}"}
    body = {"model": "quick", "messages": [{"role": "user", "content": "hi"}], "stream": True}
    # Both cold: operator order, the slow one serves; then the board knows it, and the other is cold.
    first = httpx.post(gw.v1 + "/chat/completions", json=body, headers=headers, timeout=30)
    assert first.headers["x-switchboard-model"] == "slow-0.2"
    speeds.seed("backup/echo", 0.01)
    second = httpx.post(gw.v1 + "/chat/completions", json=body, headers=headers, timeout=30)
    assert second.headers["x-switchboard-model"] == "echo"
    slow = speeds.speed("mock/slow-0.2")
    assert slow is not None and slow.ttft_s >= 0.2
    store = SpeedStore(table.name, lambda: table.client)
    for _ in range(100):  # the background sync after the settle
        if store.read("mock/slow-0.2") is not None:
            break
        asyncio.run(asyncio.sleep(0.05))
    shared = store.read("mock/slow-0.2")
    assert shared is not None and shared.ttft_s >= 0.2
    # A target no fastest route plans with is not measured, and never written.
    plain = httpx.post(
        gw.v1 + "/chat/completions", json={**body, "model": "plain"}, headers=headers, timeout=30
    )
    assert plain.status_code == 200
    assert "mock/echo+plain" not in speeds.windows and store.read("mock/echo+plain") is None


def test_drain_waits_for_the_sync_in_flight(table: Table) -> None:
    store = SpeedStore(table.name, lambda: table.client)
    board = SpeedBoard(store, flush_s=0)

    async def run() -> None:
        board.observe("d/m", 0.3)
        board.poke()
        assert board._task is not None and not board._task.done()
        await board.drain()
        assert board._task.done()

    asyncio.run(run())
    assert store.read("d/m") is not None
