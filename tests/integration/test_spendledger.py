"""The spend ledger end to end: requests through the gateway, then ``switchboard spend``."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from decimal import Decimal
from typing import Any

import httpx
import pytest
from switchboard.billing.spendledger import SpendLedger
from switchboard.cli import main
from switchboard.cli.spend import aggregate, render
from switchboard.exchange import BOOKED

from tests.conftest import routing_doc
from tests.unit.test_costevents import exchange, ok

MSG = [{"role": "user", "content": "a b c"}]


def spend_json(capsys: pytest.CaptureFixture[str], *args: str) -> dict[str, Any]:
    capsys.readouterr()
    assert main(["spend", "--json", *args]) == 0
    return json.loads(capsys.readouterr().out)  # type: ignore[no-any-return]


def test_spend_report_after_a_few_requests(gateway_factory, mock, capsys) -> None:  # type: ignore[no-untyped-def]
    tag = uuid.uuid4().hex[:6]
    priced, free, broken = f"priced-{tag}", f"free-{tag}", f"broken-{tag}"
    doc = routing_doc(
        mock.base_url,
        {
            priced: {"targets": [{"provider": "mock", "model": "echo"}]},
            free: {"targets": [{"provider": "backup", "model": "echo"}]},
            broken: {"targets": [{"provider": "mock", "model": "fail-500"}], "retry": {"attempts": 1}},
        },
        prices={"mock/echo": {"input_per_mtok": "1", "output_per_mtok": "2"}},
    )
    gw = gateway_factory(doc=doc, spend_flush_s=0.1)
    url = gw.v1 + "/chat/completions"
    for body in (
        {"model": priced},
        {"model": priced, "stream": True},
        {"model": priced},
        {"model": free},
        {"model": broken},
    ):
        httpx.post(url, json={"messages": MSG, **body}, headers=gw.headers())
    deadline = time.monotonic() + 10  # the stream settles after its last byte; the ledger flushes after
    # Every row, not just some: a loaded machine flushes the ledger lines at different moments.
    while True:
        rows = {row["name"]: row for row in spend_json(capsys, "--by", "model")["rows"]}
        if [rows.get(name, {}).get("requests") for name in (priced, free, broken)] == [3, 1, 1]:
            break
        assert time.monotonic() < deadline, rows
        time.sleep(0.05)
    assert rows[priced]["requests"] == 3 and rows[priced]["cost_usd"] == "0.000045"  # 3 x 0.000015, exact
    assert rows[priced]["input_tokens"] == 21 and rows[priced]["output_tokens"] == 12
    assert rows[free]["unpriced"] == 1 and rows[free]["cost_usd"] == "0"
    assert rows[broken]["errors"] == 1 and rows[broken]["requests"] == 1

    by_provider = {row["name"] for row in spend_json(capsys, "--by", "provider")["rows"]}
    assert {"mock", "backup"} <= by_provider
    assert main(["spend", "--by", "team"]) == 0
    assert "spend for" in capsys.readouterr().out


def test_an_empty_month_and_a_bad_period(aws, capsys) -> None:  # type: ignore[no-untyped-def]
    assert main(["spend", "--period", "1999-01"]) == 0
    assert "no spend recorded for 1999-01" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["spend", "--period", "november"])


class CountingClient:
    def __init__(self, fail: int = 0) -> None:
        self.writes: list[dict[str, Any]] = []
        self.fail = fail  # this many writes fail first

    def update_item(self, **kwargs: Any) -> None:
        if self.fail:
            self.fail -= 1
            raise ConnectionError("dynamodb unreachable")
        self.writes.append(kwargs)


def added(write: dict[str, Any], name: str) -> Decimal:
    return Decimal(write["ExpressionAttributeValues"][f":{name}"]["N"])


def test_without_a_delay_each_request_is_written_in_settle_and_refusals_not_at_all() -> None:
    client = CountingClient()
    ledger = SpendLedger("t", lambda: client)
    asyncio.run(ledger.settle(ok()))
    asyncio.run(ledger.settle(exchange("error", status=502)))
    asyncio.run(ledger.settle(exchange("rejected", status=402)))
    assert [added(w, "one") for w in client.writes] == [1, 1] and ledger.pending == 0


def test_requests_within_the_delay_are_summed_into_one_write_per_item() -> None:
    client = CountingClient()
    ledger = SpendLedger("t", lambda: client, flush_s=0.05)

    async def traffic() -> int:
        for _ in range(25):
            await ledger.settle(ok())
        await ledger.settle(exchange("error", status=502))  # the same key, another target: its own item
        waiting = len(client.writes)
        await asyncio.sleep(0.2)
        return waiting

    assert asyncio.run(traffic()) == 0  # nothing written while the responses were going out
    by_item = {w["Key"]["sk"]["S"]: w for w in client.writes}
    assert len(client.writes) == len(by_item) == 2
    served = next(w for sk, w in by_item.items() if sk.endswith("#p#openai#x#mini"))
    assert (added(served, "one"), added(served, "cost_usd"), added(served, "input_tokens")) == (
        25,
        Decimal("0.0025"),  # 25 x 0.0001, exact
        2500,
    )
    assert added(served, "cached_tokens") == 1000 and served["ExpressionAttributeValues"][":key_name"] == {
        "S": "ci-key"
    }
    failed = next(w for w in by_item.values() if w is not served)
    assert (added(failed, "one"), added(failed, "errors"), added(failed, "cost_usd")) == (1, 1, 0)


def test_a_failed_write_keeps_its_sums_for_the_next_flush(caplog) -> None:  # type: ignore[no-untyped-def]
    client = CountingClient(fail=1)
    ledger = SpendLedger("t", lambda: client, flush_s=3600)  # flushed by hand below

    async def traffic() -> None:
        await ledger.settle(ok())
        await ledger.flush()  # fails: the line stays
        assert ledger.pending == 1
        await ledger.settle(ok())
        await ledger.flush()

    asyncio.run(traffic())
    assert [added(w, "one") for w in client.writes] == [2] and ledger.pending == 0
    assert any("spend ledger write failed" in r.getMessage() for r in caplog.records)


def test_a_request_booked_by_the_settlement_transaction_is_not_written_again() -> None:
    client = CountingClient()
    ledger = SpendLedger("t", lambda: client)
    ex = ok()
    item = ledger.transact_item(ex)
    assert item is not None and added(item["Update"], "cost_usd") == Decimal("0.0001")
    assert item["Update"]["Key"]["pk"]["S"].startswith("spend#")
    ex.state[BOOKED] = True
    asyncio.run(ledger.settle(ex))
    assert client.writes == [] and ledger.transact_item(exchange("rejected", status=402)) is None


def test_the_server_shutdown_writes_what_is_still_buffered(gateway_factory, capsys) -> None:  # type: ignore[no-untyped-def]
    gw = gateway_factory(spend_flush_s=3600.0)
    for _ in range(3):
        assert (
            httpx.post(
                gw.v1 + "/chat/completions", json={"model": "echo", "messages": MSG}, headers=gw.headers()
            ).status_code
            == 200
        )
    assert gw.gateway.spend is not None and gw.gateway.spend.pending == 1
    gw.stop()
    assert gw.gateway.spend.pending == 0
    rows = {row["name"]: row for row in spend_json(capsys, "--by", "model")["rows"]}
    assert rows["echo"]["requests"] >= 3


def test_aggregate_sums_exactly_and_renders() -> None:
    item = {
        "key_id": {"S": "k1"}, "key_name": {"S": "ci"}, "team": {"S": "search"}, "model": {"S": "fast"},
        "requests": {"N": "1"}, "errors": {"N": "0"}, "cost_usd": {"N": "0.1"}, "input_tokens": {"N": "10"},
    }  # fmt: skip
    rows, total = aggregate([item, item, item], "key")
    assert rows[0].name == "ci (k1)" and total.cost_usd == Decimal("0.3")  # not 0.30000000000000004
    text = render(rows, total, "key", "2026-11")
    assert "ci (k1)" in text and "0.300000" in text and text.splitlines()[-1].startswith("total")
