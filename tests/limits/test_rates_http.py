"""Rate limits over HTTP: headers, 429s, tpm settled to actual use, and two gateway processes.

A request here reserves 33 tokens (a 29-token prompt bound plus ``max_tokens: 4``) and uses 11
(7 prompt, 4 completion, as the mock counts words).
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from decimal import Decimal

import httpx
import openai
import pytest
from switchboard.core.principal import Limits, Scope
from switchboard.devtools.devstack import ROOT, aws_env
from switchboard.limits.definitions import LimitStore
from switchboard.limits.table import Table

from tests.limits.conftest import SLOW, fire, items, ledger, post

RESERVED, USED = 33, 11


def freeze(gw) -> float:  # type: ignore[no-untyped-def]
    """Pin the gateway's wall clock to the middle of the current minute: no window boundary."""
    at = (time.time() // 60) * 60 + 30
    for hook in gw.gateway.hooks:
        hook.clock = lambda: at
    return at


def rate_row(table: Table, scope: str, ident: str) -> dict:  # type: ignore[type-arg]
    [row] = [i for i in items(table) if str(i["pk"]) == f"rate#{scope}#{ident}"]
    return row


def test_headers_on_success_and_a_429_with_retry_after(limited, table: Table) -> None:  # type: ignore[no-untyped-def]
    gw, key = limited
    freeze(gw)
    secret, key_id = key(rpm=2, tpm=10_000)
    first = post(gw, secret)
    assert first.status_code == 200
    h = first.headers
    assert (h["x-ratelimit-limit-requests"], h["x-ratelimit-remaining-requests"]) == ("2", "1")
    assert (h["x-ratelimit-limit-tokens"], h["x-ratelimit-remaining-tokens"]) == (
        "10000",
        str(10_000 - RESERVED),
    )
    assert h["x-ratelimit-reset-requests"] == "30s" and h["x-ratelimit-reset-tokens"] == "30s"
    assert post(gw, secret).headers["x-ratelimit-remaining-requests"] == "0"
    refused = post(gw, secret)
    assert refused.status_code == 429 and refused.headers["retry-after"] == "30"
    assert refused.headers["x-ratelimit-remaining-requests"] == "0"
    error = refused.json()["error"]
    assert error["type"] == "rate_limit_error" and error["code"] == "rate_limit_exceeded"
    assert f"key 't' ({key_id}) on requests per min (RPM): Limit 2, Used 2" in error["message"]
    assert rate_row(table, "key", key_id)["req"] == 2  # the refused request counted nothing


def test_the_openai_sdk_sees_a_rate_limit_error(limited) -> None:  # type: ignore[no-untyped-def]
    gw, key = limited
    freeze(gw)
    secret, _ = key(rpm=1)
    client = openai.OpenAI(base_url=gw.v1, api_key=secret, max_retries=0)
    client.chat.completions.create(model="metered", messages=[{"role": "user", "content": "hi"}])
    with pytest.raises(openai.RateLimitError) as caught:
        client.chat.completions.create(model="metered", messages=[{"role": "user", "content": "hi"}])
    assert caught.value.response.headers["retry-after"] == "30"


def test_tpm_reserves_the_estimate_and_settles_to_actual_use(limited, table: Table) -> None:  # type: ignore[no-untyped-def]
    gw, key = limited
    freeze(gw)
    secret, key_id = key(tpm=100)
    codes = [post(gw, secret).status_code for _ in range(8)]
    # Each request holds 33 while in flight and keeps 11: the 8th finds 77 used, > 100 - 33.
    assert codes == [200] * 7 + [429]
    assert rate_row(table, "key", key_id)["tok"] == 7 * USED
    too_big = post(gw, secret, max_tokens=500)
    assert too_big.status_code == 429 and too_big.json()["error"]["code"] == "request_too_large"
    assert too_big.headers["x-should-retry"] == "false" and "retry-after" not in too_big.headers


def test_a_model_alias_limit_is_shared_by_every_key(limited, table: Table) -> None:  # type: ignore[no-untyped-def]
    gw, key = limited
    freeze(gw)
    LimitStore(table).put(Scope.MODEL, "metered", Limits(rpm=3))
    keys = [key()[0] for _ in range(3)]
    codes = [post(gw, k).status_code for k in keys + keys]
    assert codes == [200, 200, 200, 429, 429, 429]
    assert "model 'metered'" in post(gw, keys[0]).json()["error"]["message"]
    assert post(gw, keys[0], "fallback").status_code == 200  # another alias


def test_concurrent_requests_never_pass_the_rpm(limited, table: Table) -> None:  # type: ignore[no-untyped-def]
    gw, key = limited
    freeze(gw)
    secret, key_id = key(rpm=25, budget_usd=Decimal(100))
    assert Counter(r.status_code for r in fire(gw, secret, 60)) == {200: 25, 429: 35}
    assert rate_row(table, "key", key_id)["req"] == 25


# ------------------------------------------------------------------------ two processes


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def second_gateway(limited, aws: str, tmp_path) -> Iterator[str]:  # type: ignore[no-untyped-def]
    """The same gateway configuration in another process (its own uvicorn), sharing moto."""
    gw, _ = limited
    port = free_port()
    env = {
        **os.environ,
        **aws_env(aws),
        "SWITCHBOARD_ROUTING_PARAM": gw.settings.routing_param,
        "SWITCHBOARD_TABLE": gw.settings.table,
        "PYTHONPATH": str(ROOT / "layers"),
    }
    command = [sys.executable, "-m", "uvicorn", "switchboard.http.app:create_app", "--factory"]
    command += ["--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"]
    log = tmp_path / "second-gateway.log"
    with log.open("wb") as sink:
        process = subprocess.Popen(command, env=env, stdout=sink, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                if httpx.get(base + "/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert process.poll() is None, log.read_text()
            assert time.monotonic() < deadline, "second gateway did not start"
            time.sleep(0.05)
        yield base + "/v1"
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_rate_limits_hold_across_two_gateway_processes(limited, second_gateway: str, table: Table) -> None:  # type: ignore[no-untyped-def]
    gw, key = limited
    for _ in range(2):  # the other process reads the real clock: a burst must fit in one minute
        secret, key_id = key(rpm=20)
        window = time.time() // 60
        responses = fire_at([gw.v1, second_gateway], secret, 30)
        if time.time() // 60 == window:
            break
    assert Counter(r.status_code for r in responses) == {200: 20, 429: 40}
    assert rate_row(table, "key", key_id)["req"] == 20


@pytest.mark.parametrize(
    ("each", "fits"),
    [pytest.param(30, 15, id="60-vs-15"), pytest.param(300, 100, id="600-vs-100", marks=SLOW)],
)
def test_a_budget_holds_across_two_gateway_processes(
    limited, second_gateway: str, table: Table, each: int, fits: int
) -> None:  # type: ignore[no-untyped-def]
    gw, key = limited
    secret, key_id = key(budget_usd=Decimal("0.01") * fits)
    responses = fire_at([gw.v1, second_gateway], secret, each)
    assert Counter(r.status_code for r in responses) == {200: fits, 402: 2 * each - fits}
    row = ledger(table, "key", key_id)
    assert (row["spent"], row["reserved"], row["requests"]) == (Decimal("0.01") * fits, 0, fits)


def fire_at(bases: list[str], secret: str, each: int) -> list[httpx.Response]:
    """``each`` concurrent requests at every gateway in ``bases``, all at once."""

    async def run() -> list[httpx.Response]:
        limits = httpx.Limits(max_connections=each * len(bases))
        async with httpx.AsyncClient(limits=limits, timeout=60) as client:
            payload = {
                "model": "metered",
                "messages": [{"role": "user", "content": "a b c"}],
                "max_tokens": 4,
            }
            headers = {"authorization": f"Bearer {secret}"}
            calls = [
                client.post(base + "/chat/completions", json=payload, headers=headers)
                for _ in range(each)
                for base in bases
            ]
            return list(await asyncio.gather(*calls))

    return asyncio.run(run())


def test_an_rpm_refusal_retries_after_what_is_left_of_its_minute_when_answered(limited) -> None:  # type: ignore[no-untyped-def]
    gw, key = limited
    secret, _ = key(rpm=1)
    hook = gw.gateway.hooks[0]
    minute = (time.time() // 60) * 60
    hook.clock = lambda: minute + 20
    assert post(gw, secret).status_code == 200
    # Admitted at :47.25, refused once DynamoDB answered at :49.5 (the injected clock moves on):
    # the client may retry when the window resets, 10.5 s after the answer, so 11 (not 13).
    readings = iter([minute + 47.25])
    hook.clock = lambda: next(readings, minute + 49.5)
    refused = post(gw, secret)
    assert refused.status_code == 429
    assert refused.headers["retry-after"] == "11"
    assert refused.headers["x-ratelimit-reset-requests"] == "11s"
    assert "Please try again in 11s." in refused.json()["error"]["message"]
