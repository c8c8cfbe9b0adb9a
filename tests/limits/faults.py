"""DynamoDB faults at the ledger's seam: a wrapper around the moto-backed client.

moto serialises every call and never conflicts or throttles, so these tests put the faults in
front of it, where the ledger calls (``ledger.table.client``): transaction conflicts
(``TransactionCanceledException`` with ``TransactionConflict`` reasons), throttling
(``ProvisionedThroughputExceededException``, ``ThrottlingException``), a blackhole (the call
blocks, then fails as the AWS client's read timeout would, or goes through late), and a lost
answer (the call commits, then the caller sees a transport error).

``install(ledger)`` swaps it in and returns it; ``faults.add(...)`` arms a fault. When the
gateway's own fault layer (``switchboard.devtools.awsfaults``) lands, ``install`` is the one
place to change.
"""

from __future__ import annotations

import random
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from switchboard.infra.awsjson import TransportError
from switchboard.limits.ledger import Ledger

__all__ = ["Fault", "FaultyClient", "admission", "install", "settlement"]

Params = dict[str, Any]


def settlement(params: Params) -> bool:
    """A settlement (or refund) transaction: it starts with the reservation's Delete."""
    items = params.get("TransactItems") or [{}]
    return "Delete" in items[0]


def admission(params: Params) -> bool:
    """An admission transaction: it starts with the reservation's Put."""
    items = params.get("TransactItems") or [{}]
    return "Put" in items[0]


@dataclass
class Fault:
    operation: str  # the client method: transact_write_items, update_item, ...
    kind: str  # conflict | throttle | pte | blackhole | late | lost
    rate: float = 1.0
    times: int | None = None  # at most this many injections
    when: Callable[[Params], bool] | None = None
    block_s: float = 30.0  # blackhole / late: how long the call hangs (unless released)
    injected: int = 0


class FaultyClient:
    """The wrapped client's methods, with the armed faults in front of them (seeded, thread-safe)."""

    def __init__(self, inner: Any, seed: int = 7) -> None:
        self._inner = inner
        self._faults: list[Fault] = []
        self._random = random.Random(seed)
        self._lock = threading.Lock()
        self._released = threading.Event()
        self.calls: Counter[str] = Counter()

    def add(self, operation: str, kind: str, **options: Any) -> Fault:
        fault = Fault(operation, kind, **options)
        with self._lock:
            self._faults.append(fault)
        return fault

    def clear(self) -> None:
        """Disarm every fault and let blocked calls go."""
        with self._lock:
            self._faults.clear()
        self._released.set()

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._inner, name)
        if not callable(attr) or name.startswith("_") or name in {"exceptions", "meta", "on_call", "close"}:
            return attr

        def call(**params: Any) -> Any:
            self.calls[name] += 1
            fault = self._draw(name, params)
            if fault is None:
                return attr(**params)
            return self._inject(fault, name, attr, params)

        return call

    def _draw(self, operation: str, params: Params) -> Fault | None:
        with self._lock:
            for fault in self._faults:
                if fault.operation != operation or (fault.when is not None and not fault.when(params)):
                    continue
                if fault.times is not None and fault.injected >= fault.times:
                    continue
                if self._random.random() < fault.rate:
                    fault.injected += 1
                    return fault
        return None

    def _inject(self, fault: Fault, operation: str, attr: Callable[..., Any], params: Params) -> Any:
        op = "".join(part.title() for part in operation.split("_"))
        if fault.kind == "conflict":
            count = len(params.get("TransactItems") or [None])
            reasons = [{"Code": "None"}] * (count - 1) + [{"Code": "TransactionConflict"}]
            raise self._error(
                "TransactionCanceledException", op, "Transaction cancelled", CancellationReasons=reasons
            )
        if fault.kind == "pte":
            raise self._error("ProvisionedThroughputExceededException", op, "Rate of requests exceeds")
        if fault.kind == "throttle":
            raise self._error("ThrottlingException", op, "Rate of requests exceeds the allowed throughput")
        if fault.kind == "blackhole":  # no answer: what the AWS client raises after its read timeouts
            self._released.wait(fault.block_s)
            raise TransportError(f"{op}: no answer (blackhole)")
        if fault.kind == "late":  # no answer for a while, then the call goes through
            self._released.wait(fault.block_s)
            return attr(**params)
        if fault.kind == "lost":  # applied, but the answer never reached the caller
            attr(**params)
            raise TransportError(f"{op}: connection reset after the request was sent")
        raise ValueError(f"unknown fault {fault.kind!r}")

    def _error(self, code: str, operation: str, message: str, **fields: Any) -> Exception:
        """An error of the wrapped client's own classes (boto3's or switchboard.infra.awsjson's)."""
        response = {"Error": {"Code": code, "Message": message}, "ResponseMetadata": {}, **fields}
        exceptions = self._inner.exceptions
        cls = getattr(exceptions, code, None) or exceptions.ClientError
        error: Exception = cls(response, operation)
        return error


def install(ledger: Ledger, seed: int = 7) -> FaultyClient:
    """Put a ``FaultyClient`` between ``ledger`` (and everything sharing its table) and DynamoDB."""
    faulty = FaultyClient(ledger.table.client, seed)
    ledger.table.client = faulty
    return faulty
