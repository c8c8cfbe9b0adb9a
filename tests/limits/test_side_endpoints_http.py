"""Budgets, rate limits, the spend ledger and cost events on /v1/messages and /v1/embeddings.

Costs are hand-computed from the mock's deterministic usage: a chat prompt is its words plus 4 per
message ("a b c": 7), the reply "echo: a b c" is 4 words; an embedding input is its words.
"""

from __future__ import annotations

import json
import time
from decimal import Decimal
from typing import Any

import httpx
import pytest
from switchboard.cli import main
from switchboard.core.principal import Limits
from switchboard.limits.keys import KeyStore
from switchboard.limits.table import Table

from tests.integration.test_costs_http import Recorder
from tests.limits.conftest import CENT_PRICE, MODELS, ledger, priced_doc, reservations, wait_for
from tests.native_upstream import Reply
from tests.support import fixture

EMBED = {"mode": "embeddings", "targets": [{"provider": "mock", "model": "text-embed", "dimensions": 8}]}
BROKEN_EMBED = {
    "mode": "embeddings",
    "targets": [{"provider": "mock", "model": "fail-500", "dimensions": 8}],
    "retry": {"attempts": 1},
}
# Input only is billed for embeddings; the output price would make any output reservation huge.
EMBED_PRICE = {"input_per_mtok": 1000, "output_per_mtok": 2500}
PRICES = {"mock/echo": CENT_PRICE, "mock/fail-500": CENT_PRICE, "mock/text-embed": EMBED_PRICE}
ANTHROPIC_MSG = [{"role": "user", "content": "a b c"}]


@pytest.fixture
def side(start):  # type: ignore[no-untyped-def]
    gw, key = start(prices=PRICES, models={**MODELS, "embed": EMBED, "broken-embed": BROKEN_EMBED})
    recorder = Recorder()
    gw.gateway.hooks.append(recorder)
    return gw, key, recorder


def message(gw, key: str, model: str = "metered", **body: Any) -> httpx.Response:  # type: ignore[no-untyped-def]
    payload = {"model": model, "max_tokens": 4, "messages": ANTHROPIC_MSG, **body}
    return httpx.post(gw.v1 + "/messages", json=payload, headers={"x-api-key": key}, timeout=30)


def embed(gw, key: str, model: str = "embed", text: Any = "one two three") -> httpx.Response:  # type: ignore[no-untyped-def]
    payload = {"model": model, "input": text}
    return httpx.post(
        gw.v1 + "/embeddings", json=payload, headers={"authorization": f"Bearer {key}"}, timeout=30
    )


def emf_events(text: str) -> dict[str, dict[str, Any]]:
    lines = [json.loads(line) for line in text.splitlines() if line.startswith('{"_aws"')]
    return {event["request_id"]: event for event in lines}


def test_a_budgeted_key_uses_messages_until_the_budget_is_spent(side, table: Table, capsys) -> None:  # type: ignore[no-untyped-def]
    gw, key, recorder = side
    secret, key_id = key(budget_usd=Decimal("0.02"))  # two messages at 4 output tokens = $0.01 each
    first, second, third = (message(gw, secret) for _ in range(3))
    assert first.status_code == second.status_code == 200, first.text
    assert first.json()["usage"] == {"input_tokens": 7, "output_tokens": 4} | first.json()["usage"]
    assert first.headers["x-switchboard-cost-usd"] == "0.01"
    assert third.status_code == 402
    assert third.json()["type"] == "error" and third.json()["error"]["type"] == "billing_error"
    row = ledger(table, "key", key_id)
    assert (row["spent"], row["reserved"], row["requests"]) == (Decimal("0.02"), 0, 2)
    assert reservations(table) == []
    [settled] = recorder.of(first.headers["x-request-id"])
    assert settled.kind == "messages" and settled.outcome == "ok" and settled.cost_usd == Decimal("0.01")
    assert settled.usage is not None and (settled.usage.prompt_tokens, settled.usage.completion_tokens) == (
        7,
        4,
    )
    [refused] = recorder.of(third.headers["x-request-id"])
    assert refused.outcome == "rejected" and refused.status == 402
    events = emf_events(capsys.readouterr().out)
    assert events[first.headers["x-request-id"]]["CostUSD"] == 0.01
    assert events[first.headers["x-request-id"]]["endpoint"] == "messages"
    assert events[third.headers["x-request-id"]]["outcome"] == "rejected"


