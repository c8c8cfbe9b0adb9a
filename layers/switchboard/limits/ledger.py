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
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import ROUND_FLOOR, Decimal
from typing import Any, TypeVar

from switchboard.core.principal import Period, Scope
from switchboard.limits.model import LEDGER_QUANTUM, RATE_WINDOW_S, admits, headroom, settle_amounts
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

    @classmethod
    def from_item(cls, item: dict[str, Any]) -> Hold:
        v = load(item)
        return cls(
            request_id=str(v["request_id"]),
            usd=Decimal(v.get("usd", 0)),
            tokens=int(v.get("tokens", 0)),
            budget_keys=tuple((str(p["pk"]), str(p["sk"])) for p in v.get("budgets", [])),
            rate_keys=tuple((str(p["pk"]), str(p["sk"])) for p in v.get("rates", [])),
        )


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

    @property
    def laned(self) -> bool:
        """Whether any of its lines is in lanes."""
        return any(b.lanes > 1 for b in self.budgets) or any(r.lanes > 1 for r in self.rates)

    @property
    def hold(self) -> Hold:
        return Hold(
            self.request_id,
            self.usd,
            self.tokens,
            tuple((b.key["pk"]["S"], b.key["sk"]["S"]) for b in self.budgets),
            tuple((r.key["pk"]["S"], r.key["sk"]["S"]) for r in self.rates),
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

    def __len__(self) -> int:
        return len(self.refunded) + len(self.settled)


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


def _drawn(line: _L, full: set[int]) -> _L:
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


class Ledger:
    """Reservation and settlement over the table. Synchronous; the hook runs it in a thread."""

    def __init__(
        self,
        table: Table,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
        memory: LaneMemory | None = None,
    ) -> None:
        self.table = table
        self._clock = clock
        self._sleep = sleep
        self.memory = memory or LaneMemory(clock=clock)

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
        if res.laned:
            return self._reserve_laned(res, enforce, tries)
        return self._reserve_once(res, enforce, tries)

    def _reserve_once(
        self, res: Reservation, enforce: bool, tries: int, first_try: int = 0
    ) -> Refusal | None:
        items = [self._put_resv(res)]
        items += [self._reserve_budget(res, line, enforce) for line in res.budgets]
        items += [self._reserve_rate(res, line, enforce) for line in res.rates]
        kind = "admit" if enforce else "admit-late"
        failed = self._transact(
            items, kind, res.request_id, res.usd, res.tokens, tries=tries, first_try=first_try
        )
        if failed is None:
            return None
        if 0 in failed:  # done before (a retried admission): on the lanes it chose then
            self._adopt_lanes(res, failed[0])
            return None
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
        lines: list[Laned] = [*res.budgets, *res.rates]
        full = {
            at: self._known_full(line, res) if enforce else set()
            for at, line in enumerate(lines)
            if line.lanes > 1
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
        """A lane for each laned line, at random among those not known to be full."""
        res.budgets = tuple(_drawn(line, full.get(at, set())) for at, line in enumerate(res.budgets))
        offset = len(res.budgets)
        res.rates = tuple(_drawn(line, full.get(offset + at, set())) for at, line in enumerate(res.rates))

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
        values = {
            "request_id": res.request_id,
            "usd": res.usd,
            "tokens": res.tokens,
            "budgets": [{"pk": pk, "sk": sk} for pk, sk in res.hold.budget_keys],
            "rates": [{"pk": pk, "sk": sk} for pk, sk in res.hold.rate_keys],
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

    def _reserve_budget(self, res: Reservation, line: BudgetLine, enforce: bool = True) -> dict[str, Any]:
        values = {":e": num(res.usd), ":one": num(1), ":limit": num(line.share)}
        update: dict[str, Any] = {
            "TableName": self.table.name,
            "Key": line.key,
            "UpdateExpression": "ADD used :e, reserved :e, requests :one SET limit_usd = :limit",
            "ExpressionAttributeValues": values,
        }
        if enforce:
            room = headroom(line.share, res.usd)
            values[":room"] = num(room)
            # An item not yet written admits any estimate it can hold, and none it cannot (a lane
            # smaller than the estimate: a missing attribute compares false).
            update["ConditionExpression"] = (
                "attribute_not_exists(used) OR used <= :room" if room >= 0 else "used <= :room"
            )
            update["ReturnValuesOnConditionCheckFailure"] = "ALL_OLD"
        return {"Update": update}

    def _reserve_rate(self, res: Reservation, line: RateLine, enforce: bool = True) -> dict[str, Any]:
        conditions = []
        values: dict[str, Any] = {
            ":one": num(1),
            ":t": num(res.tokens),
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
            troom = tpm - res.tokens
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
    ) -> bool:
        """Move ``hold`` to spent at the actual cost (zero: a refund). False when already settled.

        ``also``: more transaction items written with the settlement or not at all (the spend
        ledger's ``Update``), so a settlement that is a no-op books nothing twice. The reservation's
        ``Delete`` is conditioned on the item existing: a settlement that committed but whose
        answer was lost, tried again, is a no-op. Raises ``LedgerBusy`` when conflicts or throttling
        outlast ``tries``; anything else (no answer) as the client raised it."""
        used, reserved, spent = settle_amounts(hold.usd, actual_usd)
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
            items.append(
                {
                    "Update": {
                        "TableName": self.table.name,
                        "Key": {"pk": {"S": pk}, "sk": {"S": sk}},
                        "UpdateExpression": "ADD used :u, reserved :r, spent :s",
                        "ExpressionAttributeValues": {":u": num(used), ":r": num(reserved), ":s": num(spent)},
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
                            ":t": num(actual_tokens - hold.tokens),
                            ":ttl": num((window + 1) * RATE_WINDOW_S + _RATE_ITEM_TTL_S),
                        },
                    }
                }
            )
        items.extend(also)
        kind = "settle+" if also else "settle"  # one idempotency token per distinct transaction
        failed = self._transact(
            items, kind, hold.request_id, actual_usd, actual_tokens, tries=tries, first_try=first_try
        )
        return failed is None

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
