"""One request's journey through the gateway, and the hooks that act on it.

The request pipeline (``http.pipeline``) fills an ``Exchange`` as it goes and calls every hook twice:

    authenticate -> parse -> plan -> hook.admit(ex) -> engine -> response -> hook.settle(ex)

``admit`` may refuse the request (a ``GatewayError`` such as 402 or 429) and may add response
headers; it runs before any upstream call. ``settle`` runs exactly once per request that reached
``admit``, after a buffered response is built, after a stream's last byte, or after a failure, and
must not raise. A request refused at admit is settled too, with ``outcome == "rejected"``: hooks
that admitted it before the refusal release what they reserved, and the refusal is counted. Every
hook is settled then, including the refusing one and those whose ``admit`` never ran, so a hook
that reserves keeps a note in ``ex.state`` and releases only what it holds.
Budgets, rate limits and cost events are hooks; the handler knows none of them.

The pipeline's stages that are the exchange's: ``admit`` (run every admit, settle a refusal),
``settled_on_failure`` (around the upstream call: settle a failure or a cancellation, shielded) and
``settled_stream`` (settle once a stream ends, however it ends).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Protocol

from switchboard.core.attempts import AttemptRecord
from switchboard.core.errors import GatewayError
from switchboard.core.money import Price
from switchboard.core.principal import Principal
from switchboard.core.schemas import ChatCompletionRequest, Usage
from switchboard.routing.planner import Plan, PlannedTarget

__all__ = ["BOOKED", "Exchange", "Hook", "admit", "settle_all", "settled_on_failure", "settled_stream"]

log = logging.getLogger("switchboard.lifecycle")

# ex.state flag: the request is already in the spend ledger, written in the limits settlement
# transaction (``limits.hook`` sets it, ``billing.spendledger`` then writes no line of its own).
BOOKED = "spend.booked"


@dataclass(slots=True)
class Exchange:
    request_id: str
    principal: Principal
    chat: ChatCompletionRequest
    routing_revision: str
    plan: Plan
    started: float = field(default_factory=time.monotonic)
    headers: dict[str, str] = field(default_factory=dict)
    target: PlannedTarget | None = None
    attempts: list[AttemptRecord] = field(default_factory=list)
    usage: Usage | None = None
    first_token_at: float | None = None
    finished_at: float | None = None
    outcome: str = "pending"  # ok | error | interrupted | rejected
    status: int = 0
    error_code: str | None = None
    state: dict[str, Any] = field(default_factory=dict)  # per-hook scratch, keyed by the hook's name
    # Set before settle by the handler (switchboard.billing.metering): what the request cost. ``usage`` is
    # estimated when the upstream reported none; ``cost_usd`` is None when the target has no price.
    price: Price | None = None
    price_origin: str | None = None  # "override" (routing document) or "builtin"
    cost_usd: Decimal | None = None
    usage_estimated: bool = False
    rule: str | None = None  # the routing rule that fired, if any
    # "chat", "messages" or "embeddings". For embeddings ``chat`` is a stand-in (one user message
    # holding the input) for estimation only, and no output tokens are reserved or billed.
    kind: str = "chat"
    # When the whole request must be done (``time.monotonic()``; http.request.request_deadline): the client's
    # timeout capped by the Lambda's. Hooks bound their own calls by it. None: no deadline given.
    deadline: float | None = None

    @property
    def alias(self) -> str:
        return self.plan.alias


class Hook(Protocol):
    async def admit(self, ex: Exchange) -> None: ...

    async def settle(self, ex: Exchange) -> None: ...


async def settle_all(hooks: list[Hook], ex: Exchange) -> None:
    """Run every hook's ``settle``; one failing hook never stops the others or the response."""
    if ex.finished_at is None:
        ex.finished_at = time.monotonic()
    for hook in hooks:
        try:
            await hook.settle(ex)
        except Exception:
            log.exception("settle failed in %s for request %s", type(hook).__name__, ex.request_id)


async def admit(hooks: list[Hook], ex: Exchange) -> None:
    """Run every hook's ``admit``; a refusal is settled (``rejected``) and raised."""
    try:
        for hook in hooks:
            await hook.admit(ex)
    except GatewayError as exc:
        ex.outcome, ex.status, ex.error_code = "rejected", exc.status, exc.code
        await settle_all(hooks, ex)
        raise


@asynccontextmanager
async def settled_on_failure(hooks: list[Hook], ex: Exchange) -> AsyncIterator[None]:
    """Around the upstream call: a failure (every target failed, nothing billed) or a cancellation
    settles the exchange before it propagates. Success is the caller's to settle."""
    try:
        yield
    except GatewayError as exc:
        ex.outcome, ex.status, ex.error_code = "error", exc.status, exc.code
        ex.attempts, ex.cost_usd = exc.attempts, Decimal(0)  # no answer, nothing billed
        await settle_all(hooks, ex)
        raise
    except BaseException:
        if ex.error_code == "client_disconnected":  # a stream committed early (heartbeats), then left
            ex.outcome = "interrupted"
        else:
            ex.outcome, ex.status = "error", 500
        await asyncio.shield(settle_all(hooks, ex))
        raise


async def settled_stream(
    data: AsyncIterator[bytes], ex: Exchange, hooks: list[Hook], finish: Callable[[Exchange], None]
) -> AsyncIterator[bytes]:
    """``data`` as it comes; once it ends (its last byte, an upstream failure, a client that left)
    ``finish`` puts usage, cost and outcome on ``ex`` and the hooks are settled, exactly once."""
    try:
        async for chunk in data:
            yield chunk
    finally:
        finish(ex)
        # Shielded: a client that disconnects cancels this generator, but never the settlement.
        await asyncio.shield(settle_all(hooks, ex))
