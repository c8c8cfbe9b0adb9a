"""Fixes that make moto's DynamoDB behave like the service under the limits code, and fast enough.

1. Atomicity. moto's threaded server runs each request on its own thread, and its DynamoDB backend
   neither locks an item between reading a condition and writing the update, nor a table between
   snapshotting it for a transaction and restoring that snapshot when the transaction is
   cancelled. Under concurrent clients it therefore loses updates and undoes other requests'
   committed writes, which real DynamoDB never does. One process-wide lock around the backend's
   operations gives moto the guarantee the ledger relies on (conditional writes and transactions
   are atomic). It is coarser than the service's per-item isolation: moto gets slower, not laxer.
2. Number arithmetic. moto adds numbers with ``f"{Decimal}"``, which writes small results with an
   exponent (``0E-9``, ``1E-7``) and then fails to parse them back (``int("0E-9")``). DynamoDB
   stores plain decimals; the patched ``+``/``-`` write them plainly.
3. Speed. moto deep-copies the whole table before every transaction so it can restore it on
   cancellation: 20-40 ms per call once a table holds a few hundred items. Under the lock it is
   enough to save the items the transaction names and put those back.
"""

from __future__ import annotations

import copy
import functools
import operator
import threading
from collections.abc import Callable
from decimal import Decimal
from typing import Any

__all__ = ["patch_moto_dynamodb"]

_LOCK = threading.RLock()
_OPERATIONS = (
    "put_item",
    "get_item",
    "update_item",
    "delete_item",
    "query",
    "scan",
    "transact_get_items",
    "transact_write_items",
    "batch_write_item",
)
_PATCHED = "_switchboard_patched"


def patch_moto_dynamodb() -> None:
    """Apply both fixes to moto in this process. Idempotent."""
    from moto.dynamodb.models import DynamoDBBackend
    from moto.dynamodb.models.dynamo_type import DynamoType

    for name in _OPERATIONS:
        method = getattr(DynamoDBBackend, name, None)
        if method is not None and not getattr(method, _PATCHED, False):
            setattr(DynamoDBBackend, name, _locked(method))
    _rollback_per_item(DynamoDBBackend)
    for name, op in (("__add__", operator.add), ("__sub__", operator.sub)):
        method = getattr(DynamoType, name)
        if not getattr(method, _PATCHED, False):
            setattr(DynamoType, name, _plain_numbers(method, op, DynamoType))


def _locked(method: Any) -> Any:
    @functools.wraps(method)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with _LOCK:
            return method(*args, **kwargs)

    setattr(wrapper, _PATCHED, True)
    return wrapper


def _plain_numbers(method: Any, op: Callable[[Decimal, Decimal], Decimal], kind: Any) -> Any:
    @functools.wraps(method)
    def wrapper(self: Any, other: Any) -> Any:
        if self.type == other.type == "N":
            return kind({"N": format(op(Decimal(self.value), Decimal(other.value)), "f")})
        return method(self, other)

    setattr(wrapper, _PATCHED, True)
    return wrapper


class _CopyExceptTables:
    """``copy`` for moto's DynamoDB models module: a ``Table`` is returned as is, not deep-copied."""

    def __init__(self, table_class: type) -> None:
        self._table_class = table_class

    def deepcopy(self, value: Any, memo: Any = None) -> Any:
        return value if isinstance(value, self._table_class) else copy.deepcopy(value, memo)

    def __getattr__(self, name: str) -> Any:
        return getattr(copy, name)


def _rollback_per_item(backend: Any) -> None:
    import moto.dynamodb.models as models
    from moto.dynamodb.models.table import Table

    if isinstance(getattr(models, "copy", None), _CopyExceptTables):
        return
    setattr(models, "copy", _CopyExceptTables(Table))  # noqa: B010 - a module attribute mypy cannot see
    transact = backend.transact_write_items  # already locked

    @functools.wraps(transact)
    def transact_write_items(self: Any, transact_items: list[dict[str, Any]]) -> Any:
        with _LOCK:
            saved = []
            for entry in transact_items:
                try:
                    op_type, op = next(iter(entry.items()))
                    table = self.get_table(op["TableName"])
                    keys = op["Item"] if op_type == "Put" else op["Key"]
                    hash_key, range_key = self.get_keys_value(table, keys)
                except Exception:
                    continue
                saved.append((table, hash_key, range_key, copy.deepcopy(table.get_item(hash_key, range_key))))
            try:
                return transact(self, transact_items)
            except Exception:
                for table, hash_key, range_key, item in reversed(saved):
                    _put_back(table, hash_key, range_key, item)
                raise

    setattr(transact_write_items, _PATCHED, True)
    backend.transact_write_items = transact_write_items


def _put_back(table: Any, hash_key: Any, range_key: Any, item: Any) -> None:
    if range_key is None:
        if item is None:
            table.items.pop(hash_key, None)
        else:
            table.items[hash_key] = item
        return
    if item is None:
        table.items.get(hash_key, {}).pop(range_key, None)
    else:
        table.items[hash_key][range_key] = item
