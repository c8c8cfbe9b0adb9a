"""A model of DynamoDB with its limits, on a virtual clock: what moto does not have.

moto answers every call at once, one at a time: no per-item throughput ceiling, no transaction
conflicts, no throttling, no latency. This model has them, so that the real limits code (the
``Ledger``'s reserve, settle, record and sweep, with their retries) can be run against the
contention a busy shared budget meets in AWS (``switchboard.devtools.scalesim``, and tests):

* **Throughput per partition key.** Each ``pk`` (and each ``gsi1pk`` of the index, written with
  every item that carries one) is a token bucket of ``wcu_per_s`` write units (1,000) and
  ``rcu_per_s`` read units (3,000), ``burst_s`` deep. A write costs one unit per KB of the larger
  of the item before and after, twice that in a transaction; a failed condition still costs its
  units, as in DynamoDB. Past the bucket: ``ProvisionedThroughputExceededException`` (a single
  write or read), or a transaction cancelled with ``ThrottlingError`` on that item.
* **Transaction conflicts.** A committed transaction holds its items for most of its service time
  (prepare to commit). Another transaction that touches one of them meanwhile is cancelled with
  ``TransactionCanceledException`` (``TransactionConflict`` on that item, ``None`` on the others);
  a plain write to one fails with ``TransactionConflictException``.
* **Latency.** Every call takes a network hop each way plus a service time drawn from a lognormal
  (medians of a few milliseconds, per operation) with a rare long tail (``Latency``).
* **The client's retries.** Throttling errors of single calls are retried as botocore's standard
  mode does (3 attempts, full jitter from 1 s); transaction cancellations and conflicts are not.

Time is virtual (``Sim``): each simulated caller is a thread, but only one runs at a time and the
scheduler hands the baton over in the order of the virtual clock, so a run is deterministic for
its seed and takes as long as the Python work, not the simulated seconds. A caller blocks in
``Sim.wait`` (the model's calls do, and the ``Ledger`` is given it as its ``sleep``).

The expressions the model understands are the subset the gateway writes: ``SET a = :v`` (also
``if_not_exists`` and ``+``/``-``), ``ADD``, ``REMOVE``; conditions with ``attribute_exists``,
``attribute_not_exists``, comparisons, ``AND``/``OR``/``NOT`` and parentheses; queries on the base
table or ``gsi1`` with ``=``/``<``/``<=``/``>``/``>=``/``begins_with`` key conditions. Anything
else raises ``ValidationException``: a model that guessed would prove nothing.
"""

from __future__ import annotations

import functools
import heapq
import itertools
import math
import random
import re
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from decimal import Context, Decimal
from typing import Any

from switchboard.infra import awsjson
from switchboard.limits.table import item_bytes

__all__ = ["Latency", "ModelClient", "ModelDynamoDB", "Sim", "Stats"]

Item = dict[str, dict[str, Any]]
_EXACT = Context(prec=38)


# ----------------------------------------------------------------------------- virtual time


class _Task:
    """A worker thread: runs one task function after another (threads are reused)."""

    __slots__ = ("fn", "name", "resume")

    def __init__(self, name: str) -> None:
        self.name = name
        self.resume = threading.Semaphore(0)
        self.fn: Callable[[], None] | None = None


