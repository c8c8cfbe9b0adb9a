"""Statistics and the markdown report."""

from __future__ import annotations

import itertools
import math
import sys
from dataclasses import dataclass, field
from typing import Any

from bench.loadgen import LoadResult

__all__ = ["Agg", "pct", "render"]


def pct(values: list[float], q: float) -> float:
    """The q-th percentile (0..100) by linear interpolation; NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    if len(ordered) == 1:
        return ordered[0]
    rank = (len(ordered) - 1) * q / 100
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


@dataclass
class Agg:
    """Everything measured for one (scenario, target) pair, over all rounds."""

    latency_ms: list[float] = field(default_factory=list)
    ttfb_ms: list[float] = field(default_factory=list)
    gaps_ms: list[float] = field(default_factory=list)
    ok: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    wall_s: float = 0.0
    server_cpu_s: float = 0.0
    client_cpu_s: float = 0.0
    peak_rss_mb: float = 0.0
    chunks: list[int] = field(default_factory=list)

    def add(self, result: LoadResult, server_cpu_s: float, peak_rss_mb: float, stream: bool) -> None:
        for sample in result.ok:
            self.latency_ms.append(sample.latency * 1000)
            if stream:
                self.ttfb_ms.append(sample.ttfb * 1000)
                times = sample.content_times
                self.gaps_ms.extend((b - a) * 1000 for a, b in itertools.pairwise(times))
                self.chunks.append(len(times))
        self.ok += len(result.ok)
        for name, count in result.errors.items():
            self.errors[name] = self.errors.get(name, 0) + count
        self.wall_s += result.wall_s
        self.server_cpu_s += server_cpu_s
        self.client_cpu_s += result.client_cpu_s
        self.peak_rss_mb = max(self.peak_rss_mb, peak_rss_mb)

    @property
    def rps(self) -> float:
        return self.ok / self.wall_s if self.wall_s else math.nan

    def p(self, q: float) -> float:
        return pct(self.latency_ms, q)

    def ttfb(self, q: float) -> float:
        return pct(self.ttfb_ms, q)

    def gap(self, q: float) -> float:
        return pct(self.gaps_ms, q)

    @property
    def cpu_ms_per_req(self) -> float:
        return self.server_cpu_s * 1000 / self.ok if self.ok else math.nan

    @property
    def client_us_per_req(self) -> float:
        return self.client_cpu_s * 1e6 / self.ok if self.ok else math.nan

    def summary(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "errors": sum(self.errors.values()),
            "p50_ms": self.p(50),
            "p90_ms": self.p(90),
            "p99_ms": self.p(99),
            "rps": self.rps,
            "ttfb_p50_ms": self.ttfb(50),
            "ttfb_p99_ms": self.ttfb(99),
            "gap_p50_ms": self.gap(50),
            "gap_p99_ms": self.gap(99),
            "cpu_ms_per_req": self.cpu_ms_per_req,
            "client_us_per_req": self.client_us_per_req,
            "peak_rss_mb": self.peak_rss_mb,
        }


def f(value: float | None, digits: int = 2, suffix: str = "") -> str:
    """A number for a table cell; '-' for nothing."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.{digits}f}{suffix}"


def ratio(a: float | None, b: float | None) -> str:
    if a is None or b is None or math.isnan(a) or math.isnan(b) or b == 0:
        return "-"
    return f"{a / b:.2f}x"


def table(headers: list[str], rows: list[list[str]]) -> list[str]:
    out = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    out += ["| " + " | ".join(row) + " |" for row in rows]
    return out


def _where(package: str, layer: set[str] | None) -> str:
    """Flag third-party packages that the local venv has but the Lambda layer does not ship."""
    if layer is None or package in layer or package in sys.stdlib_module_names or " " in package:
        return package
    if package in (
        "switchboard",
        "handler",
        "app",
        "boto3",
        "botocore",
        "s3transfer",
        "urllib3",
        "dateutil",
        "jmespath",
        "six",
    ):
        return package + (" (Lambda runtime)" if package not in ("switchboard", "handler", "app") else "")
    return f"{package} (local venv only: not in the layer)"


