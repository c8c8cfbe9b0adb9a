"""AWS faults on demand, inside the gateway's AWS client: for tests, soaks and simulations only.

moto answers every call, one at a time, and never with a transaction conflict or a throttle. Real
DynamoDB, SSM and Secrets Manager do, and sometimes reset a connection or stop answering. This
module makes ``switchboard.infra.awsjson``'s client meet those faults at a chosen rate, per attempt,
below its retries: an injected throttle is retried and backed off exactly like a real one, and
counts against the retry quota and the call's deadline.

Nothing here is active unless a test installs it or ``SWITCHBOARD_AWS_FAULTS`` is set. (The boto3
fallback client of ``switchboard.infra.aws`` is not covered: the light client is what serves.)

Faults (``Rule.fault``), each decided per attempt with probability ``rate``:

``conflict``    ``TransactWriteItems``: 400 ``TransactionCanceledException`` with one
                ``CancellationReasons`` entry per ``TransactItems`` entry, as DynamoDB answers: one
                (chosen by the seeded generator) ``{"Code": "TransactionConflict", "Message":
                "Transaction is ongoing for the item"}``, the others ``{"Code": "None"}``. Not
                retried by the client (botocore does not either): the caller reads the reasons.
                ``reason="ThrottlingError"``: that code instead (a throttled transaction).
                ``PutItem``/``UpdateItem``/``DeleteItem``: 400 ``TransactionConflictException``.
                Other operations: never.
``throttle``    400 ``ThrottlingException`` (any service).
``throughput``  400 ``ProvisionedThroughputExceededException`` (DynamoDB only).
``error500``    500 ``InternalServerError`` (Secrets Manager: ``InternalServiceError``).
``latency``     ``latency_s`` more before the real exchange. Past the attempt's read timeout (or
                its deadline) the attempt times out there, as a slow server makes it.
``reset``       the connection is reset: ``phase="after"`` (default) once the service has
                handled the request, so its effect stands but the answer is lost (a retried
                ``UpdateItem ADD`` counts twice, as it would on DynamoDB; a retried
                ``TransactWriteItems`` with the same ``ClientRequestToken`` is answered with
                success and not applied again, as DynamoDB does and moto does not);
                ``phase="before"``: it never reached the service.
``blackhole``   the attempt goes to a loopback socket that accepts and never answers, so the
                client's own read timeout (and deadline) end it, on a real socket.

The faults a service cannot answer are not injected, and the request goes through untouched.

In a test::

    from switchboard.devtools import awsfaults
    from switchboard.devtools.awsfaults import Rule

    with awsfaults.inject(Rule("conflict", rate=0.3, operations={"TransactWriteItems"}), seed=7) as faults:
        ...  # every awsjson client in the process (client=... for one)
    assert faults.injected[("conflict", "TransactWriteItems")] > 0

``install(faults, client=None)`` and ``uninstall(client=None)`` do the same without a block.
The process-wide form reaches clients already made (``switchboard.infra.aws.runtime_client`` caches
them), so it is the one for a gateway running in the test's process. A client's own faults (its
``interceptor``, from ``client=`` or the environment) win over the process-wide ones.
``Faults.injected`` counts the faults injected, by (fault, operation); ``Faults.attempts`` the
attempts seen, by operation. The rules are tried in order; the first that fires wins.

From the environment (a gateway subprocess in a soak), read when each client is created::

    SWITCHBOARD_AWS_FAULTS='{"seed": 7, "rules": [
        {"fault": "conflict", "rate": 0.3, "operations": ["TransactWriteItems"]},
        {"fault": "throttle", "rate": 0.05, "services": ["dynamodb"], "times": 100},
        {"fault": "blackhole", "rate": 1.0, "operations": ["GetParameter"]}]}'

A rule's keys: ``fault`` (required), ``rate`` (0 to 1, default 1), ``operations`` and
``services`` (lists; empty or absent: all), ``times`` (at most this many injections),
``latency_s``, ``phase``, ``reason``. A bare list of rules is accepted too (seed 0). Every
client made from one value shares one ``Faults`` (one generator, one count). A malformed value raises
``ValueError`` at client creation: a soak with a typo must not run without its faults.

Deterministic: with a seed, the same sequence of attempts meets the same faults.

For a fault on a real socket in front of any client (boto3's too, or a gateway subprocess pointed
at it with ``AWS_ENDPOINT_URL``), ``FaultProxy`` is a TCP proxy to moto whose ``mode`` a test
switches at any time: ``"pass"``, ``"blackhole"`` (accepts and reads, never forwards nor answers),
``"reset"`` (resets each connection as it sends) or ``"reset_after"`` (forwards the request, then
resets the connection instead of relaying the answer)::

    with awsfaults.FaultProxy(moto_url) as proxy:
        env["AWS_ENDPOINT_URL"] = proxy.url
        proxy.mode = "blackhole"
"""

