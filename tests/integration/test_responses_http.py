"""POST /v1/responses with the official OpenAI client: converted through chat, and passed through."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest

from tests.conftest import API_KEY, RunningGateway, routing_doc
from tests.native_upstream import Reply, ScriptedUpstream
from tests.support import fixture

KEY_REF = {"ssm": "/switchboard/secrets/mock"}
WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "The weather in a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}

_clients: list[openai.OpenAI] = []


@pytest.fixture(autouse=True)
def _close_clients() -> Iterator[None]:
    yield
    while _clients:
        _clients.pop().close()


def client(gw: RunningGateway, key: str = API_KEY) -> openai.OpenAI:
    made = openai.OpenAI(base_url=gw.v1, api_key=key, max_retries=0)
    _clients.append(made)
    return made


def to(*targets: tuple[str, str], **route: Any) -> dict[str, Any]:
    return {"targets": [{"provider": p, "model": m} for p, m in targets], **route}


def start(
    gateway_factory: Any, mock: Any, native: ScriptedUpstream, models: dict[str, Any]
) -> RunningGateway:
    """The mock twice: ``mock`` (chat only, converted) and ``oai`` (declares the Responses API:
    passed through); and the scripted Anthropic upstream."""
    doc = routing_doc(mock.base_url, models)
    doc["providers"]["oai"] = {
        "kind": "openai",
        "base_url": mock.base_url,
        "api_key": KEY_REF,
        "responses": True,
    }
    doc["providers"]["anthropic"] = {"kind": "anthropic", "base_url": native.url, "api_key": KEY_REF}
    return gateway_factory(doc=doc)


MODELS = {
    "echo": to(("mock", "echo")),
    "tools": to(("mock", "tools")),
    "pass": to(("oai", "echo")),
    "pass-tools": to(("oai", "tools")),
    "claude": to(("anthropic", "claude-real")),
}


@pytest.fixture
def gw(gateway_factory: Any, mock: Any, native: ScriptedUpstream) -> RunningGateway:
    return start(gateway_factory, mock, native, MODELS)


def test_converted_text_answer(gw: RunningGateway, mock: Any) -> None:
    response = client(gw).responses.create(model="echo", input="hello there", instructions="Be brief.")
    assert response.output_text == "echo: hello there"
    assert response.status == "completed" and response.id.startswith("resp_")
    assert response.usage is not None and response.usage.input_tokens > 0 and response.usage.output_tokens > 0
    sent = mock.requests[-1]
    assert sent["path"] == "/v1/chat/completions"
    assert sent["json"]["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "hello there"},
    ]


def test_converted_function_tools_round_trip(gw: RunningGateway, mock: Any) -> None:
    sdk = client(gw)
    first = sdk.responses.create(
        model="tools", input="Weather in Paris?", tools=[WEATHER], tool_choice="auto"
    )
    [call] = first.output
    assert call.type == "function_call" and call.name == "get_weather" and call.call_id == "call_mock1"
    assert json.loads(call.arguments) == {"city": "Paris"}
    sent = mock.requests[-1]["json"]
    assert sent["tools"] == [
        {
            "type": "function",
            "function": {k: WEATHER[k] for k in ("name", "description", "parameters")},
        }
    ]
    second = sdk.responses.create(
        model="echo",
        previous_response_id=first.id,
        input=[{"type": "function_call_output", "call_id": call.call_id, "output": "sunny"}],
        tools=[WEATHER],
    )
    assert second.status == "completed"
    messages = mock.requests[-1]["json"]["messages"]
    assert messages[0] == {"role": "user", "content": "Weather in Paris?"}
    assert messages[1]["tool_calls"][0]["id"] == "call_mock1"
    assert messages[2] == {"role": "tool", "tool_call_id": "call_mock1", "content": "sunny"}


def test_structured_output_json_schema(gw: RunningGateway, mock: Any) -> None:
    schema = {"type": "object", "properties": {"echo": {"type": "string"}}, "required": ["echo"]}
    fmt = {"format": {"type": "json_schema", "name": "echoed", "schema": schema, "strict": True}}
    for model in ("echo", "pass"):
        response = client(gw).responses.create(model=model, input="ping", text=fmt)  # type: ignore[arg-type]
        assert json.loads(response.output_text) == {"echo": "ping"}, model
        if model == "echo":  # converted: the request's settings are echoed, as OpenAI does
            assert response.text.format.type == "json_schema"  # type: ignore[union-attr]
    assert mock.requests[-2]["json"]["response_format"]["json_schema"]["name"] == "echoed"
    assert mock.requests[-1]["path"] == "/v1/responses" and mock.requests[-1]["json"]["text"] == fmt


def test_converted_stream_has_the_full_event_sequence(gw: RunningGateway) -> None:
    with client(gw).responses.stream(model="echo", input="one two three") as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_response()
    assert kinds[:4] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
    ]
    assert kinds[-4:] == [
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert kinds.count("response.output_text.delta") == 4
    assert final.output_text == "echo: one two three"
    assert final.usage is not None and final.usage.input_tokens > 0 and final.usage.output_tokens == 4


def test_converted_stream_of_a_tool_call(gw: RunningGateway) -> None:
    with client(gw).responses.stream(model="tools", input="weather?", tools=[WEATHER]) as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_response()
    assert "response.function_call_arguments.delta" in kinds
    assert "response.function_call_arguments.done" in kinds
    assert final.output[0].type == "function_call"
    assert json.loads(final.output[0].arguments) == {"city": "Paris"}


def interleaved_calls() -> list[dict[str, Any]]:
    """A chat stream whose two parallel calls' argument chunks alternate (index 0, 1, 0, 1)."""
    base = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "compat"}

    def chunk(*calls: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        delta = {"tool_calls": list(calls)} if calls else {}
        return {**base, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}

    def call(index: int, arguments: str, **first: Any) -> dict[str, Any]:
        function = {"arguments": arguments, **({"name": first["name"]} if first else {})}
        return {
            "index": index,
            **({"id": first["id"], "type": "function"} if first else {}),
            "function": function,
        }

    return [
        {**base, "choices": [{"index": 0, "delta": {"role": "assistant"}, "finish_reason": None}]},
        chunk(call(0, '{"ci', id="call_p", name="get_weather")),
        chunk(call(1, '{"ci', id="call_r", name="get_weather")),
        chunk(call(0, 'ty":"Par')),
        chunk(call(1, 'ty":"Ro')),
        chunk(call(0, 'is"}')),
        chunk(call(1, 'me"}')),
        chunk(finish="tool_calls"),
        {**base, "choices": [], "usage": {"prompt_tokens": 12, "completion_tokens": 20, "total_tokens": 32}},
    ]


def test_interleaved_parallel_calls_stream_each_calls_deltas(
    gateway_factory: Any, mock: Any, native: ScriptedUpstream
) -> None:
    """An OpenAI-compatible chat upstream interleaving two calls' argument chunks: every call gets
    its own ``function_call_arguments.delta`` events (its item id and output index), the ``.done``
    events and items are whole, every event is valid by the spec, and the SDK assembles both."""
    from tests.contract.test_openapi_contract import SPEC_PATH, violations

    if not SPEC_PATH.is_file():
        pytest.skip(f"OpenAI OpenAPI spec not found at {SPEC_PATH}")
    doc = routing_doc(mock.base_url, {"par": to(("compat", "compat"))})
    doc["providers"]["compat"] = {"kind": "openai", "base_url": native.url + "/v1", "api_key": KEY_REF}
    gw = gateway_factory(doc=doc)
    native.script("compat", Reply(chunks=interleaved_calls()))
    body = {"model": "par", "input": "weather in Paris and Rome?", "tools": [WEATHER], "stream": True}
    response = httpx.post(gw.v1 + "/responses", json=body, headers=gw.headers(), timeout=30)
    events = [json.loads(line[6:]) for line in response.text.splitlines() if line.startswith("data: ")]
    for event in events:
        assert not violations("ResponseStreamEvent", event), event
    items = {
        e["item"]["call_id"]: (e["item"]["id"], e["output_index"])
        for e in events
        if e["type"] == "response.output_item.added"
    }
    arguments: dict[tuple[str, int], list[str]] = {}
    for e in events:
        if e["type"] == "response.function_call_arguments.delta":
            arguments.setdefault((e["item_id"], e["output_index"]), []).append(e["delta"])
    assert arguments == {
        items["call_p"]: ['{"ci', 'ty":"Par', 'is"}'],
        items["call_r"]: ['{"ci', 'ty":"Ro', 'me"}'],
    }
    done = {
        e["item_id"]: e["arguments"] for e in events if e["type"] == "response.function_call_arguments.done"
    }
    assert done == {items["call_p"][0]: '{"city":"Paris"}', items["call_r"][0]: '{"city":"Rome"}'}
    final = events[-1]["response"]
    assert [json.loads(o["arguments"]) for o in final["output"]] == [{"city": "Paris"}, {"city": "Rome"}]
    with client(gw).responses.stream(model="par", input="again", tools=[WEATHER]) as stream:
        for _event in stream:
            pass
        answer = stream.get_final_response()
    assert [(o.call_id, o.arguments) for o in answer.output] == [  # type: ignore[union-attr]
        ("call_p", '{"city":"Paris"}'),
        ("call_r", '{"city":"Rome"}'),
    ]


HISTORY_WITH_REASONING = [
    {"type": "message", "role": "user", "content": "weather in Paris?"},
    {"type": "reasoning", "id": "rs_1", "summary": [{"type": "summary_text", "text": "Call the tool."}]},
    {"type": "function_call", "call_id": "call_1", "name": "get_weather", "arguments": '{"city":"Paris"}'},
    {"type": "function_call_output", "call_id": "call_1", "output": "sunny"},
]


def test_reasoning_items_reach_a_target_that_reasons_and_no_other(
    gateway_factory: Any, mock: Any, native: ScriptedUpstream
) -> None:
    """A compat upstream serving gpt-oss gets the reasoning item's summary as the assistant
    message's ``reasoning_content``; the chat-only mock (``echo``, no reasoning model) and an
    Anthropic target get none of it."""
    models = {"echo": MODELS["echo"], "claude": MODELS["claude"], "oss": to(("compat", "gpt-oss-20b"))}
    doc = routing_doc(mock.base_url, models)
    doc["providers"]["compat"] = {"kind": "openai", "base_url": native.url + "/v1", "api_key": KEY_REF}
    doc["providers"]["anthropic"] = {"kind": "anthropic", "base_url": native.url, "api_key": KEY_REF}
    gw = gateway_factory(doc=doc)
    completion = {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1,
        "model": "gpt-oss-20b",
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": "Sunny."}, "finish_reason": "stop"}
        ],
        "usage": {"prompt_tokens": 20, "completion_tokens": 2, "total_tokens": 22},
    }
    native.script("gpt-oss-20b", Reply(json=completion))
    answer = fixture("anthropic", "chat_tools")["anthropic_response"]
    native.script("claude-real", Reply(json={**answer, "content": [{"type": "text", "text": "Sunny."}]}))
    sdk = client(gw)
    assert (
        sdk.responses.create(model="oss", input=HISTORY_WITH_REASONING, tools=[WEATHER]).output_text
        == "Sunny."
    )
    [assistant] = [m for m in native.requests[-1]["json"]["messages"] if m["role"] == "assistant"]
    assert assistant["reasoning_content"] == "Call the tool."
    assert assistant["tool_calls"][0]["id"] == "call_1"
    sdk.responses.create(model="echo", input=HISTORY_WITH_REASONING, tools=[WEATHER])
    assert not any("reasoning_content" in m for m in mock.requests[-1]["json"]["messages"])
    sdk.responses.create(model="claude", input=HISTORY_WITH_REASONING, tools=[WEATHER])
    sent = native.requests[-1]["json"]
    assert not any(
        block.get("type") == "thinking"
        for message in sent["messages"]
        if isinstance(message["content"], list)
        for block in message["content"]
    )
    assert "Call the tool." not in json.dumps(sent)


