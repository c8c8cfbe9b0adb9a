"""Helpers shared by the provider tests: golden fixtures, OpenAI spec validation, call builders."""

from __future__ import annotations

import copy
import functools
import json
from pathlib import Path
from typing import Any

import httpx
from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from switchboard.core.schemas import ChatCompletionRequest, EmbeddingRequest
from switchboard.routing.document import ProviderConfig, Timeouts
from switchboard.routing.planner import PlannedTarget
from switchboard.upstream.providers.base import Call, EmbedCall

FIXTURES = Path(__file__).parent / "fixtures" / "providers"
# The response schemas of OpenAI's published spec (MIT; see fixtures/openai-openapi.LICENSE).
SPEC = Path(__file__).parent / "fixtures" / "openai-openapi-subset.json"


def fixture(provider: str, name: str) -> dict[str, Any]:
    return json.loads((FIXTURES / provider / f"{name}.json").read_text())


def fixtures(provider: str, prefix: str = "") -> list[str]:
    return sorted(p.stem for p in (FIXTURES / provider).glob(f"{prefix}*.json"))


def target(provider: dict[str, Any], model: str = "m", name: str = "p", **extra: Any) -> PlannedTarget:
    return PlannedTarget(name, ProviderConfig.model_validate(provider), model, Timeouts(), None, **extra)


def chat_call(
    request: dict[str, Any],
    provider: dict[str, Any],
    model: str = "m",
    *,
    stream: bool | None = None,
    api_key: str | None = "sk-provider-key",
    http: httpx.AsyncClient | None = None,
    **extra: Any,
) -> Call:
    parsed = ChatCompletionRequest.model_validate(request)
    wants = parsed.wants_stream if stream is None else stream
    client = http or httpx.AsyncClient()
    return Call(parsed, target(provider, model, **extra), api_key, client, wants)


def embed_call(
    request: dict[str, Any],
    provider: dict[str, Any],
    model: str = "m",
    *,
    api_key: str | None = "sk-provider-key",
    http: httpx.AsyncClient | None = None,
    **extra: Any,
) -> EmbedCall:
    parsed = EmbeddingRequest.model_validate(request)
    return EmbedCall(parsed, target(provider, model, **extra), api_key, http or httpx.AsyncClient())


def normalise(obj: Any) -> Any:
    """A completion or chunk as JSON, with the wall-clock ``created`` zeroed."""
    data = copy.deepcopy(obj if isinstance(obj, dict) else json.loads(obj.model_dump_json()))
    if "created" in data:
        data["created"] = 0
    return data


# --------------------------------------------------------------------------- the OpenAI spec


def _nullable(node: Any) -> Any:
    """OpenAPI 3.0 ``nullable: true`` -> JSON Schema ``anyOf [..., null]``, recursively."""
    if isinstance(node, list):
        return [_nullable(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {key: _nullable(value) for key, value in node.items() if key != "nullable"}
    if node.get("nullable") is True:
        return {"anyOf": [out, {"type": "null"}]}
    return out


@functools.cache
def _registry() -> tuple[Registry, dict[str, Any]]:
    spec = _nullable(json.loads(SPEC.read_text()))
    resource = Resource.from_contents(spec, default_specification=_DRAFT)
    return Registry().with_resource("spec", resource), spec


def validate_openai(schema_name: str, instance: Any) -> None:
    """Raise if ``instance`` does not validate against the spec's ``components/schemas/<name>``."""
    registry, _ = _registry()
    schema = {"$ref": f"spec#/components/schemas/{schema_name}"}
    data = instance if isinstance(instance, (dict, list)) else json.loads(instance.model_dump_json())
    Draft202012Validator(schema, registry=registry).validate(data)


def _draft() -> Any:
    from referencing.jsonschema import DRAFT202012

    return DRAFT202012


_DRAFT = _draft()
