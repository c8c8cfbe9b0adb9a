"""The sweeper: closes reservations whose request outlived its deadline.

A scheduled Lambda (``functions/sweeper``) and ``switchboard budgets sweep`` both run it. A
reservation whose request wrote its actual cost onto it (its settlement transaction could not be
made: see ``switchboard.limits.settlement``) is settled at that cost; any other is refunded (its
instance died mid-request). Either is the ledger's ordinary settlement, so a request that does
finish later, or a second sweeper running at the same time, finds the reservation gone and changes
nothing.
"""

from __future__ import annotations

import logging
from decimal import Decimal
from typing import Any

from switchboard.core.settings import Settings
from switchboard.limits.ledger import Ledger, Swept
from switchboard.limits.table import Table

__all__ = ["Sweeper", "summarize"]

log = logging.getLogger("switchboard.sweeper")


class Sweeper:
    """A Lambda handler: ``handler = Sweeper.from_env()``."""

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger

    @classmethod
    def from_env(cls, settings: Settings | None = None) -> Sweeper:
        settings = settings or Settings.from_env()
        return cls(Ledger(Table.from_settings(settings.table, settings.region, runtime=True)))

    def __call__(self, event: Any = None, context: Any = None) -> dict[str, Any]:
        swept = self.ledger.sweep()
        summary = summarize(swept)
        _count("ReservationsRefunded", len(swept.refunded))
        _count("ReservationsSettledBySweeper", len(swept.settled))
        _count("LeasesReturned", len(swept.returned))
        log.info(
            "sweeper refunded %d reservations (%s USD), settled %d at their recorded cost (%s USD)",
            summary["refunded"],
            summary["usd"],
            summary["settled"],
            summary["settled_usd"],
        )
        return summary


def summarize(swept: Swept) -> dict[str, Any]:
    """What a sweep did, as the handler and ``switchboard budgets sweep --json`` report it."""
    refunded = sum((hold.usd for hold in swept.refunded), Decimal(0))
    settled = sum((usd for _, usd in swept.settled), Decimal(0))
    return {
        "refunded": len(swept.refunded),
        "usd": str(refunded),
        "settled": len(swept.settled),
        "settled_usd": str(settled),
        "busy": swept.busy,
        "leases_returned": len(swept.returned),
    }


def _count(name: str, value: int) -> None:
    """``ReservationsRefunded`` (EMF): more than a trickle means instances die mid-request.
    ``ReservationsSettledBySweeper``: settlements DynamoDB would not take in time (see the alarm
    advice in docs/limits.md)."""
    from aws_lambda_powertools.metrics import MetricUnit, single_metric

    with single_metric(name=name, unit=MetricUnit.Count, value=value, namespace="Switchboard") as metric:
        metric.add_dimension(name="service", value="switchboard")
