"""Values read from AWS on the request path, and how long a request may wait for them.

The routing document, the limit definitions, the provider keys and each client key are read from
SSM or DynamoDB and cached. A read runs in a worker thread (the AWS clients are blocking); if AWS
accepts the connection but never answers, that thread is stuck until the client's own socket
timeouts give up. So a request never waits on a read past its own deadline nor past the read's
``timeout_s``, and a read that is abandoned is not cancelled but left to land for later requests.

``Flight``
    one read in a worker thread, shared by every request that needs its answer (single-flight):
    concurrent cold requests share one read, and a stuck AWS endpoint costs one thread per value
    (one per source while it is failing, see ``Health``), never one per request.

``Refreshing``
    one cached value, re-read when older than ``max_age_s``:

    ======================================== =============================================
    age of the cached copy                   a request...
    ======================================== =============================================
    under ``max_age_s``                      gets it
    under ``max_age_s + grace_s``            gets it; a re-read starts in the background
                                             (stale-while-revalidate)
    older, the source healthy                waits for the re-read (at most ``timeout_s``
                                             and half of what is left of its deadline);
                                             gets the new value
    older, the source failing, or the read   gets the cached copy while it is younger than
    overran                                  ``max_age_s + max_stale_s`` (stale-if-error)
    none, or too old to serve                waits at most ``timeout_s`` and its deadline;
                                             ``Unavailable`` if the read fails or overruns
    ======================================== =============================================

    The age counts from the start of the read that produced the copy, stamped only when that read
    succeeds: a copy served at ``t`` holds every edit made before ``t - max_age_s - grace_s``.

``Health``
    whether a source (a table, a parameter) answered its last read: failing once a read fails or
    runs past ``timeout_s`` (a request that gave up early because of its own short deadline does
    not count). While it is failing, at most one read of it runs at a time, and, for a value that
    has a copy, at most one every ``retry_s``.

The reads run on a small pool of their own, so they neither queue behind nor starve the other
blocking AWS calls (the ledger's transactions) in the event loop's default executor.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextvars import ContextVar
from typing import Any, Generic, TypeVar

__all__ = ["DEADLINE", "Flight", "Health", "Refreshing", "Unavailable"]

log = logging.getLogger("switchboard.refresh")

T = TypeVar("T")

# The deadline (``time.monotonic``) of the request being served, set where it is taken
# (``http.request.request_deadline``): it bounds the reads of callers that do not pass one (the limits hook).
DEADLINE: ContextVar[float | None] = ContextVar("switchboard_request_deadline", default=None)


class Unavailable(Exception):
    """No usable copy of a value, and its read failed or did not answer in time. The message names
    the value and the failure's type, never its text (which could quote a credential)."""


def _seen(task: asyncio.Future[Any]) -> None:
    if not task.cancelled():
        task.exception()  # retrieved: a failure nobody waited for is logged by its owner, not by asyncio


# The reads' own threads: a read must not queue behind the ledger's transactions in the loop's
# default executor (under load its wait would be spent in the queue), and a read stuck on a
# blackholed endpoint must not take a thread from them. Threads start on first use.
_READS = ThreadPoolExecutor(max_workers=16, thread_name_prefix="switchboard-read")


class Flight(Generic[T]):
    """``fetch()`` in a worker thread, started now, awaited by any number of requests."""

    def __init__(self, fetch: Callable[[], T], started: float) -> None:
        self.started = started  # on the owner's clock: the age of what it reads
        self.began = time.monotonic()  # on the real one: how long it has been running
        self.task: asyncio.Future[T] = asyncio.get_running_loop().run_in_executor(_READS, fetch)
        self.task.add_done_callback(_seen)

    def current(self) -> bool:
        """Still of use: not landed, and started on the running loop (a test's earlier loop is gone)."""
        if self.task.done():
            return False
        try:
            return self.task.get_loop() is asyncio.get_running_loop()
        except RuntimeError:
            return False

    async def wait(self, timeout: float) -> T:
        """The read's answer within ``timeout`` seconds; ``TimeoutError`` after. Giving up (or
        being cancelled) leaves the read running for the others."""
        if timeout <= 0 and not self.task.done():
            raise TimeoutError
        async with asyncio.timeout(max(timeout, 0.0)):
            return await asyncio.shield(self.task)


