"""Codex CLI and the OpenAI Agents SDK through /v1/responses, over HTTP (issue 13).

* The recorded requests (tests/fixtures/agents: Codex's, with its default config and with the
  config for chat-only targets, the Agents SDK's four) are replayed byte for byte, with their
  headers, to an OpenAI-compatible chat target (the request converted through chat) and to a
  Responses upstream (passed through). Every answer, JSON or event, must validate against OpenAI's
  Responses schemas. Codex's default request carries the built-in ``web_search`` (dropped for a
  chat target, and said so in ``x-switchboard-dropped-tools``) and a ``namespace`` tool (its
  functions become chat tools, and their calls come back with their ``namespace``).
* The Agents SDK (Python) runs a tool-using agent through the gateway, buffered and streamed: the
  model (the mock's ``tools`` script) calls ``get_weather``, the SDK runs it and sends its output
  back, and the agent completes with text.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from switchboard.http.app import create_app

from tests.conftest import API_KEY, RunningGateway, routing_doc
from tests.contract.test_openapi_contract import SPEC_PATH, violations
from tests.native_upstream import Reply

FIXTURES = Path(__file__).parents[1] / "fixtures" / "agents"
KEY_REF = {"ssm": "/switchboard/secrets/mock"}
# What the HTTP client sets for itself, or what the recording redacted.
_NOT_REPLAYED = frozenset({"host", "content-length", "authorization", "connection", "accept-encoding"})

pytestmark = [
    pytest.mark.skipif(
        not any(getattr(route, "path", None) == "/v1/responses" for route in create_app().app.routes),
        reason="this build has no /v1/responses",
    ),
    pytest.mark.skipif(not SPEC_PATH.is_file(), reason=f"OpenAI OpenAPI spec not found at {SPEC_PATH}"),
]

CODEX = ["codex_exec_request", "codex_exec_tool_turn"]
AGENTS_SDK = [
    "agents_sdk_request",
    "agents_sdk_tool_output",
    "agents_sdk_stream_request",
    "agents_sdk_stream_tool_output",
]


def start(gateway_factory: Any, mock: Any, passthrough: bool) -> RunningGateway:
    """``demo`` and ``gpt-6.2-sol`` (echo), ``demo-tools`` (calls its first tool, then answers
    text) on the mock as a chat upstream, or, with ``passthrough``, as a Responses upstream."""
    provider = "mock-responses" if passthrough else "mock"
    models = {
        "demo": {"targets": [{"provider": provider, "model": "echo"}]},
        "demo-tools": {"targets": [{"provider": provider, "model": "tools"}]},
        "gpt-6.2-sol": {"targets": [{"provider": provider, "model": "echo"}]},  # a name Codex knows
    }
    doc = routing_doc(mock.base_url, models)
    doc["providers"]["mock-responses"] = {**doc["providers"]["mock"], "responses": True}
    return gateway_factory(doc=doc)


def recorded(name: str) -> tuple[dict[str, Any], bytes]:
    meta = json.loads((FIXTURES / f"{name}.json").read_text())
    return meta, (FIXTURES / meta["body_file"]).read_bytes()


def replay(gw: RunningGateway, name: str) -> tuple[httpx.Response, Any]:
    """The recorded request, byte for byte, with its headers (the gateway's key in place of the
    redacted one). Returns the response and its JSON body, or its events for a stream."""
    meta, body = recorded(name)
    headers = {k: v for k, v in meta["headers"].items() if k.lower() not in _NOT_REPLAYED}
    headers["authorization"] = f"Bearer {API_KEY}"
    url = gw.base_url + meta["path"] + (f"?{meta['query']}" if meta["query"] else "")
    with httpx.stream("POST", url, headers=headers, content=body, timeout=30) as response:
        if not response.headers.get("content-type", "").startswith("text/event-stream"):
            response.read()
            return response, response.json()
        events: list[Any] = []
        name_line = None
        for line in response.iter_lines():
            if line.startswith("event: "):
                name_line = line[7:]
            elif line.startswith("data: "):
                data = json.loads(line[6:])
                assert data["type"] == name_line, "each event's name is its data's type"
                events.append(data)
    return response, events


def conforms(schema: str, instance: Any) -> None:
    problems = violations(schema, instance)
    assert not problems, f"{schema}:\n  " + "\n  ".join(problems) + f"\n{json.dumps(instance)[:1500]}"


def check_stream(events: list[dict[str, Any]]) -> dict[str, Any]:
    """OpenAI's Responses event grammar; returns the completed response."""
    for event in events:
        conforms("ResponseStreamEvent", event)
    kinds = [event["type"] for event in events]
    assert kinds[:2] == ["response.created", "response.in_progress"], kinds
    assert kinds[-1] == "response.completed", kinds
    assert "error" not in kinds and "response.failed" not in kinds
    numbers = [event["sequence_number"] for event in events]
    assert numbers == sorted(numbers) and len(set(numbers)) == len(numbers)
    added = [e["output_index"] for e in events if e["type"] == "response.output_item.added"]
    done = [e["output_index"] for e in events if e["type"] == "response.output_item.done"]
    assert added == done and added
    final = events[-1]["response"]
    assert final["status"] == "completed"
    return dict(final)


