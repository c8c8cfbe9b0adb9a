"""The CLI against the local stack, as a new user runs it: real processes, real ports, real moto.

``--dev`` / ``SWITCHBOARD_DEV=1`` on every subcommand, ``AWS_ENDPOINT_URL`` winning, the dev
routing file validating, busy ports refused before anything starts, the banner's commands run as
printed, state kept across a restart, ``demo-tools`` and ``switchboard serve``.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import httpx
import openai
import pytest
from switchboard.cli import main
from switchboard.core.settings import Settings
from switchboard.devtools.devstack import seed_aws

from tests.integration.devprocess import DEV_KEY, ROOT, WAIT_S, DevProcess, clean_env, cli, free_port

DEV_ROUTING = ROOT / "infra" / "routing.dev.json"


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


Shell = Callable[..., tuple[int, str, str]]


@pytest.fixture
def new_shell(aws: str, capsys: pytest.CaptureFixture[str]) -> Iterator[Shell]:
    """Run the CLI in this process as from a new shell: no AWS or Switchboard variables, no AWS
    profile, no boto3 session yet; ``new_shell(*argv, VAR=value)`` gives (status, stdout,
    stderr). The environment is restored after the test."""
    from switchboard.infra import aws as aws_module

    saved = dict(os.environ)

    def run(*argv: str, **env: str) -> tuple[int, str, str]:
        os.environ.clear()
        os.environ.update(clean_env(**env))
        aws_module._session.cache_clear()
        aws_module.client.cache_clear()
        capsys.readouterr()
        code = main(list(argv))
        out, err = capsys.readouterr()
        return code, out, err

    yield run
    os.environ.clear()
    os.environ.update(saved)
    aws_module._session.cache_clear()
    aws_module.client.cache_clear()


def test_dev_flag_in_a_new_shell_reaches_the_local_stack(aws: str, param: str) -> None:
    """A real process from a clean environment: without --dev it has no credentials at all."""
    env = clean_env(MOTO_PORT=moto_port(aws))
    out = cli("routing", "show", "--dev", "--param", param, env=env)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["revision"] == "pushed-by-test"
    without = cli("routing", "show", "--param", param, env=env)
    assert without.returncode == 1 and "Traceback" not in without.stderr


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
    new_shell: Shell,
    aws: str,
    param: str,
    argv: list[str],
    extra: dict[str, str],
) -> None:
    code, out, err = new_shell(*argv, "--param", param, MOTO_PORT=moto_port(aws), **extra)
    assert code == 0, err
    assert json.loads(out)["revision"] == "pushed-by-test"


def test_aws_endpoint_url_wins_over_moto_port(new_shell: Shell, aws: str, param: str) -> None:
    nothing_there = str(free_port())
    code, _, err = new_shell(
        "routing", "show", "--dev", "--param", param, AWS_ENDPOINT_URL=aws, MOTO_PORT=nothing_there
    )
    assert code == 0, err


def test_a_loopback_endpoint_alone_needs_no_credentials(new_shell: Shell, aws: str, param: str) -> None:
    code, _, err = new_shell("routing", "show", "--param", param, AWS_ENDPOINT_URL=aws)
    assert code == 0, err
    assert "NoCredentials" not in err


def test_keys_and_spend_honour_dev_too(new_shell: Shell, aws: str) -> None:
    table = f"sb-{uuid.uuid4().hex[:8]}"
    seed_aws(Settings.from_env({}, table=table, routing_param=f"/t/{table}"), "{}", "sk-unused", {})
    env = {"MOTO_PORT": moto_port(aws), "SWITCHBOARD_TABLE": table}
    code, _, err = new_shell("keys", "create", "--name", "from-cli", "--json", "--dev", **env)
    assert code == 0, err
    code, out, err = new_shell("keys", "list", "--json", "--dev", **env)
    assert code == 0, err
    assert "from-cli" in out
    code, out, err = new_shell("spend", "--json", "--dev", **env)
    assert code == 0, err
    assert json.loads(out)["total"]["requests"] == 0


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


def test_a_busy_moto_port_is_one_line_and_status_2_not_a_hang(tmp_path: Path) -> None:
    ports = {"PORT": free_port(), "MOTO_PORT": free_port(), "MOCK_PORT": free_port()}
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        ports["MOTO_PORT"] = taken.getsockname()[1]
        env = clean_env(SWITCHBOARD_DEV_STATE=str(tmp_path), **{k: str(v) for k, v in ports.items()})
        out = cli("dev", env=env, timeout=WAIT_S)  # a hang fails here
    assert out.returncode == 2
    assert out.stdout == ""  # no banner
    assert (
        out.stderr.strip()
        == f"switchboard: port {ports['MOTO_PORT']} (MOTO_PORT) is in use: set MOTO_PORT to a free port"
    )
    assert not list(tmp_path.iterdir())  # nothing started, nothing saved


@pytest.mark.parametrize("variable", ["PORT", "MOTO_PORT", "MOCK_PORT"])
def test_a_busy_port_is_found_before_anything_starts(
    variable: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    ports = {"PORT": free_port(), "MOTO_PORT": free_port(), "MOCK_PORT": free_port()}
    for name, port in ports.items():
        monkeypatch.setenv(name, str(port))
    monkeypatch.setenv("SWITCHBOARD_DEV_STATE", str(tmp_path))
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        monkeypatch.setenv(variable, str(taken.getsockname()[1]))
        assert main(["dev"]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert len(err.strip().splitlines()) == 1
    assert f"({variable}) is in use: set {variable} to a free port" in err


def test_two_variables_on_one_port_are_refused(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    port = str(free_port())
    monkeypatch.setenv("PORT", port)
    monkeypatch.setenv("MOCK_PORT", port)
    monkeypatch.setenv("MOTO_PORT", str(free_port()))
    assert main(["dev"]) == 2
    assert f"MOCK_PORT and PORT are both {port}: set MOCK_PORT to another port" in capsys.readouterr().err


def test_serve_refuses_a_busy_port(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["serve", "--port", str(port)]) == 2
    assert f"port {port} (PORT) is in use: set PORT (or --port) to a free port" in capsys.readouterr().err


# --------------------------------------------------------------------------- switchboard dev, for real


def banner_commands(banner: str) -> list[str]:
    """The banner's shell commands: the curl (three lines), the python line (two), the CLI lines."""
    text = banner.replace("\\\n", " ")
    return [
        line.strip()
        for line in text.splitlines()
        if line.strip().startswith((".", "/", "curl", "MOTO_PORT="))
    ]


