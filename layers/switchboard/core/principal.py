"""Who a request is: a bearer key in, a principal out, and the limits a key, team or user carries.

``Authenticator`` is the seam; the DynamoDB key store (``switchboard.limits.keys``) implements it.
Keys are found by SHA-256 digest, and only the digest's prefix ever names a key in logs or
headers. Nothing compares key material with ``==``: a key is looked up by its digest (the cache's
dict, DynamoDB's partition key), and what a lookup's timing could reveal is a digest, from which no
key can be worked back. Any future direct comparison of a key or digest must use
``hmac.compare_digest`` (``tests/unit/test_principal.py`` fails on an ``==`` over either).
"""

from __future__ import annotations

import enum
import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Protocol

from switchboard.core.errors import Unauthorized

__all__ = [
    "Authenticator",
    "Limits",
    "Period",
    "Principal",
    "Scope",
    "bearer_token",
    "key_digest",
]


class Scope(enum.StrEnum):
    """What a budget or a rate limit is attached to."""

    KEY = "key"
    TEAM = "team"
    USER = "user"
    MODEL = "model"  # a model alias, as the client names it (after routing rules)


class Period(enum.StrEnum):
    """A budget period in UTC. Its id is part of the ledger item's key, so nothing resets it."""

    DAY = "day"
    WEEK = "week"
    MONTH = "month"
    TOTAL = "total"

    def period_id(self, now: datetime) -> str:
        """``2026-11-25`` (day), ``2026-W48`` (ISO week), ``2026-11`` (month) or ``total``."""
        now = now.astimezone(UTC)
        if self is Period.DAY:
            return now.strftime("%Y-%m-%d")
        if self is Period.WEEK:
            year, week, _ = now.isocalendar()
            return f"{year}-W{week:02d}"
        if self is Period.MONTH:
            return now.strftime("%Y-%m")
        return "total"

    def resets_at(self, now: datetime) -> datetime | None:
        """When the period that contains ``now`` ends (None for ``total``)."""
        day = now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
        if self is Period.DAY:
            return day + timedelta(days=1)
        if self is Period.WEEK:
            return day + timedelta(days=7 - day.weekday())
        if self is Period.MONTH:
            first = day.replace(day=1)
            return (
                first.replace(year=first.year + 1, month=1)
                if first.month == 12
                else first.replace(month=first.month + 1)
            )
        return None


@dataclass(frozen=True, slots=True)
class Limits:
    """The limits attached to one scope: a budget per period and per-minute rates. All optional."""

    budget_usd: Decimal | None = None
    period: Period = Period.MONTH
    rpm: int | None = None
    tpm: int | None = None
    # A budget or rate limit under more load than one item takes (a shared one, or a busy key's) is
    # split into this many lanes (docs/limits.md, "At scale").
    lanes: int = 1

    @property
    def empty(self) -> bool:
        return self.budget_usd is None and self.rpm is None and self.tpm is None

    @property
    def rated(self) -> bool:
        return self.rpm is not None or self.tpm is not None


@dataclass(frozen=True, slots=True)
class Principal:
    key_id: str
    name: str
    team: str | None = None
    allowed_models: frozenset[str] | None = None  # None: every alias
    user: str | None = None
    tags: tuple[str, ...] = ()
    limits: Limits | None = None  # the key's own budget and rates (DynamoDB key store)
    overrides: frozenset[str] = frozenset()  # per-request routing overrides it may use (routing.overrides)


class Authenticator(Protocol):
    async def authenticate(self, token: str, deadline: float | None = None) -> Principal:
        """The key's principal. ``deadline`` (``time.monotonic``): the request's, which no lookup
        may outlast."""
        ...


def key_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def bearer_token(authorization: str | None, x_api_key: str | None, api_key: str | None = None) -> str:
    """The client key from ``Authorization: Bearer`` (OpenAI SDK), ``x-api-key`` (Anthropic SDK)
    or ``api-key`` (Azure OpenAI clients), in that order."""
    if authorization:
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return token.strip()
    for header in (x_api_key, api_key):
        if header and header.strip():
            return header.strip()
    raise Unauthorized(
        "You didn't provide an API key. Send it as 'Authorization: Bearer <key>'.", code="missing_api_key"
    )
