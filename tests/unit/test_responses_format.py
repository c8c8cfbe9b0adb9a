"""The Responses <-> chat converter (http/endpoints/responses_format.py) and its docs table."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from switchboard.core.schemas import ChatCompletion, ChatCompletionChunk
from switchboard.http.endpoints.responses_format import (
    LOSSY,
    EventTranslator,
    ResponsesRequest,
    ToolNames,
    Unconvertible,
    all_tools,
    dropped_tools,
    from_chat,
    input_items,
    to_chat,
    usage_of,
)

DOC = Path(__file__).resolve().parents[2] / "docs" / "providers.md"


def req(**body: Any) -> ResponsesRequest:
    return ResponsesRequest.model_validate({"model": "m", **body})


def tool_call_completion(*calls: dict[str, Any]) -> ChatCompletion:
    """A chat answer that is only these tool calls."""
    message = {"role": "assistant", "content": None, "tool_calls": list(calls)}
    return ChatCompletion.model_validate(
        {
            "id": "c",
            "object": "chat.completion",
            "created": 1,
            "model": "m",
            "choices": [{"index": 0, "message": message, "finish_reason": "tool_calls"}],
        }
    )


def chat_of(**body: Any) -> dict[str, Any]:
    request = req(**body)
    return to_chat(request, input_items(request.input), stream=False).model_dump(exclude_unset=True)


def test_string_input_and_instructions() -> None:
    body = chat_of(input="hi", instructions="Be brief.", max_output_tokens=50, temperature=0.2, user="u1")
    assert body["messages"] == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}]
    assert body["max_tokens"] == 50 and body["temperature"] == 0.2 and body["user"] == "u1"


def test_items_with_tool_calls_and_outputs() -> None:
    items = [
        {"role": "developer", "content": [{"type": "input_text", "text": "rules"}]},
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "weather?"}]},
        {"type": "reasoning", "id": "rs_1", "summary": []},
        {
            "type": "function_call",
            "call_id": "call_a",
            "name": "get_weather",
            "arguments": '{"city":"Paris"}',
        },
        {"type": "function_call", "call_id": "call_b", "name": "get_weather", "arguments": '{"city":"Rome"}'},
        {"type": "function_call_output", "call_id": "call_a", "output": "sunny"},
        {
            "type": "function_call_output",
            "call_id": "call_b",
            "output": [{"type": "input_text", "text": "rain"}],
        },
        {
            "type": "message",
            "role": "assistant",
            "content": [{"type": "output_text", "text": "Sunny and rain."}],
        },
        {
            "role": "user",
            "content": [{"type": "input_image", "image_url": "https://x/y.png", "detail": "low"}],
        },
    ]
    body = chat_of(input=items)
    assert body["messages"] == [
        {"role": "system", "content": "rules"},
        {"role": "user", "content": "weather?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_a",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
                },
                {
                    "id": "call_b",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city":"Rome"}'},
                },
            ],
        },
        {"role": "tool", "tool_call_id": "call_a", "content": "sunny"},
        {"role": "tool", "tool_call_id": "call_b", "content": "rain"},
        {"role": "assistant", "content": "Sunny and rain."},
        {
            "role": "user",
            "content": [{"type": "image_url", "image_url": {"url": "https://x/y.png", "detail": "low"}}],
        },
    ]


def test_tools_tool_choice_format_and_reasoning() -> None:
    tool = {
        "type": "function",
        "name": "f",
        "description": "d",
        "parameters": {"type": "object"},
        "strict": True,
    }
    schema = {"type": "object", "properties": {"a": {"type": "string"}}}
    body = chat_of(
        input="x",
        tools=[tool],
        tool_choice={"type": "function", "name": "f"},
        parallel_tool_calls=False,
        text={"format": {"type": "json_schema", "name": "out", "schema": schema, "strict": True}},
        reasoning={"effort": "low", "summary": "auto"},
    )
    assert body["tools"] == [
        {
            "type": "function",
            "function": {"name": "f", "description": "d", "parameters": {"type": "object"}, "strict": True},
        }
    ]
    assert body["tool_choice"] == {"type": "function", "function": {"name": "f"}}
    assert body["parallel_tool_calls"] is False
    assert body["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "out", "schema": schema, "strict": True},
    }
    assert body["reasoning_effort"] == "low"


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"tools": [{"type": "computer_use_preview"}]}, "tools[0].type"),
        ({"tools": [{"type": "web_search"}], "tool_choice": {"type": "web_search_preview"}}, "tool_choice"),
        ({"tools": [{"type": "file_search"}], "tool_choice": {"type": "file_search"}}, "tool_choice"),
        ({"tools": [{"type": "web_search"}], "tool_choice": "required"}, "tool_choice"),
        (
            {
                "tools": [
                    {"type": "namespace", "name": "n", "description": "d", "tools": [{"type": "local_shell"}]}
                ]
            },
            "tools[0].tools[0].type",
        ),
        ({"input": [{"role": "user", "content": [{"type": "input_file", "file_id": "f"}]}]}, "input"),
        ({"tools": [{"type": "namespace", "name": "n", "description": "d", "tools": 5}]}, "tools[0].tools"),
        ({"input": [{"type": "additional_tools", "tools": [{"type": "namespace", "tools": 5}]}]}, "input"),
        ({"input": [{"type": "item_reference", "id": "x"}]}, "input"),
        ({"background": True}, "background"),
    ],
)
def test_what_has_no_chat_form_names_its_param(body: dict[str, Any], param: str) -> None:
    request = req(**{"input": "x", **body})
    with pytest.raises(Unconvertible) as caught:
        to_chat(request, input_items(request.input), stream=False)
    assert caught.value.param == param


AGENTS = {
    "type": "namespace",
    "name": "multi_agent_v1",
    "description": "Sub-agents.",
    "tools": [
        {
            "type": "function",
            "name": "spawn_agent",
            "description": "Spawn.",
            "parameters": {"type": "object"},
        },
        {"type": "function", "name": "close_agent", "parameters": {"type": "object"}},
    ],
}
PLAIN = {"type": "function", "name": "exec_command", "parameters": {"type": "object"}}


def test_offered_hosted_tools_are_dropped_and_named() -> None:
    """Codex's default tools: web_search is dropped (not an error), the namespace's members become
    chat functions named ``<namespace>__<name>``."""
    tools = [PLAIN, AGENTS, {"type": "web_search", "external_web_access": False}, {"type": "mcp"}]
    body = chat_of(input="x", tools=tools, tool_choice="auto")
    assert [t["function"]["name"] for t in body["tools"]] == [
        "exec_command",
        "multi_agent_v1__spawn_agent",
        "multi_agent_v1__close_agent",
    ]
    assert body["tools"][1]["function"] == {
        "name": "multi_agent_v1__spawn_agent",
        "description": "Spawn.",
        "parameters": {"type": "object"},
    }
    assert body["tool_choice"] == "auto"
    assert dropped_tools(req(input="x", tools=tools)) == ["web_search", "mcp"]
    only = chat_of(input="x", tools=[{"type": "web_search"}], tool_choice="auto")
    assert "tools" not in only and "tool_choice" not in only  # chat refuses tool_choice without tools


def test_a_namespace_call_goes_both_ways() -> None:
    """History calls with a ``namespace`` become the chat name; chat calls of it come back with
    their ``namespace`` and own name, buffered and streamed."""
    history = [
        {"type": "message", "role": "user", "content": "spawn"},
        {
            "type": "function_call",
            "call_id": "c1",
            "namespace": "multi_agent_v1",
            "name": "spawn_agent",
            "arguments": "{}",
        },
        {"type": "function_call_output", "call_id": "c1", "output": "ok"},
    ]
    body = chat_of(input=history, tools=[AGENTS])
    assert body["messages"][1]["tool_calls"][0]["function"]["name"] == "multi_agent_v1__spawn_agent"
    request = req(input="x", tools=[PLAIN, AGENTS])
    call = {
        "id": "call_9",
        "type": "function",
        "function": {"name": "multi_agent_v1__close_agent", "arguments": "{}"},
    }
    plain = {"id": "call_8", "type": "function", "function": {"name": "exec_command", "arguments": "{}"}}
    completion = tool_call_completion(call, plain)
    out = from_chat(completion, request, response_id="resp_1", created_at=1)["output"]
    assert [(o.get("namespace"), o["name"], o["call_id"]) for o in out] == [
        ("multi_agent_v1", "close_agent", "call_9"),
        (None, "exec_command", "call_8"),
    ]
    translator = EventTranslator(request, "resp_1", 1)
    events = translator.feed(chunk({"role": "assistant", "tool_calls": [{"index": 0, **call}]}, "tool_calls"))
    events += translator.finish()
    data = [json.loads(e.data) for e in events]
    done = next(d for d in data if d["type"] == "response.function_call_arguments.done")
    assert done["name"] == "close_agent"
    final = data[-1]["response"]["output"][0]
    assert final["namespace"] == "multi_agent_v1" and final["name"] == "close_agent"


def test_namespaced_names_stay_valid_and_distinct() -> None:
    """A name too long or clashing with a plain function gets a hashed form, still mapped back."""
    long_ns = {**AGENTS, "name": "n" * 60}
    clash = {"type": "function", "name": "multi_agent_v1__spawn_agent", "parameters": {"type": "object"}}
    body = chat_of(input="x", tools=[clash, AGENTS, long_ns])
    names = [t["function"]["name"] for t in body["tools"]]
    assert len(set(names)) == len(names) == 5
    assert all(re.fullmatch(r"[A-Za-z0-9_-]{1,64}", name) for name in names)
    assert names[0] == "multi_agent_v1__spawn_agent" and names[1] != names[0]


def test_input_items_get_ids_and_parts() -> None:
    items = input_items("hi")
    assert items[0]["id"].startswith("msg_") and items[0]["content"] == [{"type": "input_text", "text": "hi"}]


def test_from_chat_text_tools_and_usage() -> None:
    completion = ChatCompletion.model_validate(
        {
            "id": "chatcmpl-1",
            "created": 1,
            "model": "up",
            "choices": [
                {
                    "index": 0,
                    "finish_reason": "tool_calls",
                    "message": {
                        "role": "assistant",
                        "content": "Let me check.",
                        "tool_calls": [
                            {
                                "id": "call_1",
                                "type": "function",
                                "function": {"name": "f", "arguments": '{"a":1}'},
                            }
                        ],
                    },
                }
            ],
            "usage": {
                "prompt_tokens": 10,
                "completion_tokens": 5,
                "total_tokens": 15,
                "prompt_tokens_details": {"cached_tokens": 4},
            },
        }
    )
    response = from_chat(completion, req(input="x"), response_id="resp_1", created_at=7)
    assert response["status"] == "completed" and response["model"] == "up"
    assert [item["type"] for item in response["output"]] == ["message", "function_call"]
    assert response["output"][0]["content"][0]["text"] == "Let me check."
    assert response["output"][1]["call_id"] == "call_1" and response["output"][1]["arguments"] == '{"a":1}'
    assert (
        response["usage"]["input_tokens"] == 10
        and response["usage"]["input_tokens_details"]["cached_tokens"] == 4
    )
    assert usage_of(response["usage"]).prompt_tokens_details == {"cached_tokens": 4}  # type: ignore[union-attr]


def test_length_is_incomplete() -> None:
    completion = ChatCompletion.model_validate(
        {
            "id": "c",
            "created": 1,
            "model": "up",
            "choices": [
                {"index": 0, "finish_reason": "length", "message": {"role": "assistant", "content": "a"}}
            ],
        }
    )
    response = from_chat(completion, req(input="x"), response_id="resp_1", created_at=7)
    assert response["status"] == "incomplete" and response["incomplete_details"] == {
        "reason": "max_output_tokens"
    }


def chunk(
    delta: dict[str, Any], finish: str | None = None, usage: dict[str, Any] | None = None
) -> ChatCompletionChunk:
    choices = [] if usage is not None else [{"index": 0, "delta": delta, "finish_reason": finish}]
    return ChatCompletionChunk.model_validate(
        {"id": "c", "created": 1, "model": "up", "choices": choices, "usage": usage}
    )


def test_stream_events_in_order_with_sequence_numbers() -> None:
    translator = EventTranslator(req(input="x"), "resp_1", 7)
    events = []
    for item in [
        chunk({"role": "assistant", "content": "Hel"}),
        chunk({"content": "lo"}),
        chunk({"tool_calls": [{"index": 0, "id": "call_1", "function": {"name": "f", "arguments": ""}}]}),
        chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"a":'}}]}),
        chunk({"tool_calls": [{"index": 0, "function": {"arguments": "1}"}}]}, "tool_calls"),
        chunk({}, usage={"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}),
    ]:
        events += translator.feed(item)
    events += translator.finish()
    data = [json.loads(e.data) for e in events]
    assert [d["sequence_number"] for d in data] == list(range(len(data)))
    assert [e.event for e in events] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
        "response.output_text.delta",
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.output_item.added",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.done",
        "response.output_item.done",
        "response.completed",
    ]
    final = data[-1]["response"]
    assert final["usage"]["input_tokens"] == 3 and final["usage"]["output_tokens"] == 4
    assert final["output"][0]["content"][0]["text"] == "Hello"
    assert final["output"][1]["arguments"] == '{"a":1}'
    assert data[12]["arguments"] == '{"a":1}'


def test_the_documented_lossy_table_matches_the_code() -> None:
    """docs/providers.md lists exactly the converter's LOSSY points, in order."""
    section = DOC.read_text().split("## The Responses API (`/v1/responses`)")[1].split("\n## ")[0]
    rows = [
        tuple(cell.strip() for cell in match.groups())
        for match in re.finditer(r"^\| (.+?) \| (.+?) \|$", section, re.MULTILINE)
    ][1:]  # the header
    assert rows == list(LOSSY)


