"""CORS, so that browser apps can call the gateway: off unless the routing document says otherwise.

The routing document's ``cors`` section (``switchboard.routing.document.Cors``) lists the origins
allowed. ``CorsFront`` is the app's front door (``switchboard.http.asgi.Front``) with CORS added:

- a request without an ``Origin`` header (every SDK, curl, server-to-server) goes through
  untouched: no extra coroutine on its path, no routing lookup;
- a preflight (``OPTIONS`` with ``Access-Control-Request-Method``) is answered here, in the same
  invocation: 204 with the allowed methods and headers for an allowed origin, 403 in OpenAI's
  error shape for another one, and Starlette's 405 as before when CORS is off;
- any other request from an allowed origin gets ``Access-Control-Allow-Origin`` and the exposed
  ``x-request-id``/``x-switchboard-*`` headers on its response, errors and streams included.
"""

from __future__ import annotations

import json
from collections.abc import MutableMapping
from typing import Any

from starlette.types import Message, Receive, Scope, Send

from switchboard.http.asgi import Front
from switchboard.routing.document import Cors

__all__ = ["EXPOSED", "CorsFront"]

METHODS = b"GET, POST, OPTIONS"
# Every header the gateway answers with (a test finds them in the package and checks they are
# here): a browser app reads the cost, the trail and the routing decision as a server does.
EXPOSED = (
    b"x-request-id, x-switchboard-provider, x-switchboard-model, x-switchboard-attempts, "
    b"x-switchboard-trail, x-switchboard-routing-version, x-switchboard-cost-usd, "
    b"x-switchboard-budget, x-switchboard-estimated, x-switchboard-rule, x-switchboard-overrides, "
    b"x-switchboard-breaker, x-switchboard-dropped-tools, x-switchboard-stored, retry-after"
)
_DEFAULT_ALLOWED_HEADERS = b"authorization, content-type"


def _header(scope: Scope, name: bytes) -> bytes | None:
    for key, value in scope["headers"]:
        if key == name:
            return bytes(value)
    return None


class CorsFront(Front):
    """``Front`` with CORS from the routing document in force."""

    async def _policy(self) -> Cors | None:
        gateway = getattr(self.app.state, "gateway", None)
        if gateway is None:
            return None
        try:
            loaded = await gateway.routing.current()
        except Exception:  # routing unavailable: no CORS; the request itself reports the problem
            return None
        policy: Cors | None = loaded.document.cors
        return policy

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        origin = _header(scope, b"origin") if scope["type"] == "http" else None
        if origin is None:
            await super().__call__(scope, receive, send)
            return
        policy = await self._policy()
        allowed = policy is not None and (
            "*" in policy.allow_origins or origin.decode("latin-1") in policy.allow_origins
        )
        preflight = scope["method"] == "OPTIONS" and _header(scope, b"access-control-request-method")
        if preflight and policy is not None:
            await self._preflight(scope, send, origin, policy if allowed else None)
            return
        if not allowed:
            await super().__call__(scope, receive, send)
            return
        extra = [
            (b"access-control-allow-origin", origin),
            (b"access-control-expose-headers", EXPOSED),
            (b"vary", b"Origin"),
        ]

        async def send_with_cors(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), *extra]}
            await send(message)

        await super().__call__(scope, receive, send_with_cors)

    @staticmethod
    async def _preflight(scope: Scope, send: Send, origin: bytes, policy: Cors | None) -> None:
        headers: list[tuple[bytes, bytes]] = [(b"vary", b"Origin")]
        if policy is None:
            status = 403
            message = (
                f"Origin {origin.decode('latin-1')!r} is not allowed: the routing document's "
                "cors.allow_origins does not list it."
            )
            error: dict[str, Any] = {
                "message": message,
                "type": "invalid_request_error",
                "param": None,
                "code": "cors_origin_not_allowed",
            }
            body = json.dumps({"error": error}).encode()
            headers.append((b"content-type", b"application/json"))
        else:
            status = 204
            body = b""
            requested = _header(scope, b"access-control-request-headers")
            headers += [
                (b"access-control-allow-origin", origin),
                (b"access-control-allow-methods", METHODS),
                (b"access-control-allow-headers", requested or _DEFAULT_ALLOWED_HEADERS),
                (b"access-control-max-age", str(policy.max_age_s).encode()),
            ]
        headers.append((b"content-length", str(len(body)).encode()))
        start: MutableMapping[str, Any] = {
            "type": "http.response.start",
            "status": status,
            "headers": headers,
        }
        await send(start)
        await send({"type": "http.response.body", "body": body})
