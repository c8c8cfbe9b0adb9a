"""Cost arithmetic against hand-computed cases, and which price applies to a target."""

from __future__ import annotations

import logging
from decimal import Decimal

import pytest
from switchboard.core.money import Price, cost_usd
from switchboard.core.schemas import Usage
from switchboard.routing.document import RoutingDocument
from switchboard.routing.planner import plan
from switchboard.routing.pricing import PriceBook, builtin_prices, model_variants


def usage(prompt: int, completion: int, cached: int = 0, writes: int = 0) -> Usage:
    details = {"cached_tokens": cached, "cache_write_tokens": writes}
    return Usage(
        prompt_tokens=prompt,
        completion_tokens=completion,
        total_tokens=prompt + completion,
        prompt_tokens_details=details,
    )


GPT4O = Price(
    input_per_mtok=Decimal("2.50"), cached_input_per_mtok=Decimal("1.25"), output_per_mtok=Decimal("10")
)
SONNET = Price(
    input_per_mtok=Decimal("3"),
    cache_write_per_mtok=Decimal("3.75"),
    cached_input_per_mtok=Decimal("0.30"),
    output_per_mtok=Decimal("15"),
)


@pytest.mark.parametrize(
    ("price", "used", "expected"),
    [
        # 1000 in, 200 out: 1000*2.5 + 200*10 = 4500 micro-dollars
        (GPT4O, usage(1000, 200), "0.0045"),
        # 400 of the 1000 cached: 600*2.5 + 400*1.25 + 200*10 = 1500 + 500 + 2000
        (GPT4O, usage(1000, 200, cached=400), "0.004"),
        # Anthropic shape: 10000 prompt = 2000 fresh + 6000 read + 2000 written; 500 out
        # 2000*3 + 6000*0.30 + 2000*3.75 + 500*15 = 6000 + 1800 + 7500 + 7500
        (SONNET, usage(10_000, 500, cached=6000, writes=2000), "0.0228"),
        # no cached rate listed: cached tokens are billed at the input rate, never for free
        (
            Price(input_per_mtok=Decimal(2), output_per_mtok=Decimal(8)),
            usage(1000, 100, cached=500),
            "0.0028",
        ),
        (GPT4O, usage(0, 0), "0"),
        # one token of each: exact to the sub-micro-dollar, no float drift
        (GPT4O, usage(1, 1), "0.0000125"),
    ],
)
def test_cost_arithmetic(price: Price, used: Usage, expected: str) -> None:
    assert cost_usd(price, used) == Decimal(expected)


def doc(prices: dict[str, dict[str, str]] | None = None) -> RoutingDocument:
    return RoutingDocument.model_validate(
        {
            "version": 1,
            "providers": {
                "openai": {"kind": "openai", "base_url": "https://api.openai.com/v1"},
                "oai-eu": {"kind": "openai", "base_url": "https://api.openai.com/v1"},
                "fastllama": {"kind": "openai", "base_url": "https://api.groq.com/openai/v1"},
                "selfhosted": {"kind": "openai", "base_url": "http://10.0.0.12:8000/v1"},
            },
            "models": {
                "a": {"targets": [{"provider": "openai", "model": "gpt-4o"}]},
                "b": {"targets": [{"provider": "oai-eu", "model": "gpt-4o-mini-2024-07-18"}]},
                "c": {"targets": [{"provider": "fastllama", "model": "llama-3.3-70b-versatile"}]},
                "d": {"targets": [{"provider": "selfhosted", "model": "llama-3.3-70b"}]},
            },
            "prices": prices or {},
        }
    )


def target(document: RoutingDocument, alias: str):  # type: ignore[no-untyped-def]
    return plan(document, alias).targets[0]


def test_builtin_table_loads_and_every_figure_has_a_source_and_date() -> None:
    table = builtin_prices()
    assert len(table.prices) >= 30
    for key, price in table.prices.items():
        assert "/" in key and price.source and price.as_of, key
        assert price.input_per_mtok > 0 and price.output_per_mtok > 0, key
    vendors = {key.split("/", 1)[0] for key in table.prices}
    assert vendors >= {"openai", "anthropic", "groq", "together", "mistral", "deepseek", "gemini", "bedrock"}


def test_lookup_builtin_by_name_host_and_snapshot_date() -> None:
    book, document = PriceBook(), doc()
    match = book.lookup(document, target(document, "a"))
    assert match is not None and (match.key, match.origin) == ("openai/gpt-4o", "builtin")
    # provider named differently in the document: matched by its base_url host, dated snapshot stripped
    match = book.lookup(document, target(document, "b"))
    assert match is not None and match.key == "openai/gpt-4o-mini"
    match = book.lookup(document, target(document, "c"))
    assert match is not None and match.key == "groq/llama-3.3-70b-versatile"


def test_routing_document_override_wins() -> None:
    document = doc({"openai/gpt-4o": {"input_per_mtok": "2", "output_per_mtok": "8"}})
    match = PriceBook().lookup(document, target(document, "a"))
    assert match is not None and match.origin == "override" and match.price.input_per_mtok == Decimal(2)


def test_unpriced_target_is_none_and_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    book, document = PriceBook(), doc()
    with caplog.at_level(logging.WARNING, logger="switchboard.pricing"):
        assert book.lookup(document, target(document, "d")) is None
        assert book.lookup(document, target(document, "d")) is None
    warnings = [r for r in caplog.records if "no price for selfhosted/llama-3.3-70b" in r.getMessage()]
    assert len(warnings) == 1


def test_model_variants() -> None:
    assert model_variants("claude-sonnet-4-5-20250929") == ["claude-sonnet-4-5-20250929", "claude-sonnet-4-5"]
    assert "anthropic.claude-sonnet-4-5-20250929-v1:0" in model_variants(
        "us.anthropic.claude-sonnet-4-5-20250929-v1:0"
    )
