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
from switchboard.cli import main
from switchboard.commands.spend import aggregate, render
from switchboard.spendledger import SpendLedger

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
    gw = gateway_factory(doc=doc)
    url = gw.v1 + "/chat/completions"
    for body in (
        {"model": priced},
        {"model": priced, "stream": True},
        {"model": priced},
        {"model": free},
        {"model": broken},
    ):
        httpx.post(url, json={"messages": MSG, **body}, headers=gw.headers())
    time.sleep(0.2)  # the stream settles after its last byte

    rows = {row["name"]: row for row in spend_json(capsys, "--by", "model")["rows"]}
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
    def __init__(self, fail: bool = False) -> None:
        self.calls: list[str] = []
        self.fail = fail

    def update_item(self, **kwargs: Any) -> None:
        self.calls.append("update_item")
        if self.fail:
            raise ConnectionError("dynamodb unreachable")


def test_one_dynamodb_call_per_request_and_none_for_refusals() -> None:
    client = CountingClient()
    ledger = SpendLedger("t", lambda: client)
    asyncio.run(ledger.settle(ok()))
    asyncio.run(ledger.settle(exchange("error", status=502)))
    asyncio.run(ledger.settle(exchange("rejected", status=402)))
    assert client.calls == ["update_item", "update_item"]


def test_a_failed_write_is_logged_never_raised(caplog) -> None:  # type: ignore[no-untyped-def]
    asyncio.run(SpendLedger("t", lambda: CountingClient(fail=True)).settle(ok()))
    assert any(
        "spend ledger write failed" in r.getMessage() and "req_abc" in r.getMessage() for r in caplog.records
    )


def test_aggregate_sums_exactly_and_renders() -> None:
    item = {
        "key_id": {"S": "k1"}, "key_name": {"S": "ci"}, "team": {"S": "search"}, "model": {"S": "fast"},
        "requests": {"N": "1"}, "errors": {"N": "0"}, "cost_usd": {"N": "0.1"}, "input_tokens": {"N": "10"},
    }  # fmt: skip
    rows, total = aggregate([item, item, item], "key")
    assert rows[0].name == "ci (k1)" and total.cost_usd == Decimal("0.3")  # not 0.30000000000000004
    text = render(rows, total, "key", "2026-11")
    assert "ci (k1)" in text and "0.300000" in text and text.splitlines()[-1].startswith("total")
