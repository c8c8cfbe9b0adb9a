"""Limits on a team, a user or a model alias (a key's own limits live on the key item).

Items (see docs/limits.md)::

    pk = limit#<scope>#<id>   sk = limit   budget_usd, period, rpm, tpm
    gsi1pk = limits           gsi1sk = <scope>#<id>

The gateway reads the whole set with one Query and keeps it for ``max_age_s`` per container:
an operator's change takes effect within that age, and a request pays no read for it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from decimal import Decimal
from typing import Any

from switchboard.limits.model import Limits, Period, Scope
from switchboard.limits.table import Table, dump, limit_item_key, load

__all__ = ["LimitCache", "LimitStore", "ScopedLimits"]

log = logging.getLogger("switchboard.limits")

_INDEX = "limits"
ScopedLimits = dict[tuple[Scope, str], Limits]


def _limits(values: dict[str, Any]) -> Limits:
    budget = values.get("budget_usd")
    return Limits(
        budget_usd=Decimal(budget) if budget is not None else None,
        period=Period(values.get("period", "month")),
        rpm=int(values["rpm"]) if values.get("rpm") is not None else None,
        tpm=int(values["tpm"]) if values.get("tpm") is not None else None,
    )


class LimitStore:
    """Team, user and model-alias limits in the table."""

    SCOPES = (Scope.TEAM, Scope.USER, Scope.MODEL)

    def __init__(self, table: Table, clock: Callable[[], float] = time.time) -> None:
        self.table = table
        self._clock = clock

    def put(self, scope: Scope, ident: str, limits: Limits) -> None:
        if scope not in self.SCOPES:
            raise ValueError(f"scope {scope!r}: a key's limits are set with 'switchboard keys update'")
        values = {
            "scope": scope.value,
            "id": ident,
            "budget_usd": limits.budget_usd,
            "period": limits.period.value if limits.budget_usd is not None else None,
            "rpm": limits.rpm,
            "tpm": limits.tpm,
            "updated_at": int(self._clock()),
            "gsi1pk": _INDEX,
            "gsi1sk": f"{scope.value}#{ident}",
        }
        self.table.client.put_item(
            TableName=self.table.name, Item={**limit_item_key(scope.value, ident), **dump(values)}
        )

    def delete(self, scope: Scope, ident: str) -> bool:
        """Remove a definition; False when there was none."""
        found = self.table.client.delete_item(
            TableName=self.table.name, Key=limit_item_key(scope.value, ident), ReturnValues="ALL_OLD"
        )
        return bool(found.get("Attributes"))

    def get(self, scope: Scope, ident: str) -> Limits | None:
        found = self.table.client.get_item(TableName=self.table.name, Key=limit_item_key(scope.value, ident))
        item = found.get("Item")
        return _limits(load(item)) if item else None

    def all(self) -> ScopedLimits:
        result: ScopedLimits = {}
        for item in self.table.index_items(_INDEX):
            values = load(item)
            result[(Scope(values["scope"]), str(values["id"]))] = _limits(values)
        return result


class LimitCache:
    """The whole set of definitions, re-read at most every ``max_age_s``; the last good set on error."""

    def __init__(
        self, store: LimitStore, max_age_s: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.store = store
        self._max_age_s = max_age_s
        self._clock = clock
        self._value: ScopedLimits | None = None
        self._loaded_at = float("-inf")
        self._lock = asyncio.Lock()

    async def current(self) -> ScopedLimits:
        if self._value is not None and self._clock() - self._loaded_at < self._max_age_s:
            return self._value
        async with self._lock:  # one refresh at a time; the others wait for its answer
            if self._value is not None and self._clock() - self._loaded_at < self._max_age_s:
                return self._value
            try:
                self._value = await asyncio.to_thread(self.store.all)
            except Exception:
                if self._value is None:
                    raise
                log.warning("limit definitions unreadable; keeping the last set", exc_info=True)
            self._loaded_at = self._clock()
            return self._value

    def invalidate(self) -> None:
        self._loaded_at = float("-inf")
