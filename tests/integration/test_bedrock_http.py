"""The gateway's Bedrock provider with a real boto3 client against a Bedrock-shaped server.

The scripted upstream speaks Bedrock's REST-JSON (``/model/{id}/converse``) and the AWS event-stream
encoding (``/model/{id}/converse-stream``), so botocore signs, serialises and parses exactly as it
would against AWS. The provider reaches it through the provider entry's ``base_url`` (the same
setting that points at a VPC endpoint in production).
"""

from __future__ import annotations

import base64
import json
from typing import Any

import httpx
import openai

from tests.conftest import API_KEY, RunningGateway, routing_doc
from tests.native_upstream import Reply, ScriptedUpstream
from tests.support import fixture, validate_openai


def wire(value: Any) -> Any:
    """The JSON botocore sends for a Converse call: no modelId (it is in the path), bytes as base64."""
    if isinstance(value, dict):
        if set(value) == {"$bytes_b64"}:
            return value["$bytes_b64"]
        return {k: wire(v) for k, v in value.items() if k != "modelId"}
    if isinstance(value, list):
        return [wire(v) for v in value]
    return value


def response_body(case: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in case["converse_response"].items() if k != "ResponseMetadata"}


def events(stream: list[dict[str, Any]]) -> list[tuple[str, str, dict[str, Any]]]:
    return [("event", name, payload) for event in stream for name, payload in event.items()]


def start(
    gateway_factory: Any, mock: Any, native: ScriptedUpstream, models: dict[str, Any]
) -> RunningGateway:
    doc = routing_doc(mock.base_url, models)
    doc["providers"]["bedrock"] = {"kind": "bedrock", "region": "us-east-1", "base_url": native.url}
    return gateway_factory(doc=doc)


def sdk(gw: RunningGateway) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.v1, api_key=API_KEY, max_retries=0)


def test_converse_with_the_openai_sdk(gateway_factory, mock, native) -> None:  # type: ignore[no-untyped-def]
    case = fixture("bedrock", "chat_tools")
    native.script(
        case["target_model"], Reply(json=response_body(case), expect=wire(case["converse_request"]))
    )
    gw = start(
        gateway_factory,
        mock,
        native,
        {"claude": {"targets": [{"provider": "bedrock", "model": case["target_model"]}]}},
    )
    raw = sdk(gw).chat.completions.with_raw_response.create(**case["openai_request"])
    done = raw.parse()
    assert done.choices[0].message.tool_calls[0].function.arguments == '{"sign": "WKRP"}'  # type: ignore[index]
    assert done.choices[0].finish_reason == "tool_calls"
    assert raw.headers["x-switchboard-provider"] == "bedrock"
    validate_openai("CreateChatCompletionResponse", json.loads(raw.http_response.content))
    sent = native.requests[-1]
    assert sent["path"] == f"/model/{case['target_model']}/converse"
    assert sent["headers"]["authorization"].startswith(
        "AWS4-HMAC-SHA256 Credential=testing/"
    )  # SigV4, no key


def test_images_travel_as_bytes(gateway_factory, mock, native) -> None:  # type: ignore[no-untyped-def]
    case = fixture("bedrock", "chat_image_json")
    native.script(
        case["target_model"], Reply(json=response_body(case), expect=wire(case["converse_request"]))
    )
    gw = start(
        gateway_factory,
        mock,
        native,
        {"nova": {"targets": [{"provider": "bedrock", "model": case["target_model"]}]}},
    )
    done = sdk(gw).chat.completions.create(**case["openai_request"])
    assert json.loads(done.choices[0].message.content or "") == {"objects": ["pixel", "cat"]}
    image = native.requests[-1]["json"]["messages"][0]["content"][1]["image"]
    assert base64.b64decode(image["source"]["bytes"]).startswith(b"\x89PNG")


