"""Client authentication: a bearer key in, a principal out.

``Authenticator`` is the seam; the DynamoDB key store (``switchboard.limits.keys``) implements it.
Keys are found by SHA-256 digest, and only the digest's prefix ever names a key in logs or
headers. Nothing compares key material with ``==``: a key is looked up by its digest (the cache's
dict, DynamoDB's partition key), and what a lookup's timing could reveal is a digest, from which no
key can be worked back. Any future direct comparison of a key or digest must use
``hmac.compare_digest`` (``tests/unit/test_auth.py`` fails on an ``==`` over either).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from switchboard.errors import Unauthorized

if TYPE_CHECKING:
    from switchboard.limits.model import Limits

__all__ = ["Authenticator", "Principal", "bearer_token", "key_digest"]


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
