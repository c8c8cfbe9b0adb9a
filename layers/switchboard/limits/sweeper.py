"""The sweeper: refunds reservations whose request outlived its deadline (the instance died).

A scheduled Lambda (``functions/sweeper``) and ``switchboard budgets sweep`` both run it. Each
refund is the ledger's ordinary settlement at zero, so a request that does finish later, or a
second sweeper running at the same time, finds the reservation gone and changes nothing.
"""

from __future__ import annotations

import logging
from decimal import Decimal
from typing import Any

from switchboard.limits.ledger import Ledger
from switchboard.limits.table import Table
from switchboard.settings import Settings

__all__ = ["Sweeper"]

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
        refunded = self.ledger.sweep()
        total = sum((hold.usd for hold in refunded), Decimal(0))
        _count(len(refunded))
        log.info("sweeper refunded %d reservations, %s USD", len(refunded), total)
        return {"refunded": len(refunded), "usd": str(total)}


def _count(refunded: int) -> None:
    """``ReservationsRefunded`` (EMF): more than a trickle means instances die mid-request."""
    from aws_lambda_powertools.metrics import MetricUnit, single_metric

    with single_metric(
        name="ReservationsRefunded", unit=MetricUnit.Count, value=refunded, namespace="Switchboard"
    ) as metric:
        metric.add_dimension(name="service", value="switchboard")