from __future__ import annotations

import errno
import functools
import json
import os
import random
import selectors
import socket
import struct
import threading
import time
import uuid
import zlib
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from typing import Any, Self
from urllib.parse import urlsplit

from switchboard.infra import awsjson

__all__ = [
    "ENV",
    "FAULTS",
    "FaultProxy",
    "Faults",
    "Rule",
    "from_env",
    "inject",
    "install",
    "parse",
    "uninstall",
]

ENV = awsjson.FAULTS_ENV  # SWITCHBOARD_AWS_FAULTS
FAULTS = ("conflict", "throttle", "throughput", "error500", "latency", "reset", "blackhole")
_DDB_WRITES = frozenset({"PutItem", "UpdateItem", "DeleteItem"})
_REASONS = {  # a cancelled transaction's reasons, with DynamoDB's messages
    "TransactionConflict": "Transaction is ongoing for the item",
    "ThrottlingError": (
        "Throughput exceeds the current capacity of your table or index. DynamoDB is automatically "
        "scaling your table or index so please try again shortly."
    ),
}


@dataclass(frozen=True, slots=True)
class Rule:
    """One fault, at ``rate`` per attempt, for ``operations`` of ``services`` (empty: all)."""

    fault: str
    rate: float = 1.0
    operations: frozenset[str] = frozenset()
    services: frozenset[str] = frozenset()
    times: int | None = None  # at most this many injections
    latency_s: float = 0.0  # latency
    phase: str = "after"  # reset: "after" the service handled the request, or "before"
    reason: str = "TransactionConflict"  # conflict: the cancelled item's code, or "ThrottlingError"

    def __post_init__(self) -> None:
        if self.fault not in FAULTS:
            raise ValueError(f"unknown AWS fault {self.fault!r}; one of {', '.join(FAULTS)}")
        if not 0.0 <= self.rate <= 1.0:
            raise ValueError(f"fault {self.fault}: rate {self.rate} is not between 0 and 1")
        if self.phase not in ("before", "after"):
            raise ValueError(f"fault {self.fault}: phase {self.phase!r} is not 'before' or 'after'")
        if self.reason not in _REASONS:
            raise ValueError(
                f"fault {self.fault}: reason {self.reason!r} is not one of {', '.join(_REASONS)}"
            )
        if self.latency_s < 0 or (self.times is not None and self.times < 0):
            raise ValueError(f"fault {self.fault}: latency_s and times cannot be negative")
        object.__setattr__(self, "operations", frozenset(self.operations))
        object.__setattr__(self, "services", frozenset(self.services))

    def applies(self, service: str, operation: str) -> bool:
        if self.operations and operation not in self.operations:
            return False
        if self.services and service not in self.services:
            return False
        if self.fault == "conflict":
            return service == "dynamodb" and (operation == "TransactWriteItems" or operation in _DDB_WRITES)
        if self.fault == "throughput":
            return service == "dynamodb"
        return True