def test_pass_through_create_and_stream(gw: RunningGateway, mock: Any) -> None:
    sdk = client(gw)
    raw = sdk.responses.with_raw_response.create(
        model="pass", input="hi you", extra_body={"unknown_knob": 3}, tools=[WEATHER, {"type": "web_search"}]
    )
    response = raw.parse()
    assert response.output_text == "echo: hi you" and response.id.startswith("resp_mock")
    sent = mock.requests[-1]
    assert sent["path"] == "/v1/responses"
    assert sent["json"]["unknown_knob"] == 3 and sent["json"]["model"] == "echo"
    assert sent["json"]["tools"][1] == {"type": "web_search"}  # built-in tools reach a Responses upstream
    assert raw.headers["x-switchboard-provider"] == "oai"
    assert response.usage is not None and response.usage.output_tokens == 3
    with sdk.responses.stream(model="pass-tools", input="weather?", tools=[WEATHER]) as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_response()
    assert kinds[0] == "response.created" and kinds[-1] == "response.completed"
    assert final.output[0].type == "function_call" and final.usage is not None
    assert final.usage.output_tokens > 0


def test_built_in_tools_for_a_converted_target(gw: RunningGateway) -> None:
    """A hosted built-in offered is dropped (said so in a header); one the client runs is a 400."""
    raw = client(gw).responses.with_raw_response.create(
        model="echo", input="x", tools=[{"type": "web_search"}]
    )
    assert raw.headers["x-switchboard-dropped-tools"] == "web_search"
    assert raw.parse().output_text == "echo: x"
    with pytest.raises(openai.BadRequestError) as caught:
        client(gw).responses.create(model="echo", input="x", tools=[{"type": "local_shell"}])
    error = caught.value.body
    assert isinstance(error, dict) and error["param"] == "tools[0].type"
    assert "local_shell" in error["message"]


