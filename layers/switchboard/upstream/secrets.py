"""Provider credentials, resolved from SSM SecureString or Secrets Manager and cached briefly.

Values are held in memory only; nothing here logs or returns a value anywhere but to the caller.
Each value is registered with ``switchboard.core.redaction`` as it is handed out, so that whatever text
leaves the gateway (error bodies, logs, cost events) is scrubbed of it, even when an upstream
echoes a key that looks like nothing in particular.

Each credential is re-read once it is ``max_age_s`` old, in the background while the copy is
younger than ``max_age_s + timeout_s`` (a rotated provider key is in use within that), and the
last copy keeps serving while SSM or Secrets Manager fail (``switchboard.infra.refresh``). A credential
never read is waited for at most ``timeout_s`` (the engine's own deadline also bounds the wait),
one read shared by every request that needs it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from functools import partial
from typing import Any

from switchboard.core import redaction
from switchboard.infra.refresh import Health, Refreshing, Unavailable
from switchboard.routing.document import SecretRef

__all__ = ["SecretResolver", "SecretUnavailable"]

log = logging.getLogger("switchboard.secrets")


class SecretUnavailable(Exception):
    """A referenced credential could not be read. The message names the reference, not the value."""


def _where(ref: SecretRef) -> str:
    return f"ssm:{ref.ssm}" if ref.ssm else f"secretsmanager:{ref.secretsmanager}"


class SecretResolver:
    def __init__(
        self,
        ssm_client: Callable[[], Any],
        secrets_client: Callable[[], Any],
        max_age_s: float,
        clock: Callable[[], float] = time.monotonic,
        *,
        timeout_s: float = 1.0,
    ) -> None:
        self._ssm = ssm_client
        self._sm = secrets_client
        self._max_age_s = max_age_s
        self._timeout_s = timeout_s
        self._clock = clock
        self._health = Health(retry_s=min(max_age_s, 5.0))
        self._cache: dict[SecretRef, Refreshing[str]] = {}

    async def resolve(self, ref: SecretRef) -> str:
        entry = self._cache.get(ref)
        if entry is None:
            where = _where(ref)
            entry = self._cache[ref] = Refreshing(
                partial(self._fetch, ref),
                f"credential {where}",
                max_age_s=self._max_age_s,
                timeout_s=self._timeout_s,
                health=self._health,
                on_error=lambda exc: log.warning(
                    "credential %s could not be read (%s)", where, type(exc).__name__
                ),
                clock=self._clock,
            )
        try:
            value = await entry.get()
        except Unavailable as exc:
            raise SecretUnavailable(f"{exc}; see the gateway's logs") from None
        redaction.register(value)  # refreshes its place: a key in use never ages out
        return value

    def _fetch(self, ref: SecretRef) -> str:
        if ref.ssm is not None:
            out = self._ssm().get_parameter(Name=ref.ssm, WithDecryption=True)
            return str(out["Parameter"]["Value"])
        out = self._sm().get_secret_value(SecretId=ref.secretsmanager)
        return str(out["SecretString"])
