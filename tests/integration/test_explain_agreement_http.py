"""Explain agrees with the real call when the shared breaker or the request's overrides act.

Over HTTP with the official OpenAI client: ``POST /v1/route/explain`` for a body, then the same body
as a chat completion; the targets explain keeps, in order, are the call's trail (``x-switchboard-
trail``) up to the first target that answers. The breaker's state is the item another instance
would have written (``breaker#<target>`` in moto's table); the overrides come from a key allowed
them. A key without the right gets the same 403 from explain as from the call.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import boto3
import httpx
import openai
import pytest
from switchboard.limits.keys import KeyStore
from switchboard.limits.table import Table

from tests.conftest import routing_doc

MSG = [{"role": "user", "content": "ping pong"}]
# Never opened by the calls themselves (min_requests), open for the whole test once written.
POLICY = {"min_requests": 1000, "open_s": 600, "ramp_s": 600}
WAIT_S = 10.0


def document(mock_url: str, tag: str) -> dict[str, Any]:
    doc = routing_doc(
        mock_url,
        {
            "trio": {
                "targets": [
                    {"provider": "mock", "model": f"fail-500+{tag}"},
                    {"provider": "backup", "model": f"fail-502+{tag}"},
                    {"provider": "third", "model": f"echo+{tag}"},
                ],
                "retry": {"attempts": 1},
            },
            "spare": {"targets": [{"provider": "backup", "model": f"echo+spare+{tag}"}]},
            "shut": {
                "targets": [
                    {"provider": "mock", "model": f"echo+a+{tag}"},
                    {"provider": "backup", "model": f"echo+b+{tag}"},
                ]
            },
        },
        prices={
            f"mock/fail-500+{tag}": {"input_per_mtok": 5, "output_per_mtok": 15},
            f"backup/fail-502+{tag}": {"input_per_mtok": 1, "output_per_mtok": 2},
            f"third/echo+{tag}": {"input_per_mtok": 3, "output_per_mtok": 4},
        },
        breaker=POLICY,
    )
    doc["providers"]["third"] = dict(doc["providers"]["mock"])
    return doc


@pytest.fixture
def setup(gateway_factory: Any, mock: Any) -> tuple[Any, str, openai.OpenAI]:
    tag = "id-" + uuid.uuid4().hex[:8]
    gw = gateway_factory(doc=document(mock.base_url, tag), breaker_cache_s=0.05)
    store = KeyStore(Table(boto3.client("dynamodb", region_name="us-east-1"), gw.settings.table))
    key, _ = store.create("steer", overrides=["models", "provider"])
    return gw, tag, openai.OpenAI(base_url=gw.v1, api_key=key, max_retries=0)


def explain(client: openai.OpenAI, body: dict[str, Any]) -> dict[str, Any]:
    answer: dict[str, Any] = client.post("/route/explain", body=body, cast_to=object)
    return answer


def kept(answer: dict[str, Any]) -> list[str]:
    return [f"{t['provider']}/{t['model']}" for t in answer["targets"] if t["kept"]]


def reasons(answer: dict[str, Any]) -> dict[str, str]:
    return {f"{t['provider']}/{t['model']}": t["reason"] for t in answer["targets"]}


def call(client: openai.OpenAI, body: dict[str, Any]) -> tuple[list[str], Any]:
    fields = {k: v for k, v in body.items() if k in ("models", "provider")}
    raw = client.chat.completions.with_raw_response.create(
        model=body["model"],
        messages=MSG,
        extra_body=fields or None,  # type: ignore[arg-type]
    )
    return [entry.split(";")[0] for entry in raw.headers["x-switchboard-trail"].split(",")], raw.headers


def agree(client: openai.OpenAI, body: dict[str, Any]) -> tuple[dict[str, Any], Any]:
    """Explain, then the call: the trail is explain's kept targets up to the first that answers."""
    answer = explain(client, body)
    order = kept(answer)
    answering = next(i for i, label in enumerate(order) if "fail-" not in label)
    trail, headers = call(client, body)
    assert trail == order[: answering + 1], answer
    return answer, headers


def open_breaker(gw: Any, label: str, opened_at: float) -> None:
    """The state item an instance writes when it opens ``label``'s breaker (routing.breaker)."""
    boto3.client("dynamodb", region_name="us-east-1").put_item(
        TableName=gw.settings.table,
        Item={
            "pk": {"S": f"breaker#{label}"},
            "sk": {"S": "state"},
            "opened_at": {"N": repr(opened_at)},
            "ttl": {"N": str(int(opened_at) + 86400)},
        },
    )