def test_reasoning_text_becomes_a_reasoning_item() -> None:
    translator = EventTranslator(req(input="x"), "resp_1", 7)
    events = translator.feed(chunk({"role": "assistant", "reasoning_content": "Think"}))
    events += translator.feed(chunk({"reasoning_content": "ing."}))
    events += translator.feed(chunk({"content": "Done."}, "stop"))
    events += translator.finish()
    kinds = [e.event for e in events]
    assert kinds[2:6] == [
        "response.output_item.added",
        "response.reasoning_text.delta",
        "response.reasoning_text.delta",
        "response.reasoning_text.done",
    ]
    final = json.loads(events[-1].data)["response"]
    assert (
        final["output"][0]["type"] == "reasoning" and final["output"][0]["content"][0]["text"] == "Thinking."
    )
    assert final["output"][1]["content"][0]["text"] == "Done."
    completion = ChatCompletion.model_validate(
        {
            "id": "c",
            "created": 1,
            "model": "up",
            "choices": [
                {
                    "index": 0,
                    "finish_reason": "stop",
                    "message": {"role": "assistant", "content": "a", "reasoning_content": "hm"},
                }
            ],
        }
    )
    response = from_chat(completion, req(input="x"), response_id="resp_1", created_at=7)
    assert [item["type"] for item in response["output"]] == ["reasoning", "message"]


