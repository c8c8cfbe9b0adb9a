"""The spend ledger in Lambda: an instance is frozen once its response is sent, so a flush
delayed behind the response would wait for the instance's next request (or never run). In Lambda
the write is made before the response ends, one ``UpdateItem`` per request (docs/performance.md)."""

from __future__ import annotations

import uuid

import boto3
import httpx
import pytest
from switchboard.core.settings import Settings

from tests.conftest import routing_doc

MSG = [{"role": "user", "content": "a b c"}]


@pytest.mark.parametrize(
    ("env", "flush_s"),
    [
        ({}, 1.0),  # a long-running server: one write per ledger item a second
        ({"AWS_LAMBDA_FUNCTION_NAME": "gateway"}, 0.0),  # either deployment mode
        ({"AWS_LAMBDA_FUNCTION_NAME": "gateway", "SWITCHBOARD_SPEND_FLUSH_S": "5"}, 5.0),  # said so
    ],
)
def test_in_lambda_the_spend_ledger_writes_before_the_response_ends(
    env: dict[str, str], flush_s: float
) -> None:
    assert Settings.from_env(env).spend_flush_s == flush_s


def test_a_lambda_gateway_has_booked_the_request_when_its_response_ends(gateway_factory, mock) -> None:  # type: ignore[no-untyped-def]
    alias = f"lam-{uuid.uuid4().hex[:6]}"
    doc = routing_doc(mock.base_url, {alias: {"targets": [{"provider": "mock", "model": "echo"}]}})
    in_lambda = Settings.from_env({"AWS_LAMBDA_FUNCTION_NAME": "gateway"})
    gw = gateway_factory(doc=doc, spend_flush_s=in_lambda.spend_flush_s)
    for body in ({"model": alias}, {"model": alias, "stream": True}):
        answer = httpx.post(gw.v1 + "/chat/completions", json={"messages": MSG, **body}, headers=gw.headers())
        assert answer.status_code == 200
    assert gw.gateway.spend is not None and gw.gateway.spend.pending == 0  # nothing left for a timer
    table = gw.gateway.settings.table
    client = boto3.client("dynamodb", region_name=gw.gateway.settings.region)
    rows = [
        row
        for row in client.scan(TableName=table)["Items"]
        if row["pk"]["S"].startswith("spend#") and f"#m#{alias}#" in row["sk"]["S"]
    ]
    assert sum(int(row["requests"]["N"]) for row in rows) == 2  # both booked, no wait, no flush
