"""The routing decision for one request: which alias serves it, and which targets, in what order.

One function, ``decide``, serves both the real call and ``POST /v1/route/explain`` (and the
offline ``switchboard routing explain``), so what explain says is what a call does. It is pure:
the document, the request's facts (``RequestFacts``: its estimated tokens, user, metadata, the
key's tags, the budget use per scope, the time), a price lookup, the speed view and a random
source in; a ``Decision`` out, which holds the ``Plan`` the engine runs and, for every target
considered, whether it was kept and why (``Verdict``).

In order:

1. Rules (``docs/rules.md``), read in order: the first whose ``when`` holds and that reroutes the
   requested alias decides the alias served (rules do not chain); every rule whose ``when``
   holds and that skips targets applies to the served alias.
2. The served alias's targets are ordered by its strategy (``fallback``, ``weighted`` (``sticky``
   optional), ``cheapest``, ``fastest``). A target that names another alias is that alias's own
   ordering, in its place (a nested group; the document refuses cycles when it loads).
3. Each target is then kept or skipped: a prompt that cannot fit its context window, a rule's
   skip, then the ``filters`` other parts of the gateway add (the extension point: each returns a
   ``Reason`` and a sentence, or None to keep the target).

``Reason`` is the list of every reason a target can be skipped for; ``BREAKER_OPEN``,
``PRICE_CAP`` and ``OVERRIDE`` are for the filters that decide them.
"""

from __future__ import annotations

import enum
import hashlib
import math
import random
import struct
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Protocol

from switchboard.core.errors import InvalidRequest
from switchboard.core.money import DEFAULT_OUTPUT_TOKENS, MTOK, Price, estimate_prompt_tokens
from switchboard.core.schemas import ChatCompletionRequest
from switchboard.routing.document import ModelRoute, RoutingDocument, Rule, RuleCondition, Target, Timeouts
from switchboard.routing.planner import Plan, PlannedTarget, check_alias

__all__ = [
    "BYTES_PER_TOKEN",
    "Decision",
    "FiredRule",
    "PriceOf",
    "Reason",
    "RequestFacts",
    "Speed",
    "Speeds",
    "TargetFilter",
    "Verdict",
    "condition_holds",
    "decide",
    "estimate_tokens",
    "expected_cost",
    "with_metadata",
]

# A typical English or code token is about four bytes (the count_tokens estimate uses the same).
BYTES_PER_TOKEN = 4
_DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


class Reason(enum.StrEnum):
    """Why a target was kept or skipped (``Verdict.reason``)."""

    KEPT = "kept"
    CONTEXT_TOO_SMALL = "context_too_small"  # the estimated prompt exceeds its context window
    BUDGET_RULE = "budget_rule"  # a rule whose condition is a budget's use skips it
    CONDITION = "condition"  # a rule on other conditions (tags, user, metadata, time...) skips it
    DUPLICATE = "duplicate"  # already in the plan through another nested group
    ZERO_WEIGHT = "zero_weight"  # weight 0 in a weighted group
    # Decided by filters outside the planner (the circuit breaker, per-request overrides):
    BREAKER_OPEN = "breaker_open"
    PRICE_CAP = "price_cap"
    OVERRIDE = "override"


PriceOf = Callable[[PlannedTarget], Price | None]
# A filter sees every target the strategy ordered and may skip it: (reason, sentence) or None.
TargetFilter = Callable[[PlannedTarget], tuple[Reason, str] | None]


@dataclass(frozen=True, slots=True)
class Speed:
    """A target's measured speed: time to first token and output tokens per second (EWMAs)."""

    ttft_s: float
    tokens_per_s: float | None = None

    def expected_s(self, output_tokens: int) -> float:
        """Seconds to answer ``output_tokens``: the first token, then the rest at the throughput."""
        if not self.tokens_per_s:
            return self.ttft_s
        return self.ttft_s + output_tokens / self.tokens_per_s


class Speeds(Protocol):
    """What ``fastest`` reads: each target's speed (None: cold, no recent measure) and the
    probability of trying another target first (exploration, so a recovered target is found)."""

    explore: float

    def speed(self, label: str) -> Speed | None: ...


