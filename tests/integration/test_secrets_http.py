"""No secret leaves the gateway, even when an upstream echoes it in a shape no pattern knows.

An upstream over real sockets quotes the provider key it was called with (a random 32-character
alphanumeric key, as Mistral's look) and the client's prompt, which holds the client's own key
(also un-prefixed), in every error it sends: 400, 404, 422, context_length_exceeded,
content_filter, 429, 500, a 200 that is an error, and an error event after output began. Each is
called on chat, messages (converted and relayed to an Anthropic target) and embeddings, streamed
and not. Neither key may appear in any response (body or header), in any log record or JSON log
line, or in any cost event of the whole run.
"""

from __future__ import annotations

import json
import logging
import random
import string
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import boto3
import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route
from switchboard.limits.keys import KeyStore
from switchboard.limits.table import Table

from tests.conftest import RunningGateway, serve_app
from tests.integration.test_observability_http import json_logs  # noqa: F401 (a fixture)

_ALNUM = string.ascii_letters + string.digits
PROVIDER_KEY = "".join(random.choices(_ALNUM, k=32))
CLIENT_KEY = "".join(random.choices(_ALNUM, k=40))
FAULTS = ("e400", "e404", "e422", "ctx", "policy", "rate", "server", "error200", "midstream", "html")


def _said(body: dict[str, Any]) -> str:
    if "input" in body:
        return str(body["input"])
    messages = body.get("messages") or [{}]
    return json.dumps(messages[-1].get("content"))


def _message(fault: str, key: str, said: str) -> str:
    text = f"The key {key} cannot do this; you said: {said}"
    if fault == "ctx":
        return "This model's maximum context length is 8192 tokens. " + text
    if fault == "policy":
        return "The response was filtered due to content management policy. " + text
    return text


_STATUS = {"e400": 400, "e404": 404, "e422": 422, "ctx": 400, "policy": 400, "rate": 429, "server": 500}
_CODE = {"ctx": "context_length_exceeded", "policy": "content_filter"}


async def _openai_stream(error: dict[str, Any]) -> AsyncIterator[bytes]:
    base = {"id": "c1", "object": "chat.completion.chunk", "created": 0, "model": "m"}
    for delta in ({"role": "assistant", "content": ""}, {"content": "partial"}):
        choice = {"index": 0, "delta": delta, "finish_reason": None}
        yield f"data: {json.dumps({**base, 'choices': [choice]})}\n\n".encode()
    yield f"data: {json.dumps({'error': error})}\n\n".encode()


async def _anthropic_stream(error: dict[str, Any]) -> AsyncIterator[bytes]:
    message = {"id": "m1", "type": "message", "role": "assistant", "model": "m", "content": []}
    message["usage"] = {"input_tokens": 3, "output_tokens": 0}
    events: list[tuple[str, dict[str, Any]]] = [
        ("message_start", {"type": "message_start", "message": message}),
        (
            "content_block_start",
            {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        ),
        (
            "content_block_delta",
            {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "partial"}},
        ),
        ("error", {"type": "error", "error": error}),
    ]
    for name, data in events:
        yield f"event: {name}\ndata: {json.dumps(data)}\n\n".encode()


class EchoingUpstream:
    """OpenAI-compatible and Anthropic routes that fail as the model says, quoting the key."""

    def __init__(self) -> None:
        self.keys_seen: list[str] = []

    def app(self) -> Starlette:
        return Starlette(routes=[Route("/{path:path}", self._handle, methods=["POST"])])

    async def _handle(self, request: Request) -> Response:
        anthropic = request.url.path == "/v1/messages"
        key = request.headers.get("x-api-key") or request.headers.get("authorization", "").removeprefix(
            "Bearer "
        )
        self.keys_seen.append(key)
        body = await request.json()
        fault = str(body["model"])
        if fault == "html":  # not JSON: the gateway keeps its first 300 bytes, which cut the key
            page = "<html>" + "x" * 282 + key + "</html>"
            return Response(page, 400, media_type="text/html")
        text = _message(fault, key, _said(body))
        etype = "overloaded_error" if fault == "server" else "invalid_request_error"
        if anthropic:
            error: dict[str, Any] = {"type": etype, "message": text}
            if fault == "midstream" and body.get("stream"):
                return StreamingResponse(_anthropic_stream(error), 200, media_type="text/event-stream")
            return JSONResponse({"type": "error", "error": error}, _STATUS.get(fault, 400))
        error = {"message": text, "type": etype, "param": key, "code": _CODE.get(fault, f"code_{key}")}
        if fault == "midstream" and body.get("stream"):
            return StreamingResponse(_openai_stream(error), 200, media_type="text/event-stream")
        if fault in ("error200", "midstream"):
            return JSONResponse({"error": error}, 200)
        return JSONResponse({"error": error}, _STATUS[fault], {"x-upstream-key": key})


@pytest.fixture
def upstream() -> Iterator[tuple[EchoingUpstream, str]]:
    echo = EchoingUpstream()
    url, stop = serve_app(echo.app())
    yield echo, url
    stop()


