"""``H1Transport``: the httpx transport for upstream calls, HTTP/1.1 over asyncio and httptools.

Why not a stock transport (measured here, sequential streamed POSTs to the benchmark's mock on
loopback, time until the response headers are in, and CPU per request):

    raw asyncio socket              ~100 us   170 us CPU
    aiohttp (httpx-aiohttp)         ~515 us   295 us CPU   (+ httpx on top: ~675 us, 470 us CPU)
    httpcore (httpx's own)          more CPU than aiohttp (DESIGN.md)

That gap sat on every request's critical path, twice the gateway's own work. aiohttp also cost
~150 ms of import at cold start and, with its dependencies, ~4.5 MB of the Lambda layer.

What it does: one request per connection at a time; idle connections kept per origin
(``keepalive_s``, or one second less than the peer's ``Keep-Alive: timeout=N``, so the gateway
stops reusing a connection before the peer closes it; at most ``max_idle`` each). Responses are
parsed by httptools (the parser uvicorn serves with); bodies stream, with reading paused while
``_HIGH_WATER`` bytes wait unread. httpx above it decodes ``content-encoding`` and applies no
cookies (see ``gateway.make_http_client``).

A request is sent at most once. Before one is written to an idle connection, the connection is
checked: closed or reset by the peer, expired, or readable at all (a FIN the event loop has not
delivered yet, a stray byte: ``_Connection.peer_gone``, one ``poll``), it is dropped and the next
idle one, or a new connection, is taken. Once any byte is written, a connection that closes or
resets without an answer is a ``RemoteProtocolError``, never a re-send: the upstream may have read
the request and begun a billed call, and the engine's retry policy (and its trail) decides what
happens next.

Limits: the status line and headers of an answer, interim ones included, at most ``MAX_HEAD``
(64 KB; past it ``RemoteProtocolError``, even mid-line). Timeouts come from the request (httpx's
``timeout`` extension): ``connect`` for the TCP and TLS handshake, ``read`` for each wait for
answer bytes, ``write`` for each wait for the socket to take more of the request, ``pool`` unused
(no connection limit). A request that fails, times out or is cancelled (while waiting for the
answer or reading its body, whether or not the caller closes the response) aborts its socket at
once, dropping anything unsent: the upstream sees the connection end, and it is never reused.
A request with ``Connection: close`` ends its connection after the answer.

TLS: the context given, by default the system's CA store (OpenSSL's ``SSL_CERT_FILE`` honoured),
with SNI and hostname checks: a certificate for another name is refused (``ConnectError``).

Proxies: ``with_proxies`` (used by ``gateway.make_http_client``) sends requests through
``HTTPS_PROXY`` / ``HTTP_PROXY`` over httpx's own transport, except hosts ``NO_PROXY`` names.

Not supported, and not needed by any provider: HTTP/2, ``Expect: 100-continue``, upgrades,
``HEAD`` (a bodiless answer would be read as a body).

Failures are httpx's exceptions, each with the low-level cause chained: ``ConnectError`` /
``ConnectTimeout``, ``WriteError`` / ``WriteTimeout``, ``ReadError`` / ``ReadTimeout``,
``RemoteProtocolError`` (unparsable or oversized answer, or the connection closed before or during
it). Anything unexpected below httpx is a plain ``TransportError``, so a caller handles one family.
"""

from __future__ import annotations

import asyncio
import collections
import ipaddress
import select
import ssl
import time
from collections.abc import AsyncIterator, Mapping
from typing import Any

import httptools
import httpx

__all__ = ["MAX_HEAD", "H1Transport", "NoProxy", "with_proxies"]

_HIGH_WATER = 1 << 20  # unread body bytes that pause reading from the socket
MAX_HEAD = 64 * 1024  # bytes of an answer's status line and headers (interim answers included)
_DEFAULT_PORTS = {b"http": 80, b"https": 443}

Origin = tuple[bytes, bytes, int]


