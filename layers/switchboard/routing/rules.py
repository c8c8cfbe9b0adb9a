"""Routing rules (``rules`` in the document): reroute an alias, or skip targets, while conditions hold.

The rules themselves are evaluated by ``switchboard.routing.decide`` (pure: the rules and the
request's facts in). This module gathers the one fact that needs I/O, the budget use per scope,
from a ``BudgetUse`` source (the limits hook), and only for the rules that could act on the
request, so a request no budget rule names costs no read. See docs/rules.md.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol

from switchboard.core.principal import Principal, Scope
from switchboard.routing.document import RoutingDocument, Rule

__all__ = ["BudgetUse", "apply_rules", "budget_scopes", "budget_use"]


class BudgetUse(Protocol):
    async def budget_used(self, principal: Principal, alias: str, scope: Scope) -> float | None:
        """The fraction of ``scope``'s budget used, or None when no budget applies."""
        ...


def apply_rules(
    rules: Sequence[Rule], alias: str, used: Mapping[str, float | None]
) -> tuple[str, int | None]:
    """The alias to serve and the index of the rule that rerouted it (None: none did), for the
    budget use ``used`` per scope alone (the other conditions as if nothing else were known)."""
    from switchboard.routing.decide import RequestFacts, condition_holds

    facts = RequestFacts(budget_used=used)
    for index, rule in enumerate(rules):
        target = rule.reroute.get(alias)
        if target is not None and condition_holds(rule.when, facts):
            return target, index
    return alias, None


def budget_scopes(doc: RoutingDocument, alias: str) -> set[str]:
    """The budget scopes whose use a request for ``alias`` needs: those of budget rules that
    reroute it, or skip targets of it or of an alias a rule may reroute it to."""
    candidates = {alias} | {rule.reroute[alias] for rule in doc.rules if alias in rule.reroute}
    return {
        rule.when.scope
        for rule in doc.rules
        if rule.when.budget_used_over is not None and any(rule.names(c) for c in candidates)
    }


async def budget_use(
    use: BudgetUse | None, doc: RoutingDocument, principal: Principal, alias: str
) -> dict[str, float | None]:
    """The budget use per scope the rules need for this request (nothing read when none does)."""
    if use is None or not doc.rules:
        return {}
    return {
        scope: await use.budget_used(principal, alias, Scope(scope))
        for scope in sorted(budget_scopes(doc, alias))
    }
