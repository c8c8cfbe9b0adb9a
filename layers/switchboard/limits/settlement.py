"""Settlements that cannot lose a served request's cost: one try on the response path, the rest behind it.

A settlement is one DynamoDB transaction (``Ledger.settle``). When it does not commit at once
(a ``TransactionConflict`` with another request on a hot budget item, throttling, or no answer),
the request is answered anyway and its settlement goes on in the background:

1. If the first call is still running (it was given ``inline_timeout_s``), wait for its answer: a
   call that committed late is done.
2. Retry with the backoff that fits the failure (``Backoff``): conflicts clear in milliseconds, so
   short jittered waits; throttling and silence clear in seconds, so botocore's standard mode
   (full jitter, doubling from 1 s, capped at 20 s). Bounded by ``max_attempts`` and ``max_total_s``.
3. Before any long wait, and when the retries run out, write the actual cost onto the reservation
   (``Ledger.record``, one plain ``UpdateItem``): the sweeper then settles the reservation at that
   cost instead of refunding it, so a process that dies meanwhile loses nothing.
   Where nothing may run after the response (``record_inline``: the buffered Lambda handler),
   a failed first try records at once, before the response: one more call, bounded as the first.
4. If even that write fails, the settlement stays in memory and is tried again every
   ``retry_every_s`` and at shutdown (``drain``, which the gateway's shutdown flush runs beside
   the spend ledger's).

Exactly once: every path ends in the same transaction, whose ``Delete`` of the reservation is
conditioned on it existing, and whose spend-ledger ``Update`` rides inside it. Whichever commits
first (the late first call, a retry, the sweeper) charges; the others are no-ops. A call that
committed but whose answer was lost makes its retry a no-op, not a second charge. What can still be
lost is said in docs/limits.md ("Settlement guarantees").
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from switchboard.limits.ledger import Hold, Ledger, LedgerBusy, Reservation, error_code

__all__ = ["Backoff", "Charge", "Settler", "failure_kind"]

log = logging.getLogger("switchboard.limits")


@dataclass(frozen=True, slots=True)
class Backoff:
    """How long to wait before retry ``attempt`` (1, 2, ...) of a settlement, per kind of failure.

    Full jitter (uniform from zero) in both cases, so that requests that failed together do not
    retry together. ``scale`` shrinks every wait (tests)."""

    conflict_base_s: float = 0.02
    conflict_cap_s: float = 0.5
    throttle_base_s: float = 1.0  # botocore standard mode: 1 s, 2 s, 4 s ... capped at 20 s
    throttle_cap_s: float = 20.0
    max_attempts: int = 8
    max_total_s: float = 45.0  # well inside the sweeper's grace after a request's deadline
    scale: float = 1.0

    def delay(self, attempt: int, *, slow: bool) -> float:
        base, cap = (
            (self.throttle_base_s, self.throttle_cap_s)
            if slow
            else (self.conflict_base_s, self.conflict_cap_s)
        )
        ceiling: float = min(cap, base * 2.0 ** (attempt - 1)) * self.scale
        return random.random() * ceiling


def failure_kind(exc: BaseException) -> str:
    """``conflict`` (retry soon), ``slow`` (throttled or no answer: retry later), or ``fatal`` (a
    request DynamoDB will never accept, such as a ``ValidationException``: record, do not retry)."""
    if isinstance(exc, LedgerBusy):
        return "slow" if exc.throttled else "conflict"
    code = error_code(exc)
    if code is None or code in {"InternalServerError", "ServiceUnavailable", "RequestTimeout"}:
        return "slow"  # transport errors and timeouts have no code: the answer never came
    return "fatal"


@dataclass(slots=True)
class Charge:
    """One request's settlement: what ``Ledger.settle`` takes, plus a late reservation to write
    first when the request was admitted without one (fail-open during an outage)."""

    hold: Hold
    usd: Decimal
    tokens: int
    also: tuple[dict[str, Any], ...] = ()
    reserve: Reservation | None = None
    recorded: bool = False  # the cost is on the reservation: the sweeper will charge it
    tries: int = 0
    # The reservation ``hold`` comes from, when its admission may still have been choosing lanes
    # (``release``): the hold is taken from it once that call has ended.
    source: Reservation | None = None
    # The request settled, when its instance reserves ahead for its next one (``Ledger.settle``).
    refill: Reservation | None = None

    @property
    def request_id(self) -> str:
        return self.hold.request_id


@dataclass(slots=True)
class _Stats:
    deferred: int = 0  # settlements handed to the background
    recorded: int = 0  # costs written onto their reservation for the sweeper
    stranded: int = 0  # kept in memory: not even the record could be written


class Settler:
    """Settles charges through the ledger: inline once, then in the background (module doc)."""

    def __init__(
        self,
        ledger: Ledger,
        *,
        backoff: Backoff | None = None,
        inline_timeout_s: float = 1.0,
        retry_every_s: float = 15.0,
        record_inline: bool = False,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ledger = ledger
        self.backoff = backoff or Backoff()
        self.inline_timeout_s = inline_timeout_s
        # Where nothing may run after the response (a buffered Lambda handler, frozen between
        # invocations): a failed first try records the cost before the response, one more call.
        self.record_inline = record_inline
        self.retry_every_s = retry_every_s
        self.stats = _Stats()
        self._monotonic = monotonic
        self._tasks: set[asyncio.Task[None]] = set()
        self._stranded: dict[str, Charge] = {}
        self._retrying: asyncio.Task[None] | None = None  # retries what is held in memory
        self._closing: tuple[asyncio.AbstractEventLoop, asyncio.Event] | None = None

    # ----------------------------------------------------------------------------- entry

    async def settle(self, charge: Charge, timeout_s: float | None = None) -> bool | None:
        """Settle now if DynamoDB takes it within ``timeout_s``: True, or False when it was settled
        before (a no-op). None: handed to the background, where it will be charged exactly once."""
        call = asyncio.ensure_future(asyncio.to_thread(self._settle_call, charge, 1))
        try:
            return await asyncio.wait_for(asyncio.shield(call), timeout_s or self.inline_timeout_s)
        except asyncio.CancelledError:  # the response was abandoned; the settlement is not
            self.defer(charge, after=call)
            raise
        except Exception as exc:  # conflicts, throttling, no answer, or our own timeout
            if self.record_inline:
                try:
                    gone = await asyncio.wait_for(self._record(charge), timeout_s or self.inline_timeout_s)
                except TimeoutError:
                    gone = None
                if gone is False:  # settled already: by the first try, whose answer was lost
                    return None
            self.defer(charge, after=call, error=exc)
            return None

    def defer(
        self,
        charge: Charge,
        *,
        after: asyncio.Future[Any] | None = None,
        error: BaseException | None = None,
        settles: bool = True,
    ) -> None:
        """Settle ``charge`` in the background, once ``after`` (a call still in flight) ends: the
        first try of this very settlement (``settles``: if it commits, nothing is left to do), or
        an admission whose answer was not awaited (its reservation is what ``charge`` releases)."""
        self.stats.deferred += 1
        reason = type(error).__name__ if error is not None else "in flight" if after else "deferred"
        log.warning("settlement of %s continues in the background (%s)", charge.request_id, reason)
        task = asyncio.get_running_loop().create_task(self._run(charge, after, error, settles))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def release(self, res: Hold | Reservation, after: asyncio.Future[Any]) -> None:
        """Refund a reservation once ``after`` (an admission whose answer the request stopped
        waiting for) ends: whatever it wrote is given back, and nothing when it wrote nothing. A
        ``Reservation``'s hold is read when the call has ended, on the lanes it chose last."""
        if isinstance(res, Hold):
            self.defer(Charge(res, Decimal(0), 0), after=after, settles=False)
        else:
            self.defer(Charge(res.hold, Decimal(0), 0, source=res), after=after, settles=False)

    @property
    def pending(self) -> int:
        """Settlements not yet in DynamoDB nor recorded there: in flight or in memory."""
        return len(self._tasks) + len(self._stranded)

    async def join(self, timeout_s: float = 10.0) -> None:
        """Wait until no settlement is running in the background (those held in memory aside)."""
        end = self._monotonic() + timeout_s
        while self._tasks and self._monotonic() < end:
            await asyncio.wait(set(self._tasks), timeout=end - self._monotonic())

    async def drain(self, timeout_s: float = 10.0) -> None:
        """At shutdown: cut every wait short, give the background one last try, then try what is
        held in memory once more. What still fails is logged (the cost events keep every request)."""
        self._wake().set()
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=timeout_s)
        if self._retrying is not None:
            await asyncio.wait([self._retrying], timeout=timeout_s)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._retry_all(), timeout_s)
        for charge in self._stranded.values():
            log.error(
                "settlement of %s (%s USD) lost at shutdown: DynamoDB unreachable",
                charge.request_id,
                charge.usd,
            )

    # ------------------------------------------------------------------------ background

    async def _run(
        self, charge: Charge, after: asyncio.Future[Any] | None, error: BaseException | None, settles: bool
    ) -> None:
        if after is not None:
            try:
                await after
                if settles:
                    return  # the first try committed late (or found it settled): done
            except Exception as exc:
                if settles:
                    error = exc
            if charge.source is not None:
                charge.hold = charge.source.hold
        if error is None:  # not tried yet
            try:
                await asyncio.to_thread(self._settle_call, charge, 1)
                return
            except Exception as exc:
                error = exc
        kind = failure_kind(error)
        started = self._monotonic()
        attempt = 0
        while attempt < self.backoff.max_attempts and kind != "fatal":
            if kind == "slow" and not charge.recorded and await self._record(charge) is False:
                return  # the reservation is gone: settled by a call whose answer was lost
            attempt += 1
            wait = self.backoff.delay(attempt, slow=kind == "slow")
            if self._monotonic() - started + wait > self.backoff.max_total_s:
                break
            await self._pause(wait)
            try:
                await asyncio.to_thread(self._settle_call, charge, 1)
                return
            except Exception as exc:
                kind = failure_kind(exc)
                if kind == "fatal":
                    log.error("settlement of %s refused: %s", charge.request_id, exc)
        if charge.recorded or await self._record(charge) is not None:
            return  # recorded (the sweeper charges it) or already settled
        self._strand(charge)

    def _settle_call(self, charge: Charge, tries: int) -> bool:
        """One settlement (after the late reservation of a fail-open request). Runs in a thread."""
        if charge.reserve is not None:
            self.ledger.reserve(charge.reserve, enforce=False, tries=tries)
            charge.hold = charge.reserve.hold  # on the lanes it was written on
            charge.reserve = None  # written (or written before: the Put is conditional)
        charge.tries += 1
        return self.ledger.settle(
            charge.hold,
            charge.usd,
            charge.tokens,
            charge.also,
            tries=tries,
            first_try=charge.tries,
            refill=charge.refill,
        )

    async def _record(self, charge: Charge) -> bool | None:
        """Write the cost onto the reservation: True written, False the reservation is gone, None
        failed (or there is no reservation yet to write on)."""
        if charge.reserve is not None:
            return None
        try:
            done = await asyncio.to_thread(
                self.ledger.record, charge.hold, charge.usd, charge.tokens, charge.also
            )
        except Exception as exc:
            log.warning("recording the cost of %s failed: %s", charge.request_id, type(exc).__name__)
            return None
        if done:
            charge.recorded = True
            self.stats.recorded += 1
            _count("SettlementsRecorded")
            log.warning(
                "settlement of %s recorded on its reservation (%s USD): the sweeper will charge it",
                charge.request_id,
                charge.usd,
            )
        return done

    def _strand(self, charge: Charge) -> None:
        self.stats.stranded += 1
        _count("SettlementsInMemory")
        log.error(
            "settlement of %s (%s USD) kept in memory (DynamoDB unreachable); retried every %ss, at shutdown",
            charge.request_id,
            charge.usd,
            self.retry_every_s,
        )
        self._stranded[charge.request_id] = charge
        if self._retrying is None or self._retrying.done():
            self._retrying = asyncio.get_running_loop().create_task(self._retry_loop())

    async def _retry_loop(self) -> None:
        while self._stranded and not self._wake().is_set():
            await self._pause(self.retry_every_s)
            await self._retry_all()

    async def _retry_all(self) -> None:
        for charge in list(self._stranded.values()):
            await self._retry_stranded(charge)

    async def _retry_stranded(self, charge: Charge) -> None:
        try:
            await asyncio.to_thread(self._settle_call, charge, 1)
        except Exception:
            if await self._record(charge) is None:
                return
        self._stranded.pop(charge.request_id, None)

    # ------------------------------------------------------------------------------ time

    def _wake(self) -> asyncio.Event:
        """Set at shutdown (one per event loop: the tests run several)."""
        loop = asyncio.get_running_loop()
        if self._closing is None or self._closing[0] is not loop:
            self._closing = (loop, asyncio.Event())
        return self._closing[1]

    async def _pause(self, seconds: float) -> None:
        """Sleep ``seconds``, or less when shutdown begins."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake().wait(), seconds)


def _count(name: str) -> None:
    """EMF counts: ``SettlementsRecorded`` (left to the sweeper at the recorded cost) and
    ``SettlementsInMemory`` (not even recorded: alarm on any)."""
    from aws_lambda_powertools.metrics import MetricUnit, single_metric

    with single_metric(name=name, unit=MetricUnit.Count, value=1, namespace="Switchboard") as metric:
        metric.add_dimension(name="service", value="switchboard")
