"""One request's route: the single function a call and ``POST /v1/route/explain`` both run.

``route`` does, in order, what decides the targets a request tries, so what explain says is what
the call then does (they cannot drift; tests/integration/test_explain_agreement_http.py holds
it):

1. the key's right to the request's overrides (a 403 naming the field, ``overrides.check_allowed``);
2. the routing decision (``Router.decide``: rules, conditions, strategy, context windows);
3. the per-request overrides (``routing.overrides``): each alias of ``models`` decided with the
   same facts (its strategy and context windows; not the rules, which act on ``model``), then
   ``provider``'s filters and order (``overrides.apply``, with the router's prices, and for
   ``sort: latency|throughput`` ``Router.rank``: the shared speed stats ``fastest`` uses);
4. the shared circuit breaker (``Breaker.filter``): targets held back, or, every one open, the one
   that failed least recently.

The answer (``Routed``) is the plan the engine runs, the decision with one ``Verdict`` per target
considered (its reason from whichever step kept or skipped it: ``override``, ``price_cap``,
``breaker_open``), and the response headers saying what acted (``x-switchboard-rule``,
``-overrides``, ``-breaker``). Skipped targets stay where the strategy placed them; the kept ones
fill their places in the order the plan tries them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from decimal import Decimal

from switchboard.core.attempts import header_safe
from switchboard.core.errors import PermissionDenied
from switchboard.core.principal import Principal
from switchboard.core.schemas import ChatCompletionRequest
from switchboard.routing import breaker as routing_breaker
from switchboard.routing import overrides as routing_overrides
from switchboard.routing.breaker import Breaker
from switchboard.routing.decide import Decision, Reason, Verdict
from switchboard.routing.document import RoutingDocument
from switchboard.routing.overrides import Overrides
from switchboard.routing.planner import Plan, PlannedTarget
from switchboard.routing.router import Router
from switchboard.routing.rules import BudgetUse

__all__ = ["Routed", "held_back", "route"]


@dataclass(frozen=True, slots=True)
class Routed:
    """A request's route: ``decision`` holds the final plan and verdicts; ``headers`` what acted."""

    decision: Decision
    headers: dict[str, str]

    @property
    def plan(self) -> Plan:
        return self.decision.plan

    @property
    def rule(self) -> str | None:
        """The rule that rerouted the request (``x-switchboard-rule``), if one did."""
        return self.decision.rule_header


async def route(
    router: Router,
    document: RoutingDocument,
    principal: Principal,
    chat: ChatCompletionRequest,
    *,
    endpoint: str = "chat",
    budget: BudgetUse | None = None,
    overrides: Overrides | None = None,
    breaker: Breaker | None = None,
) -> Routed:
    """The route of ``chat`` (any chat-shaped request) from ``principal`` (see the module docstring)."""
    if overrides is not None and overrides.empty:
        overrides = None
    if overrides is not None:
        routing_overrides.check_allowed(overrides, principal.overrides)
    decision = await router.decide(document, principal, chat, endpoint=endpoint, budget=budget)
    headers: dict[str, str] = {}
    if decision.rule_header is not None:
        headers["x-switchboard-rule"] = decision.rule_header
    plan, verdicts = decision.plan, list(decision.verdicts)
    if overrides is not None:
        plan, verdicts = _overridden(router, document, principal, decision, overrides)
        provider = overrides.provider.used() if overrides.provider is not None else []
        headers["x-switchboard-overrides"] = ",".join((["models"] if overrides.models else []) + provider)
    if breaker is not None:
        plan, verdicts, held = _breaker(breaker, document, plan, verdicts)
        if held is not None:
            headers[routing_breaker.HEADER] = header_safe(held)
    return Routed(replace(decision, plan=plan, verdicts=_placed(verdicts, plan)), headers)


