"""The ledger: reserve, settle, refund and sweep, each one DynamoDB transaction.

Admission is one ``TransactWriteItems``:

* ``Put resv#<request id>`` if it does not exist (a retried admission is a no-op);
* per budget line, ``ADD used :est, reserved :est`` if ``used <= limit - est``;
* per rate line, ``ADD req 1, tok :est_tokens`` if ``req < rpm`` and ``tok <= tpm - est_tokens``.

Either every item is written or none is, so concurrent requests on any number of instances can
never overspend a budget or pass a rate limit. Settlement is one transaction too: ``Delete resv``
if it exists (a second settle, or a settle after the sweeper, is a no-op), and the same lines
moved from reserved to spent at the actual cost. A refund is a settlement at zero; the sweeper
refunds reservations whose request outlived its deadline (the instance died). See docs/limits.md.
"""

from __future__ import annotations

import hashlib
import logging
import random
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from switchboard.limits.model import (
    RATE_WINDOW_S,
    Period,
    Scope,
    headroom,
    settle_amounts,
)
from switchboard.limits.table import (
    GSI,
    RESV_SHARDS,
    Key,
    Table,
    budget_key,
    dump,
    load,
    num,
    rate_key,
    resv_key,
    resv_shard,
)

__all__ = [
    "BudgetLine",
    "Hold",
    "Ledger",
    "RateLine",
    "Refusal",
    "Reservation",
]

log = logging.getLogger("switchboard.limits")

# Real DynamoDB cancels a transaction that races another one on the same item
# (TransactionConflict); such an admission is simply tried again, a few times, with jitter.
_CONFLICT_TRIES = 6
_RATE_ITEM_TTL_S = 300  # a rate window item outlives its minute by this much, then TTL deletes it
_RESV_TTL_S = 7 * 86_400  # backstop: TTL deletes a reservation the sweeper never reached


@dataclass(frozen=True, slots=True)
class BudgetLine:
    """One budget that applies to a request, in the period that contains the request."""

    scope: Scope
    ident: str
    label: str  # for messages: "key 'ci' (key_1a2b)", "team 'ml'"
    limit: Decimal
    period: Period
    period_id: str
    resets_at: datetime | None

    @property
    def key(self) -> Key:
        return budget_key(self.scope.value, self.ident, self.period_id)


@dataclass(frozen=True, slots=True)
class RateLine:
    """One rate limit that applies to a request, in the current fixed window."""

    scope: Scope
    ident: str
    label: str
    rpm: int | None
    tpm: int | None
    window: int

    @property
    def key(self) -> Key:
        return rate_key(self.scope.value, self.ident, self.window)

    def resets_in(self, now_s: float) -> float:
        return max(0.0, (self.window + 1) * RATE_WINDOW_S - now_s)


@dataclass(frozen=True, slots=True)
class Hold:
    """What a reservation holds, as stored in its item: enough to settle or refund it later."""

    request_id: str
    usd: Decimal
    tokens: int
    budget_keys: tuple[tuple[str, str], ...]
    rate_keys: tuple[tuple[str, str], ...]

    @classmethod
    def from_item(cls, item: dict[str, Any]) -> Hold:
        v = load(item)
        return cls(
            request_id=str(v["request_id"]),
            usd=Decimal(v.get("usd", 0)),
            tokens=int(v.get("tokens", 0)),
            budget_keys=tuple((str(p["pk"]), str(p["sk"])) for p in v.get("budgets", [])),
            rate_keys=tuple((str(p["pk"]), str(p["sk"])) for p in v.get("rates", [])),
        )


