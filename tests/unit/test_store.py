"""The routing store: cache age, last-known-good and rejection accounting, with a fake SSM and clock."""

from __future__ import annotations

import json

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


BAD = doc_text("bad").replace('"openai"', '"nonsense"')


class FakeSSM:
    """The parameter's value, changeable by the test; counts reads; may raise."""

    def __init__(self, value: str) -> None:
        self.value = value
        self.fetches = 0
        self.error: Exception | None = None

    def __call__(self) -> str:
        self.fetches += 1
        if self.error is not None:
            raise self.error
        return self.value


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def make(value: str, max_age_s: float = 5.0) -> tuple[RoutingStore, FakeSSM, Clock, list[str]]:
    ssm, clock, rejections = FakeSSM(value), Clock(), []
    store = RoutingStore(ssm, max_age_s, on_rejected=rejections.append, clock=clock)
    return store, ssm, clock, rejections


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


async def test_refreshes_after_max_age() -> None:
    store, ssm, clock, _ = make(doc_text("r1"))
    await store.current()
    ssm.value = doc_text("r2", alias="renamed")
    clock.now += 5.0
    loaded = await store.current()
    assert loaded.revision == "r2" and list(loaded.document.models) == ["renamed"]
    assert ssm.fetches == 2
    clock.now += 4.0
    await store.current()
    assert ssm.fetches == 2  # the age counts from the last check, not the first load


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
    clock.now += 6
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
        clock.now += 6
        assert (await store.current()).revision == "good"
    assert ssm.fetches == 4  # still fetched every max_age...
    assert store.rejected == 1 and len(rejections) == 1  # ...but rejected once
    ssm.value = doc_text("fixed")
    clock.now += 6
    assert (await store.current()).revision == "fixed"
    assert store.rejected == 1


async def test_bad_then_good_then_same_bad_again_is_rejected_again() -> None:
    store, ssm, clock, _ = make(doc_text("good"))
    await store.current()
    for value in (BAD, doc_text("good2"), BAD):
        ssm.value = value
        clock.now += 6
        await store.current()
    assert store.rejected == 2
    assert (await store.current()).revision == "good2"


async def test_fetch_exception_keeps_the_last_good() -> None:
    store, ssm, clock, rejections = make(doc_text("good"))
    good = await store.current()
    ssm.error = ConnectionError("ssm unreachable: secret-ish detail")
    clock.now += 6
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