@dataclass(frozen=True, slots=True)
class RequestFacts:
    """What the conditions and strategies read about one request."""

    endpoint: str = "chat"  # chat | messages | responses
    prompt_tokens: int = 0  # estimated (``estimate_tokens``)
    max_tokens: int | None = None  # the client's output cap, if any
    user: str | None = None
    metadata: Mapping[str, str] = field(default_factory=dict)
    key_tags: tuple[str, ...] = ()
    budget_used: Mapping[str, float | None] = field(default_factory=dict)  # scope -> fraction used
    now: datetime = field(default_factory=lambda: datetime.now(UTC))

    @property
    def output_tokens(self) -> int:
        """The output the cost and speed estimates assume: the client's cap, else the default."""
        return self.max_tokens or DEFAULT_OUTPUT_TOKENS

    @classmethod
    def of_chat(cls, chat: ChatCompletionRequest, endpoint: str = "chat", **facts: object) -> RequestFacts:
        """The facts a chat-shaped request carries (its tokens, ``user``, ``metadata``)."""
        raw = (chat.model_extra or {}).get("metadata")
        metadata = {str(k): str(v) for k, v in raw.items()} if isinstance(raw, dict) else {}
        user = chat.user or metadata.get("user_id")
        return cls(
            endpoint=endpoint,
            prompt_tokens=estimate_tokens(chat),
            max_tokens=chat.output_cap,
            user=user,
            metadata=metadata,
            **facts,  # type: ignore[arg-type]
        )


def with_metadata(chat: ChatCompletionRequest, metadata: object) -> ChatCompletionRequest:
    """``chat`` carrying a request's ``metadata`` (a dict), for the router: a request converted
    from another shape (an Anthropic message) keeps it apart from its chat form."""
    if not isinstance(metadata, dict):
        return chat
    return chat.model_copy(update={"metadata": metadata})


def estimate_tokens(chat: ChatCompletionRequest) -> int:
    """The routing estimate of a request's prompt tokens: the gateway's one byte count
    (``costs.estimate_prompt_tokens``) at about four bytes a token. A typical figure, not a bound:
    a prompt near a window is still tried, and the upstream's context error falls back as ever."""
    return math.ceil(estimate_prompt_tokens(chat) / BYTES_PER_TOKEN)


def expected_cost(price: Price | None, facts: RequestFacts) -> Decimal | None:
    """What the request should cost on a target at ``price``: its estimated prompt at the input
    rate (no cache assumed) and its output (the cap, else the default) at the output rate."""
    if price is None:
        return None
    return (facts.prompt_tokens * price.input_per_mtok + facts.output_tokens * price.output_per_mtok) / MTOK


@dataclass(frozen=True, slots=True)
class FiredRule:
    index: int
    action: str  # "reroute a -> b" or "skip x, y"
    description: str | None = None


@dataclass(slots=True)
class Verdict:
    """One target as the strategy ordered it: kept (in the plan) or skipped, and why."""

    target: PlannedTarget
    reason: Reason
    detail: str
    group: str  # the alias whose strategy placed it (the served alias, or a nested one)
    facts: RequestFacts
    price: Price | None = None
    speed: Speed | None = None  # fastest routes: the measure it was ordered by

    @property
    def kept(self) -> bool:
        return self.reason is Reason.KEPT

    @property
    def cost_usd(self) -> Decimal | None:
        """The expected cost at the request's estimated tokens (worked out only when asked)."""
        return expected_cost(self.price, self.facts)


@dataclass(slots=True)
class Decision:
    requested: str
    alias: str  # the alias served (after rules)
    strategy: str
    plan: Plan
    verdicts: list[Verdict]
    rules: list[FiredRule]
    facts: RequestFacts
    explored: bool = False  # fastest: a target other than the measured best was put first

    @property
    def rule_header(self) -> str | None:
        """``x-switchboard-rule``: the rule that rerouted the request, if one did."""
        for rule in self.rules:
            if rule.action.startswith("reroute"):
                return f"rules[{rule.index}]: {self.requested} -> {self.alias}"
        return None

    def cost_range(self) -> tuple[Decimal, Decimal] | None:
        """The lowest and highest expected cost over the kept targets (None: none is priced)."""
        costs = [v.cost_usd for v in self.verdicts if v.kept and v.cost_usd is not None]
        return (min(costs), max(costs)) if costs else None


# ----------------------------------------------------------------------------- conditions


