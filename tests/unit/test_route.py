"""``routing.route.route``: the decision, the overrides and the breaker in one function, each
target's final reason, and the places of the kept targets (pure; the HTTP agreement with the call
is tests/integration/test_explain_agreement_http.py)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from switchboard.core.errors import PermissionDenied
from switchboard.core.principal import Principal
from switchboard.core.schemas import ChatCompletionRequest
from switchboard.routing.document import RoutingDocument
from switchboard.routing.overrides import Decision, Overrides, ProviderPreferences
from switchboard.routing.planner import Plan
from switchboard.routing.route import Routed, route
from switchboard.routing.router import Router

DOC = RoutingDocument.model_validate(
    {
        "version": 1,
        "providers": {n: {"kind": "openai", "base_url": "http://x"} for n in ("a", "b", "c", "d")},
        "models": {
            "m": {
                "targets": [
                    {"provider": "a", "model": "x", "context_window": 10},
                    {"provider": "b", "model": "x"},
                    {"provider": "c", "model": "x"},
                ]
            },
            "n": {"targets": [{"provider": "c", "model": "x"}, {"provider": "d", "model": "x"}]},
            "tiny": {"targets": [{"provider": "d", "model": "y", "context_window": 10}]},
        },
        "breaker": {},
    }
)
LONG = " ".join(["word"] * 200)  # over a window of 10 tokens


def principal(**extra: Any) -> Principal:
    return Principal(key_id="k", name="k", overrides=frozenset({"models", "provider"}), **extra)


def routed(
    overrides: Overrides | None = None, breaker: Any = None, router: Router | None = None, **who: Any
) -> Routed:
    chat = ChatCompletionRequest.model_validate(
        {"model": "m", "messages": [{"role": "user", "content": LONG}]}
    )
    return asyncio.run(
        route(router or Router(), DOC, principal(**who), chat, overrides=overrides, breaker=breaker)
    )


def table(result: Routed) -> list[tuple[str, str]]:
    return [(v.target.label, v.reason.value) for v in result.decision.verdicts]


def test_skipped_targets_keep_their_places_and_kept_ones_fill_theirs_in_the_plans_order() -> None:
    result = routed(Overrides(provider=ProviderPreferences(order=["c"])))
    assert [t.label for t in result.plan.targets] == ["c/x", "b/x"]
    assert table(result) == [("a/x", "context_too_small"), ("c/x", "kept"), ("b/x", "kept")]
    assert "provider.order #1" in result.decision.verdicts[1].detail
    assert result.headers == {"x-switchboard-overrides": "provider.order"}


def test_models_adds_each_aliases_targets_once_and_an_alias_with_none_left_is_skipped() -> None:
    result = routed(Overrides(models=("n", "tiny")))
    assert [t.label for t in result.plan.targets] == ["b/x", "c/x", "d/x"]
    assert table(result) == [
        ("a/x", "context_too_small"),
        ("b/x", "kept"),
        ("c/x", "kept"),
        ("c/x", "duplicate"),
        ("d/x", "kept"),
        ("d/y", "context_too_small"),  # tiny: nothing fits, the plan goes on without it
    ]


def test_the_overrides_right_is_checked_before_anything_and_models_names_only_visible_aliases() -> None:
    chat = ChatCompletionRequest.model_validate(
        {"model": "m", "messages": [{"role": "user", "content": "x"}]}
    )
    with pytest.raises(PermissionDenied) as caught:
        asyncio.run(
            route(Router(), DOC, Principal(key_id="k", name="k"), chat, overrides=Overrides(models=("n",)))
        )
    assert caught.value.code == "override_not_allowed"
    with pytest.raises(PermissionDenied) as denied:
        routed(Overrides(models=("n",)), allowed_models=frozenset({"m"}))
    assert denied.value.param == "models"


def test_sort_by_latency_reads_the_speed_board_and_puts_unmeasured_targets_last_in_plan_order() -> None:
    router = Router()
    router.speeds.seed("c/x", 0.2)
    router.speeds.seed("d/x", 0.1)
    result = routed(Overrides(models=("n",), provider=ProviderPreferences(sort="latency")), router=router)
    assert [t.label for t in result.plan.targets] == ["d/x", "c/x", "b/x"]
    kept = [v for v in result.decision.verdicts if v.kept]
    assert [v.speed.ttft_s if v.speed else None for v in kept] == [0.1, 0.2, None]
    assert "no time to first token measured" in kept[-1].detail


class HeldBack:
    """A breaker stand-in: every target open, ``c/x`` the one that failed least recently."""

    def filter(self, plan: Plan, policy: object) -> tuple[Plan, list[Decision], str | None]:
        decisions = [
            Decision(t.label, t.label == "c/x", "breaker: every target open, this one failed least recently")
            if t.label == "c/x"
            else Decision(t.label, False, "breaker: open", "breaker_open")
            for t in plan.targets
        ]
        kept = tuple(t for t in plan.targets if t.label == "c/x")
        return Plan(plan.alias, kept, plan.retry, plan.fallback_on), decisions, "all-open; tried c/x"


def test_the_breakers_decisions_are_the_targets_reasons_and_its_header() -> None:
    result = routed(breaker=HeldBack())
    assert table(result) == [("a/x", "context_too_small"), ("b/x", "breaker_open"), ("c/x", "kept")]
    assert result.decision.verdicts[2].detail.endswith("this one failed least recently")
    assert result.headers == {"x-switchboard-breaker": "all-open; tried c/x"}
    assert [t.label for t in result.plan.targets] == ["c/x"]
