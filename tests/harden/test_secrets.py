"""Secrets: no client or provider key in anything the gateway lets out.

The whole run is scanned at the end (``test_zz_summary``: every response head and body, every log
record, every cost event, the soak's gateway logs). Here, the cases built to leak: an upstream that
echoes the provider key it received in each error route, and clients that send wrong keys.
The provider keys are random and un-prefixed (``provider_key``), so only redaction by value can
catch them.
"""

from __future__ import annotations

import secrets

import httpx
import pytest

from tests.harden.conftest import Keyed, Outputs
from tests.harden.faultserver import ECHOES
from tests.harden.stage import MESSAGES, Stage


@pytest.mark.parametrize("path", ["/chat/completions", "/messages"])
@pytest.mark.parametrize("echo", ECHOES)
def test_an_upstream_that_echoes_its_key_leaks_it_nowhere(
    stage: Stage, client: Keyed, outputs: Outputs, echo: str, path: str
) -> None:
    headers = {"authorization": f"Bearer {client.secret}", "anthropic-version": "2023-06-01"}
    body = {"model": echo, "messages": MESSAGES, "max_tokens": 8}
    with httpx.Client(timeout=30) as http:
        response = http.post(stage.v1 + path, json=body, headers=headers)
    outputs.response(response.status_code, response.headers, response.text)
    # the client's fault (400, 422) is passed on; the gateway's own (401, 404: its key or its
    # routing is wrong) is a 502
    assert 400 <= response.status_code < 500 or response.status_code == 502, response.text
    assert stage.upstream.seen_keys, "the upstream saw no key: the echo proves nothing"
    assert outputs.leaks(known=bool(outputs.known_defect)) == []


@pytest.mark.parametrize(
    "sent",
    [
        "sk-sb-" + secrets.token_urlsafe(24),
        secrets.token_hex(16),
        "Bearer " + secrets.token_hex(16),
        "sk-sb-" + secrets.token_urlsafe(24) + "\u00e9",
    ],
    ids=["gateway-shaped", "unprefixed", "double-bearer", "non-ascii"],
)
@pytest.mark.parametrize("path", ["/chat/completions", "/messages", "/embeddings", "/models"])
def test_a_wrong_client_key_is_refused_without_repeating_it(
    stage: Stage, outputs: Outputs, sent: str, path: str
) -> None:
    outputs.secrets.add(sent.removeprefix("Bearer "))
    body = {"model": "ok", "messages": MESSAGES, "input": "x", "max_tokens": 8}
    for header in ({"authorization": f"Bearer {sent}"}, {"x-api-key": sent}):
        with httpx.Client(timeout=30) as http:
            encoded = {k: v.encode("utf-8") for k, v in header.items()}
            if path == "/models":
                response = http.get(stage.v1 + path, headers=encoded)
            else:
                response = http.post(stage.v1 + path, json=body, headers=encoded)
        outputs.response(response.status_code, response.headers, response.text)
        assert response.status_code == 401, response.text
        assert sent.removeprefix("Bearer ") not in response.text
