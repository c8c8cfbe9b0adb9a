"""The shared circuit breaker on ``POST /v1/embeddings``, as on chat, over HTTP with the OpenAI SDK.

An embeddings-only gateway reports its attempts (so failures open the breaker), skips an open
target (``x-switchboard-breaker: skipped ...``, not in the trail), and with every target open tries
the one that failed least recently (``all-open; tried ...``).
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import openai

from tests.conftest import routing_doc
from tests.integration.test_explain_agreement_http import open_breaker

# Reports on every attempt, the state re-read every 50 ms; two failures in a window open it.
SHORT = {"breaker_report_s": 0.0, "breaker_cache_s": 0.05}
POLICY = {"min_requests": 2, "error_rate": 0.5, "open_s": 600, "ramp_s": 600}
WAIT_S = 10.0


def start(gateway_factory: Any, mock: Any, *targets: tuple[str, str]) -> tuple[Any, openai.OpenAI]:
    route = {
        "mode": "embeddings",
        "targets": [{"provider": p, "model": m, "dimensions": 8} for p, m in targets],
        "retry": {"attempts": 1},
    }
    gw = gateway_factory(doc=routing_doc(mock.base_url, {"embed": route}, breaker=POLICY), **SHORT)
    return gw, openai.OpenAI(base_url=gw.v1, api_key=gw.api_key, max_retries=0)


def embed(client: openai.OpenAI) -> tuple[list[str], Any]:
    raw = client.embeddings.with_raw_response.create(model="embed", input="hello", encoding_format="float")
    assert len(raw.parse().data[0].embedding) == 8
    return [entry.split(";")[0] for entry in raw.headers["x-switchboard-trail"].split(",")], raw.headers


def test_failures_open_the_breaker_and_embeddings_skip_the_open_target(
    gateway_factory: Any, mock: Any
) -> None:
    tag = "id-" + uuid.uuid4().hex[:8]
    failing, healthy = f"mock/fail-500+{tag}", f"backup/text-embed+{tag}"
    _gw, client = start(gateway_factory, mock, ("mock", f"fail-500+{tag}"), ("backup", f"text-embed+{tag}"))
    trail, headers = embed(client)
    assert trail == [failing, healthy] and "x-switchboard-breaker" not in headers
    deadline = time.monotonic() + WAIT_S
    while True:  # the failures are reported, the breaker opens, the state is read back
        trail, headers = embed(client)
        if "x-switchboard-breaker" in headers:
            break
        assert time.monotonic() < deadline, "embeddings never skipped the failing target"
        time.sleep(0.02)
    assert headers["x-switchboard-breaker"] == f"skipped {failing} open"
    assert trail == [healthy]  # not tried at all


def test_every_target_open_tries_the_one_that_failed_least_recently(gateway_factory: Any, mock: Any) -> None:
    tag = "id-" + uuid.uuid4().hex[:8]
    first, second = f"mock/text-embed+a+{tag}", f"backup/text-embed+b+{tag}"
    gw, client = start(
        gateway_factory, mock, ("mock", f"text-embed+a+{tag}"), ("backup", f"text-embed+b+{tag}")
    )
    now = time.time()
    for label, opened_at in ((first, now), (second, now - 5)):  # as another instance opened them
        open_breaker(gw, label, opened_at)
    deadline = time.monotonic() + WAIT_S
    while True:
        trail, headers = embed(client)
        if headers.get("x-switchboard-breaker", "").startswith("all-open"):
            break
        assert time.monotonic() < deadline, headers
        time.sleep(0.02)
    assert headers["x-switchboard-breaker"] == f"all-open; tried {second}"
    assert trail == [second]