def test_a_streamed_message_settles_once_with_its_usage(side, table: Table) -> None:  # type: ignore[no-untyped-def]
    gw, key, recorder = side
    secret, key_id = key(budget_usd=Decimal(1))
    response = message(gw, secret, stream=True)
    assert response.status_code == 200 and "event: message_stop" in response.text
    request_id = response.headers["x-request-id"]
    wait_for(lambda: bool(recorder.of(request_id)))
    time.sleep(0.1)  # a second settlement would show up here
    [settled] = recorder.of(request_id)
    assert settled.outcome == "ok" and not settled.usage_estimated
    assert settled.usage is not None and (settled.usage.prompt_tokens, settled.usage.completion_tokens) == (
        7,
        4,
    )
    assert settled.cost_usd == Decimal("0.01")
    wait_for(lambda: ledger(table, "key", key_id).get("spent") == Decimal("0.01"))
    assert reservations(table) == []


def test_failed_upstreams_refund_the_reservation(side, table: Table) -> None:  # type: ignore[no-untyped-def]
    gw, key, recorder = side
    secret, key_id = key(budget_usd=Decimal("0.02"))
    failed = message(gw, secret, "broken")
    assert failed.status_code >= 500 and failed.json()["type"] == "error"
    assert embed(gw, secret, "broken-embed").status_code == 502
    row = ledger(table, "key", key_id)
    assert (row["spent"], row["reserved"], row["used"], row["requests"]) == (0, 0, 0, 2)
    assert reservations(table) == []
    assert [ex.outcome for ex in recorder.settled] == ["error", "error"]
    assert message(gw, secret).status_code == 200  # the budget is intact


def test_embeddings_are_budgeted_billed_on_input_and_reported(side, table: Table, cli_env, capsys) -> None:  # type: ignore[no-untyped-def]
    gw, key, recorder = side
    # Embeddings reserve their prompt bound only (a byte per token: about $0.04 here); any output
    # tokens at $2500/Mtok would exceed $0.05.
    secret, key_id = key(budget_usd=Decimal("0.05"))
    response = embed(gw, secret, text=["one two", "three"])
    assert response.status_code == 200, response.text
    cost = Decimal(3 * 1000) / 1_000_000  # 3 input tokens at $1000/Mtok
    assert response.headers["x-switchboard-cost-usd"] == "0.003"
    assert response.json()["usage"] == {"prompt_tokens": 3, "total_tokens": 3, "cost": 0.003}
    row = ledger(table, "key", key_id)
    assert (row["spent"], row["reserved"], row["requests"]) == (cost, 0, 1)
    [settled] = recorder.of(response.headers["x-request-id"])
    assert settled.kind == "embeddings" and settled.usage is not None
    assert (settled.usage.prompt_tokens, settled.usage.completion_tokens) == (3, 0)
    event = emf_events(capsys.readouterr().out)[response.headers["x-request-id"]]
    assert event["CostUSD"] == 0.003 and event["outcome"] == "ok" and event["endpoint"] == "embeddings"
    assert main(["spend", "--json", "--by", "model"]) == 0
    rows = {row["name"]: row for row in json.loads(capsys.readouterr().out)["rows"]}
    assert rows["embed"]["cost_usd"] == "0.003" and rows["embed"]["input_tokens"] == 3
    # over the budget: refused before any upstream call
    codes = [embed(gw, secret).status_code for _ in range(10)]
    assert codes[0] == 200 and codes[-1] == 402 and set(codes) == {200, 402}
    assert ledger(table, "key", key_id)["spent"] <= Decimal("0.05")


def test_rpm_applies_to_embeddings(side) -> None:  # type: ignore[no-untyped-def]
    gw, key, _ = side
    secret, _ = key(rpm=2)
    assert [embed(gw, secret).status_code for _ in range(2)] == [200, 200]
    refused = embed(gw, secret)
    assert refused.status_code == 429 and refused.json()["error"]["code"] is not None
    assert refused.headers["x-ratelimit-limit-requests"] == "2"
    assert message(gw, secret).status_code == 429  # the same window across endpoints


