"""The routing store: cache age, stale-while-revalidate, single-flight, last-known-good and
rejection accounting, with a fake SSM (that can hang) and clock."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import pytest
from switchboard.routing.store import RoutingStore, RoutingUnavailable


def doc_text(revision: str, alias: str = "m") -> str:
    return json.dumps(
        {
            "version": 1,
            "revision": revision,
            "providers": {"p": {"kind": "openai", "base_url": "http://p.test/v1"}},
            "models": {alias: {"targets": [{"provider": "p", "model": "x"}]}},
        }
    )


T = TypeVar("T")
BAD = doc_text("bad").replace('"openai"', '"nonsense"')


class FakeSSM:
    """The parameter's value, changeable by the test; counts reads; may raise, or hold each read
    until ``gate`` is set (a slow or blackholed SSM)."""

    def __init__(self, value: str) -> None:
        self.value = value
        self.fetches = 0
        self.error: Exception | None = None
        self.gate: threading.Event | None = None
        self.during: Callable[[], None] | None = None  # runs inside each read

    def __call__(self) -> str:
        self.fetches += 1
        value = self.value  # what the parameter holds when the read reaches SSM
        if self.during is not None:
            self.during()
        if self.gate is not None:
            self.gate.wait(10)
        if self.error is not None:
            raise self.error
        return value


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


MAX_AGE = 5.0
TIMEOUT = 2.0  # the store's timeout_s: how long past max_age a copy is served while it refreshes


def make(
    value: str, max_age_s: float = MAX_AGE, timeout_s: float = TIMEOUT
) -> tuple[RoutingStore, FakeSSM, Clock, list[str]]:
    ssm, clock, rejections = FakeSSM(value), Clock(), []
    store = RoutingStore(ssm, max_age_s, timeout_s=timeout_s, on_rejected=rejections.append, clock=clock)
    return store, ssm, clock, rejections


async def within(coro: Awaitable[T], seconds: float = 5.0) -> T:
    """A bound on a wait that must end (so a regression fails instead of hanging); not a timing."""
    async with asyncio.timeout(seconds):
        return await coro


async def test_first_load_fetches_and_validates() -> None:
    store, ssm, _, rejections = make(doc_text("r1"))
    loaded = await store.current()
    assert loaded.revision == "r1"
    assert list(loaded.document.models) == ["m"]
    assert ssm.fetches == 1
    assert store.rejected == 0 and rejections == []


async def test_cached_within_max_age() -> None:
    store, ssm, clock, _ = make(doc_text("r1"))
    first = await store.current()
    ssm.value = doc_text("r2")
    for step in (0.0, 1.0, 4.99):
        clock.now = 1000.0 + step
        assert await store.current() is first
    assert ssm.fetches == 1


async def test_a_stale_copy_is_served_while_it_refreshes_in_the_background() -> None:
    store, ssm, clock, _ = make(doc_text("r1"))
    first = await store.current()
    ssm.value = doc_text("r2", alias="renamed")
    ssm.gate = threading.Event()  # the refresh hangs until the test lets it answer
    clock.now += MAX_AGE
    assert await within(store.current()) is first  # never waits for the refresh
    refresh = store.refreshing
    assert refresh is not None
    assert await within(store.current()) is first
    assert store.refreshing is refresh  # one refresh in flight, shared
    ssm.gate.set()
    await within(refresh)
    assert ssm.fetches == 2
    loaded = await store.current()
    assert loaded.revision == "r2" and list(loaded.document.models) == ["renamed"]
    clock.now += MAX_AGE - 0.01
    await store.current()
    assert ssm.fetches == 2  # the age counts from the refresh, not the first load


async def test_a_copy_older_than_max_age_plus_one_read_is_refreshed_before_it_is_served() -> None:
    store, ssm, clock, _ = make(doc_text("r1"))
    await store.current()
    ssm.value = doc_text("r2")
    clock.now += MAX_AGE + TIMEOUT
    assert (await within(store.current())).revision == "r2"
    assert ssm.fetches == 2


async def test_every_concurrent_request_sees_an_edit_after_max_age_plus_one_read() -> None:
    """Defect 6: the check time was stamped before the read, so the requests that came while it
    ran were served the old document as if it were fresh."""
    store, ssm, clock, _ = make(doc_text("r1"))
    await store.current()
    ssm.value = doc_text("r2")  # the push
    clock.now += MAX_AGE + TIMEOUT
    ssm.gate = threading.Event()
    first = asyncio.ensure_future(store.current())  # starts the read
    await asyncio.sleep(0.05)
    later = [asyncio.ensure_future(store.current()) for _ in range(19)]  # come while it runs
    await asyncio.sleep(0.05)
    ssm.gate.set()
    seen = await within(asyncio.gather(first, *later))
    assert [loaded.revision for loaded in seen] == ["r2"] * 20
    assert ssm.fetches == 2  # one read for all twenty


async def test_one_request_never_waits_for_two_reads() -> None:
    """The routing fetch ran twice in one request when SSM was slower than max_age: the API's
    lookup, then the limits hook's, each read inline because the first read's stamp was stale
    by the time it landed."""
    store, ssm, clock, _ = make(doc_text("r1"), max_age_s=1.0)

    def slow() -> None:  # the read takes longer than max_age
        clock.now += 1.5

    ssm.during = slow
    assert (await store.current()).revision == "r1"  # the API's lookup (a cold load)
    ssm.gate = threading.Event()  # any further read hangs
    assert (await within(store.current(), 1.0)).revision == "r1"  # the hook's: no second wait
    ssm.gate.set()


async def test_cold_requests_share_one_read() -> None:
    store, ssm, _, _ = make(doc_text("r1"))
    ssm.gate = threading.Event()
    requests = [asyncio.ensure_future(store.current()) for _ in range(10)]
    await asyncio.sleep(0.05)
    ssm.gate.set()
    assert {loaded.revision for loaded in await within(asyncio.gather(*requests))} == {"r1"}
    assert ssm.fetches == 1


async def test_a_hung_refresh_is_waited_for_at_most_timeout_then_the_last_copy_serves() -> None:
    store, ssm, clock, _ = make(doc_text("r1"), timeout_s=0.2)
    first = await store.current()
    ssm.gate = threading.Event()  # SSM accepts the read and never answers
    clock.now += MAX_AGE + 1
    assert await within(store.current()) is first  # waited for the read at most timeout_s
    for _ in range(5):  # the read overran: the source is failing, nobody waits for it again
        assert await within(store.current(), 0.15) is first
    assert ssm.fetches == 2  # and nobody starts another while it hangs
    ssm.gate.set()


async def test_cold_start_with_a_hung_ssm_is_503_within_the_deadline() -> None:
    store, ssm, _, _ = make(doc_text("r1"), timeout_s=30.0)
    ssm.gate = threading.Event()
    for _ in range(3):
        with pytest.raises(RoutingUnavailable) as info:
            await within(store.current(deadline=time.monotonic() + 0.1))
        assert info.value.status == 503
        assert info.value.headers["retry-after"].isdigit()
    assert ssm.fetches == 1  # the three requests waited on the same read
    ssm.gate.set()
    await within(store.refreshing)
    assert (await store.current()).revision == "r1"  # the read that landed late serves the next


async def test_unchanged_text_keeps_the_same_loaded_object() -> None:
    store, ssm, clock, _ = make(doc_text("r1"))
    first = await store.current()
    clock.now += 10
    assert await store.current() is first
    assert ssm.fetches == 2


async def test_invalid_edit_keeps_the_last_good_and_is_counted() -> None:
    store, ssm, clock, rejections = make(doc_text("good"))
    good = await store.current()
    ssm.value = BAD
    clock.now += 10  # past max_age + timeout_s: the read is waited for
    assert await store.current() is good
    assert store.rejected == 1
    assert len(rejections) == 1
    assert "providers.p.kind" in rejections[0] and "nonsense" in rejections[0]


@pytest.mark.parametrize("bad", ["{not json", "", BAD])
async def test_same_bad_text_is_not_revalidated(bad: str) -> None:
    store, ssm, clock, rejections = make(doc_text("good"))
    await store.current()
    ssm.value = bad
    for _ in range(3):
        clock.now += 10  # past max_age + timeout_s: the read is waited for
        assert (await store.current()).revision == "good"
    assert ssm.fetches == 4  # still fetched every max_age...
    assert store.rejected == 1 and len(rejections) == 1  # ...but rejected once
    ssm.value = doc_text("fixed")
    clock.now += 10  # past max_age + timeout_s: the read is waited for
    assert (await store.current()).revision == "fixed"
    assert store.rejected == 1


async def test_bad_then_good_then_same_bad_again_is_rejected_again() -> None:
    store, ssm, clock, _ = make(doc_text("good"))
    await store.current()
    for value in (BAD, doc_text("good2"), BAD):
        ssm.value = value
        clock.now += 10  # past max_age + timeout_s: the read is waited for
        await store.current()
    assert store.rejected == 2
    assert (await store.current()).revision == "good2"


async def test_fetch_exception_keeps_the_last_good() -> None:
    store, ssm, clock, rejections = make(doc_text("good"))
    good = await store.current()
    ssm.error = ConnectionError("ssm unreachable: secret-ish detail")
    clock.now += 10  # past max_age + timeout_s: the read is waited for
    assert await store.current() is good
    assert store.rejected == 1
    assert rejections == ["fetch failed: ConnectionError"]  # the type, never the exception's text
    clock.now += 1
    assert await store.current() is good
    assert ssm.fetches == 2  # a failed fetch also waits out max_age before the next try


@pytest.mark.parametrize("first", ["fetch-error", "invalid"])
async def test_no_good_document_ever_is_503(first: str) -> None:
    store, ssm, _, _ = make(BAD)
    if first == "fetch-error":
        ssm.error = RuntimeError("boom")
    with pytest.raises(RoutingUnavailable) as info:
        await store.current()
    err = info.value
    assert err.status == 503
    assert err.body()["error"]["code"] == "routing_unavailable"
    assert "boom" not in err.message
    # with no good document the store keeps trying on every request, not once per max_age
    with pytest.raises(RoutingUnavailable):
        await store.current()
    assert ssm.fetches == 2
    ssm.error = None
    ssm.value = doc_text("late")
    assert (await store.current()).revision == "late"


async def test_on_rejected_is_optional() -> None:
    store = RoutingStore(lambda: BAD, 5.0, clock=Clock())
    with pytest.raises(RoutingUnavailable):
        await store.current()
    assert store.rejected == 1
