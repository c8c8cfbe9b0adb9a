"""The cost event is valid EMF, with documented names and low-cardinality dimensions only."""

from __future__ import annotations

import json
import re
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from switchboard.billing.costevents import METRICS, PROPERTIES, CostEvents
from switchboard.core.attempts import AttemptRecord
from switchboard.core.money import Price
from switchboard.core.principal import Principal
from switchboard.core.schemas import ChatCompletionRequest, Usage
from switchboard.exchange import Exchange
from switchboard.routing.document import RoutingDocument
from switchboard.routing.planner import plan

DOCS = Path(__file__).resolve().parents[2] / "docs" / "observability.md"
# https://docs.aws.amazon.com/AmazonCloudWatch/latest/APIReference/API_MetricDatum.html
UNITS = {
    "Seconds", "Microseconds", "Milliseconds", "Bytes", "Kilobytes", "Megabytes", "Gigabytes", "Terabytes",
    "Bits", "Kilobits", "Megabits", "Gigabits", "Terabits", "Percent", "Count", "Bytes/Second",
    "Kilobytes/Second", "Megabytes/Second", "Gigabytes/Second", "Terabytes/Second", "Bits/Second",
    "Kilobits/Second", "Megabits/Second", "Gigabits/Second", "Terabits/Second", "Count/Second", "None",
}  # fmt: skip
DOC = RoutingDocument.model_validate(
    {
        "version": 1,
        "providers": {"openai": {"kind": "openai"}, "groq": {"kind": "openai"}},
        "models": {
            "fast": {
                "targets": [{"provider": "groq", "model": "llama"}, {"provider": "openai", "model": "mini"}]
            }
        },
    }
)


def exchange(outcome: str, **fields: Any) -> Exchange:
    chat = ChatCompletionRequest.model_validate(
        {"model": "fast", "messages": [{"role": "user", "content": "x"}]}
    )
    ex = Exchange(
        "req_abc", Principal("k1d", "ci-key", team="search"), chat, "rev-7", plan(DOC, "fast"), started=100.0
    )
    ex.outcome, ex.finished_at = outcome, 100.25
    for name, value in fields.items():
        setattr(ex, name, value)
    return ex


def ok() -> Exchange:
    route = plan(DOC, "fast")
    usage = Usage.model_validate(
        {
            "prompt_tokens": 100,
            "completion_tokens": 20,
            "total_tokens": 120,
            "prompt_tokens_details": {"cached_tokens": 40},
        }
    )
    return exchange(
        "ok",
        status=200,
        target=route.targets[1],
        attempts=[
            AttemptRecord("groq/llama", "rate_limit", 429, 30.0),
            AttemptRecord("openai/mini", "ok", 200, 200.0, 10.0),
        ],
        usage=usage,
        price=Price(input_per_mtok=Decimal(1), output_per_mtok=Decimal(2)),
        price_origin="builtin",
        cost_usd=Decimal("0.0001"),
    )


def emit(ex: Exchange) -> dict[str, Any]:
    lines: list[str] = []
    CostEvents(write=lines.append, clock=lambda: 100.25).emit(ex)  # buffered: sent at settle's end
    [line] = lines
    assert line.endswith("\n") and "\n" not in line[:-1]
    event: dict[str, Any] = json.loads(line)
    return event


def assert_valid_emf(event: dict[str, Any]) -> None:
    """The EMF specification's rules for a root node and its metric directives."""
    meta = event["_aws"]
    assert isinstance(meta["Timestamp"], int) and meta["Timestamp"] > 1_600_000_000_000
    [directive] = meta["CloudWatchMetrics"]
    assert directive["Namespace"] == "Switchboard"
    assert 1 <= len(directive["Metrics"]) <= 100
    for dimension_set in directive["Dimensions"]:
        assert 1 <= len(dimension_set) <= 30
        for name in dimension_set:
            assert isinstance(event[name], str) and event[name], name  # every dimension has a value
    for metric in directive["Metrics"]:
        assert metric["Unit"] in UNITS and metric["Unit"] == METRICS[metric["Name"]]
        value = event[metric["Name"]]
        values = value if isinstance(value, list) else [value]
        assert values and all(isinstance(v, int | float) for v in values), metric["Name"]


