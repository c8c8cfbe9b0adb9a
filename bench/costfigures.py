"""The measured inputs of the AWS cost per million requests (docs/performance.md, "AWS cost").

    python -m bench.costfigures [--cold-runs 5] [--requests 200]      (make cost-figures)

Runs the gateway as the Lambda runs it (``uvicorn app:app``, functions/gateway/run.sh's options)
over moto and the mock provider, each time in a fresh process, at three CPU shares: the whole
machine, and a CPU quota matching Lambda's share at 512 MB and at 256 MB (Lambda gives a function
one vCPU per 1,769 MB: 0.289 vCPU at 512 MB, 0.145 at 256 MB). The quota is a cgroup's CFS quota
(cgroup v2 ``cpu.max`` or v1 ``cpu.cfs_quota_us``); ``systemd-run -p CPUQuota=`` needs systemd as
PID 1, which containers often lack. Per share it measures:

- init: process start to the first served chat completion (Python start, imports, the app's
  wiring, the first SSM and DynamoDB reads through moto), as the bench's cold start does, and the
  CPU time the process used for it (which, divided by a share, gives the init time at that share
  on a machine with nothing else running: on a loaded machine the quota is a cap, not a grant);
- per request, warm: wall time and the gateway process's CPU time for a non-streamed completion
  from a mock that answers at once (the gateway's own part of Lambda's billed duration), and for a
  typical stream (300 content chunks with the usage chunk, as the OpenAI SDK asks with
  ``stream_options.include_usage``);
- bytes sent to the client for each (status line, headers and body: what API Gateway sends out);
- bytes the gateway logs per request (its stdout and stderr: the EMF cost event and any warning);
- AWS calls per request and per second, by operation (moto's request recorder), for a key without
  limits and a key with a budget and rpm/tpm limits.

Prints one JSON document (and writes it to bench/results/costfigures-<stamp>.json).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import time
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import procs
from bench.run import (
    API_KEY,
    FUNCTION_DIR,
    LIMITS_KEY,
    MOCK_PRICE,
    RESULTS,
    Recorder,
    gateway_env,
    log,
    serve_first,
    start_fixed,
)

__all__ = ["CpuQuota", "main"]

MB_PER_VCPU = 1769  # Lambda: one full vCPU at 1,769 MB, proportionally less below
SHARES: dict[str, int | None] = {"whole machine": None, "512 MB": 512, "256 MB": 256}
STREAM_MODEL = "cost-stream"
PLAIN_MODEL = "cost-echo"
PROMPT = [{"role": "user", "content": "Write a short answer about the weather in Paris today"}]


class CpuQuota:
    """A cgroup whose processes share ``vcpus`` of CPU (a CFS quota), joined through ``argv``."""

    def __init__(self, vcpus: float, name: str, period_us: int = 100_000) -> None:
        self.vcpus, self.period_us = vcpus, period_us
        self.path: Path | None = None
        v2 = Path("/sys/fs/cgroup")
        v1 = Path("/sys/fs/cgroup/cpu")
        quota_us = max(1000, int(vcpus * period_us))
        if (v2 / "cgroup.controllers").exists():
            self.path = v2 / name
            self.path.mkdir(exist_ok=True)
            (self.path / "cpu.max").write_text(f"{quota_us} {period_us}\n")
        elif (v1 / "cpu.cfs_quota_us").exists():
            self.path = v1 / name
            self.path.mkdir(exist_ok=True)
            (self.path / "cpu.cfs_period_us").write_text(f"{period_us}\n")
            (self.path / "cpu.cfs_quota_us").write_text(f"{quota_us}\n")
        else:
            raise OSError("no writable cgroup cpu controller (v1 or v2) on this machine")

    def argv(self, argv: Sequence[str]) -> list[str]:
        """``argv`` started inside the cgroup (the shell joins it, then execs)."""
        assert self.path is not None
        join = f'echo $$ > {self.path / "cgroup.procs"} && exec "$@"'
        return ["sh", "-c", join, "sh", *argv]

    def remove(self) -> None:
        if self.path is not None:
            with contextlib.suppress(OSError):
                self.path.rmdir()


def routing_document(mock_url: str) -> str:
    models = {
        PLAIN_MODEL: {"targets": [{"provider": "mock", "model": "echo"}]},
        STREAM_MODEL: {"targets": [{"provider": "mock", "model": "echo+chunks-300"}]},
        "bench-echo": {"targets": [{"provider": "mock", "model": "echo"}]},
    }
    doc = {
        "version": 1,
        "revision": "cost-1",
        "defaults": {"timeouts": {"connect_s": 2, "first_token_s": 10, "total_s": 60}},
        "providers": {
            "mock": {"kind": "openai", "base_url": mock_url, "api_key": {"ssm": "/switchboard/secrets/mock"}}
        },
        "models": models,
        "prices": {"mock/echo": MOCK_PRICE, "mock/echo+chunks-300": MOCK_PRICE},
    }
    return json.dumps(doc)


def start_gateway(name: str, env: dict[str, str], log_dir: Path, quota: CpuQuota | None) -> procs.Proc:
    """``uvicorn app:app`` with run.sh's options, inside ``quota`` when given."""
    port = procs.free_port()
    argv = [
        sys.executable, "-m", "uvicorn", "--host", "127.0.0.1", f"--port={port}",
        "--loop", "uvloop", "--http", "httptools", "--no-access-log", "--no-server-header",
        "--log-level", "warning", "app:app",
    ]  # fmt: skip
    if quota is not None:
        argv = quota.argv(argv)
    return procs.start(name, argv, env=env, cwd=FUNCTION_DIR, log_dir=log_dir, port=port)