class _Connection(asyncio.Protocol):
    """One HTTP/1.1 connection: the socket's protocol and the httptools parser's callbacks."""

    def __init__(self, origin: Origin) -> None:
        self.origin = origin
        self.transport: asyncio.Transport | None = None
        self.closed: BaseException | None = None  # why the socket is gone (None: open)
        self.idle_since = 0.0
        self.idle_limit: float | None = None  # seconds the peer keeps it idle, from its Keep-Alive
        self.idle = False  # in the pool, between answers: no byte may arrive now
        self._waiter: asyncio.Future[None] | None = None
        self._can_write: asyncio.Future[None] | None = None
        self._reset()

    def _reset(self) -> None:
        """Ready for the next answer on this connection: a fresh parser and nothing received."""
        self._parser = httptools.HttpResponseParser(self)
        self.status = 0
        self.headers: list[tuple[bytes, bytes]] = []
        self.headers_done = False
        self.complete = False
        self.keep_alive = False
        self.body: collections.deque[bytes] = collections.deque()
        self._buffered = 0
        self._received = 0  # bytes of the current answer
        self._head = 0  # bytes of its header lines so far
        self._closing = False  # the request asked for the connection to close after the answer
        self._paused = False

    # --- asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's are no asyncio.Transport

    def data_received(self, data: bytes) -> None:
        if self.closed is not None:
            return  # already failed: nothing more is read from it
        if self.idle:  # a late answer or junk between requests: the framing can no longer be trusted
            self._fail(httpx.RemoteProtocolError("the upstream sent bytes on an idle connection"))
            self.close()
            return
        self._received += len(data)
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            if isinstance(exc.__context__, _HeadTooLarge):
                self._fail(httpx.RemoteProtocolError(f"the upstream's headers exceed {MAX_HEAD} bytes"))
            else:
                self._fail(httpx.RemoteProtocolError(f"unparsable answer from the upstream: {exc}"))
            self.close()
            return
        if not self.headers_done and self._received > MAX_HEAD:  # one endless header line, say
            self._fail(httpx.RemoteProtocolError(f"the upstream's headers exceed {MAX_HEAD} bytes"))
            self.close()
            return
        if self._buffered > _HIGH_WATER and not self._paused and self.transport is not None:
            self._paused = True
            self.transport.pause_reading()
        self._wake()

    def eof_received(self) -> bool | None:
        self._fail(ConnectionResetError("the upstream closed the connection"))
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(exc or ConnectionResetError("the upstream closed the connection"))
        if self._can_write is not None and not self._can_write.done():
            self._can_write.set_exception(self.closed or ConnectionResetError())

    def pause_writing(self) -> None:
        self._can_write = asyncio.get_running_loop().create_future()

    def resume_writing(self) -> None:
        if self._can_write is not None and not self._can_write.done():
            self._can_write.set_result(None)
        self._can_write = None

    # --- httptools callbacks

    def on_header(self, name: bytes, value: bytes) -> None:
        self._head += len(name) + len(value) + 4
        if self._head > MAX_HEAD:
            raise _HeadTooLarge  # httptools stops and raises HttpParserCallbackError from it
        self.headers.append((name, value))
        if len(name) == 10 and name.lower() == b"keep-alive":
            self._keep_alive_header(value)

    def _keep_alive_header(self, value: bytes) -> None:
        """``Keep-Alive: timeout=5, max=100``: the peer closes the connection after 5 idle seconds."""
        for param in value.split(b","):
            key, _, number = param.partition(b"=")
            if key.strip().lower() == b"timeout" and number.strip().isdigit():
                self.idle_limit = max(0.0, int(number) - 1.0)  # a second's margin for the race

    def on_headers_complete(self) -> None:
        self.status = self._parser.get_status_code()
        if 100 <= self.status < 200:  # an interim answer (103 Early Hints): the real one follows
            self.headers = []
            return
        self.headers_done = True

    def on_body(self, body: bytes) -> None:
        self.body.append(body)
        self._buffered += len(body)

    def on_message_complete(self) -> None:
        if 100 <= self.status < 200 and not self.headers_done:
            return
        # should_keep_alive is only valid inside the callback
        self.keep_alive = self._parser.should_keep_alive() and not self._closing
        self.complete = True

    # --- used by the transport

    def _fail(self, exc: BaseException) -> None:
        if self.closed is None:
            self.closed = exc
        if not self.complete and self.headers_done and self._framed_by_close():
            self.complete = True  # an answer without length ends when the connection does
        self._wake()

    def _framed_by_close(self) -> bool:
        names = {name.lower() for name, _ in self.headers}
        return b"content-length" not in names and b"transfer-encoding" not in names

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    @property
    def reusable(self) -> bool:
        return (
            self.closed is None
            and self.transport is not None
            and not self.transport.is_closing()
            and self.keep_alive
        )

    def peer_gone(self) -> bool:
        """Whether the idle socket is readable: the peer's close (or reset, or a stray byte) is
        already here though the event loop has not yet delivered it. A live idle HTTP/1.1
        connection has nothing to read, so this proves the connection dead before any byte of a
        request is written to it. One ``poll`` with no wait, about a microsecond."""
        sock = self.transport.get_extra_info("socket") if self.transport is not None else None
        if sock is None:
            return False
        try:
            fd = sock.fileno()
        except (OSError, ValueError):
            return True
        if fd < 0:
            return True
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        return bool(poller.poll(0))

    async def wait(self, timeout: float | None) -> None:
        """Until the parser has more for us, the answer is complete, or the socket is gone."""
        self._waiter = asyncio.get_running_loop().create_future()
        try:
            async with asyncio.timeout(timeout):
                await self._waiter
        finally:
            self._waiter = None

    async def send(self, request: httpx.Request, timeout: float | None) -> None:
        """Write the request line, the headers and the body."""
        self._reset()
        assert self.transport is not None
        # A request that says "Connection: close" ends the connection after its answer (RFC 9112).
        self._closing = request.headers.get("connection", "").lower() == "close"
        target = request.url.raw_path
        head = [request.method.encode(), b" ", target, b" HTTP/1.1\r\n"]
        for name, value in request.headers.raw:
            head += (name, b": ", value, b"\r\n")
        head.append(b"\r\n")
        # httpx frames the body: a Content-Length, or Transfer-Encoding: chunked for a stream.
        chunked = request.headers.get("transfer-encoding", "").lower() == "chunked"
        if isinstance(request.stream, httpx.ByteStream) and not chunked:
            self.transport.write(b"".join(head) + request.content)  # the usual case: one write
        else:
            self.transport.write(b"".join(head))
            async for part in request.stream:  # type: ignore[union-attr]
                if self.closed is not None:
                    raise self.closed
                if chunked and part:
                    part = b"%x\r\n%b\r\n" % (len(part), part)
                self.transport.write(part)
                if self._can_write is not None:
                    async with asyncio.timeout(timeout):
                        await self._can_write
            if chunked:
                self.transport.write(b"0\r\n\r\n")
        if self._can_write is not None:
            async with asyncio.timeout(timeout):
                await self._can_write

    def take_body(self) -> bytes:
        data = b"".join(self.body)
        self.body.clear()
        self._buffered = 0
        if self._paused and self.transport is not None:
            self._paused = False
            self.transport.resume_reading()
        return data

    def close(self) -> None:
        """Drop the socket now: ``abort``, not ``close``, which would wait to flush what is still
        unsent (a body the peer stopped reading after a write timeout) and keep the socket open."""
        if self.transport is not None:
            self.transport.abort()
        if self.closed is None:
            self.closed = ConnectionResetError("closed by the gateway")


