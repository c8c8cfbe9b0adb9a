"""The routing document's JSON Schema and its documentation stay in step: every field the schema
has is named in the docs (docs/routing.md mostly; rules, providers and prices have their own)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from switchboard.routing.document import RoutingDocument

DOCS = Path(__file__).resolve().parents[2] / "docs"
PAGES = ("routing.md", "rules.md", "providers.md", "observability.md")


def fields(schema: dict[str, Any]) -> set[str]:
    names = set(schema.get("properties", {}))
    for definition in schema.get("$defs", {}).values():
        names |= set(definition.get("properties", {}))
    return names


def test_every_field_of_the_schema_is_documented() -> None:
    text = "\n".join((DOCS / page).read_text() for page in PAGES)
    # Named in inline code, or as a key in an example's JSON.
    quoted = " ".join(re.findall(r"`([^`\n]+)`", text) + re.findall(r'"(\w+)":', text))
    missing = sorted(
        n for n in fields(RoutingDocument.model_json_schema()) if not re.search(rf"\b{n}\b", quoted)
    )
    assert not missing, f"fields of the routing document not named in docs/{{{','.join(PAGES)}}}: {missing}"


def test_the_new_fields_are_in_the_schema() -> None:
    names = fields(RoutingDocument.model_json_schema())
    assert {"latency_trigger_s", "hedge_after_ms", "heartbeat_after_s", "breaker", "probe_share"} <= names