def _header_bytes(response: Any) -> int:
    """The status line and headers as sent on the wire (HTTP/1.1)."""
    status = len(f"HTTP/1.1 {response.status_code} {response.reason_phrase}\r\n")
    return status + sum(len(k) + len(v) + 4 for k, v in response.headers.raw) + 2


def one_request(client: Any, port: int, key: str, model: str, stream: bool) -> tuple[float, int]:
    """(wall seconds, bytes received) for one completion."""
    body: dict[str, Any] = {"model": model, "messages": PROMPT}
    if stream:
        body |= {"stream": True, "stream_options": {"include_usage": True}}
    started = time.perf_counter()
    with client.stream(
        "POST",
        f"http://127.0.0.1:{port}/v1/chat/completions",
        json=body,
        headers={"authorization": f"Bearer {key}"},
    ) as response:
        for _ in response.iter_raw():
            pass
        if response.status_code != 200:
            raise RuntimeError(f"{model}: {response.status_code}")
        received = _header_bytes(response) + response.num_bytes_downloaded
    return time.perf_counter() - started, received


def warm_round(proc: procs.Proc, key: str, model: str, stream: bool, requests: int) -> dict[str, float]:
    """Sequential requests on a warm process: wall, gateway CPU and log bytes per request."""
    import httpx

    with httpx.Client(timeout=120) as client:
        for _ in range(10):  # warm-up: connections, caches, the first lookups
            one_request(client, proc.port, key, model, stream)
        time.sleep(0.2)
        cpu0, log0 = procs.tree_cpu_s(proc.pid), proc.log_path.stat().st_size
        walls: list[float] = []
        sizes: list[int] = []
        for _ in range(requests):
            wall, size = one_request(client, proc.port, key, model, stream)
            walls.append(wall)
            sizes.append(size)
        time.sleep(0.2)  # the last cost event is written after the response
        cpu1, log1 = procs.tree_cpu_s(proc.pid), proc.log_path.stat().st_size
    return {
        "wall_ms_p50": statistics.median(walls) * 1000,
        "wall_ms_mean": statistics.fmean(walls) * 1000,
        "cpu_ms_per_request": (cpu1 - cpu0) * 1000 / requests,
        "bytes_to_client": statistics.median(sizes),
        "log_bytes_per_request": (log1 - log0) / requests,
    }


