"""The routing store: the document in force, from SSM, with last-known-good.

The parameter is read again at most every ``max_age_s`` seconds, so an edit takes effect within
that many seconds and no redeploy is needed. A document that fails validation never
replaces the one serving: the failure is logged and counted, and the last good one stays.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from switchboard.errors import GatewayError
from switchboard.routing.document import RoutingDocument, load_document

__all__ = ["LoadedRouting", "RoutingStore", "RoutingUnavailable"]

log = logging.getLogger("switchboard.routing")


class RoutingUnavailable(GatewayError):
    status = 503
    type = "server_error"
    code = "routing_unavailable"


@dataclass(frozen=True, slots=True)
class LoadedRouting:
    document: RoutingDocument
    revision: str


class RoutingStore:
    """Serves the current routing document; refreshes it at most every ``max_age_s`` seconds."""

    def __init__(
        self,
        fetch: Callable[[], str],
        max_age_s: float,
        *,
        on_rejected: Callable[[str], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._fetch = fetch
        self._max_age_s = max_age_s
        self._on_rejected = on_rejected
        self._clock = clock
        self._current: LoadedRouting | None = None
        self._raw: str | None = None
        self._checked_at = float("-inf")
        self._lock = asyncio.Lock()
        self.rejected = 0

    @classmethod
    def from_ssm(cls, name: str, max_age_s: float, ssm_client: Any, **kwargs: Any) -> RoutingStore:
        """The document in SSM parameter ``name`` (String or SecureString). The store's own
        ``max_age_s`` is the cache: Powertools Parameters would add a second one, and boto3's import."""

        def fetch() -> str:
            return str(ssm_client.get_parameter(Name=name, WithDecryption=True)["Parameter"]["Value"])

        return cls(fetch, max_age_s, **kwargs)

    async def current(self) -> LoadedRouting:
        """The document in force. Refreshes off the event loop when the cached copy is stale."""
        if self._clock() - self._checked_at < self._max_age_s and self._current is not None:
            return self._current
        async with self._lock:
            if self._clock() - self._checked_at >= self._max_age_s or self._current is None:
                await asyncio.to_thread(self.refresh)
        if self._current is None:
            raise RoutingUnavailable("The routing document could not be loaded; see the gateway's logs.")
        return self._current

    def refresh(self) -> None:
        """Fetch and, if it changed, validate the document. Never raises: failures keep the last good."""
        self._checked_at = self._clock()
        try:
            raw = self._fetch()
        except Exception as exc:  # the store must outlive any fetch failure
            log.error("routing fetch failed: %s", type(exc).__name__)
            self._reject(f"fetch failed: {type(exc).__name__}")
            return
        if raw == self._raw:
            return
        try:
            document, revision = load_document(raw)
        except ValueError as exc:
            self._raw = raw  # do not re-validate the same bad text on every refresh
            log.error("routing document rejected, last good one keeps serving: %s", exc)
            self._reject(str(exc))
            return
        self._raw = raw
        previous = self._current.revision if self._current else None
        self._current = LoadedRouting(document, revision)
        if previous != revision:
            log.info("routing document %s in force (was %s)", revision, previous)

    def _reject(self, reason: str) -> None:
        self.rejected += 1
        if self._on_rejected is not None:
            self._on_rejected(reason)
