"""``/v1/responses`` against OpenAI's own schemas: every body, event and error the gateway sends,
for converted (chat-only) and passed-through (Responses) targets, streaming and not."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from tests.conftest import RunningGateway, routing_doc
from tests.contract.test_openapi_contract import SPEC_PATH, assert_conforms, violations

pytestmark = pytest.mark.skipif(not SPEC_PATH.is_file(), reason="OpenAI OpenAPI spec not found")

WEATHER = {
    "type": "function",
    "name": "get_weather",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
}
SCHEMA = {"type": "object", "properties": {"echo": {"type": "string"}}, "required": ["echo"]}
BODIES = {
    "text": {"input": "what is the weather in Paris", "instructions": "Be brief."},
    "tools": {"input": [{"role": "user", "content": "weather?"}], "tools": [WEATHER]},
    "json": {"input": "x", "text": {"format": {"type": "json_schema", "name": "e", "schema": SCHEMA}}},
    "incomplete": {"input": "one two three four", "max_output_tokens": 2},
}


def route(provider: str, model: str) -> dict[str, Any]:
    return {"targets": [{"provider": provider, "model": model}], "retry": {"attempts": 1}}


@pytest.fixture
def gw(gateway_factory: Any, mock: Any) -> RunningGateway:
    models = {}
    for family in ("mock", "oai"):
        models[f"{family}-echo"] = route(family, "echo")
        models[f"{family}-tools"] = route(family, "tools")
        models[f"{family}-breaks"] = route(family, "break-2+chunks-5")
    models["fails"] = route("mock", "fail-500")
    doc = routing_doc(mock.base_url, models)
    key = {"ssm": "/switchboard/secrets/mock"}
    doc["providers"]["oai"] = {"kind": "openai", "base_url": mock.base_url, "api_key": key, "responses": True}
    return gateway_factory(doc=doc)


def post(gw: RunningGateway, body: dict[str, Any]) -> httpx.Response:
    return httpx.post(gw.v1 + "/responses", json=body, headers=gw.headers(), timeout=30)


def events(gw: RunningGateway, body: dict[str, Any]) -> list[dict[str, Any]]:
    with httpx.stream(
        "POST", gw.v1 + "/responses", json={**body, "stream": True}, headers=gw.headers(), timeout=30
    ) as response:
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"].startswith("text/event-stream")
        lines = list(response.iter_lines())
    names = [line[7:] for line in lines if line.startswith("event: ")]
    payloads = [json.loads(line[6:]) for line in lines if line.startswith("data: ")]
    assert names == [payload["type"] for payload in payloads]  # each event named as its type
    return payloads


def test_the_validator_is_not_vacuous() -> None:
    assert violations("Response", {"id": "resp_1", "object": "response"})
    assert violations("ResponseStreamEvent", {"type": "response.output_text.delta", "delta": "x"})
    assert violations("ResponseItemList", {"object": "list", "data": []})


@pytest.mark.parametrize("family", ["mock", "oai"])
@pytest.mark.parametrize("case", sorted(BODIES))
def test_every_response_body(gw: RunningGateway, family: str, case: str) -> None:
    model = f"{family}-tools" if case == "tools" else f"{family}-echo"
    response = post(gw, {"model": model, **BODIES[case]})
    assert response.status_code == 200, response.text
    body = response.json()
    assert_conforms("Response", body)
    assert body["usage"]["output_tokens"] > 0 and "cost" in body["usage"]
    if case == "incomplete":
        assert body["status"] == "incomplete"


@pytest.mark.parametrize("family", ["mock", "oai"])
@pytest.mark.parametrize("case", sorted(BODIES))
def test_every_streamed_event(gw: RunningGateway, family: str, case: str) -> None:
    model = f"{family}-tools" if case == "tools" else f"{family}-echo"
    payloads = events(gw, {"model": model, **BODIES[case]})
    for payload in payloads:
        assert_conforms("ResponseStreamEvent", payload)
    assert [p["sequence_number"] for p in payloads] == list(range(len(payloads)))
    assert payloads[-1]["type"] in ("response.completed", "response.incomplete")
    assert payloads[-1]["response"]["usage"]["output_tokens"] > 0


@pytest.mark.parametrize("family", ["mock", "oai"])
def test_the_failure_event_after_output(gw: RunningGateway, family: str) -> None:
    payloads = events(gw, {"model": f"{family}-breaks", "input": "a b c"})
    for payload in payloads:
        assert_conforms("ResponseStreamEvent", payload)
    assert payloads[-1]["type"] == "response.failed"
    assert_conforms("ResponseFailedEvent", payloads[-1])


def test_stored_bodies(gw: RunningGateway) -> None:
    made = post(
        gw,
        {
            "model": "mock-echo",
            "input": [
                {"role": "user", "content": "a"},
                {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "b"}]},
            ],
        },
    ).json()
    with httpx.Client(base_url=gw.v1, headers=gw.headers(), timeout=30) as client:
        got = client.get(f"/responses/{made['id']}")
        assert got.status_code == 200 and got.json() == made
        assert_conforms("Response", got.json())
        items = client.get(f"/responses/{made['id']}/input_items", params={"limit": 1})
        assert_conforms("ResponseItemList", items.json())
        assert items.json()["has_more"] is True
        deleted = client.delete(f"/responses/{made['id']}")
        assert deleted.json() == {"id": made["id"], "object": "response.deleted", "deleted": True}


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "param"),
    [
        ("POST", "/responses", {"model": "mock-echo"}, 400, "input"),
        ("POST", "/responses", {"model": "mock-echo", "input": 3}, 400, "input"),
        (
            "POST",
            "/responses",
            {"model": "mock-echo", "input": "x", "tools": [{"type": "local_shell"}]},
            400,
            "tools[0].type",
        ),
        (
            "POST",
            "/responses",
            {"model": "mock-echo", "input": "x", "previous_response_id": "resp_nope"},
            400,
            "previous_response_id",
        ),
        ("POST", "/responses", {"model": "fails", "input": "x"}, 502, None),
        ("GET", "/responses/resp_nope", None, 404, "response_id"),
        ("DELETE", "/responses/resp_nope", None, 404, "response_id"),
        ("GET", "/responses/resp_nope/input_items?limit=0", None, 400, "limit"),
        ("GET", "/responses/resp_nope/input_items", None, 404, "response_id"),
        ("PUT", "/responses", None, 405, None),
    ],
)
def test_every_error_body(
    gw: RunningGateway, method: str, path: str, body: Any, status: int, param: str | None
) -> None:
    response = httpx.request(method, gw.v1 + path, json=body, headers=gw.headers(), timeout=30)
    assert response.status_code == status, response.text
    assert_conforms("ErrorResponse", response.json())
    assert response.json()["error"]["param"] == param


def test_translated_events_with_reasoning_and_parallel_calls_conform() -> None:
    """The converter's events for what the mock never sends: reasoning text, two tool calls."""
    from switchboard.core.schemas import ChatCompletionChunk
    from switchboard.http.endpoints.responses_format import EventTranslator, ResponsesRequest

    def chunk(delta: dict[str, Any], finish: str | None = None) -> ChatCompletionChunk:
        choice = {"index": 0, "delta": delta, "finish_reason": finish}
        return ChatCompletionChunk.model_validate(
            {"id": "c", "created": 1, "model": "m", "choices": [choice]}
        )

    request = ResponsesRequest.model_validate({"model": "m", "input": "x", "tools": [WEATHER], "user": "u"})
    translator = EventTranslator(request, "resp_1", 1)
    made = []
    for item in (
        chunk({"role": "assistant", "reasoning_content": "hm"}),
        chunk({"content": "ok"}),
        chunk({"tool_calls": [{"index": 0, "id": "call_1", "function": {"name": "a", "arguments": "{}"}}]}),
        chunk(
            {"tool_calls": [{"index": 1, "id": "call_2", "function": {"name": "b", "arguments": "{}"}}]},
            "tool_calls",
        ),
    ):
        made += translator.feed(item)
    made += translator.finish()
    for item in made:
        assert_conforms("ResponseStreamEvent", json.loads(item.data))
