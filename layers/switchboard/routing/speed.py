"""Measured speed per target, for the ``fastest`` strategy: shared across instances, written rarely.

Each served request is an observation of its target (a lifecycle hook's ``settle``; only targets a
``fastest`` route planned with on this instance, so a gateway without one writes nothing): the time to
first token (the successful attempt's time to its first output; a buffered answer's whole latency
stands in) and, for a stream, the output tokens per second after the first. Each instance folds
its observations into a local window per target, and at most once every ``flush_s`` seconds (not
per request) folds each window into the target's one DynamoDB item, an exponentially weighted
moving average (EWMA) written under an optimistic version check, and reads back the items of the
targets it plans with. So every instance sees every instance's measures within about ``flush_s``,
and the table takes one write per target per instance per ``flush_s`` at most: no hot item.

Folding a window of ``c`` observations with mean ``m`` into an average ``E`` gives
``E * (1 - a)**c + m * (1 - (1 - a)**c)``: the same weight ``c`` separate updates would give
the window, with ``a`` the per-observation smoothing (``alpha``).

A target with no measure younger than ``stale_s`` is cold: ``fastest`` puts it after the measured
ones, and with probability ``explore`` tries a cold target (or another) first, so a target that
recovered, or was never tried, is measured again. Random source and clocks are injectable.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Protocol

from switchboard.core.attempts import AttemptRecord
from switchboard.core.schemas import ChatCompletionRequest, Usage
from switchboard.routing.decide import Speed
from switchboard.routing.planner import PlannedTarget

__all__ = ["Measure", "Settled", "SpeedBoard", "SpeedStore", "Window", "fold"]

log = logging.getLogger("switchboard.routing")

_ITEM_TTL_S = 7 * 86400  # an item no instance updates for a week goes (DynamoDB TTL)


class Settled(Protocol):
    """What the board reads of a settled request: the ``exchange.Exchange`` (a layer above, so
    described here rather than imported)."""

    @property
    def outcome(self) -> str: ...
    @property
    def target(self) -> PlannedTarget | None: ...
    @property
    def attempts(self) -> list[AttemptRecord]: ...
    @property
    def chat(self) -> ChatCompletionRequest: ...
    @property
    def usage(self) -> Usage | None: ...
    @property
    def first_token_at(self) -> float | None: ...
    @property
    def finished_at(self) -> float | None: ...


@dataclass(slots=True)
class Window:
    """Observations not yet folded into the shared item."""

    count: int = 0
    ttft_sum: float = 0.0
    tps_count: int = 0
    tps_sum: float = 0.0

    def add(self, ttft_s: float, tokens_per_s: float | None) -> None:
        self.count += 1
        self.ttft_sum += ttft_s
        if tokens_per_s is not None:
            self.tps_count += 1
            self.tps_sum += tokens_per_s


@dataclass(frozen=True, slots=True)
class Measure:
    """A target's shared averages as last read or written, and when they were last updated."""

    ttft_s: float
    tokens_per_s: float | None
    samples: int
    at: float  # wall time of the last update
    version: int = 0


def _fold_value(old: float | None, count: int, mean: float, alpha: float) -> float:
    if old is None or count <= 0:
        return mean if count > 0 else (old or 0.0)
    keep = (1 - alpha) ** count
    return old * keep + mean * (1 - keep)


def fold(old: Measure | None, window: Window, alpha: float, now: float) -> Measure:
    """``old`` with ``window`` folded in (see the module docstring)."""
    ttft = _fold_value(
        old.ttft_s if old else None, window.count, window.ttft_sum / max(1, window.count), alpha
    )
    tps = old.tokens_per_s if old else None
    if window.tps_count:
        tps = _fold_value(tps, window.tps_count, window.tps_sum / window.tps_count, alpha)
    return Measure(
        ttft, tps, (old.samples if old else 0) + window.count, now, (old.version if old else 0) + 1
    )


class SpeedStore:
    """The shared averages: one item per target in the gateway's table (``pk = speed#<target>``)."""

    def __init__(self, table: str, client: Callable[[], Any]) -> None:
        self.table = table
        self._client = client

    @staticmethod
    def key(label: str) -> dict[str, Any]:
        return {"pk": {"S": f"speed#{label}"}, "sk": {"S": "ewma"}}

    def read(self, label: str) -> Measure | None:
        found = self._client().get_item(TableName=self.table, Key=self.key(label), ConsistentRead=True)
        item = found.get("Item")
        if not item:
            return None
        return Measure(
            float(item["ttft"]["N"]),
            float(item["tps"]["N"]) if "tps" in item else None,
            int(item["n"]["N"]),
            float(item["at"]["N"]),
            int(item["v"]["N"]),
        )

    def write(self, label: str, new: Measure, expected_version: int) -> bool:
        """Put ``new`` if the item is still at ``expected_version`` (0: absent); False if not."""
        item = {
            **self.key(label),
            "ttft": {"N": _num(new.ttft_s)},
            "n": {"N": str(new.samples)},
            "at": {"N": _num(new.at)},
            "v": {"N": str(new.version)},
            "ttl": {"N": str(int(new.at) + _ITEM_TTL_S)},
        }
        if new.tokens_per_s is not None:
            item["tps"] = {"N": _num(new.tokens_per_s)}
        condition = "attribute_not_exists(pk)" if expected_version == 0 else "v = :v"
        kwargs: dict[str, Any] = {"TableName": self.table, "Item": item, "ConditionExpression": condition}
        if expected_version:
            kwargs["ExpressionAttributeValues"] = {":v": {"N": str(expected_version)}}
        try:
            self._client().put_item(**kwargs)
        except Exception as exc:
            if "ConditionalCheckFailed" in type(exc).__name__ or "ConditionalCheckFailed" in str(exc):
                return False
            raise
        return True

    def fold_in(self, label: str, window: Window, alpha: float, now: float, tries: int = 3) -> Measure | None:
        """Fold ``window`` into the shared item (read, fold, conditional put; again on a race)."""
        for _ in range(tries):
            old = self.read(label)
            new = fold(old, window, alpha, now)
            if self.write(label, new, old.version if old else 0):
                return new
        return None


