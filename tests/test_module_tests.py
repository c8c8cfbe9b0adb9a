"""Tests follow the modules (issue 11): every shipped module's tests can be found from its name.

A module ``switchboard.a.b.name`` is found when a test file's name holds ``name`` as a word:
``test_name.py``, ``test_name_http.py``, ``test_money_pricing.py`` (``money`` and ``pricing``).
A module tested only in a file named for a wider concern is listed in ``ELSEWHERE`` with that file
and the reason, and the file must mention the module; a package ``__init__`` that only re-exports
(no function or class of its own) needs no tests. ``cli`` and ``devtools`` are not shipped.

Read from the source tree; nothing is imported.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "layers" / "switchboard"
NOT_SHIPPED = ("cli", "devtools")

# module -> (test file, why its tests live there). Keep it short and honest.
ELSEWHERE: dict[str, tuple[str, str]] = {
    "switchboard.http.asgi": (
        "tests/integration/test_chat_http.py",
        "the front door and the event stream, seen from a client: streams, disconnects, 405s",
    ),
    "switchboard.http.request": (
        "tests/integration/test_pipeline_http.py",
        "the pipeline's steps (request id, deadline, key, body), through a toy endpoint and the real ones",
    ),
    "switchboard.infra.aws": (
        "tests/integration/test_awsjson_moto.py",
        "the AWS client factory, exercised against moto with the light client it builds",
    ),
    "switchboard.infra.logs": (
        "tests/integration/test_observability_http.py",
        "JSON logs with the request id, and no secret in them, from real requests",
    ),
    "switchboard.limits.definitions": (
        "tests/limits/test_budgets_http.py",
        "budget and rate definitions (team, user, model) as admission applies them",
    ),
    "switchboard.limits.sweeper": (
        "tests/limits/test_ledger.py",
        "the scheduled sweeper's handler, against the ledger it sweeps",
    ),
    "switchboard.upstream.providers.base": (
        "tests/unit/test_errors.py",
        "the shared provider machinery: how upstream errors are classified and passed on",
    ),
    "switchboard.wiring": (
        "tests/integration/test_h1_http.py",
        "Gateway.from_env builds every gateway under test (tests/conftest.py); the HTTP client it makes",
    ),
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def shipped() -> dict[str, Path]:
    modules = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}
    return {name: path for name, path in modules.items() if not set(name.split(".")[1:2]) & set(NOT_SHIPPED)}


def only_reexports(path: Path) -> bool:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return path.name == "__init__.py" and not any(
        isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef) for node in tree.body
    )


TEST_FILES = sorted(p for p in (ROOT / "tests").rglob("test_*.py"))


def named_after(module: str) -> list[Path]:
    name = module.rsplit(".", 1)[-1]
    return [p for p in TEST_FILES if f"_{name}_" in f"_{p.stem}_"]


def test_every_shipped_module_has_tests_found_from_its_name() -> None:
    missing = [
        module
        for module, path in shipped().items()
        if not only_reexports(path) and not named_after(module) and module not in ELSEWHERE
    ]
    assert missing == [], f"no test file named after (nor listed in ELSEWHERE): {missing}"


def test_every_module_tested_elsewhere_is_mentioned_there_and_has_no_test_of_its_own() -> None:
    modules = shipped()
    for module, (test_file, reason) in ELSEWHERE.items():
        assert module in modules, f"{module} is no shipped module: drop it from ELSEWHERE"
        assert reason
        path = ROOT / test_file
        assert path.exists(), f"{test_file} (for {module}) does not exist"
        text = path.read_text(encoding="utf-8")
        dotted = module.removeprefix("switchboard.")
        assert dotted in text, f"{test_file} does not mention {dotted} (for {module})"
        assert not named_after(module), f"{module} has a test named after it now: drop it from ELSEWHERE"
