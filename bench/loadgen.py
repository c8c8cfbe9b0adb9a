"""A closed-loop HTTP/1.1 load generator on a raw asyncio protocol, for loopback targets only.

Why not an HTTP client library: the client shares two cores with the gateway and the mock, so
every microsecond it spends is noise in the figures. A ``Protocol`` that parses just enough
HTTP/1.1 (status line, ``Content-Length`` or chunked body) and timestamps SSE events as their
bytes arrive costs a few microseconds per request. ``run_load`` also reports the client's own CPU
per request, so the noise it adds is measured, not assumed.

Closed loop: ``concurrency`` workers, each with one keep-alive connection, each sending its next
request when the previous one ends. A run stops at ``requests`` completed requests or after
``duration_s`` seconds, whichever comes first; a request still in flight at the deadline is
finished (each has its own timeout) and counted.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import resource
import socket
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

__all__ = ["LoadResult", "Sample", "assert_loopback", "build_request", "run_load"]

_CONTENT = b'"content":"'
_EVENT_END = b"\n\n"


def assert_loopback(host: str) -> None:
    """Refuse any target that does not resolve only to loopback addresses."""
    try:
        addresses = {str(info[4][0]) for info in socket.getaddrinfo(host, None)}
    except socket.gaierror as exc:
        raise ValueError(f"refusing target {host!r}: it does not resolve ({exc})") from None
    bad = sorted(a for a in addresses if not ipaddress.ip_address(a.split("%")[0]).is_loopback)
    if not addresses or bad:
        raise ValueError(f"refusing non-loopback target {host!r} ({', '.join(bad) or 'no address'})")


def build_request(url: str, body: dict[str, Any] | None, headers: dict[str, str] | None = None) -> bytes:
    """The raw bytes of one keep-alive request (POST with a JSON body, or GET without)."""
    parts = urlsplit(url)
    path = parts.path or "/"
    lines = [
        f"{'POST' if body is not None else 'GET'} {path} HTTP/1.1",
        f"host: {parts.netloc}",
        "user-agent: switchboard-bench",
        "accept: */*",
    ]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    payload = b""
    if body is not None:
        payload = json.dumps(body, separators=(",", ":")).encode()
        lines += ["content-type: application/json", f"content-length: {len(payload)}"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + payload


@dataclass(slots=True)
class Sample:
    """One request's timeline, in seconds on ``time.perf_counter``."""

    sent: float
    status: int = 0
    headers_at: float = 0.0
    first_content_at: float = 0.0  # streams: the first SSE event that carries content
    content_times: list[float] = field(default_factory=list)
    done_at: float = 0.0
    events: int = 0
    error: str | None = None

    @property
    def latency(self) -> float:
        return self.done_at - self.sent

    @property
    def ttfb(self) -> float:
        return (self.first_content_at or self.headers_at) - self.sent


