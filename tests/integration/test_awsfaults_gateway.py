"""A gateway process started with ``SWITCHBOARD_AWS_FAULTS`` meets those faults in its AWS calls.

How a soak runs gateway subprocesses with faults: here two 500s on every ``GetParameter`` attempt
stream, which the light client's retries ride out, so the request is served, and the process
reports what its fault layer injected.
"""

from __future__ import annotations

import json
import subprocess
import sys

from switchboard.devtools import awsfaults
from switchboard.devtools.devstack import ROOT

from tests.conftest import API_KEY
from tests.integration.test_serving_without_boto3 import gateway_env as gateway_env  # the fixture

SERVE = """
import json, sys, threading, time
import httpx, uvicorn
sys.path.insert(0, sys.argv[1])
import app
from switchboard.infra import aws

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
faults = aws.runtime_client("ssm", "us-east-1").interceptor
server.should_exit = True
thread.join(10)
print(json.dumps({
    "status": answer.status_code,
    "injected": {f"{fault} {op}": n for (fault, op), n in faults.injected.items()},
    "attempts": dict(faults.attempts),
}))
"""


def test_a_gateway_process_runs_with_the_faults_of_its_environment(gateway_env: dict[str, str]) -> None:
    rules = [{"fault": "error500", "operations": ["GetParameter"], "times": 2}]
    env = {**gateway_env, awsfaults.ENV: json.dumps({"seed": 1, "rules": rules})}
    done = subprocess.run(
        [sys.executable, "-c", SERVE, str(ROOT / "functions" / "gateway"), API_KEY],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["status"] == 200
    assert result["injected"] == {"error500 GetParameter": 2}
    assert result["attempts"]["GetParameter"] >= 3  # two failed, then the real ones
