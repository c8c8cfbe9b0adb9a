"""The routing document: what validates, what is rejected and how the rejection reads."""

from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator
from switchboard.routing.document import RoutingDocument, load_document

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "infra" / "routing.example.json"
DEV = ROOT / "infra" / "routing.dev.json"


def dev_text() -> str:
    return DEV.read_text().replace("${MOCK_BASE_URL}", "http://127.0.0.1:9100/v1")


def shipped_documents() -> list[tuple[str, str]]:
    return [("example", EXAMPLE.read_text()), ("dev", dev_text())]


GOOD: dict[str, Any] = {
    "version": 1,
    "providers": {
        "p": {"kind": "openai", "base_url": "https://api.example.com/v1/", "api_key": {"ssm": "/s/p"}},
        "q": {"kind": "openai", "base_url": "http://10.0.0.1:8000/v1"},
    },
    "models": {
        "m": {"targets": [{"provider": "p", "model": "x"}, {"provider": "q", "model": "y"}]},
        "w": {"strategy": "weighted", "targets": [{"provider": "p", "model": "x", "weight": 2}]},
    },
}


def edited(**paths: Any) -> dict[str, Any]:
    """GOOD with values set at dotted paths (``providers__p__kind="x"``); None as value deletes."""
    doc = copy.deepcopy(GOOD)
    for dotted, value in paths.items():
        *parents, last = dotted.split("__")
        node = doc
        for part in parents:
            node = node[int(part)] if isinstance(node, list) else node[part]
        if value is None:
            del node[last]
        else:
            node[last] = value
    return doc


@pytest.mark.parametrize(("name", "text"), shipped_documents(), ids=["example", "dev"])
def test_shipped_documents_validate(name: str, text: str) -> None:
    doc, revision = load_document(text)
    assert doc.version == 1
    assert revision == json.loads(text)["revision"]
    assert doc.models and doc.providers


def test_good_document_validates_and_normalises_base_url() -> None:
    doc, _ = load_document(json.dumps(GOOD))
    assert doc.providers["p"].base_url == "https://api.example.com/v1"
    assert doc.providers["p"].api_key is not None and doc.providers["p"].api_key.ssm == "/s/p"


def test_the_dev_document_needs_its_placeholder_filled() -> None:
    with pytest.raises(ValueError, match=r"providers\.mock\.base_url"):
        load_document(DEV.read_text())


@pytest.mark.parametrize(
    ("doc", "location", "words"),
    [
        pytest.param(
            edited(models__m__targets=[{"provider": "nowhere", "model": "x"}]),
            "(document)",
            ["'m'", "'nowhere'", "not in 'providers'"],
            id="unknown-provider-referenced",
        ),
        pytest.param(
            edited(providers__p__kind="telepathy"),
            "providers.p.kind",
            ["unknown provider kind", "'telepathy'", "openai"],
            id="unknown-kind",
        ),
        pytest.param(
            edited(providers__p__api_key={"ssm": "/a", "secretsmanager": "b"}),
            "providers.p.api_key",
            ["exactly one"],
            id="api-key-both-refs",
        ),
        pytest.param(
            edited(providers__p__api_key={}), "providers.p.api_key", ["exactly one"], id="api-key-no-ref"
        ),
        pytest.param(
            edited(providers__p__api_key={"value": "sk-live-123"}),
            "providers.p.api_key.value",
            ["Extra inputs"],
            id="api-key-literal",
        ),
        pytest.param(
            edited(providers__p__headers={"Authorization": "Bearer sk-123"}),
            "providers.p.headers",
            ["'Authorization'", "credential"],
            id="authorization-header",
        ),
        pytest.param(
            edited(providers__p__headers={"X-Api-Key": "k"}),
            "providers.p.headers",
            ["credential"],
            id="x-api-key-header",
        ),
        pytest.param(
            edited(models__m__fallback_on=["server", "client"]),
            "models.m.fallback_on",
            ["never fall back"],
            id="client-in-fallback-on",
        ),
        pytest.param(
            edited(models__m__fallback_on=["sometimes"]),
            "models.m.fallback_on.0",
            ["Input should be"],
            id="unknown-error-class",
        ),
        pytest.param(edited(version=2), "version", ["Input should be 1"], id="version-2"),
        pytest.param(edited(version=None), "version", ["Field required"], id="version-missing"),
        pytest.param(
            edited(routes={}), "routes", ["Extra inputs are not permitted"], id="extra-top-level-key"
        ),
        pytest.param(
            edited(models__m__targets__0__priority=1),
            "models.m.targets.0.priority",
            ["Extra inputs"],
            id="extra-nested-key",
        ),
        pytest.param(
            edited(
                models__w__targets=[
                    {"provider": "p", "model": "x", "weight": 0},
                    {"provider": "q", "model": "y", "weight": 0},
                ]
            ),
            "models.w",
            ["weight > 0"],
            id="weighted-all-zero",
        ),
        pytest.param(
            edited(models__w__targets__0__weight=-1),
            "models.w.targets.0.weight",
            ["greater than or equal to 0"],
            id="negative-weight",
        ),
        pytest.param(edited(models__m__targets=[]), "models.m.targets", ["at least 1"], id="no-targets"),
        pytest.param(
            edited(providers__p__base_url="ftp://files.example.com"),
            "providers.p.base_url",
            ["http(s) URL"],
            id="ftp-base-url",
        ),
        pytest.param(
            edited(providers__p__base_url="api.openai.com/v1"),
            "providers.p.base_url",
            ["http(s) URL"],
            id="schemeless-base-url",
        ),
        pytest.param(
            edited(providers__p__base_url="https:// spaced"),
            "providers.p.base_url",
            ["http(s) URL"],
            id="spaced-base-url",
        ),
        pytest.param(
            edited(models__m__retry={"attempts": 0}),
            "models.m.retry.attempts",
            ["greater than or equal to 1"],
            id="zero-attempts",
        ),
        pytest.param(
            edited(defaults={"timeouts": {"total_s": 0}}),
            "defaults.timeouts.total_s",
            ["greater than 0"],
            id="zero-timeout",
        ),
        pytest.param(
            edited(models__m__strategy="random"),
            "models.m.strategy",
            ["'fallback' or 'weighted'"],
            id="unknown-strategy",
        ),
        pytest.param(
            edited(models={"bad alias!": GOOD["models"]["m"]}),
            "models.bad alias!.[key]",
            ["pattern"],
            id="bad-alias",
        ),
        pytest.param(edited(revision="r" * 65), "revision", ["at most 64"], id="long-revision"),
    ],
)
def test_rejected_documents_name_the_problem(doc: dict[str, Any], location: str, words: list[str]) -> None:
    with pytest.raises(ValueError) as info:
        load_document(json.dumps(doc))
    text = str(info.value)
    assert text.startswith("invalid routing document:\n")
    assert f"  {location}: " in text, text
    for word in words:
        assert word in text, text