def test_previous_response_id_across_two_providers(
    gw: RunningGateway, mock: Any, native: ScriptedUpstream
) -> None:
    """Turn 1 passed through to a Responses upstream, turn 2 converted for Anthropic."""
    answer = fixture("anthropic", "chat_tools")["anthropic_response"]
    native.script(
        "claude-real",
        Reply(
            json={**answer, "content": [{"type": "text", "text": "Paris it is."}], "stop_reason": "end_turn"}
        ),
    )
    sdk = client(gw)
    first = sdk.responses.create(model="pass", input="remember Paris", instructions="Be brief.")
    second = sdk.responses.create(model="claude", input="which city?", previous_response_id=first.id)
    assert second.output_text == "Paris it is." and second.previous_response_id == first.id
    sent = native.requests[-1]["json"]
    assert sent["messages"] == [
        {"role": "user", "content": "remember Paris"},
        {"role": "assistant", "content": "echo: remember Paris"},
        {"role": "user", "content": "which city?"},
    ]
    # instructions are not carried over (as OpenAI does), and a third turn goes back to pass-through
    third = sdk.responses.create(model="pass", input="and now?", previous_response_id=second.id)
    assert third.status == "completed"
    relayed = mock.requests[-1]["json"]
    assert "previous_response_id" not in relayed
    assert [item.get("role") for item in relayed["input"]] == [
        "user",
        "assistant",
        "user",
        "assistant",
        "user",
    ]
    assert relayed["input"][3]["content"][0]["text"] == "Paris it is."