def _gateway(gateway_factory: Any, url: str) -> RunningGateway:
    secret_param = f"/switchboard-test/{uuid.uuid4().hex[:8]}/provider"
    boto3.client("ssm", region_name="us-east-1").put_parameter(
        Name=secret_param, Value=PROVIDER_KEY, Type="SecureString", Overwrite=True
    )
    ref = {"ssm": secret_param}
    models: dict[str, Any] = {}
    for fault in FAULTS:
        models[fault] = {"targets": [{"provider": "echo", "model": fault}]}
        models["c-" + fault] = {"targets": [{"provider": "claude", "model": fault}]}
        models["e-" + fault] = {
            "mode": "embeddings",
            "targets": [{"provider": "echo", "model": fault, "dimensions": 8}],
        }
    doc = {
        "version": 1,
        "defaults": {"retry": {"attempts": 2, "base_delay_ms": 5, "max_delay_ms": 20}},
        "providers": {
            "echo": {"kind": "openai", "base_url": url + "/v1", "api_key": ref},
            "claude": {"kind": "anthropic", "base_url": url, "api_key": ref},
        },
        "models": models,
    }
    gw: RunningGateway = gateway_factory(doc=doc)
    KeyStore(Table(boto3.client("dynamodb", region_name="us-east-1"), gw.settings.table)).ensure(
        CLIENT_KEY, name="secrets-test"
    )
    return gw


def _calls(gw: RunningGateway) -> list[tuple[str, str, dict[str, Any]]]:
    said = f"my key is {CLIENT_KEY}, keep it safe"
    messages = [{"role": "user", "content": said}]
    calls = []
    for fault in FAULTS:
        for stream in (False, True):
            chat = {"model": fault, "messages": messages, "stream": stream}
            calls.append((f"chat {fault} stream={stream}", "/chat/completions", chat))
            for alias in (fault, "c-" + fault):
                body = {"model": alias, "max_tokens": 50, "messages": messages, "stream": stream}
                calls.append((f"messages {alias} stream={stream}", "/messages", body))
        calls.append((f"embeddings {fault}", "/embeddings", {"model": "e-" + fault, "input": said}))
    return calls


def test_no_key_an_upstream_echoes_leaves_the_gateway(  # type: ignore[no-untyped-def]
    gateway_factory,
    upstream,
    capsys,
    caplog,
    json_logs,  # noqa: F811 (the imported fixture)
) -> None:
    echo, url = upstream
    gw = _gateway(gateway_factory, url)
    caplog.set_level(logging.DEBUG, logger="switchboard")
    headers = {"authorization": f"Bearer {CLIENT_KEY}"}
    responses: dict[str, httpx.Response] = {}
    with httpx.Client(base_url=gw.v1, headers=headers, timeout=30) as client:
        for name, path, body in _calls(gw):
            responses[name] = client.post(path, json=body)
    time.sleep(0.2)  # streams settle after their last byte
    logging.getLogger("switchboard.test").error("an upstream said %s", f"key {PROVIDER_KEY} bad")
    try:
        raise RuntimeError(f"provider key {PROVIDER_KEY}")
    except RuntimeError:
        logging.getLogger("switchboard.test").exception("a failure quoting a key")

    # The test can fail: the upstream got the key, quoted it, and its messages reached the client.
    assert echo.keys_seen and set(echo.keys_seen) == {PROVIDER_KEY}
    bad = responses["chat e400 stream=False"]
    assert bad.status_code == 400 and "[redacted]" in bad.json()["error"]["message"]
    assert "you said" in bad.json()["error"]["message"]
    anthropic_bad = responses["messages c-e400 stream=False"].json()
    assert anthropic_bad["type"] == "error" and "[redacted]" in anthropic_bad["error"]["message"]
    assert responses["chat html stream=False"].json()["error"]["message"].endswith("x[redacted]")
    assert responses["chat ctx stream=False"].json()["error"]["code"] == "context_length_exceeded"
    assert responses["chat policy stream=False"].json()["error"]["code"] == "content_filter"
    assert b"event: error" in responses["messages c-midstream stream=True"].content
    assert b'"stream_interrupted"' in responses["chat midstream stream=True"].content
    assert all(r.status_code != 500 for r in responses.values())

    captured = capsys.readouterr()
    records = "\n".join(
        f"{r.name} {r.getMessage()} {r.exc_text or ''} {json.dumps(r.__dict__, default=str)}"
        for r in caplog.records
    )
    emitted = {
        "stdout": captured.out,
        "stderr": captured.err,
        "records": records,
        "json logs": json_logs.getvalue(),
    }
    assert '{"_aws"' in captured.out, "no cost event was emitted"
    assert "a failure quoting a key" in json_logs.getvalue()
    for name, response in responses.items():
        emitted[f"{name} body"] = response.text
        emitted[f"{name} headers"] = json.dumps(dict(response.headers))
    for where, text in emitted.items():
        for secret in (PROVIDER_KEY, CLIENT_KEY, PROVIDER_KEY[:12]):
            assert secret not in text, f"{secret[:6]}... found in {where}"