def test_interleaved_parallel_calls_each_get_their_deltas() -> None:
    """Chat chunks of two calls interleaved (index 0, 1, 0, 1): each call's argument deltas carry
    its own item id and output index, and each ``.done`` has its whole arguments."""
    translator = EventTranslator(req(input="x"), "resp_1", 1)
    events = translator.feed(chunk({"content": "Both."}))
    for delta in (
        {"tool_calls": [{"index": 0, "id": "call_a", "function": {"name": "f", "arguments": '{"ci'}}]},
        {"tool_calls": [{"index": 1, "id": "call_b", "function": {"name": "g", "arguments": '{"to'}}]},
        {"tool_calls": [{"index": 0, "function": {"arguments": 'ty":"Paris"}'}}]},
        {"tool_calls": [{"index": 1, "function": {"arguments": 'wn":"Rome"}'}}]},
    ):
        events += translator.feed(chunk(delta))
    events += translator.feed(chunk({}, "tool_calls"))
    events += translator.finish()
    data = [json.loads(e.data) for e in events]
    added = {
        d["item"]["call_id"]: (d["item"]["id"], d["output_index"])
        for d in data
        if d["type"] == "response.output_item.added" and d["item"]["type"] == "function_call"
    }
    assert added["call_a"][1] == 1 and added["call_b"][1] == 2
    deltas: dict[tuple[str, int], str] = {}
    for d in data:
        if d["type"] == "response.function_call_arguments.delta":
            key = (d["item_id"], d["output_index"])
            deltas[key] = deltas.get(key, "") + d["delta"]
    assert deltas == {added["call_a"]: '{"city":"Paris"}', added["call_b"]: '{"town":"Rome"}'}
    done = {
        d["item_id"]: d["arguments"] for d in data if d["type"] == "response.function_call_arguments.done"
    }
    assert done == {added["call_a"][0]: '{"city":"Paris"}', added["call_b"][0]: '{"town":"Rome"}'}
    closed = [d["output_index"] for d in data if d["type"] == "response.output_item.done"]
    assert closed == [0, 1, 2]
    assert [d["sequence_number"] for d in data] == list(range(len(data)))
    final = data[-1]["response"]["output"]
    assert [o.get("arguments") for o in final] == [None, '{"city":"Paris"}', '{"town":"Rome"}']


