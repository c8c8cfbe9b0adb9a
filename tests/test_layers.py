"""The import rule of the layered package (issue 11; ``make layers``, part of ``make check``).

Each layer imports only from the layers below it, in this order (top first)::

    http -> wiring -> {limits | billing} -> exchange -> upstream -> routing -> infra -> core

``limits`` and ``billing`` share a rank and never import each other: the two hooks meet only on
the exchange. A module may import modules of its own layer. ``cli`` and ``devtools`` are outside
the layers (they do not ship in the Lambda layer): they may import anything, nothing shipped
imports them. The rule holds for every import, at module level, inside functions and under
``TYPE_CHECKING``. Besides: no import cycle among module-level imports, and no module uses
another module's private names (``from x import _y``, ``x._y``).

The checks read the source with ``ast``; nothing is imported.
"""

from __future__ import annotations

import ast
import functools
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "layers" / "switchboard"

# Top first. A tuple is one rank whose members may not import each other.
ORDER: list[tuple[str, ...]] = [
    ("http",),
    ("wiring",),
    ("limits", "billing"),
    ("exchange",),
    ("upstream",),
    ("routing",),
    ("infra",),
    ("core",),
]
OUTSIDE = ("cli", "devtools")  # not shipped; may import any layer, and no layer may import them
RANK = {layer: rank for rank, group in enumerate(ORDER) for layer in group}

# (importer, imported) pairs let through, each with its reason. Keep it short; empty is the aim.
ALLOWED: dict[tuple[str, str], str] = {
    ("switchboard.infra.awsjson", "switchboard.devtools.awsfaults"): (
        "the AWS fault injector of the hardening tests, imported inside ``from_env`` only when "
        "SWITCHBOARD_AWS_FAULTS is set (the dev stack and the soak's gateway processes set it); "
        "it is not in the Lambda layer, where the variable is never set"
    ),
}


@dataclass(frozen=True)
class Import:
    importer: str  # dotted module name
    imported: str  # dotted module name (a submodule when ``from pkg import sub`` names one)
    line: int
    top: bool  # executed at import time: module level, outside ``if TYPE_CHECKING``
    names: tuple[str, ...] = ()  # ``from imported import names``


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def layer_of(module: str) -> str | None:
    """``switchboard.upstream.engine`` -> ``upstream``; None for the package root."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _walk(node: ast.AST, top: bool) -> Iterator[tuple[ast.AST, bool]]:
    """Every node under ``node``, with whether it runs at import time."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            yield child, top
            yield from _walk(child, False)
        elif isinstance(child, ast.If) and _is_type_checking(child):
            yield child, top
            for stmt in child.body:
                yield stmt, False
                yield from _walk(stmt, False)
            for stmt in child.orelse:
                yield stmt, top
                yield from _walk(stmt, top)
        else:
            yield child, top
            yield from _walk(child, top)


@functools.cache
def tree_of(module: str) -> ast.Module:
    """The parsed source of ``module``, read once per run."""
    path = MODULES[module]
    return ast.parse(path.read_text(encoding="utf-8"), str(path))


def imports_of(module: str) -> Iterator[Import]:
    path = MODULES[module]
    tree = tree_of(module)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node, top in _walk(tree, True):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "switchboard":
                    yield Import(module, alias.name, node.lineno, top)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            if base.split(".")[0] != "switchboard":
                continue
            names = tuple(alias.name for alias in node.names)
            plain = [n for n in names if f"{base}.{n}" not in MODULES]
            if plain or not names:
                yield Import(module, base, node.lineno, top, tuple(plain))
            for name in names:
                if f"{base}.{name}" in MODULES:
                    yield Import(module, f"{base}.{name}", node.lineno, top)


@functools.cache
def all_imports() -> tuple[Import, ...]:
    """Every import of the package; read when a test asks (not at collection, in every worker)."""
    return tuple(imp for module in MODULES for imp in imports_of(module))


def layer_violation(imp: Import) -> str | None:
    """Why ``imp`` breaks the layer rule, or None."""
    src, dst = layer_of(imp.importer), layer_of(imp.imported)
    if src is None or dst is None or src == dst or src in OUTSIDE:
        return None
    if dst in OUTSIDE:
        return f"{dst} is not shipped in the layer"
    if src not in RANK or dst not in RANK:
        return f"{src if src not in RANK else dst} is in no layer"
    if RANK[dst] == RANK[src]:
        return f"{src} and {dst} never import each other"
    if RANK[dst] < RANK[src]:
        return f"{src} is below {dst}"
    return None


