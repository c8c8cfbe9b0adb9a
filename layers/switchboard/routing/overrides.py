"""Per-request routing overrides, as OpenRouter's clients send them: ``models`` and ``provider``.

``models: [a, b]`` is an ordered fallback list of aliases after the request's ``model``;
``provider: {order, only, ignore, allow_fallbacks, sort, max_price}`` reorders and filters the
targets of the plan. Both are refused (403, naming the field) unless the key's ``overrides``
allow-list names the field (``models``, ``provider``, or one ``provider.<field>``), and neither
ever reaches an upstream: ``take`` removes them from the request before anything else reads it.

``apply`` is pure: a plan, the overrides and a price source in; the new plan and one ``Decision``
per target (kept or skipped, with the reason) out. ``routing.route`` runs it for both a call and
the explain endpoint, so explain shows the reasons the real call used. ``sort: latency|throughput``
orders by a ``rank`` the caller gives (``Router.rank``: the fastest strategy's shared speed
stats); without one the plan's order stands. See docs/routing.md, "Per-request overrides".
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, MutableMapping
from dataclasses import dataclass, replace
from decimal import Decimal
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from switchboard.core.errors import InvalidRequest, PermissionDenied
from switchboard.routing.planner import Plan, PlannedTarget

__all__ = [
    "FIELDS",
    "Decision",
    "MaxPrice",
    "Overrides",
    "ProviderPreferences",
    "apply",
    "check_allowed",
    "combine",
    "take",
]

# What a key's allow-list may name: a whole override, or one field of ``provider``.
FIELDS = frozenset(
    {
        "models",
        "provider",
        "provider.order",
        "provider.only",
        "provider.ignore",
        "provider.allow_fallbacks",
        "provider.sort",
        "provider.max_price",
    }
)


class MaxPrice(BaseModel):
    """OpenRouter's price cap: USD per million tokens."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    prompt: Decimal | None = Field(default=None, ge=0)
    completion: Decimal | None = Field(default=None, ge=0)


