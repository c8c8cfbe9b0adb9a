"""Routing rules: reroute an alias while a budget is nearly spent (``rules`` in the document).

``apply_rules`` is pure: the rules, the requested alias and the budget use per scope in, the alias
to plan out. ``reroute`` gathers the budget use it needs (only for rules that name the alias) from
a ``BudgetUse`` source, the limits hook, and applies them; it returns the alias to serve and the
rule that fired, as data (the HTTP layer names it in ``x-switchboard-rule``, the exchange keeps
it). Rules apply once, in order, and do not chain. See docs/rules.md.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from switchboard.core.principal import Principal, Scope
from switchboard.routing.document import RoutingDocument, Rule

__all__ = ["BudgetUse", "Rerouted", "apply_rules", "reroute"]


class BudgetUse(Protocol):
    async def budget_used(self, principal: Principal, alias: str, scope: Scope) -> float | None:
        """The fraction of ``scope``'s budget used, or None when no budget applies."""
        ...


def apply_rules(
    rules: Sequence[Rule], alias: str, used: Mapping[str, float | None]
) -> tuple[str, int | None]:
    """The alias to serve and the index of the rule that chose it (None: no rule fired)."""
    for index, rule in enumerate(rules):
        target = rule.reroute.get(alias)
        if target is None:
            continue
        fraction = used.get(rule.when.scope)
        if fraction is not None and fraction > rule.when.budget_used_over:
            return target, index
    return alias, None


@dataclass(frozen=True, slots=True)
class Rerouted:
    alias: str  # the alias to plan
    rule: str | None = None  # the rule that fired ("rules[0]: gpt-4o -> cheap"), None when none did


async def reroute(use: BudgetUse | None, doc: RoutingDocument, principal: Principal, alias: str) -> Rerouted:
    """The alias to plan for this request, and the rule that chose it when one fired."""
    if use is None or not doc.rules:
        return Rerouted(alias)
    scopes = {rule.when.scope for rule in doc.rules if alias in rule.reroute}
    if not scopes:
        return Rerouted(alias)
    used: dict[str, float | None] = {
        scope: await use.budget_used(principal, alias, Scope(scope)) for scope in sorted(scopes)
    }
    served, index = apply_rules(doc.rules, alias, used)
    return Rerouted(served, None if index is None else f"rules[{index}]: {alias} -> {served}")
