"""The upstream client (``gateway.make_http_client`` over ``h1.H1Transport``) against real sockets.

Most tests script a raw asyncio server per connection in the same event loop, so every byte on
the wire is chosen by the test: keep-alive, a peer that closes an idle connection, bodies framed by
length, by chunks or by the connection's end, interim answers, stalls, flow control. The servers
count the requests they receive: a request is never sent twice, whichever way the peer drops the
connection (idle, after reading the request, mid-answer). Then the limits: header size, hostname,
cancellation, connect and write timeouts, the idle check under both event loops and TLS.
"""

from __future__ import annotations

import asyncio
import gzip
import socket
import ssl
import struct
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
from switchboard.infra.h1 import MAX_HEAD
from switchboard.wiring import make_http_client

from tests.tls import self_signed

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter, int], Awaitable[None]]


async def read_request(reader: asyncio.StreamReader) -> tuple[bytes, bytes] | None:
    """(head, body) of the next request on the connection, or None at its end."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError:
        return None
    lines = head.lower().split(b"\r\n")
    length = next((int(line.split(b":")[1]) for line in lines if line.startswith(b"content-length:")), None)
    if length is not None:
        return head, await reader.readexactly(length)
    body = b""
    if any(line == b"transfer-encoding: chunked" for line in lines):
        while (size := int((await reader.readline()).strip(), 16)) > 0:
            body += await reader.readexactly(size)
            await reader.readline()
        await reader.readline()
    return head, body


def answer(body: bytes, *headers: str, status: str = "200 OK") -> bytes:
    extra = "".join(f"{h}\r\n" for h in headers)
    return f"HTTP/1.1 {status}\r\ncontent-length: {len(body)}\r\n{extra}\r\n".encode() + body


async def serve(handler: Handler, client: Callable[[str, httpx.AsyncClient], Awaitable[None]]) -> int:
    """Run ``client(url, http)`` against a server calling ``handler`` per connection; the number
    of connections it accepted."""
    accepted = 0

    async def on_connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal accepted
        accepted += 1
        try:
            await handler(reader, writer, accepted)
        finally:
            writer.close()

    server = await asyncio.start_server(on_connection, "127.0.0.1", 0)
    http = make_http_client()
    try:
        await client(f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/v1/x", http)
    finally:
        await http.aclose()
        server.close()
    return accepted


async def echo_forever(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
    while (request := await read_request(reader)) is not None:
        writer.write(answer(b"echo:" + request[1]))
        await writer.drain()


def test_keep_alive_one_connection_for_sequential_requests() -> None:
    async def client(url: str, http: httpx.AsyncClient) -> None:
        for i in range(5):
            response = await http.post(url, content=b"%d" % i)
            assert (response.status_code, response.content) == (200, b"echo:%d" % i)

    assert asyncio.run(serve(echo_forever, client)) == 1


def test_concurrent_requests_each_get_a_connection_then_share_them() -> None:
    async def client(url: str, http: httpx.AsyncClient) -> None:
        for _ in range(3):
            bodies = await asyncio.gather(*(http.post(url, content=b"%d" % i) for i in range(4)))
            assert [r.content for r in bodies] == [b"echo:%d" % i for i in range(4)]

    assert asyncio.run(serve(echo_forever, client)) == 4


class Upstream:
    """A scripted upstream's record: the requests each connection received, and what the test
    waits on (every request of a warm-up round in, the peer's side of each connection closed)."""

    def __init__(self, warm: int) -> None:
        self.posts: list[int] = []  # the connection number of each request received
        self.arrived = asyncio.Barrier(warm)  # the warm-up round answers only once all are in
        self.closed: dict[int, asyncio.Event] = {}
        self.phase = 1

    def gone(self, n: int) -> asyncio.Event:
        return self.closed.setdefault(n, asyncio.Event())

    async def wait_closed(self, *numbers: int) -> None:
        async with asyncio.timeout(5):
            for n in numbers:
                await self.gone(n).wait()


def drop(writer: asyncio.StreamWriter, how: str) -> None:
    """Close the connection: an orderly FIN, or a TCP reset (SO_LINGER 0)."""
    if how == "reset":
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.close()


async def warm_two(url: str, http: httpx.AsyncClient) -> None:
    """Two concurrent requests, answered only when both are in: two idle keep-alive connections."""
    answers = await asyncio.gather(http.post(url, content=b"w1"), http.post(url, content=b"w2"))
    assert [a.status_code for a in answers] == [200, 200]


@pytest.mark.parametrize("how", ["close", "reset"])
def test_idle_connections_the_peer_closed_are_skipped_before_any_byte_is_written(how: str) -> None:
    # Both idle connections are dead (the peer closed them after answering); the next request goes
    # out once, on a new connection, and the dead ones never see a byte of it.
    up = Upstream(warm=2)

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        while await read_request(reader) is not None:
            up.posts.append(n)
            if n <= 2:
                await up.arrived.wait()
            writer.write(answer(b"from %d" % n))
            await writer.drain()
            if n <= 2:  # the peer's keep-alive timeout: it closes the idle connection
                drop(writer, how)
                await writer.wait_closed()
                up.gone(n).set()
                return

    async def client(url: str, http: httpx.AsyncClient) -> None:
        await warm_two(url, http)
        await up.wait_closed(1, 2)
        response = await http.post(url, content=b"after")
        assert (response.status_code, response.content) == (200, b"from 3")

    assert asyncio.run(serve(handler, client)) == 3
    assert sorted(up.posts) == [1, 2, 3]  # each request received exactly once


def fin_acknowledged(sock: socket.socket) -> None:
    """Until the peer's kernel has acknowledged our FIN (state FIN_WAIT2): it is in the peer's
    socket now, whether or not its event loop has looked."""
    deadline = time.monotonic() + 5
    while sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 1)[0] != 5:  # TCP_FIN_WAIT2
        assert time.monotonic() < deadline, "the FIN was never acknowledged"
        time.sleep(0.001)


