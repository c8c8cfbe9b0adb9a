"""Client keys: read from either header, and never compared with ``==``.

Keys are found by digest (a hash lookup); a direct comparison of key material or digests would
leak, through its timing, how much of a guess was right. The check reads the source of the modules
that handle keys and fails on any ``==``/``!=`` with a key-like name on either side.
"""

from __future__ import annotations

import ast
import inspect

import pytest
from switchboard.core import principal as auth
from switchboard.core.errors import Unauthorized
from switchboard.core.principal import bearer_token
from switchboard.limits import keys

_SECRET_NAMES = ("token", "secret", "digest", "api_key", "key_hash")


def _names(node: ast.AST) -> set[str]:
    found = set()
    for sub in ast.walk(node):
        if isinstance(sub, ast.Name):
            found.add(sub.id.lower())
        elif isinstance(sub, ast.Attribute):
            found.add(sub.attr.lower())
    return found


def _equality_over_secrets(source: str) -> list[str]:
    hits = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Compare) and any(isinstance(op, ast.Eq | ast.NotEq) for op in node.ops):
            operands = [node.left, *node.comparators]
            if any(any(s in n for s in _SECRET_NAMES) for o in operands for n in _names(o)):
                hits.append(ast.unparse(node))
    return hits


@pytest.mark.parametrize("module", [auth, keys])
def test_no_key_material_is_compared_with_equals(module: object) -> None:
    assert _equality_over_secrets(inspect.getsource(module)) == []  # type: ignore[arg-type]


def test_the_check_would_catch_one() -> None:
    assert _equality_over_secrets("if record.digest == key_digest(token): pass") != []
    assert _equality_over_secrets("ok = hmac.compare_digest(record.digest, key_digest(token))") == []


def test_the_key_comes_from_any_of_the_headers() -> None:
    assert bearer_token("Bearer abc", None) == "abc" and bearer_token(None, " xyz ") == "xyz"
    assert bearer_token(None, None, " azure ") == "azure"  # Azure OpenAI clients' api-key
    assert bearer_token("Bearer abc", "xyz", "azure") == "abc" and bearer_token(None, "xyz", "azure") == "xyz"
    with pytest.raises(Unauthorized):
        bearer_token("Basic abc", None)
    with pytest.raises(Unauthorized):
        bearer_token(None, " ", "")