def condition_holds(when: RuleCondition, facts: RequestFacts) -> bool:
    """Every condition ``when`` gives holds for this request (a budget with no figure never does)."""
    if when.budget_used_over is not None:
        used = facts.budget_used.get(when.scope)
        if used is None or not used > when.budget_used_over:
            return False
    if when.key_tags is not None and not set(when.key_tags) & set(facts.key_tags):
        return False
    if when.user is not None and facts.user not in when.user:
        return False
    if when.metadata is not None and any(facts.metadata.get(k) != v for k, v in when.metadata.items()):
        return False
    if when.endpoint is not None and facts.endpoint not in when.endpoint:
        return False
    now = facts.now.astimezone(UTC)
    if when.hours_utc is not None and not when.hours_utc.holds(now.hour):
        return False
    return when.days_utc is None or _DAYS[now.weekday()] in when.days_utc


def _apply_rules(
    rules: Sequence[Rule], requested: str, facts: RequestFacts
) -> tuple[str, list[FiredRule], dict[str, tuple[int, Reason]]]:
    """The alias to serve, the rules that fired, and the targets skipped (label -> rule, reason)."""
    served, fired = requested, []
    for index, rule in enumerate(rules):
        if served == requested and requested in rule.reroute and condition_holds(rule.when, facts):
            served = rule.reroute[requested]
            fired.append(FiredRule(index, f"reroute {requested} -> {served}", rule.description))
    skipped: dict[str, tuple[int, Reason]] = {}
    for index, rule in enumerate(rules):
        if not rule.skip or (rule.models is not None and served not in rule.models):
            continue
        if condition_holds(rule.when, facts):
            reason = Reason.BUDGET_RULE if rule.when.budget_used_over is not None else Reason.CONDITION
            fired.append(FiredRule(index, "skip " + ", ".join(rule.skip), rule.description))
            for label in rule.skip:
                skipped.setdefault(label, (index, reason))
    fired.sort(key=lambda r: r.index)
    return served, fired, skipped


# ----------------------------------------------------------------------------- ordering


@dataclass(slots=True)
class _Leaf:
    target: PlannedTarget
    group: str
    excluded: str | None = None  # why the strategy leaves it out (weight 0)


_Entry = list[_Leaf]  # one target of a route: one leaf, or a nested group's ordered leaves


def _sticky_rand(alias: str, value: str) -> Callable[[], float]:
    """A random source determined by ``value``: the same user draws the same order, every time
    and on every instance (SHA-256 of the alias and the value, in counter mode)."""
    counter = 0

    def draw() -> float:
        nonlocal counter
        digest = hashlib.sha256(f"{alias}\x00{value}\x00{counter}".encode()).digest()
        counter += 1
        return float(struct.unpack(">Q", digest[:8])[0] >> 11) / float(1 << 53)

    return draw


def _sticky_value(route: ModelRoute, facts: RequestFacts) -> str | None:
    if route.sticky is None:
        return None
    on = route.sticky.on
    return facts.user if on == "user" else facts.metadata.get(on.removeprefix("metadata."))


