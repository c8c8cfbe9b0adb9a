"""The routing store: the document in force, from SSM, with last-known-good.

The parameter is read again once the copy is ``max_age_s`` old, so an edit takes effect without a
redeploy. A document that fails validation never replaces the one serving: the failure is logged
and counted, and the last good one stays.

A request never waits for SSM while a recent copy exists: a copy up to ``max_age_s + timeout_s``
old is served while one read refreshes it in the background (stale-while-revalidate,
``switchboard.infra.refresh``). An older copy is refreshed before it is served, so every request that
starts ``max_age_s + timeout_s`` after an edit sees it; while SSM fails or does not answer, the last
good copy keeps serving. With no document yet, concurrent requests share one read, each waiting at
most ``timeout_s`` and its own deadline, and get a 503 with ``Retry-After`` if it fails.

Where the parameter is read from: ``from_ssm`` reads it (joined from its parts when split,
``switchboard.routing.parts``) through the fleet's copy in DynamoDB when given a table, so the
fleet's SSM calls do not grow with its instances (``switchboard.routing.copy``), or directly.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

from switchboard.core.errors import ServiceUnavailable
from switchboard.infra.refresh import Refreshing, Unavailable
from switchboard.routing import parts
from switchboard.routing.copy import FleetCopy
from switchboard.routing.document import ProviderRegistry, RoutingDocument, load_document

__all__ = ["LoadedRouting", "RoutingStore", "RoutingUnavailable"]

log = logging.getLogger("switchboard.routing")


class RoutingUnavailable(ServiceUnavailable):
    code = "routing_unavailable"


@dataclass(frozen=True, slots=True)
class LoadedRouting:
    document: RoutingDocument
    revision: str


class _Rejected(ValueError):
    """The parameter holds no valid document and none was ever loaded (already logged, counted)."""


class RoutingStore:
    """Serves the current routing document; re-reads it once it is ``max_age_s`` old."""

    def __init__(
        self,
        fetch: Callable[[], str],
        max_age_s: float,
        *,
        timeout_s: float = 1.0,
        on_rejected: Callable[[str], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
        providers: ProviderRegistry | None = None,
    ) -> None:
        self._fetch = fetch
        self._providers = providers  # validation context (None: the registered registry)
        self._on_rejected = on_rejected
        self._raw: str | None = None  # the text last read (valid or not), touched by one read at a time
        self._cache: Refreshing[LoadedRouting] = Refreshing(
            self._read,
            "the routing document",
            max_age_s=max_age_s,
            timeout_s=timeout_s,
            on_error=self._failed,
            clock=clock,
        )
        self.rejected = 0

    @classmethod
    def from_ssm(
        cls,
        name: str,
        max_age_s: float,
        ssm_client: Any,
        *,
        table: tuple[Any, str] | None = None,
        **kwargs: Any,
    ) -> RoutingStore:
        """The document in SSM parameter ``name`` (String or SecureString, whole or in parts).
        ``table``: (DynamoDB client, table name) for the fleet's copy, which at most one instance
        refreshes from SSM per ``max_age_s``. The store's own ``max_age_s`` is the cache:
        Powertools Parameters would add a second one, and boto3's import."""
        if table is not None:
            ddb, table_name = table
            budget = kwargs.get("timeout_s", 1.0) / 2  # the rest of the read's wait: SSM, if need be
            copy = FleetCopy(ddb, table_name, name, ssm_client, max_age_s, budget_s=budget)
            return cls(copy.fetch, max_age_s, **kwargs)
        return cls(partial(parts.read, ssm_client, name), max_age_s, **kwargs)

    @property
    def refreshing(self) -> Any:
        """The read in progress (an awaitable), or None."""
        return self._cache.flight

    async def current(self, deadline: float | None = None) -> LoadedRouting:
        """The document in force (see the module docstring); ``deadline`` on ``time.monotonic``."""
        try:
            return await self._cache.get(deadline)
        except Unavailable:
            raise RoutingUnavailable(
                "The routing document could not be loaded; see the gateway's logs."
            ) from None

    def _read(self) -> LoadedRouting:
        """Fetch and, if it changed, validate the document (in a worker thread). A rejected edit
        keeps the last good document, and counts as a successful check."""
        raw = self._fetch()
        current = self._cache.peek()
        if raw == self._raw and current is not None:
            return current
        try:
            document, revision = load_document(raw, self._providers)
        except ValueError as exc:
            first = raw != self._raw
            self._raw = raw  # do not re-validate the same bad text on every refresh
            if first:
                log.error("routing document rejected, last good one keeps serving: %s", exc)
                self._reject(str(exc))
            if current is None:
                raise _Rejected("no valid routing document") from None
            return current
        self._raw = raw
        previous = current.revision if current else None
        if previous != revision:
            log.info("routing document %s in force (was %s)", revision, previous)
        return LoadedRouting(document, revision)

    def _failed(self, exc: BaseException) -> None:
        if isinstance(exc, _Rejected):
            return
        log.error("routing fetch failed: %s", type(exc).__name__)
        self._reject(f"fetch failed: {type(exc).__name__}")

    def _reject(self, reason: str) -> None:
        self.rejected += 1
        if self._on_rejected is not None:
            self._on_rejected(reason)
