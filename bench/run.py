"""The suite: start every target, measure them interleaved, print and write the report.

    python -m bench                  # the short profile (make bench): a few minutes
    python -m bench --profile full   # make bench-full
    python -m bench --profile smoke --no-litellm --no-sam   # the CI smoke test, seconds

Targets, all against one mock upstream on 127.0.0.1:
  direct      the mock itself (the baseline)
  sb          Switchboard under uvicorn (uvloop + httptools, the Lambda Web Adapter's command line),
              with a key without limits (one cached DynamoDB lookup, no limits calls)
  sb-limits   the SAME gateway process with a second key that has a budget and rpm/tpm limits that
              never bind: the difference from sb is exactly admission + settlement in DynamoDB
  handler     the Mangum handler in-process with API Gateway REST events (non-streaming)
  litellm     LiteLLM proxy in its own throwaway venv (optional)
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import math
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import coldstart, litellm_env, procs
from bench.loadgen import run_load
from bench.package import PackageSizes, measure_package
from bench.report import Agg, pct, render

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
FUNCTION_DIR = ROOT / "functions" / "gateway"
API_KEY = "sk-bench-client-key"
LIMITS_KEY = "sk-bench-limits-key"
# Every target of the benchmarked aliases needs a price, or a budgeted request gets 402 price_unknown.
MOCK_PRICE = {"input_per_mtok": 1.0, "output_per_mtok": 2.0}
ROUTING_PARAM = "/switchboard-bench/routing"
PROMPT = [{"role": "user", "content": "Say hello to the benchmark"}]

# Issue 6's goals for Switchboard.
GOAL_P50_MS = 1.0
GOAL_P99_MS = 3.0
GOAL_TTFB_MS = 1.0
GOAL_START_S = 0.6
GOAL_IMPORT_S = 0.350
GOAL_RSS_IDLE_MB = 90
GOAL_RSS_LOAD_MB = 130
GOAL_PACKAGE_MB = 15


@dataclass(frozen=True)
class Scenario:
    key: str
    title: str
    stream: bool
    concurrency: int
    alias: str
    upstream: str  # the mock's model directives


SCENARIOS = (
    Scenario("ns-c1", "non-stream C=1", False, 1, "bench-echo", "echo"),
    Scenario("ns-c32", "non-stream C=32", False, 32, "bench-echo", "echo"),
    Scenario("st-c1", "stream 20 chunks C=1", True, 1, "bench-stream20", "echo+chunks-20"),
    Scenario("st-c16", "stream 20 chunks C=16", True, 16, "bench-stream20", "echo+chunks-20"),
    Scenario("st-pace", "stream 20x20 ms C=8", True, 8, "bench-paced", "echo+chunks-20+delay-20"),
)


@dataclass(frozen=True)
class Profile:
    rounds: int
    duration_s: float  # per segment
    requests: dict[str, int]  # per segment, by scenario key
    warmup: int
    import_runs: int
    sb_starts: int
    litellm_starts: int
    handler_requests: int
    roundtrip_requests: int
    settle_s: float = 1.0  # before the idle RSS reading
    warm_pyc: bool = True  # one unmeasured import first, so that the .pyc files exist


PROFILES = {
    "smoke": Profile(
        1, 0.3, {"ns-c1": 30, "ns-c32": 60, "st-c1": 10, "st-c16": 32, "st-pace": 8}, 5, 1, 1, 1, 20, 10
    ),
    "short": Profile(
        3,
        2.5,
        {"ns-c1": 1500, "ns-c32": 20000, "st-c1": 500, "st-c16": 4000, "st-pace": 400},
        50,
        7,
        3,
        2,
        1000,
        300,
    ),
    "full": Profile(
        5,
        6.0,
        {"ns-c1": 5000, "ns-c32": 60000, "st-c1": 2000, "st-c16": 12000, "st-pace": 1000},
        100,
        15,
        7,
        3,
        3000,
        1000,
    ),
}


@dataclass
class Target:
    key: str
    label: str
    proc: procs.Proc
    path: str = "/v1/chat/completions"
    headers: dict[str, str] = field(default_factory=dict)
    use_upstream_model: bool = False
    idle_rss: float = math.nan

    def url(self) -> str:
        return f"http://127.0.0.1:{self.proc.port}{self.path}"

    def body(self, s: Scenario) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": s.upstream if self.use_upstream_model else s.alias,
            "messages": PROMPT,
        }
        if s.stream:
            body["stream"] = True
        return body


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def routing_document(mock_url: str) -> str:
    models = {s.alias: {"targets": [{"provider": "mock", "model": s.upstream}]} for s in SCENARIOS}
    doc = {
        "version": 1,
        "revision": "bench-1",
        "defaults": {
            "timeouts": {"connect_s": 2, "first_token_s": 10, "total_s": 60},
            "retry": {"attempts": 2, "base_delay_ms": 100, "max_delay_ms": 1000},
        },
        "providers": {
            "mock": {"kind": "openai", "base_url": mock_url, "api_key": {"ssm": "/switchboard/secrets/mock"}}
        },
        "models": models,
        "prices": {f"mock/{s.upstream}": MOCK_PRICE for s in SCENARIOS},
    }
    return json.dumps(doc)


def gateway_env(aws: dict[str, str]) -> dict[str, str]:
    return {
        **aws,
        "SWITCHBOARD_ROUTING_PARAM": ROUTING_PARAM,
        "POWERTOOLS_METRICS_NAMESPACE": "SwitchboardBench",
        "POWERTOOLS_SERVICE_NAME": "switchboard",
        "PYTHONDONTWRITEBYTECODE": "",
    }


def start_gateway(name: str, env: dict[str, str], log_dir: Path) -> procs.Proc:
    """``uvicorn app:app`` exactly as functions/gateway/run.sh starts it under the Web Adapter."""
    port = procs.free_port()
    argv = [
        sys.executable, "-m", "uvicorn", "--host", "127.0.0.1", f"--port={port}",
        "--loop", "uvloop", "--http", "httptools", "--no-access-log", "--no-server-header",
        "--log-level", "warning", "app:app",
    ]  # fmt: skip
    return procs.start(name, argv, env=env, cwd=FUNCTION_DIR, log_dir=log_dir, port=port)


def start_litellm(
    lite: litellm_env.LiteLLM, config: Path, log_dir: Path, name: str = "litellm"
) -> procs.Proc:
    port = procs.free_port()
    argv = [
        str(lite.python),  # the script's shebang names the path it was installed at; the venv may move
        str(lite.cli),
        "--config",
        str(config),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--num_workers",
        "1",
    ]
    return procs.start(
        name, argv, env=litellm_env.litellm_env(), cwd=config.parent, log_dir=log_dir, port=port
    )


def chat_probe(model: str, key: str) -> tuple[bytes, dict[str, str]]:
    body = json.dumps({"model": model, "messages": PROMPT}).encode()
    return body, {"authorization": f"Bearer {key}"}


def serve_first(proc: procs.Proc, model: str, key: str, timeout_s: float = 120.0) -> float:
    body, headers = chat_probe(model, key)
    return procs.wait_until_serving(
        proc, "POST", "/v1/chat/completions", body, headers, timeout_s=timeout_s, poll_s=0.01
    )


def machine() -> dict[str, Any]:
    model = "unknown"
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1024**3
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "--", "layers", "functions"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    return {
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "mem_gb": mem,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "commit": (commit.stdout.strip() or "unknown")
        + (" (+ local changes)" if dirty.stdout.strip() else ""),
    }


LIMITS_STATEMENT = (
    "Target 3 is the same gateway process as target 2, sent a second key (`bench-limits`) with a "
    "monthly budget and rpm/tpm limits that never bind, so the difference from target 2 is exactly "
    "admission and settlement (docs/limits.md): DynamoDB transactions against moto in another "
    "process, on the request's critical path."
)


def seed_limits_key(settings: Any) -> str:
    """The bench's second client key: a budget plus rpm/tpm on the key, none of which ever binds."""
    from decimal import Decimal

    import boto3
    from switchboard.core.principal import Limits, Period
    from switchboard.limits.keys import KeyStore
    from switchboard.limits.table import Table

    table = Table(boto3.client("dynamodb", region_name=settings.region), settings.table)
    store = KeyStore(table)
    limits = Limits(budget_usd=Decimal(1_000_000), period=Period.MONTH, rpm=100_000_000, tpm=100_000_000_000)
    _secret, record = store.create("bench-limits", limits=limits, secret=LIMITS_KEY)
    return record.id


