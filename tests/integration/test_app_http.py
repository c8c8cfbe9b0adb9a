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
