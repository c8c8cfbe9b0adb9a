"""LangChain's ``ChatOpenAI(use_responses_api=True)`` through the gateway, over HTTP (issue 13).

The mock as a chat target (the request converted) and as a Responses upstream (passed through):
a plain call, a streamed one, and a tool-using exchange (the model calls the bound tool, its result
goes back as a ``ToolMessage``, the model answers with text). Every call must reach the upstream
through ``/v1/responses`` on the gateway, as LangChain sends it.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import API_KEY, RunningGateway, routing_doc

langchain_openai = pytest.importorskip("langchain_openai")
messages = pytest.importorskip("langchain_core.messages")
tools = pytest.importorskip("langchain_core.tools")


@pytest.fixture(autouse=True)
def _no_tracing(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("LANGSMITH_TRACING", "LANGCHAIN_TRACING_V2", "LANGCHAIN_TRACING"):
        monkeypatch.delenv(name, raising=False)


def start(gateway_factory: Any, mock: Any, passthrough: bool) -> RunningGateway:
    provider = "mock-responses" if passthrough else "mock"
    models = {
        "demo": {"targets": [{"provider": provider, "model": "echo"}]},
        "demo-tools": {"targets": [{"provider": provider, "model": "tools"}]},
    }
    doc = routing_doc(mock.base_url, models)
    doc["providers"]["mock-responses"] = {**doc["providers"]["mock"], "responses": True}
    return gateway_factory(doc=doc)


def chat(gw: RunningGateway, model: str) -> Any:
    return langchain_openai.ChatOpenAI(
        model=model, base_url=gw.v1, api_key=API_KEY, use_responses_api=True, max_retries=0, timeout=30
    )


def upstream_paths(mock: Any, since: int) -> set[str]:
    return {
        r["path"] for r in mock.requests[since:] if r["path"] in ("/v1/chat/completions", "/v1/responses")
    }


@pytest.mark.parametrize("passthrough", [False, True], ids=["converted", "passthrough"])
def test_a_call_and_a_stream(gateway_factory: Any, mock: Any, passthrough: bool) -> None:
    gw = start(gateway_factory, mock, passthrough)
    before = len(mock.requests)
    answer = chat(gw, "demo").invoke("hello there")
    assert answer.text == "echo: hello there"
    assert answer.usage_metadata is not None and answer.usage_metadata["output_tokens"] > 0
    parts = list(chat(gw, "demo").stream("one two three"))
    assert "".join(part.text for part in parts) == "echo: one two three"
    assert upstream_paths(mock, before) == {"/v1/responses" if passthrough else "/v1/chat/completions"}


@pytest.mark.parametrize("passthrough", [False, True], ids=["converted", "passthrough"])
def test_a_bound_tool_round_trip(gateway_factory: Any, mock: Any, passthrough: bool) -> None:
    """The ``tools`` script calls the bound tool, then answers with text once its result is back."""
    gw = start(gateway_factory, mock, passthrough)

    @tools.tool
    def get_weather(city: str) -> str:
        """The weather in a city."""
        return f"Sunny in {city}."

    model = chat(gw, "demo-tools").bind_tools([get_weather])
    history: list[Any] = [messages.HumanMessage("What is the weather in Paris?")]
    first = model.invoke(history)
    [call] = first.tool_calls
    assert call["name"] == "get_weather" and call["args"] == {"city": "Paris"} and call["id"]
    history += [first, messages.ToolMessage(get_weather.invoke(call["args"]), tool_call_id=call["id"])]
    second = model.invoke(history)
    assert second.tool_calls == [] and second.text == "echo: What is the weather in Paris?"
    sent = mock.requests[-1]["json"]
    if passthrough:
        outputs = [item for item in sent["input"] if item.get("type") == "function_call_output"]
        assert outputs == [
            {"type": "function_call_output", "call_id": call["id"], "output": "Sunny in Paris."}
        ]
    else:
        assert sent["messages"][-1] == {
            "role": "tool",
            "tool_call_id": call["id"],
            "content": "Sunny in Paris.",
        }
