"""Routing edits through SSM: take effect after the cache age; an invalid edit never takes over."""

from __future__ import annotations

import time

import httpx
from switchboard.routing.copy import edit_bound_s

from tests.conftest import routing_doc

WAIT_S = 20.0  # slack on a bounded wait for a loaded machine, where moto queues every call


def models(gw) -> list[str]:  # type: ignore[no-untyped-def]
    response = httpx.get(gw.v1 + "/models", headers=gw.headers())
    assert response.status_code == 200
    return [m["id"] for m in response.json()["data"]]


def test_an_edit_takes_effect_after_the_cache_age(gateway_factory, mock) -> None:  # type: ignore[no-untyped-def]
    # The edit is in force within edit_bound_s (docs/routing.md, "Reads at scale"; proved on a
    # virtual clock in test_routing_copy_moto.py): 4.5 s here while AWS answers within the timeout.
    # moto serialises every call, so under a loaded suite the wait below allows far more.
    gw = gateway_factory(routing_max_age_s=0.5, aws_timeout_s=1.0)
    first = httpx.get(gw.v1 + "/models", headers=gw.headers())
    assert [m["id"] for m in first.json()["data"]] == ["echo"]
    edited = routing_doc(mock.base_url, {"renamed": {"targets": [{"provider": "mock", "model": "echo"}]}})
    edited["revision"] = "edit-2"
    gw.put_routing(edited)
    assert models(gw) == ["echo"]  # still cached
    end = time.monotonic() + edit_bound_s(0.5, 1.0) + WAIT_S
    while models(gw) != ["renamed"] and time.monotonic() < end:
        time.sleep(0.1)
    after = httpx.get(gw.v1 + "/models", headers=gw.headers())
    assert [m["id"] for m in after.json()["data"]] == ["renamed"]
    assert after.headers["x-switchboard-routing-version"] == "edit-2"
    assert first.headers["x-switchboard-routing-version"] != "edit-2"


def test_an_invalid_edit_keeps_the_last_good_document(gateway_factory, mock) -> None:  # type: ignore[no-untyped-def]
    gw = gateway_factory(routing_max_age_s=0.2, aws_timeout_s=1.0)  # an edit is read within 3.8 s
    good_version = httpx.get(gw.v1 + "/models", headers=gw.headers()).headers["x-switchboard-routing-version"]
    broken = routing_doc(mock.base_url, {"x": {"targets": [{"provider": "nowhere", "model": "m"}]}})
    for count, bad in enumerate(("{not json", broken), start=1):
        gw.put_routing(bad)
        end = time.monotonic() + edit_bound_s(0.2, 1.0) + WAIT_S
        while True:  # requests drive the reads; each is served by the last good document
            response = httpx.post(
                gw.v1 + "/chat/completions",
                json={"model": "echo", "messages": [{"role": "user", "content": "still here"}]},
                headers=gw.headers(),
            )
            assert response.status_code == 200
            assert response.headers["x-switchboard-routing-version"] == good_version
            if gw.gateway.routing.rejected >= count or time.monotonic() > end:
                break
            time.sleep(0.1)
        assert gw.gateway.routing.rejected >= count  # this edit was read, and rejected
