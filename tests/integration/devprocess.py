"""``switchboard dev`` as a user runs it, in a subprocess on free ports (tests of the dev stack)."""

from __future__ import annotations

import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DEV_KEY = "sk-switchboard-dev"
WAIT_S = 60  # a bound, not a timing: a healthy start takes a few seconds


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def clean_env(**extra: str) -> dict[str, str]:
    """The environment of a new shell: no AWS configuration, no Switchboard settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "SWITCHBOARD_", "MOTO_"))}
    env.pop("PORT", None)
    env.pop("MOCK_PORT", None)
    env["HOME"] = env.get("HOME", "/tmp")
    env["AWS_CONFIG_FILE"] = env["AWS_SHARED_CREDENTIALS_FILE"] = "/nonexistent"  # no profile to fall on
    env.update(extra)
    return env


def cli(*args: str, env: dict[str, str], timeout: float = WAIT_S) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "switchboard.cli", *args],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


class DevProcess:
    """``switchboard dev`` in a subprocess on free ports, its stdout read line by line."""

    def __init__(self, state: Path) -> None:
        self.ports = {"PORT": free_port(), "MOTO_PORT": free_port(), "MOCK_PORT": free_port()}
        self.env = clean_env(SWITCHBOARD_DEV_STATE=str(state), **{k: str(v) for k, v in self.ports.items()})
        self.proc = subprocess.Popen(
            [str(ROOT / ".venv" / "bin" / "switchboard"), "dev"]
            if (ROOT / ".venv" / "bin" / "switchboard").exists()
            else [sys.executable, "-m", "switchboard.cli", "dev"],
            env=self.env,
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        self.banner = self.read_until("routing show --dev")

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line)
        self.lines.put("")

    def read_until(self, marker: str) -> str:
        seen: list[str] = []
        deadline = time.monotonic() + WAIT_S
        while time.monotonic() < deadline:
            line = self.lines.get(timeout=WAIT_S)
            if line == "":
                raise AssertionError("switchboard dev ended:\n" + "".join(seen))
            seen.append(line)
            if marker in line:
                return "".join(seen)
        raise AssertionError("no " + marker + " in:\n" + "".join(seen))

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.ports['PORT']}/v1"

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return cli(*args, env=self.env)

    def stop(self) -> str:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        self.proc.wait(timeout=WAIT_S)
        rest: list[str] = []
        while (line := self.lines.get(timeout=WAIT_S)) != "":
            rest.append(line)
        assert self.proc.stdout is not None
        self.proc.stdout.close()
        return "".join(rest)