def test_a_peer_close_the_event_loop_has_not_seen_yet_is_found_before_writing() -> None:
    # The peer (a thread) closes both idle connections while the client's event loop is blocked,
    # so the loop has not read the FINs when the next request picks a connection: the idle check
    # itself must find them (``_Connection.peer_gone``), before any byte is written.
    posts: list[int] = []
    both_in = threading.Barrier(2, timeout=5)
    close_now = threading.Event()
    closed = threading.Semaphore(0)
    listener = socket.create_server(("127.0.0.1", 0))

    def connection(sock: socket.socket, n: int) -> None:
        with sock:
            with sock.makefile("rb") as stream:  # closed first: it holds the socket open
                head = b"".join(iter(stream.readline, b"\r\n"))
                length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
                stream.read(length)
            posts.append(n)
            if n <= 2:
                both_in.wait()
            sock.sendall(answer(b"from %d" % n))
            if n <= 2:
                close_now.wait(5)
                sock.shutdown(socket.SHUT_RDWR)  # the FIN goes out now
                fin_acknowledged(sock)
                sock.close()
                closed.release()

    def accept() -> None:
        for n in (1, 2, 3):
            sock, _ = listener.accept()
            threading.Thread(target=connection, args=(sock, n), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()

    async def client() -> None:
        http = make_http_client()
        url = f"http://127.0.0.1:{listener.getsockname()[1]}/v1/x"
        try:
            await warm_two(url, http)
            close_now.set()
            for _ in range(2):  # blocks the event loop on purpose: it must not see the closes
                assert closed.acquire(timeout=5)
            response = await http.post(url, content=b"after")
            assert (response.status_code, response.content) == (200, b"from 3")
        finally:
            await http.aclose()

    with listener:
        asyncio.run(client())
    assert sorted(posts) == [1, 2, 3]


@pytest.mark.parametrize("how", ["close", "reset"])
def test_a_request_the_upstream_read_is_never_sent_again(how: str) -> None:
    # Two idle connections, both alive. The upstream reads the next request and drops the
    # connection unanswered: the gateway cannot know whether it was acted on (a billed LLM call),
    # so it is an error, never a second POST on the other idle connection or a new one.
    up = Upstream(warm=2)

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        while await read_request(reader) is not None:
            up.posts.append(n)
            if up.phase == 2:
                drop(writer, how)
                return
            await up.arrived.wait()
            writer.write(answer(b"ok"))
            await writer.drain()

    async def client(url: str, http: httpx.AsyncClient) -> None:
        await warm_two(url, http)
        up.phase = 2
        with pytest.raises(httpx.RemoteProtocolError, match="without answering"):
            await http.post(url, content=b"billed")
        assert len(up.posts) == 3  # the two warm-up requests, then this one exactly once
        # A fresh connection closed unanswered is the same error, and the request went out once.
        with pytest.raises(httpx.RemoteProtocolError, match="without answering"):
            await http.post(url, content=b"again")
        assert len(up.posts) == 4

    asyncio.run(serve(handler, client))


@pytest.mark.parametrize("streamed", [False, True])
def test_a_connection_closed_mid_answer_is_an_error_sent_once(streamed: bool) -> None:
    up = Upstream(warm=1)

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        while await read_request(reader) is not None:
            up.posts.append(n)
            if len(up.posts) == 1:
                writer.write(answer(b"ok"))
                await writer.drain()
                continue
            writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n")
            await writer.drain()
            drop(writer, "close")
            return

    async def client(url: str, http: httpx.AsyncClient) -> None:
        assert (await http.post(url, content=b"warm")).content == b"ok"  # then reused
        with pytest.raises(httpx.RemoteProtocolError, match="middle of its answer"):
            if streamed:
                async with http.stream("POST", url, content=b"cut") as response:
                    assert response.status_code == 200
                    async for _ in response.aiter_bytes():
                        pass
            else:
                await http.post(url, content=b"cut")
        assert len(up.posts) == 2

    assert asyncio.run(serve(handler, client)) == 1


def test_a_fresh_connection_closed_unanswered_is_an_error_not_a_retry() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        await read_request(reader)

    async def client(url: str, http: httpx.AsyncClient) -> None:
        with pytest.raises(httpx.RemoteProtocolError):
            await http.post(url, content=b"a")

    assert asyncio.run(serve(handler, client)) == 1


def test_bodies_framed_by_chunks_by_the_connection_end_and_gzip() -> None:
    packed = gzip.compress(b"decoded by httpx")

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        await read_request(reader)
        if n == 1:
            writer.write(b"HTTP/1.1 103 Early Hints\r\nlink: </x>\r\n\r\n")  # interim, then the answer
            writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
            for part in (b"data: 1\n\n", b"data: 2\n\n"):
                writer.write(b"%x\r\n%b\r\n" % (len(part), part))
                await writer.drain()
            writer.write(b"0\r\n\r\n")
            await read_request(reader)
            writer.write(answer(packed, "content-encoding: gzip"))
            await read_request(reader)
            writer.write(b"HTTP/1.1 200 OK\r\nconnection: close\r\n\r\nuntil the end")
            await writer.drain()

    async def client(url: str, http: httpx.AsyncClient) -> None:
        async with http.stream("POST", url, content=b"s") as streamed:
            assert streamed.status_code == 200
            assert b"".join([part async for part in streamed.aiter_raw()]) == b"data: 1\n\ndata: 2\n\n"
        assert (await http.post(url, content=b"g")).content == b"decoded by httpx"
        assert (await http.post(url, content=b"c")).content == b"until the end"

    assert asyncio.run(serve(handler, client)) == 1


def test_an_answer_cut_short_is_an_error() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nonly part")
        await writer.drain()

    async def client(url: str, http: httpx.AsyncClient) -> None:
        with pytest.raises(httpx.RemoteProtocolError):
            await http.post(url, content=b"a")

    asyncio.run(serve(handler, client))


def test_garbage_is_a_protocol_error() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        await read_request(reader)
        writer.write(b"SSH-2.0-OpenSSH\r\n\r\n")
        await writer.drain()
        await reader.read(1)

    async def client(url: str, http: httpx.AsyncClient) -> None:
        with pytest.raises(httpx.RemoteProtocolError):
            await http.post(url, content=b"a")

    asyncio.run(serve(handler, client))


def test_timeouts_and_a_refused_connection() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        await read_request(reader)
        if n == 2:  # headers, then a stalled body
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\n12")
            await writer.drain()
        await asyncio.sleep(5)

    async def client(url: str, http: httpx.AsyncClient) -> None:
        with pytest.raises(httpx.ReadTimeout):
            await http.post(url, content=b"a", timeout=httpx.Timeout(5, read=0.2))
        with pytest.raises(httpx.ReadTimeout):
            await http.post(url, content=b"b", timeout=httpx.Timeout(5, read=0.2))

    assert asyncio.run(serve(handler, client)) == 2

    async def refused() -> None:
        probe = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
        port = probe.sockets[0].getsockname()[1]
        probe.close()
        await probe.wait_closed()
        http = make_http_client()
        try:
            with pytest.raises(httpx.ConnectError):
                await http.get(f"http://127.0.0.1:{port}/")
        finally:
            await http.aclose()

    asyncio.run(refused())


def test_large_bodies_both_ways_and_a_streamed_request_body() -> None:
    big = bytes(range(256)) * 24_000  # ~6 MB: more than the socket buffers and the read high-water mark

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        while (request := await read_request(reader)) is not None:
            head, body = request
            writer.write(answer(big if body == b"big please" else b"got %d %b" % (len(body), head[:4])))
            await writer.drain()

    async def parts() -> AsyncIterator[bytes]:
        for _ in range(3):
            yield b"x" * 1000

    async def client(url: str, http: httpx.AsyncClient) -> None:
        assert (await http.post(url, content=b"big please")).content == big
        assert (await http.post(url, content=big)).content == b"got %d POST" % len(big)
        assert (await http.post(url, content=parts())).content == b"got 3000 POST"  # chunked upload

    assert asyncio.run(serve(handler, client)) == 1


class _Hello(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("content-length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def self_signed_https(tmp_path: Path) -> Iterator[str]:
    """An HTTPS server on 127.0.0.1 whose certificate no CA signed."""
    cert, key = self_signed(tmp_path)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Hello)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"https://localhost:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()


def test_an_upstream_certificate_is_verified(self_signed_https: str) -> None:
    # The system's CA store, loaded on the first https call: a self-signed certificate fails.
    async def fetch() -> None:
        client = make_http_client()
        try:
            await client.get(self_signed_https)
        finally:
            await client.aclose()

    with pytest.raises(httpx.ConnectError) as failed:
        asyncio.run(fetch())
    causes = []
    cause: BaseException | None = failed.value
    while cause is not None:
        causes.append(cause)
        cause = cause.__cause__ or cause.__context__
    assert any(isinstance(c, ssl.SSLCertVerificationError) for c in causes), causes


def test_a_certificate_for_another_name_is_refused(
    self_signed_https: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The certificate is trusted (SSL_CERT_FILE, which OpenSSL reads for the default store) and
    # valid for "localhost": over that name it is accepted, over 127.0.0.1 it names another host.
    monkeypatch.setenv("SSL_CERT_FILE", str(tmp_path / "cert.pem"))
    port = httpx.URL(self_signed_https).port

    async def fetch(host: str) -> httpx.Response:
        client = make_http_client()
        try:
            return await client.get(f"https://{host}:{port}/")
        finally:
            await client.aclose()

    assert asyncio.run(fetch("localhost")).content == b"ok"
    with pytest.raises(httpx.ConnectError) as failed:
        asyncio.run(fetch("127.0.0.1"))
    cause = failed.value.__cause__
    assert isinstance(cause, ssl.SSLCertVerificationError), cause
    assert "mismatch" in cause.verify_message, cause.verify_message


def test_response_headers_are_capped_at_64_kb() -> None:
    big = [f"x-filler-{i}: {'v' * 1000}" for i in range(70)]  # 70 KB of header lines
    fits = big[:50]  # 50 KB: accepted

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        await read_request(reader)
        if n == 1:
            writer.write(answer(b"fits", *fits))
        elif n == 2:
            writer.write(answer(b"too big", *big))
        else:  # one endless header line: refused once past the cap, not after a read timeout
            writer.write(b"HTTP/1.1 200 OK\r\nx-endless: " + b"v" * (MAX_HEAD + 1000))
        await writer.drain()
        await reader.read(1)

    async def client(url: str, http: httpx.AsyncClient) -> None:
        response = await http.post(url, content=b"a", headers={"connection": "close"})
        assert response.content == b"fits" and len(response.headers) > 50
        for _ in range(2):
            with pytest.raises(httpx.RemoteProtocolError, match="headers exceed 65536 bytes"):
                await http.post(url, content=b"a", timeout=httpx.Timeout(30))

    assert asyncio.run(serve(handler, client)) == 3


def fill_backlog(listener: socket.socket) -> list[socket.socket]:
    """Connections that fill ``listener``'s accept queue (listen(0), never accepted): the kernel
    drops the SYNs of any further connection, which then hangs in its handshake."""
    fillers: list[socket.socket] = []
    for _ in range(8):
        filler = socket.socket()
        filler.settimeout(0.2)
        fillers.append(filler)
        try:
            filler.connect(listener.getsockname())
        except TimeoutError:
            return fillers
    raise AssertionError("the accept queue never filled")


def test_connect_timeout() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        fillers = fill_backlog(listener)
        port = listener.getsockname()[1]

        async def connect() -> None:
            http = make_http_client()
            try:
                with pytest.raises(httpx.ConnectTimeout):
                    await http.post(
                        f"http://127.0.0.1:{port}/", content=b"a", timeout=httpx.Timeout(5, connect=0.2)
                    )
            finally:
                await http.aclose()

        try:
            asyncio.run(connect())
        finally:
            for filler in fillers:
                filler.close()


def test_write_timeout_when_the_upstream_reads_nothing() -> None:
    # Nobody accepts at first: the kernel completes the handshake and then takes only what its
    # receive buffer holds (SO_RCVBUF, inherited by the connection, fixed small).
    body = b"x" * (8 << 20)  # more than the client's send buffer (at most 4 MB) and that

    async def send(listener: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        http = make_http_client()
        try:
            url = f"http://127.0.0.1:{listener.getsockname()[1]}/"
            with pytest.raises(httpx.WriteTimeout):
                await http.post(url, content=body, timeout=httpx.Timeout(5, write=0.3))
            # The socket is dropped at once, with what was still unsent: reading now finds the end
            # of the connection before the whole body (the rest never leaves the gateway).
            sock, _ = await loop.sock_accept(listener)
            with sock:
                received = 0
                async with asyncio.timeout(5):
                    while part := await loop.sock_recv(sock, 1 << 20):
                        received += len(part)
            assert 0 < received < len(body)
        finally:
            await http.aclose()

    with socket.socket() as listener:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        listener.setblocking(False)
        asyncio.run(send(listener))


@pytest.mark.parametrize("where", ["awaiting the answer", "reading the body"])
def test_a_cancelled_request_closes_its_connection(where: str) -> None:
    # The upstream sees the connection end at once (an LLM call it can stop), and the next request
    # gets a new connection: the old one may still carry the rest of the cancelled answer.
    got_request = asyncio.Event()
    in_body = asyncio.Event()
    saw_close = asyncio.Event()

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        await read_request(reader)
        if n == 2:
            writer.write(answer(b"new connection"))
            await writer.drain()
            await reader.read(1)
            return
        if where == "reading the body":
            writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n")
            await writer.drain()
        got_request.set()
        if await reader.read(1) == b"":
            saw_close.set()

    async def client(url: str, http: httpx.AsyncClient) -> None:
        async def call() -> None:
            response = await http.send(http.build_request("POST", url, content=b"a"), stream=True)
            async for _ in response.aiter_raw():  # not closed by the caller: the cancel must do it
                in_body.set()

        task = asyncio.create_task(call())
        async with asyncio.timeout(5):
            await (in_body if where == "reading the body" else got_request).wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        async with asyncio.timeout(2):
            await saw_close.wait()
        assert (await http.post(url, content=b"b")).content == b"new connection"

    assert asyncio.run(serve(handler, client)) == 2


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
@pytest.mark.parametrize("tls", [False, True])
def test_the_idle_check_keeps_live_connections(
    loop: str, tls: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The check before reuse reads the socket under both event loops (the Lambda serves on uvloop)
    # and under TLS (whose session tickets arrive after the handshake): a live connection passes.
    import uvloop

    cert, key = self_signed(tmp_path)
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    accepted = 0

    async def on_connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal accepted
        accepted += 1
        await echo_forever(reader, writer, accepted)
        writer.close()

    async def main() -> None:
        server = await asyncio.start_server(on_connection, "127.0.0.1", 0, ssl=context if tls else None)
        url = f"{'https' if tls else 'http'}://localhost:{server.sockets[0].getsockname()[1]}/"
        http = make_http_client()
        try:
            for i in range(5):
                assert (await http.post(url, content=b"%d" % i)).content == b"echo:%d" % i
        finally:
            await http.aclose()
            server.close()

    if loop == "uvloop":
        uvloop.run(main())
    else:
        asyncio.run(main())
    assert accepted == 1


def test_a_body_iterator_abandoned_after_the_answer_never_touches_the_connection_again() -> None:
    # As a provider does at "[DONE]": stop iterating once the answer is in, close the response (the
    # connection goes back to the pool), and leave the iterator to be finalized later. By then the
    # connection may carry another request; finalizing must not close it under that request.
    got_second = asyncio.Event()
    answer_second = asyncio.Event()

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n9\r\ndata: 1\n\n\r\n0\r\n\r\n")
        await read_request(reader)
        got_second.set()
        await answer_second.wait()
        writer.write(answer(b"second"))
        await writer.drain()
        await reader.read(1)

    async def client(url: str, http: httpx.AsyncClient) -> None:
        async def first() -> bytes:
            response = await http.send(http.build_request("POST", url, content=b"a"), stream=True)
            try:
                async for part in response.aiter_bytes():
                    return part  # the iterator is abandoned, not exhausted
                return b""
            finally:
                await response.aclose()

        assert await first() == b"data: 1\n\n"
        second = asyncio.create_task(http.post(url, content=b"b"))
        async with asyncio.timeout(5):
            await got_second.wait()
        for _ in range(20):  # the abandoned iterators' finalizers run as loop callbacks: let them
            await asyncio.sleep(0)
        answer_second.set()
        assert (await second).content == b"second"

    assert asyncio.run(serve(handler, client)) == 1


def test_a_peer_announcing_a_short_keep_alive_is_not_reused_near_its_end() -> None:
    # "Keep-Alive: timeout=N" (Node's and Apache's servers send it): the connection is reused for
    # N - 1 seconds at most, so a request never races the peer's idle close. timeout=1 allows 0 s.
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        while await read_request(reader) is not None:
            writer.write(
                answer(b"%d" % n, "keep-alive: timeout=1" if n == 1 else "Keep-Alive: max=5, timeout=30")
            )
            await writer.drain()

    async def client(url: str, http: httpx.AsyncClient) -> None:
        assert [(await http.post(url, content=b"x")).content for _ in range(4)] == [b"1", b"2", b"2", b"2"]

    assert asyncio.run(serve(handler, client)) == 2
