"""The latency trigger (``timeouts.latency_trigger_s``) over real sockets, against the mock's stalls.

``stall-<s>`` holds a stream between its 200 headers and its first event; ``slow-<s>`` holds any
answer before its headers. The trigger abandons the attempt as ``slow`` (never retried) for the next
target; the hard ``first_token_s`` stays a ``timeout``; the last target is never abandoned.
"""

from __future__ import annotations

import json
import time
import uuid

import httpx

from tests.conftest import RunningGateway

MSG = [{"role": "user", "content": "ping pong"}]


def route(first: str, trigger: float, *rest: str) -> dict[str, object]:
    targets: list[dict[str, object]] = [
        {"provider": "mock", "model": first, "timeouts": {"first_token_s": 5, "latency_trigger_s": trigger}}
    ]
    targets += [{"provider": "backup", "model": m} for m in rest]
    return {"targets": targets, "retry": {"attempts": 3, "base_delay_ms": 1, "max_delay_ms": 1}}


def post(gw: RunningGateway, **body: object) -> httpx.Response:
    payload = {"model": "m", "messages": MSG, **body}
    return httpx.post(gw.v1 + "/chat/completions", json=payload, headers=gw.headers(), timeout=30)


def trail(response: httpx.Response) -> list[list[str]]:
    return [entry.split(";") for entry in response.headers["x-switchboard-trail"].split(",")]


def test_a_stalled_stream_is_abandoned_for_the_next_target(gateway_factory, mock) -> None:  # type: ignore[no-untyped-def]
    stalled = f"stall-5+id-{uuid.uuid4().hex[:8]}"
    gw = gateway_factory(models={"m": route(stalled, 0.3, "echo")})
    response = post(gw, stream=True)
    assert response.status_code == 200, response.text
    assert response.headers["x-switchboard-provider"] == "backup"
    assert [s[:3] for s in trail(response)] == [
        [f"mock/{stalled}", "slow", "-"],
        ["backup/echo", "ok", "200"],
    ]
    events = [line[6:] for line in response.text.splitlines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    content = "".join(c["delta"].get("content") or "" for e in events[:-1] for c in json.loads(e)["choices"])
    assert content == "echo: ping pong"
    # Abandoned once, not retried: the stalled target saw exactly one request.
    assert sum(1 for r in mock.requests if (r["json"] or {}).get("model") == stalled) == 1
    deadline = time.monotonic() + 5
    while stalled not in mock.closed:  # abandoned means its connection closed, not left to run
        assert time.monotonic() < deadline, "the mock never saw the abandoned connection close"
        time.sleep(0.01)


def test_a_slow_buffered_answer_is_abandoned_too(gateway_factory, mock) -> None:  # type: ignore[no-untyped-def]
    slow = f"slow-5+id-{uuid.uuid4().hex[:8]}"
    gw = gateway_factory(models={"m": route(slow, 0.3, "echo")})
    response = post(gw)
    assert response.status_code == 200, response.text
    assert response.json()["choices"][0]["message"]["content"] == "echo: ping pong"
    assert [s[1] for s in trail(response)] == ["slow", "ok"]


def test_the_trigger_is_not_the_hard_timeout(gateway_factory) -> None:  # type: ignore[no-untyped-def]
    # first_token_s fires first: a timeout, retried once as before, then the fallback.
    doc_route = route(f"stall-5+id-{uuid.uuid4().hex[:8]}", 3.0, "echo")
    doc_route["targets"][0]["timeouts"] = {"connect_s": 1, "first_token_s": 0.3, "latency_trigger_s": 3}  # type: ignore[index]
    gw = gateway_factory(models={"m": doc_route})
    response = post(gw, stream=True)
    assert response.status_code == 200
    assert [s[1] for s in trail(response)] == ["timeout", "timeout", "ok"]


def test_the_last_target_is_waited_for(gateway_factory) -> None:  # type: ignore[no-untyped-def]
    stalled = f"stall-0.6+id-{uuid.uuid4().hex[:8]}"
    gw = gateway_factory(models={"m": route(stalled, 0.1)})
    response = post(gw, stream=True)
    assert response.status_code == 200
    assert [s[1] for s in trail(response)] == ["ok"]
    assert response.text.rstrip().endswith("data: [DONE]")


def test_the_trigger_falls_back_even_when_fallback_on_omits_timeouts(gateway_factory) -> None:  # type: ignore[no-untyped-def]
    doc_route = route(f"slow-5+id-{uuid.uuid4().hex[:8]}", 0.3, "echo")
    doc_route["fallback_on"] = ["server"]
    gw = gateway_factory(models={"m": doc_route})
    response = post(gw)
    assert response.status_code == 200
    assert [s[1] for s in trail(response)] == ["slow", "ok"]
