"""Heartbeats: a stream with no output after ``heartbeat_after_s`` commits its 200 and sends
``: keep-alive`` comments every ``heartbeat_every_s`` while the plan goes on (small intervals here).

Failover after the comments began stays invisible; a total failure ends the stream with an error
event, OpenAI's on chat and Anthropic's on /v1/messages. The SDKs ignore the comments.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import anthropic
import httpx
import openai
import pytest

from tests.conftest import routing_doc

MSG = [{"role": "user", "content": "ping pong"}]
FAST = {"heartbeat_after_s": 0.2, "heartbeat_every_s": 0.2}


def tag() -> str:
    return "id-" + uuid.uuid4().hex[:8]


def chain(*models: str) -> dict[str, Any]:
    providers = ["mock", "backup"]
    return {
        "targets": [{"provider": p, "model": m} for p, m in zip(providers, models, strict=False)],
        "retry": {"attempts": 1},
    }


def stream(gw: Any, path: str, body: dict[str, Any]) -> httpx.Response:
    return httpx.post(gw.v1 + path, json={**body, "stream": True}, headers=gw.headers(), timeout=30)


def test_a_slow_first_token_gets_keep_alives_then_the_stream(gateway_factory: Any) -> None:
    gw = gateway_factory(models={"m": chain(f"stall-1+{tag()}")}, **FAST)
    response = stream(gw, "/chat/completions", {"model": "m", "messages": MSG})
    assert response.status_code == 200
    # Committed before a target was found: the attribution headers could not be sent.
    assert "x-switchboard-provider" not in response.headers
    lines = response.text.split("\n\n")
    beats = [line for line in lines if line == ": keep-alive"]
    assert len(beats) >= 3 and lines[0] == ": keep-alive"
    data = [line.removeprefix("data: ") for line in lines if line.startswith("data: ")]
    assert data[-1] == "[DONE]"
    text = "".join(c["delta"].get("content") or "" for d in data[:-1] for c in json.loads(d)["choices"])
    assert text == "echo: ping pong"


def test_the_sdk_reads_through_the_comments(gateway_factory: Any) -> None:
    gw = gateway_factory(models={"m": chain(f"stall-0.7+{tag()}")}, **FAST)
    client = openai.OpenAI(base_url=gw.v1, api_key=gw.api_key, max_retries=0)
    chunks = client.chat.completions.create(model="m", messages=MSG, stream=True)  # type: ignore[arg-type]
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "echo: ping pong"


def test_failover_after_the_comments_began_is_invisible(gateway_factory: Any) -> None:
    gw = gateway_factory(models={"m": chain(f"slow-0.6+fail-500+{tag()}", "echo")}, **FAST)
    response = stream(gw, "/chat/completions", {"model": "m", "messages": MSG})
    assert response.status_code == 200 and response.text.startswith(": keep-alive\n\n")
    data = [line[6:] for line in response.text.split("\n\n") if line.startswith("data: ")]
    assert data[-1] == "[DONE]" and not any('"error"' in d for d in data)
    assert "".join(c["delta"].get("content") or "" for d in data[:-1] for c in json.loads(d)["choices"]) == (
        "echo: ping pong"
    )


def test_a_total_failure_after_the_comments_is_an_openai_error_event(gateway_factory: Any) -> None:
    gw = gateway_factory(models={"m": chain(f"slow-0.6+fail-500+{tag()}")}, **FAST)
    response = stream(gw, "/chat/completions", {"model": "m", "messages": MSG})
    assert response.status_code == 200 and response.text.startswith(": keep-alive\n\n")
    events = [line for line in response.text.split("\n\n") if line]
    assert events[-1].startswith("data: ") and "[DONE]" not in response.text
    error = json.loads(events[-1][6:])["error"]
    assert error["code"] == "all_targets_failed" and "failed" in error["message"]
    client = openai.OpenAI(base_url=gw.v1, api_key=gw.api_key, max_retries=0)
    with pytest.raises(openai.APIError):
        for _ in client.chat.completions.create(model="m", messages=MSG, stream=True):  # type: ignore[arg-type]
            pass


def test_a_total_failure_on_messages_is_an_anthropic_error_event(gateway_factory: Any) -> None:
    gw = gateway_factory(models={"m": chain(f"slow-0.6+fail-500+{tag()}")}, **FAST)
    body = {"model": "m", "max_tokens": 5, "messages": MSG}
    response = stream(gw, "/messages", body)
    assert response.status_code == 200 and response.text.startswith(": keep-alive\n\n")
    last = [line for line in response.text.split("\n\n") if line][-1]
    event, data = last.split("\n")
    assert event == "event: error"
    assert json.loads(data.removeprefix("data: "))["error"]["type"] == "api_error"
    client = anthropic.Anthropic(base_url=gw.base_url, api_key=gw.api_key, max_retries=0)
    with pytest.raises(anthropic.APIStatusError):
        for _ in client.messages.create(stream=True, **body):  # type: ignore[call-overload]
            pass


def test_messages_stream_through_the_comments(gateway_factory: Any) -> None:
    gw = gateway_factory(models={"m": chain(f"stall-0.7+{tag()}")}, **FAST)
    client = anthropic.Anthropic(base_url=gw.base_url, api_key=gw.api_key, max_retries=0)
    with client.messages.stream(model="m", max_tokens=50, messages=MSG) as events:  # type: ignore[arg-type]
        assert events.get_final_text() == "echo: ping pong"


def test_the_routing_document_sets_the_delay(gateway_factory: Any, mock: Any) -> None:
    doc = routing_doc(mock.base_url, {"m": chain(f"stall-0.7+{tag()}")})
    doc["defaults"]["heartbeat_after_s"] = 5
    gw = gateway_factory(doc=doc, **FAST)  # the document's 5 s wins over the setting's 0.2 s
    response = stream(gw, "/chat/completions", {"model": "m", "messages": MSG})
    assert ": keep-alive" not in response.text and response.headers["x-switchboard-provider"] == "mock"


def test_a_client_leaving_during_the_comments_cancels_the_plan_and_settles(
    gateway_factory: Any, mock: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    stalled = f"stall-10+{tag()}"
    gw = gateway_factory(models={"m": chain(stalled)}, **FAST)
    body = {"model": "m", "messages": MSG, "stream": True}
    with (
        httpx.Client(timeout=30) as client,
        client.stream("POST", gw.v1 + "/chat/completions", json=body, headers=gw.headers()) as response,
    ):
        assert next(response.iter_raw()).startswith(b": keep-alive")
        request_id = response.headers["x-request-id"]
    # The client is gone: the plan is cancelled (the upstream's connection closed) and settled.
    deadline = time.monotonic() + 5
    events: list[dict[str, Any]] = []
    while stalled not in mock.closed or not events:
        assert time.monotonic() < deadline, "the plan was not cancelled and settled"
        time.sleep(0.02)
        out = capsys.readouterr().out
        events += [
            json.loads(line) for line in out.splitlines() if request_id in line and '"Requests"' in line
        ]
    event = events[0]
    assert (event["outcome"], event["status"], event["error_code"]) == (
        "interrupted",
        200,
        "client_disconnected",
    )