class ProviderPreferences(BaseModel):
    """``provider``: names are the routing document's provider names."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    order: list[str] | None = None
    only: list[str] | None = None
    ignore: list[str] | None = None
    allow_fallbacks: bool | None = None
    sort: Literal["price", "latency", "throughput"] | None = None
    max_price: MaxPrice | None = None

    def used(self) -> list[str]:
        """The ``provider.<field>`` names this request sets."""
        return [f"provider.{name}" for name in sorted(self.model_fields_set)]


@dataclass(frozen=True, slots=True)
class Overrides:
    models: tuple[str, ...] = ()
    provider: ProviderPreferences | None = None

    @property
    def empty(self) -> bool:
        return not self.models and self.provider is None


@dataclass(frozen=True, slots=True)
class Decision:
    """One target of the plan: kept (with its place) or skipped, and why."""

    target: str
    kept: bool
    reason: str
    code: str = ""  # skipped: "override", "price_cap" or "breaker_open" (``decide.Reason``)


def take(extra: MutableMapping[str, Any] | None) -> Overrides:
    """Remove ``models`` and ``provider`` from a request's fields and parse them (a 400 when
    malformed). Removed before anything is sent, so no upstream ever sees them."""
    if not extra:
        return Overrides()
    models_raw = extra.pop("models", None)
    provider_raw = extra.pop("provider", None)
    models: tuple[str, ...] = ()
    if models_raw is not None:
        if not isinstance(models_raw, list) or not all(isinstance(m, str) and m for m in models_raw):
            raise InvalidRequest(
                "'models' must be a list of model names.", param="models", code="invalid_value"
            )
        models = tuple(models_raw)
    provider = None
    if provider_raw is not None:
        try:
            provider = ProviderPreferences.model_validate(provider_raw)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(["provider", *(str(part) for part in first["loc"])])
            raise InvalidRequest(
                f"Invalid request: '{where}': {first['msg']}", param=where, code="invalid_value"
            ) from None
    return Overrides(models, provider)


def check_allowed(overrides: Overrides, allowed: frozenset[str]) -> None:
    """403 naming the first field this request uses and the key may not."""
    used = (["models"] if overrides.models else []) + (
        overrides.provider.used() if overrides.provider is not None else []
    )
    for name in used:
        if name in allowed or name.split(".")[0] in allowed:
            continue
        raise PermissionDenied(
            f"This key may not use the routing override '{name}'. An administrator can allow it "
            f"with `switchboard keys update <id> --overrides {name}`.",
            param=name,
            code="override_not_allowed",
        )


def combine(plans: Iterable[Plan]) -> Plan:
    """``models``: one plan of the aliases' targets in order; the first alias's retry and
    fallback rules, a target listed twice tried once."""
    plans = list(plans)
    first = plans[0]
    seen: set[tuple[str, str]] = set()
    targets: list[PlannedTarget] = []
    for each in plans:
        for target in each.targets:
            if (target.provider_name, target.model) not in seen:
                seen.add((target.provider_name, target.model))
                targets.append(target)
    return replace(first, targets=tuple(targets))


Price = Callable[[PlannedTarget], tuple[Decimal, Decimal] | None]
Rank = Callable[[PlannedTarget, str], float | None]


def apply(
    plan: Plan, prefs: ProviderPreferences | None, price: Price, rank: Rank | None = None
) -> tuple[Plan, list[Decision]]:
    """The plan after ``provider``'s filters and order, and why each target was kept or skipped.

    ``price`` gives a target's (input, output) USD per Mtok or None; ``rank`` a target's figure
    for ``latency`` or ``throughput`` (lower first for latency, higher first for throughput)."""
    if prefs is None:
        return plan, [Decision(t.label, True, "in the plan") for t in plan.targets]
    decisions: list[Decision] = []
    kept: list[PlannedTarget] = []
    for target in plan.targets:
        skip = _skip_reason(target, prefs, price)
        if skip is None:
            kept.append(target)
        else:
            decisions.append(Decision(target.label, False, f"override: {skip[1]}", skip[0]))
    kept = _ordered(kept, prefs, price, rank)
    if prefs.allow_fallbacks is False:
        primary = [t for t in kept if t.provider_name in prefs.order] if prefs.order else kept[:1]
        for target in kept:
            if target not in primary:
                why = "override: provider.allow_fallbacks is false"
                decisions.append(Decision(target.label, False, why, "override"))
        kept = primary
    decisions = [Decision(t.label, True, _kept_reason(t, prefs, price, rank)) for t in kept] + decisions
    if not kept:
        detail = "; ".join(f"{d.target}: {d.reason}" for d in decisions)
        raise InvalidRequest(
            f"No target of model '{plan.alias}' is left after the request's provider preferences ({detail}).",
            param="provider",
            code="no_target_left",
        )
    return replace(plan, targets=tuple(kept)), decisions


def _skip_reason(target: PlannedTarget, prefs: ProviderPreferences, price: Price) -> tuple[str, str] | None:
    """(code, sentence) when ``provider`` drops ``target``; None when it stays."""
    name = target.provider_name
    if prefs.only is not None and name not in prefs.only:
        return "override", f"provider {name!r} is not in provider.only"
    if prefs.ignore is not None and name in prefs.ignore:
        return "override", f"provider {name!r} is in provider.ignore"
    cap = prefs.max_price
    if cap is not None and (cap.prompt is not None or cap.completion is not None):
        known = price(target)
        if known is None:
            return "price_cap", "no known price under provider.max_price"
        if cap.prompt is not None and known[0] > cap.prompt:
            return "price_cap", f"input price {known[0]} over provider.max_price.prompt {cap.prompt}"
        if cap.completion is not None and known[1] > cap.completion:
            return "price_cap", f"output price {known[1]} over provider.max_price.completion {cap.completion}"
    return None


def _kept_reason(target: PlannedTarget, prefs: ProviderPreferences, price: Price, rank: Rank | None) -> str:
    """What ``provider`` did to a target it kept: its ``sort`` figure, its place in ``order``."""
    parts: list[str] = []
    if prefs.sort == "price":
        known = price(target)
        parts.append(
            "provider.sort price: no known price, after the priced ones"
            if known is None
            else f"provider.sort price: {known[0]} + {known[1]} USD per Mtok"
        )
    elif prefs.sort is not None:
        value = rank(target, prefs.sort) if rank is not None else None
        unit = "s to first token" if prefs.sort == "latency" else "tokens/s"
        figure = "time to first token" if prefs.sort == "latency" else "throughput"
        parts.append(
            f"provider.sort {prefs.sort}: no {figure} measured lately, after the measured ones"
            if value is None
            else f"provider.sort {prefs.sort}: {value:.4g} {unit}"
        )
    if prefs.order and target.provider_name in prefs.order:
        parts.append(f"provider.order #{prefs.order.index(target.provider_name) + 1}")
    return "override: " + ("; ".join(parts) or "kept")


def _ordered(
    targets: list[PlannedTarget], prefs: ProviderPreferences, price: Price, rank: Rank | None
) -> list[PlannedTarget]:
    """``sort`` first (stable: ties keep the plan's order), then ``order`` in front."""
    if prefs.sort == "price":
        unknown = (Decimal("Infinity"), Decimal("Infinity"))
        targets = sorted(targets, key=lambda t: sum(price(t) or unknown))
    elif prefs.sort is not None and rank is not None:
        sort = prefs.sort
        sign = 1.0 if sort == "latency" else -1.0

        def figure(target: PlannedTarget) -> float:
            value = rank(target, sort)
            return float("inf") if value is None else sign * value

        targets = sorted(targets, key=figure)
    if prefs.order:
        position = {name: index for index, name in enumerate(prefs.order)}
        targets = sorted(targets, key=lambda t: position.get(t.provider_name, len(position)))
    return targets