def write_units_per_request(
    entries: list[dict[str, Any]], sizes: dict[tuple[str, str], int], requests: int
) -> dict[str, Any]:
    """Estimated write capacity units per request, from the recorded write calls and item sizes.

    A transactional write of an item under 1 KB costs 2 WCU, a plain one 1; writing a reservation
    (Put or Delete) also writes the sweeper's index (1 WCU). Item sizes are the request's for a Put
    and the stored item's (scanned after the run) for an Update, as DynamoDB bills the larger of
    before and after, which for these counters is about the same."""
    from switchboard.limits.table import item_bytes, write_units

    total = 0
    largest: dict[str, int] = {}

    def size_of(key: dict[str, Any], item: dict[str, Any] | None = None) -> int:
        pk, sk = key.get("pk", {}).get("S", ""), key.get("sk", {}).get("S", "")
        size = item_bytes(item) if item else sizes.get((pk, sk), 0)
        kind = pk.split("#", 1)[0]
        largest[kind] = max(largest.get(kind, 0), size)
        return size

    for entry in entries:
        op, body = entry["op"], entry["body"]
        if op.endswith("TransactWriteItems"):
            for action in body.get("TransactItems", []):
                ((kind, spec),) = action.items()
                item = spec.get("Item")
                key = item if item else spec.get("Key", {})
                total += write_units(size_of(key, item), transactional=True)
                if key.get("pk", {}).get("S", "").startswith("resv#") and kind in ("Put", "Delete"):
                    total += 1  # the sweeper's index (gsi1)
        elif op.endswith(("UpdateItem", "PutItem", "DeleteItem")):
            item = body.get("Item")
            total += write_units(size_of(item or body.get("Key", {}), item))
    return {"wcu_per_request": total / requests if requests else math.nan, "item_bytes": largest}


