"""A scripted HTTP/1.1 stand-in for an AWS JSON service on a loopback port, for ``awsjson``'s tests.

Each request takes the next reply of the script (``http.server``), so a test says exactly what the
service answers, attempt by attempt; ``seen`` records what the client sent.
"""

from __future__ import annotations

import json
import ssl
import threading
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from switchboard.infra import awsjson
from switchboard.infra.awsjson import Credentials

__all__ = ["KEY", "SECRET", "TOKEN", "Reply", "Seen", "Stub", "error", "make_client", "stub"]

SECRET = "stub-secret-key-never-shown"
TOKEN = "stub-session-token-never-shown"


@dataclass
class Reply:
    status: int = 200
    body: Any = field(default_factory=dict)  # a dict is sent as JSON; bytes as they are
    close: bool = False  # close the connection after answering (without saying so)
    drop: bool = False  # close the connection without answering
    delay_s: float = 0.0
    crc: int | None = None  # a wrong x-amz-crc32 to send
    headers: dict[str, str] = field(default_factory=dict)  # more headers to send


@dataclass
class Seen:
    headers: dict[str, str]
    body: dict[str, Any]
    connection: tuple[str, int]


class Stub:
    def __init__(self, tls: ssl.SSLContext | None = None) -> None:
        self.script: list[Reply] = []
        self.seen: list[Seen] = []
        stub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                length = int(self.headers.get("content-length", 0))
                body = json.loads(self.rfile.read(length) or b"{}")
                stub.seen.append(Seen(dict(self.headers.items()), body, self.client_address))
                reply = stub.script.pop(0) if stub.script else Reply()
                time.sleep(reply.delay_s)
                if reply.drop:
                    self.close_connection = True
                    return
                data = reply.body if isinstance(reply.body, bytes) else json.dumps(reply.body).encode()
                self.send_response(reply.status)
                self.send_header("content-type", "application/x-amz-json-1.0")
                self.send_header("content-length", str(len(data)))
                self.send_header("x-amzn-requestid", f"req-{len(stub.seen)}")
                self.send_header("x-amz-crc32", str(reply.crc if reply.crc is not None else zlib.crc32(data)))
                for name, value in reply.headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(data)
                self.wfile.flush()
                if reply.close:
                    self.close_connection = True

            def log_message(self, *args: Any) -> None:
                pass

        class Server(ThreadingHTTPServer):
            daemon_threads = True

            def handle_error(self, request: Any, client_address: Any) -> None:
                pass  # a client that timed out and left: expected here, not worth a traceback

        self.server = Server(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        if tls is not None:
            self.server.socket = tls.wrap_socket(self.server.socket, server_side=True)
            self.url = f"https://localhost:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.02,), daemon=True)
        self.thread.start()

    def connections(self) -> int:
        return len({s.connection for s in self.seen})

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def stub() -> Iterator[Stub]:
    made = Stub()
    yield made
    made.stop()


def make_client(
    url: str, sleeps: list[float], service: awsjson.Service = awsjson.DYNAMODB, **kwargs: Any
) -> awsjson.Client:
    return awsjson.Client(
        service, "us-east-1", Credentials("AKIDSTUB", SECRET, TOKEN), url, sleep=sleeps.append, **kwargs
    )


def error(code: str, message: str = "no", **extra: Any) -> dict[str, Any]:
    return {"__type": f"com.amazonaws.dynamodb.v20120810#{code}", "message": message, **extra}


KEY = {"TableName": "t", "Key": {"pk": {"S": "a"}, "sk": {"S": "b"}}}