def until_explained(
    client: openai.OpenAI, body: dict[str, Any], label: str, reason: str, detail: str = ""
) -> dict[str, Any]:
    """Explain until ``label``'s reason is ``reason`` and its detail says ``detail`` (the instance
    reads the breaker's state in the background)."""
    deadline = time.monotonic() + WAIT_S
    while True:
        answer = explain(client, body)
        entry = next(t for t in answer["targets"] if f"{t['provider']}/{t['model']}" == label)
        if entry["reason"] == reason and detail in entry["detail"]:
            return answer
        assert time.monotonic() < deadline, answer
        time.sleep(0.02)


def test_an_open_breaker_is_explained_and_the_call_skips_it(setup: Any) -> None:
    gw, tag, client = setup
    body = {"model": "trio", "messages": MSG}
    label = f"mock/fail-500+{tag}"
    open_breaker(gw, label, time.time())
    answer = until_explained(client, body, label, "breaker_open")
    entry = next(t for t in answer["targets"] if t["model"] == f"fail-500+{tag}")
    assert not entry["kept"] and "open" in entry["detail"]
    assert kept(answer) == [f"backup/fail-502+{tag}", f"third/echo+{tag}"]
    _, headers = agree(client, body)
    assert headers["x-switchboard-breaker"] == f"skipped {label} open"


def test_every_target_open_explains_the_least_recently_failed_one(setup: Any) -> None:
    gw, tag, client = setup
    body = {"model": "shut", "messages": MSG}
    now = time.time()
    open_breaker(gw, f"mock/echo+a+{tag}", now)
    open_breaker(gw, f"backup/echo+b+{tag}", now - 5)  # failed less recently
    answer = until_explained(client, body, f"mock/echo+a+{tag}", "breaker_open")
    answer = until_explained(client, body, f"backup/echo+b+{tag}", "kept")
    assert kept(answer) == [f"backup/echo+b+{tag}"]
    tried = next(t for t in answer["targets"] if t["kept"])
    assert "failed least recently" in tried["detail"]
    _, headers = agree(client, body)
    assert headers["x-switchboard-breaker"] == f"all-open; tried backup/echo+b+{tag}"


@pytest.mark.parametrize(
    ("extra", "expected", "skipped"),
    [
        ({"provider": {"order": ["third", "backup"]}}, ["third", "backup", "mock"], {}),
        ({"provider": {"only": ["backup", "third"]}}, ["backup", "third"], {"mock": "override"}),
        ({"provider": {"ignore": ["backup"]}}, ["mock", "third"], {"backup": "override"}),
        (
            {"provider": {"order": ["third"], "allow_fallbacks": False}},
            ["third"],
            {"mock": "override", "backup": "override"},
        ),
        ({"provider": {"sort": "price"}}, ["backup", "third", "mock"], {}),
        ({"provider": {"max_price": {"prompt": 4}}}, ["backup", "third"], {"mock": "price_cap"}),
        (
            {"models": ["spare"], "provider": {"ignore": ["third"]}},
            ["mock", "backup", "spare"],
            {"third": "override"},
        ),
    ],
    ids=["order", "only", "ignore", "allow_fallbacks", "sort-price", "max_price", "models"],
)
def test_explain_applies_each_override_as_the_call_does(
    setup: Any, extra: dict[str, Any], expected: list[str], skipped: dict[str, str]
) -> None:
    _gw, tag, client = setup
    body = {"model": "trio", "messages": MSG, **extra}
    answer, headers = agree(client, body)
    names = {
        f"mock/fail-500+{tag}": "mock",
        f"backup/fail-502+{tag}": "backup",
        f"third/echo+{tag}": "third",
        f"backup/echo+spare+{tag}": "spare",
    }
    assert [names[label] for label in kept(answer)] == expected
    assert {names[k]: v for k, v in reasons(answer).items() if v != "kept"} == skipped
    assert headers["x-switchboard-overrides"]


def test_a_key_without_the_right_gets_the_same_403_from_explain(setup: Any) -> None:
    gw, _tag, _client = setup
    denied = openai.OpenAI(base_url=gw.v1, api_key=gw.api_key, max_retries=0)
    body = {"model": "trio", "messages": MSG, "provider": {"sort": "price"}}
    with pytest.raises(openai.PermissionDeniedError) as explained:
        explain(denied, body)
    with pytest.raises(openai.PermissionDeniedError) as called:
        call(denied, body)
    assert explained.value.body == called.value.body
    assert isinstance(called.value.body, dict) and called.value.body["code"] == "override_not_allowed"
    assert called.value.body["param"] == "provider.sort"