def test_success_with_fallback_is_valid_emf() -> None:
    event = emit(ok())
    assert_valid_emf(event)
    dims = event["_aws"]["CloudWatchMetrics"][0]["Dimensions"]
    assert dims == [["model", "provider", "service"], ["service", "outcome"], ["service"]]
    assert (event["model"], event["provider"], event["outcome"], event["service"]) == (
        "fast",
        "openai",
        "ok",
        "switchboard",
    )
    assert event["Fallbacks"] == 1 and event["Errors"] == 0 and event["CostUSD"] == 0.0001
    assert event["endpoint"] == "chat"
    assert event["InputTokens"] == 100 and event["cached_tokens"] == 40 and event["cost_usd"] == "0.0001"
    assert event["Latency"] == 250 and event["GatewayOverhead"] == 10  # 250 - 30 - 200 - 10 waited
    assert event["attempts"][0] == {
        "target": "groq/llama",
        "class": "rate_limit",
        "status": 429,
        "latency_ms": 30.0,
    }
    assert (event["key_id"], event["team"], event["request_id"]) == ("k1d", "search", "req_abc")


@pytest.mark.parametrize(
    ("ex", "expected"),
    [
        (
            exchange("error", status=502, error_code="all_targets_failed", cost_usd=Decimal(0)),
            {"Errors": 1},
        ),
        (exchange("rejected", status=402, error_code="budget_exceeded"), {"BudgetRejections": 1}),
        (exchange("rejected", status=429, error_code="rate_limit_exceeded"), {"RateLimited": 1}),
        (
            exchange("ok", status=200, usage=Usage(prompt_tokens=1, completion_tokens=1, total_tokens=2)),
            {"UnpricedRequests": 1},
        ),
        (exchange("interrupted", status=200, error_code="stream_interrupted"), {"Errors": 1}),
        (exchange("interrupted", status=200, error_code="client_disconnected"), {"Errors": 0}),
        # an upstream 400 passed on to the client: a failed request, not a gateway error
        (exchange("error", status=400, error_code="context_length_exceeded"), {"Errors": 0, "Requests": 1}),
    ],
)
def test_every_outcome_is_valid_emf(ex: Exchange, expected: dict[str, Any]) -> None:
    event = emit(ex)
    assert_valid_emf(event)
    assert event["outcome"] == ex.outcome and event["provider"] == "none"
    for name, value in expected.items():
        assert event[name] == value
    if ex.outcome == "ok":
        assert "CostUSD" not in event  # unpriced: no cost at all, not a zero


def test_identities_are_properties_never_dimensions() -> None:
    event = emit(ok())
    dimensions = {name for dims in event["_aws"]["CloudWatchMetrics"][0]["Dimensions"] for name in dims}
    assert dimensions == {"model", "provider", "service", "outcome"}
    for name in ("request_id", "key_id", "key_name", "team", "target", "attempts"):
        assert name in event and name not in dimensions


def test_every_emitted_name_is_documented() -> None:
    docs = DOCS.read_text(encoding="utf-8")
    documented = set(re.findall(r"^\| `([A-Za-z_]+)` \|", docs, re.MULTILINE))
    assert set(METRICS) <= documented and set(PROPERTIES) <= documented
    event = emit(ok())
    emitted = set(event) - {"_aws", "model", "provider", "service", "outcome"}
    assert emitted <= set(METRICS) | set(PROPERTIES), emitted - set(METRICS) - set(PROPERTIES)


def test_event_size_stays_small() -> None:
    lines: list[str] = []
    CostEvents(write=lines.append).emit(ok())
    assert len(lines[0].encode()) < 1500


def test_the_service_dimension_is_the_stacks(monkeypatch: pytest.MonkeyPatch) -> None:
    """In a stack POWERTOOLS_SERVICE_NAME is the stack's name (template.yaml): its cost events
    carry it, so two stacks in one account keep their metrics apart."""
    monkeypatch.setenv("POWERTOOLS_SERVICE_NAME", "sb-dev")
    lines: list[str] = []
    event = json.loads(CostEvents(write=lines.append).emit(ok()))
    assert event["service"] == "sb-dev"
    dimension_sets = event["_aws"]["CloudWatchMetrics"][0]["Dimensions"]
    assert all("service" in dims for dims in dimension_sets)
    monkeypatch.delenv("POWERTOOLS_SERVICE_NAME")
    assert json.loads(CostEvents(write=lines.append).emit(ok()))["service"] == "switchboard"