class Health:
    """Whether one source answered its last read; shared by the values read from it."""

    def __init__(self, retry_s: float) -> None:
        self.retry_s = retry_s
        self.failing = False
        self.retry_at = float("-inf")
        self.flights = 0

    def may_start(self, now: float, has_copy: bool) -> bool:
        if not self.failing:
            return True
        return self.flights == 0 and (not has_copy or now >= self.retry_at)

    def failed(self, now: float) -> None:
        self.failing = True
        self.retry_at = max(self.retry_at, now + self.retry_s)

    def recovered(self) -> None:
        self.failing = False


class Refreshing(Generic[T]):
    """One cached value read by ``fetch`` (blocking; run in a thread). See the module docstring."""

    def __init__(
        self,
        fetch: Callable[[], T],
        name: str,
        *,
        max_age_s: float,
        timeout_s: float,
        grace_s: float | None = None,
        max_stale_s: float = math.inf,
        health: Health | None = None,
        on_error: Callable[[BaseException], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._fetch = fetch
        self.name = name
        self.max_age_s = max_age_s
        self.timeout_s = timeout_s
        self.grace_s = timeout_s if grace_s is None else grace_s
        self.max_stale_s = max_stale_s
        self.health = health or Health(retry_s=max_age_s)
        self._on_error = on_error
        self._clock = clock
        self._loaded = False
        self._value: T | None = None
        self.fetched_at = float("-inf")  # start of the read that produced the copy
        self._flight: Flight[T] | None = None

    @property
    def flight(self) -> asyncio.Future[T] | None:
        """The read in progress, if any (tests await it)."""
        flight = self._flight
        return flight.task if flight is not None and flight.current() else None

    def peek(self) -> T | None:
        """The cached copy, however old; None when there is none."""
        return self._value

    def expire(self) -> None:
        """The next request reads the source again (and waits for it)."""
        self.fetched_at = float("-inf")

    async def get(self, deadline: float | None = None) -> T:
        """The value under the rules of the module docstring. ``deadline`` is on ``time.monotonic``
        (default: the request's, ``DEADLINE``)."""
        if deadline is None:
            deadline = DEADLINE.get()
        now = self._clock()
        age = now - self.fetched_at
        if self._loaded and age < self.max_age_s:
            return self._value  # type: ignore[return-value]  # loaded: a T
        flight = self._flight if self._flight is not None and self._flight.current() else None
        if flight is not None and time.monotonic() - flight.began >= self.timeout_s:
            self.health.failed(now)  # overran: whoever comes next does not wait for it
        elif flight is None and self.health.may_start(now, self._loaded):
            flight = self._start(now)
        servable = self._loaded and age < self.max_age_s + self.max_stale_s
        if self._loaded and age < self.max_age_s + self.grace_s:
            return self._value  # type: ignore[return-value]
        if servable and (self.health.failing or flight is None):
            return self._value  # type: ignore[return-value]
        if flight is None:
            raise Unavailable(f"{self.name}: its source is failing and a read of it is already running")
        remaining = self.timeout_s - (time.monotonic() - flight.began)
        cut = False  # by this request's deadline, before the read's own timeout
        if deadline is not None:  # with a copy to fall back on, keep half the time for the rest
            left = deadline - time.monotonic()
            allowed = left / 2 if servable else left
            cut, remaining = allowed < remaining, min(remaining, allowed)
        try:
            return await flight.wait(remaining)
        except TimeoutError:
            if not cut:  # the read overran its timeout: the source is failing
                self.health.failed(self._clock())
            failure = "did not answer in time"
        except Exception as exc:
            failure = f"failed ({type(exc).__name__})"
        if self._loaded and self._clock() - self.fetched_at < self.max_age_s + self.max_stale_s:
            return self._value  # type: ignore[return-value]
        raise Unavailable(f"{self.name}: the read {failure}")

    def _start(self, now: float) -> Flight[T]:
        flight = Flight(self._fetch, now)
        self._flight = flight
        self.health.flights += 1
        flight.task.add_done_callback(lambda task: self._landed(flight, task))
        return flight

    def _landed(self, flight: Flight[T], task: asyncio.Future[T]) -> None:
        self.health.flights -= 1
        if self._flight is flight:
            self._flight = None
        if task.cancelled():  # its loop is closing
            return
        exc = task.exception()
        if exc is None:
            self.health.recovered()
            if flight.started >= self.fetched_at:  # never replace a newer copy with an older one
                self._value, self._loaded, self.fetched_at = task.result(), True, flight.started
            return
        self.health.failed(self._clock())
        if self._on_error is not None:
            self._on_error(exc)
        elif self._loaded:
            log.warning("%s: read failed (%s); the last copy keeps serving", self.name, type(exc).__name__)
        else:
            log.error("%s: read failed (%s); nothing to serve yet", self.name, type(exc).__name__)
