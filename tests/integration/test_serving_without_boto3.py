"""The serving process never imports boto3 when the environment holds the credentials (as Lambda's
does), still serves through boto3 when it does not (a developer's profile), and traces the light
client's calls when tracing is on.

Each case is a fresh interpreter: ``functions/gateway/app.py`` under uvicorn (its lifespan builds
``Gateway.from_env``), against the session's moto and mock provider, serving one chat completion.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
from switchboard.core.settings import Settings
from switchboard.devtools.devstack import ROOT, seed_aws
from switchboard.devtools.mockupstream import MockUpstream

from tests.conftest import API_KEY, routing_doc

SERVE = """
import json, sys, threading, time
import httpx, uvicorn
sys.path.insert(0, sys.argv[1])
import app

class Server(uvicorn.Server):
    def install_signal_handlers(self):
        pass

server = Server(uvicorn.Config(app.app, host="127.0.0.1", port=0, lifespan="on", log_level="warning"))
thread = threading.Thread(target=server.run, daemon=True)
thread.start()
while not server.started:
    time.sleep(0.01)
port = server.servers[0].sockets[0].getsockname()[1]
answer = httpx.post(
    f"http://127.0.0.1:{port}/v1/chat/completions",
    headers={"authorization": "Bearer " + sys.argv[2]},
    json={"model": "echo", "messages": [{"role": "user", "content": "hi"}]},
    timeout=30,
)
loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("boto3", "botocore"))
powertools_parameters = "aws_lambda_powertools.utilities.parameters" in sys.modules
server.should_exit = True
thread.join(10)
print(json.dumps({"status": answer.status_code, "loaded": loaded, "parameters": powertools_parameters}))
"""


def serve_once(env: dict[str, str]) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-c", SERVE, str(ROOT / "functions" / "gateway"), API_KEY],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


@pytest.fixture
def gateway_env(aws: str, mock: MockUpstream) -> dict[str, str]:
    """The environment of a gateway process with its own routing document and table."""
    suffix = uuid.uuid4().hex[:10]
    settings = Settings.from_env({}, routing_param=f"/switchboard-test/{suffix}/routing", table="switchboard")
    seed_aws(settings, json.dumps(routing_doc(mock.base_url, {"echo": {"targets": [
        {"provider": "mock", "model": "echo"}]}})), API_KEY, {})  # fmt: skip
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_LAMBDA", "LAMBDA_", "_X_AMZN"))}
    return {**clean, "SWITCHBOARD_ROUTING_PARAM": settings.routing_param, "SWITCHBOARD_TABLE": "switchboard"}


def test_serving_with_environment_credentials_never_imports_boto3(gateway_env: dict[str, str]) -> None:
    assert gateway_env["AWS_ACCESS_KEY_ID"] and gateway_env["AWS_SECRET_ACCESS_KEY"]
    result = serve_once(gateway_env)
    assert result["status"] == 200
    # Only botocore's package __init__ (0.5 ms): Powertools' own __init__ imports it to register a
    # User-Agent hook for sessions that are never made. No boto3, no botocore client machinery.
    assert result["loaded"] == ["botocore"]
    assert result["parameters"] is False


def test_without_environment_credentials_serving_falls_back_to_boto3(
    gateway_env: dict[str, str], tmp_path: Path
) -> None:
    profile = tmp_path / "credentials"
    profile.write_text("[dev]\naws_access_key_id = testing\naws_secret_access_key = testing\n")
    env = {k: v for k, v in gateway_env.items() if k not in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}
    env.update(AWS_SHARED_CREDENTIALS_FILE=str(profile), AWS_PROFILE="dev", AWS_CONFIG_FILE=os.devnull)
    result = serve_once(env)
    assert result["status"] == 200
    assert {"boto3", "botocore.client"} <= set(result["loaded"])


TRACE = """
import json, sys
from aws_xray_sdk.core import xray_recorder
from switchboard.infra import aws, tracing
assert tracing.configure("on")
trace = "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1"
tracing.bind({"x-amzn-trace-id": trace})
sent = []  # what would go to the X-Ray daemon
xray_recorder.emitter.send_entity = lambda entity: sent.append(json.loads(entity.serialize()))
client = aws.runtime_client("ssm", "us-east-1")
client.get_parameter(Name=sys.argv[1])
try:
    client.get_parameter(Name=sys.argv[1] + "-missing")
except client.exceptions.ParameterNotFound:
    pass
print(json.dumps({"client": type(client).__name__, "sent": sent}))
"""


def test_tracing_gives_each_light_call_a_subsegment(gateway_env: dict[str, str]) -> None:
    lambda_env = {
        "LAMBDA_TASK_ROOT": "/var/task",
        "AWS_LAMBDA_FUNCTION_NAME": "gw",
        "POWERTOOLS_TRACE_DISABLED": "false",
        "AWS_XRAY_CONTEXT_MISSING": "IGNORE_ERROR",
    }
    name = gateway_env["SWITCHBOARD_ROUTING_PARAM"]
    done = subprocess.run(
        [sys.executable, "-c", TRACE, name],
        env={**gateway_env, **lambda_env},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["client"] == "Client"
    ok, failed = result["sent"]
    for sent in (ok, failed):
        assert (sent["name"], sent["namespace"], sent["type"]) == ("SSM", "aws", "subsegment")
        assert sent["trace_id"] == "1-5759e988-bd862e3fe1be46a994272793"
        assert sent["aws"]["operation"] == "GetParameter" and sent["aws"]["region"] == "us-east-1"
    assert not ok.get("fault") and not ok.get("error")
    assert failed["fault"] and failed["error"] and failed["http"]["response"]["status"] == 400
    assert failed["cause"]["exceptions"][0]["type"] == "ParameterNotFound"
