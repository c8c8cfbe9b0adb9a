"""Transport faults through the app: a reset upstream is one ``server`` attempt in the trail and the
plan falls back, however many keep-alive connections to it sit idle, and nothing is sent twice.

The gateway runs under uvicorn (uvloop) against the session's mock upstream; the first target's
model string tells the mock to read the request and reset the connection (``reset``).
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from switchboard.devtools.mockupstream import MockUpstream
from switchboard.infra.h1 import H1Transport

from tests.conftest import RunningGateway, routing_doc

MSG = [{"role": "user", "content": "ping pong"}]


def chat(gw: RunningGateway, model: str, stream: bool) -> httpx.Response:
    body = {"model": model, "messages": MSG, "stream": stream}
    return httpx.post(gw.v1 + "/chat/completions", json=body, headers=gw.headers(), timeout=30)


def trail(response: httpx.Response) -> list[list[str]]:
    return [entry.split(";")[:3] for entry in response.headers["x-switchboard-trail"].split(",")]


async def warm(gw: RunningGateway, connections: int) -> None:
    """Leave ``connections`` idle keep-alive connections from the gateway to the mock: as many
    concurrent requests, each held open a moment by the mock (``slow-``)."""
    async with httpx.AsyncClient(timeout=30) as client:
        body = {"model": "w", "messages": MSG}
        answers = await asyncio.gather(
            *(
                client.post(gw.v1 + "/chat/completions", json=body, headers=gw.headers())
                for _ in range(connections)
            )
        )
    assert [a.status_code for a in answers] == [200] * connections


@pytest.mark.parametrize("stream", [False, True])
def test_a_reset_upstream_with_idle_connections_falls_back_and_is_in_the_trail(
    gateway_factory: Any, mock: MockUpstream, stream: bool
) -> None:
    resetting = f"reset+id-{uuid.uuid4().hex[:8]}"
    models = {
        "w": {"targets": [{"provider": "mock", "model": "echo+slow-0.3"}]},
        "m": {
            "targets": [{"provider": "mock", "model": resetting}, {"provider": "backup", "model": "echo"}],
            "retry": {"attempts": 2, "base_delay_ms": 1, "max_delay_ms": 2},
        },
    }
    gw = gateway_factory(doc=routing_doc(mock.base_url, models))
    asyncio.run(warm(gw, 3))
    response = chat(gw, "m", stream)
    assert response.status_code == 200, response.text
    assert "pong" in response.text and ("data: [DONE]" in response.text) is stream
    assert response.headers["x-switchboard-provider"] == "backup"
    assert trail(response) == [
        [f"mock/{resetting}", "server", "-"],
        [f"mock/{resetting}", "server", "-"],
        ["backup/echo", "ok", "200"],
    ]
    # One POST per attempt in the trail: a request the upstream read is never sent again.
    assert sum(1 for r in mock.requests if (r["json"] or {}).get("model") == resetting) == 2


class _Faulty(httpx.AsyncBaseTransport):
    """A transport with a bug for one host (an ``AssertionError`` below httpx); the rest go to h1."""

    def __init__(self, host: str) -> None:
        self.host = host
        self.direct = H1Transport()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.host == self.host:
            raise AssertionError("a bug below httpx")
        return await self.direct.handle_async_request(request)

    async def aclose(self) -> None:
        await self.direct.aclose()


@pytest.mark.parametrize("stream", [False, True])
def test_an_unexpected_exception_below_httpx_is_a_server_attempt_not_a_500(
    gateway_factory: Any, mock: MockUpstream, stream: bool
) -> None:
    doc = routing_doc(
        mock.base_url,
        {"m": {"targets": [{"provider": "mock", "model": "echo"}, {"provider": "backup", "model": "echo"}]}},
    )
    doc["providers"]["mock"]["base_url"] = mock.base_url.replace("127.0.0.1", "localhost")
    gw = gateway_factory(doc=doc)
    gw.gateway.engine.http = httpx.AsyncClient(transport=_Faulty("localhost"))
    response = chat(gw, "m", stream)
    assert response.status_code == 200, response.text
    assert [step[:2] for step in trail(response)] == [
        ["mock/echo", "server"],
        ["mock/echo", "server"],
        ["backup/echo", "ok"],
    ]


class _BreaksMidStream(httpx.AsyncBaseTransport):
    """An upstream stream that sends one content chunk, then fails with an unexpected exception."""

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        chunk = {
            "id": "c1",
            "object": "chat.completion.chunk",
            "created": 0,
            "model": "m",
            "choices": [
                {"index": 0, "delta": {"role": "assistant", "content": "half"}, "finish_reason": None}
            ],
        }

        async def body() -> AsyncIterator[bytes]:
            yield b"data: " + json.dumps(chunk).encode() + b"\n\n"
            raise AssertionError("a bug below httpx, mid-stream")

        return httpx.Response(200, headers={"content-type": "text/event-stream"}, stream=_Stream(body()))


class _Stream(httpx.AsyncByteStream):
    def __init__(self, parts: AsyncIterator[bytes]) -> None:
        self.parts = parts

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for part in self.parts:
            yield part


def test_an_unexpected_exception_after_the_stream_committed_ends_it_with_an_error_event(
    gateway_factory: Any, mock: MockUpstream
) -> None:
    gw = gateway_factory(models={"m": {"targets": [{"provider": "mock", "model": "echo"}]}})
    gw.gateway.engine.http = httpx.AsyncClient(transport=_BreaksMidStream())
    body = {"model": "m", "messages": MSG, "stream": True}
    with httpx.stream("POST", gw.v1 + "/chat/completions", json=body, headers=gw.headers(), timeout=30) as r:
        assert r.status_code == 200
        lines = [line for line in r.iter_lines() if line.startswith("data: ")]
    assert '"half"' in lines[0]
    error = json.loads(lines[-1][6:])["error"]
    assert error["code"] == "stream_interrupted" and "(server)" in error["message"]
    assert "data: [DONE]" not in lines


def test_the_same_on_v1_messages_ends_with_an_anthropic_error_event(
    gateway_factory: Any, mock: MockUpstream
) -> None:
    gw = gateway_factory(models={"m": {"targets": [{"provider": "mock", "model": "echo"}]}})
    gw.gateway.engine.http = httpx.AsyncClient(transport=_BreaksMidStream())
    body = {"model": "m", "max_tokens": 10, "stream": True, "messages": MSG}
    with httpx.stream("POST", gw.v1 + "/messages", json=body, headers=gw.headers(), timeout=30) as r:
        assert r.status_code == 200
        text = "".join(r.iter_text())
    assert '"half"' in text
    assert text.rstrip().split("\n\n")[-1].startswith("event: error")
