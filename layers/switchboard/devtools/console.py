"""The local console of ``switchboard dev``: one page at ``/console``, no build step, never in Lambda.

``create_dev_app`` is the app ``switchboard dev`` serves: the gateway (``switchboard.http.app``) with
the console in front of it. The console shows

- the last requests (a hook, ``RecentRequests``, keeps the last ``LIMIT`` settled exchanges): each
  with its attempt trail, outcome, latency, time to first token and cost;
- spend by key and by model for a month, from the spend ledger (what ``switchboard spend`` reads),
  drawn as bar charts in inline SVG;
- the routing document in force, with its revision, each alias drawn as its chain of targets.

The page reads three JSON endpoints, which the tests read too: ``/console/api/requests``,
``/console/api/spend?period=YYYY-MM`` and ``/console/api/routing``. The gateway's Lambda entry
points (``functions/gateway``) build ``switchboard.http.app.create_app``, which has none of this.
"""

from __future__ import annotations

import asyncio
import collections
import json
import re
import time
from pathlib import Path
from typing import Any

from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.types import Receive, Scope, Send

from switchboard.exchange import Exchange
from switchboard.http.app import create_app
from switchboard.http.asgi import Front

__all__ = ["LIMIT", "Console", "RecentRequests", "create_dev_app"]

LIMIT = 200
PAGE = Path(__file__).with_name("console.html")
_PERIOD = re.compile(r"\d{4}-(0[1-9]|1[0-2])")


def _ms(start: float, end: float | None) -> float | None:
    return None if end is None else round((end - start) * 1000, 1)


class RecentRequests:
    """Hook: remembers the last ``limit`` requests as the console shows them. Never raises."""

    def __init__(self, limit: int = LIMIT) -> None:
        self.items: collections.deque[dict[str, Any]] = collections.deque(maxlen=limit)

    async def admit(self, ex: Exchange) -> None:
        return None

    async def settle(self, ex: Exchange) -> None:
        usage = ex.usage
        self.items.appendleft(
            {
                "request_id": ex.request_id,
                "at": time.time(),
                "endpoint": ex.kind,
                "model": ex.alias,
                "key": ex.principal.name or ex.principal.key_id,
                "stream": bool(ex.chat.stream),
                "outcome": ex.outcome,
                "status": ex.status,
                "error_code": ex.error_code,
                "target": ex.target.label if ex.target is not None else None,
                "trail": [
                    {
                        "target": a.target,
                        "outcome": str(a.outcome),
                        "status": a.status,
                        "latency_ms": a.latency_ms,
                    }
                    for a in ex.attempts
                ],
                "latency_ms": _ms(ex.started, ex.finished_at),
                "ttfb_ms": _ms(ex.started, ex.first_token_at),
                "input_tokens": usage.prompt_tokens if usage is not None else None,
                "output_tokens": usage.completion_tokens if usage is not None else None,
                "cost_usd": None if ex.cost_usd is None else format(ex.cost_usd.normalize(), "f"),
                "routing_revision": ex.routing_revision,
            }
        )


class Console:
    """The dev app: ``/console`` and its API here, everything else to the gateway's app."""

    def __init__(self, front: Front) -> None:
        self.front = front
        self.recent = RecentRequests()

    @property
    def state(self) -> Any:
        return self.front.state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.front(scope, receive, send)
            return
        self._attach()
        path: str = scope["path"]
        if path == "/console" or path.startswith("/console/"):
            response = await self._console(Request(scope, receive), path)
            await response(scope, receive, send)
            return
        await self.front(scope, receive, send)

    def _attach(self) -> None:
        gateway = getattr(self.front.state, "gateway", None)
        if gateway is not None and self.recent not in gateway.hooks:
            gateway.hooks.append(self.recent)

    async def _console(self, request: Request, path: str) -> Response:
        if request.method != "GET":
            return JSONResponse({"error": {"message": "GET only", "type": "invalid_request_error"}}, 405)
        if path in {"/console", "/console/"}:
            return HTMLResponse(PAGE.read_text(encoding="utf-8"), headers={"cache-control": "no-store"})
        if path == "/console/api/requests":
            return JSONResponse({"requests": list(self.recent.items)})
        if path == "/console/api/routing":
            return await self._routing()
        if path == "/console/api/spend":
            period = request.query_params.get("period") or time.strftime("%Y-%m", time.gmtime())
            if not _PERIOD.fullmatch(period):
                return JSONResponse({"error": {"message": f"{period!r} is not a month like 2026-11"}}, 400)
            return JSONResponse(await asyncio.to_thread(self._spend, period))
        return JSONResponse({"error": {"message": "Not found.", "type": "invalid_request_error"}}, 404)

    async def _routing(self) -> Response:
        gateway = self.front.state.gateway
        try:
            loaded = await gateway.routing.current()
        except Exception as exc:
            return JSONResponse({"error": {"message": str(exc)}}, 503)
        document = json.loads(loaded.document.model_dump_json(exclude_none=True))
        return JSONResponse({"revision": loaded.revision, "document": document})

    def _spend(self, period: str) -> dict[str, Any]:
        from switchboard.cli.spend import aggregate, query
        from switchboard.infra import aws

        settings = self.front.state.gateway.settings
        items = list(query(aws.client("dynamodb", settings.region), settings.table, period))
        result: dict[str, Any] = {"period": period}
        for by in ("key", "model"):
            rows, total = aggregate(items, by)
            result[f"by_{by}"] = [row.as_json() for row in rows]
            result["total"] = total.as_json()
        return result


def create_dev_app() -> Console:
    """The app of ``switchboard dev``: the gateway, built from the environment, and the console."""
    return Console(create_app())
