"""The routing document in SSM: one parameter, or parts under its path named by a manifest.

A document up to ``PART_BYTES`` (Standard tier's 4 KB) is the parameter's value, as it always was.
A larger one is split, in ``switchboard routing push``, into Standard parameters under the same
path, ``<name>/part-0``, ``<name>/part-1``, ..., written first; the parameter itself is written
last with a manifest naming each part *at the version just written* and the hash of the whole::

    {"switchboard_parts": {"sha256": "<hex>", "bytes": 9120,
                           "parts": ["/switchboard/routing/part-0:7", "/switchboard/routing/part-1:7"]}}

So an edit is still one parameter edit (the manifest's), and a reader never joins parts of two
edits: it reads the manifest, then exactly the part versions it names (``GetParameters`` takes
``name:version`` selectors), however many pushes land meanwhile. The hash catches what the
versions cannot (a part edited by hand, a manifest written by something else): a join that does
not match is refused, and the last good document keeps serving. SSM keeps a parameter's last 100
versions, so a manifest stays readable for 100 later pushes.

Reads cost ``1 + ceil(parts / 10)`` SSM calls (``GetParameters`` takes 10 names), and
``switchboard.routing.copy`` reads the parts only when the manifest changed.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = [
    "MANIFEST_KEY",
    "MAX_PARTS",
    "PART_BYTES",
    "Pushed",
    "SplitMismatch",
    "join",
    "manifest_of",
    "read",
    "read_source",
    "split",
    "write",
]

PART_BYTES = 4096  # the Standard tier's value limit
MAX_PARTS = 50  # 200 KB: six GetParameters calls per edit read; far below a DynamoDB item's 400 KB
MANIFEST_KEY = "switchboard_parts"
_BATCH = 10  # names per GetParameters call


class SplitMismatch(ValueError):
    """The parts read do not make the document the manifest names (a torn or hand-made edit)."""


@dataclass(frozen=True, slots=True)
class Pushed:
    """What ``write`` put: the tier of the parameter and how many parts (0: the single form)."""

    tier: str
    parts: int
    size: int


def split(text: str, part_bytes: int = PART_BYTES) -> list[str]:
    """``text`` in pieces of at most ``part_bytes`` UTF-8 bytes, never cutting a character."""
    pieces: list[str] = []
    data = text.encode()
    start = 0
    while start < len(data):
        end = min(start + part_bytes, len(data))
        while end < len(data) and (data[end] & 0xC0) == 0x80:  # inside a multi-byte character
            end -= 1
        pieces.append(data[start:end].decode())
        start = end
    return pieces


def manifest_of(value: str) -> dict[str, Any] | None:
    """The manifest in a parameter's value, or None when the value is a whole document."""
    if MANIFEST_KEY not in value:
        return None
    try:
        parsed = json.loads(value)
    except ValueError:
        return None
    if not isinstance(parsed, dict) or set(parsed) != {MANIFEST_KEY}:
        return None
    manifest: dict[str, Any] = parsed[MANIFEST_KEY]
    parts = manifest.get("parts") if isinstance(manifest, dict) else None
    if (
        not isinstance(parts, list)
        or not 0 < len(parts) <= MAX_PARTS
        or not all(isinstance(p, str) and ":" in p for p in parts)
        or not isinstance(manifest.get("sha256"), str)
    ):
        raise SplitMismatch("the routing parameter holds a malformed parts manifest")
    return manifest


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def join(manifest: dict[str, Any], get_parameters: Callable[..., dict[str, Any]]) -> str:
    """The document the manifest names: each part at its version, checked against the hash."""
    wanted: list[str] = manifest["parts"]
    found: dict[tuple[str, int], str] = {}
    for first in range(0, len(wanted), _BATCH):
        answer = get_parameters(Names=wanted[first : first + _BATCH], WithDecryption=True)
        for param in answer.get("Parameters", []):
            found[(str(param["Name"]), int(param["Version"]))] = str(param["Value"])
    pieces = []
    for selector in wanted:
        name, _, version = selector.rpartition(":")
        piece = found.get((name, int(version))) if version.isdigit() else None
        if piece is None:
            raise SplitMismatch(f"routing part {selector} is missing")
        pieces.append(piece)
    text = "".join(pieces)
    if _digest(text) != manifest["sha256"]:
        raise SplitMismatch("the routing parts do not match their manifest's hash")
    return text


def read_source(ssm: Any, name: str) -> str:
    """The parameter's own value: a whole document or a manifest (one GetParameter)."""
    return str(ssm.get_parameter(Name=name, WithDecryption=True)["Parameter"]["Value"])


def read(ssm: Any, name: str, source: str | None = None) -> str:
    """The document in parameter ``name``, joined from its parts when it is split. ``source``:
    the parameter's value when already read."""
    value = read_source(ssm, name) if source is None else source
    manifest = manifest_of(value)
    return value if manifest is None else join(manifest, ssm.get_parameters)


def _tier_of(ssm: Any, name: str) -> str | None:
    """The tier of an existing parameter (None when it does not exist)."""
    answer = ssm.describe_parameters(ParameterFilters=[{"Key": "Name", "Option": "Equals", "Values": [name]}])
    found = answer.get("Parameters", [])
    return str(found[0].get("Tier", "Standard")) if found else None


def write(ssm: Any, name: str, text: str, part_bytes: int = PART_BYTES) -> Pushed:
    """Put ``text`` (compact JSON) as parameter ``name``: whole when it fits the Standard tier,
    else its parts first and then the manifest. An Advanced parameter stays Advanced (SSM cannot
    turn it back), so a document up to 8 KB stays whole there."""
    existing = _tier_of(ssm, name)
    limit = 8192 if existing == "Advanced" else part_bytes
    tier = existing if existing == "Advanced" else "Standard"
    size = len(text.encode())
    if size <= limit:
        ssm.put_parameter(Name=name, Value=text, Type="String", Overwrite=True, Tier=tier)
        return Pushed(tier, 0, size)
    pieces = split(text, part_bytes)
    if len(pieces) > MAX_PARTS:
        raise ValueError(f"the document is {size} bytes; at most {MAX_PARTS * part_bytes} bytes fit in parts")
    selectors = []
    for index, piece in enumerate(pieces):
        part = f"{name}/part-{index}"
        answer = ssm.put_parameter(Name=part, Value=piece, Type="String", Overwrite=True, Tier="Standard")
        selectors.append(f"{part}:{int(answer['Version'])}")
    manifest = {MANIFEST_KEY: {"sha256": _digest(text), "bytes": size, "parts": selectors}}
    ssm.put_parameter(
        Name=name, Value=json.dumps(manifest, separators=(",", ":")), Type="String", Overwrite=True, Tier=tier
    )
    return Pushed(tier, len(pieces), size)
