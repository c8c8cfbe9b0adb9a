"""The dev and test environment is locked and installed by uv (issue 12, "A lock file and uv"):
every dependency of pyproject.toml, the dev extra's too, is pinned with hashes in
requirements-dev.lock, the Makefile installs from that lock with ``--require-hashes``, and where
uv is not on the PATH it bootstraps a pinned uv from the package index with pip, downloading
nothing from anywhere else. Read from the files and ``make -n``; nothing is installed."""

from __future__ import annotations

import re
import subprocess
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LOCK = ROOT / "requirements-dev.lock"


def normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def locked() -> dict[str, tuple[str, int]]:
    """name -> (version, number of hashes), from the lock's ``name==version \\`` entries."""
    pins: dict[str, tuple[str, int]] = {}
    current = ""
    for line in LOCK.read_text().splitlines():
        if match := re.match(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)", line):
            current = normalise(match[1])
            pins[current] = (match[2], 0)
        elif line.strip().startswith("--hash=sha256:") and current:
            version, hashes = pins[current]
            pins[current] = (version, hashes + 1)
    return pins


def test_every_dependency_and_dev_dependency_is_pinned_with_hashes() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = [*project["dependencies"], *project["optional-dependencies"]["dev"]]
    names = {normalise(re.split(r"[\[<>=~!; ]", spec, maxsplit=1)[0]) for spec in wanted}
    pins = locked()
    assert names and names <= set(pins), f"not in the lock (make lock): {sorted(names - set(pins))}"
    assert all(hashes for _, hashes in pins.values()), [n for n, (_, h) in pins.items() if not h]


def test_without_uv_on_the_path_make_bootstraps_it_from_the_package_index_then_syncs_the_lock() -> None:
    plan = subprocess.run(
        ["make", "-n", "-B", "venv", "UV_FOUND=", "PYTHON=python3"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert re.search(r'\.venv-tools/bin/pip install .*"uv==\d+\.\d+\.\d+"', plan), plan
    assert re.search(r"\.venv-tools/bin/uv pip sync .*--require-hashes requirements-dev\.lock", plan), plan
    assert not re.search(r"curl|wget|https?://", plan), plan  # nothing but the package index
