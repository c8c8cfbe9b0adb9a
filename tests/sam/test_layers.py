"""Static checks of layers/Makefile: what the two layers hold and what the build prunes.

The pruning is proved against the code of the day (``python -m bench.layer_surface``); these tests
keep later changes to the gateway from importing something the layer no longer ships, which would
only fail on Lambda, and keep the X-Ray SDK out of the layer every deployment attaches.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from fnmatch import fnmatchcase
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
MAKEFILE = ROOT / "layers" / "Makefile"
# Shipped in the layer: the switchboard package less what build-GatewayLayer leaves out.
DEV_ONLY = ("switchboard/devtools/", "switchboard/cli/")


def make_variables(text: str) -> dict[str, list[str]]:
    """``NAME := words`` and ``NAME ?= words`` (with continuations), ``$(NAME)`` expanded."""
    joined = re.sub(r"\\\n", " ", text)
    raw = dict(re.findall(r"^([A-Z_0-9]+) *[:?]?= *(.*)$", joined, re.M))

    def expand(value: str) -> list[str]:
        words: list[str] = []
        for word in value.split():
            ref = re.fullmatch(r"\$\(([A-Z_0-9]+)\)", word)
            words += expand(raw[ref.group(1)]) if ref else [word]
        return words

    return {name: expand(value) for name, value in raw.items()}


VARS = make_variables(MAKEFILE.read_text(encoding="utf-8"))


def recipe(target: str) -> str:
    text = MAKEFILE.read_text(encoding="utf-8")
    match = re.search(rf"^{target}:.*\n((?:\t.*\n|#.*\n)+)", text, re.M)
    assert match, target
    return match.group(1)


def pruned_patterns() -> list[str]:
    """Module-name patterns of everything the GatewayLayer build deletes."""
    patterns = []
    for directory in VARS["PRUNE"]:
        name = directory.replace("/", ".")
        patterns += [name, f"{name}.*"]
    for path in VARS["PRUNE_FILES"]:
        parts = path.split("/")
        parts[-1] = parts[-1].split(".", 1)[0]  # mod.py, _x.cpython-313-*.so -> mod, _x
        patterns.append(".".join(parts))
    return patterns


def gateway_imports() -> Iterator[tuple[str, str]]:
    """(file, module) for every absolute import in the code that runs from the layer."""
    files = [
        p
        for p in (ROOT / "layers" / "switchboard").rglob("*.py")
        if not p.relative_to(ROOT / "layers").as_posix().startswith(DEV_ONLY)
    ]
    files += (ROOT / "functions").glob("*/*.py")
    for path in files:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    yield path.name, alias.name
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                yield path.name, node.module
                for alias in node.names:
                    yield path.name, f"{node.module}.{alias.name}"


def test_the_prune_lists_name_modules() -> None:
    assert VARS["PRUNE"] and VARS["PRUNE_FILES"]
    for path in VARS["PRUNE_FILES"]:
        assert path.endswith((".py", ".so")), path
        assert not path.startswith(("switchboard/", "/")) and ".." not in path, path


def test_the_gateway_imports_nothing_the_layer_prunes() -> None:
    patterns = pruned_patterns()
    hits = [(f, m) for f, m in gateway_imports() if any(fnmatchcase(m, p) for p in patterns)]
    assert not hits, f"imported by the gateway but pruned in layers/Makefile: {hits}"


@pytest.mark.parametrize(
    "module", ["anyio._backends._trio", "pydantic.mypy", "uvicorn.protocols.http.h11_impl"]
)
def test_pruned_patterns_match_what_they_prune(module: str) -> None:
    assert any(fnmatchcase(module, p) for p in pruned_patterns())


def test_the_xray_sdk_is_only_in_the_tracing_layer() -> None:
    requirements = (ROOT / "layers" / "requirements.txt").read_text(encoding="utf-8").lower()
    for name in ("aws-xray-sdk", "wrapt"):
        assert not re.search(rf"^{name}\b", requirements, re.M), name
    assert set(VARS["TRACING_ONLY"]) == {"aws_xray_sdk", "wrapt"}

    gateway, tracing = recipe("build-GatewayLayer"), recipe("build-TracingLayer")
    assert "requirements-tracing.txt" not in gateway
    assert "$(call absent,$(TRACING_ONLY)" in gateway  # the build fails if a dependency pulls them in
    assert "requirements-tracing.txt" in tracing and "--no-deps" in tracing
    assert "$(call absent,$(RUNTIME_PROVIDED)" in gateway and "$(call absent,$(RUNTIME_PROVIDED)" in tracing
