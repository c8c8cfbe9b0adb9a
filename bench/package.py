"""The Lambda package: sizes of the function and the layer that ``sam build`` produced."""

from __future__ import annotations

import os
import subprocess
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["PackageSizes", "measure_package"]

ROOT = Path(__file__).resolve().parents[1]
BUILD = ROOT / ".aws-sam" / "build"
FUNCTION = "GatewayFunction"
LAYER = "GatewayLayer"
MB = 1024 * 1024


@dataclass
class PackageSizes:
    ok: bool
    note: str
    function_unpacked: int = 0
    function_zip: int = 0
    layer_unpacked: int = 0
    layer_zip: int = 0
    largest: list[tuple[str, int]] = field(default_factory=list)  # the layer's heaviest top-level entries
    kinds: dict[str, int] = field(default_factory=dict)  # the layer's bytes by kind: .py, .pyc, .so, other
    never_loaded: int = 0  # layer bytes (.py, .pyc, .so) of modules that serving never imported
    never_loaded_top: list[tuple[str, int]] = field(default_factory=list)

    @property
    def total_unpacked(self) -> int:
        return self.function_unpacked + self.layer_unpacked

    @property
    def total_zip(self) -> int:
        return self.function_zip + self.layer_zip


def _unpacked(path: Path) -> int:
    total = 0
    for dirpath, _, files in os.walk(path):
        for name in files:
            full = Path(dirpath, name)
            if not full.is_symlink():
                total += full.stat().st_size
    return total


def _zipped(path: Path) -> int:
    """Deflated size, as ``sam deploy`` uploads it."""
    with tempfile.TemporaryDirectory() as tmp:
        target = Path(tmp) / "artifact.zip"
        with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as archive:
            for dirpath, _, files in os.walk(path):
                for name in sorted(files):
                    full = Path(dirpath, name)
                    archive.write(full, full.relative_to(path))
        return target.stat().st_size


def _kind(name: str) -> str:
    if name.endswith(".pyc"):
        return ".pyc"
    if name.endswith(".py"):
        return ".py"
    if ".so" in name:
        return ".so"
    return "other"


def _module_key(rel: str) -> str:
    """``pkg/__pycache__/mod.cpython-313.pyc``, ``pkg/mod.py`` and ``pkg/mod.cpython-313-<arch>.so``
    all name the module ``pkg/mod``."""
    parts = rel.split("/")
    if len(parts) > 1 and parts[-2] == "__pycache__":
        parts = [*parts[:-2], parts[-1].split(".", 1)[0]]
    else:
        parts[-1] = parts[-1].split(".", 1)[0]
    return "/".join(parts)


def _layer_usage(site: Path, loaded: set[str]) -> tuple[dict[str, int], int, list[tuple[str, int]]]:
    kinds: dict[str, int] = {}
    unused: dict[str, int] = {}
    wanted = {_module_key(rel) for rel in loaded}
    for dirpath, _, files in os.walk(site):
        for name in files:
            full = Path(dirpath, name)
            size = full.stat().st_size
            kind = _kind(name)
            kinds[kind] = kinds.get(kind, 0) + size
            if kind != "other" and loaded:
                rel = str(full.relative_to(site))
                if _module_key(rel) not in wanted:
                    top = rel.split("/")[0]
                    unused[top] = unused.get(top, 0) + size
    top_unused = sorted(unused.items(), key=lambda item: -item[1])
    return kinds, sum(unused.values()), top_unused[:8]


def measure_package(
    build: bool, log: Path, loaded: set[str] | None = None, timeout_s: float = 1500.0
) -> PackageSizes:
    """Sizes from ``.aws-sam/build``; runs ``make sam-build`` first when it is absent and ``build``."""
    note = "existing .aws-sam/build"
    if not (BUILD / FUNCTION).is_dir() or not (BUILD / LAYER).is_dir():
        if not build:
            return PackageSizes(False, "skipped: no .aws-sam/build and the build was not asked for")
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("wb") as out:
            try:
                done = subprocess.run(
                    ["make", "sam-build"], cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, timeout=timeout_s
                )
            except subprocess.TimeoutExpired:
                return PackageSizes(False, f"`make sam-build` timed out after {timeout_s:.0f}s (log: {log})")
        if done.returncode != 0:
            tail = " / ".join(log.read_text(errors="replace").strip().splitlines()[-3:])
            return PackageSizes(False, f"`make sam-build` failed ({done.returncode}): {tail[-300:]}")
        note = "built now with `make sam-build`"
    function, layer = BUILD / FUNCTION, BUILD / LAYER
    site = layer / "python"
    largest = (
        sorted(
            (
                (entry.name, _unpacked(entry) if entry.is_dir() else entry.stat().st_size)
                for entry in site.iterdir()
            ),
            key=lambda item: -item[1],
        )[:10]
        if site.is_dir()
        else []
    )
    kinds, never, never_top = _layer_usage(site, loaded or set()) if site.is_dir() else ({}, 0, [])
    return PackageSizes(
        True,
        note,
        _unpacked(function),
        _zipped(function),
        _unpacked(layer),
        _zipped(layer),
        largest,
        kinds,
        never,
        never_top,
    )
