"""An AWS brownout (DynamoDB or SSM accepts connections but never answers), over HTTP.

The gateway's AWS clients point at ``AwsProxy``s in front of the session's moto: caches are warmed
through them while they pass, then a proxy is switched to blackhole. The assertions on elapsed time
are bounds (the request's own deadline plus a margin), not performance measurements: before the
fix each of these requests hung for 15 s or more (3 attempts x 5 s per AWS call).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import boto3
import httpx
import pytest
from switchboard.infra import aws as aws_clients
from switchboard.infra import awsjson
from switchboard.limits.keys import KeyStore
from switchboard.limits.table import Table

from tests.awsproxy import AwsProxy
from tests.conftest import RunningGateway, routing_doc

DEADLINE_S = 2.0
MARGIN_S = 1.0  # scheduling slack on a shared 2-core machine; far below the 15 s stall it guards
FAST = {"key_cache_s": 0.3, "routing_max_age_s": 0.3, "aws_timeout_s": 0.3}
STALE_AFTER_S = 0.3 + 0.3 + 0.2  # every cached copy is past max_age + timeout_s: a read is due


@dataclass
class Proxied:
    ssm: AwsProxy
    dynamodb: AwsProxy
    start: Callable[..., RunningGateway]


@pytest.fixture
def proxied(gateway_factory, aws: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Proxied]:  # type: ignore[no-untyped-def]
    """Gateways whose SSM and DynamoDB clients go through their own proxy (the shared clients of
    ``aws.runtime_client`` stay untouched for the other tests)."""
    proxies = {"ssm": AwsProxy(aws), "dynamodb": AwsProxy(aws), "secretsmanager": AwsProxy(aws)}
    credentials = awsjson.Credentials.from_env(os.environ)
    assert credentials is not None

    made: list[awsjson.Client] = []

    def client(service: str, region: str) -> awsjson.Client:
        made.append(awsjson.Client(awsjson.SERVICES[service], region, credentials, proxies[service].url))
        return made[-1]

    monkeypatch.setattr(aws_clients, "runtime_client", client)
    yield Proxied(proxies["ssm"], proxies["dynamodb"], gateway_factory)
    for proxy in proxies.values():  # first: a call still hanging in a worker thread fails now
        proxy.close()
    for made_client in made:  # their connections, not left to the garbage collector
        made_client.close()


def chat(
    gw: RunningGateway, key: str | None = None, deadline_s: float = DEADLINE_S
) -> tuple[httpx.Response, float]:
    headers = {"authorization": f"Bearer {key or gw.api_key}", "x-switchboard-timeout": str(deadline_s)}
    body = {"model": "echo", "messages": [{"role": "user", "content": "still there?"}]}
    began = time.monotonic()
    response = httpx.post(gw.v1 + "/chat/completions", json=body, headers=headers, timeout=30)
    return response, time.monotonic() - began


def assert_unavailable(response: httpx.Response, code: str) -> None:
    assert response.status_code == 503, response.text
    error = response.json()["error"]
    assert error["code"] == code and error["type"] == "server_error"
    assert response.headers["retry-after"].isdigit()


# 1 s: the default, half the deadline. routing_copy "on" reads the routing copy in DynamoDB (which
# hangs, so SSM is never reached); "off" reads SSM directly.
@pytest.mark.parametrize(("aws_timeout_s", "routing_copy"), [(0.3, "on"), (1.0, "on"), (0.3, "off")])
def test_a_known_key_without_limits_keeps_serving_while_dynamodb_and_ssm_hang(
    proxied: Proxied, aws_timeout_s: float, routing_copy: str
) -> None:
    gw = proxied.start(**{**FAST, "aws_timeout_s": aws_timeout_s, "routing_copy": routing_copy})
    assert chat(gw)[0].status_code == 200  # warms the key, the routing, the limits and the secret
    proxied.dynamodb.blackhole = proxied.ssm.blackhole = True
    time.sleep(0.3 + aws_timeout_s + 0.2)  # every copy is past max_age + timeout_s: a read is due

    sequential = [chat(gw) for _ in range(3)]
    with ThreadPoolExecutor(8) as pool:
        concurrent = list(pool.map(lambda _: chat(gw), range(8)))
    for response, elapsed in sequential + concurrent:
        assert response.status_code == 200, response.text
        assert elapsed < DEADLINE_S + MARGIN_S
    models = httpx.get(gw.v1 + "/models", headers={**gw.headers(), "x-switchboard-timeout": "2"})
    assert models.status_code == 200
    assert proxied.dynamodb.swallowed  # the refreshes did go out, and hung
    assert proxied.ssm.swallowed or routing_copy == "on"


def test_an_uncached_key_during_an_outage_is_503_within_the_deadline(proxied: Proxied) -> None:
    gw = proxied.start(**{**FAST, "aws_timeout_s": 10.0})  # only the request's deadline bounds the wait
    assert chat(gw)[0].status_code == 200
    secret, _ = KeyStore(Table(boto3.client("dynamodb", region_name="us-east-1"), gw.settings.table)).create(
        "never seen by this gateway"
    )
    proxied.dynamodb.blackhole = True
    for _ in range(3):
        response, elapsed = chat(gw, key=secret, deadline_s=1.0)
        assert_unavailable(response, "auth_unavailable")
        assert elapsed < 1.0 + MARGIN_S
    assert chat(gw, deadline_s=1.0)[0].status_code == 200  # the key it knows still serves
    proxied.dynamodb.restore()
    assert _eventually(lambda: chat(gw, key=secret)[0].status_code == 200)


def test_a_cold_start_with_ssm_hanging_is_503_within_the_deadline(proxied: Proxied) -> None:
    proxied.ssm.blackhole = True
    gw = proxied.start(**{**FAST, "aws_timeout_s": 10.0})
    for _ in range(3):
        response, elapsed = chat(gw, deadline_s=1.0)
        assert_unavailable(response, "routing_unavailable")
        assert elapsed < 1.0 + MARGIN_S
    timeout = {**gw.headers(), "x-switchboard-timeout": "1"}
    began = time.monotonic()
    assert_unavailable(httpx.get(gw.v1 + "/models", headers=timeout, timeout=30), "routing_unavailable")
    embedded = httpx.post(
        gw.v1 + "/embeddings", json={"model": "e", "input": "x"}, headers=timeout, timeout=30
    )
    assert_unavailable(embedded, "routing_unavailable")
    anthropic = httpx.post(
        gw.v1 + "/messages",
        json={"model": "echo", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]},
        headers={"x-api-key": gw.api_key, "anthropic-version": "2023-06-01", "x-switchboard-timeout": "1"},
        timeout=30,
    )
    assert anthropic.status_code == 503 and anthropic.headers["retry-after"].isdigit()
    assert anthropic.json()["type"] == "error" and anthropic.json()["error"]["type"] == "api_error"
    assert time.monotonic() - began < 3 * (1.0 + MARGIN_S)
    # One read shared by the six requests: at most the AWS client's own attempts of it (3, each cut
    # by its 2 s read timeout), where a read per request would be six or more.
    assert proxied.ssm.targets.count("AmazonSSM.GetParameter") <= 3
    proxied.ssm.restore()
    assert _eventually(lambda: chat(gw)[0].status_code == 200)


def test_the_last_document_serves_while_its_refresh_hangs_then_the_edit_lands(proxied: Proxied, mock) -> None:  # type: ignore[no-untyped-def]
    gw = proxied.start(**FAST)
    first, _ = chat(gw)
    old = first.headers["x-switchboard-routing-version"]
    edited = routing_doc(mock.base_url, {"echo": {"targets": [{"provider": "mock", "model": "echo"}]}})
    edited["revision"] = "after-the-brownout"
    gw.put_routing(edited)  # straight to moto: the gateway's SSM is about to hang
    proxied.ssm.blackhole = True
    time.sleep(STALE_AFTER_S)
    for _ in range(3):
        response, elapsed = chat(gw)
        assert response.status_code == 200
        assert response.headers["x-switchboard-routing-version"] == old
        assert elapsed < DEADLINE_S + MARGIN_S
    proxied.ssm.restore()
    assert _eventually(lambda: chat(gw)[0].headers["x-switchboard-routing-version"] == "after-the-brownout")


def test_every_request_after_max_age_plus_one_read_sees_a_routing_edit(proxied: Proxied, mock) -> None:  # type: ignore[no-untyped-def]
    """Defect 6: requests that came while a refresh ran were served the old document."""
    # A generous timeout_s: a read that overran it would (rightly) leave the old copy serving.
    settings: dict[str, Any] = {"routing_max_age_s": 0.3, "aws_timeout_s": 2.0}
    gw = proxied.start(**settings)
    assert chat(gw)[0].status_code == 200
    proxied.ssm.delay_s = 0.2  # a slow SSM: a read takes longer than the requests take to arrive
    edited = routing_doc(mock.base_url, {"echo": {"targets": [{"provider": "mock", "model": "echo"}]}})
    edited["revision"] = "edit-2"
    gw.put_routing(edited)
    time.sleep(0.3 + 2.0)  # max_age + one read
    with ThreadPoolExecutor(16) as pool:
        seen = list(pool.map(lambda _: chat(gw, deadline_s=30)[0], range(32)))
    assert [r.headers.get("x-switchboard-routing-version") for r in seen] == ["edit-2"] * 32


def _eventually(check: Callable[[], bool], within_s: float = 20.0) -> bool:
    """Poll ``check`` until it holds (the hung read must first land); a bounded wait."""
    end = time.monotonic() + within_s
    while time.monotonic() < end:
        if check():
            return True
        time.sleep(0.1)
    return False
