"""A TCP proxy in front of moto that can stop answering: AWS's brownout, on a real socket.

``pass`` forwards both ways; ``blackhole`` keeps accepting connections and reading requests but
forwards nothing and answers nothing (what a client sees when DynamoDB or SSM hangs); ``delay_s``
holds each request that long before forwarding it (a slow AWS). ``restore`` goes back to passing
and closes the connections whose requests were swallowed, as a recovering endpoint would.
"""

from __future__ import annotations

import contextlib
import re
import socket
import threading
import time
from urllib.parse import urlsplit

__all__ = ["AwsProxy"]

_TARGET = re.compile(rb"X-Amz-Target: ([A-Za-z0-9_.]+)", re.IGNORECASE)


class AwsProxy:
    def __init__(self, upstream_url: str) -> None:
        parts = urlsplit(upstream_url)
        self._upstream = (parts.hostname or "127.0.0.1", parts.port or 80)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._listener.getsockname()[1]}"
        self.blackhole = False
        self.delay_s = 0.0
        self.targets: list[str] = []  # X-Amz-Target of every request received, forwarded or not
        self.swallowed = 0  # requests received while blackholed
        self._lock = threading.Lock()
        self._sockets: set[socket.socket] = set()
        self._holed: set[socket.socket] = set()
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def restore(self) -> None:
        with self._lock:
            self.blackhole = False
            holed, self._holed = self._holed, set()
        for sock in holed:
            _close(sock)

    def close(self) -> None:
        self._closed = True
        _close(self._listener)
        with self._lock:
            sockets, self._sockets = set(self._sockets), set()
        for sock in sockets:
            _close(sock)

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        try:
            upstream = socket.create_connection(self._upstream)
        except OSError:
            _close(client)
            return
        with self._lock:
            self._sockets.update((client, upstream))
        threading.Thread(target=self._pump, args=(upstream, client), daemon=True).start()
        try:
            while data := client.recv(65536):
                self.targets.extend(t.decode() for t in _TARGET.findall(data))
                if self.blackhole:
                    with self._lock:
                        self.swallowed += 1
                        self._holed.add(client)
                    continue
                if self.delay_s:
                    time.sleep(self.delay_s)
                upstream.sendall(data)
        except OSError:
            pass
        finally:
            _close(client)
            _close(upstream)

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            _close(sink)
            _close(source)


def _close(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    with contextlib.suppress(OSError):
        sock.close()