class Sim:
    """A discrete-event scheduler whose tasks are plain blocking functions (one thread each, one
    running at a time). ``now`` is virtual seconds from 0; ``epoch`` is added for wall clocks."""

    def __init__(self, seed: int = 1, epoch: float = 1_800_000_000.0) -> None:
        self.now = 0.0
        self.epoch = epoch
        self.random = random.Random(seed)
        self.errors: list[BaseException] = []
        self._heap: list[tuple[float, int, Callable[[], None]]] = []
        self._seq = itertools.count()
        self._baton = threading.Semaphore(0)
        self._local = threading.local()
        self._idle: list[_Task] = []
        self.running = 0

    def clock(self) -> float:
        """Wall time (epoch seconds) on the virtual clock: the ``Ledger``'s ``clock``."""
        return self.epoch + self.now

    def at(self, when: float, action: Callable[[], None]) -> None:
        """Run ``action`` (short, non-blocking) in the scheduler at virtual time ``when``."""
        heapq.heappush(self._heap, (max(when, self.now), next(self._seq), action))

    def spawn(self, fn: Callable[[], None], at: float | None = None, name: str = "task") -> None:
        """Start ``fn`` as a task at ``at`` (default now); it may call ``wait``."""
        self.at(self.now if at is None else at, lambda: self._start(fn, name))

    def wait(self, seconds: float) -> None:
        """Block the calling task for ``seconds`` of virtual time (the ``Ledger``'s ``sleep``)."""
        task: _Task | None = getattr(self._local, "task", None)
        if task is None:
            raise RuntimeError("Sim.wait outside a task")
        self.at(self.now + max(0.0, seconds), lambda: self._switch(task))
        self._baton.release()
        task.resume.acquire()

    def run(self, until: float = math.inf) -> None:
        """Process events up to ``until`` (virtual seconds); re-raise the first task error."""
        while self._heap and self._heap[0][0] <= until:
            when, _, action = heapq.heappop(self._heap)
            self.now = when
            action()
        if until != math.inf:
            self.now = max(self.now, until)
        if self.errors:
            raise self.errors[0]

    def count(self) -> int:
        """Calls made by the calling task since its last ``count()`` (``ModelClient`` counts)."""
        made: int = getattr(self._local, "calls", 0)
        self._local.calls = 0
        return made

    def counted(self) -> None:
        self._local.calls = getattr(self._local, "calls", 0) + 1

    def outcomes(self) -> Counter[str]:
        """How the calling task's calls ended since its last ``outcomes()``: ``ok``, ``conflict``,
        ``condition``, ``throttled``, ``error``, each also by operation (``BatchGetItem:ok``)."""
        seen: Counter[str] = getattr(self._local, "outcomes", None) or Counter()
        self._local.outcomes = Counter()
        return seen

    def outcome(self, operation: str, kind: str) -> None:
        seen: Counter[str] | None = getattr(self._local, "outcomes", None)
        if seen is None:
            seen = self._local.outcomes = Counter()
        seen[kind] += 1
        seen[f"{operation}:{kind}"] += 1

    def close(self) -> None:
        """End the idle worker threads."""
        for task in self._idle:
            task.fn = None
            task.resume.release()
        self._idle.clear()

    def _start(self, fn: Callable[[], None], name: str) -> None:
        self.running += 1
        if self._idle:
            task = self._idle.pop()
            task.fn = fn
            self._switch(task)
            return
        task = _Task(name)
        task.fn = fn
        threading.Thread(target=self._worker, args=(task,), name=name, daemon=True).start()
        self._switch(task)

    def _worker(self, task: _Task) -> None:
        self._local.task = task
        task.resume.acquire()
        while task.fn is not None:
            try:
                task.fn()
            except BaseException as exc:  # surfaced by run()
                self.errors.append(exc)
            task.fn = None
            self.running -= 1
            self._idle.append(task)
            self._baton.release()
            task.resume.acquire()

    def _switch(self, task: _Task) -> None:
        task.resume.release()
        self._baton.acquire()


threading.stack_size(512 * 1024)  # thousands of waiting tasks in a long run


# ---------------------------------------------------------------------------------- latency


