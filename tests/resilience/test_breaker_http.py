"""The circuit breaker across two gateway processes (this one's uvicorn thread and a uvicorn
subprocess) over one moto, with short settings: reports on every attempt, state re-read every 50 ms,
a breaker open for 2 s and ramping for 2 s.

One process's failures open it; the other process skips the target; after the open period traffic
comes back gradually (half-open: some requests still skip it); once the ramp is over it is closed
on both. The open breaker is a metric (``BreakerState`` in an EMF line).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from switchboard.devtools.devstack import ROOT, aws_env

from tests.conftest import RunningGateway, routing_doc

MSG = [{"role": "user", "content": "ping pong"}]
SHORT = {"breaker_report_s": 0.0, "breaker_cache_s": 0.05}
POLICY = {
    "window_s": 60,
    "min_requests": 4,
    "error_rate": 0.5,
    "open_s": 2,
    # A half-open ramp long enough, and a first share small enough, that the polls below meet it
    # even on a loaded machine (2 s from 0.3 let a slow run see no skip: 1 in about 20 CI runs).
    "ramp_s": 4,
    "probe_share": 0.1,
    "half_open_min_requests": 2,
}
WAIT_S = 15.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_second(gw: RunningGateway, aws: str, log: Path) -> tuple[str, subprocess.Popen[bytes]]:
    port = free_port()
    env = {
        **os.environ,
        **aws_env(aws),
        "SWITCHBOARD_ROUTING_PARAM": gw.settings.routing_param,
        "SWITCHBOARD_TABLE": gw.settings.table,
        "SWITCHBOARD_BREAKER_REPORT_S": "0",
        "SWITCHBOARD_BREAKER_CACHE_S": "0.05",
        "PYTHONPATH": str(ROOT / "layers"),
    }
    command = [sys.executable, "-m", "uvicorn", "switchboard.http.app:create_app", "--factory"]
    command += ["--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"]
    with log.open("wb") as sink:
        process = subprocess.Popen(command, env=env, stdout=sink, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    while True:
        try:
            if httpx.get(base + "/health", timeout=1).status_code == 200:
                return base + "/v1", process
        except httpx.TransportError:
            pass
        assert process.poll() is None, log.read_text()
        assert time.monotonic() < deadline, "second gateway did not start"
        time.sleep(0.05)


@pytest.fixture
def two(
    gateway_factory: Any, mock: Any, aws: str, tmp_path: Path
) -> Iterator[tuple[str, str, str, Any, Path]]:
    flaky = f"flaky-1000000+id-{uuid.uuid4().hex[:8]}"  # fails until the test heals it
    models = {
        "m": {
            "targets": [{"provider": "mock", "model": flaky}, {"provider": "backup", "model": "echo"}],
            "retry": {"attempts": 1},
        }
    }
    gw = gateway_factory(doc=routing_doc(mock.base_url, models, breaker=POLICY), **SHORT)
    second, process = start_second(gw, aws, tmp_path / "second.log")
    try:
        yield gw.v1, second, flaky, gw, tmp_path / "second.log"
    finally:
        process.terminate()
        process.wait(timeout=10)


def ask(base: str, key: str) -> httpx.Response:
    response = httpx.post(
        base + "/chat/completions",
        json={"model": "m", "messages": MSG},
        headers={"authorization": f"Bearer {key}"},
        timeout=30,
    )
    assert response.status_code == 200, response.text
    return response


def until(check: Any, what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not check():
        assert time.monotonic() < deadline, f"never saw {what}"
        time.sleep(0.02)


def test_the_breaker_opens_half_opens_and_closes_across_two_processes(
    two: tuple[str, str, str, Any, Path], mock: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    first, second, flaky, gw, second_log = two
    key, label = gw.api_key, f"mock/{flaky}"
    for _ in range(4):  # the first process alone sees the failures
        response = ask(first, key)
        assert [e.split(";")[1] for e in response.headers["x-switchboard-trail"].split(",")] == [
            "server",
            "ok",
        ]

    def skipped(base: str) -> bool:
        response = ask(base, key)
        return response.headers.get("x-switchboard-breaker") == f"skipped {label} open"

    until(lambda: skipped(second), "the second process skip the open target")
    until(lambda: skipped(first), "the first process skip the open target")
    opened = ask(second, key)
    assert opened.headers["x-switchboard-trail"].split(";")[0] == "backup/echo"  # not tried at all
    out = capsys.readouterr().out + second_log.read_text()  # the EMF lines of both processes
    gauges = [json.loads(line) for line in out.splitlines() if '"BreakerState"' in line]
    assert [2.0] in [g["BreakerState"] for g in gauges if g["target"] == label]  # 2: open

    mock.heal(flaky)  # the upstream recovers; the breaker finds out through its probes
    seen: list[str] = []

    def closed_on_both() -> bool:
        answers = [ask(base, key) for base in (first, second)]
        seen.extend(a.headers.get("x-switchboard-breaker", "-") for a in answers)
        return all(
            "x-switchboard-breaker" not in a.headers and a.headers["x-switchboard-provider"] == "mock"
            for a in answers
        )

    until(closed_on_both, "the breaker close on both processes")
    assert f"skipped {label} half-open" in seen  # traffic came back gradually, not all at once
    states = [s for s in seen if s != "-"]
    assert states.index(f"skipped {label} half-open") >= 0 and states[-1] != f"skipped {label} open"
