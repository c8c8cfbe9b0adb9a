"""``HTTPS_PROXY`` / ``HTTP_PROXY`` / ``NO_PROXY`` for the upstream client, through a real proxy.

A tiny forward proxy on a loopback socket (CONNECT tunnels for https, absolute-form requests for
http) records the first line of every request it carries; the origin is a plain or TLS echo server
(its certificate trusted through ``SSL_CERT_FILE``).
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest
from switchboard.infra.h1 import NoProxy
from switchboard.wiring import make_http_client

from tests.integration.test_h1_http import answer, read_request
from tests.tls import self_signed


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except OSError:
        pass
    finally:
        writer.close()


class Proxy:
    """A forward proxy: ``seen`` holds the request line of each connection it was asked for."""

    def __init__(self) -> None:
        self.seen: list[str] = []

    async def on_connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        line = head.split(b"\r\n", 1)[0].decode()
        self.seen.append(line)
        method, target, _ = line.split(" ")
        if method == "CONNECT":
            host, port = target.rsplit(":", 1)
            up_reader, up_writer = await asyncio.open_connection(host, int(port))
            writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
        else:  # absolute form: http://host:port/path
            url = httpx.URL(target)
            up_reader, up_writer = await asyncio.open_connection(url.host, url.port)
            up_writer.write(head)
        await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))


async def _echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while (request := await read_request(reader)) is not None:
        writer.write(answer(b"echo:" + request[1]))
        await writer.drain()
    writer.close()


@asynccontextmanager
async def servers(cert: Path, key: Path) -> AsyncIterator[tuple[Proxy, int, int, int]]:
    """The proxy, and its port, the plain origin's and the TLS origin's."""
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(cert, key)
    proxy = Proxy()
    started = [
        await asyncio.start_server(proxy.on_connection, "127.0.0.1", 0),
        await asyncio.start_server(_echo, "127.0.0.1", 0),
        await asyncio.start_server(_echo, "127.0.0.1", 0, ssl=tls),
    ]
    try:
        ports = [server.sockets[0].getsockname()[1] for server in started]
        yield proxy, ports[0], ports[1], ports[2]
    finally:
        for server in started:
            server.close()


def run(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    env: Callable[[int], dict[str, str]],
    calls: Callable[[httpx.AsyncClient, int, int], Awaitable[None]],
) -> list[str]:
    """``calls(client, plain_port, tls_port)`` with the environment ``env(proxy_port)``; what the
    proxy saw."""
    cert, key = self_signed(tmp_path)
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "no_proxy"):
        monkeypatch.delenv(name, raising=False)

    async def main() -> list[str]:
        async with servers(cert, key) as (proxy, proxy_port, plain, tls):
            for name, value in env(proxy_port).items():
                monkeypatch.setenv(name, value)
            client = make_http_client()
            try:
                await calls(client, plain, tls)
            finally:
                await client.aclose()
            return proxy.seen

    return asyncio.run(main())


@pytest.mark.parametrize("case", [str.upper, str.lower])
def test_requests_go_through_the_proxy_the_environment_names(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, case: Callable[[str], str]
) -> None:
    def env(proxy: int) -> dict[str, str]:
        url = f"http://127.0.0.1:{proxy}"
        return {case("https_proxy"): url, case("http_proxy"): url}

    async def calls(client: httpx.AsyncClient, plain: int, tls: int) -> None:
        # https: a CONNECT tunnel, and the origin's certificate is still verified end to end.
        assert (await client.post(f"https://localhost:{tls}/v1/x", content=b"a")).content == b"echo:a"
        assert (await client.post(f"http://127.0.0.1:{plain}/v1/x", content=b"b")).content == b"echo:b"

    seen = run(tmp_path, monkeypatch, env, calls)
    assert len(seen) == 2
    assert seen[0].startswith("CONNECT localhost:")
    assert seen[1].startswith("POST http://127.0.0.1:") and seen[1].endswith("/v1/x HTTP/1.1")


def test_no_proxy_sends_the_hosts_it_names_direct(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def env(proxy: int) -> dict[str, str]:
        url = f"http://127.0.0.1:{proxy}"
        return {"HTTPS_PROXY": url, "HTTP_PROXY": url, "NO_PROXY": "example.com, localhost"}

    async def calls(client: httpx.AsyncClient, plain: int, tls: int) -> None:
        assert (await client.post(f"https://localhost:{tls}/", content=b"a")).content == b"echo:a"
        assert (await client.post(f"http://localhost:{plain}/", content=b"b")).content == b"echo:b"
        assert (await client.post(f"http://127.0.0.1:{plain}/", content=b"c")).content == b"echo:c"

    seen = run(tmp_path, monkeypatch, env, calls)
    assert [line.split(" ")[0] for line in seen] == ["POST"]  # only the one to 127.0.0.1
    assert "127.0.0.1" in seen[0]


def test_a_certificate_for_another_name_is_refused_through_the_proxy_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def env(proxy: int) -> dict[str, str]:
        return {"HTTPS_PROXY": f"127.0.0.1:{proxy}"}  # no scheme: http:// is assumed

    async def calls(client: httpx.AsyncClient, plain: int, tls: int) -> None:
        with pytest.raises(httpx.ConnectError):
            await client.post(f"https://127.0.0.1:{tls}/", content=b"a")

    seen = run(tmp_path, monkeypatch, env, calls)
    assert seen and seen[0].startswith("CONNECT 127.0.0.1:")


def test_without_proxy_variables_the_client_is_h1_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    from switchboard.infra.h1 import H1Transport

    for name in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
        monkeypatch.delenv(name, raising=False)
    assert isinstance(make_http_client()._transport, H1Transport)
    everything = make_http_client({"HTTPS_PROXY": "http://proxy:3128", "NO_PROXY": "*"})
    assert isinstance(everything._transport, H1Transport)


@pytest.mark.parametrize(
    ("no_proxy", "host", "port", "direct"),
    [
        ("example.com", "example.com", 443, True),
        ("example.com", "api.example.com", 443, True),
        ("example.com", "badexample.com", 443, False),
        (".example.com", "example.com", 443, True),
        ("*.example.com", "a.b.example.com", 443, True),
        ("example.com:8443", "example.com", 8443, True),
        ("example.com:8443", "example.com", 443, False),
        ("10.0.0.0/8, 169.254.169.254", "10.1.2.3", 443, True),
        ("10.0.0.0/8, 169.254.169.254", "169.254.169.254", 80, True),
        ("10.0.0.0/8", "11.0.0.1", 443, False),
        ("[::1]", "::1", 443, True),
        ("Localhost", "LOCALHOST", 80, True),
        ("", "example.com", 443, False),
        ("*", "anything.test", 443, True),
    ],
)
def test_no_proxy_matching(no_proxy: str, host: str, port: int, direct: bool) -> None:
    assert NoProxy.parse(no_proxy).matches(host, port) is direct


def test_a_proxy_that_never_answers_the_handshake_is_a_timeout_attempt(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The proxied path raises httpx's exceptions with httpcore's chained causes: a connect timeout
    # there is still the engine's ``timeout`` class (and any other fault its ``server`` class).
    from switchboard.core.errors import ErrorClass
    from switchboard.upstream.engine import transport_failure

    from tests.integration.test_h1_http import fill_backlog

    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        fillers = fill_backlog(listener)
        proxy = f"http://127.0.0.1:{listener.getsockname()[1]}"

        async def call() -> BaseException:
            client = make_http_client({"HTTPS_PROXY": proxy})
            try:
                with pytest.raises(httpx.ConnectTimeout) as failed:
                    await client.get("https://example.invalid/", timeout=httpx.Timeout(5, connect=0.2))
                return failed.value
            finally:
                await client.aclose()

        try:
            failure = asyncio.run(call())
        finally:
            for filler in fillers:
                filler.close()
    target = SimpleNamespace(provider_name="p", label="p/m")
    assert transport_failure(failure, target).error_class is ErrorClass.TIMEOUT  # type: ignore[arg-type]
    refused = httpx.ConnectError("refused")
    assert transport_failure(refused, target).error_class is ErrorClass.SERVER  # type: ignore[arg-type]