# Pass-through to an Anthropic target: usage is read from its answer as it goes by.
CLAUDE_PRICE = {
    "input_per_mtok": "1",
    "cached_input_per_mtok": "0.1",
    "cache_write_per_mtok": "1.25",
    "output_per_mtok": "5",
}


@pytest.fixture
def claude(gateway_factory, mock, native, table: Table):  # type: ignore[no-untyped-def]
    doc = priced_doc(
        mock.base_url,
        prices={"anthropic/claude-real": CLAUDE_PRICE},
        models={"claude": {"targets": [{"provider": "anthropic", "model": "claude-real"}]}},
    )
    doc["providers"]["anthropic"] = {
        "kind": "anthropic",
        "base_url": native.url,
        "api_key": {"ssm": "/switchboard/secrets/mock"},
    }
    gw = gateway_factory(doc=doc, table=table.name)
    recorder = Recorder()
    gw.gateway.hooks.append(recorder)
    secret, record = KeyStore(table).create("t", limits=Limits(budget_usd=Decimal(1)))
    return gw, secret, record.id, recorder


def test_a_passed_through_answer_is_billed_with_its_cache_tokens(claude, native, table: Table) -> None:  # type: ignore[no-untyped-def]
    gw, secret, key_id, recorder = claude
    answer = fixture("anthropic", "chat_cache")[
        "anthropic_response"
    ]  # 12 fresh, 2048 read, 100 written, 40 out
    native.script("claude-real", Reply(json=answer))
    response = message(gw, secret, "claude")
    assert response.status_code == 200 and response.json() == answer  # the body as Anthropic sent it
    cost = (12 * Decimal(1) + 2048 * Decimal("0.1") + 100 * Decimal("1.25") + 40 * 5) / 1_000_000
    assert response.headers["x-switchboard-cost-usd"] == "0.0005418" and cost == Decimal("0.0005418")
    [settled] = recorder.of(response.headers["x-request-id"])
    assert settled.usage is not None and settled.usage.prompt_tokens == 2160
    assert settled.usage.prompt_tokens_details == {"cached_tokens": 2048, "cache_write_tokens": 100}
    assert ledger(table, "key", key_id)["spent"] == cost


def test_a_passed_through_stream_settles_once_on_its_events_usage(claude, native, table: Table) -> None:  # type: ignore[no-untyped-def]
    gw, secret, key_id, recorder = claude
    native.script("claude-real", Reply(sse=fixture("anthropic", "stream_text")["anthropic_stream"]))
    response = message(gw, secret, "claude", stream=True)  # message_start: 25 in; message_delta: 15 out
    assert response.status_code == 200 and "event: message_stop" in response.text
    request_id = response.headers["x-request-id"]
    wait_for(lambda: bool(recorder.of(request_id)))
    time.sleep(0.1)
    [settled] = recorder.of(request_id)
    assert settled.outcome == "ok" and not settled.usage_estimated and settled.usage is not None
    assert (settled.usage.prompt_tokens, settled.usage.completion_tokens) == (25, 15)
    assert settled.cost_usd == Decimal("0.0001")  # (25 x 1 + 15 x 5) / 1e6
    wait_for(lambda: ledger(table, "key", key_id).get("spent") == Decimal("0.0001"))


def test_a_converted_stream_without_upstream_usage_is_estimated_not_free(
    gateway_factory, mock, table: Table
) -> None:  # type: ignore[no-untyped-def]
    doc = priced_doc(
        mock.base_url,
        prices={"plain/echo": CENT_PRICE},
        models={"plain": {"targets": [{"provider": "plain", "model": "echo"}]}},
    )
    # an upstream that cannot be asked for stream usage: its converted events carry zeros
    doc["providers"]["plain"] = {**doc["providers"]["mock"], "unsupported_params": ["stream_options"]}
    gw = gateway_factory(doc=doc, table=table.name)
    recorder = Recorder()
    gw.gateway.hooks.append(recorder)
    response = message(gw, gw.api_key, "plain", stream=True)
    assert response.status_code == 200 and "event: message_stop" in response.text
    request_id = response.headers["x-request-id"]
    wait_for(lambda: bool(recorder.of(request_id)))
    [settled] = recorder.of(request_id)
    assert settled.usage_estimated and settled.usage is not None
    # "echo: a b c" is 11 characters: 3 tokens at four characters each
    assert settled.usage.completion_tokens == 3 and settled.cost_usd == Decimal("0.0075")
