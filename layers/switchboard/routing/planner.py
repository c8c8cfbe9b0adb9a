"""The planner: turn a model alias into the ordered targets one request will try.

Pure: the document and a random source in, a plan out. ``fallback`` keeps the operator's order;
``weighted`` draws the order by weight without replacement, so the heavier target is tried first
more often and the others remain as fallbacks.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

from switchboard.core.errors import ErrorClass, InvalidRequest, ModelNotFound
from switchboard.routing.document import ProviderConfig, RetryPolicy, RoutingDocument, Target, Timeouts

__all__ = ["Plan", "PlannedTarget", "plan"]


@dataclass(frozen=True, slots=True)
class PlannedTarget:
    provider_name: str
    provider: ProviderConfig
    model: str
    timeouts: Timeouts
    context_window: int | None
    dimensions: int | None = None
    modalities: frozenset[str] | None = None  # None: not declared, anything goes

    @property
    def label(self) -> str:
        return f"{self.provider_name}/{self.model}"


@dataclass(frozen=True, slots=True)
class Plan:
    alias: str
    targets: tuple[PlannedTarget, ...]
    retry: RetryPolicy
    fallback_on: frozenset[ErrorClass]
    mode: str = "chat"
    hedge_after_ms: int | None = None  # the route's hedging (engine): None is off


def _weighted_order(targets: list[Target], rand: Callable[[], float]) -> list[Target]:
    pool = [t for t in targets if t.weight > 0]
    order: list[Target] = []
    while pool:
        point = rand() * sum(t.weight for t in pool)
        for target in pool:
            point -= target.weight
            if point < 0:
                break
        order.append(target)
        pool.remove(target)
    return order


def plan(
    doc: RoutingDocument,
    alias: str,
    rand: Callable[[], float] = random.random,
    *,
    mode: str | None = "chat",
    visible: frozenset[str] | None = None,
) -> Plan:
    """The plan for ``alias``; ``ModelNotFound`` lists the valid aliases when it is unknown.

    ``mode`` is the endpoint's (``chat`` or ``embeddings``); an alias of the other mode is a 400.
    ``visible`` is what the caller may see (a restricted key's aliases): the list names no other.
    """
    route = doc.models.get(alias)
    if route is None:
        valid = (
            ", ".join(
                sorted(
                    a
                    for a, r in doc.models.items()
                    if mode in (None, r.mode) and (visible is None or a in visible)
                )
            )
            or "(none configured)"
        )
        raise ModelNotFound(f"The model '{alias}' does not exist. Valid models: {valid}", param="model")
    if mode is not None and route.mode != mode:
        endpoint = "/v1/embeddings" if route.mode == "embeddings" else "/v1/chat/completions or /v1/messages"
        raise InvalidRequest(
            f"The model '{alias}' is a {route.mode} model: use {endpoint}.",
            param="model",
            code="wrong_endpoint",
        )
    targets = route.targets if route.strategy == "fallback" else _weighted_order(route.targets, rand)
    timeouts = route.timeouts or doc.defaults.timeouts
    planned = tuple(
        PlannedTarget(
            provider_name=t.provider,
            provider=doc.providers[t.provider],
            model=t.model,
            timeouts=t.timeouts or timeouts,
            context_window=t.context_window,
            dimensions=t.dimensions,
            modalities=route.modalities,
        )
        for t in targets
    )
    return Plan(
        alias, planned, route.retry or doc.defaults.retry, route.fallback_on, route.mode, route.hedge_after_ms
    )
