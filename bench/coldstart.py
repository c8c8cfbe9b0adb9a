"""Cold start: import times in fresh processes, an ``-X importtime`` breakdown, start to first request."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

__all__ = ["ImportBreakdown", "import_breakdown", "import_times"]

ROOT = Path(__file__).resolve().parents[1]
FUNCTION_DIR = ROOT / "functions" / "gateway"

_TIMER = """
import sys, time
sys.path.insert(0, {path!r})
t = time.perf_counter()
import {module}
print(time.perf_counter() - t)
"""


def _run_python(
    code: str, env: Mapping[str, str], extra: tuple[str, ...] = ()
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *extra, "-c", code],
        env={**os.environ, **env},
        cwd=str(ROOT),
        capture_output=True,
        text=True,
        timeout=120,
    )


def import_times(module: str, runs: int, env: Mapping[str, str], warm: bool = True) -> list[float]:
    """Seconds to import ``module`` in ``runs`` fresh interpreters. With ``warm``, one unmeasured
    run first leaves the ``.pyc`` files in place (the Lambda layer ships them compiled)."""
    code = _TIMER.format(path=str(FUNCTION_DIR), module=module)
    out: list[float] = []
    for i in range(runs + (1 if warm else 0)):
        done = _run_python(code, env)
        if done.returncode != 0:
            raise RuntimeError(f"import {module} failed:\n{done.stderr[-2000:]}")
        if i or not warm:
            out.append(float(done.stdout.strip().splitlines()[-1]))
    return out


@dataclass
class ImportBreakdown:
    module: str
    total_ms: float
    # (top-level package, self ms summed over its modules, cumulative ms of its first import)
    packages: list[tuple[str, float, float]]


def import_breakdown(module: str, env: Mapping[str, str], top: int = 15, runs: int = 3) -> ImportBreakdown:
    """``python -X importtime -c 'import module'``, grouped by top-level package.

    Self times are summed over every module of a package, so the rows add up to the total and
    the heaviest dependency is the first row. Runs ``runs`` times and keeps the fastest total.
    """
    code = f"import sys; sys.path.insert(0, {str(FUNCTION_DIR)!r}); import {module}"
    best: ImportBreakdown | None = None
    for _ in range(runs):
        done = _run_python(code, env, ("-X", "importtime"))
        if done.returncode != 0:
            raise RuntimeError(f"importtime {module} failed:\n{done.stderr[-2000:]}")
        selfs: dict[str, float] = {}
        cumulative: dict[str, float] = {}
        total = 0.0
        for line in done.stderr.splitlines():
            if not line.startswith("import time:") or "imported package" in line:
                continue
            _, self_us, cum_us, name = _fields(line)
            stripped = name.strip()
            pkg = stripped.split(".")[0]
            if pkg == module:
                pkg = f"{module} (its own body: the wiring it runs at import)"
            selfs[pkg] = selfs.get(pkg, 0.0) + self_us / 1000
            cumulative[pkg] = max(cumulative.get(pkg, 0.0), cum_us / 1000)
            total += self_us / 1000
        rows = sorted(((p, s, cumulative[p]) for p, s in selfs.items()), key=lambda r: -r[1])[:top]
        result = ImportBreakdown(module, total, rows)
        if best is None or result.total_ms < best.total_ms:
            best = result
    assert best is not None
    return best


def _fields(line: str) -> tuple[None, float, float, str]:
    head, cum, name = line.split("|", 2)
    return None, float(head.split(":", 1)[1]), float(cum), name


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


if __name__ == "__main__":  # a quick look: python -m bench.coldstart handler
    target = sys.argv[1] if len(sys.argv) > 1 else "app"
    print(json.dumps(import_breakdown(target, {}).__dict__, indent=1))