def calls_per_request(
    proc: procs.Proc, recorder: Recorder, key: str, model: str, requests: int, pace_s: float
) -> dict[str, Any]:
    """AWS calls by operation over ``requests`` requests spaced ``pace_s`` apart."""
    import httpx

    with httpx.Client(timeout=120) as client, recorder:
        started = time.perf_counter()
        for _ in range(requests):
            one_request(client, proc.port, key, model, False)
            time.sleep(pace_s)
        elapsed = time.perf_counter() - started
        time.sleep(0.5)
    ops = recorder.operations()
    return {
        "requests": requests,
        "seconds": round(elapsed, 1),
        "calls": ops,
        "per_request": {op: round(n / requests, 3) for op, n in ops.items()},
        "per_second": {op: round(n / elapsed, 3) for op, n in ops.items()},
    }


@contextlib.contextmanager
def stack(log_dir: Path) -> Iterator[tuple[dict[str, str], int]]:
    """moto (with its request recorder) and the mock, seeded; yields (gateway env, moto port)."""
    fixed = start_fixed(log_dir, routing_document)
    try:
        yield gateway_env(fixed.aws), fixed.moto_port
    finally:
        fixed.mock.stop()
        fixed.moto.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.costfigures", description=__doc__.split("\n\n")[0])
    parser.add_argument("--cold-runs", type=int, default=5, help="fresh processes per CPU share")
    parser.add_argument("--requests", type=int, default=200, help="warm requests per measurement")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    log_dir = args.out / f"logs-cost-{stamp}"
    result: dict[str, Any] = {"stamp": stamp, "load_average_at_start": os.getloadavg(), "shares": {}}
    with stack(log_dir) as (env, moto_port):
        for label, memory in SHARES.items():
            quota = None
            if memory is not None:
                vcpus = memory / MB_PER_VCPU
                quota = CpuQuota(vcpus, f"switchboard-cost-{os.getpid()}-{memory}")
            try:
                figures: dict[str, Any] = {
                    "vcpus": None if memory is None else round(memory / MB_PER_VCPU, 3)
                }
                starts: list[float] = []
                init_cpu: list[float] = []
                proc: procs.Proc | None = None
                for i in range(args.cold_runs):
                    if proc is not None:
                        proc.stop()
                    proc = start_gateway(f"gw-{memory or 'full'}-{i}", env, log_dir, quota)
                    starts.append(serve_first(proc, "bench-echo", API_KEY))
                    init_cpu.append(procs.tree_cpu_s(proc.pid))
                log(f"{label}: init {[round(s * 1000) for s in starts]} ms")
                figures["init_ms"] = {
                    "median": round(statistics.median(starts) * 1000),
                    "min": round(min(starts) * 1000),
                    "max": round(max(starts) * 1000),
                    "runs": len(starts),
                    # CPU seconds to the first answer: what the share must supply, whatever the load
                    "cpu_ms_median": round(statistics.median(init_cpu) * 1000),
                }
                assert proc is not None
                figures["plain"] = warm_round(proc, API_KEY, PLAIN_MODEL, False, args.requests)
                figures["plain_with_limits"] = warm_round(proc, LIMITS_KEY, PLAIN_MODEL, False, args.requests)
                figures["stream"] = warm_round(proc, API_KEY, STREAM_MODEL, True, max(20, args.requests // 4))
                log(f"{label}: {json.dumps({k: v for k, v in figures.items() if k != 'init_ms'})}")
                if memory is None:  # AWS calls do not depend on the CPU share
                    recorder = Recorder(moto_port, log_dir / "moto-recording.jsonl")
                    figures["aws_calls_no_limits"] = calls_per_request(
                        proc, recorder, API_KEY, PLAIN_MODEL, 60, 0.25
                    )
                    figures["aws_calls_limits"] = calls_per_request(
                        proc, recorder, LIMITS_KEY, PLAIN_MODEL, 60, 0.25
                    )
                proc.stop()
                result["shares"][label] = figures
            finally:
                if quota is not None:
                    quota.remove()
    text = json.dumps(result, indent=2)
    print(text)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"costfigures-{stamp}.json").write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