class Recorder:
    """Counts the gateway's AWS round trips with moto's request recorder."""

    def __init__(self, moto_port: int, path: Path) -> None:
        self.port, self.path = moto_port, path

    def _call(self, action: str) -> None:
        procs.http_call(self.port, "POST", f"/moto-api/recorder/{action}")

    def __enter__(self) -> Recorder:
        self._call("reset-recording")
        self._call("start-recording")
        return self

    def __exit__(self, *exc: object) -> None:
        self._call("stop-recording")

    def entries(self) -> list[dict[str, Any]]:
        """Every recorded call: its operation (x-amz-target, else method + URL) and its JSON body."""
        out: list[dict[str, Any]] = []
        if not self.path.exists():
            return out
        for line in self.path.read_text().splitlines():
            if not line.strip():
                continue
            entry = json.loads(line)
            headers = {k.lower(): v for k, v in entry.get("headers", {}).items()}
            name = headers.get("x-amz-target") or f"{entry.get('method')} {entry.get('url', '')[:40]}"
            raw = entry.get("body") or ""
            if entry.get("body_encoded"):
                raw = base64.b64decode(raw).decode(errors="replace")
            try:
                body = json.loads(raw) if raw else {}
            except ValueError:
                body = {}
            out.append({"op": name, "body": body if isinstance(body, dict) else {}})
        return out

    def operations(self) -> dict[str, int]:
        ops: dict[str, int] = {}
        for entry in self.entries():
            ops[entry["op"]] = ops.get(entry["op"], 0) + 1
        return ops


def table_item_sizes(settings: Any) -> dict[tuple[str, str], int]:
    """Billed size of every item in the bench's table (after the run), by (pk, sk)."""
    import boto3
    from switchboard.limits.table import item_bytes

    ddb = boto3.client("dynamodb", region_name=settings.region)
    sizes: dict[tuple[str, str], int] = {}
    for page in ddb.get_paginator("scan").paginate(TableName=settings.table):
        for item in page["Items"]:
            sizes[(item["pk"]["S"], item["sk"]["S"])] = item_bytes(item)
    return sizes


