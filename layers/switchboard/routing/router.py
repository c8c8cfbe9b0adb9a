"""The router: one request's routing decision, with everything ``decide`` reads gathered.

The chat and messages handlers and ``POST /v1/route/explain`` all call ``Router.decide``, so an
explanation is the decision a call makes (given the same random draw). It gathers the request's
facts (its estimated tokens, ``user`` and ``metadata``, the key's tags, the budget use the rules
need, the time from the injectable ``clock``), then calls ``switchboard.routing.decide.decide``
with the price book (the routing document's prices over the built-in table, the lookup metering
uses) and the speed board.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from datetime import UTC, datetime

from switchboard.auth import Principal
from switchboard.costs import Price
from switchboard.pricing import PriceBook
from switchboard.routing.decide import Decision, RequestFacts, TargetFilter, decide
from switchboard.routing.document import RoutingDocument
from switchboard.routing.planner import PlannedTarget
from switchboard.routing.rules import BudgetUse, budget_use
from switchboard.routing.speed import SpeedBoard
from switchboard.schemas import ChatCompletionRequest

__all__ = ["Router"]


def _utc_now() -> datetime:
    return datetime.now(UTC)


class Router:
    def __init__(
        self,
        prices: PriceBook | None = None,
        speeds: SpeedBoard | None = None,
        *,
        rand: Callable[[], float] = random.random,
        clock: Callable[[], datetime] = _utc_now,
        filters: Sequence[TargetFilter] = (),
    ) -> None:
        self.prices = prices or PriceBook()
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

    def decide_facts(
        self,
        document: RoutingDocument,
        alias: str,
        facts: RequestFacts,
        *,
        visible: frozenset[str] | None = None,
        filters: Sequence[TargetFilter] = (),
    ) -> Decision:
        """The decision for facts already gathered (the offline CLI builds them itself)."""

        def price(target: PlannedTarget) -> Price | None:
            match = self.prices.lookup(document, target)
            return match.price if match is not None else None

        return decide(
            document,
            alias,
            facts,
            price_of=price,
            speeds=self.speeds,
            rand=self.rand,
            visible=visible,
            filters=[*self.filters, *filters],
        )
