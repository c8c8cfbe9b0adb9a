"""The spend ledger: per-month aggregates in DynamoDB, one ``UpdateItem`` per settled request.

Each request adds to one item of the single table (``settings.table``)::

    pk = spend#<YYYY-MM>#<shard>        shard: 0..SHARDS-1, drawn at random per request
    sk = k#<key id>#t#<team>#m#<alias>#p#<provider>#x#<upstream model>
    ADD requests, errors, unpriced, estimated, input_tokens, output_tokens, cached_tokens, cost_usd
    SET key_id, key_name, team, model, provider, target, period, ttl

One item per (key, team, alias, provider, upstream model) and month, so ``switchboard spend``
groups by any of them with one ``Query`` per shard. The shards spread one busy combination over
``SHARDS`` items, lifting DynamoDB's per-item write ceiling (about 1,000 writes a second) by as
much. ``cost_usd`` is a DynamoDB number, exact to the sub-micro-dollar (no float anywhere).

What is written: every request that got an answer, an error or an interruption; requests refused
at admit cost nothing and are left to the cost event. Unpriced requests add their tokens and count
in ``unpriced``, with no cost. Items expire (TTL) about 400 days after their last write.

This is the gateway's own spend record, for the report. Budget enforcement keeps its own ledger
(reservations and settlement); the two may later share the write.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable
from decimal import Decimal
from typing import Any

from switchboard.costs import usage_breakdown
from switchboard.lifecycle import Exchange

__all__ = ["SHARDS", "SpendLedger", "item_key", "period_of"]

log = logging.getLogger("switchboard.spendledger")

SHARDS = 4
_RETAIN_S = 400 * 86400


def period_of(epoch_s: float) -> str:
    """The calendar month (UTC) a request is booked in: ``2026-11``."""
    return time.strftime("%Y-%m", time.gmtime(epoch_s))


def item_key(period: str, shard: int, ex: Exchange, provider: str, model: str) -> dict[str, dict[str, str]]:
    team = ex.principal.team or "-"
    sk = f"k#{ex.principal.key_id}#t#{team}#m#{ex.alias}#p#{provider}#x#{model}"
    return {"pk": {"S": f"spend#{period}#{shard}"}, "sk": {"S": sk}}


def _target(ex: Exchange) -> tuple[str, str]:
    if ex.target is not None:
        return ex.target.provider_name, ex.target.model
    if ex.attempts:
        provider, _, model = str(ex.attempts[-1].target).partition("/")
        return provider, model
    return "none", "-"


class SpendLedger:
    """Hook: books each settled request into its month's aggregate item."""

    def __init__(
        self,
        table: str,
        client: Callable[[], Any],
        *,
        clock: Callable[[], float] = time.time,
        shard: Callable[[], int] = lambda: random.randrange(SHARDS),
    ) -> None:
        self.table = table
        self._client = client
        self._clock = clock
        self._shard = shard

    async def admit(self, ex: Exchange) -> None:
        return None

    async def settle(self, ex: Exchange) -> None:
        if ex.outcome == "rejected":
            return
        request = self.update_request(ex)
        try:
            await asyncio.to_thread(self._client().update_item, **request)
        except Exception as exc:  # the response is already decided: count it, never raise
            log.error("spend ledger write failed for request %s: %s", ex.request_id, type(exc).__name__)
            _count_failure()

    def update_request(self, ex: Exchange) -> dict[str, Any]:
        """The ``UpdateItem`` arguments for ``ex`` (pure: no I/O)."""
        now = self._clock()
        period = period_of(now)
        provider, model = _target(ex)
        usage = ex.usage
        cached = usage_breakdown(usage)[1] if usage is not None else 0
        priced = ex.cost_usd is not None
        numbers = {
            ":one": 1,  # -> requests
            ":errors": 1 if ex.outcome == "error" or ex.error_code == "stream_interrupted" else 0,
            ":unpriced": 1 if usage is not None and not priced else 0,
            ":estimated": 1 if usage is not None and ex.usage_estimated else 0,
            ":input_tokens": usage.prompt_tokens if usage is not None else 0,
            ":output_tokens": usage.completion_tokens if usage is not None else 0,
            ":cached_tokens": cached,
            ":cost_usd": ex.cost_usd if ex.cost_usd is not None else Decimal(0),
            ":ttl": int(now) + _RETAIN_S,
        }
        strings = {
            ":key_id": ex.principal.key_id,
            ":key_name": ex.principal.name,
            ":team": ex.principal.team or "-",
            ":model": ex.alias,
            ":provider": provider,
            ":target": f"{provider}/{model}",
            ":period": period,
        }
        # Every attribute through a placeholder: no clash with DynamoDB's reserved words (TTL...).
        names = {f"#{k[1:]}": k[1:] for k in (*numbers, *strings) if k != ":one"}
        names["#requests"] = "requests"
        values = {k: {"N": format(v, "f") if isinstance(v, Decimal) else str(v)} for k, v in numbers.items()}
        values.update({k: {"S": v} for k, v in strings.items()})
        sets = ", ".join(f"#{k[1:]} = {k}" for k in (*strings, ":ttl"))
        adds = ", ".join(["#requests :one", *(f"#{k[1:]} {k}" for k in numbers if k not in (":one", ":ttl"))])
        return {
            "TableName": self.table,
            "Key": item_key(period, self._shard(), ex, provider, model),
            "UpdateExpression": f"SET {sets} ADD {adds}",
            "ExpressionAttributeNames": names,
            "ExpressionAttributeValues": values,
        }


def _count_failure() -> None:
    from aws_lambda_powertools.metrics import MetricUnit, single_metric

    with single_metric(
        name="SpendLedgerWriteFailures", unit=MetricUnit.Count, value=1, namespace="Switchboard"
    ) as metric:
        metric.add_dimension(name="service", value="switchboard")
