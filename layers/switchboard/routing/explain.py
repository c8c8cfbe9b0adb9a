"""A routing decision as JSON: what ``POST /v1/route/explain`` and ``switchboard routing explain``
print. Pure: a ``Decision`` (from ``decide``, the function a call uses) in, a dict out."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from switchboard.routing.decide import Decision, Verdict

__all__ = ["explanation"]


def _usd(value: Decimal | None) -> str | None:
    return None if value is None else format(value.normalize(), "f")


def _target(verdict: Verdict) -> dict[str, Any]:
    target, price = verdict.target, verdict.price
    window = target.context_window or (price.context_window if price is not None else None)
    entry: dict[str, Any] = {
        "provider": target.provider_name,
        "model": target.model,
        "kept": verdict.kept,
        "reason": verdict.reason.value,
        "detail": verdict.detail,
        "group": verdict.group,
        "context_window": window,
        "estimated_cost_usd": _usd(verdict.cost_usd),
    }
    if price is not None:
        entry["price_per_mtok"] = {
            "input": _usd(price.input_per_mtok),
            "output": _usd(price.output_per_mtok),
        }
    if verdict.speed is not None:
        entry["speed"] = {
            "ttft_s": round(verdict.speed.ttft_s, 4),
            "tokens_per_s": verdict.speed.tokens_per_s,
        }
    return entry


def explanation(decision: Decision, revision: str, admission: dict[str, Any] | None = None) -> dict[str, Any]:
    """The JSON answer for ``decision`` under routing revision ``revision``."""
    facts = decision.facts
    cost = decision.cost_range()
    body: dict[str, Any] = {
        "object": "route.explanation",
        "requested_model": decision.requested,
        "model": decision.alias,
        "endpoint": facts.endpoint,
        "strategy": decision.strategy,
        "routing_revision": revision,
        "estimate": {
            "prompt_tokens": facts.prompt_tokens,
            "output_tokens": facts.output_tokens,
            "output_tokens_from": "max_tokens" if facts.max_tokens else "default",
        },
        "rules": [
            {"index": rule.index, "action": rule.action, "description": rule.description}
            for rule in decision.rules
        ],
        "targets": [_target(v) for v in decision.verdicts],
        "estimated_cost_usd": {"min": _usd(cost[0]), "max": _usd(cost[1])} if cost else None,
        "explored": decision.explored,
    }
    if admission is not None:
        body["admission"] = admission
    return body