REASONED = [
    {"type": "message", "role": "user", "content": "weather?"},
    {"type": "reasoning", "id": "rs_1", "summary": [{"type": "summary_text", "text": "Need the tool."}]},
    {"type": "function_call", "call_id": "c1", "name": "get_weather", "arguments": "{}"},
    {"type": "function_call_output", "call_id": "c1", "output": "sunny"},
    {
        "type": "reasoning",
        "id": "rs_2",
        "summary": [{"type": "summary_text", "text": "short"}],
        "content": [{"type": "reasoning_text", "text": "It is sunny, say so."}],
    },
    {"type": "message", "role": "assistant", "content": "Sunny."},
    {"type": "reasoning", "id": "rs_3", "summary": [], "encrypted_content": "gAAA"},
    {"type": "message", "role": "user", "content": "thanks"},
]


def test_reasoning_items_go_to_a_target_that_reasons(caplog: pytest.LogCaptureFixture) -> None:
    """Each reasoning item's text (``content``, else ``summary``) rides on the assistant message
    after it as ``reasoning_content``; an opaque one (``encrypted_content`` only) is dropped, logged."""
    request = req(input=REASONED)
    with caplog.at_level("INFO", logger="switchboard.endpoints.responses"):
        body = to_chat(request, input_items(request.input), stream=False, reasoning=True).model_dump(
            exclude_unset=True
        )
    assistants = [m for m in body["messages"] if m["role"] == "assistant"]
    assert [m.get("reasoning_content") for m in assistants] == ["Need the tool.", "It is sunny, say so."]
    assert assistants[0]["tool_calls"][0]["id"] == "c1" and assistants[1]["content"] == "Sunny."
    assert "dropped 1 reasoning input item(s)" in caplog.text


