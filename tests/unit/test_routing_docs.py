"""docs/routing.md and docs/rules.md kept in step with the routing document's JSON Schema: every
field is documented, every strategy and skip reason is listed, every condition has its own
section with an example that validates."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from switchboard.routing.decide import Reason
from switchboard.routing.document import ModelRoute, RoutingDocument, Rule, RuleCondition

DOCS = Path(__file__).resolve().parents[2] / "docs"
ROUTING = (DOCS / "routing.md").read_text()
RULES = (DOCS / "rules.md").read_text()


def inline_names(text: str) -> set[str]:
    """The identifiers inside `inline code` (code blocks left out)."""
    prose = re.sub(r"```.*?```", "", text, flags=re.S)
    return {name for span in re.findall(r"`([^`]+)`", prose) for name in re.findall(r"[A-Za-z_]\w*", span)}


def schema_fields() -> list[tuple[str, str]]:
    schema = RoutingDocument.model_json_schema()
    return [
        (name, prop)
        for name, definition in [("RoutingDocument", schema), *schema["$defs"].items()]
        for prop in definition.get("properties", {})
    ]


@pytest.mark.parametrize(("definition", "field"), schema_fields(), ids=lambda v: str(v))
def test_every_schema_field_is_documented(definition: str, field: str) -> None:
    assert field in inline_names(ROUTING + RULES), (
        f"{definition}.{field} is not in docs/routing.md or docs/rules.md"
    )


def test_every_strategy_is_in_the_strategies_table() -> None:
    strategies = ModelRoute.model_json_schema()["properties"]["strategy"]["enum"]
    section = ROUTING.split("## Strategies", 1)[1].split("\n## ", 1)[0]
    for strategy in strategies:
        assert f"| `{strategy}` |" in section


def test_every_skip_reason_is_listed_in_the_explain_section() -> None:
    section = ROUTING.split("## Explain", 1)[1].split("\n## ", 1)[0]
    for reason in Reason:
        assert f"`{reason.value}`" in section


def condition_sections() -> dict[str, str]:
    """``### `field` ...`` sections of docs/rules.md: field -> section text."""
    part = RULES.split("## Conditions", 1)[1].split("\n## ", 1)[0]
    sections: dict[str, str] = {}
    for block in part.split("\n### ")[1:]:
        for field in re.findall(r"`(\w+)`", block.splitlines()[0]):
            sections[field] = block
    return sections


@pytest.mark.parametrize("field", list(RuleCondition.model_fields))
def test_every_condition_has_a_section_with_a_valid_example(field: str) -> None:
    sections = condition_sections()
    assert field in sections, f"docs/rules.md has no '### `{field}`' section"
    examples = re.findall(r"```json\n(.*?)```", sections[field], flags=re.S)
    assert examples, f"the section on {field} has no example"
    rule = Rule.model_validate(json.loads(examples[0]))
    assert field in rule.when.model_dump(exclude_unset=True, by_alias=False) or field == "scope"


def test_the_rules_example_at_the_top_validates() -> None:
    example = re.search(r"```json\n(.*?)```", RULES, flags=re.S)
    assert example is not None
    for rule in json.loads(example.group(1))["rules"]:
        Rule.model_validate(rule)