@dataclass(eq=False)
class Faults:
    """The rules in force, their seeded generator and what they did: an ``awsjson.Interceptor``."""

    rules: tuple[Rule, ...]
    seed: int = 0
    injected: Counter[tuple[str, str]] = field(default_factory=Counter)  # (fault, operation) -> count
    attempts: Counter[str] = field(default_factory=Counter)  # operation -> attempts seen

    def __post_init__(self) -> None:
        self.rules = tuple(self.rules)
        self._random = random.Random(self.seed)
        self._lock = threading.Lock()
        self._fired = [0] * len(self.rules)
        self._applied: set[str] = set()  # ClientRequestTokens of transactions applied, answer lost

    def pick(self, service: str, operation: str) -> Rule | None:
        """The rule that fires for this attempt, if any (and count it)."""
        with self._lock:
            self.attempts[operation] += 1
            for index, rule in enumerate(self.rules):
                if not rule.applies(service, operation):
                    continue
                if rule.times is not None and self._fired[index] >= rule.times:
                    continue
                if self._random.random() < rule.rate:
                    self._fired[index] += 1
                    self.injected[(rule.fault, operation)] += 1
                    return rule
        return None

    def choice(self, count: int) -> int:
        with self._lock:
            return self._random.randrange(count)

    def __call__(
        self, client: awsjson.Client, operation: str, body: bytes, send: awsjson.Send
    ) -> awsjson.Answer:
        token = _token(operation, body)
        if token is not None and token in self._applied:
            # DynamoDB answers a transaction it already applied, retried with the same token, with
            # success and does not apply it again; moto ignores the token, so do it here.
            with self._lock:
                self.attempts[operation] += 1
            return _answer(client, 200, {})
        rule = self.pick(client.service.name, operation)
        if rule is None:
            return send()
        if rule.fault == "reset" and rule.phase == "after":
            status, _, _ = send()  # the service handles it; its answer is lost
            if token is not None and status == 200:
                # Only a transaction that committed is answered again as done: DynamoDB runs a
                # cancelled one (a condition that failed) afresh when it is retried.
                with self._lock:
                    self._applied.add(token)
            client.drop_connection()
            raise ConnectionResetError(errno.ECONNRESET, "Connection reset by peer (injected)")
        return _FAULTS[rule.fault](self, rule, client, operation, body, send)


def _token(operation: str, body: bytes) -> str | None:
    if operation != "TransactWriteItems":
        return None
    token = json.loads(body).get("ClientRequestToken")
    return str(token) if token else None


# ------------------------------------------------------------------------------ the faults


def _answer(client: awsjson.Client, status: int, payload: Mapping[str, Any]) -> awsjson.Answer:
    data = json.dumps(payload).encode()
    headers = {
        "content-type": f"application/x-amz-json-{client.service.json_version}",
        "content-length": str(len(data)),
        "x-amzn-requestid": f"fault-{uuid.uuid4()}",
    }
    if client.service.crc32:
        headers["x-amz-crc32"] = str(zlib.crc32(data))
    return status, headers, data


def _namespace(client: awsjson.Client) -> str:
    return "com.amazonaws.dynamodb.v20120810#" if client.service.name == "dynamodb" else ""


def _conflict(
    faults: Faults, rule: Rule, client: awsjson.Client, operation: str, body: bytes, send: awsjson.Send
) -> awsjson.Answer:
    ns = _namespace(client)
    if operation != "TransactWriteItems":
        message = "Transaction is ongoing for the item"
        return _answer(client, 400, {"__type": f"{ns}TransactionConflictException", "message": message})
    items = json.loads(body).get("TransactItems") or [{}]
    conflicted = faults.choice(len(items))
    reasons: list[dict[str, str]] = [{"Code": "None"} for _ in items]
    reasons[conflicted] = {"Code": rule.reason, "Message": _REASONS[rule.reason]}
    codes = ", ".join(r["Code"] for r in reasons)
    message = f"Transaction cancelled, please refer cancellation reasons for specific reasons [{codes}]"
    return _answer(
        client,
        400,
        {
            "__type": f"{ns}TransactionCanceledException",
            "CancellationReasons": reasons,
            "Message": message,
        },
    )


def _throttle(
    faults: Faults, rule: Rule, client: awsjson.Client, operation: str, body: bytes, send: awsjson.Send
) -> awsjson.Answer:
    if client.service.name == "dynamodb":
        kind = "com.amazon.coral.availability#ThrottlingException"
        return _answer(
            client, 400, {"__type": kind, "message": "Rate of requests exceeds the allowed throughput."}
        )
    return _answer(client, 400, {"__type": "ThrottlingException", "message": "Rate exceeded"})


def _throughput(
    faults: Faults, rule: Rule, client: awsjson.Client, operation: str, body: bytes, send: awsjson.Send
) -> awsjson.Answer:
    message = (
        "The level of configured provisioned throughput for the table was exceeded. "
        "Consider increasing your provisioning level with the UpdateTable API."
    )
    kind = f"{_namespace(client)}ProvisionedThroughputExceededException"
    return _answer(client, 400, {"__type": kind, "message": message})