def render(data: dict[str, Any]) -> str:
    """The markdown report from the run's collected ``data`` (see bench.run)."""
    lines: list[str] = [f"# Switchboard benchmark, {data['timestamp']}", ""]
    m = data["machine"]
    lines += [
        f"Machine: {m['cpus']} CPUs ({m['cpu_model']}), {m['mem_gb']:.0f} GB, Linux {m['kernel']}, "
        f"Python {m['python']}. Commit {m['commit']}. Profile `{data['profile']}`: {data['rounds']} "
        "interleaved rounds; all traffic on 127.0.0.1.",
        "",
    ]
    for note in data["notes"]:
        lines.append(f"- {note}")
    lines.append("")

    scen = data["scenarios"]
    aggs: dict[str, dict[str, Agg]] = data["aggs"]
    labels: dict[str, str] = data["target_labels"]
    lines += ["## Load: overhead over direct (ms), throughput, CPU", ""]
    lines += [
        "Δ = the target's percentile minus direct's, same scenario. TTFB = time to the first SSE event "
        "that carries content. Gap = time between content events at the client. CPU = the serving "
        "process's CPU per request (the mock's, for direct).",
        "",
    ]
    rows = []
    for s in scen:
        direct = aggs[s["key"]].get("direct")
        for target, agg in aggs[s["key"]].items():
            is_direct = target == "direct"
            stream = s["stream"]
            rows.append(
                [
                    s["title"],
                    labels[target],
                    str(agg.ok),
                    str(sum(agg.errors.values())),
                    f(agg.p(50)),
                    f(agg.p(90)),
                    f(agg.p(99)),
                    "" if is_direct else f(agg.p(50) - direct.p(50)) if direct else "-",
                    "" if is_direct else f(agg.p(99) - direct.p(99)) if direct else "-",
                    f(agg.rps, 0),
                    "" if is_direct else ratio(agg.rps, direct.rps if direct else None),
                    f(agg.ttfb(50)) if stream else "",
                    (f(agg.ttfb(50) - direct.ttfb(50)) if stream and direct and not is_direct else ""),
                    (f(agg.ttfb(99) - direct.ttfb(99)) if stream and direct and not is_direct else ""),
                    f(agg.gap(50)) if stream else "",
                    f(agg.gap(99)) if stream else "",
                    f(agg.cpu_ms_per_req),
                    f(agg.peak_rss_mb, 0),
                ]
            )
    lines += table(
        [
            "scenario",
            "target",
            "n",
            "err",
            "p50",
            "p90",
            "p99",
            "Δp50",
            "Δp99",
            "rps",
            "rps/direct",
            "TTFB p50",
            "ΔTTFB p50",
            "ΔTTFB p99",
            "gap p50",
            "gap p99",
            "CPU ms/req",
            "peak RSS MB",
        ],
        rows,
    )
    lines.append("")

    h = data.get("handler")
    lines += ["## Lambda handler path (Mangum in-process, API Gateway REST events, non-streaming)", ""]
    if h and h.get("overhead_ms"):
        lines += table(
            [
                "n",
                "handler p50",
                "handler p99",
                "upstream p50",
                "overhead p50",
                "overhead p99",
                "init (import + wiring)",
                "first invocation",
            ],
            [
                [
                    str(len(h["overhead_ms"])),
                    f(pct(h["inside_ms"], 50)),
                    f(pct(h["inside_ms"], 99)),
                    f(pct(h["upstream_ms"], 50)),
                    f(pct(h["overhead_ms"], 50)),
                    f(pct(h["overhead_ms"], 99)),
                    f(h["import_s"] * 1000, 0, " ms"),
                    f(h["first_invoke_s"] * 1000, 0, " ms"),
                ]
            ],
        )
        lines += [
            "",
            "Overhead = wall time inside `handler(event, context)` minus the upstream call (request sent "
            "to last body byte, timed inside the gateway's HTTP transport). The first invocation loads "
            "the routing document and the key from SSM (moto).",
        ]
    else:
        lines.append(f"not measured: {h.get('note') if h else 'skipped'}")
    lines.append("")

    lim = data["limits"]
    lines += ["## Keys, budgets and rate limits (target 3)", "", lim["statement"], ""]
    if lim.get("round_trips"):
        ddb_ops = ("TransactWriteItems", "BatchGetItem", "UpdateItem", "GetItem", "Query")

        def per_op(r: dict[str, Any], op: str) -> str:
            n = sum(v for k, v in r["operations"].items() if k.endswith("." + op))
            return f(n / r["requests"] if r["requests"] else math.nan, 2)

        lines += table(
            [
                "target",
                "requests",
                "AWS calls",
                "per request",
                *(f"{op}/req" for op in ddb_ops),
                "est. WCU/req",
                "operations",
                "window",
            ],
            [
                [
                    labels[r["target"]],
                    str(r["requests"]),
                    str(r["round_trips"]),
                    f(r["round_trips"] / r["requests"] if r["requests"] else math.nan, 3),
                    *(per_op(r, op) for op in ddb_ops),
                    f(r.get("wcu_per_request", math.nan), 1),
                    ", ".join(f"{k} x{v}" for k, v in sorted(r["operations"].items())) or "none",
                    f(r["window_s"], 1, " s"),
                ]
                for r in lim["round_trips"]
            ],
        )
        sizes = [
            f"{kind} {n} B" for r in lim["round_trips"] for kind, n in sorted(r.get("item_bytes", {}).items())
        ]
        lines += [
            "",
            "Write units are estimated from the recorded write calls and billed item sizes "
            f"({', '.join(sizes) or 'no writes'}): every item is under 1 KB, so 2 WCU per item "
            "in a transaction, 1 per plain write, +1 for the sweeper's index when a reservation is "
            "put or deleted.",
        ]
        lines.append("")

    cmp = data["comparison"]
    lines += ["## Switchboard / LiteLLM (same run, same mock)", ""]
    if cmp:
        lines += table(
            ["figure", "Switchboard", "LiteLLM", "Switchboard / LiteLLM"],
            [[name, f(a), f(b), ratio(a, b)] for name, a, b in cmp],
        )
    else:
        lines.append(f"LiteLLM not measured: {data['litellm_note']}")
    lines.append("")

    cold = data["cold"]
    lines += ["## Cold start", ""]
    lines += table(
        ["figure", "median", "min", "max", "runs"],
        [
            [
                name,
                f(pct(v, 50) * 1000, 0, " ms"),
                f(min(v) * 1000, 0, " ms"),
                f(max(v) * 1000, 0, " ms"),
                str(len(v)),
            ]
            for name, v in cold["figures"]
            if v
        ]
        + [[name, "-", "-", "-", "0"] for name, v in cold["figures"] if not v],
    )
    lines.append("")
    for bd in cold["breakdowns"]:
        lines += [
            f"`python -X importtime -c 'import {bd.module}'`: {bd.total_ms:.0f} ms in all (the fastest run); "
            "top 15 top-level packages by self time summed over their modules:",
            "",
        ]
        layer = data.get("layer_packages")
        lines += table(
            ["package", "self ms (all its modules)", "largest cumulative ms"],
            [[_where(name, layer), f(s, 1), f(c, 1)] for name, s, c in bd.packages],
        )
        lines.append("")

    lines += ["## Memory (RSS of the serving process tree)", ""]
    lines += table(
        ["target", "idle after warm-up", "peak during non-streaming C=32", "peak over the whole run (VmHWM)"],
        [
            [labels[t], f(v["idle"], 0, " MB"), f(v["peak_c32"], 0, " MB"), f(v["hwm"], 0, " MB")]
            for t, v in data["memory"].items()
        ],
    )
    lines.append("")

    pkg = data["package"]
    lines += ["## Lambda package (sam build, arm64, python3.13; boto3 from the runtime)", ""]
    if pkg.ok:
        mb = 1024 * 1024
        lines += table(
            ["artifact", "unpacked", "zip"],
            [
                [
                    "GatewayFunction",
                    f(pkg.function_unpacked / 1024, 1, " KB"),
                    f(pkg.function_zip / 1024, 1, " KB"),
                ],
                ["GatewayLayer", f(pkg.layer_unpacked / mb, 2, " MB"), f(pkg.layer_zip / mb, 2, " MB")],
                ["function + layer", f(pkg.total_unpacked / mb, 2, " MB"), f(pkg.total_zip / mb, 2, " MB")],
            ],
        )
        lines += [
            "",
            f"Source: {pkg.note}. Largest entries in the layer: "
            + ", ".join(f"{n} {s / mb:.1f} MB" for n, s in pkg.largest[:8])
            + ".",
        ]
        if pkg.kinds:
            lines += [
                "",
                "The layer by kind: "
                + ", ".join(
                    f"{k} {v / mb:.1f} MB" for k, v in sorted(pkg.kinds.items(), key=lambda kv: -kv[1])
                )
                + ".",
            ]
        if pkg.never_loaded:
            lines += [
                "",
                f"{pkg.never_loaded / mb:.1f} MB of the layer's .py/.pyc/.so files belong to modules "
                "that neither a served request (Mangum path) nor the uvicorn entry ever imported; by "
                "package: " + ", ".join(f"{n} {s / mb:.1f} MB" for n, s in pkg.never_loaded_top) + ".",
            ]
    else:
        lines.append(f"not measured: {pkg.note}")
    lines.append("")

    lines += ["## Targets (issue 6)", ""]
    lines += table(["target", "goal", "measured", ""], [list(row) for row in data["targets"]])
    lines.append("")
    lines += [f"Load generator: {data['loadgen_note']}", ""]
    lines.append(data["summary"])
    return "\n".join(lines) + "\n"