def test_reasoning_items_are_dropped_for_a_target_that_does_not_reason(
    caplog: pytest.LogCaptureFixture,
) -> None:
    request = req(input=REASONED)
    with caplog.at_level("INFO", logger="switchboard.endpoints.responses"):
        body = to_chat(request, input_items(request.input), stream=False).model_dump(exclude_unset=True)
    assert not any("reasoning_content" in m for m in body["messages"])
    assert "dropped 3 reasoning input item(s): the target does not reason" in caplog.text


def test_a_custom_tool_is_a_chat_function_of_its_input() -> None:
    """A custom (free-form) tool, here one of an ``additional_tools`` item: a chat function with
    one string argument; its call comes back as a ``custom_tool_call`` with the input unwrapped."""
    patch = {"type": "custom", "name": "apply_patch", "description": "Patch files."}
    items = [
        {"type": "additional_tools", "role": "developer", "tools": [patch]},
        {"type": "message", "role": "user", "content": "fix it"},
        {"type": "custom_tool_call", "call_id": "c0", "name": "apply_patch", "input": "*** Begin"},
        {"type": "custom_tool_call_output", "call_id": "c0", "output": "ok"},
    ]
    request = req(input=items)
    body = to_chat(request, input_items(request.input), stream=False).model_dump(exclude_unset=True)
    [tool] = body["tools"]
    assert tool["function"]["name"] == "apply_patch"
    assert tool["function"]["parameters"]["properties"]["input"]["type"] == "string"
    assert body["messages"][1]["tool_calls"][0]["function"]["arguments"] == '{"input": "*** Begin"}'
    assert body["messages"][2] == {"role": "tool", "tool_call_id": "c0", "content": "ok"}
    call = {
        "id": "c1",
        "type": "function",
        "function": {"name": "apply_patch", "arguments": '{"input":"*** End"}'},
    }
    completion = tool_call_completion(call)
    names = ToolNames(all_tools(request, input_items(request.input)))
    [item] = from_chat(completion, request, response_id="resp_1", created_at=1, names=names)["output"]
    assert {k: item[k] for k in ("type", "call_id", "name", "input")} == {
        "type": "custom_tool_call",
        "call_id": "c1",
        "name": "apply_patch",
        "input": "*** End",
    }
    assert "namespace" not in item and "arguments" not in item