class _Body(httpx.AsyncByteStream):
    """The answer's body as it arrives; gives the connection back (or closes it) when done."""

    def __init__(self, transport: H1Transport, conn: _Connection, read_timeout: float | None) -> None:
        self._transport = transport
        self._conn = conn
        self._timeout = read_timeout
        self._released = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        conn = self._conn
        try:
            while True:
                if conn.body:
                    yield conn.take_body()
                    continue
                if conn.complete:
                    return
                if conn.closed is not None:
                    if isinstance(conn.closed, httpx.HTTPError):
                        raise conn.closed
                    raise httpx.RemoteProtocolError(
                        "the upstream closed the connection in the middle of its answer"
                    ) from conn.closed
                try:
                    await conn.wait(self._timeout)
                except TimeoutError as exc:
                    raise httpx.ReadTimeout("timed out reading the upstream's answer") from exc
        except BaseException as exc:
            # Failed, cancelled, or abandoned mid-answer: the rest of the answer may still come,
            # so the socket is closed now, never left open or given to another request. (An
            # iterator abandoned after the answer is finalized later, maybe after ``aclose`` gave
            # the connection to another request: ``_finish`` then leaves it alone.)
            self._finish()
            if isinstance(exc, Exception) and not isinstance(exc, httpx.HTTPError):
                raise _unexpected(exc) from exc
            raise

    async def aclose(self) -> None:
        self._finish()

    def _finish(self) -> None:
        """Once: the connection back to the pool if its answer was read whole, else closed."""
        if self._released:
            return
        self._released = True
        conn = self._conn
        if conn.complete and not conn.body and conn.reusable:
            self._transport._release(conn)
        else:
            conn.close()


