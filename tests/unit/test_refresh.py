"""The other cached AWS reads on the request path: limit definitions and provider credentials.

Each read can be made to hang (an SSM or DynamoDB that accepts and never answers) or fail; the
routing document's cache has its own tests (test_store.py), the keys' theirs (limits/test_keys.py).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable
from decimal import Decimal
from typing import Any, TypeVar

import pytest
from switchboard.core.errors import ServiceUnavailable
from switchboard.core.principal import Limits, Scope
from switchboard.infra import refresh
from switchboard.limits.definitions import LimitCache
from switchboard.routing.document import SecretRef
from switchboard.upstream.secrets import SecretResolver, SecretUnavailable

T = TypeVar("T")


class Source:
    """A read that returns ``value``, counts itself, and may fail or hang until ``gate`` is set."""

    def __init__(self, value: Any) -> None:
        self.value = value
        self.reads = 0
        self.error: Exception | None = None
        self.gate: threading.Event | None = None

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self.reads += 1
        if self.gate is not None:
            self.gate.wait(10)
        if self.error is not None:
            raise self.error
        return self.value


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def within(coro: Awaitable[T], seconds: float = 5.0) -> T:
    """A bound on a wait that must end (a regression fails instead of hanging); not a timing."""
    async with asyncio.timeout(seconds):
        return await coro


# ------------------------------------------------------------------------ limit definitions


class Definitions:
    def __init__(self, source: Source) -> None:
        self.all = source


def limits(budget: int) -> dict[tuple[Scope, str], Limits]:
    return {(Scope.TEAM, "ml"): Limits(budget_usd=Decimal(budget))}


async def test_limit_definitions_are_served_stale_while_a_hung_reload_runs() -> None:
    source, clock = Source(limits(5)), Clock()
    cache = LimitCache(Definitions(source), 30, clock, timeout_s=1.0)  # type: ignore[arg-type]
    first = await cache.current()
    source.gate = threading.Event()
    source.value = limits(7)
    clock.now += 30
    for _ in range(3):  # inline under a lock, these waited for DynamoDB (3 x 5 s)
        assert await within(cache.current(), 0.5) is first
    assert cache.refreshing is not None
    source.gate.set()
    await within(cache.refreshing)
    assert await cache.current() == limits(7)
    assert source.reads == 2


async def test_limit_definitions_never_read_are_503_limits_unavailable() -> None:
    source = Source(limits(5))
    source.error = ConnectionError("dynamodb unreachable")
    cache = LimitCache(Definitions(source), 30, timeout_s=1.0)  # type: ignore[arg-type]
    with pytest.raises(ServiceUnavailable) as caught:
        await cache.current()
    assert (caught.value.status, caught.value.code) == (503, "limits_unavailable")
    assert "unreachable" not in caught.value.message
    source.error = None
    assert await cache.current() == limits(5)


async def test_cold_limit_definitions_are_one_read_for_concurrent_requests() -> None:
    source = Source(limits(5))
    source.gate = threading.Event()
    cache = LimitCache(Definitions(source), 30, timeout_s=5.0)  # type: ignore[arg-type]
    requests = [asyncio.ensure_future(cache.current()) for _ in range(8)]
    await asyncio.sleep(0.05)
    source.gate.set()
    assert await within(asyncio.gather(*requests)) == [limits(5)] * 8
    assert source.reads == 1


async def test_the_request_deadline_bounds_a_read_its_caller_gives_no_deadline_for() -> None:
    """The limits hook reads the definitions without a deadline: the request's (set where the
    API takes it) still bounds the wait."""
    source = Source(limits(5))
    source.gate = threading.Event()
    cache = LimitCache(Definitions(source), 30, timeout_s=30.0)  # type: ignore[arg-type]
    refresh.DEADLINE.set(time.monotonic() + 0.1)
    with pytest.raises(ServiceUnavailable):
        await within(cache.current(), 5.0)
    source.gate.set()


# ------------------------------------------------------------------------------ credentials


class SSM:
    def __init__(self, source: Source) -> None:
        self.source = source

    def get_parameter(self, **kwargs: Any) -> dict[str, Any]:
        return {"Parameter": {"Value": self.source()}}


REF = SecretRef(ssm="/switchboard/secrets/p")


def resolver(source: Source, clock: Clock | None = None, timeout_s: float = 1.0) -> SecretResolver:
    ssm = SSM(source)
    return SecretResolver(lambda: ssm, lambda: None, 300, clock or Clock(), timeout_s=timeout_s)


async def test_a_credential_is_one_read_for_concurrent_requests() -> None:
    source = Source("provider-key-1")
    source.gate = threading.Event()
    secrets = resolver(source)
    requests = [asyncio.ensure_future(secrets.resolve(REF)) for _ in range(8)]
    await asyncio.sleep(0.05)
    source.gate.set()
    assert await within(asyncio.gather(*requests)) == ["provider-key-1"] * 8
    assert source.reads == 1


async def test_a_credential_is_served_stale_while_its_refresh_hangs() -> None:
    source, clock = Source("provider-key-1"), Clock()
    secrets = resolver(source, clock)
    assert await secrets.resolve(REF) == "provider-key-1"
    source.gate = threading.Event()
    source.value = "provider-key-2"
    clock.now += 300
    assert await within(secrets.resolve(REF), 0.5) == "provider-key-1"
    source.gate.set()
    clock.now += 1
    async with asyncio.timeout(5):  # the refresh lands (a bounded wait)
        while await secrets.resolve(REF) != "provider-key-2":
            await asyncio.sleep(0.01)


async def test_a_credential_never_read_waits_at_most_timeout_s() -> None:
    source = Source("provider-key-1")
    source.gate = threading.Event()
    secrets = resolver(source, timeout_s=0.1)
    with pytest.raises(SecretUnavailable) as caught:
        await within(secrets.resolve(REF))
    assert "ssm:/switchboard/secrets/p" in str(caught.value)
    assert "provider-key" not in str(caught.value)
    source.gate.set()
