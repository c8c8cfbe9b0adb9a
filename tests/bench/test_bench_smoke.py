"""The benchmark suite at toy sizes: every row is there and every number is sane (not fast)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_loadgen_refuses_non_loopback_targets() -> None:
    from bench.loadgen import assert_loopback

    assert_loopback("127.0.0.1")
    assert_loopback("localhost")
    for host in ("192.168.1.10", "10.0.0.1", "8.8.8.8"):
        with pytest.raises(ValueError, match="non-loopback"):
            assert_loopback(host)


def test_bench_smoke(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench",
            "--profile",
            "smoke",
            "--no-litellm",
            "--no-package",
            "--out",
            str(tmp_path),
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    (report,) = tmp_path.glob("*.md")
    (figures,) = tmp_path.glob("*.json")
    text = report.read_text()
    data = json.loads(figures.read_text())

    # The markdown: every section and every (scenario, target) row, and the summary last.
    for section in ("## Load", "## Lambda handler path", "## Keys, budgets", "## Switchboard / LiteLLM",
                    "## Cold start", "## Memory", "## Lambda package", "## Targets"):  # fmt: skip
        assert section in text
    scenarios = (
        "non-stream C=1",
        "non-stream C=32",
        "stream 20 chunks C=1",
        "stream 20 chunks C=16",
        "stream 20x20 ms C=8",
    )
    for scenario in scenarios:
        for target in (
            "direct (mock)",
            "Switchboard (uvicorn, key without limits)",
            "Switchboard (same process,",
        ):
            assert any(line.startswith(f"| {scenario} | {target}") for line in text.splitlines()), (
                scenario,
                target,
            )
    assert text.rstrip().splitlines()[-1].startswith("Summary: ")
    assert done.stdout.strip().splitlines()[-1].startswith("Summary: ")

    # Sane numbers: every request answered, latencies positive and ordered, streams really streamed.
    load = data["load"]
    assert set(load) == {"ns-c1", "ns-c32", "st-c1", "st-c16", "st-pace"}
    for scen, by_target in load.items():
        assert set(by_target) == {"direct", "sb", "sb-limits"}
        for target, s in by_target.items():
            assert s["ok"] > 0 and s["errors"] == 0, (scen, target, s)
            assert 0 < s["p50_ms"] <= s["p90_ms"] <= s["p99_ms"] < 5000, (scen, target, s)
            assert s["rps"] > 0
            if scen.startswith("st"):
                assert 0 < s["ttfb_p50_ms"] <= s["p50_ms"] + 1e-6
    pace = load["st-pace"]
    for target in ("direct", "sb"):
        assert 10 < pace[target]["gap_p50_ms"] < 60  # 20 ms upstream gaps arrive paced, not bunched
    assert data["handler"]["n"] > 0 and data["handler"]["overhead_p50_ms"] > 0
    for name, values in data["cold"].items():
        assert values and all(0 < v < 30 for v in values), name
    assert 10 < data["memory"]["sb"]["idle"] < 1024
    assert not math.isnan(data["memory"]["sb"]["peak_c32"])
    assert data["limits"]["round_trips"], "round trips were not counted"
    # Target 3 (a key with a budget and rpm/tpm) really goes through DynamoDB admission and settlement.
    (row,) = [r for r in data["limits"]["round_trips"] if r["target"] == "sb-limits"]
    assert row["requests"] > 0
    ops = row["operations"]
    transactions = sum(v for k, v in ops.items() if k.endswith(".TransactWriteItems"))
    assert transactions / row["requests"] >= 2, ops  # admission + settlement
    assert row["wcu_per_request"] > 0
    assert "not implemented" not in text
    assert any(
        line.startswith("| limits on: non-stream C=1 Δp50 over target 2") for line in text.splitlines()
    )
    assert data["package"]["ok"] is False and "skipped" in data["package"]["note"]