@pytest.mark.parametrize("raw", ["{not json", "", "[]", "null", '"a string"'])
def test_non_documents_are_rejected_readably(raw: str) -> None:
    with pytest.raises(ValueError, match=r"^invalid routing document:\n  \(document\): "):
        load_document(raw)


def test_every_problem_is_listed() -> None:
    doc = edited(version=3, providers__p__kind="nope", models__m__retry={"attempts": 99})
    with pytest.raises(ValueError) as info:
        load_document(json.dumps(doc))
    lines = str(info.value).splitlines()[1:]
    assert {line.split(":")[0].strip() for line in lines} >= {
        "version",
        "providers.p.kind",
        "models.m.retry.attempts",
    }


def test_revision_is_the_operator_label_when_given() -> None:
    _, revision = load_document(json.dumps(edited(revision="2026-11-25.3")))
    assert revision == "2026-11-25.3"


def test_revision_without_a_label_is_a_hash_of_the_content_not_the_formatting() -> None:
    text = json.dumps(GOOD)
    _, revision = load_document(text)
    canonical = json.dumps(GOOD, sort_keys=True, separators=(",", ":"))
    assert revision == hashlib.sha256(canonical.encode()).hexdigest()[:12]
    assert load_document(text.encode())[1] == revision  # bytes or str alike
    assert load_document(json.dumps(GOOD, indent=4, sort_keys=True))[1] == revision
    _, other = load_document(json.dumps(edited(models__m__targets=[{"provider": "p", "model": "z"}])))
    assert other != revision


def test_json_schema_is_valid_and_accepts_the_shipped_documents() -> None:
    schema = RoutingDocument.model_json_schema()
    Draft202012Validator.check_schema(schema)
    validator = Draft202012Validator(schema)
    for _name, text in shipped_documents():
        errors = [e.message for e in validator.iter_errors(json.loads(text))]
        assert errors == []
    assert list(validator.iter_errors(GOOD)) == []


@pytest.mark.parametrize(
    "doc",
    [
        edited(version=2),
        edited(routes={}),
        edited(models__m__strategy="random"),
        edited(models__m__fallback_on=["sometimes"]),
        edited(providers__p__api_key={"value": "sk-1"}),
        edited(models__m__targets=[]),
    ],
    ids=["version-2", "extra-key", "strategy", "error-class", "literal-key", "no-targets"],
)
def test_json_schema_rejects_what_the_loader_rejects_structurally(doc: dict[str, Any]) -> None:
    assert not Draft202012Validator(RoutingDocument.model_json_schema()).is_valid(doc)


class _OnlyKind:
    """A provider family for a registry of one: ``custom``, which fills no base_url."""

    default_base_url: str | None = "https://custom.example/v1"
    embeddings = False

    @classmethod
    def check_config(cls, config: Any) -> None:
        if config.model_extra:
            raise ValueError("custom takes no extra fields")


def test_the_provider_registry_comes_in_as_validation_context() -> None:
    """The document is checked against the registry it is given (routing imports no provider):
    a registry that knows only ``custom`` rejects ``openai`` and fills ``custom``'s base_url."""
    from switchboard.routing.document import ProviderRegistry

    only_custom = ProviderRegistry({"custom": _OnlyKind}, frozenset({"vllm"}))
    with pytest.raises(ValueError, match="unknown provider kind 'openai'; known: custom"):
        load_document(json.dumps(GOOD), only_custom)
    doc = {"version": 1, "providers": {"c": {"kind": "custom", "param_rules": "vllm"}}, "models": {}}
    loaded, _ = load_document(json.dumps(doc), only_custom)
    assert loaded.providers["c"].base_url == "https://custom.example/v1"
    with pytest.raises(ValueError, match="unknown provider kind 'custom'"):
        load_document(json.dumps(doc))  # the registered registry: upstream.providers' own


def test_without_a_registry_validation_says_so() -> None:
    """In a process that never imported the providers, validating without context fails loudly
    rather than passing an unchecked document."""
    import subprocess
    import sys

    code = (
        "import json, sys\n"
        "from switchboard.routing.document import load_document\n"
        f"load_document({json.dumps(json.dumps(GOOD))})\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
    assert "without a provider registry" in done.stderr