class _Protocol(asyncio.Protocol):
    """One keep-alive connection; one request in flight at a time."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.sample: Sample | None = None
        self.future: asyncio.Future[Sample] | None = None
        self.state = 0  # 0 head, 1 content-length body, 2 chunk size, 3 chunk data, 4 trailer
        self.remaining = 0
        self.sse = bytearray()
        self.stream = False
        self.close_after = False
        self.lost: Exception | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = exc or ConnectionResetError("connection closed")
        if self.future is not None and not self.future.done():
            self.future.set_exception(self.lost)

    def send(self, data: bytes, sample: Sample, future: asyncio.Future[Sample]) -> None:
        self.sample, self.future = sample, future
        self.state, self.sse = 0, bytearray()
        assert self.transport is not None
        self.transport.write(data)

    def data_received(self, data: bytes) -> None:  # noqa: C901 - a parser reads best in one place
        now = time.perf_counter()
        sample = self.sample
        if sample is None:
            return
        buf = self.buf
        buf += data
        while True:
            if self.state == 0:
                end = buf.find(b"\r\n\r\n")
                if end < 0:
                    return
                head = bytes(buf[:end]).decode("latin-1").split("\r\n")
                del buf[: end + 4]
                sample.status = int(head[0].split(" ", 2)[1])
                sample.headers_at = now
                length, chunked, self.close_after, self.stream = 0, False, False, False
                for line in head[1:]:
                    name, _, value = line.partition(":")
                    name = name.strip().lower()
                    value = value.strip().lower()
                    if name == "content-length":
                        length = int(value)
                    elif name == "transfer-encoding" and "chunked" in value:
                        chunked = True
                    elif name == "connection" and value == "close":
                        self.close_after = True
                    elif name == "content-type" and value.startswith("text/event-stream"):
                        self.stream = True
                if chunked:
                    self.state = 2
                else:
                    self.state, self.remaining = 1, length
            elif self.state == 1:
                if len(buf) < self.remaining:
                    return
                del buf[: self.remaining]
                self._finish(now)
                return
            elif self.state == 2:
                end = buf.find(b"\r\n")
                if end < 0:
                    return
                size = int(bytes(buf[:end]).split(b";", 1)[0], 16)
                del buf[: end + 2]
                if size == 0:
                    self.state = 4
                else:
                    self.state, self.remaining = 3, size
            elif self.state == 3:
                if len(buf) < self.remaining + 2:
                    return
                if self.stream:
                    self._events(bytes(buf[: self.remaining]), now, sample)
                del buf[: self.remaining + 2]
                self.state = 2
            else:  # trailers end with an empty line
                end = buf.find(b"\r\n")
                if end < 0:
                    return
                del buf[: end + 2]
                if end == 0:
                    self._finish(now)
                    return

    def _events(self, data: bytes, now: float, sample: Sample) -> None:
        self.sse += data
        while True:
            end = self.sse.find(_EVENT_END)
            if end < 0:
                return
            event = bytes(self.sse[:end])
            del self.sse[: end + 2]
            sample.events += 1
            at = event.find(_CONTENT)
            if at >= 0 and event[at + len(_CONTENT) : at + len(_CONTENT) + 1] not in (b'"', b""):
                if not sample.first_content_at:
                    sample.first_content_at = now
                sample.content_times.append(now)
            elif event.startswith(b'data: {"error"'):
                sample.error = "stream error event"

    def _finish(self, now: float) -> None:
        sample, future = self.sample, self.future
        self.sample = self.future = None
        assert sample is not None and future is not None
        sample.done_at = now
        if not future.done():
            future.set_result(sample)
        if self.close_after and self.transport is not None:
            self.transport.close()


@dataclass
class LoadResult:
    samples: list[Sample]
    wall_s: float
    client_cpu_s: float
    errors: dict[str, int]

    @property
    def ok(self) -> list[Sample]:
        return [s for s in self.samples if s.error is None and s.status == 200]


async def _connect(host: str, port: int) -> _Protocol:
    loop = asyncio.get_running_loop()
    _, protocol = await loop.create_connection(_Protocol, host, port)
    return protocol


async def run_load(
    url: str,
    body: dict[str, Any] | None,
    *,
    concurrency: int,
    requests: int,
    duration_s: float,
    headers: dict[str, str] | None = None,
    warmup: int = 0,
    timeout_s: float = 30.0,
) -> LoadResult:
    """Run one closed-loop segment; see the module docstring."""
    parts = urlsplit(url)
    host, port = parts.hostname or "", parts.port or 80
    assert_loopback(host)
    raw = build_request(url, body, headers)
    loop = asyncio.get_running_loop()
    samples: list[Sample] = []
    errors: dict[str, int] = {}
    issued = 0
    deadline = 0.0

    async def one(conn: _Protocol) -> Sample:
        sample = Sample(sent=time.perf_counter())
        future: asyncio.Future[Sample] = loop.create_future()
        conn.send(raw, sample, future)
        try:
            return await asyncio.wait_for(future, timeout_s)
        except Exception as exc:  # timeouts and resets become error samples
            sample.error = type(exc).__name__
            sample.done_at = time.perf_counter()
            return sample

    async def worker() -> None:
        nonlocal issued
        conn: _Protocol | None = None
        while True:
            if conn is None or conn.lost is not None or conn.transport is None or conn.transport.is_closing():
                try:
                    conn = await _connect(host, port)
                except OSError as exc:
                    errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1
                    await asyncio.sleep(0.01)
                    if time.perf_counter() >= deadline:
                        return
                    continue
            if issued >= requests or time.perf_counter() >= deadline:
                break
            issued += 1
            sample = await one(conn)
            samples.append(sample)
            if sample.error is None and sample.status != 200:
                sample.error = f"http {sample.status}"
            if sample.error is not None:
                errors[sample.error] = errors.get(sample.error, 0) + 1
                if conn.transport is not None:
                    conn.transport.close()
                conn = None
        if conn is not None and conn.transport is not None:
            conn.transport.close()

    if warmup:  # not recorded; the measured window starts after them
        await _warm(host, port, raw, one, warmup, concurrency)
    cpu0 = resource.getrusage(resource.RUSAGE_SELF)
    start = time.perf_counter()
    deadline = start + duration_s
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    wall = time.perf_counter() - start
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime)
    return LoadResult(samples, wall, cpu, errors)


async def _warm(host: str, port: int, raw: bytes, one: Any, count: int, concurrency: int) -> None:
    """Send ``count`` unrecorded requests over ``min(count, concurrency)`` connections."""
    left = count

    async def lane() -> None:
        nonlocal left
        try:
            conn = await _connect(host, port)
        except OSError:
            return
        while left > 0:
            left -= 1
            sample = await one(conn)
            if sample.error is not None or conn.lost is not None:
                if conn.transport is not None:
                    conn.transport.close()
                try:
                    conn = await _connect(host, port)
                except OSError:
                    return
        if conn.transport is not None:
            conn.transport.close()

    await asyncio.gather(*(lane() for _ in range(max(1, min(count, concurrency)))))
