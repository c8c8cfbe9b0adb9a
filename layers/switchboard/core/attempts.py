"""One attempt at an upstream, as the engine records it, and how it reads in a header.

The engine appends an ``AttemptRecord`` per try (retries and fallbacks included); the exchange and
a ``GatewayError`` carry the list, the cost event and the ``x-switchboard-trail`` header read it.
"""

from __future__ import annotations

import urllib.parse
from dataclasses import dataclass

__all__ = ["AttemptRecord", "header_safe"]


@dataclass(slots=True)
class AttemptRecord:
    target: str
    outcome: str  # "ok", "cancelled" (a hedge's loser) or an ErrorClass value
    status: int | None
    latency_ms: float
    waited_ms: float = 0.0  # backoff slept before this attempt (neither upstream nor gateway work)
    resets_at: float | None = None  # monotonic time the upstream said to retry after (Retry-After)

    def render(self) -> str:
        return header_safe(f"{self.target};{self.outcome};{self.status or '-'};{self.latency_ms:.0f}ms")


def header_safe(value: str) -> str:
    """``value`` as an HTTP header value: model names may hold any Unicode, headers only Latin-1."""
    return value if value.isascii() else urllib.parse.quote(value, safe="/:;,._-@+ ")
