"""Client authentication: a bearer key in, a principal out.

``Authenticator`` is the seam. ``SsmKeyAuthenticator`` checks one key held in an SSM SecureString;
the DynamoDB key store replaces it without touching the app. Keys are compared by SHA-256 digest
in constant time, and only the digest's prefix ever names a key in logs or headers.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from switchboard.errors import Unauthorized

if TYPE_CHECKING:
    from switchboard.limits.model import Limits

__all__ = ["Authenticator", "Principal", "SsmKeyAuthenticator", "bearer_token", "key_digest"]


@dataclass(frozen=True, slots=True)
class Principal:
    key_id: str
    name: str
    team: str | None = None
    allowed_models: frozenset[str] | None = None  # None: every alias
    user: str | None = None
    tags: tuple[str, ...] = ()
    limits: Limits | None = None  # the key's own budget and rates (DynamoDB key store)


class Authenticator(Protocol):
    async def authenticate(self, token: str) -> Principal: ...


def key_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def bearer_token(authorization: str | None, x_api_key: str | None) -> str:
    """The client key from ``Authorization: Bearer`` (OpenAI SDK) or ``x-api-key`` (Anthropic SDK)."""
    if authorization:
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return token.strip()
    if x_api_key and x_api_key.strip():
        return x_api_key.strip()
    raise Unauthorized(
        "You didn't provide an API key. Send it as 'Authorization: Bearer <key>'.", code="missing_api_key"
    )


class SsmKeyAuthenticator:
    """One shared client key, read from an SSM SecureString and re-read every ``max_age_s``."""

    def __init__(
        self,
        fetch: Callable[[], str],
        max_age_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._fetch = fetch
        self._max_age_s = max_age_s
        self._clock = clock
        self._digest: bytes | None = None
        self._loaded_at = float("-inf")

    @classmethod
    def from_ssm(cls, name: str, max_age_s: float, ssm_client: Callable[[], Any]) -> SsmKeyAuthenticator:
        def fetch() -> str:
            return str(ssm_client().get_parameter(Name=name, WithDecryption=True)["Parameter"]["Value"])

        return cls(fetch, max_age_s)

    async def authenticate(self, token: str) -> Principal:
        if self._digest is None or self._clock() - self._loaded_at >= self._max_age_s:
            try:
                value = await asyncio.to_thread(self._fetch)
            except Exception:
                if self._digest is None:
                    raise
            else:
                self._digest = hashlib.sha256(value.strip().encode()).digest()
                self._loaded_at = self._clock()
        assert self._digest is not None
        given = hashlib.sha256(token.encode()).digest()
        if not hmac.compare_digest(given, self._digest):
            raise Unauthorized("Incorrect API key provided.")
        return Principal(key_id=given.hex()[:12], name="ssm-key")
