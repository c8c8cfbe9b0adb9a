"""The single DynamoDB table: item keys, attribute codecs, and a count of calls per operation.

Every item of keys, limits and ledgers lives in the template's ``SwitchboardTable`` (``pk``/``sk``
strings, TTL attribute ``ttl``, GSI ``gsi1`` on ``gsi1pk``/``gsi1sk``). The layout is in
``docs/limits.md``; the functions below are the only place that spells the keys.
"""

from __future__ import annotations

import base64
import threading
import zlib
from collections import Counter
from collections.abc import Iterator, Mapping
from decimal import Clamped, Context, Decimal, Inexact, Overflow, Rounded, Underflow
from typing import Any

__all__ = [
    "GSI",
    "RESV_SHARDS",
    "Table",
    "budget_key",
    "call_counts",
    "count_calls",
    "dump",
    "item_bytes",
    "key_item_key",
    "limit_item_key",
    "load",
    "num",
    "rate_key",
    "resv_key",
    "resv_shard",
    "write_units",
]

GSI = "gsi1"
# Reservations are indexed for the sweeper under a few GSI partitions, so that one hot index
# partition does not throttle admissions: each reservation is written to the index twice (put,
# delete), and a partition takes about 1,000 writes a second, so 32 shards hold 5,000 requests a
# second with room (8 capped it near 4,000). Shards 0-7 of the first release are among these.
RESV_SHARDS = 32

Key = dict[str, dict[str, str]]


def _key(pk: str, sk: str) -> Key:
    return {"pk": {"S": pk}, "sk": {"S": sk}}


def key_item_key(digest: str) -> Key:
    return _key(f"key#{digest}", "key")


def limit_item_key(scope: str, ident: str) -> Key:
    return _key(f"limit#{scope}#{ident}", "limit")


def budget_key(scope: str, ident: str, period_id: str, lane: int | None = None) -> Key:
    """A budget's ledger item; with ``lane``, one of its lanes (its own partition key, so that
    each lane has its own 1,000 write units a second: docs/limits.md, "At scale")."""
    suffix = "" if lane is None else f"#L{lane}"
    return _key(f"budget#{scope}#{ident}{suffix}", period_id)


def rate_key(scope: str, ident: str, window: int, lane: int | None = None) -> Key:
    """A rate window's counter item; with ``lane``, one of its lanes (as ``budget_key``)."""
    suffix = "" if lane is None else f"#L{lane}"
    return _key(f"rate#{scope}#{ident}{suffix}", f"m#{window}")


def resv_key(request_id: str) -> Key:
    return _key(f"resv#{request_id}", "resv")


def resv_shard(request_id: str) -> str:
    return f"resv#{zlib.crc32(request_id.encode()) % RESV_SHARDS}"


# DynamoDB numbers: 38 significant digits, exponents -130..125, and no silent rounding (the
# context boto3's TypeSerializer uses, so values are written exactly as boto3 wrote them).
_NUMBERS = Context(Emin=-128, Emax=126, prec=38, traps=[Clamped, Overflow, Inexact, Rounded, Underflow])


def _attribute(value: Any) -> dict[str, Any]:
    """One plain value as a DynamoDB attribute value (boto3's ``TypeSerializer`` rules, without boto3)."""
    if value is None:
        return {"NULL": True}
    if isinstance(value, bool):
        return {"BOOL": value}
    if isinstance(value, int | Decimal):
        return {"N": _number(value)}
    if isinstance(value, str):
        return {"S": value}
    if isinstance(value, bytes | bytearray):
        return {"B": bytes(value)}
    if isinstance(value, set | frozenset):
        return _set(value)
    if isinstance(value, Mapping):
        return {"M": {name: _attribute(inner) for name, inner in value.items()}}
    if isinstance(value, list | tuple):
        return {"L": [_attribute(inner) for inner in value]}
    if isinstance(value, float):
        raise TypeError("Float types are not supported. Use Decimal types instead.")
    raise TypeError(f"Unsupported type {type(value)} for value {value!r}")


def _number(value: int | Decimal) -> str:
    text = str(_NUMBERS.create_decimal(value))
    if text in ("Infinity", "NaN"):
        raise TypeError("Infinity and NaN not supported")
    return text


def _set(values: set[Any] | frozenset[Any]) -> dict[str, Any]:
    if all(isinstance(v, int | Decimal) for v in values):
        return {"NS": [_number(v) for v in values]}
    if all(isinstance(v, str) for v in values):
        return {"SS": list(values)}
    if all(isinstance(v, bytes | bytearray) for v in values):
        return {"BS": [bytes(v) for v in values]}
    raise TypeError(f"Unsupported set {values!r}: numbers, strings or binary, not a mix")


