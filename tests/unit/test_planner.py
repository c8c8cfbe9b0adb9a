"""The planner: alias in, ordered targets out. Pure; the random source is passed in."""

from __future__ import annotations

import random
from collections import Counter
from typing import Any

import pytest
from switchboard.core.errors import ErrorClass, ModelNotFound
from switchboard.routing.document import RetryPolicy, RoutingDocument, Timeouts
from switchboard.routing.planner import plan

PROVIDERS = {
    "a": {"kind": "openai", "base_url": "http://a.test/v1"},
    "b": {"kind": "openai", "base_url": "http://b.test/v1"},
    "c": {"kind": "openai", "base_url": "http://c.test/v1"},
}


def doc(models: dict[str, Any], **extra: Any) -> RoutingDocument:
    return RoutingDocument.model_validate({"version": 1, "providers": PROVIDERS, "models": models, **extra})


def labels(route_plan: Any) -> list[str]:
    return [t.label for t in route_plan.targets]


def weighted(*weights: int) -> dict[str, Any]:
    names = "abc"
    return {
        "strategy": "weighted",
        "targets": [{"provider": names[i], "model": f"m{i}", "weight": w} for i, w in enumerate(weights)],
    }


def test_fallback_keeps_the_operator_order_whatever_the_random_source() -> None:
    route = {"targets": [{"provider": p, "model": f"x-{p}"} for p in "cab"]}
    for value in (0.0, 0.5, 0.999):
        assert labels(plan(doc({"m": route}), "m", rand=lambda v=value: v)) == ["c/x-c", "a/x-a", "b/x-b"]


def test_plan_carries_provider_config_retry_and_fallback_on() -> None:
    route = {
        "targets": [{"provider": "b", "model": "big", "context_window": 1000}],
        "retry": {"attempts": 4},
        "fallback_on": ["server"],
    }
    p = plan(doc({"m": route}), "m")
    assert p.alias == "m"
    assert p.targets[0].provider_name == "b"
    assert p.targets[0].provider.base_url == "http://b.test/v1"
    assert p.targets[0].context_window == 1000
    assert p.retry.attempts == 4
    assert p.fallback_on == frozenset({ErrorClass.SERVER})


def test_route_without_retry_uses_the_document_default() -> None:
    d = doc({"m": {"targets": [{"provider": "a", "model": "x"}]}}, defaults={"retry": {"attempts": 7}})
    assert plan(d, "m").retry == RetryPolicy(attempts=7)


@pytest.mark.parametrize(
    ("draws", "expected"),
    [
        # weights 3:1 over a total of 4: a draw below 0.75 picks the heavy target first
        ([0.0, 0.0], ["a/m0", "b/m1"]),
        ([0.74, 0.0], ["a/m0", "b/m1"]),
        ([0.76, 0.0], ["b/m1", "a/m0"]),
        ([0.999, 0.5], ["b/m1", "a/m0"]),
    ],
)
def test_weighted_order_follows_the_random_draws(draws: list[float], expected: list[str]) -> None:
    source = iter(draws)
    assert labels(plan(doc({"m": weighted(3, 1)}), "m", rand=lambda: next(source))) == expected


def test_weighted_order_is_drawn_without_replacement() -> None:
    # 1:2:1 over 4; first draw 0.3 -> 1.2 lands in b (1..3); pool a,c (1:1 over 2): 0.6 -> 1.2 lands in c.
    source = iter([0.3, 0.6, 0.0])
    assert labels(plan(doc({"m": weighted(1, 2, 1)}), "m", rand=lambda: next(source))) == [
        "b/m1",
        "c/m2",
        "a/m0",
    ]


def test_weighted_first_pick_matches_the_weights_statistically() -> None:
    rng = random.Random(20261125)
    d = doc({"m": weighted(3, 1)})
    draws = 5_000
    first = Counter(plan(d, "m", rand=rng.random).targets[0].label for _ in range(draws))
    assert set(first) == {"a/m0", "b/m1"}
    assert abs(first["a/m0"] / draws - 0.75) < 0.05, first
    # every plan still holds both targets: the lighter one remains as a fallback
    assert all(len(plan(d, "m", rand=rng.random).targets) == 2 for _ in range(100))


def test_zero_weight_targets_are_never_planned() -> None:
    rng = random.Random(7)
    d = doc({"m": weighted(0, 5, 1)})
    for _ in range(500):
        order = labels(plan(d, "m", rand=rng.random))
        assert "a/m0" not in order
        assert sorted(order) == ["b/m1", "c/m2"]


def test_zero_weight_target_is_kept_in_a_fallback_route() -> None:
    route = {"targets": [{"provider": "a", "model": "x", "weight": 0}, {"provider": "b", "model": "y"}]}
    assert labels(plan(doc({"m": route}), "m")) == ["a/x", "b/y"]


def test_timeouts_inherit_target_then_route_then_defaults() -> None:
    target_t = {"connect_s": 1, "first_token_s": 2, "total_s": 3}
    route_t = {"connect_s": 4, "first_token_s": 5, "total_s": 6}
    default_t = {"connect_s": 7, "first_token_s": 8, "total_s": 9}
    d = doc(
        {
            "with-route": {
                "timeouts": route_t,
                "targets": [
                    {"provider": "a", "model": "own", "timeouts": target_t},
                    {"provider": "b", "model": "inherits"},
                ],
            },
            "without-route": {"targets": [{"provider": "c", "model": "inherits"}]},
        },
        defaults={"timeouts": default_t},
    )
    own, from_route = plan(d, "with-route").targets
    assert own.timeouts == Timeouts(**target_t)
    assert from_route.timeouts == Timeouts(**route_t)
    assert plan(d, "without-route").targets[0].timeouts == Timeouts(**default_t)


def test_timeouts_without_any_setting_are_the_built_in_defaults() -> None:
    assert (
        plan(doc({"m": {"targets": [{"provider": "a", "model": "x"}]}}), "m").targets[0].timeouts
        == Timeouts()
    )


def test_unknown_alias_raises_model_not_found_listing_the_valid_aliases() -> None:
    d = doc(
        {
            "zeta": {"targets": [{"provider": "a", "model": "x"}]},
            "alpha": {"targets": [{"provider": "b", "model": "y"}]},
        }
    )
    with pytest.raises(ModelNotFound) as info:
        plan(d, "gpt-5")
    err = info.value
    assert err.status == 404 and err.code == "model_not_found" and err.param == "model"
    assert "'gpt-5'" in err.message
    assert "alpha, zeta" in err.message