@pytest.mark.parametrize(
    ("sort", "seeds", "expected", "figures"),
    [
        (
            "latency",
            {"mock": (0.5, None), "backup": (0.1, None)},
            ["backup", "mock", "third"],
            ["0.1 s to first token", "0.5 s to first token", "no time to first token measured"],
        ),
        (
            "throughput",
            {"mock": (0.1, 50.0), "backup": (0.9, 200.0), "third": (0.05, None)},
            ["backup", "mock", "third"],
            ["200 tokens/s", "50 tokens/s", "no throughput measured"],
        ),
    ],
)
def test_provider_sort_by_speed_reads_the_fastest_strategys_shared_stats(
    setup: Any,
    sort: str,
    seeds: dict[str, tuple[float, float | None]],
    expected: list[str],
    figures: list[str],
) -> None:
    """``provider.sort: latency|throughput`` orders by the EWMAs ``fastest`` keeps (seeded here as
    the shared items would give them); a target with no figure goes after the measured ones, in
    the plan's order."""
    gw, tag, client = setup
    labels = {
        "mock": f"mock/fail-500+{tag}",
        "backup": f"backup/fail-502+{tag}",
        "third": f"third/echo+{tag}",
    }
    for name, (ttft, tps) in seeds.items():
        gw.gateway.router.speeds.seed(labels[name], ttft, tps)
    body = {"model": "trio", "messages": MSG, "provider": {"sort": sort}}
    answer, headers = agree(client, body)
    assert kept(answer) == [labels[name] for name in expected]
    details = [t["detail"] for t in answer["targets"]]
    assert all(f"provider.sort {sort}: {figure}" in d for figure, d in zip(figures, details, strict=True))
    assert headers["x-switchboard-overrides"] == "provider.sort"


@pytest.mark.parametrize(("draw", "reason"), [(0.99, "breaker_open"), (0.0, "kept")])
def test_a_half_open_breaker_is_a_draw_explained_as_the_call_draws(
    setup: Any, draw: float, reason: str
) -> None:
    """Half-open, a share of requests may try the target: the draw (the breaker's ``rand``, fixed
    here) decides for explain as for the call, and explain says which way it went."""
    gw, tag, client = setup
    gw.gateway.breaker.rand = lambda: draw
    label = f"mock/fail-500+{tag}"
    open_breaker(gw, label, time.time() - POLICY["open_s"] - 60)  # a tenth into the ramp
    body = {"model": "trio", "messages": MSG}
    until_explained(client, body, label, reason, "half-open")
    explained = httpx.post(
        gw.v1 + "/route/explain", json=body, headers={"authorization": f"Bearer {client.api_key}"}
    )
    _, headers = agree(client, body)
    assert explained.headers.get("x-switchboard-breaker") == headers.get("x-switchboard-breaker")
    if reason == "kept":
        assert "x-switchboard-breaker" not in headers
    else:
        assert headers["x-switchboard-breaker"] == f"skipped {label} half-open"


@pytest.mark.parametrize("endpoint", ["messages", "responses"])
def test_overrides_in_a_messages_or_responses_body_are_explained_as_that_call_applies_them(
    setup: Any, endpoint: str
) -> None:
    """The same agreement for the other chat-type bodies: ``provider.order`` puts the target that
    answers first, and ``ignore`` skips one, in explain and in the /v1/messages or /v1/responses
    call's trail alike (the overrides read from those bodies, not only from chat's)."""
    gw, tag, client = setup
    steer = {"provider": {"order": ["third", "backup"], "ignore": ["mock"]}}
    if endpoint == "messages":
        body: dict[str, Any] = {"model": "trio", "max_tokens": 16, "messages": MSG, **steer}
    else:
        body = {"model": "trio", "input": "ping pong", "store": False, **steer}
    answer = client.post(f"/route/explain?endpoint={endpoint}", body=body, cast_to=object)
    assert isinstance(answer, dict)
    assert kept(answer) == [f"third/echo+{tag}", f"backup/fail-502+{tag}"]
    assert reasons(answer)[f"mock/fail-500+{tag}"] == "override"
    headers = {"authorization": f"Bearer {client.api_key}"}
    reply = httpx.post(f"{gw.v1}/{endpoint}", json=body, headers=headers, timeout=WAIT_S)
    assert reply.status_code == 200, reply.text
    trail = [entry.split(";")[0] for entry in reply.headers["x-switchboard-trail"].split(",")]
    assert trail == kept(answer)[:1]
    assert reply.headers["x-switchboard-overrides"]
