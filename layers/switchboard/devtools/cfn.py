"""Read resources out of ``template.yaml``, so local tables are built from the stack's own definitions."""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["load_template", "table_definitions"]


def load_template(path: str | Path) -> dict[str, Any]:
    """Parse a CloudFormation/SAM template, tolerating short-form intrinsics (``!Ref``, ``!Sub``...)."""
    import yaml

    class _Loader(yaml.SafeLoader):
        pass

    def _intrinsic(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> dict[str, Any]:
        name = "Ref" if suffix == "Ref" else f"Fn::{suffix}"
        value: Any
        if isinstance(node, yaml.ScalarNode):
            value = loader.construct_scalar(node)
        elif isinstance(node, yaml.SequenceNode):
            value = loader.construct_sequence(node, deep=True)
        else:
            value = loader.construct_mapping(node, deep=True)  # type: ignore[arg-type]
        return {name: value}

    _Loader.add_multi_constructor("!", _intrinsic)
    with open(path, encoding="utf-8") as handle:
        loaded: dict[str, Any] = yaml.load(handle, Loader=_Loader)  # noqa: S506 - SafeLoader subclass
    return loaded


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