def test_every_module_is_in_a_layer() -> None:
    stray = [
        m
        for m in MODULES
        if (layer := layer_of(m)) is not None and layer not in RANK | dict.fromkeys(OUTSIDE)
    ]
    assert not stray, f"modules outside every layer (add them to one, or to ORDER): {stray}"


def test_imports_point_down() -> None:
    found = []
    for imp in all_imports():
        why = layer_violation(imp)
        if why and (imp.importer, imp.imported) not in ALLOWED:
            found.append(
                f"{MODULES[imp.importer].relative_to(PACKAGE.parent)}:{imp.line} {imp.imported}: {why}"
            )
    assert not found, "imports against the layer order:\n" + "\n".join(found)


def test_the_allow_list_is_still_needed() -> None:
    used = {(imp.importer, imp.imported) for imp in all_imports() if layer_violation(imp)}
    assert not set(ALLOWED) - used, f"exceptions no longer needed: {sorted(set(ALLOWED) - used)}"


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle in ``graph``, or None (depth-first, three colours)."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt) :], nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def _import_time_graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for imp in all_imports():
        if imp.top and imp.imported in MODULES and imp.imported != imp.importer:
            graph.setdefault(imp.importer, set()).add(imp.imported)
            # Importing a submodule runs its packages' __init__ first.
            parent = imp.imported.rpartition(".")[0]
            while (
                parent
                and parent not in ("switchboard", imp.importer)
                and not imp.importer.startswith(parent + ".")
            ):
                graph[imp.importer].add(parent)
                parent = parent.rpartition(".")[0]
    return graph


def test_no_import_cycle_at_module_level() -> None:
    cycle = _cycle(_import_time_graph())
    assert cycle is None, "module-level import cycle: " + " -> ".join(cycle or [])


def test_no_import_cycle_between_layers() -> None:
    graph: dict[str, set[str]] = {}
    for imp in all_imports():
        src, dst = layer_of(imp.importer), layer_of(imp.imported)
        if src and dst and src != dst and src not in OUTSIDE and (imp.importer, imp.imported) not in ALLOWED:
            graph.setdefault(src, set()).add(dst)
    cycle = _cycle(graph)
    assert cycle is None, "layers importing each other: " + " -> ".join(cycle or [])


def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def test_no_module_uses_another_modules_private_names() -> None:
    found = []
    by_line: dict[tuple[str, int], list[Import]] = {}
    for imp in all_imports():
        by_line.setdefault((imp.importer, imp.line), []).append(imp)
    for module in MODULES:
        tree = tree_of(module)
        aliases: dict[str, str] = {}  # local name -> switchboard module it is bound to
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                for imp in by_line.get((module, node.lineno), ()):
                    found += [f"{module}:{node.lineno} {imp.imported}.{n}" for n in imp.names if _private(n)]
                for alias in node.names:
                    full = f"{node.module}.{alias.name}"
                    if full in MODULES:
                        aliases[alias.asname or alias.name] = full
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name in MODULES:
                        aliases[alias.asname or alias.name.split(".")[0]] = alias.name
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Attribute)
                and _private(node.attr)
                and isinstance(node.value, ast.Name)
                and aliases.get(node.value.id, module) != module
            ):
                found.append(f"{module}:{node.lineno} {aliases[node.value.id]}.{node.attr}")
    assert not found, "private names used from another module:\n" + "\n".join(found)


@pytest.mark.parametrize(
    ("importer", "imported", "broken"),
    [
        ("switchboard.core.errors", "switchboard.infra.logs", True),
        ("switchboard.routing.document", "switchboard.upstream.providers", True),
        ("switchboard.limits.hook", "switchboard.billing.spendledger", True),
        ("switchboard.billing.metering", "switchboard.limits.model", True),
        ("switchboard.exchange", "switchboard.cli", True),
        ("switchboard.http.app", "switchboard.wiring", False),
        ("switchboard.limits.hook", "switchboard.exchange", False),
        ("switchboard.devtools.console", "switchboard.http.app", False),
    ],
)
def test_the_rule_itself(importer: str, imported: str, broken: bool) -> None:
    assert (layer_violation(Import(importer, imported, 1, True)) is not None) is broken


def test_a_cycle_is_found() -> None:
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": {"c"}}) is None
