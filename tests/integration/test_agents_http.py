"""/v1/messages as coding agents send it (issue 13): mid-conversation system turns, thinking blocks,
Anthropic-only parameters, cache_control, images in tool results, Anthropic ids, count_tokens,
error shapes on every /v1/messages* path, and the ``api-key`` header. Over HTTP, through the
official Anthropic SDK where it fits, to the mock (OpenAI-compatible) and a scripted Anthropic."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import boto3
import httpx
import pytest
from anthropic.types import RawMessageStreamEvent
from pydantic import TypeAdapter
from switchboard.core.principal import Limits
from switchboard.limits.keys import KeyStore
from switchboard.limits.table import Table

from tests.conftest import API_KEY, RunningGateway, routing_doc
from tests.native_upstream import Reply, ScriptedUpstream

KEY_REF = {"ssm": "/switchboard/secrets/mock"}
PNG = {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}
EPHEMERAL = {"type": "ephemeral"}
ANSWER = {
    "id": "msg_01",
    "type": "message",
    "role": "assistant",
    "model": "claude-real",
    "content": [{"type": "text", "text": "hi"}],
    "stop_reason": "end_turn",
    "stop_sequence": None,
    "usage": {"input_tokens": 10, "output_tokens": 1},
}


def start(gateway_factory: Any, mock: Any, native: ScriptedUpstream, **extra: Any) -> RunningGateway:
    models = {
        "echo": {"targets": [{"provider": "mock", "model": "echo"}]},
        "tools": {"targets": [{"provider": "mock", "model": "tools"}]},
        "claude": {"targets": [{"provider": "anthropic", "model": "claude-real"}]},
    }
    doc = routing_doc(mock.base_url, models)
    doc["providers"]["anthropic"] = {"kind": "anthropic", "base_url": native.url, "api_key": KEY_REF}
    return gateway_factory(doc=doc, **extra)


_clients: list[anthropic.Anthropic] = []


@pytest.fixture(autouse=True)
def _close_clients() -> Iterator[None]:
    yield
    while _clients:
        _clients.pop().close()


def client(gw: RunningGateway, key: str = API_KEY) -> anthropic.Anthropic:
    made = anthropic.Anthropic(base_url=gw.base_url, api_key=key, max_retries=0)
    _clients.append(made)
    return made


# Claude Code's shape: a system reminder between turns, a thinking turn, cache_control everywhere.
CONVERSATION: list[dict[str, Any]] = [
    {"role": "user", "content": [{"type": "text", "text": "list the files", "cache_control": EPHEMERAL}]},
    {
        "role": "assistant",
        "content": [
            {"type": "thinking", "thinking": "I should call ls.", "signature": "sig=="},
            {"type": "redacted_thinking", "data": "opaque=="},
            {"type": "tool_use", "id": "toolu_01A", "name": "ls", "input": {"path": "."}},
        ],
    },
    {
        "role": "user",
        "content": [
            {
                "type": "tool_result",
                "tool_use_id": "toolu_01A",
                "content": [{"type": "text", "text": "a.png"}, {"type": "image", "source": PNG}],
                "cache_control": EPHEMERAL,
            },
        ],
    },
    {"role": "system", "content": "The user switched to plan mode."},
    {"role": "user", "content": "and now?"},
]


def test_claude_code_turns_convert_for_an_openai_compatible_target(gateway_factory, mock, native) -> None:  # type: ignore[no-untyped-def]
    gw = start(gateway_factory, mock, native)
    message = client(gw).messages.create(
        model="echo",
        max_tokens=64,
        system=[{"type": "text", "text": "You are Claude Code.", "cache_control": EPHEMERAL}],
        messages=CONVERSATION,  # type: ignore[arg-type]
        tools=[{"name": "ls", "input_schema": {"type": "object"}, "cache_control": EPHEMERAL}],
        thinking={"type": "enabled", "budget_tokens": 1024},
        extra_body={"context_management": {"edits": []}, "output_config": {"effort": "high"}},
        extra_headers={"anthropic-beta": "interleaved-thinking-2025-05-14"},
    )
    assert message.content[0].text == "echo: and now?"  # type: ignore[union-attr]
    assert message.id.startswith("msg_")
    sent = mock.requests[-1]["json"]
    assert sent["messages"] == [
        {"role": "system", "content": "You are Claude Code."},
        {"role": "user", "content": "list the files"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "toolu_01A",
                    "type": "function",
                    "function": {"name": "ls", "arguments": '{"path": "."}'},
                }
            ],
        },
        {
            "role": "tool",
            "tool_call_id": "toolu_01A",
            "content": "a.png\n[1 image(s) returned by this tool follow in the next user message]",
        },
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "Images returned by tool call toolu_01A:"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
            ],
        },
        {"role": "system", "content": "The user switched to plan mode."},  # in place
        {"role": "user", "content": "and now?"},
    ]
    for name in ("thinking", "context_management", "output_config", "cache_control"):
        assert name not in sent
    assert "cache_control" not in json.dumps(sent)


def test_claude_code_turns_reach_an_anthropic_target_as_its_api_accepts(
    gateway_factory, mock, native
) -> None:  # type: ignore[no-untyped-def]
    native.script("claude-real", Reply(json=ANSWER))
    gw = start(gateway_factory, mock, native)
    body: dict[str, Any] = {
        "max_tokens": 64,
        "system": "You are Claude Code.",
        "messages": [{"role": "system", "content": "Reply tersely."}, *CONVERSATION],
        "thinking": {"type": "enabled", "budget_tokens": 1024},
        "context_management": {"edits": [{"type": "clear_tool_uses_20250919"}]},
        "output_config": {"effort": "high"},
    }
    known = {k: v for k, v in body.items() if k not in ("context_management", "output_config")}
    raw = client(gw).messages.with_raw_response.create(
        model="claude",
        **known,
        extra_body={k: body[k] for k in ("context_management", "output_config")},
        extra_headers={"anthropic-beta": "interleaved-thinking-2025-05-14,context-management-2025-06-27"},
    )
    assert raw.parse().content[0].text == "hi"  # type: ignore[union-attr]
    sent = native.requests[-1]
    assert (
        sent["headers"]["anthropic-beta"] == "interleaved-thinking-2025-05-14,context-management-2025-06-27"
    )
    # a leading system turn joins the top-level system; a later one is a reminder where it was
    assert sent["json"]["system"] == [
        {"type": "text", "text": "You are Claude Code."},
        {"type": "text", "text": "Reply tersely."},
    ]
    reminder = {
        "role": "user",
        "content": [
            {"type": "text", "text": "<system-reminder>\nThe user switched to plan mode.\n</system-reminder>"}
        ],
    }
    assert sent["json"]["messages"] == [*CONVERSATION[:3], reminder, CONVERSATION[4]]
    for name in ("thinking", "context_management", "output_config"):
        assert sent["json"][name] == body[name]  # passed on untouched, thinking blocks too


def test_converted_answers_carry_anthropic_ids(gateway_factory, mock, native) -> None:  # type: ignore[no-untyped-def]
    gw = start(gateway_factory, mock, native)
    sdk = client(gw)
    tools = [{"name": "lookup", "input_schema": {"type": "object"}}]
    ask = [{"role": "user", "content": "weather?"}]
    message = sdk.messages.create(model="tools", max_tokens=20, messages=ask, tools=tools)  # type: ignore[arg-type]
    assert message.id.startswith("msg_") and not message.id.startswith("msg_chatcmpl")
    call = message.content[-1]
    assert call.type == "tool_use" and call.id.startswith("toolu_") and "call_" not in call.id
    with sdk.messages.stream(model="tools", max_tokens=20, messages=ask, tools=tools) as s:  # type: ignore[arg-type]
        final = s.get_final_message()
    assert final.id.startswith("msg_") and final.content[-1].id.startswith("toolu_")  # type: ignore[union-attr]
    # the next turn sends that id back: it reaches the target as the tool call's id and result's
    follow = [
        *ask,
        {"role": "assistant", "content": [call.model_dump()]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call.id, "content": "sunny"}]},
    ]
    sdk.messages.create(model="echo", max_tokens=20, messages=follow, tools=tools)  # type: ignore[arg-type]
    sent = mock.requests[-1]["json"]["messages"]
    assert sent[1]["tool_calls"][0]["id"] == call.id == sent[2]["tool_call_id"]


def _store(gw: RunningGateway) -> KeyStore:
    return KeyStore(Table(boto3.client("dynamodb", region_name="us-east-1"), gw.settings.table))


def test_count_tokens_is_anthropics_own_for_an_anthropic_target(gateway_factory, mock, native) -> None:  # type: ignore[no-untyped-def]
    native.script("claude-real", Reply(json={"input_tokens": 1234}))
    gw = start(gateway_factory, mock, native)
    raw = client(gw).messages.with_raw_response.count_tokens(
        model="claude",
        system="You are Claude Code.",
        messages=[{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello"}],  # type: ignore[list-item]
        tools=[{"name": "ls", "input_schema": {"type": "object"}}],
        extra_headers={"anthropic-beta": "token-counting-2024-11-01"},
    )
    assert raw.parse().input_tokens == 1234
    assert "x-switchboard-estimated" not in raw.headers
    assert raw.headers["x-switchboard-provider"] == "anthropic"
    sent = native.requests[-1]
    assert sent["path"] == "/v1/messages/count_tokens"
    assert sent["headers"]["anthropic-beta"] == "token-counting-2024-11-01"
    assert sent["json"] == {
        "model": "claude-real",
        "system": [{"type": "text", "text": "You are Claude Code."}, {"type": "text", "text": "be brief"}],
        "messages": [{"role": "user", "content": "hello"}],
        "tools": [{"name": "ls", "input_schema": {"type": "object"}}],
    }
    # create's own fields, sent by a client that reuses its body, are not passed (Anthropic refuses them)
    httpx.post(
        gw.v1 + "/messages/count_tokens",
        headers=gw.headers(),
        json={
            "model": "claude",
            "max_tokens": 9,
            "stream": True,
            "messages": [{"role": "user", "content": "x"}],
        },
        timeout=10,
    ).raise_for_status()
    assert native.requests[-1]["json"] == {
        "model": "claude-real",
        "messages": [{"role": "user", "content": "x"}],
    }
    # Anthropic's refusal comes back as Anthropic's error
    native.script(
        "claude-real",
        Reply(400, json={"type": "error", "error": {"type": "invalid_request_error", "message": "bad"}}),
    )
    with pytest.raises(anthropic.BadRequestError) as refused:
        client(gw).messages.count_tokens(model="claude", messages=[{"role": "user", "content": "x"}])
    assert refused.value.body["error"]["type"] == "invalid_request_error"  # type: ignore[index]


def test_count_tokens_is_an_estimate_elsewhere_and_says_so(gateway_factory, mock, native) -> None:  # type: ignore[no-untyped-def]
    gw = start(gateway_factory, mock, native)
    sdk = client(gw)
    marker = "count-only-" + uuid.uuid4().hex
    short = sdk.messages.with_raw_response.count_tokens(
        model="echo", messages=[{"role": "user", "content": marker}]
    )
    assert short.headers["x-switchboard-estimated"] == "true"
    long = sdk.messages.count_tokens(model="echo", messages=[{"role": "user", "content": "word " * 4000}])
    assert 0 < short.parse().input_tokens < 50 and 4000 < long.input_tokens < 6000
    # a screenshot counts as an image, not as its base64 bytes
    big = {"type": "base64", "media_type": "image/png", "data": "A" * 400_000}
    image = sdk.messages.count_tokens(
        model="echo",
        messages=[{"role": "user", "content": [{"type": "image", "source": big}]}],  # type: ignore[list-item]
    )
    assert 1600 <= image.input_tokens < 1700
    assert not [r for r in mock.requests if marker in json.dumps(r["json"])]  # estimated: no upstream call


def test_count_tokens_needs_a_key_that_may_use_the_model_and_spends_no_limit(
    gateway_factory, mock, native
) -> None:  # type: ignore[no-untyped-def]
    gw = start(gateway_factory, mock, native)
    ask: list[Any] = [{"role": "user", "content": "hi"}]
    with pytest.raises(anthropic.AuthenticationError):
        client(gw, key="sk-wrong").messages.count_tokens(model="echo", messages=ask)
    key, _ = _store(gw).create("narrow", models=["echo"], limits=Limits(rpm=1))
    narrow = client(gw, key=key)
    with pytest.raises(anthropic.PermissionDeniedError) as denied:
        narrow.messages.count_tokens(model="tools", messages=ask)
    assert denied.value.body["type"] == "error"  # type: ignore[index]
    for _ in range(3):
        assert narrow.messages.count_tokens(model="echo", messages=ask).input_tokens > 0
    narrow.messages.create(
        model="echo", max_tokens=5, messages=ask
    )  # the minute's one request is still there
    with pytest.raises(anthropic.RateLimitError):
        narrow.messages.create(model="echo", max_tokens=5, messages=ask)
    assert (
        narrow.messages.count_tokens(model="echo", messages=ask).input_tokens > 0
    )  # counting is never limited


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", "/v1/messages", 405),
        ("GET", "/v1/messages/count_tokens", 405),
        ("POST", "/v1/messages/nope", 404),
        ("POST", "/v1/messages/batches", 404),
    ],
)
def test_every_messages_path_errs_in_anthropic_shape(
    gateway_factory, mock, native, method, path, status
) -> None:  # type: ignore[no-untyped-def]
    gw = start(gateway_factory, mock, native)
    response = httpx.request(method, gw.base_url + path, headers=gw.headers(), json={}, timeout=10)
    assert response.status_code == status
    body = response.json()
    assert body["type"] == "error" and set(body["error"]) == {"type", "message"}
    assert body["error"]["type"] == ("not_found_error" if status == 404 else "invalid_request_error")
    assert response.headers["x-request-id"].startswith("req_")
    if status == 405:
        assert response.headers["allow"] == "POST"
    # elsewhere the shape stays OpenAI's
    other = httpx.get(gw.v1 + "/chat/completions", headers=gw.headers(), timeout=10)
    assert other.status_code == 405 and set(other.json()) == {"error"}


def test_the_azure_style_api_key_header_is_a_client_key(gateway_factory, mock, native) -> None:  # type: ignore[no-untyped-def]
    gw = start(gateway_factory, mock, native)
    ask = {"model": "echo", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}
    chat = {"model": "echo", "messages": [{"role": "user", "content": "hi"}]}
    assert (
        httpx.post(gw.v1 + "/messages", headers={"api-key": API_KEY}, json=ask, timeout=10).status_code == 200
    )
    assert (
        httpx.post(
            gw.v1 + "/chat/completions", headers={"api-key": API_KEY}, json=chat, timeout=10
        ).status_code
        == 200
    )
    wrong = httpx.post(gw.v1 + "/messages", headers={"api-key": "sk-wrong"}, json=ask, timeout=10)
    assert wrong.status_code == 401 and wrong.json()["error"]["type"] == "authentication_error"


# ----------------------------------------------------------------- a recorded Claude Code turn

RECORDED = json.loads(
    (Path(__file__).parents[1] / "fixtures" / "agents" / "claude_code_request.json").read_text()
)
THINKING_STREAM: list[list[Any]] = [
    ["message_start", {"type": "message_start", "message": {**ANSWER, "content": [], "stop_reason": None}}],
    [
        "content_block_start",
        {
            "type": "content_block_start",
            "index": 0,
            "content_block": {"type": "thinking", "thinking": "", "signature": ""},
        },
    ],
    [
        "content_block_delta",
        {
            "type": "content_block_delta",
            "index": 0,
            "delta": {"type": "thinking_delta", "thinking": "Greet."},
        },
    ],
    [
        "content_block_delta",
        {
            "type": "content_block_delta",
            "index": 0,
            "delta": {"type": "signature_delta", "signature": "c2ln"},
        },
    ],
    ["content_block_stop", {"type": "content_block_stop", "index": 0}],
    [
        "content_block_start",
        {"type": "content_block_start", "index": 1, "content_block": {"type": "text", "text": ""}},
    ],
    [
        "content_block_delta",
        {"type": "content_block_delta", "index": 1, "delta": {"type": "text_delta", "text": "hi"}},
    ],
    ["content_block_stop", {"type": "content_block_stop", "index": 1}],
    [
        "message_delta",
        {
            "type": "message_delta",
            "delta": {"stop_reason": "end_turn", "stop_sequence": None},
            "usage": {"output_tokens": 3},
        },
    ],
    ["message_stop", {"type": "message_stop"}],
]
EVENT = TypeAdapter(RawMessageStreamEvent)


def replay(gw: RunningGateway, model: str) -> tuple[httpx.Response, list[Any]]:
    """The recorded request, byte for byte but for its model, with its headers and query."""
    content = json.dumps({**RECORDED["body"], "model": model}, ensure_ascii=False).encode()
    headers = {**RECORDED["headers"], "x-api-key": API_KEY}
    url = f"{gw.base_url}{RECORDED['path']}?{RECORDED['query']}"
    events: list[Any] = []
    with httpx.stream("POST", url, headers=headers, content=content, timeout=30) as response:
        name = None
        for line in response.iter_lines():
            if line.startswith("event: "):
                name = line[7:]
            elif line.startswith("data: "):
                data = json.loads(line[6:])
                assert data["type"] == name  # each event's name is its data's type
                events.append(EVENT.validate_python(data))  # and it is one of Anthropic's events
    return response, events


def well_formed(events: list[Any]) -> None:
    """Anthropic's stream grammar: message_start, blocks opened, filled and closed in index order,
    message_delta with a stop reason, message_stop."""
    kinds = [event.type for event in events]
    assert kinds[0] == "message_start" and kinds[-2:] == ["message_delta", "message_stop"]
    assert "error" not in kinds
    open_index, next_index = None, 0
    for event in events[1:-2]:
        if event.type == "content_block_start":
            assert open_index is None and event.index == next_index
            open_index, next_index = event.index, next_index + 1
        elif event.type == "content_block_delta":
            assert event.index == open_index
        elif event.type == "content_block_stop":
            assert event.index == open_index
            open_index = None
    assert open_index is None and next_index > 0
    assert events[-2].delta.stop_reason == "end_turn"


def test_a_recorded_claude_code_turn_through_an_openai_compatible_target(
    gateway_factory, mock, native
) -> None:  # type: ignore[no-untyped-def]
    gw = start(gateway_factory, mock, native)
    response, events = replay(gw, "echo")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
    well_formed(events)
    assert events[0].message.id.startswith("msg_")
    text = "".join(e.delta.text for e in events if e.type == "content_block_delta")
    assert text.startswith("echo: ")
    assert events[-2].usage.output_tokens > 0
    sent = mock.requests[-1]["json"]
    recorded = RECORDED["body"]
    assert [m["role"] for m in sent["messages"]] == [
        "system",
        "user",
        "system",
    ]  # the reminder stays in place
    assert sent["messages"][2]["content"] == recorded["messages"][1]["content"]
    assert [t["function"]["name"] for t in sent["tools"]] == [t["name"] for t in recorded["tools"]]
    assert sent["max_tokens"] == recorded["max_tokens"] and sent["stream"] is True


def test_a_recorded_claude_code_turn_through_an_anthropic_target(gateway_factory, mock, native) -> None:  # type: ignore[no-untyped-def]
    native.script("claude-real", Reply(sse=THINKING_STREAM))
    gw = start(gateway_factory, mock, native)
    response, events = replay(gw, "claude")
    assert response.status_code == 200
    well_formed(events)
    assert [e.type for e in events] == [kind for kind, _ in THINKING_STREAM]  # relayed as sent, thinking too
    sent = native.requests[-1]
    # the body as Claude Code sent it, but for the model: its mid-conversation-system beta says
    # Anthropic takes the system turn where it is
    assert sent["json"] == {**RECORDED["body"], "model": "claude-real"}
    assert sent["headers"]["anthropic-beta"] == RECORDED["headers"]["anthropic-beta"]
    assert sent["headers"]["anthropic-version"] == "2023-06-01"
