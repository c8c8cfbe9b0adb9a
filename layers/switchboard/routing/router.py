"""The router: one request's routing decision, with everything ``decide`` reads gathered.

The chat and messages handlers and ``POST /v1/route/explain`` all call ``Router.decide``, so an
explanation is the decision a call makes (given the same random draw). It gathers the request's
facts (its estimated tokens, ``user`` and ``metadata``, the key's tags, the budget use the rules
need, the time from the injectable ``clock``), then calls ``switchboard.routing.decide.decide``
with the price lookup and the speed board. The wiring passes the lookup metering uses (the routing
document's prices over the built-in table, ``billing.pricing``, a layer above this one); without
one, the document's own ``prices`` alone.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from datetime import UTC, datetime

from switchboard.core.money import Price, price_key
from switchboard.core.principal import Principal
from switchboard.core.schemas import ChatCompletionRequest
from switchboard.routing.decide import Decision, RequestFacts, TargetFilter, decide
from switchboard.routing.document import RoutingDocument
from switchboard.routing.planner import PlannedTarget
from switchboard.routing.rules import BudgetUse, budget_use
from switchboard.routing.speed import SpeedBoard

__all__ = ["DocumentPrice", "Router", "document_price"]

DocumentPrice = Callable[[RoutingDocument, PlannedTarget], Price | None]


def document_price(document: RoutingDocument, target: PlannedTarget) -> Price | None:
    """The routing document's own price for ``target`` (the default lookup)."""
    return document.prices.get(price_key(target.provider_name, target.model))


def _utc_now() -> datetime:
    return datetime.now(UTC)


class Router:
    def __init__(
        self,
        prices: DocumentPrice = document_price,
        speeds: SpeedBoard | None = None,
        *,
        rand: Callable[[], float] = random.random,
        clock: Callable[[], datetime] = _utc_now,
        filters: Sequence[TargetFilter] = (),
    ) -> None:
        self.prices = prices
        self.speeds = speeds or SpeedBoard()
        self.rand = rand
        self.clock = clock
        self.filters = list(filters)  # breaker, overrides: see decide.TargetFilter

    async def decide(
        self,
        document: RoutingDocument,
        principal: Principal,
        chat: ChatCompletionRequest,
        *,
        endpoint: str = "chat",
        budget: BudgetUse | None = None,
        filters: Sequence[TargetFilter] = (),
    ) -> Decision:
        """The decision for ``chat`` (any chat-shaped request) from ``principal``. ``filters``
        are this request's own, after the router's (a per-request override's, say)."""
        used = await budget_use(budget, document, principal, chat.model)
        facts = RequestFacts.of_chat(
            chat, endpoint, key_tags=tuple(principal.tags), budget_used=used, now=self.clock()
        )
        self.speeds.poke()
        return self.decide_facts(
            document, chat.model, facts, visible=principal.allowed_models, filters=filters
        )

    def rank(self, target: PlannedTarget, sort: str) -> float | None:
        """A target's figure for a request's ``provider.sort`` (``routing.overrides``): its time
        to first token (``latency``) or output tokens per second (``throughput``) from the speed
        board ``fastest`` reads (shared EWMAs); None when not measured lately."""
        speed = self.speeds.speed(target.label)
        if speed is None:
            return None
        return speed.ttft_s if sort == "latency" else speed.tokens_per_s

    def decide_facts(
        self,
        document: RoutingDocument,
        alias: str,
        facts: RequestFacts,
        *,
        visible: frozenset[str] | None = None,
        filters: Sequence[TargetFilter] = (),
        mode: str | None = "chat",
        rules: bool = True,
        allow_empty: bool = False,
    ) -> Decision:
        """The decision for facts already gathered (the offline CLI builds them itself; a
        request's ``models`` fallbacks reuse its own, without the rules)."""

        def price(target: PlannedTarget) -> Price | None:
            return self.prices(document, target)

        return decide(
            document,
            alias,
            facts,
            price_of=price,
            speeds=self.speeds,
            rand=self.rand,
            visible=visible,
            filters=[*self.filters, *filters],
            mode=mode,
            rules=rules,
            allow_empty=allow_empty,
        )