def _plain(value: Mapping[str, Any]) -> Any:
    """One DynamoDB attribute value as a plain value (boto3's ``TypeDeserializer`` rules)."""
    if not value:
        raise TypeError("Value must be a nonempty dictionary whose key is a valid dynamodb type.")
    kind, inner = next(iter(value.items()))
    if kind == "S":
        return inner
    if kind == "N":
        return _NUMBERS.create_decimal(inner)
    if kind == "BOOL":
        return inner
    if kind == "NULL":
        return None
    if kind == "M":
        return {name: _plain(v) for name, v in inner.items()}
    if kind == "L":
        return [_plain(v) for v in inner]
    if kind == "SS":
        return set(inner)
    if kind == "NS":
        return {_NUMBERS.create_decimal(v) for v in inner}
    if kind == "B":
        return _binary(inner)
    if kind == "BS":
        return {_binary(v) for v in inner}
    raise TypeError(f"Dynamodb type {kind} is not supported")


def _binary(value: bytes | str) -> bytes:
    # boto3's client decodes binary values; switchboard.infra.awsjson hands over the wire's base64 text.
    return value if isinstance(value, bytes) else base64.b64decode(value)


def dump(values: Mapping[str, Any]) -> dict[str, Any]:
    """Plain values (str, int, Decimal, bool, list, dict) to DynamoDB attribute values; None is left out."""
    return {name: _attribute(value) for name, value in values.items() if value is not None}


def load(item: Mapping[str, Any]) -> dict[str, Any]:
    """DynamoDB attribute values to plain values (numbers come back as ``Decimal``)."""
    return {name: _plain(value) for name, value in item.items()}


def num(value: Decimal | int) -> dict[str, str]:
    """A number attribute value, written without an exponent."""
    text = format(value, "f") if isinstance(value, Decimal) else str(value)
    return {"N": text}


# ------------------------------------------------------------------------------ item sizes


def _value_bytes(value: dict[str, Any]) -> int:
    ((kind, inner),) = value.items()
    if kind == "S":
        return len(inner.encode())
    if kind == "N":
        digits = inner.lstrip("-").replace(".", "").strip("0") or "0"
        return (len(digits) + 1) // 2 + 1
    if kind in ("BOOL", "NULL"):
        return 1
    if kind == "L":
        return 3 + sum(1 + _value_bytes(v) for v in inner)
    if kind == "M":
        return 3 + sum(1 + len(k.encode()) + _value_bytes(v) for k, v in inner.items())
    if kind in ("SS", "NS", "BS"):
        return sum(len(str(v).encode()) for v in inner)
    return len(inner)


def item_bytes(item: Mapping[str, Any]) -> int:
    """An item's size as DynamoDB bills it (attribute names plus values), to estimate capacity units."""
    return sum(len(name.encode()) + _value_bytes(value) for name, value in item.items())


def write_units(size: int, transactional: bool = False) -> int:
    """Write capacity units of one write of ``size`` bytes (1 KB each, doubled in a transaction)."""
    units = max(1, -(-size // 1024))
    return units * 2 if transactional else units


# ------------------------------------------------------------------------------ call counting

_CALLS: Counter[str] = Counter()
_CALLS_LOCK = threading.Lock()


def _count(operation: str) -> None:
    with _CALLS_LOCK:
        _CALLS[operation] += 1


def _on_botocore_call(event_name: str, **_: Any) -> None:
    _count(event_name.rsplit(".", 1)[-1])


def count_calls(client: Any) -> Any:
    """Count every call ``client`` makes, per operation (see ``call_counts``). Returns the client.
    Either client the table is built on: ``switchboard.infra.awsjson``'s or boto3's."""
    meta = getattr(client, "meta", None)
    if meta is None:
        client.on_call(_count)
    else:
        meta.events.register("before-call.dynamodb", _on_botocore_call, unique_id="switchboard-limits-count")
    return client


def call_counts() -> dict[str, int]:
    """DynamoDB calls made so far by counted clients in this process, per operation."""
    with _CALLS_LOCK:
        return dict(_CALLS)


class Table:
    """A DynamoDB client and a table name: what every store in this package is built on."""

    __slots__ = ("client", "name")

    def __init__(self, client: Any, name: str) -> None:
        self.client = count_calls(client)
        self.name = name

    @classmethod
    def from_settings(cls, table: str, region: str, *, runtime: bool = False) -> Table:
        """The table on the shared client: ``runtime`` for a serving process (the gateway, the
        sweeper: ``aws.runtime_client``, light when the environment has credentials), else boto3's
        (the CLI: any credential source)."""
        from switchboard.infra import aws

        make = aws.runtime_client if runtime else aws.client
        return cls(make("dynamodb", region), table)

    def index_items(self, partition: str) -> Iterator[dict[str, Any]]:
        """Every item under ``gsi1pk = partition``, following the query's pages."""
        kwargs: dict[str, Any] = {
            "TableName": self.name,
            "IndexName": GSI,
            "KeyConditionExpression": "gsi1pk = :p",
            "ExpressionAttributeValues": {":p": {"S": partition}},
        }
        while True:
            page = self.client.query(**kwargs)
            yield from page.get("Items", [])
            if "LastEvaluatedKey" not in page:
                return
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]
