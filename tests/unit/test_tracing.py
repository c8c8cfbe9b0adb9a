"""Tracing is off by default and then costs nothing; on, it patches botocore and httpx."""

from __future__ import annotations

import json
import os
import subprocess
import sys

PROBE = """
import json, sys, time
t = time.perf_counter()
from switchboard.infra import tracing
import switchboard.http.app, switchboard.wiring
on = tracing.configure(sys.argv[1])
import httpx
tracing.bind({"x-amzn-trace-id": "Root=1-5759e988-bd862e3fe1be46a994272793;Sampled=1"})
import os
print(json.dumps({
    "on": on,
    "xray_loaded": any(m.startswith("aws_xray_sdk") for m in sys.modules),
    "httpx_client": httpx.AsyncClient.__name__,
    "trace_env": os.environ.get("_X_AMZN_TRACE_ID"),
}))
"""


def probe(setting: str, **env: str) -> dict[str, object]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_LAMBDA", "LAMBDA_", "_X_AMZN"))}
    out = subprocess.run(
        [sys.executable, "-c", PROBE, setting],
        env={**clean, **env},
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def test_off_imports_nothing_and_binds_nothing() -> None:
    result = probe("off")
    assert result == {"on": False, "xray_loaded": False, "httpx_client": "AsyncClient", "trace_env": None}


def test_on_in_lambda_patches_httpx_and_follows_the_adapter_trace_header() -> None:
    lambda_env = {
        "LAMBDA_TASK_ROOT": "/var/task",
        "AWS_LAMBDA_FUNCTION_NAME": "gw",
        "POWERTOOLS_TRACE_DISABLED": "false",
    }
    result = probe("on", **lambda_env)
    assert result["on"] is True and result["xray_loaded"] is True
    assert result["httpx_client"] == "_InstrumentedAsyncClient"
    assert str(result["trace_env"]).startswith("Root=1-5759e988")