class _Orderer:
    def __init__(
        self,
        doc: RoutingDocument,
        facts: RequestFacts,
        price_of: PriceOf | None,
        speeds: Speeds | None,
        rand: Callable[[], float],
    ) -> None:
        self.doc, self.facts, self.price_of, self.speeds, self.rand = doc, facts, price_of, speeds, rand
        self.explored = False
        self._prices: dict[str, Price | None] = {}

    def price(self, target: PlannedTarget) -> Price | None:
        if target.label not in self._prices:
            self._prices[target.label] = self.price_of(target) if self.price_of is not None else None
        return self._prices[target.label]

    def order(self, alias: str) -> list[_Leaf]:
        """The leaves of ``alias`` in the order its strategy (and its nested groups') gives."""
        route = self.doc.models[alias]
        timeouts = route.timeouts or self.doc.defaults.timeouts
        entries: list[tuple[Target, _Entry]] = []
        for target in route.targets:
            if target.alias is not None:
                entries.append((target, self.order(target.alias)))
            else:
                entries.append((target, [_Leaf(self._planned(target, route, timeouts), alias)]))
        strategy = route.strategy
        if strategy == "weighted":
            return self._weighted(alias, route, entries)
        if strategy == "cheapest":
            return _flatten(sorted(entries, key=lambda e: self._cost_key(e[1])))
        if strategy == "fastest":
            return self._fastest(entries)
        return _flatten(entries)

    def _planned(self, target: Target, route: ModelRoute, timeouts: Timeouts) -> PlannedTarget:
        cache = _planned_cache(self.doc)
        key = (id(route), id(target))
        planned = cache.get(key)
        if planned is None:
            planned = cache[key] = self._plan_target(target, route, timeouts)
        return planned

    def _plan_target(self, target: Target, route: ModelRoute, timeouts: Timeouts) -> PlannedTarget:
        assert target.provider is not None and target.model is not None  # not a nested alias
        return PlannedTarget(
            provider_name=target.provider,
            provider=self.doc.providers[target.provider],
            model=target.model,
            timeouts=target.timeouts or timeouts,
            context_window=target.context_window,
            dimensions=target.dimensions,
            modalities=route.modalities,
        )

    def _weighted(self, alias: str, route: ModelRoute, entries: list[tuple[Target, _Entry]]) -> list[_Leaf]:
        sticky = _sticky_value(route, self.facts)
        rand = _sticky_rand(alias, sticky) if sticky is not None else self.rand
        pool = [e for e in entries if e[0].weight > 0]
        drawn: list[tuple[Target, _Entry]] = []
        while pool:
            point = rand() * sum(t.weight for t, _ in pool)
            for entry in pool:
                point -= entry[0].weight
                if point < 0:
                    break
            drawn.append(entry)
            pool.remove(entry)
        why = f"weight 0 in weighted group {alias!r}"
        zero = [(t, [_Leaf(leaf.target, leaf.group, why) for leaf in e]) for t, e in entries if t.weight == 0]
        return _flatten(drawn + zero)

    def _cost_key(self, entry: _Entry) -> tuple[int, Decimal]:
        """Priced before unpriced; cheaper first (a group by its cheapest member). Stable sort:
        equal costs keep the operator's order."""
        costs = [c for leaf in entry if (c := expected_cost(self.price(leaf.target), self.facts)) is not None]
        return (0, min(costs)) if costs else (1, Decimal(0))

    def _expected_s(self, entry: _Entry, by_throughput: bool) -> float | None:
        if self.speeds is None:
            return None
        speeds = [s for leaf in entry if (s := self.speeds.speed(leaf.target.label)) is not None]
        if not speeds:
            return None
        out = self.facts.output_tokens
        return min(s.expected_s(out) if by_throughput else s.ttft_s for s in speeds)

    def _all_have_throughput(self, entries: list[tuple[Target, _Entry]]) -> bool:
        if self.speeds is None:
            return False
        speeds = [self.speeds.speed(leaf.target.label) for _, e in entries for leaf in e]
        return all(s.tokens_per_s for s in speeds if s is not None)

    def _fastest(self, entries: list[tuple[Target, _Entry]]) -> list[_Leaf]:
        """Measured targets by expected time (time to first token plus the output at the
        throughput; by time to first token alone unless every measured target has a throughput),
        cold ones after in the operator's order; with the view's ``explore`` probability another
        target goes first (a cold one if there is one)."""
        by_throughput = self._all_have_throughput(entries)
        timed = [(self._expected_s(e, by_throughput), i, e) for i, (_, e) in enumerate(entries)]
        warm = sorted((t, i, e) for t, i, e in timed if t is not None)
        cold = [e for t, _, e in timed if t is None]
        order = [e for _, _, e in warm] + cold
        if self.speeds is not None and len(order) > 1 and self.rand() < self.speeds.explore:
            pool = [e for e in cold if e is not order[0]] or order[1:]
            pick = pool[min(len(pool) - 1, int(self.rand() * len(pool)))]
            order.remove(pick)
            order.insert(0, pick)
            self.explored = True
        return [leaf for entry in order for leaf in entry]


# The PlannedTargets of the document in force, built once per document (they are immutable, and
# a document's targets are too): the document (kept alive, so its ids stay unique) and
# (id(route), id(target)) -> planned.
_PLANNED: list[tuple[RoutingDocument, dict[tuple[int, int], PlannedTarget]]] = []


