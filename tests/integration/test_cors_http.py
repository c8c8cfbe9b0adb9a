"""CORS over HTTP: off by default, origins from the routing document, preflights answered by the
app, and the headers on every actual response from an allowed origin (errors and streams too)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from switchboard.routing.document import load_document

from tests.conftest import RunningGateway, routing_doc

APP = "https://app.example.com"
MODELS = {"echo": {"targets": [{"provider": "mock", "model": "echo"}]}}
CHAT = {"model": "echo", "messages": [{"role": "user", "content": "hi"}]}


def preflight(gw: RunningGateway, origin: str, path: str = "/v1/chat/completions") -> httpx.Response:
    return httpx.options(
        gw.v1.removesuffix("/v1") + path,
        headers={
            "origin": origin,
            "access-control-request-method": "POST",
            "access-control-request-headers": "authorization, content-type, x-stainless-timeout",
        },
    )


@pytest.fixture
def with_cors(gateway_factory: Callable[..., RunningGateway], mock: Any) -> RunningGateway:
    doc = routing_doc(mock.base_url, MODELS, cors={"allow_origins": [APP], "max_age_s": 120})
    return gateway_factory(doc=doc)


def test_off_by_default(gateway_factory: Callable[..., RunningGateway]) -> None:
    gw = gateway_factory(models=MODELS)
    assert preflight(gw, APP).status_code == 405  # as before: the app has no OPTIONS route
    reply = httpx.post(gw.v1 + "/chat/completions", json=CHAT, headers={**gw.headers(), "origin": APP})
    assert reply.status_code == 200
    assert "access-control-allow-origin" not in reply.headers


def test_a_preflight_from_an_allowed_origin_is_answered(with_cors: RunningGateway) -> None:
    reply = preflight(with_cors, APP)
    assert reply.status_code == 204
    assert reply.headers["access-control-allow-origin"] == APP
    assert set(reply.headers["access-control-allow-methods"].split(", ")) == {"GET", "POST", "OPTIONS"}
    assert reply.headers["access-control-allow-headers"] == "authorization, content-type, x-stainless-timeout"
    assert reply.headers["access-control-max-age"] == "120"
    assert reply.headers["vary"] == "Origin"
    assert preflight(with_cors, APP, "/v1/models").status_code == 204


def test_a_preflight_from_another_origin_is_refused_in_openai_shape(with_cors: RunningGateway) -> None:
    reply = preflight(with_cors, "https://evil.example.com")
    assert reply.status_code == 403
    assert "access-control-allow-origin" not in reply.headers
    error = reply.json()["error"]
    assert error["code"] == "cors_origin_not_allowed" and error["type"] == "invalid_request_error"
    assert set(error) == {"message", "type", "param", "code"}


def cors_headers_ok(reply: httpx.Response) -> None:
    assert reply.headers["access-control-allow-origin"] == APP
    exposed = reply.headers["access-control-expose-headers"]
    assert "x-request-id" in exposed and "x-switchboard-trail" in exposed


def test_actual_responses_carry_the_headers(with_cors: RunningGateway) -> None:
    headers = {**with_cors.headers(), "origin": APP}
    ok = httpx.post(with_cors.v1 + "/chat/completions", json=CHAT, headers=headers)
    assert ok.status_code == 200
    cors_headers_ok(ok)
    models = httpx.get(with_cors.v1 + "/models", headers=headers)
    assert models.status_code == 200
    cors_headers_ok(models)
    bad_key = httpx.post(
        with_cors.v1 + "/chat/completions", json=CHAT, headers={"authorization": "Bearer nope", "origin": APP}
    )
    assert bad_key.status_code == 401
    cors_headers_ok(bad_key)  # a browser can read the error
    unknown = httpx.post(with_cors.v1 + "/chat/completions", json={**CHAT, "model": "nope"}, headers=headers)
    assert unknown.status_code == 404
    cors_headers_ok(unknown)
    with httpx.stream(
        "POST", with_cors.v1 + "/chat/completions", json={**CHAT, "stream": True}, headers=headers
    ) as stream:
        assert stream.status_code == 200
        cors_headers_ok(stream)
        assert b"[DONE]" in b"".join(stream.iter_bytes())
    other = httpx.post(
        with_cors.v1 + "/chat/completions",
        json=CHAT,
        headers={**headers, "origin": "https://evil.example.com"},
    )
    assert other.status_code == 200  # not a browser's business here: the key decides
    assert "access-control-allow-origin" not in other.headers


def test_a_wildcard_allows_any_origin(gateway_factory: Callable[..., RunningGateway], mock: Any) -> None:
    gw = gateway_factory(doc=routing_doc(mock.base_url, MODELS, cors={"allow_origins": ["*"]}))
    reply = preflight(gw, "http://localhost:5173")
    assert reply.status_code == 204
    assert reply.headers["access-control-allow-origin"] == "http://localhost:5173"
    assert reply.headers["access-control-max-age"] == "600"


@pytest.mark.parametrize(
    "origins",
    [[], ["https://app.example.com/"], ["app.example.com"], ["https://app.example.com/path"], ["ftp://x.io"]],
    ids=["empty", "trailing-slash", "no-scheme", "path", "scheme"],
)
def test_the_cors_section_is_validated(origins: list[str]) -> None:
    doc = routing_doc("http://127.0.0.1:9/v1", MODELS, cors={"allow_origins": origins})
    with pytest.raises(ValueError, match=r"cors\.allow_origins"):
        load_document(json.dumps(doc))


def test_valid_origins_load() -> None:
    origins = ["https://app.example.com", "http://localhost:5173", "http://[::1]:8080", "*"]
    doc, _ = load_document(
        json.dumps(routing_doc("http://127.0.0.1:9/v1", MODELS, cors={"allow_origins": origins}))
    )
    assert doc.cors is not None and doc.cors.allow_origins == origins


def test_every_header_the_gateway_answers_with_is_exposed() -> None:
    """A header added to the gateway's answers and not to ``EXPOSED`` is invisible to a browser app
    (``x-switchboard-cost-usd`` and the routing headers were, until this test)."""
    import pathlib
    import re

    import switchboard
    from switchboard.http.cors import EXPOSED

    request_only = {"x-switchboard-timeout"}
    root = pathlib.Path(switchboard.__file__).parent
    found = {
        name
        for path in root.rglob("*.py")
        for name in re.findall(r'"(x-switchboard-[a-z-]+)"', path.read_text())
    } - request_only
    exposed = {name.strip() for name in EXPOSED.decode().split(",")}
    assert len(found) >= 10 and found <= exposed, sorted(found - exposed)
