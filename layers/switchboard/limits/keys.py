"""Virtual keys: the store (create, list, show, update, revoke, rotate) and the authenticator.

Only the SHA-256 digest of a secret is stored; the secret is shown once, at creation or rotation.
A key has a public id (``key_...``) that survives rotation, so budgets and logs follow the key,
not the secret. Items (see docs/limits.md)::

    pk = key#<sha256 of the secret>   sk = key
    gsi1pk = keys                     gsi1sk = <id>        (list, and lookup by id)

A rotated-out secret keeps its item without the index attributes: it stays valid for the grace
period (``expires_at``), then fails like any expired key, and TTL deletes it a day later.

``DynamoKeyAuthenticator`` caches lookups per container for ``max_age_s`` (a revoke takes effect
within that age while DynamoDB answers; while it does not, a known key keeps serving for a bounded
time); expiry is checked against the clock on every request, cached or not.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from decimal import Decimal
from functools import partial
from typing import Any

from switchboard.core.errors import ServiceUnavailable, Unauthorized
from switchboard.core.principal import Limits, Period, Principal, key_digest
from switchboard.infra.refresh import Health, Refreshing, Unavailable
from switchboard.limits.table import GSI, Table, dump, key_item_key, load

__all__ = [
    "DynamoKeyAuthenticator",
    "KeyRecord",
    "KeyRevoked",
    "KeyStore",
    "UnknownKey",
    "new_secret",
]

log = logging.getLogger("switchboard.keys")

SECRET_PREFIX = "sk-sb-"
_INDEX = "keys"
# A rotated-out secret's item is deleted by TTL this long after its grace period ends.
_ROTATED_TTL_S = 86_400


class UnknownKey(LookupError):
    """No key has this id."""


class KeyRevoked(ValueError):
    """The key is revoked; it can be shown but not changed."""


def new_secret() -> str:
    return SECRET_PREFIX + secrets.token_urlsafe(30)


@dataclass(frozen=True, slots=True)
class KeyRecord:
    """One virtual key as stored (never with its secret)."""

    id: str
    digest: str
    name: str
    prefix: str  # the first characters of the secret, to recognise it in a list
    created_at: int  # epoch seconds
    updated_at: int
    team: str | None = None
    user: str | None = None
    tags: tuple[str, ...] = ()
    models: frozenset[str] | None = None  # None: every alias
    overrides: frozenset[str] = frozenset()  # routing overrides allowed (routing.overrides.FIELDS)
    limits: Limits = field(default_factory=Limits)
    expires_at: int | None = None
    revoked_at: int | None = None
    rotated_at: int | None = None  # set on a secret that was rotated out
    indexed: bool = True  # False on a rotated-out secret's item

    def status(self, now: float) -> str:
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at is not None and now >= self.expires_at:
            return "expired"
        return "active"

    def to_item(self) -> dict[str, Any]:
        limits = self.limits
        values: dict[str, Any] = {
            "id": self.id,
            "name": self.name,
            "prefix": self.prefix,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "team": self.team,
            "user": self.user,
            "tags": list(self.tags) or None,
            "models": sorted(self.models) if self.models is not None else None,
            "overrides": sorted(self.overrides) or None,
            "budget_usd": limits.budget_usd,
            "period": limits.period.value if limits.budget_usd is not None else None,
            "rpm": limits.rpm,
            "tpm": limits.tpm,
            "lanes": limits.lanes if limits.lanes > 1 else None,
            "expires_at": self.expires_at,
            "revoked_at": self.revoked_at,
            "rotated_at": self.rotated_at,
        }
        if self.indexed:
            values["gsi1pk"], values["gsi1sk"] = _INDEX, self.id
        elif self.expires_at is not None:
            values["ttl"] = self.expires_at + _ROTATED_TTL_S
        return {**key_item_key(self.digest), **dump(values)}

    @classmethod
    def from_item(cls, item: dict[str, Any]) -> KeyRecord:
        v = load(item)
        models = v.get("models")
        return cls(
            id=str(v["id"]),
            digest=str(v["pk"]).removeprefix("key#"),
            name=str(v["name"]),
            prefix=str(v.get("prefix", "")),
            created_at=int(v["created_at"]),
            updated_at=int(v.get("updated_at", v["created_at"])),
            team=v.get("team"),
            user=v.get("user"),
            tags=tuple(v.get("tags") or ()),
            models=frozenset(models) if models is not None else None,
            overrides=frozenset(v.get("overrides") or ()),
            limits=Limits(
                budget_usd=v.get("budget_usd"),
                period=Period(v.get("period", "month")),
                rpm=_int_or_none(v.get("rpm")),
                tpm=_int_or_none(v.get("tpm")),
                lanes=int(v.get("lanes") or 1),
            ),
            expires_at=_int_or_none(v.get("expires_at")),
            revoked_at=_int_or_none(v.get("revoked_at")),
            rotated_at=_int_or_none(v.get("rotated_at")),
            indexed="gsi1pk" in v,
        )

    def public(self, now: float | None = None) -> dict[str, Any]:
        """What the CLI prints: everything but the digest, times in ISO 8601."""
        limits = self.limits
        return {
            "id": self.id,
            "name": self.name,
            "prefix": self.prefix,
            "status": self.status(time.time() if now is None else now),
            "team": self.team,
            "user": self.user,
            "tags": list(self.tags),
            "models": sorted(self.models) if self.models is not None else "*",
            "overrides": sorted(self.overrides),
            "budget_usd": str(limits.budget_usd) if limits.budget_usd is not None else None,
            "period": limits.period.value if limits.budget_usd is not None else None,
            "rpm": limits.rpm,
            "tpm": limits.tpm,
            **({"lanes": limits.lanes} if limits.lanes > 1 else {}),
            "created_at": _iso(self.created_at),
            "updated_at": _iso(self.updated_at),
            "expires_at": _iso(self.expires_at),
            "revoked_at": _iso(self.revoked_at),
        }

    def principal(self) -> Principal:
        return Principal(
            key_id=self.id,
            name=self.name,
            team=self.team,
            allowed_models=self.models,
            user=self.user,
            tags=self.tags,
            limits=None if self.limits.empty else self.limits,
            overrides=self.overrides,
        )


def _int_or_none(value: Any) -> int | None:
    return None if value is None else int(value)


def _iso(epoch: int | None) -> str | None:
    if epoch is None:
        return None
    return datetime.fromtimestamp(epoch, UTC).isoformat().replace("+00:00", "Z")


_UNSET: Any = object()


class KeyStore:
    """Key management over the table. Synchronous (the CLI and the authenticator's thread use it)."""

    def __init__(self, table: Table, clock: Callable[[], float] = time.time) -> None:
        self.table = table
        self._clock = clock

    # ----------------------------------------------------------------------------- reads

    def by_digest(self, digest: str) -> KeyRecord | None:
        found = self.table.client.get_item(TableName=self.table.name, Key=key_item_key(digest))
        item = found.get("Item")
        return KeyRecord.from_item(item) if item else None

    def get(self, key_id: str) -> KeyRecord:
        """The current (indexed) record of ``key_id``; ``UnknownKey`` when there is none."""
        found = self.table.client.query(
            TableName=self.table.name,
            IndexName=GSI,
            KeyConditionExpression="gsi1pk = :p AND gsi1sk = :id",
            ExpressionAttributeValues={":p": {"S": _INDEX}, ":id": {"S": key_id}},
        )
        items = found.get("Items") or []
        if not items:
            raise UnknownKey(f"no key with id {key_id!r} (see 'switchboard keys list')")
        return KeyRecord.from_item(items[0])

    def list(self, include_revoked: bool = False) -> list[KeyRecord]:
        records = [KeyRecord.from_item(item) for item in self.table.index_items(_INDEX)]
        if not include_revoked:
            records = [r for r in records if r.revoked_at is None]
        return sorted(records, key=lambda r: (r.created_at, r.id))

    # ---------------------------------------------------------------------------- writes

    def create(
        self,
        name: str,
        *,
        team: str | None = None,
        user: str | None = None,
        tags: Iterable[str] = (),
        models: Iterable[str] | None = None,
        overrides: Iterable[str] = (),
        limits: Limits | None = None,
        expires_at: int | None = None,
        secret: str | None = None,
        key_id: str | None = None,
    ) -> tuple[str, KeyRecord]:
        """A new key; returns its secret (shown once) and its record."""
        secret = secret or new_secret()
        now = int(self._clock())
        record = KeyRecord(
            id=key_id or "key_" + secrets.token_hex(8),
            digest=key_digest(secret),
            name=name,
            prefix=secret[:10],
            created_at=now,
            updated_at=now,
            team=team,
            user=user,
            tags=tuple(tags),
            models=frozenset(models) if models is not None else None,
            overrides=frozenset(overrides),
            limits=limits or Limits(),
            expires_at=expires_at,
        )
        self.table.client.put_item(
            TableName=self.table.name,
            Item=record.to_item(),
            ConditionExpression="attribute_not_exists(pk)",
        )
        return secret, record

    def ensure(self, secret: str, name: str, overrides: Iterable[str] = ()) -> KeyRecord:
        """A key for a known secret (the dev stack's), created if missing (with the routing
        ``overrides`` it may use). Idempotent."""
        digest = key_digest(secret)
        existing = self.by_digest(digest)
        if existing is not None and existing.revoked_at is None:
            return existing
        client = self.table.client
        try:
            return self.create(name, secret=secret, key_id="key_" + digest[:16], overrides=overrides)[1]
        except client.exceptions.ConditionalCheckFailedException:
            # A revoked item with this digest: bring the known secret back to life.
            client.delete_item(TableName=self.table.name, Key=key_item_key(digest))
            return self.create(name, secret=secret, key_id="key_" + digest[:16], overrides=overrides)[1]

    def update(
        self,
        key_id: str,
        *,
        name: str | None = None,
        team: str | None = _UNSET,
        user: str | None = _UNSET,
        tags: Iterable[str] | None = None,
        models: Iterable[str] | None = _UNSET,
        overrides: Iterable[str] | None = None,
        budget_usd: Decimal | None = _UNSET,
        period: Period | None = None,
        rpm: int | None = _UNSET,
        tpm: int | None = _UNSET,
        expires_at: int | None = _UNSET,
        lanes: int | None = None,
    ) -> KeyRecord:
        """Change some attributes of a live key. ``None`` clears an optional one."""
        current = self.get(key_id)
        if current.revoked_at is not None:
            raise KeyRevoked(f"key {key_id} is revoked and cannot be changed")
        limits = current.limits
        limits = Limits(
            budget_usd=limits.budget_usd if budget_usd is _UNSET else budget_usd,
            period=period or limits.period,
            rpm=limits.rpm if rpm is _UNSET else rpm,
            tpm=limits.tpm if tpm is _UNSET else tpm,
            lanes=limits.lanes if lanes is None else lanes,
        )
        changed = replace(
            current,
            name=name or current.name,
            team=current.team if team is _UNSET else team,
            user=current.user if user is _UNSET else user,
            tags=current.tags if tags is None else tuple(tags),
            models=current.models if models is _UNSET else (None if models is None else frozenset(models)),
            overrides=current.overrides if overrides is None else frozenset(overrides),
            limits=limits,
            expires_at=current.expires_at if expires_at is _UNSET else expires_at,
            updated_at=max(int(self._clock()), current.updated_at + 1),
        )
        self._replace(current, changed)
        return changed

    def revoke(self, key_id: str) -> KeyRecord:
        current = self.get(key_id)
        if current.revoked_at is not None:
            raise KeyRevoked(f"key {key_id} was already revoked at {_iso(current.revoked_at)}")
        now = int(self._clock())
        revoked = replace(current, revoked_at=now, updated_at=max(now, current.updated_at + 1))
        self._replace(current, revoked)
        return revoked

    def rotate(self, key_id: str, grace_s: int = 0) -> tuple[str, KeyRecord]:
        """A new secret for the same key id; the old one works ``grace_s`` more seconds."""
        current = self.get(key_id)
        if current.revoked_at is not None:
            raise KeyRevoked(f"key {key_id} is revoked and cannot be rotated; create a new key")
        now = int(self._clock())
        secret = new_secret()
        fresh = replace(
            current,
            digest=key_digest(secret),
            prefix=secret[:10],
            updated_at=max(now, current.updated_at + 1),
        )
        ends = now + max(0, grace_s)
        if current.expires_at is not None:
            ends = min(ends, current.expires_at)
        retired = replace(
            current, indexed=False, rotated_at=now, expires_at=ends, updated_at=fresh.updated_at
        )
        if grace_s <= 0:
            retired = replace(retired, revoked_at=now)
        self.table.client.transact_write_items(
            TransactItems=[
                {
                    "Put": {
                        "TableName": self.table.name,
                        "Item": fresh.to_item(),
                        "ConditionExpression": "attribute_not_exists(pk)",
                    }
                },
                {
                    "Put": {
                        "TableName": self.table.name,
                        "Item": retired.to_item(),
                        "ConditionExpression": "updated_at = :seen",
                        "ExpressionAttributeValues": {":seen": {"N": str(current.updated_at)}},
                    }
                },
            ]
        )
        return secret, fresh

    def _replace(self, current: KeyRecord, changed: KeyRecord) -> None:
        """Write ``changed`` over ``current`` unless someone else changed it in between."""
        client = self.table.client
        try:
            client.put_item(
                TableName=self.table.name,
                Item=changed.to_item(),
                ConditionExpression="updated_at = :seen AND attribute_not_exists(revoked_at)",
                ExpressionAttributeValues={":seen": {"N": str(current.updated_at)}},
            )
        except client.exceptions.ConditionalCheckFailedException:
            raise KeyRevoked(f"key {current.id} changed or was revoked meanwhile; try again") from None


class DynamoKeyAuthenticator:
    """``Authenticator`` over the key store, with a bounded-age cache per container.

    A key is looked up again once its copy is ``max_age_s`` old, and the request waits for that
    read (at most ``timeout_s`` and its deadline), so a revoke stops a key within ``max_age_s``
    while DynamoDB answers. When it does not (it fails, or overruns ``timeout_s``), a key seen in
    the last ``max_age_s + max_stale_s`` keeps serving from its copy (stale-if-error), while one read
    at a time probes the table; an unknown key gets a 503 ``auth_unavailable`` with ``Retry-After``.
    Concurrent requests for one key share one read (``switchboard.infra.refresh``)."""

    def __init__(
        self,
        store: KeyStore,
        max_age_s: float,
        *,
        timeout_s: float = 1.0,
        max_stale_s: float = 600.0,
        max_entries: int = 10_000,
        health: Health | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self._max_age_s = max_age_s
        self._timeout_s = timeout_s
        self._max_stale_s = max_stale_s
        self._max_entries = max_entries
        self._clock = clock
        self._wall = wall
        # One table: a failing read marks it for every key (and the limit definitions, if shared).
        self.health = health or Health(retry_s=1.0)
        self._cache: OrderedDict[str, Refreshing[KeyRecord | None]] = OrderedDict()

    async def authenticate(self, token: str, deadline: float | None = None) -> Principal:
        record = await self._lookup(key_digest(token), deadline)
        if record is None:
            raise Unauthorized("Incorrect API key provided.")
        if record.revoked_at is not None and record.rotated_at is None:
            raise Unauthorized(
                f"This API key ({record.prefix}...) was revoked at {_iso(record.revoked_at)}.",
                code="api_key_revoked",
            )
        if record.revoked_at is not None or (
            record.expires_at is not None and self._wall() >= record.expires_at
        ):
            what = "was rotated out" if record.rotated_at is not None else "expired"
            when = _iso(record.expires_at or record.revoked_at)
            raise Unauthorized(
                f"This API key ({record.prefix}...) {what} at {when}.",
                code="api_key_expired",
            )
        return record.principal()

    async def _lookup(self, digest: str, deadline: float | None) -> KeyRecord | None:
        entry = self._cache.get(digest)
        if entry is None:
            entry = self._cache[digest] = Refreshing(
                partial(self._read, digest),
                "a key lookup",
                max_age_s=self._max_age_s,
                timeout_s=self._timeout_s,
                grace_s=0.0,  # a revoke must stop the key within max_age_s: wait for the read
                max_stale_s=self._max_stale_s,
                health=self.health,
                on_error=self._failed,
                clock=self._clock,
            )
            while len(self._cache) > self._max_entries:
                self._cache.popitem(last=False)
        else:
            self._cache.move_to_end(digest)
        try:
            return await entry.get(deadline)
        except Unavailable:
            raise ServiceUnavailable(
                "The key store could not be reached to check this API key; retry shortly.",
                code="auth_unavailable",
            ) from None

    def _read(self, digest: str) -> KeyRecord | None:
        return self.store.by_digest(digest)

    def _failed(self, exc: BaseException) -> None:
        log.warning(
            "key store unreachable (%s); keys seen in the last %.0f s keep serving from the cache",
            type(exc).__name__,
            self._max_age_s + self._max_stale_s,
        )

    def forget(self, token: str | None = None) -> None:
        """Drop one cached key (or all): the next request reads the store."""
        if token is None:
            self._cache.clear()
        else:
            self._cache.pop(key_digest(token), None)