@dataclass(frozen=True)
class Latency:
    """Per-call latency in seconds: a network hop each way plus a lognormal service time (median
    per operation, ``sigma``), and with probability ``tail_p`` an exponential extra (``tail_s``).
    The defaults follow DynamoDB's published in-region single-digit-millisecond figures, with
    transactions about twice a single write (two-phase commit)."""

    one_way_s: float = 0.0004
    medians_s: dict[str, float] = field(
        default_factory=lambda: {
            "GetItem": 0.0025,
            "BatchGetItem": 0.003,
            "Query": 0.004,
            "Scan": 0.006,
            "PutItem": 0.004,
            "UpdateItem": 0.004,
            "DeleteItem": 0.004,
            "TransactWriteItems": 0.008,
        }
    )
    sigma: float = 0.45
    tail_p: float = 0.01
    tail_s: float = 0.02
    hold_share: float = 0.6  # of a transaction's service time, its items are held (prepare..commit)

    def service(self, operation: str, rng: random.Random) -> float:
        median = self.medians_s.get(operation, 0.004)
        value = median * math.exp(self.sigma * rng.gauss(0.0, 1.0))
        if rng.random() < self.tail_p:
            value += rng.expovariate(1.0 / self.tail_s)
        return value


@dataclass
class Stats:
    """What the model refused, and what it served."""

    calls: Counter[str] = field(default_factory=Counter)
    conflicts: int = 0  # transactions cancelled, or plain writes refused, for TransactionConflict
    throttles: int = 0  # attempts refused for throughput (before or after the client's retries)
    condition_failures: int = 0
    write_units: float = 0.0


# ------------------------------------------------------------------------------- expressions

_TOKEN = re.compile(r"\s*(<=|>=|<>|[=<>(),+\-]|[#:]?[A-Za-z_][A-Za-z0-9_.\-]*)")


@functools.lru_cache(maxsize=4096)
def _tokens(text: str) -> tuple[str, ...]:
    out: list[str] = []
    pos = 0
    text = text.strip()
    while pos < len(text):
        found = _TOKEN.match(text, pos)
        if found is None:
            raise _validation(f"cannot parse expression at {text[pos:]!r}")
        out.append(found.group(1))
        pos = found.end()
        while pos < len(text) and text[pos].isspace():
            pos += 1
    return tuple(out)


class _Expr:
    """An expression's tokens with its name and value placeholders."""

    def __init__(self, text: str, names: dict[str, str], values: dict[str, Any]) -> None:
        self.tokens = _tokens(text)
        self.pos = 0
        self.names = names
        self.values = values

    def peek(self) -> str | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def take(self, expected: str | None = None) -> str:
        token = self.peek()
        if token is None or (expected is not None and token.upper() != expected.upper()):
            raise _validation(f"expected {expected or 'a token'}, found {token!r}")
        self.pos += 1
        return token

    def name(self, token: str) -> str:
        if token.startswith("#"):
            if token not in self.names:
                raise _validation(f"undefined name {token}")
            return self.names[token]
        return token

    def operand(self, item: Item) -> dict[str, Any] | None:
        token = self.take()
        if token.startswith(":"):
            if token not in self.values:
                raise _validation(f"undefined value {token}")
            return dict(self.values[token])
        if token.lower() == "if_not_exists":
            self.take("(")
            path = self.name(self.take())
            self.take(",")
            default = self.operand(item)
            self.take(")")
            return item.get(path, default)
        return item.get(self.name(token))


def _number(value: dict[str, Any] | None) -> Decimal:
    if value is None or "N" not in value:
        raise _validation("an operand is not a number")
    return Decimal(value["N"])


def _n(value: Decimal) -> dict[str, str]:
    text = format(_EXACT.plus(value).normalize(_EXACT), "f")
    return {"N": text}


def _compare(left: dict[str, Any] | None, op: str, right: dict[str, Any] | None) -> bool:
    if left is None or right is None:
        return op == "<>" and left != right
    (lk, lv), (rk, rv) = next(iter(left.items())), next(iter(right.items()))
    if lk != rk:
        return op == "<>"
    a: Any = Decimal(lv) if lk == "N" else lv
    b: Any = Decimal(rv) if rk == "N" else rv
    result: bool = {
        "=": a == b,
        "<>": a != b,
        "<": a < b,
        "<=": a <= b,
        ">": a > b,
        ">=": a >= b,
    }[op]
    return result


