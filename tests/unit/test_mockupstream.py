"""The mock upstream over real sockets: wire shapes, scripted failures, pacing and HTTP framing."""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import socket
import struct
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
from switchboard.devtools.mockupstream import MockUpstream, main, run_in_thread

USER = [{"role": "user", "content": "hello brave new world"}]
SPEC_CANDIDATES = [
    Path(__file__).resolve().parents[3] / "shared" / "specs" / "openai-openapi.json",
    Path("/work/shared/specs/openai-openapi.json"),
]


@pytest_asyncio.fixture
async def mock() -> AsyncIterator[MockUpstream]:
    async with MockUpstream() as server:
        yield server


@pytest_asyncio.fixture
async def client(mock: MockUpstream) -> AsyncIterator[httpx.AsyncClient]:
    # verify=False: plain HTTP, and it skips loading the CA bundle (~60 ms per client)
    async with httpx.AsyncClient(base_url=mock.base_url, timeout=5, verify=False) as http:
        yield http


def chat(model: str = "echo", **extra: Any) -> dict[str, Any]:
    return {"model": model, "messages": USER, **extra}


async def stream_events(client: httpx.AsyncClient, body: dict[str, Any]) -> list[Any]:
    """The decoded ``data:`` events of a streamed completion; ``[DONE]`` stays a string."""
    events: list[Any] = []
    async with client.stream("POST", "/chat/completions", json={**body, "stream": True}) as response:
        assert response.status_code == 200
        assert response.headers["content-type"] == "text/event-stream"
        assert response.headers["transfer-encoding"] == "chunked"
        async for line in response.aiter_lines():
            if line.startswith("data: "):
                data = line[6:]
                events.append(data if data == "[DONE]" else json.loads(data))
    return events


def load_schemas() -> dict[str, Any]:
    for path in SPEC_CANDIDATES:
        if path.exists():
            schemas: dict[str, Any] = json.loads(path.read_text())["components"]["schemas"]
            return schemas
    pytest.skip("the OpenAI OpenAPI spec is not in shared/specs")


# --------------------------------------------------------------------------- shapes


@pytest.mark.asyncio
async def test_echo_completion_has_the_spec_required_fields(client: httpx.AsyncClient) -> None:
    schemas = load_schemas()
    response = await client.post("/chat/completions", json=chat())
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    completion = response.json()
    top = schemas["CreateChatCompletionResponse"]
    assert set(top["required"]) <= completion.keys()
    choice_required = set(top["properties"]["choices"]["items"]["required"])
    message_required = set(schemas["ChatCompletionResponseMessage"]["required"])
    for choice in completion["choices"]:
        assert choice_required <= choice.keys()
        assert message_required <= choice["message"].keys()
    assert set(schemas["CompletionUsage"]["required"]) <= completion["usage"].keys()
    assert completion["object"] == "chat.completion"
    assert completion["id"].startswith("chatcmpl-mock")
    assert isinstance(completion["created"], int)
    assert completion["model"] == "echo"
    assert completion["system_fingerprint"] is None
    choice = completion["choices"][0]
    assert choice["message"] == {
        "role": "assistant",
        "content": "echo: hello brave new world",
        "refusal": None,
    }
    assert choice["finish_reason"] == "stop"
    assert choice["logprobs"] is None
    # prompt: 4 words + 4 per message; completion: 5 words
    assert completion["usage"] == {"prompt_tokens": 8, "completion_tokens": 5, "total_tokens": 13}


