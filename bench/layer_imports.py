"""Who could import a module of a built layer: its static import graph, read from the bytecode.

The surface run (``bench.layer_surface``) shows which modules were loaded; a never-loaded module is
dead only if nothing could load it on another path either. This reads every module's code objects
(the layer ships bytecode only: ``mod.pyc`` beside where ``mod.py`` was; a ``.py`` without a
``.pyc`` is compiled here) and records, for every import statement in them, the module it names,
resolved against the importing package: in every branch, so ``try/except ImportError`` fallbacks,
``if TYPE_CHECKING:`` blocks and imports inside functions all count. String constants that look
like a dotted module path, alone or as a ``"module:attr"`` import string (uvicorn's protocol
tables, ``importlib.import_module`` with a literal), count as importers too.

What it cannot see: a module name built at run time (anyio's ``f"anyio._backends._{name}"``),
and entry points that a tool outside the layer reads (pytest plugins). Those stay with the reader.
Must run on the Python that compiled the layer (3.13): bytecode is version-specific.
"""

from __future__ import annotations

import dis
import importlib.util
import marshal
import re
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from types import CodeType

__all__ = ["module_name", "static_importers"]

_DOTTED = re.compile(r"[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)+")
_IDENT = re.compile(r"[A-Za-z_]\w*")


def module_name(rel: str) -> str | None:
    """The module a layer file defines, or None for data files and non-importable paths.

    ``pkg/mod.pyc`` -> ``pkg.mod``; ``pkg/__init__.pyc`` -> ``pkg``;
    ``pkg/_x.cpython-313-aarch64-linux-gnu.so`` -> ``pkg._x``.
    """
    path = Path(rel)
    if path.suffix in (".py", ".pyc"):
        stem = path.stem
    elif path.suffix == ".so":
        stem = path.name.split(".", 1)[0]
    else:
        return None
    parts = [*path.parent.parts, stem]
    if parts[-1] == "__init__":
        parts.pop()
    if not parts or not all(_IDENT.fullmatch(p) for p in parts):
        return None
    return ".".join(parts)


def _load(path: Path) -> CodeType | None:
    if path.suffix == ".pyc":
        data = path.read_bytes()
        if data[:4] != importlib.util.MAGIC_NUMBER:
            raise RuntimeError(f"{path}: compiled by another Python version than this one")
        code = marshal.loads(data[16:])
        return code if isinstance(code, CodeType) else None
    if path.with_suffix(".pyc").exists():
        return None  # the .pyc beside it is what gets imported (and read)
    return compile(path.read_bytes(), str(path), "exec", dont_inherit=True)


def _code_objects(code: CodeType) -> Iterator[CodeType]:
    yield code
    for const in code.co_consts:
        if isinstance(const, CodeType):
            yield from _code_objects(const)


def _strings(value: object) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, (tuple, frozenset)):
        for item in value:
            yield from _strings(item)


def _resolve(name: str, level: int, package: str) -> str | None:
    if level == 0:
        return name
    parts = package.split(".") if package else []
    if level - 1 >= len(parts):
        return None  # beyond the top-level package: the import would fail
    base = ".".join(parts[: len(parts) - (level - 1)])
    return f"{base}.{name}" if name else base


def _named(code: CodeType, package: str) -> Iterator[str]:
    """Modules named by the import statements and module-path strings of one code object."""
    instructions = list(dis.get_instructions(code))
    for i, ins in enumerate(instructions):
        if ins.opname != "IMPORT_NAME":
            continue
        level, fromlist = 0, None
        before = instructions[max(0, i - 2) : i]
        if len(before) == 2 and all(b.opname == "LOAD_CONST" for b in before):
            level, fromlist = before[0].argval, before[1].argval
        base = _resolve(ins.argval, level if isinstance(level, int) else 0, package)
        if base is None:
            continue
        yield base
        for item in fromlist if isinstance(fromlist, tuple) else ():
            if item != "*":
                yield f"{base}.{item}"
    for const in code.co_consts:
        for text in _strings(const):
            candidate = text.split(":", 1)[0]
            if _DOTTED.fullmatch(candidate):
                yield candidate


def static_importers(layer: Path) -> dict[str, set[str]]:
    """Module name -> the layer's modules that name it (itself excluded)."""
    importers: dict[str, set[str]] = defaultdict(set)
    for path in sorted(p for p in layer.rglob("*") if p.suffix in (".py", ".pyc") and p.is_file()):
        rel = path.relative_to(layer).as_posix()
        module = module_name(rel)
        code = _load(path) if module else None
        if module is None or code is None:
            continue
        package = module if path.stem == "__init__" else module.rpartition(".")[0]
        for inner in _code_objects(code):
            for target in _named(inner, package):
                if target != module:
                    importers[target].add(module)
    return importers