def test_stored_responses_belong_to_their_key(gw: RunningGateway, mock: Any) -> None:
    import boto3
    from switchboard.limits.keys import KeyStore
    from switchboard.limits.table import Table

    sdk = client(gw)
    made = sdk.responses.create(
        model="echo", input=[{"role": "user", "content": "first"}, {"role": "user", "content": "second"}]
    )
    assert sdk.responses.retrieve(made.id).output_text == made.output_text
    items = sdk.responses.input_items.list(made.id)
    assert [item.content[0].text for item in items.data] == ["second", "first"]  # type: ignore[union-attr]
    page = sdk.responses.input_items.list(made.id, order="asc", limit=1)
    assert page.has_more and page.data[0].content[0].text == "first"  # type: ignore[union-attr]
    rest = sdk.responses.input_items.list(made.id, order="asc", after=page.data[0].id)
    assert not rest.has_more and rest.data[0].content[0].text == "second"  # type: ignore[union-attr]

    store = KeyStore(Table(boto3.client("dynamodb", region_name="us-east-1"), gw.settings.table))
    other_key, _ = store.create("other")
    other = client(gw, other_key)
    with pytest.raises(openai.NotFoundError):
        other.responses.retrieve(made.id)
    with pytest.raises(openai.NotFoundError):
        other.responses.input_items.list(made.id)
    with pytest.raises(openai.NotFoundError):
        other.responses.delete(made.id)
    with pytest.raises(openai.BadRequestError) as caught:
        other.responses.create(model="echo", input="x", previous_response_id=made.id)
    assert caught.value.body["param"] == "previous_response_id"  # type: ignore[index]

    sdk.responses.delete(made.id)
    with pytest.raises(openai.NotFoundError):
        sdk.responses.retrieve(made.id)
    unstored = sdk.responses.create(model="echo", input="x", store=False)
    with pytest.raises(openai.NotFoundError):
        sdk.responses.retrieve(unstored.id)


