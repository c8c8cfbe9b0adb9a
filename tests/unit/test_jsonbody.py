"""The depth check: brackets outside strings count, brackets inside (escapes and all) do not."""

from __future__ import annotations

import json
from typing import Any

import pytest
from switchboard.core import jsonbody
from switchboard.core.errors import InvalidRequest


def _nested(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = [value]
    return value


@pytest.mark.parametrize(
    ("value", "too_deep"),
    [
        (_nested(jsonbody.MAX_DEPTH), False),
        (_nested(jsonbody.MAX_DEPTH + 1), True),
        ({"a": {"b": [_nested(jsonbody.MAX_DEPTH - 2)]}}, True),
        ({"text": "[{" * 500}, False),
        ({"text": '\\"[' * 500, "more": '"\\' * 50}, False),
        ({"k[" * 40: "v{" * 40, "list": [[{"a": 1}]] * 200}, False),
        ({"text": "\\", "deep": _nested(jsonbody.MAX_DEPTH)}, True),
    ],
)
def test_depth(value: Any, too_deep: bool) -> None:
    body = json.dumps(value).encode()
    if too_deep:
        with pytest.raises(InvalidRequest, match="deeper than"):
            jsonbody.check_depth(body)
    else:
        jsonbody.check_depth(body)
        assert jsonbody.loads(body) == value


def test_not_json_is_invalid_json() -> None:
    with pytest.raises(InvalidRequest) as caught:
        jsonbody.loads(b'{"a": ')
    assert caught.value.code == "invalid_json"
