"""Rule conditions over HTTP with the official OpenAI client: a key's tags, the request's metadata
and user, the endpoint, the time of day from the gateway's injected clock, and a skip."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import httpx
import openai
from switchboard.limits.keys import KeyStore
from switchboard.limits.table import Table

from tests.limits.test_side_endpoints_http import message

MODELS = {
    "big": {"targets": [{"provider": "mock", "model": "echo"}, {"provider": "backup", "model": "echo+b"}]},
    "small": {"targets": [{"provider": "backup", "model": "echo"}]},
}
RULES: list[dict[str, Any]] = [
    {"when": {"key_tags": ["batch"]}, "reroute": {"big": "small"}, "description": "batch keys go small"},
    {"when": {"metadata": {"tier": "free"}}, "reroute": {"big": "small"}},
    {"when": {"user": ["tester"], "endpoint": ["chat"]}, "reroute": {"big": "small"}},
    {"when": {"hours_utc": {"from": 0, "to": 6}}, "skip": ["mock/echo"]},
    {"when": {"metadata": {"team": "red"}, "endpoint": ["messages"]}, "reroute": {"big": "small"}},
]


def ask(client: openai.OpenAI, **extra: Any) -> Any:
    return client.chat.completions.with_raw_response.create(
        model="big", messages=[{"role": "user", "content": "hi"}], max_tokens=4, **extra
    )


def test_conditions_route_real_requests(start, table: Table) -> None:  # type: ignore[no-untyped-def]
    gw, _ = start(models=MODELS, rules=RULES)
    noon = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)
    gw.gateway.router.clock = lambda: noon
    store = KeyStore(table)
    plain, _ = store.create("plain")
    batch, _ = store.create("batch", tags=["batch"])
    client = openai.OpenAI(api_key=plain, base_url=gw.v1, max_retries=0)

    first = ask(client)
    assert first.headers["x-switchboard-provider"] == "mock"
    assert "x-switchboard-rule" not in first.headers

    tagged = ask(openai.OpenAI(api_key=batch, base_url=gw.v1, max_retries=0))
    assert tagged.headers["x-switchboard-rule"] == "rules[0]: big -> small"
    assert tagged.headers["x-switchboard-provider"] == "backup"

    free = ask(client, metadata={"tier": "free"}, store=True)
    assert free.headers["x-switchboard-rule"] == "rules[1]: big -> small"

    by_user = ask(client, user="tester")
    assert by_user.headers["x-switchboard-rule"] == "rules[2]: big -> small"
    # The same user on /v1/messages: rule 2 names the chat endpoint only.
    on_messages = message(gw, plain, "big", metadata={"user_id": "tester"})
    assert on_messages.status_code == 200, on_messages.text
    assert "x-switchboard-rule" not in on_messages.headers
    red = message(gw, plain, "big", metadata={"user_id": "tester", "team": "red"})
    assert red.headers["x-switchboard-rule"] == "rules[4]: big -> small"
    explained = httpx.post(
        gw.v1 + "/route/explain",
        json={
            "model": "big",
            "max_tokens": 4,
            "system": "s",
            "messages": [{"role": "user", "content": "x"}],
            "metadata": {"user_id": "tester", "team": "red"},
        },
        headers={"x-api-key": plain},
    ).json()
    assert explained["endpoint"] == "messages" and explained["rules"][0]["index"] == 4

    gw.gateway.router.clock = lambda: datetime(2026, 12, 2, 3, 0, tzinfo=UTC)  # the night: skip mock/echo
    night = ask(client)
    assert night.headers["x-switchboard-provider"] == "backup"
    assert night.headers["x-switchboard-model"] == "echo+b"
    assert night.headers["x-switchboard-attempts"] == "1"  # skipped, not tried and failed over
