"""Strategies per alias: weighted and sticky distributions, cheapest, fastest (with exploration),
nested groups (and the cycles the document refuses), context-window skipping. All through
``decide``, the function both a call and explain use; every random source is seeded."""

from __future__ import annotations

import json
import random
from collections import Counter
from decimal import Decimal
from typing import Any

import pytest
from switchboard.core.errors import InvalidRequest
from switchboard.core.money import Price
from switchboard.routing.decide import Reason, RequestFacts, decide
from switchboard.routing.document import RoutingDocument, load_document
from switchboard.routing.planner import PlannedTarget, plan
from switchboard.routing.speed import SpeedBoard

PROVIDERS = {name: {"kind": "openai", "base_url": f"http://{name}.test/v1"} for name in "abcd"}


def doc(models: dict[str, Any], **extra: Any) -> RoutingDocument:
    return RoutingDocument.model_validate({"version": 1, "providers": PROVIDERS, "models": models, **extra})


def t(provider: str, model: str = "m", **extra: Any) -> dict[str, Any]:
    return {"provider": provider, "model": model, **extra}


def kept(decision: Any) -> list[str]:
    return [v.target.label for v in decision.verdicts if v.kept]


def chi_square(observed: Counter[str], expected: dict[str, float]) -> float:
    return sum((observed[k] - e) ** 2 / e for k, e in expected.items())


# Upper 0.999 quantiles of chi-square: a seeded draw beyond them would mean the sampler is biased.
CHI2_999 = {1: 10.83, 2: 13.82, 3: 16.27}


# ---------------------------------------------------------------------------- weighted and sticky


def test_weighted_first_choice_follows_the_weights_within_chi_square_bounds() -> None:
    d = doc(
        {"w": {"strategy": "weighted", "targets": [t("a", weight=6), t("b", weight=3), t("c", weight=1)]}}
    )
    rng = random.Random(1234)
    n = 20_000
    firsts = Counter(plan(d, "w", rand=rng.random).targets[0].label for _ in range(n))
    expected = {"a/m": n * 0.6, "b/m": n * 0.3, "c/m": n * 0.1}
    assert chi_square(firsts, expected) < CHI2_999[2], firsts


def test_sticky_on_user_gives_one_user_one_order_and_users_the_weights() -> None:
    route = {
        "strategy": "weighted",
        "sticky": {"on": "user"},
        "targets": [t("a", "control", weight=1), t("b", "variant", weight=1)],
    }
    d = doc({"ab": route})
    chaos = random.Random(99)  # the unseeded draw, which stickiness must ignore
    for user in ("alice", "bob", "carol"):
        orders = {tuple(kept(decide(d, "ab", RequestFacts(user=user), rand=chaos.random))) for _ in range(20)}
        assert len(orders) == 1, (user, orders)
    users = [f"user-{i}" for i in range(4000)]
    firsts = Counter(kept(decide(d, "ab", RequestFacts(user=u), rand=chaos.random))[0] for u in users)
    assert chi_square(firsts, {"a/control": 2000, "b/variant": 2000}) < CHI2_999[1], firsts


def test_sticky_on_a_metadata_field_and_without_it_the_draw_is_random() -> None:
    route = {
        "strategy": "weighted",
        "sticky": {"on": "metadata.tenant"},
        "targets": [t("a", weight=3), t("b", weight=1)],
    }
    d = doc({"ab": route})
    rng = random.Random(5)
    same = {
        kept(decide(d, "ab", RequestFacts(metadata={"tenant": "acme"}), rand=rng.random))[0]
        for _ in range(30)
    }
    assert len(same) == 1
    tenants = Counter(
        kept(decide(d, "ab", RequestFacts(metadata={"tenant": f"t{i}"}), rand=rng.random))[0]
        for i in range(4000)
    )
    assert chi_square(tenants, {"a/m": 3000, "b/m": 1000}) < CHI2_999[1], tenants
    # No tenant in the request: not sticky, the ordinary weighted draw.
    loose = {kept(decide(d, "ab", RequestFacts(), rand=rng.random))[0] for _ in range(60)}
    assert loose == {"a/m", "b/m"}


def test_sticky_is_refused_on_a_route_that_is_not_weighted() -> None:
    with pytest.raises(ValueError, match="'sticky' applies to a weighted route only"):
        load_document(
            json.dumps(
                {
                    "version": 1,
                    "providers": PROVIDERS,
                    "models": {"m": {"sticky": {"on": "user"}, "targets": [t("a")]}},
                }
            )
        )


