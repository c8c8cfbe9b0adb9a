"""The CLI against the local stack, as a new user runs it: real processes, real ports, real moto.

``--dev`` / ``SWITCHBOARD_DEV=1`` on every subcommand, ``AWS_ENDPOINT_URL`` winning, the dev
routing file validating, busy ports refused before anything starts, the banner's commands run as
printed, state kept across a restart, ``demo-tools`` and ``switchboard serve``.
"""

from __future__ import annotations

import json
import os
import queue
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import httpx
import openai
import pytest
from switchboard.cli import main
from switchboard.devtools.devstack import seed_aws
from switchboard.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
DEV_ROUTING = ROOT / "infra" / "routing.dev.json"
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


def moto_port(url: str) -> str:
    return url.rsplit(":", 1)[1]


@pytest.fixture
def param(aws: str) -> str:
    name = f"/switchboard-test/{uuid.uuid4().hex[:10]}/routing"
    doc = json.loads(DEV_ROUTING.read_text().replace("${MOCK_BASE_URL}", "http://127.0.0.1:9/v1"))
    doc["revision"] = "pushed-by-test"
    boto3.client("ssm", region_name="us-east-1").put_parameter(
        Name=name, Value=json.dumps(doc), Type="String", Overwrite=True
    )
    return name


# --------------------------------------------------------------------------- --dev and the endpoint


@pytest.mark.parametrize(
    ("argv", "extra"),
    [
        (["routing", "show", "--dev"], {}),
        (["--dev", "routing", "show"], {}),
        (["routing", "show"], {"SWITCHBOARD_DEV": "1"}),
    ],
    ids=["flag-after", "flag-before", "env"],
)
def test_dev_mode_reaches_the_local_stack_without_credentials(
    aws: str, param: str, argv: list[str], extra: dict[str, str]
) -> None:
    env = clean_env(MOTO_PORT=moto_port(aws), **extra)
    out = cli(*argv, "--param", param, env=env)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["revision"] == "pushed-by-test"


def test_aws_endpoint_url_wins_over_moto_port(aws: str, param: str) -> None:
    env = clean_env(AWS_ENDPOINT_URL=aws, MOTO_PORT=str(free_port()))  # nothing listens there
    out = cli("routing", "show", "--dev", "--param", param, env=env)
    assert out.returncode == 0, out.stderr


def test_a_loopback_endpoint_alone_needs_no_credentials(aws: str, param: str) -> None:
    out = cli("routing", "show", "--param", param, env=clean_env(AWS_ENDPOINT_URL=aws))
    assert out.returncode == 0, out.stderr
    assert "NoCredentials" not in out.stderr


def test_keys_and_spend_honour_dev_too(aws: str) -> None:
    table = f"sb-{uuid.uuid4().hex[:8]}"
    seed_aws(Settings.from_env({}, table=table, routing_param=f"/t/{table}"), "{}", "sk-unused", {})
    env = clean_env(MOTO_PORT=moto_port(aws), SWITCHBOARD_TABLE=table)
    created = cli("keys", "create", "--name", "from-cli", "--json", "--dev", env=env)
    assert created.returncode == 0, created.stderr
    listed = cli("keys", "list", "--json", "--dev", env=env)
    assert listed.returncode == 0, listed.stderr
    assert "from-cli" in listed.stdout
    spent = cli("spend", "--json", "--dev", env=env)
    assert spent.returncode == 0, spent.stderr
    assert json.loads(spent.stdout)["total"]["requests"] == 0


