"""The planner: turn a model alias into the ordered targets one request will try.

Pure: the document and a random source in, a plan out. ``fallback`` keeps the operator's order;
``weighted`` draws the order by weight without replacement, so the heavier target is tried first
more often and the others remain as fallbacks. The ordering itself, the other strategies, rules
and conditions live in ``switchboard.routing.decide``; this module holds the plan's types.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

from switchboard.core.errors import ErrorClass, InvalidRequest, ModelNotFound
from switchboard.routing.document import ProviderConfig, RetryPolicy, RoutingDocument, Timeouts

__all__ = ["Plan", "PlannedTarget", "check_alias", "plan"]


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


def check_alias(doc: RoutingDocument, alias: str, mode: str | None, visible: frozenset[str] | None) -> None:
    """``ModelNotFound`` (listing the valid aliases) for an unknown alias; a 400 for an alias of
    the other mode (``chat`` or ``embeddings``). ``visible`` is what the caller may see (a
    restricted key's aliases): the list names no other."""
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


def plan(
    doc: RoutingDocument,
    alias: str,
    rand: Callable[[], float] = random.random,
    *,
    mode: str | None = "chat",
    visible: frozenset[str] | None = None,
) -> Plan:
    """The plan for ``alias`` with no request facts (no rules, no prices, no speeds): the
    operator's order, or the weighted draw; nested groups expanded. A request's plan comes from
    ``switchboard.routing.decide``, which this calls."""
    from switchboard.routing.decide import RequestFacts, decide

    return decide(doc, alias, RequestFacts(), rand=rand, mode=mode, visible=visible, rules=False).plan
