"""``http.app``'s own routes over HTTP: ``/health``, and 404 and 405 in the shape of the API asked
(OpenAI's, Anthropic's under ``/v1/messages``), each with a request id. The routed endpoints have
their own files (``test_chat_http.py``, ``test_messages_http.py``, ...)."""

from __future__ import annotations

import httpx
import pytest

from tests.conftest import RunningGateway


@pytest.fixture
def gw(gateway_factory) -> RunningGateway:  # type: ignore[no-untyped-def]
    return gateway_factory()


def test_unknown_paths_and_methods(gw: RunningGateway) -> None:
    missing = httpx.get(gw.v1 + "/nothing-here", headers=gw.headers())
    assert missing.status_code == 404 and missing.json()["error"]["type"] == "invalid_request_error"
    assert missing.headers["x-request-id"].startswith("req_")
    wrong = httpx.get(gw.v1 + "/chat/completions", headers=gw.headers())
    assert wrong.status_code == 405 and "error" in wrong.json()
    assert wrong.headers["allow"] == "POST"
    assert httpx.get(gw.base_url + "/health").json() == {"status": "ok"}


def test_under_v1_messages_a_404_and_a_405_come_in_anthropic_s_shape(gw: RunningGateway) -> None:
    for response in (
        httpx.get(gw.v1 + "/messages/nothing-here", headers=gw.headers()),
        httpx.get(gw.v1 + "/messages", headers=gw.headers()),
    ):
        body = response.json()
        assert response.status_code in (404, 405) and body["type"] == "error"
        assert body["error"]["type"] in ("not_found_error", "invalid_request_error")


def test_every_post_route_runs_through_the_one_pipeline() -> None:
    """Issue 11: every endpoint that calls an upstream is an ``Endpoint`` served by
    ``pipeline.handler`` (auth, admission, metering, settlement written once), so a new POST route
    cannot bypass them. What stays outside calls no upstream: the GET and DELETE routes, and explain."""
    from starlette.routing import Route
    from switchboard.http.app import create_app
    from switchboard.http.pipeline import Endpoint, served_by

    routes = create_app().app.routes
    assert all(isinstance(route, Route) for route in routes)  # no Mount to hide a route in
    posts = {route.path: served_by(route.endpoint) for route in routes if "POST" in (route.methods or ())}
    assert {"/v1/chat/completions", "/v1/messages", "/v1/embeddings", "/v1/responses"} <= set(posts)
    # explain calls no upstream and admits nothing (a read-only decision over the same router)
    no_upstream = {"/v1/route/explain"}
    bypass = [
        path for path, spec in posts.items() if not isinstance(spec, Endpoint) and path not in no_upstream
    ]
    assert bypass == [], f"POST routes outside http.pipeline.handler: {bypass}"
    billed = {spec.name for spec in posts.values() if spec is not None and spec.billed}
    assert {"chat", "messages", "embeddings", "responses"} <= billed
    outside = [r for r in routes if served_by(r.endpoint) is None and r.path not in no_upstream]
    assert all((route.methods or set()) <= {"GET", "HEAD", "DELETE"} for route in outside), [
        (route.path, route.methods) for route in outside
    ]