def _error500(
    faults: Faults, rule: Rule, client: awsjson.Client, operation: str, body: bytes, send: awsjson.Send
) -> awsjson.Answer:
    code = "InternalServiceError" if client.service.name == "secretsmanager" else "InternalServerError"
    return _answer(client, 500, {"__type": f"{_namespace(client)}{code}", "message": "Internal server error"})


def _latency(
    faults: Faults, rule: Rule, client: awsjson.Client, operation: str, body: bytes, send: awsjson.Send
) -> awsjson.Answer:
    read_s = client.socket_timeouts()[1]  # the attempt's read timeout, cut to its deadline
    if rule.latency_s >= read_s:
        time.sleep(read_s)
        client.drop_connection()
        raise TimeoutError("timed out (injected latency)")
    time.sleep(rule.latency_s)
    return send()


def _reset(
    faults: Faults, rule: Rule, client: awsjson.Client, operation: str, body: bytes, send: awsjson.Send
) -> awsjson.Answer:
    client.drop_connection()  # phase "before": it never reached the service ("after": see Faults)
    raise ConnectionResetError(errno.ECONNRESET, "Connection reset by peer (injected)")


def _blackhole(
    faults: Faults, rule: Rule, client: awsjson.Client, operation: str, body: bytes, send: awsjson.Send
) -> awsjson.Answer:
    return send(via=_sink().address)


_FAULTS = {
    "conflict": _conflict,
    "throttle": _throttle,
    "throughput": _throughput,
    "error500": _error500,
    "latency": _latency,
    "reset": _reset,
    "blackhole": _blackhole,
}


class _Sink:
    """A loopback listener that accepts connections, reads and drops what they send, and never
    answers; a connection is closed when its client closes it."""

    def __init__(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.setblocking(False)
        self.address: tuple[str, int] = self._listener.getsockname()[:2]
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._listener, selectors.EVENT_READ)
        threading.Thread(target=self._run, name="awsfaults-blackhole", daemon=True).start()

    def _run(self) -> None:
        while True:
            for key, _ in self._selector.select():
                sock: socket.socket = key.fileobj  # type: ignore[assignment]
                if sock is self._listener:
                    try:
                        conn, _ = sock.accept()
                    except OSError:
                        continue
                    conn.setblocking(False)
                    self._selector.register(conn, selectors.EVENT_READ)
                    continue
                try:
                    data = sock.recv(65536)
                except BlockingIOError:
                    continue
                except OSError:
                    data = b""
                if not data:
                    self._selector.unregister(sock)
                    sock.close()


@functools.cache
def _sink() -> _Sink:
    return _Sink()


def _reset_socket(sock: socket.socket) -> None:
    """Close ``sock`` with a TCP reset (RST), not an orderly FIN."""
    with suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


