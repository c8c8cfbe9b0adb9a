"""Stored responses (http/endpoints/responses_store.py) over a real moto DynamoDB table."""

from __future__ import annotations

import asyncio
import os
from typing import Any

import pytest
from switchboard.core.errors import InvalidRequest
from switchboard.http.endpoints.responses_store import MAX_TURNS, PREFIX, ResponseStore, check_input

from tests.limits.conftest import make_table
from tests.unit.test_template import TEMPLATE


@pytest.fixture
def store(aws: str) -> ResponseStore:
    table = make_table()
    return ResponseStore(lambda: table.client, table.name)


def response(ident: str, text: str) -> dict[str, Any]:
    return {
        "id": ident,
        "object": "response",
        "output": [{"type": "message", "role": "assistant", "content": text}],
    }


def user(text: str) -> list[dict[str, Any]]:
    return [{"type": "message", "role": "user", "content": text}]


def test_history_follows_the_chain_and_ownership(store: ResponseStore) -> None:
    async def run() -> None:
        assert await store.put("k1", response("r1", "one"), user("a"), None, 30)
        assert await store.put("k1", response("r2", "two"), user("b"), "r1", 30)
        history = await store.history("k1", "r2")
        assert [item["content"] for item in history] == ["a", "one", "b", "two"]
        assert await store.get("k2", "r1") is None  # another key sees nothing
        with pytest.raises(InvalidRequest):
            await store.history("k2", "r2")
        assert not await store.delete("k2", "r1")
        # another key cannot overwrite it either (ids of passed-through answers are the upstream's)
        assert not await store.put("k2", response("r1", "theirs"), user("x"), None, 30)
        assert (await store.get("k1", "r1")).response["output"][0]["content"] == "one"  # type: ignore[union-attr]
        assert await store.delete("k1", "r1")
        with pytest.raises(InvalidRequest) as caught:  # the chain is broken: a clear 400
            await store.history("k1", "r2")
        assert caught.value.param == "previous_response_id"

    asyncio.run(run())


def test_an_answer_too_large_to_store_is_not_stored(store: ResponseStore) -> None:
    big = response("r-big", os.urandom(450 * 1024).hex())  # random: does not compress
    assert not asyncio.run(store.put("k1", big, user("a"), None, 30))


def test_an_input_too_large_to_store_is_a_400() -> None:
    with pytest.raises(InvalidRequest) as caught:
        check_input(user(os.urandom(320 * 1024).hex()))
    assert caught.value.status == 400 and caught.value.param == "input" and "400 KB" in caught.value.message
    check_input(user("x" * 1_000_000))  # compresses well: accepted


def test_the_chain_is_bounded(store: ResponseStore) -> None:
    async def run() -> None:
        previous = None
        for turn in range(MAX_TURNS + 1):
            await store.put("k1", response(f"c{turn}", "x"), user("y"), previous, 30)
            previous = f"c{turn}"
        with pytest.raises(InvalidRequest):
            await store.history("k1", previous)  # type: ignore[arg-type]
        assert len(await store.history("k1", f"c{MAX_TURNS - 1}")) == 2 * MAX_TURNS

    asyncio.run(run())


def test_the_gateway_role_may_write_stored_responses() -> None:
    role = TEMPLATE["Resources"]
    prefixes = [
        prefix
        for resource in role.values()
        if resource.get("Type") == "AWS::IAM::Role"
        for policy in resource["Properties"].get("Policies", [])
        if isinstance(policy, dict) and policy.get("PolicyName") == "table"
        for statement in policy["PolicyDocument"]["Statement"]
        for prefix in statement.get("Condition", {})
        .get("ForAllValues:StringLike", {})
        .get("dynamodb:LeadingKeys", [])
    ]
    assert PREFIX + "*" in prefixes
