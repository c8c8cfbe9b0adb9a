"""The mock's behaviours for agents and the legacy endpoint: ``tools`` ends after a tool result,
``reasoning`` sends ``reasoning_content``, and ``POST /v1/completions`` answers text completions."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest_asyncio
from switchboard.devtools.mockupstream import MockUpstream

ASK = [{"role": "user", "content": "weather in Paris?"}]
TOOLS = [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}]


@pytest_asyncio.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with MockUpstream() as mock, httpx.AsyncClient(base_url=mock.base_url, timeout=5) as http:
        yield http


async def data_events(client: httpx.AsyncClient, path: str, body: dict[str, Any]) -> list[Any]:
    async with client.stream("POST", path, json={**body, "stream": True}) as response:
        assert response.status_code == 200
        lines = [line[6:] async for line in response.aiter_lines() if line.startswith("data: ")]
    assert lines[-1] == "[DONE]"
    return [json.loads(line) for line in lines[:-1]]


async def test_tools_calls_until_a_tool_result_then_answers_text(client: httpx.AsyncClient) -> None:
    first = (
        await client.post("/chat/completions", json={"model": "tools", "messages": ASK, "tools": TOOLS})
    ).json()
    call = first["choices"][0]["message"]["tool_calls"][0]
    assert call["function"]["name"] == "lookup" and first["choices"][0]["finish_reason"] == "tool_calls"
    history = [
        *ASK,
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": call["id"], "content": "sunny"},
    ]
    second = (
        await client.post("/chat/completions", json={"model": "tools", "messages": history, "tools": TOOLS})
    ).json()
    assert second["choices"][0]["message"]["content"] == "echo: weather in Paris?"
    assert second["choices"][0]["finish_reason"] == "stop"


async def test_reasoning_comes_before_the_answer(client: httpx.AsyncClient) -> None:
    whole = (await client.post("/chat/completions", json={"model": "echo+reasoning", "messages": ASK})).json()
    message = whole["choices"][0]["message"]
    assert (
        message["reasoning_content"] == "Thinking it over."
        and message["content"] == "echo: weather in Paris?"
    )
    assert whole["usage"]["completion_tokens"] == 3 + 4  # the thoughts count as output
    chunks = await data_events(client, "/chat/completions", {"model": "echo+reasoning", "messages": ASK})
    deltas = [c["choices"][0]["delta"] for c in chunks]
    thoughts = [d["reasoning_content"] for d in deltas if "reasoning_content" in d]
    assert "".join(thoughts) == "Thinking it over."
    first_text = next(i for i, d in enumerate(deltas) if d.get("content"))
    assert first_text > max(i for i, d in enumerate(deltas) if "reasoning_content" in d)


async def test_text_completions(client: httpx.AsyncClient) -> None:
    body = {"model": "echo", "prompt": "a b c", "max_tokens": 3, "n": 2}
    whole = (await client.post("/completions", json=body)).json()
    assert whole["object"] == "text_completion" and whole["id"].startswith("cmpl-")
    assert [c["text"] for c in whole["choices"]] == ["echo: a b", "echo: a b"]
    assert whole["choices"][0]["finish_reason"] == "length"
    assert whole["usage"] == {"prompt_tokens": 7, "completion_tokens": 6, "total_tokens": 13}
    tokens = (await client.post("/completions", json={"model": "echo", "prompt": [[1, 2]]})).json()
    assert tokens["choices"][0]["text"] == "echo: 1 2"
    chunks = await data_events(
        client, "/completions", {"model": "echo", "prompt": "x y", "stream_options": {"include_usage": True}}
    )
    assert "".join(c["choices"][0]["text"] for c in chunks if c["choices"]) == "echo: x y"
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == 3
    failed = await client.post("/completions", json={"model": "fail-503", "prompt": "x"})
    assert failed.status_code == 503 and failed.json()["error"]["message"]


async def test_responses_tools_answer_text_after_a_function_call_output(client: httpx.AsyncClient) -> None:
    tool = {"type": "function", "name": "lookup", "parameters": {"type": "object"}}
    first = (
        await client.post("/responses", json={"model": "tools", "input": "weather?", "tools": [tool]})
    ).json()
    [call] = first["output"]
    assert call["type"] == "function_call" and call["name"] == "lookup"
    history = [
        {"role": "user", "content": "weather?"},
        {k: call[k] for k in ("type", "call_id", "name", "arguments")},
        {"type": "function_call_output", "call_id": call["call_id"], "output": "sunny"},
    ]
    second = (
        await client.post("/responses", json={"model": "tools", "input": history, "tools": [tool]})
    ).json()
    [message] = second["output"]
    assert message["type"] == "message" and message["content"][0]["text"] == "echo: weather?"