def condition(text: str | None, item: Item, names: dict[str, str], values: dict[str, Any]) -> bool:
    """Whether ``item`` (empty: absent) meets the condition ``text`` (None: always)."""
    if not text:
        return True
    expr = _Expr(text, names, values)
    result = _or(expr, item)
    if expr.peek() is not None:
        raise _validation(f"trailing {expr.peek()!r} in condition")
    return result


def _or(expr: _Expr, item: Item) -> bool:
    result = _and(expr, item)
    while (expr.peek() or "").upper() == "OR":
        expr.take()
        right = _and(expr, item)
        result = result or right
    return result


def _and(expr: _Expr, item: Item) -> bool:
    result = _not(expr, item)
    while (expr.peek() or "").upper() == "AND":
        expr.take()
        right = _not(expr, item)
        result = result and right
    return result


def _not(expr: _Expr, item: Item) -> bool:
    if (expr.peek() or "").upper() == "NOT":
        expr.take()
        return not _not(expr, item)
    return _primary(expr, item)


def _primary(expr: _Expr, item: Item) -> bool:
    token = expr.peek() or ""
    if token == "(":
        expr.take()
        result = _or(expr, item)
        expr.take(")")
        return result
    lowered = token.lower()
    if lowered in ("attribute_exists", "attribute_not_exists"):
        expr.take()
        expr.take("(")
        path = expr.name(expr.take())
        expr.take(")")
        return (path in item) == (lowered == "attribute_exists")
    if lowered == "begins_with":
        expr.take()
        expr.take("(")
        left = expr.operand(item)
        expr.take(",")
        right = expr.operand(item)
        expr.take(")")
        return bool(left and right and "S" in left and "S" in right and left["S"].startswith(right["S"]))
    left = expr.operand(item)
    op = expr.take()
    if op not in ("=", "<>", "<", "<=", ">", ">="):
        raise _validation(f"unsupported comparator {op!r}")
    right = expr.operand(item)
    return _compare(left, op, right)


def apply_update(text: str, item: Item, names: dict[str, str], values: dict[str, Any]) -> Item:
    """``item`` (a copy) after the update expression ``text``."""
    out = {k: dict(v) for k, v in item.items()}
    expr = _Expr(text, names, values)
    while expr.peek() is not None:
        clause = expr.take().upper()
        if clause not in ("SET", "ADD", "REMOVE"):
            raise _validation(f"unsupported clause {clause}")
        while True:
            _action(clause, expr, item, out)
            if expr.peek() != ",":
                break
            expr.take(",")
    return out


def _action(clause: str, expr: _Expr, before: Item, out: Item) -> None:
    path = expr.name(expr.take())
    if clause == "REMOVE":
        out.pop(path, None)
        return
    if clause == "SET":
        expr.take("=")
        value = expr.operand(before)
        if expr.peek() in ("+", "-"):
            sign = expr.take()
            other = _number(expr.operand(before))
            value = _n(_number(value) + other if sign == "+" else _number(value) - other)
        if value is None:
            raise _validation(f"SET {path}: the operand refers to a missing attribute")
        out[path] = value
        return
    value = expr.operand(before)  # ADD
    if value is None or "N" not in value:
        raise _validation("ADD supports numbers only here")
    current = out.get(path)
    out[path] = _n((_number(current) if current is not None else Decimal(0)) + Decimal(value["N"]))


# ------------------------------------------------------------------------------------- errors


class _ModelError(Exception):
    def __init__(self, code: str, message: str, **fields: Any) -> None:
        super().__init__(message)
        self.code = code
        self.fields = fields

    def client_error(self, operation: str) -> awsjson.ClientError:
        response = {
            "Error": {"Code": self.code, "Message": str(self)},
            "ResponseMetadata": {"HTTPStatusCode": 400},
            **self.fields,
        }
        cls: type[awsjson.ClientError] = getattr(awsjson, self.code, awsjson.ClientError)
        return cls(response, operation)


