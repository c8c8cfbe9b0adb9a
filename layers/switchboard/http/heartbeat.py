"""Heartbeats: a stream that has no output yet commits its 200 and keeps the line alive.

API Gateway drops a response stream after 5 minutes without a byte, and a client's own idle timer
may be shorter; a reasoning model can think for longer than either before its first token. So the
endpoints start the plan (retries and failover included) as a task: if it has found no output after
``heartbeat_after_s``, the response starts anyway with an SSE comment (``: keep-alive``), one more
follows every ``heartbeat_every_s``, and the plan goes on underneath. Failover stays invisible,
since no content has been sent; a later total failure ends the stream with an error event in the
endpoint's shape. A comment is ignored by every SSE client (the WHATWG spec's ``:`` lines).

The plan's task settles its own failure or cancellation (``lifecycle.settled_on_failure`` runs in
it), so a client that leaves during the heartbeats cancels the plan and the request is settled.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

__all__ = ["KEEP_ALIVE", "after_s", "keep_alive", "left", "start", "within"]

T = TypeVar("T")

KEEP_ALIVE = b": keep-alive\n\n"


def after_s(document_value: float | None, setting: float) -> float:
    """The routing document's ``defaults.heartbeat_after_s`` when set, else the setting's."""
    return setting if document_value is None else document_value


def start(plan: Awaitable[T]) -> asyncio.Task[T]:
    """The plan as a task of its own, so the response can start before it is done."""
    return asyncio.ensure_future(plan)


async def within(task: asyncio.Task[T], after_s: float) -> bool:
    """Whether ``task`` finished within ``after_s``. If the caller is cancelled meanwhile (the
    client left before any response), the task is cancelled too."""
    try:
        done, _ = await asyncio.wait({task}, timeout=after_s)
    except asyncio.CancelledError:
        task.cancel()
        raise
    return bool(done)


async def keep_alive(
    task: asyncio.Task[T], every_s: float, on_leave: Callable[[], None] | None = None
) -> AsyncIterator[bytes]:
    """``KEEP_ALIVE`` now and every ``every_s`` until ``task`` is done; cancels the task when the
    iteration is abandoned first (the client left), calling ``on_leave`` just before."""
    try:
        yield KEEP_ALIVE
        while True:
            done, _ = await asyncio.wait({task}, timeout=every_s)
            if done:
                return
            yield KEEP_ALIVE
    finally:
        if not task.done():
            if on_leave is not None:
                on_leave()
            task.cancel()  # its settlement (settled_on_failure, in the task) is shielded


def left(ex: Any) -> None:
    """Mark an exchange whose client left during the comments: its 200 was sent, so it settles as
    ``interrupted`` / ``client_disconnected`` (``lifecycle.settled_on_failure``), not as an error."""
    ex.status, ex.error_code = 200, "client_disconnected"
