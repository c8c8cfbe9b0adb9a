"""/v1/messages relayed to an Anthropic upstream that compresses its answers (``content-encoding:
gzip``, which httpx asks for): the stream, its errors and the buffered answer reach the client
decoded. The upstream is a raw socket server that compresses the SSE stream event by event."""

from __future__ import annotations

import asyncio
import gzip
import json
import threading
import zlib
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.conftest import RunningGateway, routing_doc
from tests.integration.test_h1_http import read_request
from tests.support import fixture

KEY_REF = {"ssm": "/switchboard/secrets/mock"}
STREAM = fixture("anthropic", "stream_tools")["anthropic_stream"]
ANSWER = fixture("anthropic", "chat_tools")["anthropic_response"]
REFUSAL = {"type": "error", "error": {"type": "invalid_request_error", "message": "prompt is too odd"}}


async def _gzip_upstream(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while (request := await read_request(reader)) is not None:
        body = json.loads(request[1])
        if body["model"] == "claude-refuses":
            packed = gzip.compress(json.dumps(REFUSAL).encode())
            writer.write(
                b"HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\n"
                b"content-encoding: gzip\r\ncontent-length: %d\r\n\r\n%b" % (len(packed), packed)
            )
        elif not body.get("stream"):
            packed = gzip.compress(json.dumps(ANSWER).encode())
            writer.write(
                b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                b"content-encoding: gzip\r\ncontent-length: %d\r\n\r\n%b" % (len(packed), packed)
            )
        else:  # one gzip stream, flushed after every event, each flush its own chunk
            writer.write(
                b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
                b"content-encoding: gzip\r\ntransfer-encoding: chunked\r\n\r\n"
            )
            packer = zlib.compressobj(wbits=31)
            for name, data in STREAM:
                event = f"event: {name}\ndata: {json.dumps(data)}\n\n".encode()
                part = packer.compress(event) + packer.flush(zlib.Z_SYNC_FLUSH)
                writer.write(b"%x\r\n%b\r\n" % (len(part), part))
                await writer.drain()
            tail = packer.flush()
            writer.write(b"%x\r\n%b\r\n0\r\n\r\n" % (len(tail), tail))
        await writer.drain()
    writer.close()


@pytest.fixture(scope="module")
def gzip_upstream() -> Iterator[str]:
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    url: list[str] = []

    def serve() -> None:
        server = loop.run_until_complete(asyncio.start_server(_gzip_upstream, "127.0.0.1", 0))
        url.append(f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}")
        ready.set()
        loop.run_forever()
        server.close()
        loop.run_until_complete(server.wait_closed())
        loop.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    ready.wait(5)
    yield url[0]
    loop.call_soon_threadsafe(loop.stop)
    thread.join(5)


def start(gateway_factory: Any, mock: Any, upstream: str) -> RunningGateway:
    models = {
        "claude": {"targets": [{"provider": "anthropic", "model": "claude-real"}]},
        "odd": {"targets": [{"provider": "anthropic", "model": "claude-refuses"}]},
    }
    doc = routing_doc(mock.base_url, models)
    doc["providers"]["anthropic"] = {"kind": "anthropic", "base_url": upstream, "api_key": KEY_REF}
    return gateway_factory(doc=doc)


def messages(gw: RunningGateway, model: str, stream: bool) -> httpx.Response:
    body = {
        "model": model,
        "max_tokens": 100,
        "stream": stream,
        "messages": [{"role": "user", "content": "x"}],
    }
    return httpx.post(gw.v1 + "/messages", json=body, headers=gw.headers(), timeout=30)


def test_a_gzip_encoded_upstream_stream_is_relayed_decoded(
    gateway_factory: Any, mock: Any, gzip_upstream: str
) -> None:
    gw = start(gateway_factory, mock, gzip_upstream)
    response = messages(gw, "claude", stream=True)
    assert response.status_code == 200, response.text
    received = [json.loads(line[6:]) for line in response.text.splitlines() if line.startswith("data: ")]
    assert received == [data for _, data in STREAM]  # every event, byte for byte, decoded


def test_a_gzip_encoded_upstream_error_and_answer_are_read_decoded(
    gateway_factory: Any, mock: Any, gzip_upstream: str
) -> None:
    gw = start(gateway_factory, mock, gzip_upstream)
    for stream in (True, False):
        refused = messages(gw, "odd", stream)
        assert refused.status_code == 400, refused.text
        assert "prompt is too odd" in refused.json()["error"]["message"]
    answered = messages(gw, "claude", stream=False)
    assert answered.status_code == 200 and answered.json()["content"] == ANSWER["content"]