def main(argv: list[str] | None = None) -> int:  # noqa: C901 - the suite's script, top to bottom
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", choices=sorted(PROFILES), default="short")
    parser.add_argument("--rounds", type=int, help="override the profile's number of rounds")
    parser.add_argument("--no-litellm", action="store_true", help="skip LiteLLM proxy")
    parser.add_argument(
        "--no-sam", action="store_true", help="do not run `make sam-build` when .aws-sam is absent"
    )
    parser.add_argument("--no-package", action="store_true", help="skip the Lambda package sizes altogether")
    parser.add_argument(
        "--out", type=Path, default=RESULTS, help="where the report goes (default bench/results)"
    )
    args = parser.parse_args(argv)
    profile = PROFILES[args.profile]
    rounds = args.rounds or profile.rounds
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    args.out.mkdir(parents=True, exist_ok=True)
    log_dir = args.out / f"logs-{stamp}"
    notes: list[str] = []
    running: list[procs.Proc] = []
    started = time.perf_counter()

    try:
        import uvloop

        runner = asyncio.Runner(loop_factory=uvloop.new_event_loop)
    except ImportError:
        runner = asyncio.Runner()

    try:
        # --- the fixed parts: moto (its own process: once limits land, every request hits it) and the mock
        fixed = start_fixed(log_dir)
        moto, mock, moto_port, recording = fixed.moto, fixed.mock, fixed.moto_port, fixed.recording
        aws, settings = fixed.aws, fixed.settings
        running += [moto, mock]
        mock_url, mock_port, limits_key_id = fixed.mock_url, fixed.mock_port, fixed.limits_key_id
        log(f"moto on :{moto_port}, mock on :{mock_port}, seeded (limits key {limits_key_id})")

        # --- LiteLLM, optional
        lite: litellm_env.LiteLLM | None = None
        litellm_note = "skipped (--no-litellm)"
        lite_config = log_dir / "litellm.json"
        if not args.no_litellm:
            log(f"LiteLLM {litellm_env.LITELLM_VERSION}: preparing its venv (first run installs it)")
            lite, how = litellm_env.ensure_litellm(log_dir / "litellm-install.log")
            litellm_note = f"LiteLLM proxy {litellm_env.LITELLM_VERSION} ({how})" if lite else how
            if lite:
                lite_config.write_text(
                    litellm_env.litellm_config(mock_url, {s.alias: s.upstream for s in SCENARIOS})
                )
            else:
                notes.append(f"LiteLLM could not be installed, so it is left out: {how}")
        else:
            notes.append("LiteLLM skipped (--no-litellm).")

        # --- cold start, while the machine is quiet
        sb_env = gateway_env(aws)
        log("cold start: imports")
        cold_busy0, _ = procs.machine_busy_s()
        cold_own0, cold_wall0 = procs.own_cpu_s([moto.pid, mock.pid]), time.perf_counter()
        cold_figures: list[tuple[str, list[float]]] = []
        if profile.warm_pyc:
            coldstart.import_times("handler", 1, sb_env)  # leaves every .pyc in place
        for module, title in (
            ("switchboard.http.app", "import switchboard.http.app"),
            ("app", "import app (functions/gateway/app.py, the uvicorn entry)"),
            ("handler", "import handler (functions/gateway/handler.py: + Gateway wiring)"),
        ):
            cold_figures.append(
                (title, coldstart.import_times(module, profile.import_runs, sb_env, warm=False))
            )
        # The importtime breakdown is skipped at smoke size (one import run): it only adds time there.
        breakdowns = [coldstart.import_breakdown("handler", sb_env)] if profile.import_runs > 1 else []
        log("cold start: Switchboard process start to first served request")
        sb_starts: list[float] = []
        sb_start_rss: list[float] = []
        for i in range(profile.sb_starts):
            proc = start_gateway(f"sb-cold-{i}", sb_env, log_dir)
            try:
                sb_starts.append(serve_first(proc, "bench-echo", API_KEY))
                sb_start_rss.append(procs.rss_mb(proc.pid))
            finally:
                proc.stop()
        cold_figures.append(("Switchboard: process start → first served chat completion", sb_starts))
        lite_starts: list[float] = []
        if lite:
            log("cold start: LiteLLM process start to first served request")
            for i in range(profile.litellm_starts):
                proc = start_litellm(lite, lite_config, log_dir, f"litellm-cold-{i}")
                try:
                    lite_starts.append(serve_first(proc, "bench-echo", litellm_env.MASTER_KEY))
                except (RuntimeError, TimeoutError) as exc:
                    notes.append(f"LiteLLM failed to serve during the cold-start runs: {str(exc)[:300]}")
                    lite = None
                    litellm_note = "LiteLLM did not start"
                    break
                finally:
                    proc.stop()
            cold_figures.append(("LiteLLM: process start → first served chat completion", lite_starts))

        cold_busy1, _ = procs.machine_busy_s()
        cold_own1 = procs.own_cpu_s([moto.pid, mock.pid])
        cold_foreign = max(0.0, (cold_busy1 - cold_busy0) - (cold_own1 - cold_own0)) / (
            time.perf_counter() - cold_wall0
        )
        notes.append(
            f"Noise during the cold-start runs: processes outside this suite used {cold_foreign:.2f} cores "
            "on average. Imports and start-up are single-threaded and suffer most from it; the min "
            "column shows the least disturbed run."
        )

        # --- the long-running targets
        log("starting the long-running targets")
        targets = [Target("direct", "direct (mock)", mock, use_upstream_model=True)]
        sb = start_gateway("sb", sb_env, log_dir)
        running.append(sb)
        lp = start_litellm(lite, lite_config, log_dir) if lite else None
        if lp:
            running.append(lp)
        auth = {"authorization": f"Bearer {API_KEY}"}
        targets.append(Target("sb", "Switchboard (uvicorn, key without limits)", sb, headers=auth))
        limits_auth = {"authorization": f"Bearer {LIMITS_KEY}"}
        targets.append(Target("sb-limits", "Switchboard (same process, key with budget + rpm/tpm)", sb,
                              headers=limits_auth))  # fmt: skip
        serve_first(sb, "bench-echo", API_KEY)
        serve_first(sb, "bench-echo", LIMITS_KEY)
        if lite and lp:
            try:
                serve_first(lp, "bench-echo", litellm_env.MASTER_KEY)
                targets.append(
                    Target("litellm", f"LiteLLM {litellm_env.LITELLM_VERSION}", lp,
                           headers={"authorization": f"Bearer {litellm_env.MASTER_KEY}"})
                )  # fmt: skip
            except (RuntimeError, TimeoutError) as exc:
                notes.append(f"LiteLLM did not serve; left out: {str(exc)[:300]}")
                lite = None
        log("targets up; warming")
        for t in targets:  # warm each, then idle RSS
            runner.run(
                run_load(
                    t.url(), t.body(SCENARIOS[0]), concurrency=1, requests=30, duration_s=5, headers=t.headers
                )
            )
        time.sleep(profile.settle_s)
        for t in targets:
            t.idle_rss = procs.rss_mb(t.proc.pid)

        # --- load, interleaved
        aggs: dict[str, dict[str, Agg]] = {s.key: {t.key: Agg() for t in targets} for s in SCENARIOS}
        peak_c32: dict[str, float] = {t.key: 0.0 for t in targets}
        handler: dict[str, Any] = {"overhead_ms": [], "inside_ms": [], "upstream_ms": []}
        handler.update(import_s=math.nan, first_invoke_s=math.nan)
        roots = [p.pid for p in running]
        busy0, steal0 = procs.machine_busy_s()
        own0, wall0 = procs.own_cpu_s(roots), time.perf_counter()
        for r in range(rounds):
            log(f"round {r + 1}/{rounds}")
            for s in SCENARIOS:
                order = targets[r % len(targets) :] + targets[: r % len(targets)]
                for t in order:
                    pids = procs.tree_pids(t.proc.pid)
                    cpu0 = procs.tree_cpu_s(t.proc.pid, pids)
                    with procs.RssSampler(t.proc.pid) as sampler:
                        result = runner.run(
                            run_load(
                                t.url(),
                                t.body(s),
                                concurrency=s.concurrency,
                                requests=profile.requests[s.key],
                                duration_s=profile.duration_s,
                                headers=t.headers,
                                warmup=min(profile.warmup, profile.requests[s.key]),
                            )
                        )
                    cpu = procs.tree_cpu_s(t.proc.pid, pids) - cpu0
                    aggs[s.key][t.key].add(result, cpu, sampler.peak, s.stream)
                    if s.key == "ns-c32":
                        peak_c32[t.key] = max(peak_c32[t.key], sampler.peak)
            run_handler_round(handler, sb_env, profile, r == 0, notes)

        busy1, steal1 = procs.machine_busy_s()
        own1, wall1 = procs.own_cpu_s(roots), time.perf_counter()
        foreign = max(0.0, (busy1 - busy0) - (own1 - own0)) / (wall1 - wall0)
        notes.append(
            f"Noise: during the load rounds, processes outside this suite used {foreign:.2f} of the "
            f"{os.cpu_count()} cores on average (steal {(steal1 - steal0) / (wall1 - wall0):.2f}); "
            "the machine is shared, which is why targets run interleaved and are compared within a run."
        )

        # --- AWS round trips per request (target 2 and 3), steady state
        round_trips = []
        for t in targets:
            if not t.key.startswith("sb"):
                continue
            with Recorder(moto_port, recording) as rec:
                began = time.perf_counter()
                load = run_load(
                    t.url(), t.body(SCENARIOS[0]), concurrency=1, requests=profile.roundtrip_requests,
                    duration_s=30, headers=t.headers,
                )  # fmt: skip
                result = runner.run(load)
                window = time.perf_counter() - began
            entries = rec.entries()
            ops: dict[str, int] = {}
            for entry in entries:
                ops[entry["op"]] = ops.get(entry["op"], 0) + 1
            row = {"target": t.key, "requests": len(result.ok), "round_trips": sum(ops.values()),
                   "operations": ops, "window_s": window}  # fmt: skip
            row.update(write_units_per_request(entries, table_item_sizes(settings), len(result.ok)))
            round_trips.append(row)

        memory = {
            t.key: {"idle": t.idle_rss, "peak_c32": peak_c32[t.key], "hwm": procs.hwm_mb(t.proc.pid)}
            for t in targets
        }
    finally:
        for p in reversed(running):
            p.stop()
        runner.close()

    if args.no_package:
        package = PackageSizes(False, "skipped (--no-package)")
    else:
        log("package sizes")
        package = measure_package(
            build=not args.no_sam, log=log_dir / "sam-build.log", loaded=set(handler.get("modules", []))
        )

    data = assemble(
        stamp=stamp,
        args=args,
        rounds=rounds,
        notes=notes,
        targets=targets,
        aggs=aggs,
        handler=handler,
        round_trips=round_trips,
        cold_figures=cold_figures,
        breakdowns=breakdowns,
        memory=memory,
        package=package,
        litellm_note=litellm_note,
        sb_start_rss=sb_start_rss,
        elapsed=time.perf_counter() - started,
    )
    text = render(data)
    print(text)
    out = args.out / f"{stamp}.md"
    out.write_text(text)
    (args.out / f"{stamp}.json").write_text(json.dumps(machine_readable(data), indent=1, default=str))
    log(f"written {out.relative_to(ROOT) if out.is_relative_to(ROOT) else out}")
    return 0


