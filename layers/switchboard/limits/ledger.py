"""The ledger: reserve, settle, refund and sweep, each one DynamoDB transaction.

Admission is one ``TransactWriteItems``:

* ``Put resv#<request id>`` if it does not exist (a retried admission is a no-op);
* per budget line, ``ADD used :est, reserved :est`` if ``used <= limit - est``;
* per rate line, ``ADD req 1, tok :est_tokens`` if ``req < rpm`` and ``tok <= tpm - est_tokens``.

Either every item is written or none is, so concurrent requests on any number of instances can
never overspend a budget or pass a rate limit. Settlement is one transaction too: ``Delete resv``
if it exists (a second settle, or a settle after the sweeper, is a no-op), and the same lines
moved from reserved to spent at the actual cost. A refund is a settlement at zero; the sweeper
refunds reservations whose request outlived its deadline (the instance died).

A settlement that DynamoDB would not take (conflicts, throttling, no answer) is retried off the
response path (``switchboard.limits.settlement``); before any long wait, and when the retries run
out, the actual cost is written onto the reservation (``record``: a plain ``UpdateItem``), and the
sweeper then settles the reservation at that cost instead of refunding it. See docs/limits.md.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import random
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import ROUND_FLOOR, Decimal
from typing import Any, TypeVar

from switchboard.core.principal import Period, Scope
from switchboard.limits.model import (
    LEDGER_QUANTUM,
    RATE_WINDOW_S,
    admits,
    headroom,
    settle_amounts,
)
from switchboard.limits.table import (
    GSI,
    RESV_SHARDS,
    Key,
    Table,
    budget_key,
    dump,
    load,
    num,
    rate_key,
    resv_key,
    resv_shard,
)

__all__ = [
    "BudgetLine",
    "Hold",
    "LaneMemory",
    "Lease",
    "Leases",
    "Ledger",
    "LedgerBusy",
    "RateLine",
    "Recorded",
    "Refusal",
    "Reservation",
    "Swept",
    "error_code",
]

log = logging.getLogger("switchboard.limits")

# Real DynamoDB cancels a transaction that races another one on the same item
# (TransactionConflict); such an admission is simply tried again, a few times, with jitter.
_CONFLICT_TRIES = 6
# A laned budget whose chosen lane is full spills over to another lane, at most this many times,
# before one read of every lane decides (docs/limits.md, "At scale").
_SPILLS = 3
_READ_BATCH = 100  # lanes a BatchGetItem reads at most
_MEMORY_LINES = 10_000  # budgets and windows a LaneMemory keeps at most
_RATE_ITEM_TTL_S = 300  # a rate window item outlives its minute by this much, then TTL deletes it
_RESV_TTL_S = 7 * 86_400  # backstop: TTL deletes a reservation the sweeper never reached
_LEASE_PREFIX = "lease."  # a lease's reservation id: lease.<random>
LEASE_S = 60  # a lease the instance has not used within this is left to the sweeper
_LEASE_MARGIN_S = 10  # a lease is not taken over this close to its expiry (the sweeper's cutoff)
_LEASES_PER_LINE = 4  # leases an instance keeps on one line at most (requests it serves at once)
# A lane takes leases only when its share holds this many estimates (requests, for an rpm): the
# leases of idle instances then hold back a small part of it (docs/limits.md, "Leases").
_LEASE_MIN_SHARE = 100
_RATE_LEASE_MIN_S = 2.0  # no lease on a rate window that ends sooner: its slot would go unused
# Transaction cancellation reasons that mean "try again": contention, not a failed condition.
_RETRY_REASONS = frozenset(
    {"None", "TransactionConflict", "ThrottlingError", "ProvisionedThroughputExceeded"}
)
_THROTTLED_REASONS = frozenset({"ThrottlingError", "ProvisionedThroughputExceeded"})
# Error codes of a call the AWS client already retried (its own backoff) and gave up on: DynamoDB
# is throttling us. As botocore's standard mode lists them, for the operations the ledger makes.
_THROTTLING_CODES = frozenset(
    {
        "ProvisionedThroughputExceededException",
        "ThrottlingException",
        "Throttling",
        "RequestLimitExceeded",
        "TransactionInProgressException",
        "LimitExceededException",
    }
)


class LedgerBusy(Exception):
    """DynamoDB refused a write for contention after the retries: transaction conflicts
    (``throttled`` False) or throttling (True). Nothing was written; trying later may succeed."""

    def __init__(self, message: str, *, throttled: bool) -> None:
        super().__init__(message)
        self.throttled = throttled


def error_code(exc: BaseException) -> str | None:
    """The AWS error code of a ``ClientError`` (boto3's or ``switchboard.infra.awsjson``'s), else None."""
    response = getattr(exc, "response", None)
    if not isinstance(response, dict):
        return None
    code = response.get("Error", {}).get("Code")
    return str(code) if code else None


@dataclass(frozen=True, slots=True)
class BudgetLine:
    """One budget that applies to a request, in the period that contains the request.

    A budget in ``lanes`` (more than 1: a shared budget under more load than one item takes) is
    split into that many items, each holding ``share`` of the limit; ``lane`` is the one this
    request is reserved on, chosen by ``Ledger.reserve`` (docs/limits.md, "At scale")."""

    scope: Scope
    ident: str
    label: str  # for messages: "key 'ci' (key_1a2b)", "team 'ml'"
    limit: Decimal
    period: Period
    period_id: str
    resets_at: datetime | None
    lanes: int = 1
    lane: int = 0

    @property
    def key(self) -> Key:
        return self.lane_key(self.lane)

    def lane_key(self, lane: int) -> Key:
        return budget_key(self.scope.value, self.ident, self.period_id, lane if self.lanes > 1 else None)

    @property
    def keys(self) -> list[Key]:
        """Every item of the budget: its lanes, or the one item."""
        return [self.lane_key(lane) for lane in range(self.lanes)]

    @property
    def share(self) -> Decimal:
        """What one item may hold: the limit, or a lane's equal part of it (rounded down, so the
        lanes together never hold more than the limit)."""
        if self.lanes <= 1:
            return self.limit
        return (self.limit / self.lanes).quantize(LEDGER_QUANTUM, rounding=ROUND_FLOOR)

    def fits(self, values: dict[str, Any], res: Reservation) -> bool:
        """Whether an item with ``values`` (one lane's, as read) admits ``res``: its condition."""
        return admits(Decimal(values.get("used", 0)), res.usd, self.share)

    @staticmethod
    def summed(values: Sequence[dict[str, Any]]) -> dict[str, Any]:
        """A refusal's item for the whole budget: its lanes' use added up."""
        return {"used": sum((Decimal(v.get("used", 0)) for v in values), Decimal(0))}


@dataclass(frozen=True, slots=True)
class RateLine:
    """One rate limit that applies to a request, in the current fixed window.

    A shared rate limit in ``lanes`` (more than 1) is that many items per window, each holding
    an integer share of the rpm and the tpm (rounded down, so the lanes together never admit more
    than the limit); ``lane`` is the one this request counts on (docs/limits.md, "At scale")."""

    scope: Scope
    ident: str
    label: str
    rpm: int | None
    tpm: int | None
    window: int
    lanes: int = 1
    lane: int = 0

    @property
    def key(self) -> Key:
        return self.lane_key(self.lane)

    def lane_key(self, lane: int) -> Key:
        return rate_key(self.scope.value, self.ident, self.window, lane if self.lanes > 1 else None)

    @property
    def keys(self) -> list[Key]:
        return [self.lane_key(lane) for lane in range(self.lanes)]

    @property
    def rpm_share(self) -> int | None:
        """Requests one item admits in a window: the rpm, or a lane's whole share of it."""
        return None if self.rpm is None else self.rpm // max(1, self.lanes)

    @property
    def tpm_share(self) -> int | None:
        return None if self.tpm is None else self.tpm // max(1, self.lanes)

    def fits(self, values: dict[str, Any], res: Reservation) -> bool:
        """Whether a window item with ``values`` admits ``res``: its condition."""
        req, tok = int(values.get("req", 0)), int(values.get("tok", 0))
        rpm, tpm = self.rpm_share, self.tpm_share
        return (rpm is None or req < rpm) and (tpm is None or tok <= tpm - res.tokens)

    @staticmethod
    def summed(values: Sequence[dict[str, Any]]) -> dict[str, Any]:
        return {
            "req": sum(int(v.get("req", 0)) for v in values),
            "tok": sum(int(v.get("tok", 0)) for v in values),
        }

    def resets_in(self, now_s: float) -> float:
        return max(0.0, (self.window + 1) * RATE_WINDOW_S - now_s)


@dataclass(frozen=True, slots=True)
class Hold:
    """What a reservation holds, as stored in its item: enough to settle or refund it later."""

    request_id: str
    usd: Decimal
    tokens: int
    budget_keys: tuple[tuple[str, str], ...]
    rate_keys: tuple[tuple[str, str], ...]
    # What a line holds when it is not ``usd`` (a budget) or ``tokens`` (a rate): a line taken over
    # from a lease holds the lease's amount, which may be more than this request's estimate.
    held: tuple[tuple[tuple[str, str], Decimal], ...] = ()

    @classmethod
    def from_item(cls, item: dict[str, Any]) -> Hold:
        v = load(item)
        budgets, rates = v.get("budgets", []), v.get("rates", [])
        held = [((str(p["pk"]), str(p["sk"])), Decimal(p["usd"])) for p in budgets if "usd" in p]
        held += [((str(p["pk"]), str(p["sk"])), Decimal(p["tokens"])) for p in rates if "tokens" in p]
        return cls(
            request_id=str(v["request_id"]),
            usd=Decimal(v.get("usd", 0)),
            tokens=int(v.get("tokens", 0)),
            budget_keys=tuple((str(p["pk"]), str(p["sk"])) for p in budgets),
            rate_keys=tuple((str(p["pk"]), str(p["sk"])) for p in rates),
            held=tuple(held),
        )

    def usd_on(self, key: tuple[str, str]) -> Decimal:
        """What the budget item ``key`` holds for this reservation."""
        return next((amount for k, amount in self.held if k == key), self.usd)

    def tokens_on(self, key: tuple[str, str]) -> int:
        """The tokens the rate item ``key`` holds for this reservation."""
        return int(next((amount for k, amount in self.held if k == key), self.tokens))

    def leased(self, key: tuple[str, str]) -> bool:
        """Whether this reservation took the item ``key`` over from a lease (its request is counted
        there when it settles)."""
        return any(k == key for k, _ in self.held)


@dataclass(slots=True)
class Reservation:
    """One request's admission: the estimate, and the lines it is reserved on."""

    request_id: str
    usd: Decimal
    tokens: int
    budgets: tuple[BudgetLine, ...]
    rates: tuple[RateLine, ...]
    expires_at: int  # epoch seconds after which the sweeper may refund it
    key_id: str = ""
    alias: str = ""
    # The leases this admission takes over, by line position (budgets, then rates): each line's
    # reservation made ahead by this instance (``Leases``), so that line's item is not written.
    leases: dict[int, Lease] = field(default_factory=dict)

    @property
    def laned(self) -> bool:
        """Whether any of its lines is in lanes."""
        return any(b.lanes > 1 for b in self.budgets) or any(r.lanes > 1 for r in self.rates)

    @property
    def lines(self) -> list[Laned]:
        return [*self.budgets, *self.rates]

    @property
    def hold(self) -> Hold:
        held = tuple((lease.key, lease.amount) for lease in self.leases.values())
        return Hold(
            self.request_id,
            self.usd,
            self.tokens,
            tuple((b.key["pk"]["S"], b.key["sk"]["S"]) for b in self.budgets),
            tuple((r.key["pk"]["S"], r.key["sk"]["S"]) for r in self.rates),
            held,
        )


@dataclass(frozen=True, slots=True)
class Recorded:
    """A settlement written onto its reservation because the transaction could not be made:
    what the sweeper charges instead of refunding."""

    usd: Decimal
    tokens: int
    also: tuple[dict[str, Any], ...]

    @classmethod
    def from_item(cls, item: dict[str, Any]) -> Recorded | None:
        if "pending_usd" not in item:
            return None
        v = load({k: item[k] for k in ("pending_usd", "pending_tokens", "pending_also") if k in item})
        also = json.loads(v["pending_also"]) if v.get("pending_also") else []
        return cls(Decimal(v["pending_usd"]), int(v.get("pending_tokens", 0)), tuple(also))


@dataclass(slots=True)
class Swept:
    """What one sweep did: reservations refunded (no cost known) and settled at a recorded cost."""

    refunded: list[Hold] = field(default_factory=list)
    settled: list[tuple[Hold, Decimal]] = field(default_factory=list)
    busy: int = 0  # left for the next sweep: DynamoDB refused the transaction for contention
    returned: list[Hold] = field(default_factory=list)  # leases that expired unused ("Leases")

    def __len__(self) -> int:
        return len(self.refunded) + len(self.settled) + len(self.returned)


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why an admission failed: the first budget (else rate line) whose condition did not hold."""

    budget: BudgetLine | None = None
    rate: RateLine | None = None
    item: dict[str, Any] = field(default_factory=dict)  # that item's values before the request


def _token(kind: str, request_id: str, attempt: int, *amounts: object) -> str:
    """A ClientRequestToken (at most 36 characters): a network retry of one call is applied once.

    The amounts are part of it: DynamoDB rejects a token reused with other parameters, and two
    settlements of one request with different amounts must meet the reservation's condition instead.
    """
    text = ":".join(str(part) for part in (kind, request_id, attempt, *amounts))
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def _pair(key: Key) -> tuple[str, str]:
    return (key["pk"]["S"], key["sk"]["S"])


def _cancel_codes(exc: Exception) -> list[str]:
    reasons = getattr(exc, "response", {}).get("CancellationReasons") or []
    return [str(r.get("Code") or "None") for r in reasons]


Laned = BudgetLine | RateLine


_L = TypeVar("_L", BudgetLine, RateLine)


def _drawn(line: Laned, full: set[int]) -> Laned:
    if line.lanes <= 1:
        return line
    free = [lane for lane in range(line.lanes) if lane not in full]
    return dataclasses.replace(line, lane=random.choice(free) if free else line.lane)


def _adopted(line: _L, pks: set[str]) -> _L:
    if line.lanes <= 1:
        return line
    lane = next((n for n in range(line.lanes) if line.lane_key(n)["pk"]["S"] in pks), line.lane)
    return dataclasses.replace(line, lane=lane)


class LaneMemory:
    """What this process last saw of each lane (the item a refusal or a read returned), for
    ``memory_s`` seconds: admissions do not draw a lane known to be full for them (and draw
    first among lanes seen with room), and when every lane is full, read at once instead of
    spilling lane by lane. That only steers the
    draw: the admission is still decided by the lane's condition, or by a read of every lane.
    One case decides: when every lane was seen full for the request less than ``sure_s`` ago,
    the refusal is given from memory (no call). A window's request count only grows, so for
    rpm that is exact; for a budget or tpm it may refuse what a settlement in that second made
    room for, never admit what has none (docs/limits.md, "At scale")."""

    def __init__(
        self, memory_s: float = 5.0, clock: Callable[[], float] = time.monotonic, *, sure_s: float = 1.0
    ) -> None:
        self.memory_s = memory_s
        self.sure_s = sure_s
        self._clock = clock
        # per line (its lane 0's key and its lanes): lane -> (seen at, values)
        self._seen: dict[tuple[str, str, int], dict[int, tuple[float, dict[str, Any]]]] = {}
        self._lock = threading.Lock()

    @staticmethod
    def _line(line: Laned) -> tuple[str, str, int]:
        pk, sk = _pair(line.lane_key(0))
        return pk, sk, line.lanes

    def saw(self, line: Laned, lane: int, values: dict[str, Any]) -> None:
        now = self._clock()
        with self._lock:
            if len(self._seen) >= _MEMORY_LINES:
                self._seen = {
                    k: v for k, v in self._seen.items() if any(now - t < self.memory_s for t, _ in v.values())
                }
                if len(self._seen) >= _MEMORY_LINES:
                    self._seen.clear()
            self._seen.setdefault(self._line(line), {})[lane] = (now, values)

    def _recent(self, line: Laned, within_s: float) -> dict[int, dict[str, Any]]:
        now = self._clock()
        with self._lock:
            seen = dict(self._seen.get(self._line(line), {}))
        return {lane: values for lane, (at, values) in seen.items() if now - at < within_s}

    def split(self, line: Laned, res: Reservation) -> tuple[set[int], set[int]]:
        """The lanes of ``line`` last seen (recently) without room for ``res``, and those with
        room: one look at the memory, so no lane is in both."""
        recent = self._recent(line, self.memory_s)
        full = {lane for lane, seen in recent.items() if not line.fits(seen, res)}
        return full, set(recent) - full

    def full(self, line: Laned, res: Reservation) -> set[int]:
        """The lanes of ``line`` last seen (recently) without room for ``res``."""
        return self.split(line, res)[0]

    def sure(self, line: Laned, res: Reservation) -> list[dict[str, Any]] | None:
        """Every lane's values when each was seen without room for ``res`` in the last
        ``sure_s`` seconds (the refusal to give), else None."""
        recent = self._recent(line, self.sure_s)
        if len(recent) < line.lanes or any(line.fits(seen, res) for seen in recent.values()):
            return None
        return [recent[lane] for lane in range(line.lanes)]

    def values(self, line: Laned) -> list[dict[str, Any]]:
        """The lanes' last seen values ({} when not seen recently)."""
        recent = self._recent(line, self.memory_s)
        return [recent.get(lane, {}) for lane in range(line.lanes)]


@dataclass(frozen=True, slots=True)
class Lease:
    """One estimate reserved ahead on one lane of a shared line, by the settlement of this
    instance's previous request there: a reservation item of its own (``resv#<resv_id>``, which the
    sweeper refunds if it expires unused), that the next admission deletes instead of writing the
    lane (docs/limits.md, "Leases")."""

    resv_id: str
    key: tuple[str, str]  # the lane's item
    amount: Decimal  # USD on a budget lane, tokens on a rate lane (and one request of its rpm)
    lane: int
    expires_at: int

    @property
    def hold(self) -> Hold:
        """What the lease's own reservation holds: its amount on its lane."""
        if self.key[0].startswith("budget#"):
            return Hold(self.resv_id, self.amount, 0, (self.key,), ())
        return Hold(self.resv_id, Decimal(0), int(self.amount), (), (self.key,))


def _leasable(line: Laned, res: Reservation) -> bool:
    """Whether ``line``'s lanes are large enough for leases of ``res``'s estimate."""
    if isinstance(line, BudgetLine):
        return line.share >= _LEASE_MIN_SHARE * res.usd
    rpm, tpm = line.rpm_share, line.tpm_share
    return (rpm is None or rpm >= _LEASE_MIN_SHARE) and (tpm is None or tpm >= _LEASE_MIN_SHARE * res.tokens)


def _line_id(line: Laned) -> tuple[str, ...]:
    if isinstance(line, BudgetLine):
        return ("budget", line.scope.value, line.ident, line.period_id)
    return ("rate", line.scope.value, line.ident, str(line.window))


class Leases:
    """This instance's leases, per shared line (at most ``per_line`` each). Thread-safe: admissions
    and settlements run in threads."""

    def __init__(self, clock: Callable[[], float] = time.time, per_line: int = _LEASES_PER_LINE) -> None:
        self._clock = clock
        self.per_line = per_line
        self._by_line: dict[tuple[str, ...], list[Lease]] = {}
        self._lock = threading.Lock()

    def take(self, line: Laned, need: Decimal) -> Lease | None:
        """A lease on ``line`` (its period or window) that holds at least ``need``, and is not near
        its expiry; those that are are forgotten (the sweeper refunds them)."""
        now = self._clock()
        with self._lock:
            pool = self._by_line.get(_line_id(line))
            if not pool:
                return None
            pool[:] = [lease for lease in pool if lease.expires_at - now >= _LEASE_MARGIN_S]
            for at, lease in enumerate(pool):
                if (
                    lease.amount >= need
                    and lease.lane < line.lanes
                    and _pair(line.lane_key(lease.lane)) == lease.key
                ):
                    return pool.pop(at)
            return None

    def room(self, line: Laned) -> bool:
        with self._lock:
            return len(self._by_line.get(_line_id(line), ())) < self.per_line

    def give(self, line: Laned, lease: Lease) -> None:
        """Keep ``lease`` (new, or not used after all) for a later admission on ``line``."""
        with self._lock:
            pool = self._by_line.setdefault(_line_id(line), [])
            if len(pool) < self.per_line:
                pool.append(lease)
            if len(self._by_line) > _MEMORY_LINES:  # lines long gone (their periods, windows)
                self._by_line.pop(next(iter(self._by_line)))

    def drained(self) -> list[Lease]:
        """Every lease, forgotten: what a shutting-down instance gives back."""
        with self._lock:
            leases = [lease for pool in self._by_line.values() for lease in pool]
            self._by_line.clear()
        return leases

    def __len__(self) -> int:
        with self._lock:
            return sum(len(pool) for pool in self._by_line.values())


class Ledger:
    """Reservation and settlement over the table. Synchronous; the hook runs it in a thread.

    ``leases``: this instance's leases (the gateway's ledger has them; the sweeper's and the CLI's
    do not): a settlement given ``refill`` reserves ahead on each shared line, and an admission
    takes those over (docs/limits.md, "Leases")."""

    def __init__(
        self,
        table: Table,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
        memory: LaneMemory | None = None,
        leases: Leases | None = None,
    ) -> None:
        self.table = table
        self._clock = clock
        self._sleep = sleep
        self.memory = memory or LaneMemory(clock=clock)
        self.leases = leases

    # ------------------------------------------------------------------------- admission

    def reserve(
        self, res: Reservation, *, enforce: bool = True, tries: int = _CONFLICT_TRIES
    ) -> Refusal | None:
        """Reserve ``res`` on every line at once; a ``Refusal`` when any line has no room.

        ``enforce=False`` counts without checking the limits: the late booking of a request served
        while DynamoDB was unreachable (fail-open), which is then settled as any other. Raises
        ``LedgerBusy`` when conflicts or throttling outlast the retries.

        A laned line (a budget or a rate limit in lanes) is reserved on one of its lanes, chosen
        here (``res.budgets`` and ``res.rates`` are updated to say which, so that ``res.hold``
        settles the same items)."""
        if not res.budgets and not res.rates:
            return None
        if enforce:
            self._take_leases(res)
        try:
            if res.laned:
                refusal = self._reserve_laned(res, enforce, tries)
            else:
                refusal = self._reserve_once(res, enforce, tries)
        except LedgerBusy:  # nothing was written: the leases are still this instance's
            self._give_back(res)
            raise
        if refusal is not None:
            self._give_back(res)
        return refusal

    def _take_leases(self, res: Reservation) -> None:
        """Each shared line this instance holds a lease on is taken over: reserved on the lease's
        lane, whose item the admission then does not write."""
        if self.leases is None:
            return
        for at, line in enumerate(res.lines):
            if line.lanes <= 1:
                continue
            lease = self.leases.take(line, res.usd if isinstance(line, BudgetLine) else Decimal(res.tokens))
            if lease is not None:
                res.leases[at] = lease
                self._set_line(res, at, dataclasses.replace(line, lane=lease.lane))

    def _give_back(self, res: Reservation) -> None:
        if self.leases is not None:
            for at, lease in res.leases.items():
                self.leases.give(self._line_at(res, at), lease)
        res.leases.clear()

    @staticmethod
    def _set_line(res: Reservation, at: int, line: Laned) -> None:
        if isinstance(line, BudgetLine):
            res.budgets = (*res.budgets[:at], line, *res.budgets[at + 1 :])
        else:
            at -= len(res.budgets)
            res.rates = (*res.rates[:at], line, *res.rates[at + 1 :])

    def _reserve_once(
        self, res: Reservation, enforce: bool, tries: int, first_try: int = 0
    ) -> Refusal | None:
        items = [self._put_resv(res)]
        for at, line in enumerate(res.lines):
            if at in res.leases:
                items.append(self._take_over(res.leases[at]))
            elif isinstance(line, BudgetLine):
                items.append(self._reserve_budget(res, line, enforce))
            else:
                items.append(self._reserve_rate(res, line, enforce))
        kind = "admit" if enforce else "admit-late"
        leased = sorted(res.leases)
        failed = self._transact(
            items, kind, res.request_id, res.usd, res.tokens, *leased, tries=tries, first_try=first_try
        )
        if failed is None:
            return None
        if 0 in failed:  # done before (a retried admission): on the lanes it chose then
            self._adopt_lanes(res, failed[0])
            return None
        gone = [index - 1 for index in failed if index - 1 in res.leases]
        if gone:  # the sweeper refunded a lease first: reserve that line's lane itself
            for at in gone:
                del res.leases[at]
            return self._reserve_once(res, enforce, tries, first_try + 1)
        index = min(failed) - 1
        old = load(failed[min(failed)])
        if index < len(res.budgets):
            return Refusal(budget=res.budgets[index], item=old)
        return Refusal(rate=res.rates[index - len(res.budgets)], item=old)

    def _reserve_laned(self, res: Reservation, enforce: bool, tries: int) -> Refusal | None:
        """One transaction as ``_reserve_once``, on a lane drawn at random for each laned line,
        among the lanes this process does not know to be full (``LaneMemory``). A conflict draws
        again (another lane is most likely free); a full lane spills over to another one. After
        ``_SPILLS`` full lanes, or at once when every lane is known full, a read of the lanes
        decides (``_decide``: 100 at a time until some have room): a lane drawn among those with
        room, else the refusal, which names the whole line's use (its lanes summed). When this
        process saw every lane full within the last second (``LaneMemory.sure``), the refusal
        needs no call. Near the end of a budget or a window, then, a request may be refused while
        the lanes together still hold more than it needs, never less (docs/limits.md)."""
        full = {
            at: self._known_full(line, res) if enforce else set()
            for at, line in enumerate(res.lines)
            if line.lanes > 1 and at not in res.leases
        }
        conflicts = spills = reads = attempt = 0
        while True:
            for at in full:
                line = self._line_at(res, at)
                if len(full[at]) >= line.lanes:  # every lane known full: read them first
                    sure = self.memory.sure(line, res) if reads == 0 else None
                    if sure is not None:  # each seen full within the last second: no call
                        return self._refusal(line, sure)
                    reads += 1
                    refusal = self._decide(res, at, full)
                    if refusal is not None:
                        return refusal
            self._draw(res, full)
            try:
                refusal = self._reserve_once(res, enforce, 1, first_try=attempt)
            except LedgerBusy as exc:
                conflicts += 1
                if exc.throttled or conflicts >= tries:
                    raise
                self._sleep(random.uniform(0.001, 0.005))
                attempt += 1
                continue
            attempt += 1
            failed: Laned | None = refusal.budget or refusal.rate if refusal is not None else None
            if refusal is None or failed is None or failed.lanes <= 1:
                return refusal
            at = self._position(res, failed)
            self.memory.saw(failed, failed.lane, refusal.item)
            full[at].add(failed.lane)
            spills += 1
            if spills < _SPILLS and len(full[at]) < failed.lanes:
                continue
            reads += 1
            if reads > 2:  # read twice already, and lost the race both times
                return self._refusal(failed, self.memory.values(failed))
            refusal = self._decide(res, at, full)
            if refusal is not None:
                return refusal

    def _known_full(self, line: Laned, res: Reservation) -> set[int]:
        """The lanes not to draw: those this process saw full; and when it saw some with room,
        every other (a read showed room there, so that is where to go first)."""
        full, roomy = self.memory.split(line, res)
        return set(range(line.lanes)) - roomy if roomy else full

    @staticmethod
    def _line_at(res: Reservation, at: int) -> Laned:
        return res.budgets[at] if at < len(res.budgets) else res.rates[at - len(res.budgets)]

    @staticmethod
    def _position(res: Reservation, line: Laned) -> int:
        if isinstance(line, BudgetLine):
            return res.budgets.index(line)
        return len(res.budgets) + res.rates.index(line)

    def _draw(self, res: Reservation, full: dict[int, set[int]]) -> None:
        """A lane for each laned line (but those on a lease), at random among those not known to
        be full."""
        for at in full:
            self._set_line(res, at, _drawn(self._line_at(res, at), full[at]))

    def _decide(self, res: Reservation, at: int, full: dict[int, set[int]]) -> Refusal | None:
        """Read the lanes of the line at ``at``, 100 at a time (one ``BatchGetItem`` each) in a
        random order, until some have room for ``res``: None, with ``full`` set so that the next
        draw is among those. The refusal when no lane has room (then every lane was read)."""
        line = self._line_at(res, at)
        order = list(range(line.lanes))
        random.shuffle(order)
        values: dict[int, dict[str, Any]] = {}
        for start in range(0, line.lanes, _READ_BATCH):
            batch = order[start : start + _READ_BATCH]
            found = self.read([line.lane_key(lane) for lane in batch])
            room = set()
            for lane in batch:
                seen = values[lane] = found.get(_pair(line.lane_key(lane)), {})
                self.memory.saw(line, lane, seen)
                if line.fits(seen, res):
                    room.add(lane)
            if room:
                full[at] = set(range(line.lanes)) - room
                return None
        return self._refusal(line, [values[lane] for lane in range(line.lanes)])

    @staticmethod
    def _refusal(line: Laned, values: Sequence[dict[str, Any]]) -> Refusal:
        if isinstance(line, BudgetLine):
            return Refusal(budget=line, item=BudgetLine.summed(values))
        return Refusal(rate=line, item=RateLine.summed(values))

    def _adopt_lanes(self, res: Reservation, stored: dict[str, Any]) -> None:
        """A reservation made before (its answer lost): take the lanes it was made on."""
        if not stored or not res.laned:
            return
        hold = Hold.from_item(stored)
        pks = {pk for pk, _ in (*hold.budget_keys, *hold.rate_keys)}
        res.budgets = tuple(_adopted(line, pks) for line in res.budgets)
        res.rates = tuple(_adopted(line, pks) for line in res.rates)

    def used(self, line: BudgetLine) -> dict[str, Decimal]:
        """A budget's use, its lanes summed: spent, reserved, used and requests."""
        found = self.read(line.keys)
        total = {name: Decimal(0) for name in ("spent", "reserved", "used", "requests")}
        for key in line.keys:
            for name in total:
                total[name] += Decimal(found.get(_pair(key), {}).get(name, 0))
        return total

    def _put_resv(self, res: Reservation) -> dict[str, Any]:
        hold = res.hold
        held = dict(hold.held)
        values = {
            "request_id": res.request_id,
            "usd": res.usd,
            "tokens": res.tokens,
            "budgets": [
                {"pk": pk, "sk": sk, **({"usd": held[(pk, sk)]} if (pk, sk) in held else {})}
                for pk, sk in hold.budget_keys
            ],
            "rates": [
                {"pk": pk, "sk": sk, **({"tokens": held[(pk, sk)]} if (pk, sk) in held else {})}
                for pk, sk in hold.rate_keys
            ],
            "key_id": res.key_id or None,
            "alias": res.alias or None,
            "created_at": int(self._clock()),
            "expires_at": res.expires_at,
            "ttl": res.expires_at + _RESV_TTL_S,
            "gsi1pk": resv_shard(res.request_id),
            "gsi1sk": f"{res.expires_at:012d}#{res.request_id}",
        }
        return {
            "Put": {
                "TableName": self.table.name,
                "Item": {**resv_key(res.request_id), **dump(values)},
                "ConditionExpression": "attribute_not_exists(pk)",
                "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
            }
        }

    def _take_over(self, lease: Lease) -> dict[str, Any]:
        """The lease's reservation deleted, if the sweeper has not refunded it: its lane's amount
        becomes this request's, and the lane is not written."""
        return {
            "Delete": {
                "TableName": self.table.name,
                "Key": resv_key(lease.resv_id),
                "ConditionExpression": "attribute_exists(pk)",
            }
        }

    def _reserve_budget(
        self,
        res: Reservation,
        line: BudgetLine,
        enforce: bool = True,
        settled: tuple[Decimal, Decimal, Decimal] | None = None,
        requests: int = 1,
    ) -> dict[str, Any]:
        """``res``'s estimate on ``line``'s item, if it has room. ``settled``: the deltas of a
        settlement on the same item, written in the same update (an item appears once in a
        transaction), with the condition on what the item holds once they are applied.
        ``requests``: what the item's count of requests grows by (a lease is counted when a
        request settles it, not when it is made)."""
        used, reserved, spent = settled or (Decimal(0), Decimal(0), Decimal(0))
        values = {
            ":u": num(res.usd + used),
            ":r": num(res.usd + reserved),
            ":n": num(requests),
            ":limit": num(line.share),
        }
        adds = "used :u, reserved :r, requests :n"
        if settled is not None:
            values[":s"] = num(spent)
            adds += ", spent :s"
        update: dict[str, Any] = {
            "TableName": self.table.name,
            "Key": line.key,
            "UpdateExpression": f"ADD {adds} SET limit_usd = :limit",
            "ExpressionAttributeValues": values,
        }
        if enforce:
            room = headroom(line.share, res.usd) - used
            values[":room"] = num(room)
            # An item not yet written admits any estimate it can hold, and none it cannot (a lane
            # smaller than the estimate: a missing attribute compares false).
            update["ConditionExpression"] = (
                "attribute_not_exists(used) OR used <= :room" if room >= 0 else "used <= :room"
            )
            update["ReturnValuesOnConditionCheckFailure"] = "ALL_OLD"
        return {"Update": update}

    def _reserve_rate(
        self, res: Reservation, line: RateLine, enforce: bool = True, settled_tokens: int = 0
    ) -> dict[str, Any]:
        """As ``_reserve_budget``, for a rate window: ``settled_tokens``, a settlement's change to
        the same item's tokens."""
        conditions = []
        values: dict[str, Any] = {
            ":one": num(1),
            ":t": num(res.tokens + settled_tokens),
            ":ttl": num((line.window + 1) * RATE_WINDOW_S + _RATE_ITEM_TTL_S),
            ":rid": {"S": res.request_id},
        }
        rpm, tpm = line.rpm_share, line.tpm_share  # the whole limit, or a lane's share of it
        # An item not yet written admits what a window can hold, and nothing it cannot (a lane's
        # share of 0 requests, or fewer tokens than the request: a missing attribute compares false).
        if rpm is not None and enforce:
            conditions.append("(attribute_not_exists(req) OR req < :rpm)" if rpm > 0 else "req < :rpm")
            values[":rpm"] = num(rpm)
        if tpm is not None and enforce:
            troom = tpm - res.tokens - settled_tokens
            conditions.append(
                "(attribute_not_exists(tok) OR tok <= :troom)" if troom >= 0 else "tok <= :troom"
            )
            values[":troom"] = num(troom)
        update: dict[str, Any] = {
            "TableName": self.table.name,
            "Key": line.key,
            # last_req lets the read beside the admission tell whether it saw this request's write.
            "UpdateExpression": "ADD req :one, tok :t SET #ttl = :ttl, last_req = :rid",
            "ExpressionAttributeNames": {"#ttl": "ttl"},
            "ExpressionAttributeValues": values,
            "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
        }
        if conditions:
            update["ConditionExpression"] = " AND ".join(conditions)
        return {"Update": update}

    # ------------------------------------------------------------------------ settlement

    def settle(
        self,
        hold: Hold,
        actual_usd: Decimal,
        actual_tokens: int,
        also: Sequence[dict[str, Any]] = (),
        *,
        tries: int = _CONFLICT_TRIES,
        first_try: int = 0,
        refill: Reservation | None = None,
    ) -> bool:
        """Move ``hold`` to spent at the actual cost (zero: a refund). False when already settled.

        ``also``: more transaction items written with the settlement or not at all (the spend
        ledger's ``Update``), so a settlement that is a no-op books nothing twice. The reservation's
        ``Delete`` is conditioned on the item existing: a settlement that committed but whose
        answer was lost, tried again, is a no-op. Raises ``LedgerBusy`` when conflicts or throttling
        outlast ``tries``; anything else (no answer) as the client raised it.

        ``refill``: the request settled, whose estimate this instance then reserves ahead on each
        of its shared lines, in the same transaction (``Lease``; with ``leases`` only). A lane with
        no room for it leaves the settlement to a second call without."""
        items: list[dict[str, Any]] = [
            {
                "Delete": {
                    "TableName": self.table.name,
                    "Key": resv_key(hold.request_id),
                    "ConditionExpression": "attribute_exists(pk)",
                }
            }
        ]
        for pk, sk in hold.budget_keys:
            used, reserved, spent = settle_amounts(hold.usd_on((pk, sk)), actual_usd)
            values = {":u": num(used), ":r": num(reserved), ":s": num(spent)}
            adds = "used :u, reserved :r, spent :s"
            if hold.leased((pk, sk)):  # a request taken over from a lease is counted here
                values[":n"] = num(1)
                adds += ", requests :n"
            items.append(
                {
                    "Update": {
                        "TableName": self.table.name,
                        "Key": {"pk": {"S": pk}, "sk": {"S": sk}},
                        "UpdateExpression": f"ADD {adds}",
                        "ExpressionAttributeValues": values,
                    }
                }
            )
        for pk, sk in hold.rate_keys:
            window = int(sk.removeprefix("m#"))
            items.append(
                {
                    "Update": {
                        "TableName": self.table.name,
                        "Key": {"pk": {"S": pk}, "sk": {"S": sk}},
                        "UpdateExpression": "ADD tok :t SET #ttl = :ttl",
                        "ExpressionAttributeNames": {"#ttl": "ttl"},
                        "ExpressionAttributeValues": {
                            ":t": num(actual_tokens - hold.tokens_on((pk, sk))),
                            ":ttl": num((window + 1) * RATE_WINDOW_S + _RATE_ITEM_TTL_S),
                        },
                    }
                }
            )
        items.extend(also)
        ahead = self._ahead(refill) if refill is not None else []
        if ahead:
            failed = self._transact(
                self._with_leases(items, hold, actual_usd, actual_tokens, ahead),
                "settle+lease",
                hold.request_id,
                actual_usd,
                actual_tokens,
                *(lease.request_id for lease in ahead),
                tries=tries,
                first_try=first_try,
            )
            if failed is None:
                self._keep(ahead)
                return True
            if 0 in failed:  # settled before
                return False
            # a lane had no room for a lease: the settlement alone
        kind = "settle+" if also else "settle"  # one idempotency token per distinct transaction
        failed = self._transact(
            items, kind, hold.request_id, actual_usd, actual_tokens, tries=tries, first_try=first_try
        )
        return failed is None

    def _ahead(self, res: Reservation) -> list[Reservation]:
        """The leases a settlement of ``res`` reserves: ``res``'s estimate on the lane it used of
        each shared line that holds at least ``_LEASE_MIN_SHARE`` such estimates (a lease holds
        back a small part of it) and where this instance has room for one more (a rate line: in
        ``res``'s window, unless it ends within ``_RATE_LEASE_MIN_S``)."""
        if self.leases is None:
            return []
        now = self._clock()
        ahead = []
        for line in res.lines:
            if line.lanes <= 1 or not _leasable(line, res) or not self.leases.room(line):
                continue
            lease_id = f"{_LEASE_PREFIX}{uuid.uuid4().hex}"
            expires_at = int(now) + LEASE_S
            if isinstance(line, BudgetLine):
                ahead.append(
                    Reservation(lease_id, res.usd, 0, (line,), (), expires_at, res.key_id, res.alias)
                )
            elif line.resets_in(now) >= _RATE_LEASE_MIN_S:
                ahead.append(
                    Reservation(
                        lease_id, Decimal(0), res.tokens, (), (line,), expires_at, res.key_id, res.alias
                    )
                )
        return ahead

    def return_leases(self) -> int:
        """Give back every lease this instance holds (at a graceful shutdown), each refunded by a
        settlement of its own: a no-op where the sweeper was first, and left to the sweeper where
        DynamoDB does not take it. Returns how many were given back."""
        if self.leases is None:
            return 0
        returned = 0
        for lease in self.leases.drained():
            try:
                returned += self.settle(lease.hold, Decimal(0), 0, tries=2)
            except Exception as exc:
                log.info("lease %s left to the sweeper: %s", lease.resv_id, type(exc).__name__)
        return returned

    def _with_leases(
        self,
        items: list[dict[str, Any]],
        hold: Hold,
        actual_usd: Decimal,
        actual_tokens: int,
        ahead: Sequence[Reservation],
    ) -> list[dict[str, Any]]:
        """The settlement's items and the leases': each lease's reservation, and its estimate on
        its lane, written in the settlement's own update of that lane when it has one."""
        at_key = {_pair(item["Update"]["Key"]): n for n, item in enumerate(items) if "Update" in item}
        items = list(items)
        for lease in ahead:
            items.append(self._put_resv(lease))
            line = lease.lines[0]
            key = _pair(line.key)
            n = at_key.get(key)
            if isinstance(line, BudgetLine):
                settled = settle_amounts(hold.usd_on(key), actual_usd) if n is not None else None
                counted = 1 if n is not None and hold.leased(key) else 0
                update = self._reserve_budget(lease, line, settled=settled, requests=counted)
            else:
                delta = actual_tokens - hold.tokens_on(key) if n is not None else 0
                update = self._reserve_rate(lease, line, settled_tokens=delta)
            if n is None:
                items.append(update)
            else:
                items[n] = update
        return items

    def _keep(self, ahead: Sequence[Reservation]) -> None:
        assert self.leases is not None
        for lease in ahead:
            line = lease.lines[0]
            amount = lease.usd if isinstance(line, BudgetLine) else Decimal(lease.tokens)
            self.leases.give(
                line, Lease(lease.request_id, _pair(line.key), amount, line.lane, lease.expires_at)
            )

    def record(
        self, hold: Hold, actual_usd: Decimal, actual_tokens: int, also: Sequence[dict[str, Any]] = ()
    ) -> bool:
        """Write the settlement onto the reservation (one plain ``UpdateItem``), for the sweeper to
        charge if the settlement transaction never commits. False when the reservation is gone
        (settled already: by a call whose answer was lost, or by the sweeper)."""
        values = {
            "pending_usd": actual_usd,
            "pending_tokens": actual_tokens,
            "pending_also": json.dumps(list(also), separators=(",", ":")),
            "pending_at": int(self._clock()),
        }
        try:
            self.table.client.update_item(
                TableName=self.table.name,
                Key=resv_key(hold.request_id),
                UpdateExpression="SET " + ", ".join(f"{name} = :{name}" for name in values),
                ConditionExpression="attribute_exists(pk)",  # never resurrect a settled reservation
                ExpressionAttributeValues={f":{k}": v for k, v in dump(values).items()},
            )
        except Exception as exc:
            if error_code(exc) == "ConditionalCheckFailedException":
                return False
            if error_code(exc) in _THROTTLING_CODES:
                raise LedgerBusy(f"recording {hold.request_id}: {error_code(exc)}", throttled=True) from exc
            raise
        return True

    def sweep(self, now: float | None = None, limit: int | None = None) -> Swept:
        """Close every reservation whose deadline passed before ``now``: at its recorded cost when
        its request wrote one (``record``), else refunded (its instance died mid-request)."""
        cutoff = int(self._clock() if now is None else now)
        swept = Swept()
        for shard in range(RESV_SHARDS):
            for item in self._expired(f"resv#{shard}", cutoff):
                self._sweep_one(item, swept)
                if limit is not None and len(swept) >= limit:
                    return swept
        return swept

    def _sweep_one(self, item: dict[str, Any], swept: Swept) -> None:
        hold = Hold.from_item(item)
        recorded = Recorded.from_item(item)
        usd, tokens, also = (
            (recorded.usd, recorded.tokens, recorded.also) if recorded else (Decimal(0), 0, ())
        )
        try:
            done = self.settle(hold, usd, tokens, also)
        except LedgerBusy:  # the next sweep tries again; nothing was written
            log.warning("sweeper: reservation %s busy; left for the next sweep", hold.request_id)
            swept.busy += 1
            return
        if not done:
            return
        if recorded is not None:
            log.warning("settled reservation %s at its recorded cost (%s USD)", hold.request_id, usd)
            swept.settled.append((hold, usd))
        else:
            if hold.request_id.startswith(_LEASE_PREFIX):  # unused: its instance went idle or away
                log.info("returned unused lease %s (%s USD)", hold.request_id, hold.usd)
                swept.returned.append(hold)
            else:
                log.warning("refunded orphaned reservation %s (%s USD)", hold.request_id, hold.usd)
                swept.refunded.append(hold)

    def _expired(self, shard: str, cutoff: int) -> Iterable[dict[str, Any]]:
        kwargs: dict[str, Any] = {
            "TableName": self.table.name,
            "IndexName": GSI,
            "KeyConditionExpression": "gsi1pk = :p AND gsi1sk < :cut",
            "ExpressionAttributeValues": {":p": {"S": shard}, ":cut": {"S": f"{cutoff:012d}"}},
        }
        while True:
            page = self.table.client.query(**kwargs)
            yield from page.get("Items", [])
            if "LastEvaluatedKey" not in page:
                return
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    def pending(self, request_id: str) -> Hold | None:
        """The reservation of ``request_id`` if it is still held (strongly consistent)."""
        found = self.table.client.get_item(
            TableName=self.table.name, Key=resv_key(request_id), ConsistentRead=True
        )
        item = found.get("Item")
        return Hold.from_item(item) if item else None

    # ----------------------------------------------------------------------------- reads

    def read(self, keys: Iterable[Key]) -> dict[tuple[str, str], dict[str, Any]]:
        """Current values of some ledger items (eventually consistent; for headers and rules)."""
        wanted = list({(k["pk"]["S"], k["sk"]["S"]): k for k in keys}.values())
        found: dict[tuple[str, str], dict[str, Any]] = {}
        while wanted:
            batch, wanted = wanted[:100], wanted[100:]
            request: dict[str, Any] = {self.table.name: {"Keys": batch}}
            while request:
                page = self.table.client.batch_get_item(RequestItems=request)
                for item in page.get("Responses", {}).get(self.table.name, []):
                    values = load(item)
                    found[(str(values["pk"]), str(values["sk"]))] = values
                request = page.get("UnprocessedKeys") or {}
        return found

    # ------------------------------------------------------------------------- transact

    def _transact(
        self,
        items: list[dict[str, Any]],
        kind: str,
        request_id: str,
        *amounts: object,
        tries: int = _CONFLICT_TRIES,
        first_try: int = 0,
    ) -> dict[int, Any] | None:
        """Run one transaction; None when it committed, else {index: old item} of failed conditions.

        Conflicts are tried again ``tries`` times with a short jitter; then, or on throttling that
        the AWS client's own retries did not outlast, ``LedgerBusy``."""
        client = self.table.client
        throttled = False
        for attempt in range(first_try, first_try + tries):
            if attempt > first_try:
                self._sleep(random.uniform(0.005, 0.02) * (attempt - first_try))
            try:
                client.transact_write_items(
                    TransactItems=items, ClientRequestToken=_token(kind, request_id, attempt, *amounts)
                )
                return None
            except Exception as exc:
                code = error_code(exc)
                if code in _THROTTLING_CODES:
                    raise LedgerBusy(f"{kind} {request_id}: {code}", throttled=True) from exc
                if code == "TransactionConflictException":
                    continue
                if code != "TransactionCanceledException":
                    raise
                codes = _cancel_codes(exc)
                if "ConditionalCheckFailed" in codes:
                    reasons = getattr(exc, "response", {}).get("CancellationReasons") or []
                    return {
                        i: reasons[i].get("Item") or {}
                        for i, code in enumerate(codes)
                        if code == "ConditionalCheckFailed"
                    }
                if not all(code in _RETRY_REASONS for code in codes):
                    raise
                throttled = any(code in _THROTTLED_REASONS for code in codes)
                if throttled:  # no point hammering a throttled table with short retries
                    break
        raise LedgerBusy(
            f"{kind} {request_id}: {'throttled' if throttled else 'conflicts'}", throttled=throttled
        )
