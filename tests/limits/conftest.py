"""Fixtures for keys, budgets and rate limits: a fresh table per test on the session's moto."""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import Iterator
from typing import Any

import boto3
import httpx
import pytest
from switchboard.core.principal import Limits
from switchboard.devtools.devstack import stack_tables
from switchboard.limits.keys import KeyStore
from switchboard.limits.table import Table

from tests.conftest import routing_doc

# Longer versions of the concurrency tests: `make test-limits-slow` (SWITCHBOARD_SLOW=1).
SLOW = [
    pytest.mark.slow,
    pytest.mark.skipif(not os.environ.get("SWITCHBOARD_SLOW"), reason="slow: make test-limits-slow"),
]


def make_table(name: str | None = None) -> Table:
    """A new table built from template.yaml's definition (so it cannot drift from the stack)."""
    name = name or "sb-" + uuid.uuid4().hex[:12]
    client = boto3.client("dynamodb", region_name="us-east-1")
    [(kwargs, ttl)] = stack_tables().values()
    client.create_table(TableName=name, **kwargs)
    if ttl:
        client.update_time_to_live(
            TableName=name, TimeToLiveSpecification={"Enabled": True, "AttributeName": ttl}
        )
    return Table(client, name)


@pytest.fixture
def table(aws: str) -> Iterator[Table]:
    made = make_table()
    yield made
    made.client.delete_table(TableName=made.name)


@pytest.fixture
def keys(table: Table) -> KeyStore:
    return KeyStore(table)


@pytest.fixture
def cli_env(table: Table, monkeypatch: pytest.MonkeyPatch) -> Table:
    """The CLI pointed at the test's table."""
    monkeypatch.setenv("SWITCHBOARD_TABLE", table.name)
    return table


def items(table: Table) -> list[dict[str, Any]]:
    from switchboard.limits.table import load

    found = table.client.scan(TableName=table.name)["Items"]
    return [load(item) for item in found]


MSG = [{"role": "user", "content": "a b c"}]
CENT_PRICE = {"input_per_mtok": 0, "output_per_mtok": 2500}  # 4 output tokens = $0.01
MODELS = {
    "metered": {"targets": [{"provider": "mock", "model": "echo"}]},
    "broken": {"targets": [{"provider": "mock", "model": "fail-500"}], "retry": {"attempts": 1}},
    "unpriced": {"targets": [{"provider": "mock", "model": "echo+unpriced"}]},
    "fallback": {
        "targets": [{"provider": "mock", "model": "fail-503"}, {"provider": "backup", "model": "echo"}],
        "retry": {"attempts": 1},
    },
}


def priced_doc(
    mock_url: str, prices: dict[str, Any] | None = None, models: dict[str, Any] | None = None, **extra: Any
) -> dict[str, Any]:
    prices = prices or {
        "mock/echo": CENT_PRICE,
        "mock/fail-500": CENT_PRICE,
        "mock/fail-503": CENT_PRICE,
        "backup/echo": {"input_per_mtok": 1000, "output_per_mtok": 5000},
    }
    return routing_doc(mock_url, models or MODELS, prices=prices, **extra)


@pytest.fixture
def start(gateway_factory, mock, table: Table):  # type: ignore[no-untyped-def]
    """Start a gateway over a fresh table; returns it and a function that creates a key there."""

    def start(  # type: ignore[no-untyped-def]
        prices: dict[str, Any] | None = None,
        models: dict[str, Any] | None = None,
        settings: dict[str, Any] | None = None,
        **extra: Any,
    ):
        doc = priced_doc(mock.base_url, prices, models, **extra)
        # moto serialises every call: 200 concurrent admissions queue for seconds on a loaded
        # machine, past the 3 s admission bound a real table never nears. The bound has its own
        # tests (test_settlement.py), with deadlines and blackholes.
        settings = {"admit_timeout_s": 30.0, **(settings or {})}
        gw = gateway_factory(doc=doc, table=table.name, **settings)
        store = KeyStore(table)

        def key(**limits: Any) -> tuple[str, str]:
            who = {k: limits.pop(k) for k in ("team", "user") if k in limits}
            secret, record = store.create("t", limits=Limits(**limits), **who)
            return secret, record.id

        return gw, key

    return start


@pytest.fixture
def limited(start):  # type: ignore[no-untyped-def]
    return start()


def post(gw, key: str, model: str = "metered", **body: Any) -> httpx.Response:  # type: ignore[no-untyped-def]
    payload = {"model": model, "messages": MSG, "max_tokens": 4, **body}
    return httpx.post(
        gw.v1 + "/chat/completions", json=payload, headers={"authorization": f"Bearer {key}"}, timeout=30
    )


def fire(gw, key: str, n: int, model: str = "metered", **body: Any) -> list[httpx.Response]:  # type: ignore[no-untyped-def]
    """``n`` requests at once, from ``n`` concurrent connections; returns once every settlement
    is in the table (an answer leaves before its settlement when moto, which serialises every
    call, takes longer than the inline bound: the rest is settled in the background)."""

    async def run() -> list[httpx.Response]:
        limits = httpx.Limits(max_connections=n, max_keepalive_connections=n)
        async with httpx.AsyncClient(limits=limits, timeout=60) as client:
            payload = {"model": model, "messages": MSG, "max_tokens": 4, **body}
            headers = {"authorization": f"Bearer {key}"}
            return await asyncio.gather(
                *(client.post(gw.v1 + "/chat/completions", json=payload, headers=headers) for _ in range(n))
            )

    answers = asyncio.run(run())
    for hook in gw.gateway.hooks:
        settler = getattr(hook, "settler", None)
        if settler is not None:
            wait_for(lambda settler=settler: settler.pending == 0, timeout=60)
    return answers


def ledger(table: Table, scope: str, ident: str) -> dict[str, Any]:
    rows = [i for i in items(table) if i["pk"] == f"budget#{scope}#{ident}"]
    assert len(rows) <= 1
    return rows[0] if rows else {}


def reservations(table: Table) -> list[dict[str, Any]]:
    return [i for i in items(table) if str(i["pk"]).startswith("resv#")]


def wait_for(predicate, timeout: float = 5.0) -> None:  # type: ignore[no-untyped-def]
    end = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < end, "condition not reached"
        time.sleep(0.02)