def output_text(response: dict[str, Any]) -> str:
    return "".join(
        part.get("text", "")
        for item in response["output"]
        if item["type"] == "message"
        for part in item["content"]
        if part["type"] == "output_text"
    )


def calls(response: dict[str, Any]) -> list[dict[str, Any]]:
    return [item for item in response["output"] if item["type"] == "function_call"]


# ----------------------------------------------------------------- replays


def test_a_recorded_codex_turn_passes_through_whole(gateway_factory, mock) -> None:  # type: ignore[no-untyped-def]
    """Codex's default request (built-in ``web_search``, a ``namespace`` tool) to a Responses upstream."""
    gw = start(gateway_factory, mock, passthrough=True)
    response, events = replay(gw, "codex_exec_request")
    assert response.status_code == 200, events
    final = check_stream(events)
    assert output_text(final) == "echo: Say hi in two words."
    assert final["usage"]["output_tokens"] > 0
    sent = mock.requests[-1]
    _meta, body = recorded("codex_exec_request")
    assert sent["path"] == "/v1/responses"
    assert sent["json"] == {**json.loads(body), "model": "echo"}  # only the model replaced


@pytest.mark.parametrize("name", CODEX)
def test_a_recorded_default_codex_turn_through_a_chat_target(gateway_factory, mock, name: str) -> None:  # type: ignore[no-untyped-def]
    """Codex's default config (``web_search`` offered, the ``multi_agent_v1`` namespace) served by a
    chat target: the built-in is dropped and said so, the namespace's functions become chat tools."""
    gw = start(gateway_factory, mock, passthrough=False)
    response, events = replay(gw, name)
    assert response.status_code == 200, events
    assert response.headers["x-switchboard-dropped-tools"] == "web_search"
    final = check_stream(events)
    assert output_text(final).startswith("echo: ")
    sent = mock.requests[-1]
    assert sent["path"] == "/v1/chat/completions"
    names = [t["function"]["name"] for t in sent["json"]["tools"]]
    assert names[:4] == ["exec_command", "write_stdin", "request_user_input", "view_image"]
    assert {"multi_agent_v1__spawn_agent", "multi_agent_v1__wait_agent", "get_goal"} <= set(names)
    assert all(t["type"] == "function" for t in sent["json"]["tools"])
    assert sent["json"]["tool_choice"] == "auto"


def namespace_call_chunks(name: str, arguments: str) -> list[dict[str, Any]]:
    """A chat stream calling ``name`` (its arguments in two chunks), with usage."""
    base = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "compat"}

    def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {**base, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}

    call = {"index": 0, "id": "call_ns1", "type": "function", "function": {"name": name, "arguments": ""}}
    half = len(arguments) // 2
    return [
        chunk({"role": "assistant", "tool_calls": [call]}),
        chunk({"tool_calls": [{"index": 0, "function": {"arguments": arguments[:half]}}]}),
        chunk({"tool_calls": [{"index": 0, "function": {"arguments": arguments[half:]}}]}),
        chunk({}, "tool_calls"),
        {**base, "choices": [], "usage": {"prompt_tokens": 9, "completion_tokens": 4, "total_tokens": 13}},
    ]