def test_the_banner_commands_run_as_printed(dev: DevProcess) -> None:
    assert "new, kept in" in dev.banner  # a new state folder: a clean start
    commands = banner_commands(dev.banner)
    assert any(c.startswith("curl") for c in commands)
    assert any("spend --dev" in c for c in commands)
    assert not any(c.startswith("switchboard ") for c in commands)  # not on the PATH here
    shell_env = clean_env()  # another shell: none of the stack's variables (MOTO_PORT, ...)
    for command in commands:
        out = subprocess.run(
            command, shell=True, cwd=ROOT, env=shell_env, capture_output=True, text=True, timeout=WAIT_S
        )
        assert out.returncode == 0, f"{command}\n{out.stdout}\n{out.stderr}"
        assert "Traceback" not in out.stderr
    assert shlex.split(commands[-1])[:2] == [f"MOTO_PORT={dev.ports['MOTO_PORT']}", ".venv/bin/switchboard"]


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


def test_state_survives_a_restart(tmp_path: Path, new_shell: Shell) -> None:
    state = tmp_path / "state"
    first = DevProcess(state)

    def on(stack: DevProcess, *argv: str) -> str:
        code, out, err = new_shell(*argv, "--dev", MOTO_PORT=str(stack.ports["MOTO_PORT"]))
        assert code == 0, err
        return out

    try:
        secret = json.loads(on(first, "keys", "create", "--name", "kept-key", "--json"))["key"]
        doc = json.loads(on(first, "routing", "show"))
        doc["revision"] = "pushed-before-restart"
        pushed = tmp_path / "pushed.json"
        pushed.write_text(json.dumps(doc))
        on(first, "routing", "push", str(pushed), "--yes")
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

    second = DevProcess(state)  # other ports: the pushed document follows the mock's new port
    try:
        assert "restored from" in second.banner
        assert "kept-key" in on(second, "keys", "list", "--json")
        assert json.loads(on(second, "routing", "show"))["revision"] == "pushed-before-restart"
        assert json.loads(on(second, "spend", "--json"))["total"]["requests"] == 1
        again = httpx.post(  # the kept key still authenticates, and the pushed routing still serves
            second.base + "/chat/completions",
            headers={"authorization": f"Bearer {secret}"},
            json={"model": "mock-echo", "messages": [{"role": "user", "content": "again"}]},
            timeout=WAIT_S,
        )
        assert again.status_code == 200, again.text
    finally:
        second.stop()


def test_make_dev_reset_removes_the_state_then_starts() -> None:
    """A new state folder starts clean (the shared stack's banner says so); dev-reset empties it."""
    plan = subprocess.run(
        ["make", "-n", "dev-reset", "PYTHON=python3"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.splitlines()
    reset = plan.index("rm -rf .dev-state")
    assert any("switchboard dev" in line for line in plan[reset + 1 :])


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