def test_weight_zero_targets_are_skipped_with_their_reason() -> None:
    d = doc({"w": {"strategy": "weighted", "targets": [t("a", weight=1), t("b", weight=0)]}})
    decision = decide(d, "w", RequestFacts())
    assert [(v.target.label, v.reason) for v in decision.verdicts] == [
        ("a/m", Reason.KEPT),
        ("b/m", Reason.ZERO_WEIGHT),
    ]


# ---------------------------------------------------------------------------- cheapest

PRICES = {
    # cheap input, dear output
    "a/m": Price(input_per_mtok=Decimal("0.10"), output_per_mtok=Decimal("20")),
    # dear input, cheap output
    "b/m": Price(input_per_mtok=Decimal("5"), output_per_mtok=Decimal("1")),
    "c/m": Price(input_per_mtok=Decimal("1"), output_per_mtok=Decimal("4")),
}


def price_of(target: PlannedTarget) -> Price | None:
    return PRICES.get(target.label)


def test_cheapest_orders_by_this_requests_input_and_output_tokens() -> None:
    d = doc({"c": {"strategy": "cheapest", "targets": [t("a"), t("b"), t("c"), t("d")]}})
    long_prompt = RequestFacts(prompt_tokens=100_000, max_tokens=10)
    # a: 0.01 + 0.0002; b: 0.5 + 0.00001; c: 0.1 + 0.00004 -> a, c, b; d unpriced last
    assert kept(decide(d, "c", long_prompt, price_of=price_of)) == ["a/m", "c/m", "b/m", "d/m"]
    long_answer = RequestFacts(prompt_tokens=10, max_tokens=100_000)
    # a: 2.0; b: 0.1; c: 0.4 -> b, c, a
    assert kept(decide(d, "c", long_answer, price_of=price_of)) == ["b/m", "c/m", "a/m", "d/m"]
    decision = decide(d, "c", long_answer, price_of=price_of)
    assert decision.verdicts[0].cost_usd == Decimal("0.00005") + Decimal("0.1")
    low, high = decision.cost_range() or (None, None)
    assert (low, high) == (decision.verdicts[0].cost_usd, decision.verdicts[2].cost_usd)


def test_cheapest_with_no_cap_uses_the_default_output_estimate() -> None:
    d = doc({"c": {"strategy": "cheapest", "targets": [t("a"), t("b")]}})
    facts = RequestFacts(prompt_tokens=100)  # 4096 output tokens assumed: output price dominates
    assert facts.output_tokens == 4096
    assert kept(decide(d, "c", facts, price_of=price_of)) == ["b/m", "a/m"]


def test_cheapest_equal_prices_keep_the_operator_order() -> None:
    d = doc({"c": {"strategy": "cheapest", "targets": [t("d", "x"), t("c"), t("d", "y")]}})
    assert kept(decide(d, "c", RequestFacts(prompt_tokens=5), price_of=price_of)) == ["c/m", "d/x", "d/y"]


# ---------------------------------------------------------------------------- fastest


def board(explore: float = 0.0, **speeds: tuple[float, float | None]) -> SpeedBoard:
    b = SpeedBoard(explore=explore, clock=lambda: 1000.0)
    for label, (ttft, tps) in speeds.items():
        b.seed(label.replace("_", "/"), ttft, tps)
    return b


def test_fastest_orders_by_expected_time_from_first_token_and_throughput() -> None:
    d = doc({"f": {"strategy": "fastest", "targets": [t("a"), t("b"), t("c"), t("d")]}})
    speeds = board(a_m=(0.2, 20.0), b_m=(1.0, 200.0), c_m=(0.5, 50.0))
    short = RequestFacts(max_tokens=10)  # a: 0.7 s, b: 1.05 s, c: 0.7 s (a first: operator order)
    assert kept(decide(d, "f", short, speeds=speeds)) == ["a/m", "c/m", "b/m", "d/m"]  # d is cold: last
    long = RequestFacts(max_tokens=1000)  # a: 50.2 s, b: 6 s, c: 20.5 s
    assert kept(decide(d, "f", long, speeds=speeds)) == ["b/m", "c/m", "a/m", "d/m"]
    decision = decide(d, "f", long, speeds=speeds)
    assert decision.verdicts[0].speed is not None and decision.verdicts[-1].speed is None
    # A throughput unknown for one of them: every target by its time to first token alone.
    speeds.seed("c/m", 0.5, None)
    assert kept(decide(d, "f", long, speeds=speeds)) == ["a/m", "c/m", "b/m", "d/m"]