def test_a_namespace_call_reaches_codex_with_its_namespace(gateway_factory, mock, native) -> None:  # type: ignore[no-untyped-def]
    """The chat target calls ``multi_agent_v1__spawn_agent``: Codex gets a ``function_call`` item
    with ``namespace: multi_agent_v1`` and ``name: spawn_agent``, valid by the spec's schemas, in
    the added and done events and in the completed response."""
    doc = routing_doc(mock.base_url, {"demo": {"targets": [{"provider": "compat", "model": "compat"}]}})
    doc["providers"]["compat"] = {"kind": "openai", "base_url": native.url + "/v1", "api_key": KEY_REF}
    gw = gateway_factory(doc=doc)
    native.script(
        "compat", Reply(chunks=namespace_call_chunks("multi_agent_v1__spawn_agent", '{"message":"hi"}'))
    )
    response, events = replay(gw, "codex_exec_request")
    assert response.status_code == 200, events
    final = check_stream(events)
    [call] = calls(final)
    assert (call["namespace"], call["name"], call["call_id"]) == ("multi_agent_v1", "spawn_agent", "call_ns1")
    assert json.loads(call["arguments"]) == {"message": "hi"}
    done = next(e for e in events if e["type"] == "response.function_call_arguments.done")
    assert done["name"] == "spawn_agent" and done["arguments"] == '{"message":"hi"}'
    added = next(e for e in events if e["type"] == "response.output_item.added")
    assert added["item"]["namespace"] == "multi_agent_v1"
    sent = native.requests[-1]["json"]
    assert "multi_agent_v1__spawn_agent" in [t["function"]["name"] for t in sent["tools"]]


def test_codex_with_a_model_it_knows_through_a_chat_target(gateway_factory, mock) -> None:  # type: ignore[no-untyped-def]
    """For a model name it knows, Codex sends its tools in an ``additional_tools`` input item
    (namespaces of functions and the custom tool ``exec``): they become the chat tools."""
    gw = start(gateway_factory, mock, passthrough=False)
    response, events = replay(gw, "codex_known_model_request")
    assert response.status_code == 200, events
    assert output_text(check_stream(events)) == "echo: say hi"
    tools = {t["function"]["name"]: t["function"] for t in mock.requests[-1]["json"]["tools"]}
    assert {"functions__exec", "functions__wait", "collaboration__spawn_agent", "clock__sleep"} <= set(tools)
    assert tools["functions__exec"]["parameters"]["required"] == ["input"]
    assert "lark grammar" in tools["functions__exec"]["description"]


def test_a_custom_tool_call_reaches_codex_and_its_output_comes_back(gateway_factory, mock, native) -> None:  # type: ignore[no-untyped-def]
    """The chat target calls ``functions__exec`` with ``{"input": <JS>}``: Codex gets a
    ``custom_tool_call`` (namespace ``functions``, name ``exec``, the JS as ``input``), with the
    custom tool's input events, all valid by the spec; the next turn's ``custom_tool_call`` and
    ``custom_tool_call_output`` go back as the chat tool call and its tool message."""
    doc = routing_doc(
        mock.base_url, {"gpt-6.2-sol": {"targets": [{"provider": "compat", "model": "compat"}]}}
    )
    doc["providers"]["compat"] = {"kind": "openai", "base_url": native.url + "/v1", "api_key": KEY_REF}
    gw = gateway_factory(doc=doc)
    script = 'text("hi from exec: " + (6*7))'
    native.script(
        "compat", Reply(chunks=namespace_call_chunks("functions__exec", json.dumps({"input": script})))
    )
    response, events = replay(gw, "codex_known_model_request")
    assert response.status_code == 200, events
    final = check_stream(events)
    [call] = final["output"]
    assert call["type"] == "custom_tool_call"
    assert (call["namespace"], call["name"], call["input"]) == ("functions", "exec", script)
    kinds = [e["type"] for e in events]
    assert kinds.index("response.custom_tool_call_input.delta") < kinds.index(
        "response.custom_tool_call_input.done"
    )
    assert next(e for e in events if e["type"] == "response.custom_tool_call_input.done")["input"] == script
    # the next turn, as Codex sends it: the call and its output appended
    _meta, raw = recorded("codex_known_model_request")
    body = json.loads(raw)
    body["input"] += [
        {k: call[k] for k in ("type", "call_id", "namespace", "name", "input")},
        {"type": "custom_tool_call_output", "call_id": call["call_id"], "output": "hi from exec: 42"},
    ]
    native.script("compat", Reply(chunks=namespace_call_chunks("functions__exec", "{}")[-1:]))
    httpx.post(gw.v1 + "/responses", json=body, headers=gw.headers(), timeout=30)
    sent = native.requests[-1]["json"]["messages"]
    assert sent[-2]["tool_calls"][0]["function"] == {
        "name": "functions__exec",
        "arguments": json.dumps({"input": script}),
    }
    assert sent[-1] == {"role": "tool", "tool_call_id": call["call_id"], "content": "hi from exec: 42"}


