"""Issue 15's done-means, as a user meets it: ``switchboard dev`` (what ``make dev`` runs) and the
official OpenAI SDK, with the dev key and the dev routing document (infra/routing.dev.json).

Every strategy and the rule's condition (demo aliases), the per-request overrides (``extra_body``),
the latency trigger, hedging, the shared breaker and explain (``client.post("/route/explain")``),
each read from the response headers through ``with_raw_response``. Where the decision is not a
random draw, explain's kept targets are the call's trail up to the target that answers.
"""

from __future__ import annotations

import time
from typing import Any

import boto3
import openai
import pytest

from tests.integration.devprocess import DEV_KEY, DevProcess

MSG: Any = [{"role": "user", "content": "hello there"}]


def client(dev: DevProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=dev.base, api_key=DEV_KEY, max_retries=0)


def explain(dev: DevProcess, **body: Any) -> dict[str, Any]:
    answer: dict[str, Any] = client(dev).post(
        "/route/explain", body={"messages": MSG, **body}, cast_to=object
    )
    return answer


def kept(answer: dict[str, Any]) -> list[str]:
    return [f"{t['provider']}/{t['model']}" for t in answer["targets"] if t["kept"]]


def call(dev: DevProcess, model: str, **extra: Any) -> tuple[list[tuple[str, str]], Any]:
    """The call's trail as (target, class), and its headers."""
    fields = {k: extra.pop(k) for k in ("models", "provider") if k in extra}
    raw = client(dev).chat.completions.with_raw_response.create(
        model=model, messages=MSG, extra_body=fields or None, **extra
    )
    assert raw.parse().choices[0].message.content
    trail = [tuple(e.split(";")[:2]) for e in raw.headers["x-switchboard-trail"].split(",")]
    return trail, raw.headers  # type: ignore[return-value]


def tried(trail: list[tuple[str, str]]) -> list[str]:
    """The targets in the order tried (a target's retries once)."""
    order: list[str] = []
    for target, _ in trail:
        if target not in order:
            order.append(target)
    return order


def until_answering(answer: dict[str, Any]) -> list[str]:
    order = kept(answer)
    return order[: next(i for i, t in enumerate(order) if "fail-" not in t) + 1]


@pytest.mark.parametrize(
    ("model", "extra"),
    [
        ("demo-fallback", {}),
        ("demo-cheapest", {"max_tokens": 5}),
        ("demo-ab", {"user": "dana"}),
        ("demo-cheapest", {"metadata": {"tier": "free"}}),  # the dev document's rule: a reroute
    ],
    ids=["fallback", "cheapest", "sticky", "rule"],
)
def test_explain_is_the_call_for_the_deterministic_strategies_and_the_rule(
    dev: DevProcess, model: str, extra: dict[str, Any]
) -> None:
    answer = explain(dev, model=model, **extra)
    trail, headers = call(dev, model, **extra)
    assert tried(trail) == until_answering(answer), answer
    if "metadata" in extra:
        assert answer["model"] == "mock-echo" and answer["rules"][0]["index"] == 0
        assert headers["x-switchboard-rule"] == "rules[0]: demo-cheapest -> mock-echo"


@pytest.mark.parametrize("model", ["demo-weighted", "demo-fastest", "demo-nested"])
def test_the_drawn_strategies_serve_a_target_explain_keeps(dev: DevProcess, model: str) -> None:
    """A weighted draw or a fastest exploration is drawn anew per request: the call's targets are
    among those explain keeps, in the strategy's groups."""
    answer = explain(dev, model=model)
    trail, _ = call(dev, model)
    assert set(tried(trail)) <= set(kept(answer)), answer
    assert answer["strategy"] == ("fallback" if model == "demo-nested" else model.removeprefix("demo-"))


def test_overrides_through_extra_body_agree_with_explain(dev: DevProcess) -> None:
    """The dev key may use the overrides: ``models`` adds demo-cheapest's targets after
    demo-fallback's; ``max_price`` drops the dear one (explain: ``price_cap``)."""
    extra = {"models": ["demo-cheapest"], "provider": {"sort": "price", "max_price": {"prompt": 1}}}
    answer = explain(dev, model="demo-fallback", **extra)
    trail, headers = call(dev, "demo-fallback", **extra)
    assert tried(trail) == until_answering(answer) == ["mock/fail-500", "mock/echo"]
    assert {t["model"]: t["reason"] for t in answer["targets"] if not t["kept"]}["echo+dear"] == "price_cap"
    assert headers["x-switchboard-overrides"] == "models,provider.max_price,provider.sort"


def test_the_latency_trigger_and_hedging(dev: DevProcess) -> None:
    trail, _ = call(dev, "demo-latency")
    assert trail == [("mock/echo+slow-2", "slow"), ("mock/echo", "ok")]
    trail, headers = call(dev, "demo-hedge")
    assert sorted(trail) == [("mock/echo", "ok"), ("mock/echo+slow-2", "cancelled")]
    assert headers["x-switchboard-provider"] == "mock" and headers["x-switchboard-model"] == "echo"


def test_an_open_breaker_is_explained_and_skipped(dev: DevProcess) -> None:
    """The state item an instance writes when demo-breaker's failing target opens (here written as
    another instance would, so the test needs no run of failures)."""
    boto3.client(
        "dynamodb",
        region_name="us-east-1",
        endpoint_url=f"http://127.0.0.1:{dev.ports['MOTO_PORT']}",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    ).put_item(
        TableName="switchboard",
        Item={
            "pk": {"S": "breaker#mock/fail-503"},
            "sk": {"S": "state"},
            "opened_at": {"N": repr(time.time())},
            "ttl": {"N": str(int(time.time()) + 3600)},
        },
    )
    deadline = time.monotonic() + 15  # the instance re-reads the state every 2 s, in the background
    while (answer := explain(dev, model="demo-breaker"))["targets"][0]["reason"] != "breaker_open":
        assert time.monotonic() < deadline, answer
        time.sleep(0.1)
    trail, headers = call(dev, "demo-breaker")
    assert tried(trail) == kept(answer) == ["mock/echo"]
    assert headers["x-switchboard-breaker"] == "skipped mock/fail-503 open"
