"""Read ``template.yaml``, so local tables are built from the stack's own definitions.

Short-form tags become the long form CloudFormation itself uses: ``!Ref X`` -> ``{"Ref": "X"}``,
``!GetAtt A.B`` -> ``{"Fn::GetAtt": ["A", "B"]}``, ``!Condition C`` -> ``{"Condition": "C"}``,
any other ``!Name v`` -> ``{"Fn::Name": v}``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

__all__ = ["CfnLoader", "load_template", "loads_template", "table_definitions"]


class CfnLoader(yaml.SafeLoader):  # type: ignore[misc,unused-ignore]
    """SafeLoader that understands CloudFormation short-form intrinsic function tags."""


def _construct_intrinsic(loader: yaml.SafeLoader, tag_suffix: str, node: yaml.Node) -> dict[str, Any]:
    value: Any
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    elif isinstance(node, yaml.MappingNode):
        value = loader.construct_mapping(node, deep=True)
    else:  # pragma: no cover - yaml has no other node kinds
        raise yaml.constructor.ConstructorError(
            None, None, f"unexpected node for !{tag_suffix}", node.start_mark
        )

    if tag_suffix in ("Ref", "Condition"):
        return {tag_suffix: value}
    if tag_suffix == "GetAtt" and isinstance(value, str):
        resource, _, attribute = value.partition(".")
        return {"Fn::GetAtt": [resource, attribute]}
    return {f"Fn::{tag_suffix}": value}


CfnLoader.add_multi_constructor("!", _construct_intrinsic)


def loads_template(text: str) -> dict[str, Any]:
    """Parse template text into plain dicts/lists, intrinsics in their long form."""
    doc = yaml.load(text, Loader=CfnLoader)  # CfnLoader is a SafeLoader
    if not isinstance(doc, dict):
        raise ValueError("a CloudFormation template must be a mapping")
    return doc


def load_template(path: str | Path) -> dict[str, Any]:
    """Read and parse a CloudFormation/SAM template file."""
    return loads_template(Path(path).read_text(encoding="utf-8"))


_TABLE_KEYS = (
    "AttributeDefinitions",
    "KeySchema",
    "BillingMode",
    "GlobalSecondaryIndexes",
    "LocalSecondaryIndexes",
)


def table_definitions(template: dict[str, Any]) -> dict[str, tuple[dict[str, Any], str | None]]:
    """Every ``AWS::DynamoDB::Table``: logical id -> (``create_table`` kwargs, TTL attribute or None)."""
    tables: dict[str, tuple[dict[str, Any], str | None]] = {}
    for logical_id, resource in template.get("Resources", {}).items():
        if resource.get("Type") != "AWS::DynamoDB::Table":
            continue
        props = resource.get("Properties", {})
        kwargs = {key: props[key] for key in _TABLE_KEYS if key in props}
        kwargs.setdefault("BillingMode", "PAY_PER_REQUEST")
        ttl = props.get("TimeToLiveSpecification") or {}
        tables[logical_id] = (kwargs, ttl.get("AttributeName") if ttl.get("Enabled", True) else None)
    return tables
