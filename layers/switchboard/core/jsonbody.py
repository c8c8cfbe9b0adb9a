"""Inbound JSON, read one way for every endpoint: a depth limit, and big bodies off the event loop.

* **Depth.** A body nested deeper than ``MAX_DEPTH`` levels is a 400 ``invalid_json`` before any
  parser sees it. ``json.loads`` recurses in C and raises ``RecursionError`` (a 500) on a few
  thousand levels; pydantic's parser stops at 200, but what consumes the value afterwards
  (conversions, ``json.dumps``) recurses in Python. No request the APIs define comes near 64.
  The check is cheap: a body with fewer brackets than the limit cannot exceed it (two
  ``bytes.count`` calls); otherwise strings are cut out (escapes removed, then a split on the
  quotes: brackets inside text do not count) and the brackets left are summed at C speed.
* **Off the loop.** Parsing and validating a body of ``OFF_LOOP_BYTES`` or more runs in a worker
  thread (``parse``), so a multi-megabyte upload does not stall every other request's stream.
"""

from __future__ import annotations

import array
import asyncio
import itertools
from collections.abc import Callable
from typing import Any, TypeVar

import pydantic_core

from switchboard.core.errors import InvalidRequest

__all__ = ["MAX_DEPTH", "OFF_LOOP_BYTES", "check_depth", "load_object", "loads", "parse"]

T = TypeVar("T")

MAX_DEPTH = 64
OFF_LOOP_BYTES = 256 * 1024

_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
_SIGNS = bytes.maketrans(b"[{]}", b"\x01\x01\xff\xff")  # as signed bytes: +1 opens, -1 closes
_SLICE = 1 << 16  # brackets summed per step: a GIL switch point between steps


def _depth_exceeds(body: bytes, limit: int) -> bool:
    """Whether ``body``'s brackets outside strings nest deeper than ``limit``."""
    # Escapes first (``\\`` before ``\"``): then every quote left opens or closes a string, and
    # every other piece of the split lies outside one.
    unescaped = body.replace(b"\\\\", b"").replace(b'\\"', b"")
    outside = b"".join(unescaped.split(b'"')[::2])
    signs = array.array("b", outside.translate(None, _NOT_BRACKETS).translate(_SIGNS))
    depth = 0
    for start in range(0, len(signs), _SLICE):
        sums = list(itertools.accumulate(signs[start : start + _SLICE], initial=depth))
        if max(sums) > limit:
            return True
        depth = sums[-1]
    return False


def check_depth(body: bytes) -> None:
    """``InvalidRequest`` when ``body`` nests deeper than ``MAX_DEPTH``."""
    if body.count(b"[") + body.count(b"{") <= MAX_DEPTH:
        return
    if _depth_exceeds(body, MAX_DEPTH):
        raise InvalidRequest(
            f"The JSON body of your request is nested deeper than {MAX_DEPTH} levels.", code="invalid_json"
        )


def loads(body: bytes) -> Any:
    """The JSON value of ``body``; ``InvalidRequest`` when it is not JSON. For use inside a
    ``read`` given to ``parse``, which checks the depth first."""
    try:
        return pydantic_core.from_json(body)
    except ValueError:
        raise InvalidRequest(
            "We could not parse the JSON body of your request. Send valid JSON.", code="invalid_json"
        ) from None


def load_object(body: bytes) -> dict[str, Any]:
    """``loads``, for the endpoints whose body must be a JSON object: anything else (a list, a
    string, ``null``) is ``InvalidRequest`` too."""
    value = loads(body)
    if not isinstance(value, dict):
        raise InvalidRequest("The request body must be a JSON object.", code="invalid_json")
    return value


async def parse(read: Callable[[bytes], T], body: bytes) -> T:
    """``read(body)`` after the depth check: in a worker thread when the body is large."""
    if len(body) < OFF_LOOP_BYTES:
        return _checked(read, body)
    return await asyncio.to_thread(_checked, read, body)


def _checked(read: Callable[[bytes], T], body: bytes) -> T:
    check_depth(body)
    return read(body)