def test_fastest_explores_cold_targets_at_the_configured_rate() -> None:
    d = doc({"f": {"strategy": "fastest", "targets": [t("a"), t("b"), t("c")]}})
    speeds = board(explore=0.1, a_m=(0.1, None), b_m=(0.2, None))  # c is cold
    rng = random.Random(7)
    n = 5000
    decisions = [decide(d, "f", RequestFacts(), speeds=speeds, rand=rng.random) for _ in range(n)]
    firsts = Counter(kept(x)[0] for x in decisions)
    explored = sum(x.explored for x in decisions)
    assert firsts["c/m"] == explored  # exploring tries the cold target first
    assert firsts["b/m"] == 0 and firsts["a/m"] == n - explored
    # 10% of 5000 is 500, standard deviation 21: six of them either side
    assert 500 - 6 * 21 < explored < 500 + 6 * 21


def test_fastest_explores_another_warm_target_when_none_is_cold() -> None:
    d = doc({"f": {"strategy": "fastest", "targets": [t("a"), t("b")]}})
    speeds = board(explore=0.5, a_m=(0.1, None), b_m=(0.2, None))
    rng = random.Random(11)
    firsts = Counter(
        kept(decide(d, "f", RequestFacts(), speeds=speeds, rand=rng.random))[0] for _ in range(2000)
    )
    assert chi_square(firsts, {"a/m": 1000, "b/m": 1000}) < CHI2_999[1], firsts


def test_a_stale_measure_makes_a_target_cold_again() -> None:
    now = [1000.0]
    b = SpeedBoard(clock=lambda: now[0], stale_s=300)
    b.seed("a/m", 5.0, None)
    assert b.speed("a/m") is not None
    now[0] += 301
    assert b.speed("a/m") is None


# ---------------------------------------------------------------------------- nested groups


def test_a_weighted_group_inside_a_fallback_chain() -> None:
    d = doc(
        {
            "pool": {"strategy": "weighted", "targets": [t("b", weight=3), t("c", weight=1)]},
            "chain": {"targets": [t("a"), {"alias": "pool"}, t("d")]},
        }
    )
    rng = random.Random(3)
    orders = Counter(tuple(x.label for x in plan(d, "chain", rand=rng.random).targets) for _ in range(4000))
    assert set(orders) == {("a/m", "b/m", "c/m", "d/m"), ("a/m", "c/m", "b/m", "d/m")}
    assert chi_square(Counter({k[1]: v for k, v in orders.items()}), {"b/m": 3000, "c/m": 1000}) < CHI2_999[1]
    decision = decide(d, "chain", RequestFacts(), rand=lambda: 0.0)
    assert [v.group for v in decision.verdicts] == ["chain", "pool", "pool", "chain"]


def test_a_nested_group_in_cheapest_is_placed_by_its_cheapest_member() -> None:
    d = doc(
        {
            "pool": {"targets": [t("b"), t("a")]},  # fallback inside: b then a
            "cheap": {"strategy": "cheapest", "targets": [t("c"), {"alias": "pool"}]},
        }
    )
    facts = RequestFacts(prompt_tokens=100_000, max_tokens=10)  # a is the cheapest of all
    assert kept(decide(d, "cheap", facts, price_of=price_of)) == ["b/m", "a/m", "c/m"]


def test_a_target_reached_twice_is_kept_once() -> None:
    d = doc({"inner": {"targets": [t("a")]}, "outer": {"targets": [t("a"), {"alias": "inner"}, t("b")]}})
    decision = decide(d, "outer", RequestFacts())
    assert [(v.target.label, v.reason) for v in decision.verdicts] == [
        ("a/m", Reason.KEPT),
        ("a/m", Reason.DUPLICATE),
        ("b/m", Reason.KEPT),
    ]


