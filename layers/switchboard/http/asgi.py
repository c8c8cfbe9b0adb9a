"""The ASGI plumbing on the request path: the app's front door and the event-stream response.

Measured on the benchmark's stream scenario (uvicorn + httptools, 20-chunk streams, C=1),
Starlette's own path costs per request: the middleware stack (``ServerErrorMiddleware``,
``ExceptionMiddleware``, the route's exception wrapper) wraps ``send`` three times, so every
stream chunk passes three extra coroutines, and ``StreamingResponse`` opens an anyio task group
(a cancel scope and a listener task) before the first byte goes out. Neither does anything here:
every routed endpoint already turns every failure into an error response (``http.request.endpoint``).

``Front`` sends the routed ``POST`` endpoints straight to their handlers and everything else
(lifespan, ``GET`` routes, 404/405 and redirects) through Starlette. ``EventStream`` writes the
status line, the headers and the first events, and only then starts listening for the client
leaving, with a plain asyncio task.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping

from starlette._utils import get_route_path
from starlette.applications import Starlette
from starlette.datastructures import State
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

__all__ = ["EventStream", "Front"]

Endpoint = Callable[[Request], Awaitable[Response]]


class Front:
    """The ASGI app: ``app``'s POST-only routes of fixed paths directly, the rest through ``app``
    (which still answers a GET on them with 405, a trailing slash with its redirect)."""

    def __init__(self, app: Starlette) -> None:
        self.app = app
        self.routes: dict[str, Endpoint] = {
            route.path: route.endpoint
            for route in app.routes
            if isinstance(route, Route) and route.methods == {"POST"} and "{" not in route.path
        }

    @property
    def state(self) -> State:
        return self.app.state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            endpoint = self.routes.get(get_route_path(scope))
            if endpoint is not None:
                scope["app"] = self.app  # what Request.app (and so the gateway) is read from
                response = await endpoint(Request(scope, receive))
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


class EventStream(Response):
    """``text/event-stream`` from an async iterator of bytes, each part sent as it comes.

    A client that leaves cancels the iteration (the iterator's ``finally`` runs, so a stream is
    settled) and ends the response quietly, as Starlette's ``StreamingResponse`` does. The listener
    starts after the first part: the gateway's streams hold their first events before the response
    starts, so that part comes at once and a client cannot leave unnoticed for long.
    """

    media_type = "text/event-stream"

    def __init__(self, content: AsyncIterator[bytes], headers: Mapping[str, str] | None = None) -> None:
        self.body_iterator = content
        self.status_code = 200
        self.background = None
        self.init_headers(headers)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        task = asyncio.current_task()
        assert task is not None
        left = False

        async def listen() -> None:
            nonlocal left
            while (await receive())["type"] != "http.disconnect":
                pass
            left = True
            task.cancel()

        listener: asyncio.Task[None] | None = None
        try:
            await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
            async for part in self.body_iterator:
                await send({"type": "http.response.body", "body": part, "more_body": True})
                if listener is None:  # after the first events: nothing delays them
                    listener = asyncio.ensure_future(listen())
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        except asyncio.CancelledError:
            if not left:
                raise
            task.uncancel()  # the client left: the iterator is closed, the response is over
        finally:
            if listener is not None:
                listener.cancel()
