"""Limits on a team, a user or a model alias (a key's own limits live on the key item).

Items (see docs/limits.md)::

    pk = limit#<scope>#<id>   sk = limit   budget_usd, period, rpm, tpm, lanes
    gsi1pk = limits           gsi1sk = <scope>#<id>

The gateway reads the whole set with one Query and keeps it for ``max_age_s`` per container:
an operator's change takes effect within that age (plus one read's timeout, see ``LimitCache``),
and a request pays no read for it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from decimal import Decimal
from typing import Any

from switchboard.core.errors import ServiceUnavailable
from switchboard.core.principal import Limits, Period, Scope
from switchboard.infra.refresh import Health, Refreshing, Unavailable
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
        lanes=int(values.get("lanes") or 1),
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
            "lanes": limits.lanes if limits.lanes > 1 and not limits.empty else None,
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
    """The whole set of definitions, re-read once it is ``max_age_s`` old, never inline while a
    recent set exists (stale-while-revalidate, ``switchboard.infra.refresh``): a set up to
    ``max_age_s + timeout_s`` old is served while one read refreshes it in the background; an older
    one is refreshed first (at most ``timeout_s``), and while DynamoDB fails the last set keeps
    serving. With no set yet, concurrent requests share one read and, if it fails or overruns,
    get ``ServiceUnavailable`` (503 ``limits_unavailable``)."""

    def __init__(
        self,
        store: LimitStore,
        max_age_s: float,
        clock: Callable[[], float] = time.monotonic,
        *,
        timeout_s: float = 1.0,
        health: Health | None = None,
    ) -> None:
        self.store = store
        self._cache: Refreshing[ScopedLimits] = Refreshing(
            store.all,
            "the limit definitions",
            max_age_s=max_age_s,
            timeout_s=timeout_s,
            health=health,  # the table's, shared with the key cache: one failing read marks both
            clock=clock,
        )

    @property
    def refreshing(self) -> Any:
        """The read in progress (an awaitable), or None."""
        return self._cache.flight

    async def current(self, deadline: float | None = None) -> ScopedLimits:
        try:
            return await self._cache.get(deadline)
        except Unavailable:
            raise ServiceUnavailable(
                "Limit definitions could not be read, so this request cannot be checked against its "
                "limits; retry shortly.",
                code="limits_unavailable",
            ) from None

    def invalidate(self) -> None:
        self._cache.expire()
