"""Usage normalisation, usage.cost in bodies and the stream meter, without a network."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from switchboard.billing.metering import StreamMeter, body_with_cost, charge, format_usd, normalize_usage
from switchboard.core.money import Price
from switchboard.core.principal import Principal
from switchboard.core.schemas import ChatCompletion, ChatCompletionChunk, ChatCompletionRequest, Usage
from switchboard.exchange import Exchange
from switchboard.routing.planner import Plan
from switchboard.routing.pricing import PriceMatch
from switchboard.upstream.providers.base import StreamChunk

PRICE = PriceMatch(Price(input_per_mtok=Decimal(1), output_per_mtok=Decimal(2)), "mock/echo", "override")


def chat(**extra: object) -> ChatCompletionRequest:
    return ChatCompletionRequest.model_validate(
        {"model": "m", "messages": [{"role": "user", "content": "hi"}], **extra}
    )


def exchange(request: ChatCompletionRequest) -> Exchange:
    return Exchange("req_1", Principal("k", "n"), request, "r1", Plan("m", (), None, frozenset()))  # type: ignore[arg-type]


def chunk(
    content: str | None = None, usage: dict[str, int] | None = None, choices: bool = True
) -> StreamChunk:
    body: dict[str, object] = {"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "m"}
    body["choices"] = [{"index": 0, "delta": {"content": content}, "finish_reason": None}] if choices else []
    body["usage"] = usage
    raw = json.dumps(body).encode()
    return StreamChunk(ChatCompletionChunk.model_validate_json(raw), raw)


USAGE = {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}


def test_deepseek_cache_hits_become_openai_cached_tokens() -> None:
    usage = normalize_usage(
        Usage.model_validate({"prompt_tokens": 100, "completion_tokens": 1, "prompt_cache_hit_tokens": 60})
    )
    assert usage is not None and usage.prompt_tokens_details == {"cached_tokens": 60}
    assert usage.total_tokens == 101


def test_buffered_body_gets_cost_and_keeps_upstream_fields() -> None:
    raw = json.dumps(
        {
            "id": "x",
            "object": "chat.completion",
            "created": 1,
            "model": "m",
            "system_fingerprint": "fp",
            "choices": [
                {"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}
            ],
            "usage": USAGE,
        }
    ).encode()
    completion = ChatCompletion.model_validate_json(raw)
    ex = exchange(chat())
    charge(ex, completion, PRICE)
    assert ex.cost_usd == Decimal("0.00002") and ex.headers["x-switchboard-cost-usd"] == "0.00002"
    body = json.loads(body_with_cost(raw, completion, ex))
    assert body["usage"]["cost"] == 0.00002 and body["system_fingerprint"] == "fp"


def test_unpriced_body_reports_null_cost_and_no_header() -> None:
    raw = json.dumps(
        {
            "id": "x",
            "object": "chat.completion",
            "created": 1,
            "model": "m",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}}],
            "usage": USAGE,
        }
    ).encode()
    completion = ChatCompletion.model_validate_json(raw)
    ex = exchange(chat())
    charge(ex, completion, None)
    assert ex.cost_usd is None and "x-switchboard-cost-usd" not in ex.headers
    assert json.loads(body_with_cost(raw, completion, ex))["usage"]["cost"] is None


def test_meter_strips_the_usage_chunk_the_client_did_not_ask_for() -> None:
    meter = StreamMeter(chat(stream=True), PRICE)
    assert meter.chunk(chunk("hello")) is not None
    assert meter.chunk(chunk(usage=USAGE, choices=False)) is None
    assert meter.end() is None
    ex = exchange(chat(stream=True))
    meter.settle(ex)
    assert ex.usage is not None and ex.usage.total_tokens == 15 and not ex.usage_estimated
    assert ex.cost_usd == Decimal("0.00002")


def test_meter_prices_the_usage_chunk_the_client_asked_for() -> None:
    meter = StreamMeter(chat(stream=True, stream_options={"include_usage": True}), PRICE)
    out = meter.chunk(chunk(usage=USAGE, choices=False))
    assert out is not None and out.raw is not None
    assert json.loads(out.raw)["usage"] == {**USAGE, "cost": 0.00002}


def test_meter_estimates_when_the_upstream_sends_no_usage() -> None:
    meter = StreamMeter(chat(stream=True, stream_options={"include_usage": True}), PRICE)
    meter.chunk(chunk("x" * 40))  # 40 characters: about 10 tokens
    tail = meter.end()
    assert tail is not None and tail.raw is not None
    usage = json.loads(tail.raw)["usage"]
    assert usage["completion_tokens"] == 10 and usage["estimated"] is True and usage["cost"] > 0
    ex = exchange(chat(stream=True))
    meter.settle(ex)
    assert ex.usage_estimated and ex.cost_usd is not None and ex.cost_usd > 0


def test_format_usd_never_uses_exponents() -> None:
    assert format_usd(Decimal("0.0000125")) == "0.0000125"
    assert format_usd(Decimal("1.50")) == "1.5"
    assert format_usd(Decimal("0E-10")) == "0"


def test_an_unpriced_upstream_that_reports_its_own_cost_keeps_it() -> None:
    raw = json.dumps(
        {
            "id": "x",
            "object": "chat.completion",
            "created": 1,
            "model": "m",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}}],
            "usage": {**USAGE, "cost": 0.00042},
        }
    ).encode()
    completion = ChatCompletion.model_validate_json(raw)
    ex = exchange(chat())
    charge(ex, completion, None)
    assert ex.cost_usd == Decimal("0.00042") and ex.price_origin == "upstream"
    assert json.loads(body_with_cost(raw, completion, ex))["usage"]["cost"] == 0.00042
    charge(ex, completion, PRICE)  # a price in force wins over the upstream's figure
    assert ex.cost_usd == Decimal("0.00002") and ex.price_origin == "override"


def _spec() -> dict[str, Any] | None:
    for base in (Path(__file__).resolve().parents[3], Path("/work")):
        path = base / "shared" / "specs" / "openai-openapi.json"
        if path.exists():
            return json.loads(path.read_text(encoding="utf-8"))  # type: ignore[no-any-return]
    return None


def test_usage_with_cost_still_matches_openais_completion_usage_schema() -> None:
    import jsonschema

    spec = _spec()
    if spec is None:
        pytest.skip("shared/specs/openai-openapi.json not found")
    schema = spec["components"]["schemas"]["CompletionUsage"]
    assert schema.get("additionalProperties", True) is not False  # extra fields are allowed
    meter = StreamMeter(chat(stream=True, stream_options={"include_usage": True}), PRICE)
    meter.chunk(chunk("x" * 40))
    tail = meter.end()
    assert tail is not None and tail.raw is not None
    estimated = json.loads(tail.raw)["usage"]
    for usage in ({**USAGE, "cost": 0.00002}, {**USAGE, "cost": None}, estimated):
        jsonschema.validate(usage, schema)