def held_back(
    breaker: Breaker | None, document: RoutingDocument, plan: Plan, headers: dict[str, str]
) -> Plan:
    """``plan`` without the targets the breaker holds back, named in ``headers`` (a route with no
    routing decision: embeddings)."""
    if breaker is None:
        return plan
    plan, _decisions, held = breaker.filter(plan, document.breaker)
    if held is not None:
        headers[routing_breaker.HEADER] = header_safe(held)
    return plan


def _overridden(
    router: Router,
    document: RoutingDocument,
    principal: Principal,
    decision: Decision,
    overrides: Overrides,
) -> tuple[Plan, list[Verdict]]:
    """``models``' aliases after the decision's, then ``provider``'s filters and order."""
    plans, verdicts = [decision.plan], list(decision.verdicts)
    visible = principal.allowed_models
    for alias in overrides.models:
        if visible is not None and alias not in visible:
            raise PermissionDenied(f"This key may not use the model '{alias}'.", param="models")
        more = router.decide_facts(
            document,
            alias,
            decision.facts,
            visible=visible,
            mode=decision.plan.mode,
            rules=False,
            allow_empty=True,
        )
        plans.append(more.plan)
        verdicts += more.verdicts
    verdicts = _deduplicated(verdicts)

    def price(target: PlannedTarget) -> tuple[Decimal, Decimal] | None:
        found = router.prices(document, target)
        return None if found is None else (found.input_per_mtok, found.output_per_mtok)

    prefs = overrides.provider
    plan, decisions = routing_overrides.apply(routing_overrides.combine(plans), prefs, price, router.rank)
    if prefs is None:
        return plan, verdicts
    verdicts = _judged(verdicts, decisions)
    if prefs.sort in ("latency", "throughput"):  # the figures it sorted by, for explain
        verdicts = [replace(v, speed=router.speeds.speed(v.target.label)) if v.kept else v for v in verdicts]
    return plan, verdicts


def _breaker(
    breaker: Breaker, document: RoutingDocument, plan: Plan, verdicts: list[Verdict]
) -> tuple[Plan, list[Verdict], str | None]:
    filtered, decisions, held = breaker.filter(plan, document.breaker)
    if document.breaker is None:
        return filtered, verdicts, held
    shown = [d for d in decisions if not d.kept or d.reason != "breaker: closed"]
    return filtered, _judged(verdicts, shown), held


def _deduplicated(verdicts: list[Verdict]) -> list[Verdict]:
    """A target kept by two aliases of ``models`` is tried once, where it came first."""
    seen: set[str] = set()
    out: list[Verdict] = []
    for verdict in verdicts:
        if verdict.kept and verdict.target.label in seen:
            verdict = replace(verdict, reason=Reason.DUPLICATE, detail="already in the plan through models")
        elif verdict.kept:
            seen.add(verdict.target.label)
        out.append(verdict)
    return out


def _judged(verdicts: list[Verdict], decisions: Sequence[routing_overrides.Decision]) -> list[Verdict]:
    """The kept verdicts with a later step's decisions on them: skipped with its reason, or kept
    with its sentence added to the detail."""
    by_label = {d.target: d for d in decisions}
    out: list[Verdict] = []
    for verdict in verdicts:
        decision = by_label.get(verdict.target.label) if verdict.kept else None
        if decision is not None and not decision.kept:
            verdict = replace(verdict, reason=Reason(decision.code or "override"), detail=decision.reason)
        elif decision is not None:
            verdict = replace(verdict, detail=f"{verdict.detail}; {decision.reason}")
        out.append(verdict)
    return out


def _placed(verdicts: list[Verdict], plan: Plan) -> list[Verdict]:
    """Skipped verdicts where the strategy placed them; the places of kept ones filled with the
    plan's targets in the plan's order (the order a call tries them)."""
    kept = {v.target.label: v for v in verdicts if v.kept}
    tried = iter(kept[t.label] for t in plan.targets)
    in_plan = {t.label for t in plan.targets}
    out: list[Verdict] = []
    for verdict in verdicts:
        if verdict.kept and verdict.target.label in in_plan:
            out.append(next(tried))
        else:
            out.append(verdict)
    return out