@dataclass
class Fixed:
    """The bench's fixed parts, started and seeded: moto (with its request recorder) and the mock."""

    moto: procs.Proc
    mock: procs.Proc
    moto_port: int
    mock_port: int
    recording: Path
    aws: dict[str, str]  # the gateway's AWS environment (also put into this process's)
    settings: Any  # switchboard.core.settings.Settings over that environment
    limits_key_id: str

    @property
    def mock_url(self) -> str:
        return f"http://127.0.0.1:{self.mock_port}/v1"


def start_fixed(log_dir: Path, document: Callable[[str], str] | None = None) -> Fixed:
    """Start moto (with devtools/motopatch applied: atomic transactions, plain decimals, as make dev
    has it) and the mock, wait for both, and seed the routing document (``document(mock_url)``, the
    bench's own by default), the keys and the limits key. What started is stopped again when a
    later step fails."""
    moto_port, mock_port = procs.free_port(), procs.free_port()
    recording = log_dir / "moto-recording.jsonl"
    moto_main = (
        "import sys; from switchboard.devtools.motopatch import patch_moto_dynamodb; "
        "patch_moto_dynamodb(); from moto.server import main; main(sys.argv[1:])"
    )
    started: list[procs.Proc] = []
    try:
        moto = procs.start(
            "moto",
            [sys.executable, "-c", moto_main, "-H", "127.0.0.1", "-p", str(moto_port)],
            env={"MOTO_RECORDER_FILEPATH": str(recording)},
            log_dir=log_dir,
            port=moto_port,
        )
        started.append(moto)
        mock = procs.start(
            "mock",
            [sys.executable, "-m", "switchboard.devtools.mockupstream", "--port", str(mock_port)],
            log_dir=log_dir,
            port=mock_port,
        )
        started.append(mock)
        procs.wait_until_serving(mock, "GET", "/health", timeout_s=30)
        wait_any_http(moto, 60)
        from switchboard.core.settings import Settings
        from switchboard.devtools.devstack import aws_env, seed_aws

        aws = aws_env(f"http://127.0.0.1:{moto_port}")
        os.environ.update(aws)
        settings = Settings.from_env({}, routing_param=ROUTING_PARAM)
        seed_aws(settings, (document or routing_document)(f"http://127.0.0.1:{mock_port}/v1"), API_KEY, {})
        limits_key_id = seed_limits_key(settings)
    except BaseException:
        for proc in reversed(started):
            proc.stop()
        raise
    return Fixed(moto, mock, moto_port, mock_port, recording, aws, settings, limits_key_id)