class FaultProxy:
    """A loopback TCP proxy to ``target`` (an ``http://host:port`` URL) that misbehaves on demand.

    ``mode`` (read for each chunk, so a switch applies to open connections too): ``"pass"``
    forwards both ways; ``"blackhole"`` reads what clients send and drops it; ``"reset"`` resets a
    connection when its client sends; ``"reset_after"`` forwards the client's bytes, then resets
    the connection when the answer comes instead of relaying it. ``connections`` counts accepted
    connections. A thread per direction per connection: for tests, not load."""

    MODES = ("pass", "blackhole", "reset", "reset_after")

    def __init__(self, target: str) -> None:
        parts = urlsplit(target)
        if parts.scheme != "http" or not parts.hostname or not parts.port:
            raise ValueError(f"FaultProxy needs an http://host:port target, not {target!r}")
        self._target = (parts.hostname, parts.port)
        self.mode = "pass"
        self.connections = 0
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._listener.getsockname()[1]}"
        self._closed = threading.Event()
        threading.Thread(target=self._accept, name="awsfaults-proxy", daemon=True).start()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop accepting; each open connection is closed by its own thread within 0.1 s."""
        self._closed.set()
        self._listener.close()

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            self.connections += 1
            try:
                upstream = socket.create_connection(self._target, timeout=5)
            except OSError:
                _reset_socket(client)
                continue
            threading.Thread(target=self._relay, args=(client, upstream), daemon=True).start()

    def _relay(self, client: socket.socket, upstream: socket.socket) -> None:
        # One thread owns both sockets (a socket closed under another thread's recv would not
        # send its reset until that recv returned).
        selector = selectors.DefaultSelector()
        selector.register(client, selectors.EVENT_READ, True)
        selector.register(upstream, selectors.EVENT_READ, False)
        try:
            while not self._closed.is_set():
                for key, _ in selector.select(timeout=0.1):
                    from_client: bool = key.data
                    data = (client if from_client else upstream).recv(65536)
                    if not data:
                        return
                    mode = self.mode
                    if mode == "blackhole" and from_client:
                        continue
                    if (mode == "reset" and from_client) or (mode == "reset_after" and not from_client):
                        _reset_socket(client)
                        return
                    (upstream if from_client else client).sendall(data)
        except OSError:
            pass
        finally:
            selector.close()
            client.close()
            upstream.close()


# ------------------------------------------------------------------------------- configure


def parse(text: str) -> Faults:
    """A ``Faults`` from ``SWITCHBOARD_AWS_FAULTS``'s JSON (see the module docstring)."""
    try:
        spec = json.loads(text)
    except ValueError as exc:
        raise ValueError(f"{ENV} is not JSON: {exc}") from None
    if isinstance(spec, list):
        spec = {"rules": spec}
    if not isinstance(spec, dict) or not isinstance(spec.get("rules"), list):
        raise ValueError(f'{ENV} must be {{"seed": n, "rules": [...]}} or a list of rules')
    unknown = set(spec) - {"seed", "rules"}
    if unknown:
        raise ValueError(f"{ENV}: unknown keys {sorted(unknown)}")
    return Faults(tuple(_rule(raw) for raw in spec["rules"]), seed=int(spec.get("seed", 0)))


def _rule(raw: object) -> Rule:
    if not isinstance(raw, dict) or "fault" not in raw:
        raise ValueError(f"{ENV}: a rule must be an object with a 'fault': {raw!r}")
    known = {"fault", "rate", "operations", "services", "times", "latency_s", "phase", "reason"}
    if set(raw) - known:
        raise ValueError(f"{ENV}: unknown rule keys {sorted(set(raw) - known)}")
    return Rule(
        str(raw["fault"]),
        rate=float(raw.get("rate", 1.0)),
        operations=frozenset(raw.get("operations") or ()),
        services=frozenset(raw.get("services") or ()),
        times=None if raw.get("times") is None else int(raw["times"]),
        latency_s=float(raw.get("latency_s", 0.0)),
        phase=str(raw.get("phase", "after")),
        reason=str(raw.get("reason", "TransactionConflict")),
    )


@functools.cache
def _parsed(text: str) -> Faults:
    return parse(text)  # one Faults per value: every client of the process shares it


def from_env(env: Mapping[str, str] | None = None) -> Faults | None:
    """The faults ``SWITCHBOARD_AWS_FAULTS`` describes, None when it is unset or empty."""
    text = (os.environ if env is None else env).get(ENV, "").strip()
    return _parsed(text) if text else None


def install(faults: Faults, client: awsjson.Client | None = None) -> None:
    """Inject ``faults`` into ``client``'s attempts, or (None) every client's without its own."""
    if client is None:
        awsjson.set_interceptor(faults)
    else:
        client.interceptor = faults


def uninstall(client: awsjson.Client | None = None) -> None:
    """Stop injecting into ``client`` (or, None, the process-wide faults)."""
    if client is None:
        awsjson.set_interceptor(None)
    else:
        client.interceptor = None


@contextmanager
def inject(
    *rules: Rule | Iterable[Rule], seed: int = 0, client: awsjson.Client | None = None
) -> Iterator[Faults]:
    """``install`` the rules for the block, then put back what was there; yields the ``Faults``."""
    flat: list[Rule] = []
    for item in rules:
        flat.extend([item] if isinstance(item, Rule) else item)
    faults = Faults(tuple(flat), seed=seed)
    if client is None:
        previous = awsjson.set_interceptor(faults)
        try:
            yield faults
        finally:
            awsjson.set_interceptor(previous)
    else:
        before = client.interceptor
        client.interceptor = faults
        try:
            yield faults
        finally:
            client.interceptor = before