def test_the_dev_routing_file_validates_with_its_placeholder_explained(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MOCK_BASE_URL", raising=False)
    monkeypatch.setenv("MOCK_PORT", "9123")
    code = main(["routing", "validate", str(DEV_ROUTING)])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert out.startswith("valid: schema version 1, revision dev-1")
    assert "demo-tools" in out
    assert "${MOCK_BASE_URL}" in err and "http://127.0.0.1:9123/v1" in err


# --------------------------------------------------------------------------- busy ports


@pytest.mark.parametrize("variable", ["PORT", "MOTO_PORT", "MOCK_PORT"])
def test_a_busy_port_is_one_line_and_status_2(variable: str, tmp_path: Path) -> None:
    ports = {"PORT": free_port(), "MOTO_PORT": free_port(), "MOCK_PORT": free_port()}
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        ports[variable] = taken.getsockname()[1]
        env = clean_env(SWITCHBOARD_DEV_STATE=str(tmp_path), **{k: str(v) for k, v in ports.items()})
        out = cli("dev", env=env, timeout=WAIT_S)  # a hang fails here
    assert out.returncode == 2
    assert out.stdout == ""  # no banner
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert f"({variable}) is in use" in lines[0] and f"set {variable}" in lines[0]
    assert not list(tmp_path.iterdir())  # nothing started, nothing saved


def test_serve_refuses_a_busy_port(aws: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        out = cli("serve", "--dev", "--port", str(port), env=clean_env(MOTO_PORT=moto_port(aws)))
    assert out.returncode == 2
    assert "PORT" in out.stderr and "in use" in out.stderr


# --------------------------------------------------------------------------- switchboard dev, for real


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


@pytest.fixture(scope="module")
def dev(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevProcess]:
    process = DevProcess(tmp_path_factory.mktemp("dev") / "state")
    yield process
    process.stop()


def banner_commands(banner: str) -> list[str]:
    """The banner's shell commands: the curl (three lines), the python line (two), the CLI lines."""
    text = banner.replace("\\\n", " ")
    return [line.strip() for line in text.splitlines() if line.strip().startswith((".", "/", "curl"))]


def test_the_banner_commands_run_as_printed(dev: DevProcess) -> None:
    commands = banner_commands(dev.banner)
    assert any(c.startswith("curl") for c in commands)
    assert any("spend --dev" in c for c in commands)
    assert not any(c.startswith("switchboard ") for c in commands)  # not on the PATH here
    shell_env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "SWITCHBOARD_"))}
    shell_env.update({k: str(v) for k, v in dev.ports.items()})  # the shell the user started it from
    for command in commands:
        out = subprocess.run(
            command, shell=True, cwd=ROOT, env=shell_env, capture_output=True, text=True, timeout=WAIT_S
        )
        assert out.returncode == 0, f"{command}\n{out.stdout}\n{out.stderr}"
        assert "Traceback" not in out.stderr
    assert shlex.split(commands[-1])[0].endswith("switchboard")


def test_demo_tools_answers_with_a_tool_call(dev: DevProcess) -> None:
    client = openai.OpenAI(base_url=dev.base, api_key=DEV_KEY, max_retries=0)
    tools: list[Any] = [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
            },
        }
    ]
    messages: list[Any] = [{"role": "user", "content": "weather in Paris?"}]
    reply = client.chat.completions.create(model="demo-tools", messages=messages, tools=tools)
    choice = reply.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.tool_calls and choice.message.tool_calls[0].function.name == "get_weather"
    assert json.loads(choice.message.tool_calls[0].function.arguments) == {"city": "Paris"}

    name, arguments, finish = "", "", None
    for chunk in client.chat.completions.create(
        model="demo-tools", messages=messages, tools=tools, stream=True
    ):
        if not chunk.choices:
            continue
        for call in chunk.choices[0].delta.tool_calls or []:
            name += (call.function and call.function.name) or ""
            arguments += (call.function and call.function.arguments) or ""
        finish = chunk.choices[0].finish_reason or finish
    assert (name, json.loads(arguments), finish) == ("get_weather", {"city": "Paris"}, "tool_calls")