@pytest.mark.asyncio
async def test_models_health_404_and_malformed_json(client: httpx.AsyncClient) -> None:
    models = (await client.get("/models")).json()
    assert models["object"] == "list"
    assert models["data"][0] == {"id": "mock-echo", "object": "model", "created": 0, "owned_by": "mock"}
    health = await client.get(str(client.base_url).removesuffix("/v1/") + "/health")
    assert health.status_code == 200
    assert health.json() == {"ok": True}
    missing = await client.get("/nope")
    assert missing.status_code == 404
    assert missing.json()["error"]["type"] == "invalid_request_error"
    bad = await client.post(
        "/chat/completions", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert bad.status_code == 400
    assert set(bad.json()["error"]) == {"message", "type", "param", "code"}


@pytest.mark.asyncio
async def test_content_parts_and_json_response_format(client: httpx.AsyncClient) -> None:
    parts = [
        {"type": "text", "text": "from"},
        {"type": "image_url", "image_url": {"url": "x"}},
        {"type": "text", "text": "parts"},
    ]
    messages = [{"role": "system", "content": "be brief"}, {"role": "user", "content": parts}]
    reply = (await client.post("/chat/completions", json={"model": "echo", "messages": messages})).json()
    assert reply["choices"][0]["message"]["content"] == "echo: from parts"
    assert reply["usage"]["prompt_tokens"] == 2 + 2 + 8
    body = chat(response_format={"type": "json_object"})
    content = (await client.post("/chat/completions", json=body)).json()["choices"][0]["message"]["content"]
    assert json.loads(content) == {"echo": "hello brave new world"}


@pytest.mark.asyncio
async def test_n_stop_and_max_tokens(client: httpx.AsyncClient) -> None:
    two = (await client.post("/chat/completions", json=chat(n=2))).json()
    assert [choice["index"] for choice in two["choices"]] == [0, 1]
    assert {choice["message"]["content"] for choice in two["choices"]} == {"echo: hello brave new world"}
    assert two["usage"]["completion_tokens"] == 10

    stopped = (await client.post("/chat/completions", json=chat(stop=["new", "brave"]))).json()
    assert stopped["choices"][0]["message"]["content"] == "echo: hello "
    assert stopped["choices"][0]["finish_reason"] == "stop"

    cut = (await client.post("/chat/completions", json=chat(max_tokens=2))).json()
    assert cut["choices"][0]["message"]["content"] == "echo: hello"
    assert cut["choices"][0]["finish_reason"] == "length"
    assert cut["usage"]["completion_tokens"] == 2
    newer = (await client.post("/chat/completions", json=chat(max_completion_tokens=1))).json()
    assert newer["choices"][0]["message"]["content"] == "echo:"


@pytest.mark.asyncio
async def test_tools_non_streaming_and_streaming(client: httpx.AsyncClient) -> None:
    tools = [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}]
    reply = (await client.post("/chat/completions", json=chat("tools", tools=tools))).json()
    choice = reply["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] is None
    assert choice["message"]["tool_calls"] == [
        {
            "id": "call_mock1",
            "type": "function",
            "function": {"name": "lookup", "arguments": '{"city": "Paris"}'},
        }
    ]
    default = (await client.post("/chat/completions", json=chat("tools"))).json()
    assert default["choices"][0]["message"]["tool_calls"][0]["function"]["name"] == "get_weather"

    events = await stream_events(client, chat("tools", tools=tools))
    first = events[0]["choices"][0]["delta"]["tool_calls"][0]
    assert first == {
        "index": 0,
        "id": "call_mock1",
        "type": "function",
        "function": {"name": "lookup", "arguments": ""},
    }
    fragments = [
        event["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"] for event in events[1:-2]
    ]
    assert len(fragments) > 1
    assert "".join(fragments) == '{"city": "Paris"}'
    assert events[-2]["choices"][0] == {
        "index": 0,
        "delta": {},
        "logprobs": None,
        "finish_reason": "tool_calls",
    }
    assert events[-1] == "[DONE]"


@pytest.mark.asyncio
async def test_embeddings_floats_and_base64(client: httpx.AsyncClient) -> None:
    result = (await client.post("/embeddings", json={"model": "emb", "input": ["one two", "three"]})).json()
    assert result["object"] == "list"
    assert result["model"] == "emb"
    assert result["usage"] == {"prompt_tokens": 3, "total_tokens": 3}
    assert [item["index"] for item in result["data"]] == [0, 1]
    vector = result["data"][0]["embedding"]
    assert len(vector) == 8 and all(isinstance(value, float) for value in vector)
    again = (await client.post("/embeddings", json={"model": "emb", "input": "one two"})).json()
    assert again["data"][0]["embedding"] == vector
    packed = (
        await client.post("/embeddings", json={"model": "e", "input": "one two", "encoding_format": "base64"})
    ).json()
    decoded = struct.unpack("<8f", base64.b64decode(packed["data"][0]["embedding"]))
    assert decoded == pytest.approx(vector, abs=1e-6)
    failed = await client.post("/embeddings", json={"model": "fail-503", "input": "x"})
    assert failed.status_code == 503


# --------------------------------------------------------------------------- streaming


@pytest.mark.asyncio
async def test_stream_without_usage(client: httpx.AsyncClient) -> None:
    events = await stream_events(client, chat())
    assert events[-1] == "[DONE]"
    chunks = events[:-1]
    assert all("usage" not in chunk for chunk in chunks)
    assert len({chunk["id"] for chunk in chunks}) == 1
    for chunk in chunks:
        assert chunk["object"] == "chat.completion.chunk"
        assert chunk["model"] == "echo"
        assert chunk["system_fingerprint"] is None
        assert isinstance(chunk["created"], int)
    assert chunks[0]["choices"] == [
        {"index": 0, "delta": {"role": "assistant", "content": ""}, "logprobs": None, "finish_reason": None}
    ]
    words = [chunk["choices"][0]["delta"]["content"] for chunk in chunks[1:-1]]
    assert words == ["echo:", " hello", " brave", " new", " world"]
    assert chunks[-1]["choices"][0]["delta"] == {}
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"


@pytest.mark.asyncio
async def test_stream_with_usage_and_two_choices(client: httpx.AsyncClient) -> None:
    events = await stream_events(client, chat(n=2, stream_options={"include_usage": True}))
    assert events[-1] == "[DONE]"
    usage_chunk = events[-2]
    assert usage_chunk["choices"] == []
    assert usage_chunk["usage"] == {"prompt_tokens": 8, "completion_tokens": 10, "total_tokens": 18}
    earlier = events[:-2]
    assert all(chunk["usage"] is None for chunk in earlier)
    for index in (0, 1):
        mine = [chunk["choices"][0] for chunk in earlier if chunk["choices"][0]["index"] == index]
        assert mine[0]["delta"]["role"] == "assistant"
        assert (
            "".join(choice["delta"].get("content") or "" for choice in mine) == "echo: hello brave new world"
        )
        assert mine[-1]["finish_reason"] == "stop"


@pytest.mark.asyncio
async def test_stream_pacing_proves_no_buffering(client: httpx.AsyncClient) -> None:
    arrivals: list[float] = []
    body = chat("chunks-4+delay-50", stream=True)
    async with client.stream("POST", "/chat/completions", json=body) as response:
        async for line in response.aiter_lines():
            if line.startswith("data: {") and '"content":"' in line and '"role"' not in line:
                arrivals.append(time.perf_counter())
    assert len(arrivals) == 4
    gaps = [later - earlier for earlier, later in itertools.pairwise(arrivals)]
    # Buffering would deliver the four together (gaps ~0). Each gap is ~50 ms; a late read of one
    # chunk on a loaded machine shortens the next gap, so bound the mean tightly and each one loosely.
    assert sum(gaps) / len(gaps) >= 0.040, gaps
    assert min(gaps) >= 0.025, gaps


@pytest.mark.asyncio
async def test_chunks_sets_the_word_count(client: httpx.AsyncClient) -> None:
    reply = (await client.post("/chat/completions", json=chat("chunks-8"))).json()
    assert reply["usage"]["completion_tokens"] == 8
    assert reply["choices"][0]["message"]["content"] == "echo: hello brave new world echo: hello brave"
    events = await stream_events(client, chat("chunks-2"))
    assert [event["choices"][0]["delta"].get("content") for event in events[1:-2]] == ["echo:", " hello"]


@pytest.mark.asyncio
@pytest.mark.parametrize("k", [0, 2])
async def test_break_ends_the_stream_without_done(client: httpx.AsyncClient, k: int) -> None:
    lines: list[str] = []
    with pytest.raises(httpx.TransportError):
        async with client.stream(
            "POST", "/chat/completions", json=chat(f"break-{k}", stream=True)
        ) as response:
            async for line in response.aiter_lines():
                if line:
                    lines.append(line)
    assert "data: [DONE]" not in lines
    contents = [json.loads(line[6:])["choices"][0]["delta"].get("content") for line in lines]
    assert contents == ["", "echo:", " hello"][: k + 1]


@pytest.mark.asyncio
async def test_stall_and_slow(client: httpx.AsyncClient) -> None:
    started = time.perf_counter()
    assert (await client.post("/chat/completions", json=chat("slow-0.1"))).status_code == 200
    assert time.perf_counter() - started >= 0.09
    started = time.perf_counter()
    async with client.stream("POST", "/chat/completions", json=chat("stall-0.15", stream=True)) as response:
        headers_at = time.perf_counter() - started
        first = await response.aiter_lines().__anext__()
        first_at = time.perf_counter() - started
    assert first_at - headers_at >= 0.1  # the headers came first, then the stall
    assert first_at >= 0.14
    assert first.startswith("data: ")


# --------------------------------------------------------------------------- failures


@pytest.mark.asyncio
async def test_fail_429_with_retry_after(client: httpx.AsyncClient) -> None:
    response = await client.post("/chat/completions", json=chat("fail-429+retry-after-1"))
    assert response.status_code == 429
    assert response.headers["retry-after"] == "1"
    assert response.json() == {
        "error": {"message": "mock failure 429", "type": "rate_limit_error", "param": None, "code": None}
    }
    server = await client.post("/chat/completions", json=chat("fail-503", stream=True))
    assert server.status_code == 503
    assert server.json()["error"]["type"] == "server_error"


@pytest.mark.asyncio
async def test_special_failures(client: httpx.AsyncClient) -> None:
    ctx = (await client.post("/chat/completions", json=chat("fail-400ctx"))).json()["error"]
    assert ctx["code"] == "context_length_exceeded"
    assert ctx["message"].startswith("This model's maximum context length is 8192 tokens")
    policy = await client.post("/chat/completions", json=chat("fail-400policy"))
    assert policy.status_code == 400
    assert policy.json()["error"]["code"] == "content_filter"
    key = await client.post("/chat/completions", json=chat("fail-401"))
    assert key.status_code == 401
    assert "Incorrect API key provided: sk-abc...xyz" in key.json()["error"]["message"]
    assert key.json()["error"]["type"] == "invalid_request_error"


@pytest.mark.asyncio
async def test_flaky_counts_per_model_string(mock: MockUpstream, client: httpx.AsyncClient) -> None:
    async def statuses(model: str, times: int) -> list[int]:
        return [(await client.post("/chat/completions", json=chat(model))).status_code for _ in range(times)]

    assert await statuses("flaky-2+id-abc", 4) == [500, 500, 200, 200]
    assert await statuses("flaky-2+id-other", 1) == [500]
    assert await statuses("flaky-1+fail-503", 2) == [503, 200]
    mock.reset()
    assert mock.requests == []
    assert await statuses("flaky-2+id-abc", 1) == [500]


@pytest.mark.asyncio
async def test_flaky_confines_other_failure_modes(client: httpx.AsyncClient) -> None:
    with pytest.raises(httpx.TransportError):
        await client.post("/chat/completions", json=chat("flaky-1+reset"))
    assert (await client.post("/chat/completions", json=chat("flaky-1+reset"))).status_code == 200
    with pytest.raises(httpx.TransportError):
        await stream_events(client, chat("flaky-1+break-0"))
    assert (await stream_events(client, chat("flaky-1+break-0")))[-1] == "[DONE]"


@pytest.mark.asyncio
async def test_garbage_bodies(client: httpx.AsyncClient) -> None:
    garbage = await client.post("/chat/completions", json=chat("garbage"))
    assert garbage.status_code == 200
    assert garbage.headers["content-type"] == "application/json"
    with pytest.raises(json.JSONDecodeError):
        garbage.json()
    valid = await client.post("/chat/completions", json=chat("garbage-valid-json"))
    assert valid.json() == {"foo": 1}


@pytest.mark.asyncio
async def test_reset_raises_a_transport_error(mock: MockUpstream, client: httpx.AsyncClient) -> None:
    with pytest.raises(httpx.TransportError):
        await client.post("/chat/completions", json=chat("reset"))
    assert mock.requests[-1]["json"]["model"] == "reset"  # the request was read before the reset
    assert (await client.post("/chat/completions", json=chat())).status_code == 200


# --------------------------------------------------------------------------- HTTP and bookkeeping


@pytest.mark.asyncio
async def test_records_and_echoed_authorization(mock: MockUpstream, client: httpx.AsyncClient) -> None:
    headers = {"authorization": "Bearer upstream-key", "x-mock-echo-headers": "1"}
    response = await client.post("/chat/completions", json=chat(), headers=headers)
    assert response.headers["x-mock-saw-authorization"] == "Bearer upstream-key"
    plain = await client.post("/chat/completions", json=chat(), headers={"authorization": "Bearer k"})
    assert "x-mock-saw-authorization" not in plain.headers
    record = mock.requests[-1]
    assert record["method"] == "POST"
    assert record["path"] == "/v1/chat/completions"
    assert record["headers"]["authorization"] == "Bearer k"
    assert record["json"] == chat()


@pytest.mark.asyncio
async def test_records_are_bounded(mock: MockUpstream, client: httpx.AsyncClient) -> None:
    mock.max_records = 3
    for index in range(5):
        await client.post("/chat/completions", json=chat(f"echo+id-{index}"))
    assert [record["json"]["model"] for record in mock.requests] == ["echo+id-2", "echo+id-3", "echo+id-4"]


@pytest.mark.asyncio
async def test_keep_alive_reuses_one_connection(mock: MockUpstream, client: httpx.AsyncClient) -> None:
    for _ in range(3):
        assert (await client.post("/chat/completions", json=chat())).status_code == 200
    await stream_events(client, chat())
    assert mock.connections == 1


@pytest.mark.asyncio
async def test_pipelined_requests_and_connection_close(mock: MockUpstream) -> None:
    body = json.dumps(chat()).encode()
    request = (
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
    )
    closing = b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    reader, writer = await asyncio.open_connection("127.0.0.1", mock.port)
    writer.write(request + request + closing)  # three requests in one segment
    await writer.drain()
    raw = await asyncio.wait_for(reader.read(), 2)  # read() to EOF: the server closes after the third
    writer.close()
    await writer.wait_closed()
    assert raw.count(b"HTTP/1.1 200 OK") == 3
    assert raw.count(b'"content":"echo: hello brave new world"') == 2
    assert raw.endswith(b'{"ok":true}')
    assert b"Connection: close" in raw


@pytest.mark.asyncio
async def test_openai_sdk_plain_and_streaming(mock: MockUpstream) -> None:
    openai = pytest.importorskip("openai")
    http = httpx.AsyncClient(verify=False)  # the SDK's own client would load the CA bundle
    async with openai.AsyncOpenAI(
        base_url=mock.base_url, api_key="x", max_retries=0, http_client=http
    ) as sdk:
        completion = await sdk.chat.completions.create(model="echo", messages=USER)
        assert completion.choices[0].message.content == "echo: hello brave new world"
        assert completion.usage is not None and completion.usage.total_tokens == 13
        stream = await sdk.chat.completions.create(
            model="echo", messages=USER, stream=True, stream_options={"include_usage": True}
        )
        pieces: list[str] = []
        usage = None
        async for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                pieces.append(chunk.choices[0].delta.content)
            usage = chunk.usage or usage
        assert "".join(pieces) == "echo: hello brave new world"
        assert usage is not None and usage.completion_tokens == 5
        embedding = await sdk.embeddings.create(model="emb", input="one two")
        assert len(embedding.data[0].embedding) == 8


def test_run_in_thread_serves_sync_clients() -> None:
    server, stop = run_in_thread()
    try:
        with httpx.Client(base_url=server.base_url, timeout=5, verify=False) as http:
            assert http.post("/chat/completions", json=chat()).json()["choices"][0]["message"]["content"] == (
                "echo: hello brave new world"
            )
        assert len(server.requests) == 1
    finally:
        stop()
    stop()  # idempotent
    with socket.socket() as probe, pytest.raises(OSError):
        probe.settimeout(1)
        probe.connect(("127.0.0.1", server.port))


def test_main_refuses_a_non_loopback_host(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--host", "0.0.0.0", "--port", "0"])
    assert exit_info.value.code == 2
    assert "non-loopback" in capsys.readouterr().err