class H1Transport(httpx.AsyncBaseTransport):
    """See the module docstring."""

    def __init__(
        self, *, ssl_context: ssl.SSLContext | None = None, keepalive_s: float = 60.0, max_idle: int = 64
    ) -> None:
        self._ssl = ssl_context
        self.keepalive_s = keepalive_s
        self.max_idle = max_idle
        self._idle: dict[Origin, list[_Connection]] = {}

    def _context(self) -> ssl.SSLContext:
        if self._ssl is None:
            self._ssl = ssl.create_default_context()  # on the first https call: the CA load is ~25 ms
        return self._ssl

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        try:
            return await self._request(request)
        except httpx.HTTPError:
            raise
        except Exception as exc:  # a fault below httpx's contract is still a transport failure
            raise _unexpected(exc) from exc

    async def _request(self, request: httpx.Request) -> httpx.Response:
        timeouts: dict[str, float | None] = request.extensions.get("timeout", {})
        url = request.url
        scheme = url.raw_scheme
        if scheme not in _DEFAULT_PORTS:
            raise httpx.UnsupportedProtocol(f"unsupported URL scheme {scheme!r}")
        origin = (scheme, url.raw_host, url.port or _DEFAULT_PORTS[scheme])
        # Idle connections found dead are dropped before a byte is written (``_checkout``); once
        # the request is written to a connection, it is never sent again (see the module doc).
        conn = self._checkout(origin) or await self._connect(origin, timeouts.get("connect"))
        try:
            await self._exchange(conn, request, timeouts)
        except BaseException:
            conn.close()  # failed or cancelled: the socket goes, whatever it still holds
            raise
        return httpx.Response(
            conn.status,
            headers=conn.headers,
            stream=_Body(self, conn, timeouts.get("read")),
            extensions={"http_version": b"HTTP/1.1"},
        )

    async def _exchange(
        self, conn: _Connection, request: httpx.Request, timeouts: dict[str, float | None]
    ) -> None:
        try:
            await conn.send(request, timeouts.get("write"))
        except TimeoutError as exc:
            raise httpx.WriteTimeout("timed out sending the request upstream") from exc
        except OSError as exc:
            raise httpx.WriteError(f"could not send the request upstream: {exc}") from exc
        while not conn.headers_done:
            if conn.closed is not None:
                if isinstance(conn.closed, httpx.HTTPError):
                    raise conn.closed
                if conn._received == 0:
                    raise httpx.RemoteProtocolError(
                        "the upstream closed the connection without answering "
                        "(the request may have reached it, so it is not sent again)"
                    ) from conn.closed
                raise httpx.RemoteProtocolError(
                    "the upstream closed the connection mid-answer"
                ) from conn.closed
            try:
                await conn.wait(timeouts.get("read"))
            except TimeoutError as exc:
                raise httpx.ReadTimeout("timed out waiting for the upstream's answer") from exc

    def _checkout(self, origin: Origin) -> _Connection | None:
        idle = self._idle.get(origin)
        now = time.monotonic()
        while idle:  # bounded: each pass takes one connection out of the pool
            conn = idle.pop()
            limit = self.keepalive_s if conn.idle_limit is None else min(self.keepalive_s, conn.idle_limit)
            if conn.reusable and now - conn.idle_since < limit and not conn.peer_gone():
                conn.idle = False
                return conn
            conn.close()
        return None

    def _release(self, conn: _Connection) -> None:
        idle = self._idle.setdefault(conn.origin, [])
        if len(idle) >= self.max_idle:
            conn.close()
            return
        conn.idle_since = time.monotonic()
        conn.idle = True
        idle.append(conn)

    async def _connect(self, origin: Origin, timeout: float | None) -> _Connection:
        scheme, host, port = origin
        name = host.decode("ascii")
        loop = asyncio.get_running_loop()
        tls: dict[str, Any] = {"ssl": self._context(), "server_hostname": name} if scheme == b"https" else {}
        try:
            async with asyncio.timeout(timeout):
                transport, conn = await loop.create_connection(
                    lambda: _Connection(origin), name.strip("[]"), port, **tls
                )
                conn.transport = transport  # uvloop calls connection_made a loop turn later
        except TimeoutError as exc:
            raise httpx.ConnectTimeout(f"timed out connecting to {name}:{port}") from exc
        except OSError as exc:  # refused, unreachable, DNS, TLS verification (ssl.SSLError is an OSError)
            raise httpx.ConnectError(f"could not connect to {name}:{port}: {exc}") from exc
        return conn

    async def aclose(self) -> None:
        for idle in self._idle.values():
            for conn in idle:
                conn.close()
        self._idle.clear()


class _HeadTooLarge(Exception):
    """Raised from the parser's header callback past ``MAX_HEAD``: stops the parse."""


