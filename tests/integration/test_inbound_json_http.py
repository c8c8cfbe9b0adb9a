"""Inbound bodies over HTTP: one JSON reader with a depth limit, large bodies parsed off the event
loop, and a client that leaves mid-upload is no error."""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
from typing import Any

import httpx
import pytest
from switchboard.core import jsonbody
from switchboard.http.endpoints import chat

from tests.conftest import RunningGateway

DEEP = b"[" * 100_000 + b"]" * 100_000


@pytest.fixture
def gw(gateway_factory: Any) -> RunningGateway:
    return gateway_factory(
        models={
            "echo": {"targets": [{"provider": "mock", "model": "echo"}]},
            "emb": {"mode": "embeddings", "targets": [{"provider": "mock", "model": "e", "dimensions": 8}]},
        }
    )


def _post(gw: RunningGateway, path: str, content: bytes) -> httpx.Response:
    headers = {**gw.headers(), "content-type": "application/json"}
    return httpx.post(gw.v1 + path, content=content, headers=headers, timeout=30)


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/chat/completions", b'{"model": "echo", "messages": %s}'),
        ("/messages", b'{"model": "echo", "max_tokens": 5, "messages": %s}'),
        ("/embeddings", b'{"model": "emb", "input": %s}'),
        ("/chat/completions", b"%s"),
        ("/messages", b"%s"),
    ],
)
def test_deep_nesting_is_a_400_in_the_endpoints_own_shape(gw: RunningGateway, path: str, body: bytes) -> None:
    response = _post(gw, path, body % DEEP)
    assert response.status_code == 400
    if path == "/messages":
        error = response.json()
        assert error["type"] == "error" and error["error"]["type"] == "invalid_request_error"
        assert f"deeper than {jsonbody.MAX_DEPTH} levels" in error["error"]["message"]
    else:
        error = response.json()["error"]
        assert error["code"] == "invalid_json" and f"deeper than {jsonbody.MAX_DEPTH}" in error["message"]


def test_brackets_inside_strings_do_not_count(gw: RunningGateway) -> None:
    text = '[{"\\"\\\\' * 500  # brackets, quotes and escapes, all inside one string
    messages = [{"role": "user", "content": text}] * 40  # more brackets than the limit, all shallow
    response = _post(gw, "/chat/completions", json.dumps({"model": "echo", "messages": messages}).encode())
    assert response.status_code == 200
    anthropic = {"model": "echo", "max_tokens": 5, "messages": messages}
    assert _post(gw, "/messages", json.dumps(anthropic).encode()).status_code == 200
    nested: Any = "x"
    for _ in range(jsonbody.MAX_DEPTH - 3):
        nested = [nested]  # deep, but within the limit: the schema's answer, not the depth check's
    too_odd = _post(gw, "/chat/completions", json.dumps({"model": "echo", "messages": nested}).encode())
    assert too_odd.status_code == 400 and too_odd.json()["error"]["code"] == "invalid_value"


def test_a_large_body_is_parsed_off_the_event_loop(
    gw: RunningGateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While a 6 MB body is being parsed, the same server still answers /health: the parse runs in
    a worker thread. (On the event loop, /health would wait until the parse ended.)"""
    entered, release = threading.Event(), threading.Event()
    original = chat.parse_chat

    def held_parse(body: bytes) -> Any:
        entered.set()
        release.wait(10)
        return original(body)

    monkeypatch.setattr(chat, "parse_chat", held_parse)
    big = json.dumps({"model": "echo", "messages": [{"role": "user", "content": "word " * 1_200_000}]})
    assert len(big) > 5_000_000
    result: list[httpx.Response] = []
    upload = threading.Thread(target=lambda: result.append(_post(gw, "/chat/completions", big.encode())))
    upload.start()
    try:
        assert entered.wait(10), "the body was never parsed"
        health = httpx.get(gw.base_url + "/health", timeout=3)
        assert health.status_code == 200
    finally:
        release.set()
        upload.join(30)
    assert result and result[0].status_code == 200


def test_a_client_that_leaves_mid_upload_is_no_error(
    gw: RunningGateway, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="switchboard")
    head = (
        "POST /v1/chat/completions HTTP/1.1\r\nHost: gateway\r\n"
        f"Authorization: Bearer {gw.api_key}\r\nContent-Type: application/json\r\n"
        "Content-Length: 1000000\r\n\r\n"
    )
    host, port = gw.base_url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.sendall(head.encode() + b'{"model": "echo", "messages": [' + b" " * 5000)
    deadline = time.monotonic() + 10
    while not any("client disconnected during upload" in r.getMessage() for r in caplog.records):
        assert time.monotonic() < deadline, "the gateway never noticed the client leaving"
        time.sleep(0.02)
    [record] = [r for r in caplog.records if "client disconnected" in r.getMessage()]
    assert record.levelno == logging.INFO and record.exc_info is None
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR and r.name.startswith("switchboard")]