def wait_any_http(proc: procs.Proc, timeout_s: float) -> None:
    deadline = time.perf_counter() + timeout_s
    while time.perf_counter() < deadline:
        if not proc.alive():
            raise RuntimeError(f"{proc.name} exited:\n{proc.log_tail()}")
        try:
            procs.http_call(proc.port, "GET", "/moto-api/data.json", timeout=5)
            return
        except OSError:
            time.sleep(0.02)
    raise TimeoutError(f"{proc.name} did not answer within {timeout_s}s")


def run_handler_round(
    handler: dict[str, Any], env: dict[str, str], profile: Profile, first: bool, notes: list[str]
) -> None:
    argv = [
        sys.executable, "-m", "bench.handler_path", "--model", "bench-echo", "--api-key", API_KEY,
        "--requests", str(profile.handler_requests), "--warmup", str(max(1, min(profile.warmup, 20))),
        "--duration", str(profile.duration_s),
    ]  # fmt: skip
    done = subprocess.run(
        argv, env={**os.environ, **env}, cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    if done.returncode != 0:
        if first:
            notes.append(f"handler path failed: {done.stderr.strip().splitlines()[-1:]}")
        handler["note"] = done.stderr[-500:]
        return
    # The handler's own EMF cost events and JSON logs share stdout: the result is the line with it.
    (result,) = [line for line in done.stdout.splitlines() if '"overhead_ms"' in line][-1:]
    out = json.loads(result)
    for key in ("overhead_ms", "inside_ms", "upstream_ms"):
        handler[key].extend(out[key])
    if first:
        handler["import_s"], handler["first_invoke_s"] = out["import_s"], out["first_invoke_s"]
        handler["modules"] = out["modules"]


def _mark(ok: bool | None) -> str:
    return "-" if ok is None else ("PASS" if ok else "**MISS**")


def assemble(**kw: Any) -> dict[str, Any]:
    aggs: dict[str, dict[str, Agg]] = kw["aggs"]
    targets: list[Target] = kw["targets"]
    labels = {t.key: t.label for t in targets}
    labels.setdefault("sb-limits", "Switchboard (limits)")
    keys = {t.key for t in targets}
    has_lite = "litellm" in keys

    def d50(scen: str, target: str, q: float = 50) -> float:
        a, b = aggs[scen].get(target), aggs[scen].get("direct")
        return a.p(q) - b.p(q) if a and b else math.nan

    def dttfb(scen: str, target: str, q: float = 50) -> float:
        a, b = aggs[scen].get(target), aggs[scen].get("direct")
        return a.ttfb(q) - b.ttfb(q) if a and b else math.nan

    cold = dict(kw["cold_figures"])
    import_app = cold.get("import app (functions/gateway/app.py, the uvicorn entry)", [])
    import_api = cold.get("import switchboard.http.app", [])
    sb_start = cold.get("Switchboard: process start → first served chat completion", [])
    lite_start = cold.get("LiteLLM: process start → first served chat completion", [])
    mem = kw["memory"]
    pkg: PackageSizes = kw["package"]

    pace_direct, pace_sb = aggs["st-pace"].get("direct"), aggs["st-pace"].get("sb")
    pacing_ok = None
    pacing_text = "-"
    if pace_direct and pace_sb and pace_sb.gaps_ms:
        bunched = sum(1 for g in pace_sb.gaps_ms if g < 5) / len(pace_sb.gaps_ms)
        drift = pace_sb.gap(50) - pace_direct.gap(50)
        pacing_ok = abs(drift) <= 2.0 and bunched <= 0.01
        pacing_text = (
            f"gap p50 {pace_sb.gap(50):.1f} ms vs direct {pace_direct.gap(50):.1f} ms; "
            f"{bunched:.1%} of gaps < 5 ms"
        )

    rows: list[tuple[str, str, str, str]] = []

    def goal(name: str, want: str, value: float, ok: bool | None, fmt: str = "{:.2f} ms") -> None:
        rows.append(
            (
                name,
                want,
                "-" if math.isnan(value) else fmt.format(value),
                _mark(None if math.isnan(value) else ok),
            )
        )

    v = d50("ns-c1", "sb")
    goal("non-stream C=1 Δp50 (auth on)", f"≤ {GOAL_P50_MS} ms", v, v <= GOAL_P50_MS)
    v = d50("ns-c1", "sb", 99)
    goal("non-stream C=1 Δp99 (auth on)", f"≤ {GOAL_P99_MS} ms", v, v <= GOAL_P99_MS)
    v = dttfb("st-c1", "sb")
    goal("stream C=1 ΔTTFB p50", f"≤ {GOAL_TTFB_MS} ms", v, v <= GOAL_TTFB_MS)
    rows.append(
        (
            "chunk pacing (20 ms upstream gaps)",
            "gaps as upstream's, no bunching",
            pacing_text,
            _mark(pacing_ok),
        )
    )
    for q in (50, 99):
        v = d50("ns-c1", "sb-limits", q)
        goal(f"limits on: non-stream C=1 Δp{q} over direct", "dominated by DynamoDB round trips", v, None)
        a, b = aggs["ns-c1"].get("sb-limits"), aggs["ns-c1"].get("sb")
        v = a.p(q) - b.p(q) if a and b else math.nan
        goal(f"limits on: non-stream C=1 Δp{q} over target 2", "admission + settlement", v, None)
    v = pct(sb_start, 50)
    goal("process start → first request", f"≤ {GOAL_START_S} s", v, v <= GOAL_START_S, "{:.3f} s")
    v = pct(import_app, 50)
    goal(
        "app import (functions/gateway/app.py, .pyc)",
        f"≤ {GOAL_IMPORT_S * 1000:.0f} ms",
        v * 1000,
        v <= GOAL_IMPORT_S,
        "{:.0f} ms",
    )
    v = mem.get("sb", {}).get("idle", math.nan)
    goal("RSS idle", f"≤ {GOAL_RSS_IDLE_MB} MB", v, v <= GOAL_RSS_IDLE_MB, "{:.0f} MB")
    v = mem.get("sb", {}).get("peak_c32", math.nan)
    goal("RSS peak at C=32", f"≤ {GOAL_RSS_LOAD_MB} MB", v, v <= GOAL_RSS_LOAD_MB, "{:.0f} MB")
    if pkg.ok:
        v = pkg.total_unpacked / 1024 / 1024
        goal(
            "function + layer unpacked (boto3 excluded)",
            f"< {GOAL_PACKAGE_MB} MB",
            v,
            v < GOAL_PACKAGE_MB,
            "{:.2f} MB",
        )
    else:
        rows.append(
            ("function + layer unpacked (boto3 excluded)", f"< {GOAL_PACKAGE_MB} MB", pkg.note[:80], "-")
        )

    direct32, sb32 = aggs["ns-c32"].get("direct"), aggs["ns-c32"].get("sb")
    headroom = direct32.rps / sb32.rps if direct32 and sb32 and sb32.rps else math.nan
    client_us = [a.client_us_per_req for s in aggs.values() for k, a in s.items() if k == "direct" and a.ok]
    loadgen_note = (
        f"against the mock directly it drove {direct32.rps:.0f} rps at C=32, {headroom:.1f}x Switchboard's "
        f"{sb32.rps:.0f} rps ({'PASS' if headroom > 2 else '**MISS**'}: needs > 2x, so the client is not the "
        f"bottleneck); its own CPU per request against the mock: "
        + ", ".join(f"{u:.0f} us" for u in client_us)
        + " (scenarios in order)."
        if direct32 and sb32
        else "-"
    )

    comparison: list[tuple[str, float, float]] = []
    if has_lite:
        lite_mem = mem.get("litellm", {})
        comparison = [
            ("non-stream C=1 Δp50 (ms)", d50("ns-c1", "sb"), d50("ns-c1", "litellm")),
            ("non-stream C=1 Δp99 (ms)", d50("ns-c1", "sb", 99), d50("ns-c1", "litellm", 99)),
            ("non-stream C=32 Δp50 (ms)", d50("ns-c32", "sb"), d50("ns-c32", "litellm")),
            ("non-stream C=32 Δp99 (ms)", d50("ns-c32", "sb", 99), d50("ns-c32", "litellm", 99)),
            ("non-stream C=32 throughput (rps)", aggs["ns-c32"]["sb"].rps, aggs["ns-c32"]["litellm"].rps),
            ("stream C=1 ΔTTFB p50 (ms)", dttfb("st-c1", "sb"), dttfb("st-c1", "litellm")),
            ("stream C=16 ΔTTFB p50 (ms)", dttfb("st-c16", "sb"), dttfb("st-c16", "litellm")),
            ("stream C=16 throughput (rps)", aggs["st-c16"]["sb"].rps, aggs["st-c16"]["litellm"].rps),
            ("paced stream gap p50 (ms)", aggs["st-pace"]["sb"].gap(50), aggs["st-pace"]["litellm"].gap(50)),
            (
                "CPU per request, non-stream C=1 (ms)",
                aggs["ns-c1"]["sb"].cpu_ms_per_req,
                aggs["ns-c1"]["litellm"].cpu_ms_per_req,
            ),
            (
                "CPU per request, non-stream C=32 (ms)",
                aggs["ns-c32"]["sb"].cpu_ms_per_req,
                aggs["ns-c32"]["litellm"].cpu_ms_per_req,
            ),
            ("process start → first request (s)", pct(sb_start, 50), pct(lite_start, 50)),
            ("RSS idle (MB)", mem["sb"]["idle"], lite_mem.get("idle", math.nan)),
            ("RSS peak at C=32 (MB)", mem["sb"]["peak_c32"], lite_mem.get("peak_c32", math.nan)),
        ]

    marks = [r[3] for r in rows]
    passed, missed = marks.count("PASS"), marks.count("**MISS**")
    missed_names = [r[0] for r in rows if r[3] == "**MISS**"]
    parts = [f"Summary: Switchboard met {passed} of {passed + missed} measured targets"]
    if missed_names:
        parts[0] += f" (missed: {'; '.join(missed_names)})"
    parts.append(f"Δp50 {d50('ns-c1', 'sb'):.2f} ms at C=1")
    if has_lite:
        parts.append(f"vs LiteLLM {d50('ns-c1', 'litellm'):.2f} ms")
        parts.append(f"start→first {pct(sb_start, 50):.2f} s vs {pct(lite_start, 50):.2f} s")
        parts.append(f"RSS idle {mem['sb']['idle']:.0f} vs {mem['litellm']['idle']:.0f} MB")
    else:
        parts.append(
            f"start→first {pct(sb_start, 50):.2f} s, RSS idle {mem['sb']['idle']:.0f} MB (LiteLLM not run)"
        )
    summary = parts[0] + "; " + ", ".join(parts[1:]) + "."

    notes = list(kw["notes"])
    notes.append("Target 3: the same gateway process as target 2, with a key that has a budget and rpm/tpm.")
    notes.append(f"LiteLLM: {kw['litellm_note']}. Suite wall time {kw['elapsed']:.0f} s.")
    if import_api:
        notes.append(f"`import switchboard.http.app` median {pct(import_api, 50) * 1000:.0f} ms.")

    site = ROOT / ".aws-sam" / "build" / "GatewayLayer" / "python"
    layer_packages = {p.name.split(".")[0].split("-")[0] for p in site.iterdir()} if site.is_dir() else None
    return {
        "layer_packages": layer_packages,
        "timestamp": kw["stamp"],
        "profile": kw["args"].profile,
        "rounds": kw["rounds"],
        "machine": machine(),
        "notes": notes,
        "scenarios": [s.__dict__ for s in SCENARIOS],
        "aggs": aggs,
        "target_labels": labels,
        "handler": kw["handler"],
        "limits": {"statement": LIMITS_STATEMENT, "round_trips": kw["round_trips"]},
        "comparison": comparison,
        "litellm_note": kw["litellm_note"],
        "cold": {"figures": kw["cold_figures"], "breakdowns": kw["breakdowns"]},
        "memory": mem,
        "package": pkg,
        "targets": rows,
        "loadgen_note": loadgen_note,
        "summary": summary,
    }


def machine_readable(data: dict[str, Any]) -> dict[str, Any]:
    """The report's figures as JSON (the smoke test reads this)."""
    handler = data["handler"]
    return {
        "timestamp": data["timestamp"],
        "profile": data["profile"],
        "load": {s: {t: a.summary() for t, a in by.items()} for s, by in data["aggs"].items()},
        "handler": {
            "n": len(handler.get("overhead_ms", [])),
            "overhead_p50_ms": pct(handler.get("overhead_ms", []), 50),
            "import_s": handler.get("import_s"),
        },
        "cold": {name: values for name, values in data["cold"]["figures"]},
        "memory": data["memory"],
        "limits": data["limits"],
        "package": data["package"].__dict__,
        "targets": data["targets"],
        "summary": data["summary"],
    }