def test_a_forced_built_in_tool_is_a_clear_400_for_a_chat_target(gateway_factory, mock) -> None:  # type: ignore[no-untyped-def]
    """Offered, ``web_search`` is dropped; forced by ``tool_choice``, it is refused before any call."""
    gw = start(gateway_factory, mock, passthrough=False)
    before = len(mock.requests)
    body = {
        "model": "demo",
        "input": "search",
        "tools": [{"type": "web_search_preview"}],
        "tool_choice": {"type": "web_search_preview"},
    }
    response = httpx.post(gw.v1 + "/responses", json=body, headers=gw.headers(), timeout=30)
    assert response.status_code == 400
    conforms("ErrorResponse", response.json())
    assert response.json()["error"]["param"] == "tool_choice"
    assert len(mock.requests) == before
    del body["tool_choice"]
    response = httpx.post(gw.v1 + "/responses", json=body, headers=gw.headers(), timeout=30)
    assert response.status_code == 200, response.text
    assert response.headers["x-switchboard-dropped-tools"] == "web_search_preview"
    conforms("Response", response.json())
    assert "tools" not in mock.requests[-1]["json"]


def test_built_in_tools_pass_through_untouched(gateway_factory, mock) -> None:  # type: ignore[no-untyped-def]
    gw = start(gateway_factory, mock, passthrough=True)
    body = {"model": "demo", "input": "search", "tools": [{"type": "web_search"}]}
    response = httpx.post(gw.v1 + "/responses", json=body, headers=gw.headers(), timeout=30)
    assert response.status_code == 200, response.text
    assert "x-switchboard-dropped-tools" not in response.headers
    assert mock.requests[-1]["json"]["tools"] == [{"type": "web_search"}]


@pytest.mark.parametrize("passthrough", [False, True], ids=["converted", "passthrough"])
def test_a_recorded_codex_turn_with_the_chat_config(gateway_factory, mock, passthrough: bool) -> None:  # type: ignore[no-untyped-def]
    gw = start(gateway_factory, mock, passthrough)
    response, events = replay(gw, "codex_chat_config_request")
    assert response.status_code == 200, events
    final = check_stream(events)
    assert output_text(final).startswith("echo: Run echo hello from codex")
    sent = mock.requests[-1]
    if passthrough:
        assert sent["path"] == "/v1/responses"
    else:
        assert sent["path"] == "/v1/chat/completions"
        roles = [m["role"] for m in sent["json"]["messages"]]
        assert len(roles) == 4 and roles[-2:] == ["user", "user"]  # Codex's two developer turns first
        assert set(roles[:2]) <= {"system", "developer"}
        names = [t["function"]["name"] for t in sent["json"]["tools"]]
        assert names[:2] == ["exec_command", "write_stdin"] and len(names) == 7