def _unexpected(exc: Exception) -> httpx.TransportError:
    """Any other failure below httpx (a parser or TLS-layer error, a bug): still a transport error,
    so callers handle one family of exceptions. The cause is chained by the caller."""
    return httpx.TransportError(f"the upstream connection failed: {type(exc).__name__}: {exc}")


# ----------------------------------------------------------------------------- proxies


def with_proxies(direct: httpx.AsyncBaseTransport, environ: Mapping[str, str]) -> httpx.AsyncBaseTransport:
    """``direct``, or, when ``environ`` names proxies, a transport that sends each request whose
    scheme has one (``HTTPS_PROXY``, ``HTTP_PROXY``; lowercase first, as curl reads them) through
    it, unless ``NO_PROXY`` names the host. Many VPCs egress only through a proxy.

    The proxied path is httpx's own transport (httpcore: CONNECT for https, absolute-form for
    http), with the same TLS verification; only proxied requests pay for it."""
    proxies: dict[bytes, str] = {}
    for scheme in ("http", "https"):
        url = _env(environ, f"{scheme}_proxy")
        if url:
            proxies[scheme.encode()] = url if "://" in url else f"http://{url}"
    bypass = NoProxy.parse(_env(environ, "no_proxy"))
    if not proxies or bypass.everything:
        return direct
    context = ssl.create_default_context()
    routes = {
        scheme: httpx.AsyncHTTPTransport(proxy=httpx.Proxy(url), verify=context, trust_env=False)
        for scheme, url in proxies.items()
    }
    return _ProxyRouter(direct, routes, bypass)


def _env(environ: Mapping[str, str], name: str) -> str:
    return (environ.get(name) or environ.get(name.upper()) or "").strip()


class NoProxy:
    """``NO_PROXY``: comma-separated hosts (each also matching its subdomains; a leading ``.`` or
    ``*.`` is the same), optionally ``:port``, IP addresses or CIDR networks, or ``*`` for all."""

    def __init__(
        self,
        everything: bool,
        domains: list[tuple[str, int | None]],
        networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network],
    ) -> None:
        self.everything = everything
        self._domains = domains
        self._networks = networks

    @classmethod
    def parse(cls, value: str) -> NoProxy:
        domains: list[tuple[str, int | None]] = []
        networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
        everything = False
        for raw in value.replace(" ", ",").split(","):
            entry = raw.strip().lower()
            if not entry:
                continue
            if entry == "*":
                everything = True
                continue
            try:
                networks.append(ipaddress.ip_network(entry.strip("[]"), strict=False))
                continue
            except ValueError:
                pass
            host, port = entry, None
            if entry.count(":") == 1 or entry.startswith("["):  # host:port or [v6]:port
                head, _, tail = entry.rpartition(":")
                if tail.isdigit():
                    host, port = head, int(tail)
            host = host.strip("[]")
            try:
                networks.append(ipaddress.ip_network(host, strict=False))
                continue  # an address with a port: matched as an address (any port)
            except ValueError:
                pass
            domains.append((host.removeprefix("*").lstrip("."), port))
        return cls(everything, domains, networks)

    def matches(self, host: str, port: int) -> bool:
        """Whether a request to ``host:port`` goes direct."""
        if self.everything:
            return True
        host = host.lower().rstrip(".")
        try:
            address = ipaddress.ip_address(host.strip("[]"))
        except ValueError:
            for domain, only_port in self._domains:
                if (host == domain or host.endswith("." + domain)) and only_port in (None, port):
                    return True
            return False
        return any(address in network for network in self._networks) or any(
            host == domain and only_port in (None, port) for domain, only_port in self._domains
        )


class _ProxyRouter(httpx.AsyncBaseTransport):
    """Each request to the proxy for its scheme, or to ``direct`` (no proxy, or ``NO_PROXY``)."""

    def __init__(
        self,
        direct: httpx.AsyncBaseTransport,
        proxied: Mapping[bytes, httpx.AsyncBaseTransport],
        bypass: NoProxy,
    ) -> None:
        self._direct = direct
        self._proxied = proxied
        self._bypass = bypass

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        transport = self._proxied.get(url.raw_scheme)
        if transport is None or self._bypass.matches(url.host, url.port or _DEFAULT_PORTS[url.raw_scheme]):
            transport = self._direct
        return await transport.handle_async_request(request)

    async def aclose(self) -> None:
        await self._direct.aclose()
        for transport in self._proxied.values():
            await transport.aclose()
