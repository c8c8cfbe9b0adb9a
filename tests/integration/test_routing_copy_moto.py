"""The fleet's copy of the routing document in DynamoDB, against moto (switchboard.routing.copy).

Many instances (stores) share one parameter and one table on a virtual clock: the SSM calls of the
whole fleet stay at one per ``max_age_s`` however many instances read, an edit is served by every
instance within ``edit_bound_s``, and a cold start while SSM throttles (the AWS fault layer in the
gateway's own client) serves the copy, where reading SSM alone answers 503.
"""

from __future__ import annotations

import asyncio
import json
import math
import uuid
from collections.abc import Iterator
from typing import Any

import boto3
import httpx
import pytest
from switchboard.core.settings import Settings
from switchboard.devtools import awsfaults
from switchboard.devtools.awsfaults import Rule
from switchboard.devtools.devstack import seed_aws
from switchboard.http.app import create_app
from switchboard.infra import awsjson
from switchboard.routing import parts
from switchboard.routing.copy import FleetCopy, copy_key, edit_bound_s
from switchboard.routing.store import RoutingStore, RoutingUnavailable
from switchboard.wiring import Gateway

from tests.conftest import API_KEY, routing_doc, serve_app
from tests.limits.conftest import make_table
from tests.limits.faults import FaultyClient

REGION = "us-east-1"


def doc(revision: str, aliases: int = 2) -> str:
    return json.dumps(
        {
            "version": 1,
            "revision": revision,
            "providers": {"p": {"kind": "openai", "base_url": "http://p.test/v1"}},
            "models": {f"m{i}": {"targets": [{"provider": "p", "model": f"x{i}"}]} for i in range(aliases)},
        },
        separators=(",", ":"),
    )


class Clock:
    """One virtual clock for the fleet: the stores' cache ages and the copy's wall-clock stamps."""

    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


class Fleet:
    """``count`` instances: each a store over its own FleetCopy, all on one SSM and table client
    (counting their calls), one parameter, one clock."""

    def __init__(
        self, table: str, name: str, count: int, *, copy: bool = True, max_age_s: float = 5.0
    ) -> None:
        ssm, ddb = awsjson.from_env("ssm", REGION), awsjson.from_env("dynamodb", REGION)
        assert ssm is not None and ddb is not None
        self.raw = (ssm, ddb)
        self.ssm, self.ddb = FaultyClient(ssm), FaultyClient(ddb)  # no faults armed: call counters
        self.clock = Clock()
        self.max_age_s, self.timeout_s = max_age_s, 1.0
        self.stores = [
            RoutingStore(
                FleetCopy(self.ddb, table, name, self.ssm, max_age_s, clock=self.clock).fetch
                if copy
                else (lambda: parts.read(self.ssm, name)),
                max_age_s,
                timeout_s=self.timeout_s,
                clock=self.clock,
            )
            for _ in range(count)
        ]

    async def step(self, index: int) -> str:
        """What instance ``index`` serves now, its refresh (if one started) landed before the
        clock moves on: reads take no virtual time."""
        store = self.stores[index]
        try:
            revision = (await store.current(deadline=None)).revision
        except RoutingUnavailable:  # a cold start whose read took over timeout_s of real time
            if store.refreshing is not None:  # (a loaded machine): it lands, at no virtual time
                await asyncio.wait([store.refreshing])
            revision = (await store.current(deadline=None)).revision
        if store.refreshing is not None:
            await asyncio.wait([store.refreshing])
        return revision

    def close(self) -> None:
        for client in self.raw:
            client.close()


@pytest.fixture
def table(aws: str) -> Iterator[str]:
    made = make_table()
    yield made.name
    made.client.delete_table(TableName=made.name)


@pytest.fixture
def name(aws: str) -> str:
    return f"/switchboard-test/{uuid.uuid4().hex[:10]}/routing"


def put(name: str, text: str) -> None:
    parts.write(boto3.client("ssm", region_name=REGION), name, text)


async def run(fleet: Fleet, name: str, *, until_s: float, edit_at_s: float, edit: str) -> dict[int, float]:
    """Every instance serves a request every half second of virtual time (in its own phase); the
    edit is pushed at ``edit_at_s``. Returns when each instance first served it."""
    start, step, edited = fleet.clock.now, 0.5, False
    first: dict[int, float] = {}
    for tick in range(int(until_s / step)):
        for index in range(len(fleet.stores)):
            fleet.clock.now = start + tick * step + index * step / len(fleet.stores)
            if not edited and fleet.clock.now - start >= edit_at_s:
                put(name, edit)
                edited = True
            if await fleet.step(index) == "r2" and index not in first:
                first[index] = fleet.clock.now - start
    return first


