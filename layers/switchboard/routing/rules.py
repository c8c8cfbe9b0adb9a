"""Routing rules: reroute an alias while a budget is nearly spent (``rules`` in the document).

``apply_rules`` is pure: the rules, the requested alias and the budget use per scope in, the alias
to plan out. ``reroute`` gathers the budget use it needs (only for rules that name the alias) from
a ``BudgetUse`` source, the limits hook, and applies them. Rules apply once, in order, and do not
chain. See docs/rules.md.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol

from switchboard.core.principal import Principal, Scope
from switchboard.routing.document import RoutingDocument, Rule

__all__ = ["BudgetUse", "apply_rules", "reroute"]


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


async def reroute(
    use: BudgetUse | None,
    doc: RoutingDocument,
    principal: Principal,
    alias: str,
    headers: dict[str, str],
) -> str:
    """The alias to plan for this request; names the rule in ``x-switchboard-rule`` when one fired."""
    if use is None or not doc.rules:
        return alias
    scopes = {rule.when.scope for rule in doc.rules if alias in rule.reroute}
    if not scopes:
        return alias
    used: dict[str, float | None] = {
        scope: await use.budget_used(principal, alias, Scope(scope)) for scope in sorted(scopes)
    }
    served, index = apply_rules(doc.rules, alias, used)
    if index is not None:
        headers["x-switchboard-rule"] = f"rules[{index}]: {alias} -> {served}"
    return served
