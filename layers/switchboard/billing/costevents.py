"""The cost event: one CloudWatch EMF line per settled request, through Powertools Metrics.

Every request that reaches admit is settled once (see ``switchboard.exchange``) and becomes one
JSON line on stdout. CloudWatch turns its metrics into time series and keeps the whole line in the
log group, so each request's properties stay queryable in Logs Insights.

Dimension sets (low cardinality only; operators choose the aliases and provider names)::

    [model, provider, service]   cost, tokens, errors and latency per alias and provider
    [service, outcome]           requests by outcome (ok, error, interrupted, rejected)
    [service]                    gateway-wide rates and percentiles, for the alarms

Counters are emitted as 0 or 1 on every event, so ``Average`` of ``Errors`` or ``Fallbacks`` is
a rate. Key id, key name, team and request id are properties, never dimensions. The names are
documented in ``docs/observability.md``; ``PROPERTIES`` below is that list, and a test keeps the
two in step. Nothing secret reaches the event: keys appear only as their digest prefix, upstream
error messages are left out, and the finished line is scrubbed of every secret the gateway holds
(``switchboard.core.redaction``: an upstream's error code is a property, and it could quote a key).
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from typing import Any

import pydantic_core

from switchboard.billing.metering import format_usd
from switchboard.core.money import usage_breakdown
from switchboard.core.redaction import scrub
from switchboard.exchange import Exchange

__all__ = ["METRICS", "PROPERTIES", "CostEvents", "overhead_ms"]


NAMESPACE = "Switchboard"
# The ``service`` dimension outside a stack. In a stack it is POWERTOOLS_SERVICE_NAME, the stack's
# name (template.yaml), as Powertools gives the other metrics: two stacks in one account keep
# their metrics, alarms and dashboards apart.
SERVICE = "switchboard"

# name -> CloudWatch unit
METRICS: dict[str, str] = {
    "Requests": "Count",
    "Errors": "Count",
    "Fallbacks": "Count",
    "BudgetRejections": "Count",
    "RateLimited": "Count",
    "UnpricedRequests": "Count",
    "Attempts": "Count",
    "InputTokens": "Count",
    "OutputTokens": "Count",
    "CostUSD": "None",
    "Latency": "Milliseconds",
    "TimeToFirstToken": "Milliseconds",
    "GatewayOverhead": "Milliseconds",
}

PROPERTIES: tuple[str, ...] = (
    "request_id",
    "endpoint",
    "key_id",
    "key_name",
    "team",
    "routing_revision",
    "status",
    "error_code",
    "stream",
    "target",
    "rule",
    "attempts",
    "cached_tokens",
    "cache_write_tokens",
    "reasoning_tokens",
    "usage_estimated",
    "cost_usd",
    "price_origin",
)


def _stdout(line: str) -> None:
    out = sys.stdout  # looked up per call: tests and runtimes may swap it
    out.write(line)
    out.flush()


def _upstream_ms(ex: Exchange) -> float:
    """Time spent waiting on upstreams (and in backoff between them), from the attempt records."""
    return float(sum(a.latency_ms + getattr(a, "waited_ms", 0.0) for a in ex.attempts))


def _end(ex: Exchange, now: float) -> float | None:
    """When the client got its answer. A buffered response leaves after every hook has settled
    (the spend ledger's write included), so that is now; a stream ended before settle began."""
    return ex.finished_at if ex.chat.stream else now


def overhead_ms(ex: Exchange, now: float | None = None) -> float:
    """The gateway's own time: until the first token for streams, the whole request otherwise."""
    end = ex.first_token_at or _end(ex, time.monotonic() if now is None else now)
    if end is None:
        return 0.0
    return max(0.0, (end - ex.started) * 1000 - _upstream_ms(ex))


def _provider(ex: Exchange) -> str:
    if ex.target is not None:
        return ex.target.provider_name
    if ex.attempts:
        return str(ex.attempts[-1].target).split("/", 1)[0]
    return "none"


def _is_error(ex: Exchange) -> bool:
    """A failure of the gateway or its upstreams: a 5xx answer or a stream broken upstream. An
    upstream's 4xx passed on to the client (bad request, context too long) is the client's."""
    return (ex.outcome == "error" and ex.status >= 500) or ex.error_code == "stream_interrupted"


class CostEvents:
    """Hook: emits the cost event in ``settle``. Synchronous and I/O-free apart from one write."""

    def __init__(
        self,
        namespace: str = NAMESPACE,
        service: str | None = None,
        write: Callable[[str], None] = _stdout,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.namespace = namespace
        self.service = service or os.environ.get("POWERTOOLS_SERVICE_NAME") or SERVICE
        self._write = write
        self._clock = clock
        self._emf: Any = None

    async def admit(self, ex: Exchange) -> None:
        return None

    async def settle(self, ex: Exchange) -> None:
        self.emit(ex)

    def emit(self, ex: Exchange) -> str:
        """Write the event for ``ex``; returns the line (without its newline)."""
        from aws_lambda_powertools.metrics.functions import is_metrics_disabled

        line = scrub(pydantic_core.to_json(self.event(ex)).decode())
        if not is_metrics_disabled():
            self._write(line + "\n")
        return line

    def event(self, ex: Exchange) -> dict[str, Any]:
        """The EMF document for ``ex``, serialised by Powertools' CloudWatch EMF provider.

        One provider is reused and fed whole metric and dimension sets: its per-metric
        ``add_metric`` validation costs about 15 us a call, twelve times per event, for names and
        units that are constants here (``METRICS``, checked by the tests).
        """
        emf = self._emf
        if emf is None:
            from aws_lambda_powertools.metrics.provider.cloudwatch_emf.cloudwatch import (
                AmazonCloudWatchEMFProvider,
            )

            emf = self._emf = AmazonCloudWatchEMFProvider(namespace=self.namespace, service=self.service)
        service = self.service
        emf.dimension_sets = [{"service": service, "outcome": ex.outcome}, {"service": service}]
        values = {name: float(value) for name, value in self._metrics(ex).items()}
        metrics = {
            name: {"Unit": METRICS[name], "StorageResolution": 60, "Value": [v]} for name, v in values.items()
        }
        dimensions = {"model": ex.alias, "provider": _provider(ex), "service": service}
        event = dict(
            emf.serialize_metric_set(metrics=metrics, dimensions=dimensions, metadata=self._properties(ex))
        )
        event.update(values)  # scalars, not one-element lists: Logs Insights can sum them
        return event

    def _metrics(self, ex: Exchange) -> dict[str, float]:
        rejected = ex.outcome == "rejected"
        targets = {a.target for a in ex.attempts}
        metrics: dict[str, float] = {
            "Requests": 1,
            "Errors": 1 if _is_error(ex) else 0,
            "Fallbacks": 1 if len(targets) > 1 else 0,
            "BudgetRejections": 1 if rejected and ex.status == 402 else 0,
            "RateLimited": 1 if rejected and ex.status == 429 else 0,
            "UnpricedRequests": 1 if ex.usage is not None and ex.cost_usd is None else 0,
            "Attempts": len(ex.attempts),
        }
        if ex.usage is not None:
            metrics["InputTokens"] = ex.usage.prompt_tokens
            metrics["OutputTokens"] = ex.usage.completion_tokens
        if ex.cost_usd is not None:
            metrics["CostUSD"] = float(ex.cost_usd)
        now = self._clock()
        end = _end(ex, now)
        if end is not None:
            metrics["Latency"] = round((end - ex.started) * 1000, 3)
        if ex.first_token_at:
            metrics["TimeToFirstToken"] = round((ex.first_token_at - ex.started) * 1000, 3)
        metrics["GatewayOverhead"] = round(overhead_ms(ex, now), 3)
        return metrics

    def _properties(self, ex: Exchange) -> dict[str, Any]:
        principal = ex.principal
        props: dict[str, Any] = {
            "request_id": ex.request_id,
            "endpoint": ex.kind,
            "key_id": principal.key_id,
            "key_name": principal.name,
            "team": principal.team,
            "routing_revision": ex.routing_revision,
            "status": ex.status,
            "error_code": ex.error_code,
            "stream": bool(ex.chat.stream),
            "target": ex.target.label if ex.target is not None else None,
            "rule": ex.rule,
            "attempts": [
                {
                    "target": a.target,
                    "class": str(a.outcome),
                    "status": a.status,
                    "latency_ms": round(a.latency_ms, 1),
                }
                for a in ex.attempts
            ],
            "price_origin": ex.price_origin,
        }
        if ex.usage is not None:
            _, cached, writes, _ = usage_breakdown(ex.usage)
            details = (ex.usage.model_extra or {}).get("completion_tokens_details")
            reasoning = details.get("reasoning_tokens") if isinstance(details, dict) else None
            props.update(cached_tokens=cached, cache_write_tokens=writes, reasoning_tokens=reasoning or 0)
            props["usage_estimated"] = ex.usage_estimated
        if ex.cost_usd is not None:
            props["cost_usd"] = format_usd(ex.cost_usd)  # exact, as a string; CostUSD is the float
        return {key: value for key, value in props.items() if value is not None}