def _num(value: float) -> str:
    return str(Decimal(repr(round(value, 6))))


class SpeedBoard:
    """The local view of every target's speed (``Speeds`` for the planner) and the hook that
    feeds it. ``store`` None keeps it local to this instance (tests, the offline CLI)."""

    def __init__(
        self,
        store: SpeedStore | None = None,
        *,
        alpha: float = 0.2,
        flush_s: float = 10.0,
        stale_s: float = 300.0,
        explore: float = 0.05,
        clock: Callable[[], float] = time.time,
        timeout_s: float = 1.0,
    ) -> None:
        self.store = store
        self.alpha, self.flush_s, self.stale_s, self.explore = alpha, flush_s, stale_s, explore
        self.clock = clock
        self.timeout_s = timeout_s
        self.shared: dict[str, Measure] = {}  # as last read or written
        self.windows: dict[str, Window] = {}  # not yet folded into the shared item
        self.wanted: set[str] = set()  # targets planned with: read their items at the next sync
        self._last_sync = float("-inf")
        self._task: asyncio.Task[None] | None = None

    # ---------------------------------------------------------------- the planner's view

    def speed(self, label: str) -> Speed | None:
        """The target's speed: the shared average with this instance's unshared window folded
        in; None when nothing younger than ``stale_s`` is known (cold)."""
        self.wanted.add(label)
        now = self.clock()
        shared = self.shared.get(label)
        if shared is not None and now - shared.at > self.stale_s:
            shared = None
        window = self.windows.get(label)
        if window is not None and window.count:
            shared = fold(shared, window, self.alpha, now)
        if shared is None:
            return None
        return Speed(shared.ttft_s, shared.tokens_per_s)

    def observe(self, label: str, ttft_s: float, tokens_per_s: float | None = None) -> None:
        self.windows.setdefault(label, Window()).add(ttft_s, tokens_per_s)

    def seed(self, label: str, ttft_s: float, tokens_per_s: float | None = None, samples: int = 1) -> None:
        """Set a target's shared average directly (tests, and the CLI's ``--speed``)."""
        self.shared[label] = Measure(ttft_s, tokens_per_s, samples, self.clock())

    # ---------------------------------------------------------------- the hook

    async def admit(self, ex: object) -> None:
        return None

    async def settle(self, ex: Settled) -> None:
        """One observation per answered request on a target some ``fastest`` route planned with
        here (others are never written), then a sync if one is due."""
        if ex.outcome == "ok" and ex.target is not None and ex.attempts and ex.target.label in self.wanted:
            served = ex.attempts[-1]
            ttft_s = max(0.0, served.latency_ms / 1000)
            self.observe(ex.target.label, ttft_s, _throughput(ex))
        self.poke()

    def poke(self) -> None:
        """Start a sync in the background if the last began ``flush_s`` ago or more (bounded rate)."""
        if self.store is None or self.clock() - self._last_sync < self.flush_s:
            return
        if self._task is not None and not self._task.done():
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        self._last_sync = self.clock()
        self._task = loop.create_task(self.sync())

    async def drain(self, timeout_s: float = 2.0) -> None:
        """At shutdown: let the sync in flight finish (bounded), so no task is left pending."""
        task = self._task
        if task is not None and not task.done():
            try:
                await asyncio.wait_for(asyncio.shield(task), timeout_s)
            except Exception:
                task.cancel()

    async def sync(self) -> None:
        """Fold every window into its shared item, and read back the items of the other targets
        this instance planned with or knows. A failure keeps the window for the next sync (logged)."""
        if self.store is None:
            return
        store, now = self.store, self.clock()
        windows, self.windows = self.windows, {}
        for label, window in windows.items():
            try:
                new = await asyncio.wait_for(
                    asyncio.to_thread(store.fold_in, label, window, self.alpha, now), self.timeout_s
                )
            except Exception:
                log.warning("speed of %s not shared this time", label, exc_info=True)
                new = None
            if new is None:
                self.windows.setdefault(label, Window())
                kept = self.windows[label]
                kept.count += window.count
                kept.ttft_sum += window.ttft_sum
                kept.tps_count += window.tps_count
                kept.tps_sum += window.tps_sum
            else:
                self.shared[label] = new
        for label in sorted((self.wanted | set(self.shared)) - set(windows)):
            try:
                found = await asyncio.wait_for(asyncio.to_thread(store.read, label), self.timeout_s)
            except Exception:
                log.warning("speed of %s unreadable", label, exc_info=True)
                continue
            if found is not None:
                self.shared[label] = found


def _throughput(ex: Settled) -> float | None:
    """A stream's output tokens per second after its first token (None for a buffered answer,
    whose generation time is not apart from its first token)."""
    if not ex.chat.stream or ex.usage is None or ex.first_token_at is None or ex.finished_at is None:
        return None
    elapsed = ex.finished_at - ex.first_token_at
    tokens = ex.usage.completion_tokens
    if elapsed <= 0 or tokens < 2:
        return None
    return tokens / elapsed


def seeded(seed: int) -> Callable[[], float]:
    """A seeded random source (tests)."""
    return random.Random(seed).random
