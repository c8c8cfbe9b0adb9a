"""Stored responses (``store: true``) in the gateway's DynamoDB table.

One item per response::

    pk = rsp#<response id>   sk = rsp
    owner  the key id that created it (another key reads nothing: 404)
    prev   the ``previous_response_id`` it continued, if any
    body   zlib-compressed JSON: {"response": <the response object>, "input": [<its own input items>]}
    ttl    epoch seconds: created + the routing document's ``responses_ttl_days`` (default 30)

A response keeps only its own new input and its output, and a pointer to the one before it, so a
long conversation costs linear storage; ``history`` rebuilds the whole input by following the
pointers (at most ``MAX_TURNS``), whichever provider served each turn.

An item is at most DynamoDB's 400 KB. The body is compressed (model text and JSON shrink several
times); a request whose compressed input alone passes ``MAX_INPUT_BYTES`` is refused with a 400
before any upstream is called, and an answer that would push the item past the limit is returned
but not stored (``x-switchboard-stored: false``; logged). S3 for larger items is not implemented:
a conversation that large is better sent whole (``store: false``) than chained.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from switchboard.core.errors import InvalidRequest, ServiceUnavailable

__all__ = [
    "MAX_INPUT_BYTES",
    "MAX_ITEM_BYTES",
    "MAX_TURNS",
    "PREFIX",
    "ResponseStore",
    "Stored",
    "TooLarge",
    "check_input",
    "pack",
]

log = logging.getLogger("switchboard.endpoints.responses")

MAX_ITEM_BYTES = 400 * 1024
MAX_INPUT_BYTES = 300 * 1024  # compressed; leaves room for the answer in the same item
MAX_TURNS = 100
PREFIX = "rsp#"
_OVERHEAD = 512  # key names, owner, prev, ttl
_TIMEOUT_S = 5.0


class TooLarge(InvalidRequest):
    """A request too large to store."""


class _Taken(Exception):
    """The id is another key's."""


@dataclass(frozen=True, slots=True)
class Stored:
    response: dict[str, Any]
    input: list[dict[str, Any]]
    previous: str | None


def _key(response_id: str) -> dict[str, dict[str, str]]:
    return {"pk": {"S": PREFIX + response_id}, "sk": {"S": "rsp"}}


def pack(response: dict[str, Any], items: list[dict[str, Any]]) -> bytes:
    text = json.dumps({"response": response, "input": items}, separators=(",", ":"), ensure_ascii=False)
    return zlib.compress(text.encode(), 6)


def check_input(items: list[dict[str, Any]]) -> None:
    """A 400 (param ``input``) when the request's input could not be stored."""
    size = len(zlib.compress(json.dumps(items, separators=(",", ":")).encode(), 6))
    if size > MAX_INPUT_BYTES:
        raise TooLarge(
            f"The input is too large to store ({size} bytes compressed, the limit is {MAX_INPUT_BYTES}): "
            "stored responses live in one DynamoDB item of at most 400 KB. Send it with store: false "
            "(and the whole conversation as input instead of previous_response_id).",
            param="input",
            code="input_too_large",
        )


class ResponseStore:
    """Reads and writes stored responses; every call is bounded and runs off the event loop."""

    def __init__(self, client: Callable[[], Any], table: str) -> None:
        self._client = client
        self.table = table

    async def _call(self, operation: str, **params: Any) -> dict[str, Any]:
        method = getattr(self._client(), operation)
        try:
            async with asyncio.timeout(_TIMEOUT_S):
                answer: dict[str, Any] = await asyncio.to_thread(method, TableName=self.table, **params)
                return answer
        except Exception as exc:
            if "ConditionalCheckFailed" in type(exc).__name__ + str(getattr(exc, "response", "")):
                raise _Taken from None
            log.warning("stored responses: %s failed (%s)", operation, type(exc).__name__)
            raise ServiceUnavailable("Stored responses are unavailable right now; retry shortly.") from None

    async def put(
        self,
        owner: str,
        response: dict[str, Any],
        items: list[dict[str, Any]],
        previous: str | None,
        ttl_days: int,
    ) -> bool:
        """Store ``response`` and its own input items; False (logged) when it is too large."""
        body = pack(response, items)
        if len(body) + _OVERHEAD > MAX_ITEM_BYTES:
            log.warning("response %s not stored: %d bytes compressed", response.get("id"), len(body))
            return False
        item: dict[str, Any] = {
            **_key(str(response["id"])),
            "owner": {"S": owner},
            "body": {"B": body},
            "ttl": {"N": str(int(time.time()) + ttl_days * 86400)},
        }
        if previous:
            item["prev"] = {"S": previous}
        # Never over another key's response: an upstream chooses the ids of passed-through answers.
        try:
            await self._call(
                "put_item",
                Item=item,
                ConditionExpression="attribute_not_exists(pk) OR #o = :o",
                ExpressionAttributeNames={"#o": "owner"},
                ExpressionAttributeValues={":o": {"S": owner}},
            )
        except _Taken:
            log.warning("response %s not stored: its id belongs to another key", response.get("id"))
            return False
        return True

    async def get(self, owner: str, response_id: str) -> Stored | None:
        """The stored response if ``owner`` created it and it has not expired; else None."""
        answer = await self._call("get_item", Key=_key(response_id), ConsistentRead=True)
        item = answer.get("Item")
        if not item or item.get("owner", {}).get("S") != owner:
            return None
        ttl = item.get("ttl", {}).get("N")
        if ttl is not None and int(ttl) < time.time():  # expired, not yet swept by DynamoDB
            return None
        raw = item["body"]["B"]  # bytes from boto3; base64 text from the light client (awsjson)
        data = json.loads(zlib.decompress(base64.b64decode(raw) if isinstance(raw, str) else bytes(raw)))
        return Stored(data["response"], data["input"], item.get("prev", {}).get("S"))

    async def delete(self, owner: str, response_id: str) -> bool:
        """Delete the response if ``owner`` created it; whether it did."""
        if await self.get(owner, response_id) is None:
            return False
        await self._call("delete_item", Key=_key(response_id))
        return True

    async def history(self, owner: str, response_id: str) -> list[dict[str, Any]]:
        """The whole conversation up to and including ``response_id``: each turn's input items
        then its output items, oldest first. A 400 (param ``previous_response_id``) when it is not
        found for this key, or the chain is longer than ``MAX_TURNS``."""
        turns: list[list[dict[str, Any]]] = []
        current: str | None = response_id
        while current is not None:
            if len(turns) >= MAX_TURNS:
                raise InvalidRequest(
                    f"The conversation is longer than {MAX_TURNS} stored responses; send it as input.",
                    param="previous_response_id",
                )
            stored = await self.get(owner, current)
            if stored is None:
                raise InvalidRequest(
                    f"Previous response with id '{current}' not found.",
                    param="previous_response_id",
                    code="previous_response_not_found",
                )
            turns.append(stored.input + list(stored.response.get("output") or []))
            current = stored.previous
        return [item for turn in reversed(turns) for item in turn]
