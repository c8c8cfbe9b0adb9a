"""Hedging (``hedge_after_ms``) over real sockets: after the delay without a first output the
next target starts too; the first to answer wins and the loser is cancelled, its connection closed
(the mock sees the client hang up during its stall). Both attempts are in the trail and the cost
event; the loser costs nothing.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import httpx
import openai
import pytest

from tests.conftest import routing_doc

MSG = [{"role": "user", "content": "ping pong"}]


def tag() -> str:
    return "id-" + uuid.uuid4().hex[:8]


def hedged(*models: str, after_ms: int = 200) -> dict[str, Any]:
    providers = ["mock", "backup", "backup"]
    return {
        "targets": [{"provider": p, "model": m} for p, m in zip(providers, models, strict=False)],
        "retry": {"attempts": 2, "base_delay_ms": 1, "max_delay_ms": 1},
        "hedge_after_ms": after_ms,
    }


def trail(response: httpx.Response) -> list[list[str]]:
    return [entry.split(";")[:3] for entry in response.headers["x-switchboard-trail"].split(",")]


def cost_events(out: str) -> list[dict[str, Any]]:
    return [
        json.loads(line) for line in out.splitlines() if line.startswith('{"_aws"') and '"Requests"' in line
    ]


def test_the_hedge_wins_and_the_stalled_loser_is_cancelled(
    gateway_factory: Any, mock: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    stalled, answer = f"stall-10+{tag()}", f"echo+{tag()}"
    prices = {f"backup/{answer}": {"input_per_mtok": 1000, "output_per_mtok": 1000}}
    gw = gateway_factory(doc=routing_doc(mock.base_url, {"m": hedged(stalled, answer)}, prices=prices))
    client = openai.OpenAI(base_url=gw.v1, api_key=gw.api_key, max_retries=0)
    with client.chat.completions.with_streaming_response.create(
        model="m",
        messages=MSG,
        stream=True,
        stream_options={"include_usage": True},  # type: ignore[arg-type]
    ) as response:
        text = "".join(
            json.loads(line[6:])["choices"][0]["delta"].get("content") or ""
            for line in response.iter_lines()
            if line.startswith("data: {") and '"choices":[{' in line
        )
        headers = response.headers
    assert text == "echo: ping pong"
    assert headers["x-switchboard-provider"] == "backup"
    steps = [e.split(";")[:3] for e in headers["x-switchboard-trail"].split(",")]
    assert steps == [[f"mock/{stalled}", "cancelled", "-"], [f"backup/{answer}", "ok", "200"]]
    deadline = time.monotonic() + 5
    while stalled not in mock.closed:  # the loser's connection is closed, not left to run
        assert time.monotonic() < deadline, "the mock never saw the loser's connection close"
        time.sleep(0.01)
    events = [e for e in cost_events(capsys.readouterr().out) if e.get("target") == f"backup/{answer}"]
    assert len(events) == 1
    event = events[0]
    assert [(a["target"], a["class"]) for a in event["attempts"]] == [
        (f"mock/{stalled}", "cancelled"),
        (f"backup/{answer}", "ok"),
    ]
    # The winner's tokens only (6 in, 3 out at $1000/Mtok): the cancelled loser costs nothing.
    assert event["cost_usd"] == "0.009"


def test_a_buffered_request_is_hedged_too(gateway_factory: Any) -> None:
    gw = gateway_factory(models={"m": hedged(f"slow-10+{tag()}", "echo")})
    response = httpx.post(
        gw.v1 + "/chat/completions", json={"model": "m", "messages": MSG}, headers=gw.headers(), timeout=30
    )
    assert (
        response.status_code == 200
        and response.json()["choices"][0]["message"]["content"] == "echo: ping pong"
    )
    assert [s[1] for s in trail(response)] == ["cancelled", "ok"]


def test_no_hedge_when_the_first_target_answers_in_time(gateway_factory: Any, mock: Any) -> None:
    spare = f"echo+{tag()}"
    gw = gateway_factory(models={"m": hedged("echo", spare, after_ms=5000)})
    response = httpx.post(
        gw.v1 + "/chat/completions",
        json={"model": "m", "messages": MSG, "stream": True},
        headers=gw.headers(),
        timeout=30,
    )
    assert [s[1] for s in trail(response)] == ["ok"]
    assert not [r for r in mock.requests if (r["json"] or {}).get("model") == spare]


def test_when_both_fail_the_plan_goes_on_after_the_pair(gateway_factory: Any, mock: Any) -> None:
    first, second = f"slow-0.5+fail-500+{tag()}", f"slow-0.5+fail-502+{tag()}"
    gw = gateway_factory(models={"m": hedged(first, second, "echo", after_ms=100)})
    response = httpx.post(
        gw.v1 + "/chat/completions", json={"model": "m", "messages": MSG}, headers=gw.headers(), timeout=30
    )
    assert response.status_code == 200
    assert [s[:2] for s in trail(response)] == [
        [f"mock/{first}", "server"],
        [f"backup/{second}", "server"],
        ["backup/echo", "ok"],
    ]
    assert len([r for r in mock.requests if (r["json"] or {}).get("model") == second]) == 1