def test_state_survives_a_restart_and_reset_starts_clean(tmp_path: Path) -> None:
    state = tmp_path / "state"
    first = DevProcess(state)
    try:
        created = first.cli("keys", "create", "--name", "kept-key", "--json", "--dev")
        assert created.returncode == 0, created.stderr
        secret = json.loads(created.stdout)["key"]
        doc = json.loads(first.cli("routing", "show", "--dev").stdout)
        doc["revision"] = "pushed-before-restart"
        pushed = tmp_path / "pushed.json"
        pushed.write_text(json.dumps(doc))
        assert first.cli("routing", "push", str(pushed), "--yes", "--dev").returncode == 0
        reply = httpx.post(
            first.base + "/chat/completions",
            headers={"authorization": f"Bearer {secret}"},
            json={"model": "mock-echo", "messages": [{"role": "user", "content": "count me"}]},
            timeout=WAIT_S,
        )
        assert reply.status_code == 200, reply.text
    finally:
        tail = first.stop()
    assert "state saved to" in tail

    second = DevProcess(state)
    try:
        assert "restored from" in second.banner
        keys = second.cli("keys", "list", "--json", "--dev")
        assert "kept-key" in keys.stdout
        routing = json.loads(second.cli("routing", "show", "--dev").stdout)
        assert routing["revision"] == "pushed-before-restart"
        spend = json.loads(second.cli("spend", "--json", "--dev").stdout)
        assert spend["total"]["requests"] == 1
        again = httpx.post(  # the kept key still authenticates
            second.base + "/chat/completions",
            headers={"authorization": f"Bearer {secret}"},
            json={"model": "mock-echo", "messages": [{"role": "user", "content": "again"}]},
            timeout=WAIT_S,
        )
        assert again.status_code == 200
    finally:
        second.stop()

    subprocess.run(["rm", "-rf", str(state)], check=True)  # what make dev-reset does first
    third = DevProcess(state)
    try:
        assert "new, kept in" in third.banner
        assert "kept-key" not in third.cli("keys", "list", "--json", "--dev").stdout
        assert json.loads(third.cli("routing", "show", "--dev").stdout)["revision"] == "dev-1"
    finally:
        third.stop()


# --------------------------------------------------------------------------- switchboard serve


def test_serve_runs_the_gateway_alone_over_the_given_aws(aws: str, mock: Any) -> None:
    suffix = uuid.uuid4().hex[:8]
    settings = Settings.from_env({}, table="switchboard", routing_param=f"/serve-test/{suffix}/routing")
    routing = DEV_ROUTING.read_text().replace("${MOCK_BASE_URL}", mock.base_url)
    seed_aws(settings, routing, "sk-serve-test", {})
    port = free_port()
    env = clean_env(AWS_ENDPOINT_URL=aws, SWITCHBOARD_ROUTING_PARAM=settings.routing_param, PORT=str(port))
    proc = subprocess.Popen(
        [sys.executable, "-m", "switchboard.cli", "serve"],
        env=env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + WAIT_S
        reply = None
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                reply = httpx.post(
                    f"http://127.0.0.1:{port}/v1/chat/completions",
                    headers={"authorization": "Bearer sk-serve-test"},
                    json={"model": "mock-echo", "messages": [{"role": "user", "content": "hi"}]},
                    timeout=WAIT_S,
                )
                break
            except httpx.ConnectError:
                time.sleep(0.05)
        assert reply is not None, proc.stdout and proc.stdout.read()
        assert reply.status_code == 200, reply.text
        assert reply.json()["choices"][0]["message"]["content"] == "echo: hi"
        assert "server" not in reply.headers  # run.sh's --no-server-header
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=WAIT_S)
        assert proc.stdout is not None
        proc.stdout.close()


def test_serve_uses_the_uvicorn_options_of_the_lambda() -> None:
    """functions/gateway/run.sh is what Lambda runs; serve and dev pass uvicorn the same options."""
    from switchboard.cli import UVICORN_OPTIONS

    flags = (ROOT / "functions" / "gateway" / "run.sh").read_text().split("uvicorn", 1)[1].split()
    expected = {
        "loop": flags[flags.index("--loop") + 1],
        "http": flags[flags.index("--http") + 1],
        "access_log": "--no-access-log" not in flags,
        "server_header": "--no-server-header" not in flags,
    }
    assert expected == UVICORN_OPTIONS


@pytest.mark.parametrize(("command", "variable"), [("dev", "MOTO_PORT"), ("serve", "PORT"), ("dev", "PORT")])
def test_a_port_that_is_not_a_number_is_a_usage_error(
    command: str, variable: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv(variable, "eighty")
    assert main([command]) == 2
    out, err = capsys.readouterr()
    assert out == "" and f"{variable}=eighty is not a port number" in err
