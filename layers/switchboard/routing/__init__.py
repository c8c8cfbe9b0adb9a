"""Routing: the document operators edit, the store that loads it, the planner that reads it, and
the price book that prices its targets (the document's ``prices`` over the built-in table)."""

from switchboard.routing.document import RoutingDocument, Target, load_document
from switchboard.routing.planner import Plan, PlannedTarget, plan
from switchboard.routing.store import LoadedRouting, RoutingStore, RoutingUnavailable

__all__ = [
    "LoadedRouting",
    "Plan",
    "PlannedTarget",
    "RoutingDocument",
    "RoutingStore",
    "RoutingUnavailable",
    "Target",
    "load_document",
    "plan",
]