def test_a_mid_stream_failure_ends_with_response_failed(
    gateway_factory: Any, mock: Any, native: ScriptedUpstream
) -> None:
    gw = start(
        gateway_factory,
        mock,
        native,
        {"broken": to(("mock", "break-2+chunks-6")), "broken-pass": to(("oai", "break-2+chunks-6"))},
    )
    for model in ("broken", "broken-pass"):
        with httpx.stream(
            "POST",
            gw.v1 + "/responses",
            headers=gw.headers(),
            json={"model": model, "input": "a b c", "stream": True},
            timeout=30,
        ) as response:
            events = [json.loads(line[6:]) for line in response.iter_lines() if line.startswith("data: ")]
        kinds = [event["type"] for event in events]
        assert kinds.count("response.output_text.delta") == 2, model
        assert kinds[-1] == "response.failed", model
        assert "response.completed" not in kinds
        failed = events[-1]
        assert (
            failed["response"]["status"] == "failed" and failed["response"]["error"]["code"] == "server_error"
        )
        numbers = [event["sequence_number"] for event in events]
        assert numbers == sorted(set(numbers)), model
    sdk = client(gw)
    with pytest.raises(RuntimeError), sdk.responses.stream(model="broken", input="a b c") as stream:
        for _ in stream:
            pass
        stream.get_final_response()  # the SDK never mistakes it for a finished response


def test_failover_before_output_is_invisible(
    gateway_factory: Any, mock: Any, native: ScriptedUpstream
) -> None:
    gw = start(gateway_factory, mock, native, {"flaky": to(("oai", "fail-500"), ("mock", "echo"))})
    with client(gw).responses.stream(model="flaky", input="hello") as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_response()
    assert final.output_text == "echo: hello" and kinds.count("response.created") == 1


def test_a_stream_without_upstream_usage_reports_an_estimate_never_zero(
    gateway_factory: Any, mock: Any, native: ScriptedUpstream
) -> None:
    doc = routing_doc(mock.base_url, {"quiet": to(("quiet", "echo"))})
    doc["providers"]["quiet"] = {**doc["providers"]["mock"], "unsupported_params": ["stream_options"]}
    gw = gateway_factory(doc=doc)
    with client(gw).responses.stream(model="quiet", input="one two three") as stream:
        for _ in stream:
            pass
        final = stream.get_final_response()
    assert "stream_options" not in mock.requests[-1]["json"]  # so the upstream sent no usage
    assert final.usage is not None and final.usage.input_tokens > 0 and final.usage.output_tokens > 0
    assert (final.usage.model_extra or {}).get("estimated") is True


