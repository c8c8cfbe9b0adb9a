"""The spend ledger: per-month aggregates in DynamoDB, written behind the response.

Each request adds to one item of the single table (``settings.table``)::

    pk = spend#<YYYY-MM>#<shard>        shard: 0..SHARDS-1, drawn at random per write
    sk = k#<key id>#t#<team>#m#<alias>#p#<provider>#x#<upstream model>
    ADD requests, errors, unpriced, estimated, input_tokens, output_tokens, cached_tokens, cost_usd
    SET key_id, key_name, team, model, provider, target, period, ttl

One item per (key, team, alias, provider, upstream model) and month, so ``switchboard spend``
groups by any of them with one ``Query`` per shard. The shards spread one busy combination over
``SHARDS`` items, lifting DynamoDB's per-item write ceiling (about 1,000 writes a second) by as
much. ``cost_usd`` is a DynamoDB number, exact to the sub-micro-dollar (no float anywhere).

When it is written, so that no request waits for it:

- A request settled by the limits hook (its key has a budget or a rate limit) is booked inside
  that settlement's transaction (``transact_item``): no extra round trip, and booked exactly when
  the budget is.
- Every other request adds its figures to an in-process line for its item. In a long-running
  server (``make dev``, a container) a flush ``flush_s`` after the first unwritten request writes
  one ``UpdateItem`` per line (the sums of every request since the last flush): under load one
  write per item per ``flush_s``, not one per request, and the server's shutdown (uvicorn's
  lifespan) flushes what is left.
- In Lambda, ``flush_s`` is 0 (``Settings.from_env`` makes it the default there, in both
  deployment modes): the write is made in ``settle``, before the response ends, one
  ``UpdateItem`` (1 write unit) per request. A delayed flush cannot work there: once its response
  is sent an instance is frozen until its next request, so a timer set for one second later fires
  only when (if ever) the instance is thawed, and an instance that is never invoked again loses
  its lines unless the SIGTERM at its end comes through.
- A failed write keeps its line for the next flush, counted in ``SpendLedgerWriteFailures``.

What can be lost: the unwritten lines of a server process killed without a shutdown (an
out-of-memory kill), at most ``flush_s`` of its requests (in Lambda, none: nothing waits); the
cost events (one per request, CloudWatch) still have every one. A write that DynamoDB applied but
whose answer was lost is retried, as the AWS client itself retries (``switchboard.infra.awsjson``,
or boto3), and may count twice.

What is written: every request that got an answer, an error or an interruption; requests refused
at admit cost nothing and are left to the cost event. Unpriced requests add their tokens and count
in ``unpriced``, with no cost. Items expire (TTL) about 400 days after their last write.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from switchboard.core.money import usage_breakdown
from switchboard.exchange import BOOKED, Exchange

__all__ = ["SHARDS", "SpendLedger", "period_of", "sort_key"]

log = logging.getLogger("switchboard.spendledger")

SHARDS = 4
_RETAIN_S = 400 * 86400


def period_of(epoch_s: float) -> str:
    """The calendar month (UTC) a request is booked in: ``2026-11``."""
    return time.strftime("%Y-%m", time.gmtime(epoch_s))


def sort_key(ex: Exchange, provider: str, model: str) -> str:
    """The item's ``sk``: one item per key, team, alias, provider and upstream model."""
    team = ex.principal.team or "-"
    return f"k#{ex.principal.key_id}#t#{team}#m#{ex.alias}#p#{provider}#x#{model}"


def _target(ex: Exchange) -> tuple[str, str]:
    if ex.target is not None:
        return ex.target.provider_name, ex.target.model
    if ex.attempts:
        provider, _, model = str(ex.attempts[-1].target).partition("/")
        return provider, model
    return "none", "-"


@dataclass(slots=True)
class _Line:
    """One item's unwritten sums: what the next ``UpdateItem`` on it adds."""

    period: str
    sk: str
    numbers: dict[str, Any]  # the ADD figures, keyed by placeholder
    strings: dict[str, str]  # the SET values of the newest request

    def add(self, other: _Line) -> None:
        for name, value in other.numbers.items():
            self.numbers[name] = self.numbers.get(name, 0) + value
        self.strings = other.strings


