"""Heartbeats on ``/v1/responses`` streams, as on chat and messages (tests/resilience/
test_heartbeat_http.py): a stream with no output after ``heartbeat_after_s`` commits its 200 and
sends ``: keep-alive`` comments while the plan goes on (small intervals here).

Failover after the comments began stays invisible; a total failure ends the stream with the
Responses ``error`` event and ``response.failed``. Every event validates against OpenAI's
schemas; the SDK reads through the comments.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import httpx
import openai
import pytest

from tests.conftest import routing_doc
from tests.contract.test_openapi_contract import SPEC_PATH, violations

pytestmark = pytest.mark.skipif(
    not SPEC_PATH.is_file(), reason=f"OpenAI OpenAPI spec not found at {SPEC_PATH}"
)

FAST = {"heartbeat_after_s": 0.2, "heartbeat_every_s": 0.2}


def tag() -> str:
    return "id-" + uuid.uuid4().hex[:8]


def start(gateway_factory: Any, mock: Any, *models: str, passthrough: bool = False) -> Any:
    """Alias ``m``: ``models`` in order on the mock, as a chat target (converted) or as a Responses
    upstream (passed through), one attempt each."""
    providers = ["resp", "resp-backup"] if passthrough else ["mock", "backup"]
    targets = [{"provider": p, "model": m} for p, m in zip(providers, models, strict=False)]
    doc = routing_doc(mock.base_url, {"m": {"targets": targets, "retry": {"attempts": 1}}})
    for name in ("resp", "resp-backup"):
        doc["providers"][name] = {**doc["providers"]["mock"], "responses": True}
    return gateway_factory(doc=doc, **FAST)


def stream(gw: Any) -> tuple[httpx.Response, list[str], list[dict[str, Any]]]:
    """The raw SSE blocks and the events' data, each event valid by the spec."""
    body = {"model": "m", "input": "ping pong", "stream": True}
    response = httpx.post(gw.v1 + "/responses", json=body, headers=gw.headers(), timeout=30)
    blocks = [block for block in response.text.split("\n\n") if block]
    events = []
    for block in blocks:
        if block.startswith(":"):
            continue
        name, data = block.split("\n")
        event = json.loads(data.removeprefix("data: "))
        assert name == f"event: {event['type']}"
        problems = violations("ResponseStreamEvent", event)
        assert not problems, problems
        events.append(event)
    return response, blocks, events


def text(events: list[dict[str, Any]]) -> str:
    return "".join(e["delta"] for e in events if e["type"] == "response.output_text.delta")


@pytest.mark.parametrize(
    ("passthrough", "script"), [(False, "stall-0.7"), (True, "slow-0.7")], ids=["converted", "passthrough"]
)
def test_a_slow_first_output_gets_keep_alives_then_the_events(
    gateway_factory: Any, mock: Any, passthrough: bool, script: str
) -> None:
    gw = start(gateway_factory, mock, f"{script}+{tag()}", passthrough=passthrough)
    response, blocks, events = stream(gw)
    assert response.status_code == 200
    assert "x-switchboard-provider" not in response.headers  # committed before a target answered
    beats = [block for block in blocks if block == ": keep-alive"]
    assert blocks[0] == ": keep-alive" and len(beats) >= 2
    kinds = [e["type"] for e in events]
    assert kinds[0] == "response.created" and kinds[-1] == "response.completed"
    assert text(events) == "echo: ping pong"
    usage = events[-1]["response"]["usage"]
    assert usage["output_tokens"] > 0 and "cost" in usage  # metered as ever (None: the mock is unpriced)


def test_the_sdk_reads_through_the_comments(gateway_factory: Any, mock: Any) -> None:
    gw = start(gateway_factory, mock, f"stall-0.7+{tag()}")
    with (
        openai.OpenAI(base_url=gw.v1, api_key=gw.api_key, max_retries=0) as client,
        client.responses.stream(model="m", input="ping pong") as events,
    ):
        assert events.get_final_response().output_text == "echo: ping pong"


def test_failover_after_the_comments_began_is_invisible(gateway_factory: Any, mock: Any) -> None:
    gw = start(gateway_factory, mock, f"slow-0.6+fail-500+{tag()}", "echo")
    response, blocks, events = stream(gw)
    assert response.status_code == 200 and blocks[0] == ": keep-alive"
    kinds = [e["type"] for e in events]
    assert kinds[0] == "response.created" and kinds[-1] == "response.completed"
    assert "error" not in kinds and "response.failed" not in kinds
    assert text(events) == "echo: ping pong"


@pytest.mark.parametrize("passthrough", [False, True], ids=["converted", "passthrough"])
def test_a_total_failure_after_the_comments_is_an_error_event(
    gateway_factory: Any, mock: Any, passthrough: bool
) -> None:
    gw = start(gateway_factory, mock, f"slow-0.6+fail-500+{tag()}", passthrough=passthrough)
    response, blocks, events = stream(gw)
    assert response.status_code == 200 and blocks[0] == ": keep-alive"
    error, failed = events  # no response.created: nothing was output
    assert (error["type"], error["sequence_number"]) == ("error", 0)
    assert error["code"] == "all_targets_failed" and "failed" in error["message"]
    # ... then the failed response, the event Codex reads (it ignores ``error``)
    assert (failed["type"], failed["sequence_number"]) == ("response.failed", 1)
    response_body = failed["response"]
    assert response_body["status"] == "failed" and response_body["output"] == []
    assert response_body["error"] == {"code": "server_error", "message": error["message"]}
    assert response_body["model"] == "m" and response_body["id"].startswith("resp_")
    with openai.OpenAI(base_url=gw.v1, api_key=gw.api_key, max_retries=0) as client:
        seen = [event.type for event in client.responses.create(model="m", input="ping pong", stream=True)]
    assert seen == ["error", "response.failed"]