def _cancelled(reasons: list[dict[str, Any]]) -> _ModelError:
    return _ModelError("TransactionCanceledException", "Transaction cancelled", CancellationReasons=reasons)


def _validation(message: str) -> _ModelError:
    return _ModelError("ValidationException", message)


_THROTTLING = frozenset({"ProvisionedThroughputExceededException", "ThrottlingException"})
_CLIENT_ATTEMPTS = 3  # botocore's standard mode
_CLIENT_THROTTLE_BASE_S = 1.0  # botocore (and awsjson): rand * min(1 s * 2^(attempt-1), 20 s)


# ------------------------------------------------------------------------------------- model


class _Bucket:
    __slots__ = ("last", "tokens")

    def __init__(self, tokens: float) -> None:
        self.tokens = tokens
        self.last = 0.0


class ModelDynamoDB:
    """One table's items and limits (shared by every ``ModelClient`` of a simulation)."""

    def __init__(
        self,
        sim: Sim,
        *,
        latency: Latency | None = None,
        wcu_per_s: float = 1000.0,
        rcu_per_s: float = 3000.0,
        burst_s: float = 0.25,
        seed: int = 2,
    ) -> None:
        self.sim = sim
        self.latency = latency or Latency()
        self.wcu_per_s = wcu_per_s
        self.rcu_per_s = rcu_per_s
        self.burst_s = burst_s
        self.random = random.Random(seed)
        self.items: dict[tuple[str, str], Item] = {}
        self.stats = Stats()
        self._held: dict[tuple[str, str], float] = {}  # item -> held by a transaction until
        self._buckets: dict[tuple[str, str], _Bucket] = {}

    # ------------------------------------------------------------------------- capacity

    def _bucket(self, kind: str, partition: str) -> _Bucket:
        rate = self.wcu_per_s if kind.endswith("w") else self.rcu_per_s
        bucket = self._buckets.get((kind, partition))
        if bucket is None:
            bucket = self._buckets[(kind, partition)] = _Bucket(rate * self.burst_s)
            bucket.last = self.sim.now
        bucket.tokens = min(rate * self.burst_s, bucket.tokens + (self.sim.now - bucket.last) * rate)
        bucket.last = self.sim.now
        return bucket

    def _charge(self, needs: list[tuple[str, str, float]]) -> bool:
        """Take every (kind, partition, units) or none: False when one bucket is short."""
        merged: Counter[tuple[str, str]] = Counter()
        for kind, partition, units in needs:
            merged[(kind, partition)] += units  # type: ignore[assignment]
        buckets = {key: self._bucket(*key) for key in merged}
        if any(buckets[key].tokens < units for key, units in merged.items()):
            return False
        for key, units in merged.items():
            buckets[key].tokens -= units
            if key[0].endswith("w"):
                self.stats.write_units += units
        return True

    def _write_needs(
        self, key: tuple[str, str], before: Item | None, after: Item | None, transactional: bool
    ) -> list[tuple[str, str, float]]:
        size = max(item_bytes(before or {}), item_bytes(after or {}))
        units = max(1, -(-size // 1024)) * (2 if transactional else 1)
        needs: list[tuple[str, str, float]] = [("w", key[0], float(units))]
        for image in {id(x): x for x in (before, after) if x and "gsi1pk" in x}.values():
            needs.append(("gw", image["gsi1pk"]["S"], float(max(1, -(-item_bytes(image) // 1024)))))
        return needs

    def _held_now(self, key: tuple[str, str]) -> bool:
        until = self._held.get(key)
        return until is not None and until > self.sim.now

    # ---------------------------------------------------------------------------- writes

    def write(self, kind: str, params: dict[str, Any], service_s: float) -> dict[str, Any]:
        """One PutItem, UpdateItem or DeleteItem, at the current (arrival) time."""
        key = _key_of(params.get("Item") or params["Key"])
        before = self.items.get(key)
        after = self._after(kind, params, before)
        if self._held_now(key):
            self.stats.conflicts += 1
            raise _ModelError("TransactionConflictException", "Transaction is ongoing for the item")
        if not self._charge(self._write_needs(key, before, after, False)):
            raise _ModelError(
                "ProvisionedThroughputExceededException", "Rate of requests exceeds the throughput"
            )
        names = params.get("ExpressionAttributeNames") or {}
        values = params.get("ExpressionAttributeValues") or {}
        if not condition(params.get("ConditionExpression"), before or {}, names, values):
            self.stats.condition_failures += 1
            extra: dict[str, Any] = {}
            if params.get("ReturnValuesOnConditionCheckFailure") == "ALL_OLD" and before:
                extra["Item"] = before
            raise _ModelError("ConditionalCheckFailedException", "The conditional request failed", **extra)
        self._store(key, after)
        return self._returned(params.get("ReturnValues"), before, after)

    def _after(self, kind: str, params: dict[str, Any], before: Item | None) -> Item | None:
        if kind == "Delete":
            return None
        if kind == "Put":
            return {k: dict(v) for k, v in params["Item"].items()}
        if kind == "ConditionCheck":
            return before
        base = before or dict(params["Key"])
        return apply_update(
            params["UpdateExpression"],
            base,
            params.get("ExpressionAttributeNames") or {},
            params.get("ExpressionAttributeValues") or {},
        )

    def _store(self, key: tuple[str, str], after: Item | None) -> None:
        if after is None:
            self.items.pop(key, None)
        else:
            self.items[key] = after

    @staticmethod
    def _returned(mode: str | None, before: Item | None, after: Item | None) -> dict[str, Any]:
        if mode == "ALL_OLD" and before:
            return {"Attributes": before}
        if mode in ("ALL_NEW", "UPDATED_NEW") and after:
            return {"Attributes": after}
        return {}

    def transact(self, params: dict[str, Any], service_s: float) -> dict[str, Any]:
        """One TransactWriteItems, all or nothing, at the current (arrival) time: refused for a
        conflict, else for throughput, else for a failed condition; else applied and held."""
        entries = []
        for entry in params["TransactItems"]:
            ((kind, body),) = entry.items()
            entries.append((kind, body, _key_of(body.get("Item") or body["Key"])))
        if len({key for _, _, key in entries}) != len(entries):
            raise _validation("Transaction request cannot include multiple operations on one item")
        reasons: list[dict[str, Any]] = [{"Code": "None"} for _ in entries]
        held = [i for i, (_, _, key) in enumerate(entries) if self._held_now(key)]
        if held:
            self.stats.conflicts += 1
            for i in held:
                reasons[i] = {"Code": "TransactionConflict", "Message": "Transaction is ongoing for the item"}
            raise _cancelled(reasons)
        afters = [
            (key, self.items.get(key), self._after(kind, body, self.items.get(key)))
            for kind, body, key in entries
        ]
        needs = [
            need
            for (kind, _, _), (key, before, after) in zip(entries, afters, strict=True)
            if kind != "ConditionCheck"
            for need in self._write_needs(key, before, after, True)
        ]
        if not self._charge(needs):
            short = self._short(needs)
            hit = [i for i, (_, _, key) in enumerate(entries) if key[0] == short] or [0]
            for i in hit:
                reasons[i] = {"Code": "ThrottlingError", "Message": "Throughput exceeds the current capacity"}
            raise _cancelled(reasons)
        for i, (_, body, _) in enumerate(entries):
            before = afters[i][1]
            if not condition(
                body.get("ConditionExpression"),
                before or {},
                body.get("ExpressionAttributeNames") or {},
                body.get("ExpressionAttributeValues") or {},
            ):
                reasons[i] = {"Code": "ConditionalCheckFailed", "Message": "The conditional request failed"}
                if body.get("ReturnValuesOnConditionCheckFailure") == "ALL_OLD" and before:
                    reasons[i]["Item"] = before
        if any(r["Code"] != "None" for r in reasons):
            self.stats.condition_failures += 1
            raise _cancelled(reasons)
        hold_until = self.sim.now + service_s * self.latency.hold_share
        for key, _, after in afters:
            self._store(key, after)
            self._held[key] = hold_until
        return {}

    def _short(self, needs: list[tuple[str, str, float]]) -> str:
        """The base partition (or, for an index, the first item's) whose bucket was short."""
        merged: Counter[tuple[str, str]] = Counter()
        for kind, partition, units in needs:
            merged[(kind, partition)] += units  # type: ignore[assignment]
        for (kind, partition), units in merged.items():
            if self._bucket(kind, partition).tokens < units and kind == "w":
                return partition
        return needs[0][1]

    # ----------------------------------------------------------------------------- reads

    def read(self, keys: list[tuple[str, str]], consistent: bool) -> list[Item]:
        found = [self.items[k] for k in keys if k in self.items]
        units = sum(max(1, -(-item_bytes(i) // 4096)) * (1.0 if consistent else 0.5) for i in found) or 0.5
        partitions = {k[0] for k in keys}
        if not self._charge([("r", p, units / max(1, len(partitions))) for p in partitions]):
            raise _ModelError(
                "ProvisionedThroughputExceededException", "Rate of requests exceeds the throughput"
            )
        return [{k: dict(v) for k, v in i.items()} for i in found]

    def query(self, params: dict[str, Any]) -> list[Item]:
        names = params.get("ExpressionAttributeNames") or {}
        values = params.get("ExpressionAttributeValues") or {}
        text = params["KeyConditionExpression"]
        index = params.get("IndexName")
        sort = "gsi1sk" if index else "sk"
        partition = "gsi1pk" if index else "pk"
        # The key condition starts with "<partition> = :v": only that partition's items are read.
        first = _tokens(text)[:3]
        wanted = (
            values.get(first[2]) if len(first) == 3 and first[0] == partition and first[1] == "=" else None
        )
        found = [
            i
            for i in self.items.values()
            if (wanted is None or i.get(partition) == wanted) and condition(text, i, names, values)
        ]
        found.sort(key=lambda i: str(i.get(sort, {}).get("S", "")))
        return [{k: dict(v) for k, v in i.items()} for i in found]


def _arrive(answer: list[Any], handle: Callable[[float], dict[str, Any]], service: float) -> None:
    try:
        answer.append(handle(service))
    except _ModelError as exc:
        answer.append(exc)


def _outcome(result: Any) -> str:
    """What a call's answer was, for ``Sim.outcomes``."""
    if not isinstance(result, _ModelError):
        return "ok"
    codes = {r.get("Code") for r in result.fields.get("CancellationReasons", [])} | {result.code}
    if codes & {"TransactionConflict", "TransactionConflictException"}:
        return "conflict"
    if codes & {"ThrottlingError", *_THROTTLING}:
        return "throttled"
    if codes & {"ConditionalCheckFailed", "ConditionalCheckFailedException"}:
        return "condition"
    return "error"


def _key_of(item: dict[str, Any]) -> tuple[str, str]:
    return (str(item["pk"]["S"]), str(item["sk"]["S"]))


class _Exceptions:
    """``client.exceptions``: the error classes callers catch by name, as on boto3's client."""

    ClientError = awsjson.ClientError
    ConditionalCheckFailedException = awsjson.ConditionalCheckFailedException
    TransactionCanceledException = awsjson.TransactionCanceledException
    TransactionConflictException = awsjson.TransactionConflictException
    ProvisionedThroughputExceededException = awsjson.ProvisionedThroughputExceededException
    ResourceNotFoundException = awsjson.ResourceNotFoundException


class ModelClient:
    """The DynamoDB client methods the gateway calls, answered by a ``ModelDynamoDB`` on its
    ``Sim``'s virtual clock (call them from a task). Errors are ``switchboard.infra.awsjson``'s classes,
    with botocore's ``response`` shape."""

    def __init__(self, model: ModelDynamoDB) -> None:
        self.model = model
        self.sim = model.sim
        self.exceptions = _Exceptions()
        self._listeners: list[Callable[[str], None]] = []

    def on_call(self, listener: Callable[[str], None]) -> None:
        self._listeners.append(listener)

    def _call(self, operation: str, handle: Callable[[float], dict[str, Any]]) -> dict[str, Any]:
        """One call: the request reaches the service one hop later, where ``handle`` decides it
        (in the scheduler, at that virtual time); the answer comes back after the service time
        and another hop. Throttled single calls are retried as the AWS client does."""
        model = self.model
        for attempt in range(1, _CLIENT_ATTEMPTS + 1):
            model.stats.calls[operation] += 1
            self.sim.counted()
            for listener in self._listeners:
                listener(operation)
            hop = model.latency.one_way_s
            service = model.latency.service(operation, model.random)
            answer: list[Any] = []
            self.sim.at(self.sim.now + hop, functools.partial(_arrive, answer, handle, service))
            self.sim.wait(hop + service + hop)
            result = answer[0]
            self.sim.outcome(operation, _outcome(result))
            if not isinstance(result, _ModelError):
                return dict(result)
            if result.code in _THROTTLING or any(
                r.get("Code") == "ThrottlingError" for r in result.fields.get("CancellationReasons", [])
            ):
                model.stats.throttles += 1
                if result.code in _THROTTLING and attempt < _CLIENT_ATTEMPTS:
                    self.sim.wait(
                        model.random.random() * min(_CLIENT_THROTTLE_BASE_S * 2 ** (attempt - 1), 20.0)
                    )
                    continue
            raise result.client_error(operation) from None
        raise AssertionError("unreachable")

    # ----------------------------------------------------------------------- operations

    def transact_write_items(self, **params: Any) -> dict[str, Any]:
        return self._call("TransactWriteItems", lambda s: self.model.transact(params, s))

    def update_item(self, **params: Any) -> dict[str, Any]:
        return self._call("UpdateItem", lambda s: self.model.write("Update", params, s))

    def put_item(self, **params: Any) -> dict[str, Any]:
        return self._call("PutItem", lambda s: self.model.write("Put", params, s))

    def delete_item(self, **params: Any) -> dict[str, Any]:
        return self._call("DeleteItem", lambda s: self.model.write("Delete", params, s))

    def get_item(self, **params: Any) -> dict[str, Any]:
        def handle(_: float) -> dict[str, Any]:
            found = self.model.read([_key_of(params["Key"])], bool(params.get("ConsistentRead")))
            return {"Item": found[0]} if found else {}

        return self._call("GetItem", handle)

    def batch_get_item(self, **params: Any) -> dict[str, Any]:
        def handle(_: float) -> dict[str, Any]:
            out: dict[str, list[Item]] = {}
            for table, request in params["RequestItems"].items():
                out[table] = self.model.read([_key_of(k) for k in request["Keys"]], False)
            return {"Responses": out, "UnprocessedKeys": {}}

        return self._call("BatchGetItem", handle)

    def query(self, **params: Any) -> dict[str, Any]:
        return self._call("Query", lambda _: {"Items": self.model.query(params)})

    def scan(self, **params: Any) -> dict[str, Any]:
        return {"Items": [{k: dict(v) for k, v in i.items()} for i in self.model.items.values()]}


def items_under(model: ModelDynamoDB, prefix: str) -> Iterator[Item]:
    """Every stored item whose ``pk`` starts with ``prefix`` (inspection, no capacity)."""
    for (pk, _), item in model.items.items():
        if pk.startswith(prefix):
            yield item