@pytest.mark.parametrize("passthrough", [False, True], ids=["converted", "passthrough"])
def test_a_recorded_codex_tool_turn_keeps_its_history(gateway_factory, mock, passthrough: bool) -> None:  # type: ignore[no-untyped-def]
    gw = start(gateway_factory, mock, passthrough)
    response, events = replay(gw, "codex_chat_config_tool_turn")
    assert response.status_code == 200, events
    final = check_stream(events)
    assert output_text(final).startswith("echo: Run echo hello from codex")
    if not passthrough:
        messages = mock.requests[-1]["json"]["messages"]
        call = next(m for m in messages if m["role"] == "assistant" and m.get("tool_calls"))
        assert call["tool_calls"][0]["function"] == {
            "name": "exec_command",
            "arguments": '{"cmd":"echo hello from codex"}',
        }
        result = next(m for m in messages if m["role"] == "tool")
        assert result["tool_call_id"] == call["tool_calls"][0]["id"]
        assert "hello from codex" in result["content"]


@pytest.mark.parametrize("passthrough", [False, True], ids=["converted", "passthrough"])
@pytest.mark.parametrize("name", AGENTS_SDK)
def test_a_recorded_agents_sdk_request(gateway_factory, mock, name: str, passthrough: bool) -> None:  # type: ignore[no-untyped-def]
    gw = start(gateway_factory, mock, passthrough)
    response, answer = replay(gw, name)
    assert response.status_code == 200, answer
    final = check_stream(answer) if "stream" in name else answer
    if "stream" not in name:
        conforms("Response", final)
    if name.endswith("tool_output"):  # the tool ran: the model answers with text
        assert calls(final) == [] and output_text(final) == "echo: What is the weather in Paris?"
    else:  # the model calls the agent's tool
        [call] = calls(final)
        assert call["name"] == "get_weather" and json.loads(call["arguments"]) == {"city": "Paris"}
    assert response.headers["x-switchboard-provider"] == ("mock-responses" if passthrough else "mock")


# ----------------------------------------------------------------- the Agents SDK, live


def run_agent(gw: RunningGateway, streamed: bool) -> Any:
    from agents import (
        Agent,
        OpenAIResponsesModel,
        Runner,
        function_tool,
        set_tracing_disabled,
    )
    from openai import AsyncOpenAI

    set_tracing_disabled(True)
    ran: list[str] = []

    @function_tool
    def get_weather(city: str) -> str:
        """The weather in a city."""
        ran.append(city)
        return f"Sunny in {city}, 21 C."

    async def main() -> Any:
        async with AsyncOpenAI(base_url=gw.v1, api_key=API_KEY, max_retries=0) as client:
            model = OpenAIResponsesModel("demo-tools", client)  # what the SDK's default model is
            agent = Agent(name="weather", instructions="Use the tool.", tools=[get_weather], model=model)
            if not streamed:
                return await Runner.run(agent, "What is the weather in Paris?", max_turns=4)
            result = Runner.run_streamed(agent, "What is the weather in Paris?", max_turns=4)
            async for _event in result.stream_events():
                pass
            return result

    result = asyncio.run(main())
    assert ran == ["Paris"]  # the agent got the tool call and ran its tool, once
    return result


@pytest.mark.parametrize("streamed", [False, True], ids=["run", "run_streamed"])
@pytest.mark.parametrize("passthrough", [False, True], ids=["converted", "passthrough"])
def test_an_agents_sdk_agent_calls_its_tool_and_completes(  # type: ignore[no-untyped-def]
    gateway_factory, mock, streamed: bool, passthrough: bool
) -> None:
    gw = start(gateway_factory, mock, passthrough)
    result = run_agent(gw, streamed)
    kinds = [type(item).__name__ for item in result.new_items]
    assert kinds == ["ToolCallItem", "ToolCallOutputItem", "MessageOutputItem"]
    assert result.final_output == "echo: What is the weather in Paris?"
    sent = [r for r in mock.requests if r["path"] in ("/v1/chat/completions", "/v1/responses")][-2:]
    assert len(sent) == 2 and all(
        r["path"] == ("/v1/responses" if passthrough else "/v1/chat/completions") for r in sent
    )
