"""Scheduled sweeper entry point: refunds orphaned budget reservations (switchboard.limits.sweeper)."""

from switchboard.limits.sweeper import Sweeper

handler = Sweeper.from_env()
