"""The pure part of limits: windows and the reservation arithmetic (the limit definitions,
``Scope``, ``Period`` and ``Limits``, are in ``core.principal``, beside the key they belong to).

Nothing here does I/O, so every rule the DynamoDB ledger enforces can be tested (and
property-tested) on its own:

* a budget admits a request when ``used + estimate <= limit``, written as the condition
  ``used <= limit - estimate`` because DynamoDB conditions have no arithmetic;
* ``used`` is ``spent + reserved``; settling moves a reservation into ``spent`` at the actual cost,
  a refund removes it;
* money is ``Decimal`` rounded to ``LEDGER_QUANTUM``: estimates round up, actual costs to nearest.
"""

from __future__ import annotations

import math
from decimal import ROUND_CEILING, ROUND_HALF_EVEN, Decimal

from switchboard.core.money import DEFAULT_OUTPUT_TOKENS, MTOK, Price

__all__ = [
    "LANE_RPS",
    "LEDGER_QUANTUM",
    "MAX_LANES",
    "MIN_LANE_RPM",
    "RATE_WINDOW_S",
    "admits",
    "estimate_usd",
    "headroom",
    "lanes_for",
    "ledger_usd",
    "output_bound",
    "rate_window",
    "reserve_usd",
    "settle_amounts",
]

# One nano-dollar: far below a cent, and it keeps DynamoDB numbers short (38 digits at most).
LEDGER_QUANTUM = Decimal("1e-9")
# Rate limits count in fixed calendar minutes (see docs/limits.md for the burst behaviour).
RATE_WINDOW_S = 60
# A budget's or a shared rate limit's lanes (docs/limits.md, "At scale"): a 402 or 429 in lanes
# reads every lane, 100 per call. One lane per LANE_RPS requests/s of peak load keeps about 94 %
# of admissions to one round trip (the scale simulation); a lane's share of an rpm is at least
# MIN_LANE_RPM requests a minute (the rounding loses less than one request a lane).
MAX_LANES = 1000
LANE_RPS = 5
MIN_LANE_RPM = 20


def lanes_for(peak_rps: float) -> int:
    """The lanes for a budget or rate limit whose load peaks at ``peak_rps`` requests/s."""
    return max(1, min(MAX_LANES, math.ceil(peak_rps / LANE_RPS)))


def output_bound(requested: int | None, price: Price | None, choices: int = 1) -> int:
    """The most output tokens a request can produce on one target, over all its choices.

    The client's ``max_tokens`` and the model's ``max_output_tokens`` both cap the output, so the
    smaller one is the bound; with neither, ``DEFAULT_OUTPUT_TOKENS`` stands in.
    """
    caps = [c for c in (requested, price.max_output_tokens if price else None) if c]
    return (min(caps) if caps else DEFAULT_OUTPUT_TOKENS) * max(1, choices)


def estimate_usd(price: Price, prompt_tokens: int, output_tokens: int) -> Decimal:
    """An upper bound on the cost: every prompt token at the dearest input rate (cache writes
    can cost more than plain input), every output token at the output rate."""
    input_rate = max(
        r
        for r in (price.input_per_mtok, price.cached_input_per_mtok, price.cache_write_per_mtok)
        if r is not None
    )
    return reserve_usd((prompt_tokens * input_rate + output_tokens * price.output_per_mtok) / MTOK)


def reserve_usd(value: Decimal) -> Decimal:
    """An estimate on the ledger: rounded up, so a reservation never under-holds."""
    return value.quantize(LEDGER_QUANTUM, rounding=ROUND_CEILING)


def ledger_usd(value: Decimal) -> Decimal:
    """An actual cost on the ledger: rounded to the nearest nano-dollar."""
    return value.quantize(LEDGER_QUANTUM, rounding=ROUND_HALF_EVEN)


def headroom(limit: Decimal, estimate: Decimal) -> Decimal:
    """The largest ``used`` that still admits ``estimate`` under ``limit`` (negative: never)."""
    return limit - estimate


def admits(used: Decimal, estimate: Decimal, limit: Decimal) -> bool:
    """The budget condition, exactly as the ledger writes it: ``used <= limit - estimate``."""
    room = headroom(limit, estimate)
    return room >= 0 and used <= room


def settle_amounts(reserved: Decimal, actual: Decimal) -> tuple[Decimal, Decimal, Decimal]:
    """(delta of used, delta of reserved, delta of spent) when a reservation settles at ``actual``.

    A refund is ``actual = 0``. ``used`` stays ``spent + reserved`` whatever the values.
    """
    return actual - reserved, -reserved, actual


def rate_window(now_s: float) -> tuple[int, float]:
    """The fixed window containing ``now_s`` (epoch seconds): its number and the seconds until it ends."""
    window = int(now_s // RATE_WINDOW_S)
    return window, (window + 1) * RATE_WINDOW_S - now_s


def retry_after_s(seconds: float) -> int:
    """A ``Retry-After`` value: whole seconds, at least one."""
    return max(1, math.ceil(seconds))


def reset_text(seconds: float) -> str:
    """OpenAI's ``x-ratelimit-reset-*`` format: ``250ms``, ``12s``, ``1m5s``."""
    if seconds < 1:
        return f"{max(0, round(seconds * 1000))}ms"
    whole = math.ceil(seconds)
    minutes, secs = divmod(whole, 60)
    return f"{minutes}m{secs}s" if minutes else f"{secs}s"