@pytest.mark.parametrize("instances", [4, 16])
def test_the_fleets_ssm_reads_do_not_grow_with_instances_and_an_edit_reaches_all_within_the_bound(
    table: str, name: str, instances: int
) -> None:
    put(name, doc("r1"))
    fleet = Fleet(table, name, instances)
    until, edit_at = 60.0, 20.0
    first = asyncio.run(run(fleet, name, until_s=until, edit_at_s=edit_at, edit=doc("r2")))
    fleet.close()

    bound = edit_bound_s(fleet.max_age_s, fleet.timeout_s)
    assert bound <= 60  # the bound, at the defaults (5 s, 1 s): 18 s
    assert sorted(first) == list(range(instances))  # every instance serves the edit ...
    assert max(first.values()) <= edit_at + bound  # ... within the bound
    # One GetParameter per max_age_s for the whole fleet (the claims), whatever its size.
    assert fleet.ssm.calls["get_parameter"] <= math.ceil(until / fleet.max_age_s) + 1
    assert fleet.ddb.calls["get_item"] >= instances * (until / fleet.max_age_s - 1)


def test_without_the_copy_every_instance_reads_ssm(table: str, name: str) -> None:
    """Today's reads, for the record: they grow with the instances (the row the copy replaces)."""
    put(name, doc("r1"))
    fleet = Fleet(table, name, 16, copy=False)
    asyncio.run(run(fleet, name, until_s=60.0, edit_at_s=20.0, edit=doc("r2")))
    fleet.close()
    assert fleet.ssm.calls["get_parameter"] >= 16 * (60 / fleet.max_age_s - 1)


def test_a_split_document_is_read_in_parts_only_when_its_manifest_changes(table: str, name: str) -> None:
    put(name, doc("r1", aliases=200))
    fleet = Fleet(table, name, 8)
    first = asyncio.run(run(fleet, name, until_s=60.0, edit_at_s=20.0, edit=doc("r2", aliases=200)))
    fleet.close()
    assert len(first) == 8
    chunks = math.ceil(len(doc("r2", aliases=200)) / parts.PART_BYTES / 10)
    assert fleet.ssm.calls["get_parameters"] == 2 * chunks  # the first read, and the edit's
    item = boto3.client("dynamodb", region_name=REGION).get_item(TableName=table, Key=copy_key(name))["Item"]
    assert parts.manifest_of(item["source"]["S"]) is not None
    assert json.loads(item["body"]["S"])["revision"] == "r2"


def test_a_cold_start_during_an_ssm_throttle_serves_the_fleets_copy(table: str, name: str) -> None:
    put(name, doc("r1"))
    fleet = Fleet(table, name, 3)
    assert asyncio.run(fleet.step(0)) == "r1"  # a warm instance wrote the copy
    fleet.clock.now += 3 * fleet.max_age_s  # and the copy is due a check: the cold one claims it
    ssm = fleet.raw[0]
    with awsfaults.inject(Rule("throttle", rate=1.0, services={"ssm"}), client=ssm) as faults:
        assert asyncio.run(fleet.step(1)) == "r1"  # SSM throttled on every attempt: the copy serves
        tried = faults.injected[("throttle", "GetParameter")]
        assert tried >= 1  # it was tried (and retried while its budget lasted)

        direct = RoutingStore.from_ssm(name, fleet.max_age_s, ssm, timeout_s=5.0)
        with pytest.raises(RoutingUnavailable):  # what a cold start did before the copy
            asyncio.run(direct.current())
        assert faults.injected[("throttle", "GetParameter")] == tried + 3  # every attempt throttled
    # DynamoDB failing too: the instance reads SSM directly (here answering again)
    faulty = FleetCopy(FaultyClient(fleet.raw[1]), table, name, ssm, 5.0)
    faulty._ddb.add("get_item", "throttle")
    assert json.loads(faulty.fetch())["revision"] == "r1" and faulty.direct == 1
    fleet.close()


