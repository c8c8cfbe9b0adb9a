"""Shared fixtures: a real moto server and mock provider over sockets, and a gateway factory.

``aws`` and ``mock`` live for the whole session; each test gets its own SSM parameter names, so
tests never see each other's routing documents or keys.
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import anthropic
import boto3
import openai
import pytest
import uvicorn
from switchboard.core.settings import Settings
from switchboard.devtools.devstack import aws_env, seed_aws, start_moto
from switchboard.devtools.mockupstream import MockUpstream, run_in_thread
from switchboard.http.app import create_app
from switchboard.wiring import Gateway

from tests.native_upstream import ScriptedUpstream

API_KEY = "sk-test-client-key"


def pytest_collection_finish(session: pytest.Session) -> None:
    """What collection built (every test module, the SDKs, moto's models) is kept for the run:
    frozen, the collector skips it, so the garbage collections during the tests (and the one at
    each module's end, below) look only at what the tests made."""
    gc.collect()
    gc.freeze()


@pytest.fixture(autouse=True, scope="module")
def _garbage_collected_at_module_end() -> Iterator[None]:
    """A socket or file a test left to the garbage collector is reported (ResourceWarning, an
    error here) at the end of the module that left it, not in whatever test a later collection
    happens to run in."""
    yield
    gc.collect()


@pytest.fixture(autouse=True)
def _sdk_clients_closed(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The OpenAI and Anthropic SDK clients a test makes are closed when it ends. Left open, their
    connections are closed by the garbage collector, in an order of its own: the socket can go
    first and warn ``unclosed socket`` in a later test (a failure, with warnings as errors)."""
    made: list[Any] = []
    for cls in (openai.OpenAI, anthropic.Anthropic):
        monkeypatch.setattr(cls, "__init__", _recording(cls.__init__, made))
    yield
    for client in made:
        client.close()


def _recording(init: Callable[..., None], made: list[Any]) -> Callable[..., None]:
    def recorded(self: Any, *args: Any, **kwargs: Any) -> None:
        init(self, *args, **kwargs)
        made.append(self)

    return recorded


@pytest.fixture(scope="session")
def aws() -> Iterator[str]:
    """A moto server on a free loopback port, with boto3 pointed at it for the session."""
    server, url = start_moto(0)
    saved = {k: os.environ.get(k) for k in aws_env(url)}
    os.environ.update(aws_env(url))
    yield url
    server.stop()
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture(scope="session")
def mock() -> Iterator[MockUpstream]:
    upstream, stop = run_in_thread()
    yield upstream
    stop()


def routing_doc(mock_url: str, models: dict[str, Any], **extra: Any) -> dict[str, Any]:
    """A routing document whose only provider is the mock, with fast retries for tests."""
    doc: dict[str, Any] = {
        "version": 1,
        "defaults": {
            "timeouts": {"connect_s": 2, "first_token_s": 5, "total_s": 20},
            "retry": {"attempts": 2, "base_delay_ms": 5, "max_delay_ms": 20},
        },
        "providers": {
            "mock": {"kind": "openai", "base_url": mock_url, "api_key": {"ssm": "/switchboard/secrets/mock"}},
            "backup": {
                "kind": "openai",
                "base_url": mock_url,
                "api_key": {"ssm": "/switchboard/secrets/mock"},
            },
        },
        "models": models,
    }
    doc.update(extra)
    return doc


@dataclass
class RunningGateway:
    base_url: str
    settings: Settings
    api_key: str
    gateway: Gateway
    stop: Callable[[], None]  # shuts the server down (its lifespan's shutdown runs); idempotent

    @property
    def v1(self) -> str:
        return self.base_url + "/v1"

    def put_routing(self, doc: dict[str, Any] | str) -> None:
        text = doc if isinstance(doc, str) else json.dumps(doc)
        boto3.client("ssm", region_name="us-east-1").put_parameter(
            Name=self.settings.routing_param, Value=text, Type="String", Overwrite=True
        )

    def headers(self) -> dict[str, str]:
        return {"authorization": f"Bearer {self.api_key}"}


class _Server(uvicorn.Server):
    def install_signal_handlers(self) -> None:  # runs in a thread: leave signals to pytest
        pass


def serve_app(app: Any) -> tuple[str, Callable[[], None]]:
    """Run ``app`` under uvicorn on a free loopback port in a thread; return its URL and a stopper."""
    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="on")
    server = _Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        if not thread.is_alive():
            raise RuntimeError("gateway server failed to start")
        threading.Event().wait(0.005)
    port = server.servers[0].sockets[0].getsockname()[1]

    def stop() -> None:
        server.should_exit = True
        thread.join(timeout=10)

    return f"http://127.0.0.1:{port}", stop


@pytest.fixture
def gateway_factory(aws: str, mock: MockUpstream) -> Iterator[Callable[..., RunningGateway]]:
    """Start a gateway over HTTP with its own routing document: ``gateway_factory(models={...})``."""
    stops: list[Callable[[], None]] = []

    def start(
        models: dict[str, Any] | None = None, doc: dict[str, Any] | None = None, **settings: Any
    ) -> RunningGateway:
        suffix = uuid.uuid4().hex[:10]
        config = Settings.from_env(
            {},
            routing_param=f"/switchboard-test/{suffix}/routing",
            **{"table": "switchboard", **settings},
        )
        document = doc or routing_doc(
            mock.base_url, models or {"echo": {"targets": [{"provider": "mock", "model": "echo"}]}}
        )
        seed_aws(config, json.dumps(document), API_KEY, {})
        gateway = Gateway.from_env(config)
        url, stop = serve_app(create_app(gateway))
        stops.append(stop)
        return RunningGateway(url, config, API_KEY, gateway, stop)

    yield start
    for stop in stops:
        stop()


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def run(coro: Any) -> Any:
    return asyncio.run(coro)


@pytest.fixture(scope="session")
def _native_server() -> Iterator[ScriptedUpstream]:
    upstream = ScriptedUpstream()
    url, stop = serve_app(upstream.app())
    upstream.url = url
    yield upstream
    stop()


@pytest.fixture
def native(_native_server: ScriptedUpstream) -> ScriptedUpstream:
    """The scripted native upstream (Anthropic, Bedrock, Azure routes), reset for each test."""
    _native_server.reset()
    return _native_server