def test_converse_stream_with_the_openai_sdk(gateway_factory, mock, native) -> None:  # type: ignore[no-untyped-def]
    case = fixture("bedrock", "stream_tools")
    native.script(
        case["target_model"],
        Reply(events=events(case["converse_stream"]), expect=wire(case["converse_request"])),
    )
    gw = start(
        gateway_factory,
        mock,
        native,
        {"claude": {"targets": [{"provider": "bedrock", "model": case["target_model"]}]}},
    )
    chunks = list(sdk(gw).chat.completions.create(**case["openai_request"]))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    arguments = "".join(
        tc.function.arguments or ""
        for c in chunks
        if c.choices
        for tc in c.choices[0].delta.tool_calls or ()
        if tc.function
    )
    assert text == "I'll look that up."
    assert json.loads(arguments) == {"sign": "WZPZ"}
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "tool_calls"
    assert chunks[-1].usage is not None and chunks[-1].usage.total_tokens == 458
    assert native.requests[-1]["path"].endswith("/converse-stream")


def test_throttling_falls_back(gateway_factory, mock, native) -> None:  # type: ignore[no-untyped-def]
    throttled = Reply(
        429, json={"message": "Too many requests"}, headers={"x-amzn-ErrorType": "ThrottlingException"}
    )
    native.script("amazon.nova-lite-v1:0", throttled)
    gw = start(
        gateway_factory,
        mock,
        native,
        {
            "m": {
                "retry": {"attempts": 1},
                "targets": [
                    {"provider": "bedrock", "model": "amazon.nova-lite-v1:0"},
                    {"provider": "mock", "model": "echo"},
                ],
            }
        },
    )
    response = httpx.post(
        gw.v1 + "/chat/completions",
        headers=gw.headers(),
        timeout=30,
        json={"model": "m", "messages": [{"role": "user", "content": "hi"}]},
    )
    assert response.status_code == 200
    assert (
        response.headers["x-switchboard-trail"]
        .split(",")[0]
        .startswith("bedrock/amazon.nova-lite-v1:0;rate_limit;429")
    )


def test_context_overflow_is_context_window(gateway_factory, mock, native) -> None:  # type: ignore[no-untyped-def]
    too_long = Reply(
        400,
        json={"message": "Input is too long for requested model."},
        headers={"x-amzn-ErrorType": "ValidationException"},
    )
    native.script("small", too_long)
    gw = start(
        gateway_factory,
        mock,
        native,
        {
            "m": {
                "targets": [
                    {"provider": "bedrock", "model": "small", "context_window": 8000},
                    {"provider": "mock", "model": "echo", "context_window": 128000},
                ]
            }
        },
    )
    response = httpx.post(
        gw.v1 + "/chat/completions",
        headers=gw.headers(),
        timeout=30,
        json={"model": "m", "messages": [{"role": "user", "content": "long"}]},
    )
    assert response.status_code == 200
    assert [t.split(";")[1] for t in response.headers["x-switchboard-trail"].split(",")] == [
        "context_window",
        "ok",
    ]


def test_an_exception_event_after_output_ends_the_stream_with_an_error(gateway_factory, mock, native) -> None:  # type: ignore[no-untyped-def]
    case = fixture("bedrock", "stream_tools")
    failure = ("exception", "modelStreamErrorException", {"message": "boom"})
    broken = [*events(case["converse_stream"][:3]), failure]
    native.script("claude", Reply(events=broken))
    gw = start(
        gateway_factory, mock, native, {"c": {"targets": [{"provider": "bedrock", "model": "claude"}]}}
    )
    with httpx.stream(
        "POST",
        gw.v1 + "/chat/completions",
        headers=gw.headers(),
        timeout=30,
        json={"model": "c", "stream": True, "messages": [{"role": "user", "content": "x"}]},
    ) as response:
        data = [line[6:] for line in response.iter_lines() if line.startswith("data: ")]
    assert json.loads(data[1])["choices"][0]["delta"]["content"] == "I'll look"
    assert json.loads(data[-1])["error"]["code"] == "stream_interrupted"