class SpendLedger:
    """Hook: books each settled request into its month's aggregate item (see the module doc)."""

    def __init__(
        self,
        table: str,
        client: Callable[[], Any],
        *,
        flush_s: float = 0.0,
        clock: Callable[[], float] = time.time,
        shard: Callable[[], int] = lambda: random.randrange(SHARDS),
    ) -> None:
        self.table = table
        self.flush_s = flush_s
        self._client = client
        self._clock = clock
        self._shard = shard
        self._pending: dict[tuple[str, str], _Line] = {}
        self._flusher: asyncio.Task[None] | None = None

    async def admit(self, ex: Exchange) -> None:
        return None

    async def settle(self, ex: Exchange) -> None:
        if ex.outcome == "rejected" or ex.state.get(BOOKED):
            return
        self._hold(self._line(ex))
        if self.flush_s <= 0:
            await self.flush()
        elif self._flusher is None or self._flusher.done():
            self._flusher = asyncio.get_running_loop().create_task(self._flush_later())

    def transact_item(self, ex: Exchange) -> dict[str, Any] | None:
        """The ``Update`` for a ``TransactWriteItems`` that settles ``ex`` (None: nothing to book).
        Whoever writes it sets ``ex.state[BOOKED]`` once the transaction succeeded."""
        if ex.outcome == "rejected":
            return None
        return {"Update": self._update(self._line(ex))}

    @property
    def pending(self) -> int:
        """Items with unwritten sums."""
        return len(self._pending)

    async def flush(self) -> None:
        """Write every unwritten line now; a line whose write fails is kept for the next flush."""
        lines, self._pending = self._pending, {}
        for line in lines.values():
            try:
                await asyncio.to_thread(self._client().update_item, **self._update(line))
            except Exception as exc:  # the responses are long gone: keep the sums, count, never raise
                log.error(
                    "spend ledger write failed for %s (%s requests kept for the next flush): %s",
                    line.sk,
                    line.numbers[":one"],
                    type(exc).__name__,
                )
                _count_failure()
                self._hold(line)

    async def _flush_later(self) -> None:
        # Until nothing is left: lines added during a write, and lines whose write failed.
        while self._pending:
            await asyncio.sleep(self.flush_s)
            await self.flush()

    def _hold(self, line: _Line) -> None:
        held = self._pending.get((line.period, line.sk))
        if held is None:
            self._pending[(line.period, line.sk)] = line
        else:
            held.add(line)

    def _line(self, ex: Exchange) -> _Line:
        period = period_of(self._clock())
        provider, model = _target(ex)
        usage = ex.usage
        cached = usage_breakdown(usage)[1] if usage is not None else 0
        priced = ex.cost_usd is not None
        numbers: dict[str, Any] = {
            ":one": 1,  # -> requests
            ":errors": 1 if ex.outcome == "error" or ex.error_code == "stream_interrupted" else 0,
            ":unpriced": 1 if usage is not None and not priced else 0,
            ":estimated": 1 if usage is not None and ex.usage_estimated else 0,
            ":input_tokens": usage.prompt_tokens if usage is not None else 0,
            ":output_tokens": usage.completion_tokens if usage is not None else 0,
            ":cached_tokens": cached,
            ":cost_usd": ex.cost_usd if ex.cost_usd is not None else Decimal(0),
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
        return _Line(period, sort_key(ex, provider, model), numbers, strings)

    def _update(self, line: _Line) -> dict[str, Any]:
        """The ``UpdateItem`` arguments that add ``line`` (pure: no I/O)."""
        numbers = {**line.numbers, ":ttl": int(self._clock()) + _RETAIN_S}
        # Every attribute through a placeholder: no clash with DynamoDB's reserved words (TTL...).
        names = {f"#{k[1:]}": k[1:] for k in (*numbers, *line.strings) if k != ":one"}
        names["#requests"] = "requests"
        values = {k: {"N": format(v, "f") if isinstance(v, Decimal) else str(v)} for k, v in numbers.items()}
        values.update({k: {"S": v} for k, v in line.strings.items()})
        sets = ", ".join(f"#{k[1:]} = {k}" for k in (*line.strings, ":ttl"))
        adds = ", ".join(["#requests :one", *(f"#{k[1:]} {k}" for k in numbers if k not in (":one", ":ttl"))])
        return {
            "TableName": self.table,
            "Key": {"pk": {"S": f"spend#{line.period}#{self._shard()}"}, "sk": {"S": line.sk}},
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
