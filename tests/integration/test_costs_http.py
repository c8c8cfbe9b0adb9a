"""usage.cost over HTTP: buffered bodies and headers, streams with and without include_usage."""

from __future__ import annotations

import json
import time
from decimal import Decimal
from typing import Any

import httpx
import pytest
from switchboard.exchange import Exchange

from tests.conftest import RunningGateway, routing_doc

MSG = [{"role": "user", "content": "a b c"}]
# The mock counts words: prompt = 3 words + 4 per message = 7; the reply "echo: a b c" = 4 words.
# At 1 and 2 USD per Mtok: (7 * 1 + 4 * 2) / 1e6
COST = Decimal("0.000015")


class Recorder:
    def __init__(self) -> None:
        self.settled: list[Exchange] = []

    async def admit(self, ex: Exchange) -> None:
        pass

    async def settle(self, ex: Exchange) -> None:
        self.settled.append(ex)

    def one(self) -> Exchange:
        end = time.monotonic() + 3
        while not self.settled:
            assert time.monotonic() < end, "never settled"
            time.sleep(0.01)
        return self.settled[-1]

    def of(self, request_id: str) -> list[Exchange]:
        return [ex for ex in self.settled if ex.request_id == request_id]


@pytest.fixture
def priced(gateway_factory, mock) -> tuple[RunningGateway, Recorder]:  # type: ignore[no-untyped-def]
    doc = routing_doc(
        mock.base_url,
        {
            "echo": {"targets": [{"provider": "mock", "model": "echo"}]},
            "unpriced": {"targets": [{"provider": "backup", "model": "echo"}]},
            "no-usage": {"targets": [{"provider": "plain", "model": "echo"}]},
        },
        prices={
            "mock/echo": {"input_per_mtok": "1", "output_per_mtok": "2"},
            "plain/echo": {"input_per_mtok": "1", "output_per_mtok": "2"},
        },
    )
    # an upstream that cannot be asked for stream usage: the gateway must estimate
    doc["providers"]["plain"] = {**doc["providers"]["mock"], "unsupported_params": ["stream_options"]}
    gw = gateway_factory(doc=doc)
    recorder = Recorder()
    gw.gateway.hooks.append(recorder)
    return gw, recorder


def post(gw: RunningGateway, **body: Any) -> httpx.Response:
    return httpx.post(gw.v1 + "/chat/completions", json={"messages": MSG, **body}, headers=gw.headers())


def events(response: httpx.Response) -> list[dict[str, Any]]:
    lines = [line[6:] for line in response.text.split("\n") if line.startswith("data: ")]
    assert lines[-1] == "[DONE]"
    return [json.loads(line) for line in lines[:-1]]


def test_buffered_response_carries_cost_in_body_and_header(priced) -> None:  # type: ignore[no-untyped-def]
    gw, rec = priced
    response = post(gw, model="echo")
    assert response.status_code == 200
    assert response.json()["usage"]["cost"] == float(COST)
    assert response.headers["x-switchboard-cost-usd"] == "0.000015"
    ex = rec.one()
    assert ex.cost_usd == COST and ex.price_origin == "override" and not ex.usage_estimated


def test_unpriced_model_is_served_with_null_cost(priced) -> None:  # type: ignore[no-untyped-def]
    gw, rec = priced
    response = post(gw, model="unpriced")
    assert response.status_code == 200 and response.json()["usage"]["cost"] is None
    assert "x-switchboard-cost-usd" not in response.headers
    assert rec.one().cost_usd is None


def test_stream_without_include_usage_hides_the_usage_chunk_but_settles_its_cost(priced, mock) -> None:  # type: ignore[no-untyped-def]
    gw, rec = priced
    response = post(gw, model="echo", stream=True)
    chunks = events(response)
    assert mock.requests[-1]["json"]["stream_options"] == {"include_usage": True}  # the gateway asked
    assert all(c["choices"] for c in chunks) and not any(c.get("usage") for c in chunks)
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks) == "echo: a b c"
    ex = rec.one()
    assert ex.usage is not None and ex.usage.total_tokens == 11 and ex.cost_usd == COST


def test_stream_with_include_usage_gets_cost_in_the_final_chunk(priced) -> None:  # type: ignore[no-untyped-def]
    gw, rec = priced
    response = post(gw, model="echo", stream=True, stream_options={"include_usage": True})
    last = events(response)[-1]
    assert last["choices"] == [] and last["usage"]["total_tokens"] == 11
    assert last["usage"]["cost"] == float(COST)
    assert rec.one().cost_usd == COST


def test_upstream_without_stream_usage_is_estimated_and_marked(priced, mock) -> None:  # type: ignore[no-untyped-def]
    gw, rec = priced
    response = post(gw, model="no-usage", stream=True, stream_options={"include_usage": True})
    assert "stream_options" not in mock.requests[-1]["json"]
    last = events(response)[-1]
    assert last["choices"] == [] and last["usage"]["estimated"] is True and last["usage"]["cost"] > 0
    ex = rec.one()
    assert ex.usage_estimated and ex.cost_usd is not None and ex.cost_usd > 0