def _planned_cache(doc: RoutingDocument) -> dict[tuple[int, int], PlannedTarget]:
    for held, cache in _PLANNED:
        if held is doc:
            return cache
    cache = {}
    _PLANNED.insert(0, (doc, cache))
    del _PLANNED[4:]  # the document in force and a few before it (an edit, the CLI, tests)
    return cache


def _flatten(entries: Sequence[tuple[Target, _Entry]]) -> list[_Leaf]:
    return [leaf for _, entry in entries for leaf in entry]


# ----------------------------------------------------------------------------- the decision


def decide(
    doc: RoutingDocument,
    alias: str,
    facts: RequestFacts,
    *,
    price_of: PriceOf | None = None,
    speeds: Speeds | None = None,
    rand: Callable[[], float] = random.random,
    mode: str | None = "chat",
    visible: frozenset[str] | None = None,
    filters: Sequence[TargetFilter] = (),
    rules: bool = True,
    allow_empty: bool = False,
) -> Decision:
    """The decision for a request for ``alias`` (see the module docstring). Raises
    ``ModelNotFound`` for an unknown alias, and a 400 when every target is skipped (unless
    ``allow_empty``: a fallback alias of ``models`` may have nothing left, the plan goes on)."""
    check_alias(doc, alias, mode, visible)
    served, fired, skipped = (
        _apply_rules(doc.rules, alias, facts) if rules and mode != "embeddings" else (alias, [], {})
    )
    route = doc.models[served]
    orderer = _Orderer(doc, facts, price_of, speeds, rand)
    verdicts: list[Verdict] = []
    seen: set[str] = set()
    for leaf in orderer.order(served):
        target = leaf.target
        price = orderer.price(target)
        verdict = Verdict(target, Reason.KEPT, "", leaf.group, facts, price)
        if speeds is not None and doc.models[leaf.group].strategy == "fastest":
            verdict.speed = speeds.speed(target.label)
        verdict.reason, verdict.detail = _judge(leaf, price, facts, skipped, seen, filters, doc)
        if verdict.kept:
            seen.add(target.label)
        verdicts.append(verdict)
    kept = tuple(v.target for v in verdicts if v.kept)
    if not kept and not allow_empty:
        raise _nothing_kept(served, verdicts)
    plan = Plan(
        served, kept, route.retry or doc.defaults.retry, route.fallback_on, route.mode, route.hedge_after_ms
    )
    return Decision(alias, served, route.strategy, plan, verdicts, fired, facts, orderer.explored)


def _judge(
    leaf: _Leaf,
    price: Price | None,
    facts: RequestFacts,
    skipped: Mapping[str, tuple[int, Reason]],
    seen: set[str],
    filters: Sequence[TargetFilter],
    doc: RoutingDocument,
) -> tuple[Reason, str]:
    target = leaf.target
    if target.label in seen:
        return Reason.DUPLICATE, "already in the plan through another group"
    if leaf.excluded is not None:
        return Reason.ZERO_WEIGHT, leaf.excluded
    window = target.context_window or (price.context_window if price is not None else None)
    if window is not None and facts.prompt_tokens > window:
        return (
            Reason.CONTEXT_TOO_SMALL,
            f"the prompt (about {facts.prompt_tokens} tokens) exceeds its context window of {window}",
        )
    if target.label in skipped:
        index, reason = skipped[target.label]
        return reason, f"skipped by rules[{index}]"
    for check in filters:
        verdict = check(target)
        if verdict is not None:
            return verdict
    return Reason.KEPT, _kept_detail(leaf, doc)


def _kept_detail(leaf: _Leaf, doc: RoutingDocument) -> str:
    strategy = doc.models[leaf.group].strategy
    return f"{strategy} order in {leaf.group!r}"


def _nothing_kept(alias: str, verdicts: list[Verdict]) -> InvalidRequest:
    reasons = "; ".join(f"{v.target.label}: {v.reason} ({v.detail})" for v in verdicts)
    if verdicts and all(v.reason is Reason.CONTEXT_TOO_SMALL for v in verdicts):
        return InvalidRequest(
            f"This request's prompt fits none of the model '{alias}''s targets: {reasons}.",
            param="messages",
            code="context_length_exceeded",
        )
    return InvalidRequest(
        f"Every target of the model '{alias}' is skipped for this request: {reasons}.",
        param="model",
        code="no_target_available",
    )
