"""Hooks see every admitted request exactly once, however it ends."""

from __future__ import annotations

import time

import httpx
import pytest
from switchboard.core.errors import RateLimited
from switchboard.exchange import Exchange

MSG = [{"role": "user", "content": "a b c"}]


class Recorder:
    def __init__(self, refuse: bool = False) -> None:
        self.admitted: list[str] = []
        self.settled: list[Exchange] = []
        self.refuse = refuse

    async def admit(self, ex: Exchange) -> None:
        if self.refuse:
            raise RateLimited("slow down", headers={"retry-after": "3"})
        self.admitted.append(ex.request_id)
        ex.headers["x-hook"] = "seen"

    async def settle(self, ex: Exchange) -> None:
        self.settled.append(ex)


@pytest.fixture
def recorded(gateway_factory):  # type: ignore[no-untyped-def]
    gw = gateway_factory(
        models={
            "echo": {"targets": [{"provider": "mock", "model": "echo"}]},
            "broken": {"targets": [{"provider": "mock", "model": "fail-500"}], "retry": {"attempts": 1}},
            "cut": {"targets": [{"provider": "mock", "model": "break-2+chunks-6"}]},
            "slow": {"targets": [{"provider": "mock", "model": "echo+chunks-50+delay-50"}]},
        }
    )
    recorder = Recorder()
    gw.gateway.hooks.append(recorder)
    return gw, recorder


def wait_for(predicate, timeout: float = 3.0) -> None:  # type: ignore[no-untyped-def]
    end = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < end, "condition not reached"
        time.sleep(0.01)


def test_buffered_success_is_settled_with_usage(recorded) -> None:  # type: ignore[no-untyped-def]
    gw, rec = recorded
    response = httpx.post(
        gw.v1 + "/chat/completions", json={"model": "echo", "messages": MSG}, headers=gw.headers()
    )
    assert response.status_code == 200 and response.headers["x-hook"] == "seen"
    [ex] = rec.settled
    assert ex.outcome == "ok" and ex.usage is not None and ex.usage.completion_tokens == 4
    assert ex.request_id == response.headers["x-request-id"] and ex.alias == "echo"


def test_failure_is_settled_as_error(recorded) -> None:  # type: ignore[no-untyped-def]
    gw, rec = recorded
    response = httpx.post(
        gw.v1 + "/chat/completions", json={"model": "broken", "messages": MSG}, headers=gw.headers()
    )
    assert response.status_code == 502
    [ex] = rec.settled
    assert (ex.outcome, ex.status, ex.error_code) == ("error", 502, "all_targets_failed")
    assert len(ex.attempts) == 1


def test_stream_is_settled_after_the_last_byte_with_usage(recorded) -> None:  # type: ignore[no-untyped-def]
    gw, rec = recorded
    body = {"model": "echo", "messages": MSG, "stream": True, "stream_options": {"include_usage": True}}
    response = httpx.post(gw.v1 + "/chat/completions", json=body, headers=gw.headers())
    assert response.text.endswith("data: [DONE]\n\n")
    wait_for(lambda: len(rec.settled) == 1)
    ex = rec.settled[0]
    assert ex.outcome == "ok" and ex.usage is not None and ex.usage.total_tokens > 0
    assert ex.first_token_at is not None


def test_interrupted_stream_is_settled_as_interrupted(recorded) -> None:  # type: ignore[no-untyped-def]
    gw, rec = recorded
    body = {"model": "cut", "messages": MSG, "stream": True}
    httpx.post(gw.v1 + "/chat/completions", json=body, headers=gw.headers())
    wait_for(lambda: len(rec.settled) == 1)
    assert (rec.settled[0].outcome, rec.settled[0].error_code) == ("interrupted", "stream_interrupted")


def test_client_disconnect_mid_stream_is_still_settled(recorded) -> None:  # type: ignore[no-untyped-def]
    gw, rec = recorded
    body = {"model": "slow", "messages": MSG, "stream": True}
    with (
        httpx.Client() as client,
        client.stream("POST", gw.v1 + "/chat/completions", json=body, headers=gw.headers()) as r,
    ):
        for line in r.iter_lines():
            if '"content":"echo:"' in line:
                break
    wait_for(lambda: len(rec.settled) == 1, timeout=5)
    assert (rec.settled[0].outcome, rec.settled[0].error_code) == ("interrupted", "client_disconnected")


def test_a_refusing_hook_stops_the_request_before_any_upstream_call(gateway_factory, mock) -> None:  # type: ignore[no-untyped-def]
    gw = gateway_factory()
    gw.gateway.hooks.append(Recorder(refuse=True))
    before = len(mock.requests)
    response = httpx.post(
        gw.v1 + "/chat/completions", json={"model": "echo", "messages": MSG}, headers=gw.headers()
    )
    assert response.status_code == 429 and response.headers["retry-after"] == "3"
    assert response.json()["error"]["type"] == "rate_limit_error"
    assert len(mock.requests) == before