@pytest.mark.parametrize(
    ("models", "message"),
    [
        ({"x": {"targets": [{"alias": "x"}]}}, "nested aliases form a cycle: x -> x"),
        (
            {
                "x": {"targets": [t("a"), {"alias": "y"}]},
                "y": {"strategy": "weighted", "targets": [{"alias": "z"}]},
                "z": {"targets": [{"alias": "x"}]},
            },
            "nested aliases form a cycle: x -> y -> z -> x",
        ),
        ({"x": {"targets": [{"alias": "nope"}]}}, "nests alias 'nope', which is not in 'models'"),
        (
            {"x": {"targets": [{"alias": "y", "provider": "a", "model": "m"}]}, "y": {"targets": [t("a")]}},
            "not both",
        ),
        ({"x": {"targets": [{"provider": "a"}]}}, "needs 'provider' and 'model'"),
    ],
    ids=["self", "three", "unknown", "both", "half"],
)
def test_nested_alias_mistakes_are_refused_when_the_document_loads(
    models: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError, match="invalid routing document") as caught:
        load_document(json.dumps({"version": 1, "providers": PROVIDERS, "models": models}))
    assert message in str(caught.value)


# ---------------------------------------------------------------------------- context windows


def test_targets_whose_window_the_prompt_cannot_fit_are_skipped() -> None:
    windows = {"c/m": Price(input_per_mtok=Decimal(1), output_per_mtok=Decimal(1), context_window=50_000)}
    d = doc({"m": {"targets": [t("a", context_window=8000), t("b"), t("c")]}})
    decision = decide(d, "m", RequestFacts(prompt_tokens=20_000), price_of=lambda x: windows.get(x.label))
    assert [(v.target.label, v.reason) for v in decision.verdicts] == [
        ("a/m", Reason.CONTEXT_TOO_SMALL),  # the document's window
        ("b/m", Reason.KEPT),  # no window known: tried
        ("c/m", Reason.KEPT),  # the price table's window, large enough
    ]
    assert "about 20000 tokens" in decision.verdicts[0].detail
    assert kept(
        decide(d, "m", RequestFacts(prompt_tokens=60_000), price_of=lambda x: windows.get(x.label))
    ) == ["b/m"]


def test_a_prompt_no_target_fits_is_a_400_context_length_exceeded() -> None:
    d = doc({"m": {"targets": [t("a", context_window=1000), t("b", context_window=2000)]}})
    with pytest.raises(InvalidRequest) as caught:
        decide(d, "m", RequestFacts(prompt_tokens=5000))
    assert caught.value.code == "context_length_exceeded"
    assert "a/m" in caught.value.message and "b/m" in caught.value.message


def test_the_built_in_price_tables_window_applies_when_the_document_gives_none() -> None:
    from switchboard.routing.pricing import PriceBook
    from switchboard.routing.router import Router
    from switchboard.wiring import price_lookup

    d = RoutingDocument.model_validate(
        {
            "version": 1,
            "providers": {"openai": {"kind": "openai", "base_url": "https://api.openai.com/v1"}},
            "models": {
                "m": {
                    "targets": [
                        {"provider": "openai", "model": "gpt-4o"},
                        {"provider": "openai", "model": "gpt-4.1"},
                    ]
                }
            },
        }
    )
    decision = Router(price_lookup(PriceBook())).decide_facts(d, "m", RequestFacts(prompt_tokens=200_000))
    assert [(v.target.model, v.reason) for v in decision.verdicts] == [
        ("gpt-4o", Reason.CONTEXT_TOO_SMALL),  # 128000 in data/prices.json
        ("gpt-4.1", Reason.KEPT),
    ]
    assert "context window of 128000" in decision.verdicts[0].detail


def test_filters_are_the_extension_point_for_other_skip_reasons() -> None:
    from switchboard.routing.router import Router

    d = doc({"m": {"targets": [t("a"), t("b"), t("c")]}})

    def breaker(target: PlannedTarget) -> tuple[Reason, str] | None:
        return (Reason.BREAKER_OPEN, "open until 12:00:05Z") if target.label == "a/m" else None

    def override(target: PlannedTarget) -> tuple[Reason, str] | None:
        return (Reason.OVERRIDE, "provider.ignore names c") if target.provider_name == "c" else None

    router = Router(filters=[breaker])
    decision = router.decide_facts(d, "m", RequestFacts(), filters=[override])
    assert [(v.target.label, v.reason, v.detail) for v in decision.verdicts] == [
        ("a/m", Reason.BREAKER_OPEN, "open until 12:00:05Z"),
        ("b/m", Reason.KEPT, "fallback order in 'm'"),
        ("c/m", Reason.OVERRIDE, "provider.ignore names c"),
    ]
    assert [x.label for x in decision.plan.targets] == ["b/m"]