def test_a_converted_targets_refusal_names_the_responses_field(
    gw: RunningGateway, native: ScriptedUpstream
) -> None:
    """Anthropic takes no ftp image URL: the chat form's refusal (param ``messages``) names ``input``."""
    image = {"type": "input_image", "image_url": "ftp://example.com/cat.png"}
    with pytest.raises(openai.BadRequestError) as caught:
        client(gw).responses.create(model="claude", input=[{"role": "user", "content": [image]}])
    assert caught.value.body["param"] == "input"  # type: ignore[index]
    assert native.requests == []  # refused before any upstream call


def test_the_routing_document_sets_the_ttl_and_keys_their_models(gateway_factory: Any, mock: Any) -> None:
    import time

    import boto3
    from switchboard.limits.keys import KeyStore
    from switchboard.limits.table import Table

    doc = routing_doc(mock.base_url, {"echo": to(("mock", "echo")), "other": to(("mock", "echo"))})
    gw = gateway_factory(doc={**doc, "responses_ttl_days": 2})
    made = client(gw).responses.create(model="echo", input="x")
    ddb = boto3.client("dynamodb", region_name="us-east-1")
    item = ddb.get_item(TableName=gw.settings.table, Key={"pk": {"S": "rsp#" + made.id}, "sk": {"S": "rsp"}})
    assert abs(int(item["Item"]["ttl"]["N"]) - (time.time() + 2 * 86400)) < 60
    narrow, _ = KeyStore(Table(ddb, gw.settings.table)).create("narrow", models=["other"])
    with pytest.raises(openai.PermissionDeniedError) as caught:
        client(gw, narrow).responses.create(model="echo", input="x")
    assert caught.value.body["param"] == "model"  # type: ignore[index]


def test_responses_parse_with_a_pydantic_format(gw: RunningGateway) -> None:
    import pydantic

    class Echoed(pydantic.BaseModel):
        echo: str

    for model in ("echo", "pass"):
        parsed = client(gw).responses.parse(model=model, input="ping", text_format=Echoed)
        assert parsed.output_parsed == Echoed(echo="ping"), model


def test_streams_converted_from_anthropic_and_bedrock(
    gateway_factory: Any, mock: Any, native: ScriptedUpstream
) -> None:
    """Other families stream through chat too: Anthropic's events and Bedrock's ConverseStream."""
    claude = fixture("anthropic", "stream_tools")
    native.script("claude-real", Reply(sse=claude["anthropic_stream"]))
    converse = fixture("bedrock", "stream_tools")
    stream = [
        ("event", name, payload) for event in converse["converse_stream"] for name, payload in event.items()
    ]
    native.script(converse["target_model"], Reply(events=stream))
    doc = routing_doc(mock.base_url, {"claude": to(("anthropic", "claude-real"))})
    doc["providers"]["anthropic"] = {"kind": "anthropic", "base_url": native.url, "api_key": KEY_REF}
    doc["providers"]["bedrock"] = {"kind": "bedrock", "region": "us-east-1", "base_url": native.url}
    doc["models"]["nova"] = to(("bedrock", converse["target_model"]))
    gw = gateway_factory(doc=doc)
    expected = {
        "claude": (
            "Okay, let's check the weather for San Francisco, CA:",
            {"location": "San Francisco, CA", "unit": "fahrenheit"},
        ),
        "nova": ("I'll look that up.", {"sign": "WZPZ"}),
    }
    for model, (text, arguments) in expected.items():
        with client(gw).responses.stream(model=model, input="x", tools=[WEATHER]) as events:
            kinds = [event.type for event in events]
            final = events.get_final_response()
        assert final.output_text == text, model
        call = final.output[-1]
        assert call.type == "function_call" and json.loads(call.arguments) == arguments, model
        assert "response.function_call_arguments.delta" in kinds and kinds[-1] == "response.completed"
        assert final.usage is not None and final.usage.output_tokens > 0, model