@dataclass(slots=True)
class Reservation:
    """One request's admission: the estimate, and the lines it is reserved on."""

    request_id: str
    usd: Decimal
    tokens: int
    budgets: tuple[BudgetLine, ...]
    rates: tuple[RateLine, ...]
    expires_at: int  # epoch seconds after which the sweeper may refund it
    key_id: str = ""
    alias: str = ""
    prices: dict[str, Any] = field(default_factory=dict)  # target label -> Price (for settlement)

    @property
    def hold(self) -> Hold:
        return Hold(
            self.request_id,
            self.usd,
            self.tokens,
            tuple((b.key["pk"]["S"], b.key["sk"]["S"]) for b in self.budgets),
            tuple((r.key["pk"]["S"], r.key["sk"]["S"]) for r in self.rates),
        )


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why an admission failed: the first budget (else rate line) whose condition did not hold."""

    budget: BudgetLine | None = None
    rate: RateLine | None = None
    item: dict[str, Any] = field(default_factory=dict)  # that item's values before the request


def _token(kind: str, request_id: str, attempt: int, *amounts: object) -> str:
    """A ClientRequestToken (at most 36 characters): a network retry of one call is applied once.

    The amounts are part of it: DynamoDB rejects a token reused with other parameters, and two
    settlements of one request with different amounts must meet the reservation's condition instead.
    """
    text = ":".join(str(part) for part in (kind, request_id, attempt, *amounts))
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def _cancel_codes(exc: Exception) -> list[str]:
    reasons = getattr(exc, "response", {}).get("CancellationReasons") or []
    return [str(r.get("Code") or "None") for r in reasons]


class Ledger:
    """Reservation and settlement over the table. Synchronous; the hook runs it in a thread."""

    def __init__(
        self,
        table: Table,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.table = table
        self._clock = clock
        self._sleep = sleep

    # ------------------------------------------------------------------------- admission

    def reserve(self, res: Reservation) -> Refusal | None:
        """Reserve ``res`` on every line at once; a ``Refusal`` when any line has no room."""
        if not res.budgets and not res.rates:
            return None
        items = [self._put_resv(res)]
        items += [self._reserve_budget(res, line) for line in res.budgets]
        items += [self._reserve_rate(res, line) for line in res.rates]
        failed = self._transact(items, "admit", res.request_id, res.usd, res.tokens)
        if failed is None or 0 in failed:  # done, or done before (a retried admission)
            return None
        index = min(failed) - 1
        old = load(failed[min(failed)])
        if index < len(res.budgets):
            return Refusal(budget=res.budgets[index], item=old)
        return Refusal(rate=res.rates[index - len(res.budgets)], item=old)

    def _put_resv(self, res: Reservation) -> dict[str, Any]:
        values = {
            "request_id": res.request_id,
            "usd": res.usd,
            "tokens": res.tokens,
            "budgets": [{"pk": pk, "sk": sk} for pk, sk in res.hold.budget_keys],
            "rates": [{"pk": pk, "sk": sk} for pk, sk in res.hold.rate_keys],
            "key_id": res.key_id or None,
            "alias": res.alias or None,
            "created_at": int(self._clock()),
            "expires_at": res.expires_at,
            "ttl": res.expires_at + _RESV_TTL_S,
            "gsi1pk": resv_shard(res.request_id),
            "gsi1sk": f"{res.expires_at:012d}#{res.request_id}",
        }
        return {
            "Put": {
                "TableName": self.table.name,
                "Item": {**resv_key(res.request_id), **dump(values)},
                "ConditionExpression": "attribute_not_exists(pk)",
            }
        }

    def _reserve_budget(self, res: Reservation, line: BudgetLine) -> dict[str, Any]:
        return {
            "Update": {
                "TableName": self.table.name,
                "Key": line.key,
                "UpdateExpression": "ADD used :e, reserved :e, requests :one SET limit_usd = :limit",
                "ConditionExpression": "attribute_not_exists(used) OR used <= :room",
                "ExpressionAttributeValues": {
                    ":e": num(res.usd),
                    ":one": num(1),
                    ":limit": num(line.limit),
                    ":room": num(headroom(line.limit, res.usd)),
                },
                "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
            }
        }

    def _reserve_rate(self, res: Reservation, line: RateLine) -> dict[str, Any]:
        conditions = []
        values: dict[str, Any] = {
            ":one": num(1),
            ":t": num(res.tokens),
            ":ttl": num((line.window + 1) * RATE_WINDOW_S + _RATE_ITEM_TTL_S),
            ":rid": {"S": res.request_id},
        }
        if line.rpm is not None:
            conditions.append("(attribute_not_exists(req) OR req < :rpm)")
            values[":rpm"] = num(line.rpm)
        if line.tpm is not None:
            conditions.append("(attribute_not_exists(tok) OR tok <= :troom)")
            values[":troom"] = num(line.tpm - res.tokens)
        update: dict[str, Any] = {
            "TableName": self.table.name,
            "Key": line.key,
            # last_req lets the read beside the admission tell whether it saw this request's write.
            "UpdateExpression": "ADD req :one, tok :t SET #ttl = :ttl, last_req = :rid",
            "ExpressionAttributeNames": {"#ttl": "ttl"},
            "ExpressionAttributeValues": values,
            "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
        }
        if conditions:
            update["ConditionExpression"] = " AND ".join(conditions)
        return {"Update": update}

    # ------------------------------------------------------------------------ settlement

    def settle(
        self, hold: Hold, actual_usd: Decimal, actual_tokens: int, also: Sequence[dict[str, Any]] = ()
    ) -> bool:
        """Move ``hold`` to spent at the actual cost (zero: a refund). False when already settled.

        ``also``: more transaction items written with the settlement or not at all (the spend
        ledger's ``Update``), so a settlement that is a no-op books nothing twice."""
        used, reserved, spent = settle_amounts(hold.usd, actual_usd)
        items: list[dict[str, Any]] = [
            {
                "Delete": {
                    "TableName": self.table.name,
                    "Key": resv_key(hold.request_id),
                    "ConditionExpression": "attribute_exists(pk)",
                }
            }
        ]
        for pk, sk in hold.budget_keys:
            items.append(
                {
                    "Update": {
                        "TableName": self.table.name,
                        "Key": {"pk": {"S": pk}, "sk": {"S": sk}},
                        "UpdateExpression": "ADD used :u, reserved :r, spent :s",
                        "ExpressionAttributeValues": {":u": num(used), ":r": num(reserved), ":s": num(spent)},
                    }
                }
            )
        for pk, sk in hold.rate_keys:
            window = int(sk.removeprefix("m#"))
            items.append(
                {
                    "Update": {
                        "TableName": self.table.name,
                        "Key": {"pk": {"S": pk}, "sk": {"S": sk}},
                        "UpdateExpression": "ADD tok :t SET #ttl = :ttl",
                        "ExpressionAttributeNames": {"#ttl": "ttl"},
                        "ExpressionAttributeValues": {
                            ":t": num(actual_tokens - hold.tokens),
                            ":ttl": num((window + 1) * RATE_WINDOW_S + _RATE_ITEM_TTL_S),
                        },
                    }
                }
            )
        items.extend(also)
        kind = "settle+" if also else "settle"  # one idempotency token per distinct transaction
        return self._transact(items, kind, hold.request_id, actual_usd, actual_tokens) is None

    def sweep(self, now: float | None = None, limit: int | None = None) -> list[Hold]:
        """Refund every reservation whose deadline passed before ``now``; the holds refunded."""
        cutoff = int(self._clock() if now is None else now)
        refunded: list[Hold] = []
        for shard in range(RESV_SHARDS):
            for item in self._expired(f"resv#{shard}", cutoff):
                hold = Hold.from_item(item)
                if self.settle(hold, Decimal(0), 0):
                    log.warning("refunded orphaned reservation %s (%s USD)", hold.request_id, hold.usd)
                    refunded.append(hold)
                if limit is not None and len(refunded) >= limit:
                    return refunded
        return refunded

    def _expired(self, shard: str, cutoff: int) -> Iterable[dict[str, Any]]:
        kwargs: dict[str, Any] = {
            "TableName": self.table.name,
            "IndexName": GSI,
            "KeyConditionExpression": "gsi1pk = :p AND gsi1sk < :cut",
            "ExpressionAttributeValues": {":p": {"S": shard}, ":cut": {"S": f"{cutoff:012d}"}},
        }
        while True:
            page = self.table.client.query(**kwargs)
            yield from page.get("Items", [])
            if "LastEvaluatedKey" not in page:
                return
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    def pending(self, request_id: str) -> Hold | None:
        """The reservation of ``request_id`` if it is still held (strongly consistent)."""
        found = self.table.client.get_item(
            TableName=self.table.name, Key=resv_key(request_id), ConsistentRead=True
        )
        item = found.get("Item")
        return Hold.from_item(item) if item else None

    # ----------------------------------------------------------------------------- reads

    def read(self, keys: Iterable[Key]) -> dict[tuple[str, str], dict[str, Any]]:
        """Current values of some ledger items (eventually consistent; for headers and rules)."""
        wanted = list({(k["pk"]["S"], k["sk"]["S"]): k for k in keys}.values())
        found: dict[tuple[str, str], dict[str, Any]] = {}
        while wanted:
            batch, wanted = wanted[:100], wanted[100:]
            request: dict[str, Any] = {self.table.name: {"Keys": batch}}
            while request:
                page = self.table.client.batch_get_item(RequestItems=request)
                for item in page.get("Responses", {}).get(self.table.name, []):
                    values = load(item)
                    found[(str(values["pk"]), str(values["sk"]))] = values
                request = page.get("UnprocessedKeys") or {}
        return found

    # ------------------------------------------------------------------------- transact

    def _transact(
        self, items: list[dict[str, Any]], kind: str, request_id: str, *amounts: object
    ) -> dict[int, Any] | None:
        """Run one transaction; None when it committed, else {index: old item} of failed conditions."""
        client = self.table.client
        for attempt in range(_CONFLICT_TRIES):
            try:
                client.transact_write_items(
                    TransactItems=items, ClientRequestToken=_token(kind, request_id, attempt, *amounts)
                )
                return None
            except client.exceptions.TransactionCanceledException as exc:
                codes = _cancel_codes(exc)
                if "ConditionalCheckFailed" in codes:
                    reasons = exc.response.get("CancellationReasons") or []
                    return {
                        i: reasons[i].get("Item") or {}
                        for i, code in enumerate(codes)
                        if code == "ConditionalCheckFailed"
                    }
                if not all(code in {"None", "TransactionConflict", "ThrottlingError"} for code in codes):
                    raise
                if attempt + 1 == _CONFLICT_TRIES:
                    raise
                self._sleep(random.uniform(0.005, 0.02) * (attempt + 1))
        raise AssertionError("unreachable")
