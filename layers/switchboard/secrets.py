"""Provider credentials, resolved from SSM SecureString or Secrets Manager and cached briefly.

Values are held in memory only; nothing here logs or returns a value anywhere but to the caller.
Each value is registered with ``switchboard.redaction`` as it is handed out, so that whatever text
leaves the gateway (error bodies, logs, cost events) is scrubbed of it, even when an upstream
echoes a key that looks like nothing in particular.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from switchboard import redaction
from switchboard.routing.document import SecretRef

__all__ = ["SecretResolver", "SecretUnavailable"]


class SecretUnavailable(Exception):
    """A referenced credential could not be read. The message names the reference, not the value."""


class SecretResolver:
    def __init__(
        self,
        ssm_client: Callable[[], Any],
        secrets_client: Callable[[], Any],
        max_age_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._ssm = ssm_client
        self._sm = secrets_client
        self._max_age_s = max_age_s
        self._clock = clock
        self._cache: dict[SecretRef, tuple[float, str]] = {}

    async def resolve(self, ref: SecretRef) -> str:
        hit = self._cache.get(ref)
        if hit is not None and self._clock() - hit[0] < self._max_age_s:
            redaction.register(hit[1])  # refreshes its place: a key in use never ages out
            return hit[1]
        value = await asyncio.to_thread(self._fetch, ref)
        redaction.register(value)
        self._cache[ref] = (self._clock(), value)
        return value

    def _fetch(self, ref: SecretRef) -> str:
        try:
            if ref.ssm is not None:
                out = self._ssm().get_parameter(Name=ref.ssm, WithDecryption=True)
                return str(out["Parameter"]["Value"])
            out = self._sm().get_secret_value(SecretId=ref.secretsmanager)
            return str(out["SecretString"])
        except Exception as exc:
            where = f"ssm:{ref.ssm}" if ref.ssm else f"secretsmanager:{ref.secretsmanager}"
            raise SecretUnavailable(f"credential {where} could not be read ({type(exc).__name__})") from None