def test_a_lost_claim_serves_the_copy_and_a_late_write_never_replaces_a_newer_copy(
    table: str, name: str
) -> None:
    ssm, ddb = awsjson.from_env("ssm", REGION), awsjson.from_env("dynamodb", REGION)
    clock = Clock()
    put(name, doc("r1"))
    a, b = (FleetCopy(ddb, table, name, ssm, 5.0, clock=clock) for _ in range(2))
    assert json.loads(a.fetch())["revision"] == "r1" and a.claims == 1
    clock.now += 6
    put(name, doc("r2"))
    # both saw the copy due a check; a claims first, so b's claim fails and b serves the copy
    seen = ddb.get_item(TableName=table, Key=copy_key(name))["Item"]["checked_at"]["N"]
    assert a._claim(seen, f"{clock.now:.6f}")
    assert not b._claim(seen, f"{clock.now:.6f}")
    assert json.loads(b.fetch())["revision"] == "r1" and b.claims == 0
    # a's read of r1 lands after a later claim that read r2: a's write is dropped
    clock.now += 6
    assert json.loads(b.fetch())["revision"] == "r2" and b.claims == 1
    a._put(doc("r1"), doc("r1"), f"{clock.now - 6:.6f}")
    item = ddb.get_item(TableName=table, Key=copy_key(name))["Item"]
    assert json.loads(item["source"]["S"])["revision"] == "r2"
    ssm.close()
    ddb.close()


def test_a_slow_ssm_cuts_a_cold_instances_check_short_but_not_a_warm_ones(table: str, name: str) -> None:
    """A cold instance's claimed read gets the budget (it has the fleet's copy to serve now); a
    warm one's gets the client's full time, so a slow SSM does not hold an edit back."""
    ssm, ddb = awsjson.from_env("ssm", REGION), awsjson.from_env("dynamodb", REGION)
    clock = Clock()
    put(name, doc("r1"))
    warm = FleetCopy(ddb, table, name, ssm, 5.0, budget_s=0.1, clock=clock)
    assert json.loads(warm.fetch())["revision"] == "r1"
    put(name, doc("r2"))
    with awsfaults.inject(Rule("latency", latency_s=0.3, services={"ssm"}), client=ssm):
        clock.now += 6
        cold = FleetCopy(ddb, table, name, ssm, 5.0, budget_s=0.1, clock=clock)
        assert json.loads(cold.fetch())["revision"] == "r1" and cold.claims == 1  # cut short
        clock.now += 6
        assert json.loads(warm.fetch())["revision"] == "r2" and warm.claims == 2  # waited for SSM
    ssm.close()
    ddb.close()


def test_a_copy_that_is_not_its_sources_document_lasts_one_check(table: str, name: str) -> None:
    ssm, ddb = awsjson.from_env("ssm", REGION), awsjson.from_env("dynamodb", REGION)
    clock = Clock()
    for text in (doc("r1"), doc("r1", aliases=200)):  # whole, then split
        put(name, text)
        clock.now += 6
        reader = FleetCopy(ddb, table, name, ssm, 5.0, clock=clock)
        assert reader.fetch() == text
        ddb.update_item(
            TableName=table,
            Key=copy_key(name),
            UpdateExpression="SET body = :forged",
            ExpressionAttributeValues={":forged": {"S": doc("forged")}},
        )
        assert json.loads(reader.fetch())["revision"] == "forged"  # until the next check ...
        clock.now += 6
        assert reader.fetch() == text  # ... which rewrites it from SSM
        assert FleetCopy(ddb, table, name, ssm, 5.0, clock=clock).fetch() == text
    ssm.close()
    ddb.close()


def gateway(param: str, mock_url: str, **settings: Any) -> tuple[str, Any]:
    config = Settings.from_env({}, routing_param=param, table="switchboard", **settings)
    seed_aws(
        config,
        json.dumps(routing_doc(mock_url, {"echo": {"targets": [{"provider": "mock", "model": "echo"}]}})),
        API_KEY,
        {},
    )
    return serve_app(create_app(Gateway.from_env(config)))


def test_a_cold_gateway_during_an_ssm_throttle_serves_over_http(aws: str, mock: Any) -> None:
    param = f"/switchboard-test/{uuid.uuid4().hex[:10]}/routing"
    headers = {"authorization": f"Bearer {API_KEY}", "x-switchboard-timeout": "5"}
    warm_url, stop_warm = gateway(param, mock.base_url)
    try:
        assert httpx.get(warm_url + "/v1/models", headers=headers).status_code == 200
    finally:
        stop_warm()
    with awsfaults.inject(Rule("throttle", rate=1.0, services={"ssm"})) as faults:
        cold_url, stop_cold = gateway(param, mock.base_url, aws_timeout_s=2.0)
        off_url, stop_off = gateway(param, mock.base_url, aws_timeout_s=2.0, routing_copy="off")
        try:
            served = httpx.get(cold_url + "/v1/models", headers=headers)
            refused = httpx.get(off_url + "/v1/models", headers=headers)
        finally:
            stop_cold()
            stop_off()
    assert served.status_code == 200, served.text
    assert [m["id"] for m in served.json()["data"]] == ["echo"]
    assert refused.status_code == 503 and refused.json()["error"]["code"] == "routing_unavailable"
    assert faults.injected[("throttle", "GetParameter")] >= 1
