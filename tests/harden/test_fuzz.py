"""Fuzzing: hypothesis over the bodies of /v1/chat/completions, /v1/messages and /v1/embeddings,
and over the routing document loader.

Bodies come from two strategies: near-valid ones (the right fields with wrong, odd or extreme
values, unknown fields, every role and content shape) and arbitrary JSON. Every answer must be
below 500, and every error must be in the endpoint's own shape: OpenAI's ``ErrorResponse`` (the
schema from the OpenAI spec) on the OpenAI endpoints, Anthropic's ``{"type": "error", ...}`` on
/v1/messages. The loader must either accept a document or raise ``ValueError`` whose message
names where the problem is.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from switchboard.routing.document import load_document

from tests.harden.conftest import FULL, Keyed, Outputs
from tests.harden.stage import Stage

# A failing example's repr can be large; the warning about it would hide the failure itself.
pytestmark = pytest.mark.filterwarnings("ignore::hypothesis.errors.HypothesisWarning")

EXAMPLES = 400 if FULL else 40
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    derandomize=not FULL,  # CI sees the same cases every run; the full form explores
)
ROOT = Path(__file__).resolve().parents[2]
_SPECS = [
    Path(os.environ.get("SWITCHBOARD_OPENAPI_SPEC", "/nonexistent")),
    ROOT.parent / "shared" / "specs" / "openai-openapi.json",
    ROOT / "tests" / "fixtures" / "openai-openapi-subset.json",
]


def _error_schema() -> dict[str, Any]:
    """OpenAI's ErrorResponse, with its ``$ref`` to Error resolved, from the first spec found."""
    spec = json.loads(next(path for path in _SPECS if path.is_file()).read_text())
    schemas = spec["components"]["schemas"]
    response = json.loads(json.dumps(schemas["ErrorResponse"]))
    response["properties"]["error"] = schemas["Error"]
    return response  # type: ignore[no-any-return]


ERROR_SCHEMA = _error_schema()

# --------------------------------------------------------------------- strategies

scalars = (
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text()
)
any_json = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=20,
)
odd_numbers = st.sampled_from([0, -1, 1, 2, 10**12, -(10**12), 0.5, 1e308, -0.0, "7", None, True])
models = (
    st.sampled_from(["ok", "embed", "nope", "", "ok ", "OK", "500:first"]) | st.text(max_size=20) | scalars
)
roles = st.sampled_from(["user", "system", "assistant", "tool", "developer", "function", "", "robot"])
text_part = st.fixed_dictionaries({"type": st.just("text"), "text": st.text(max_size=40) | scalars})
image_part = st.fixed_dictionaries(
    {
        "type": st.just("image_url"),
        "image_url": st.fixed_dictionaries({"url": st.text(max_size=30)}) | scalars,
    }
)
parts = st.lists(text_part | image_part | any_json, max_size=3)
content = st.text(max_size=60) | parts | scalars
message = st.fixed_dictionaries(
    {"role": roles | scalars, "content": content},
    optional={
        "name": st.text(max_size=10) | scalars,
        "tool_call_id": st.text(max_size=10),
        "extra": any_json,
    },
)
tools = st.lists(
    st.fixed_dictionaries(
        {
            "type": st.sampled_from(["function", "web", ""]),
            "function": any_json | st.fixed_dictionaries({"name": st.text(max_size=10)}),
        }
    ),
    max_size=2,
)
chat_bodies = st.fixed_dictionaries(
    {"model": models, "messages": st.lists(message, max_size=4) | any_json},
    optional={
        "stream": st.booleans() | scalars,
        "max_tokens": odd_numbers,
        "max_completion_tokens": odd_numbers,
        "temperature": odd_numbers,
        "n": odd_numbers,
        "stop": st.text(max_size=5) | st.lists(st.text(max_size=5), max_size=5) | scalars,
        "tools": tools | any_json,
        "tool_choice": st.sampled_from(["auto", "none", "required"]) | any_json,
        "response_format": st.fixed_dictionaries(
            {"type": st.sampled_from(["json_object", "json_schema", "text", "x"])}
        )
        | any_json,
        "stream_options": st.fixed_dictionaries({"include_usage": st.booleans() | scalars}) | any_json,
        "user": st.text(max_size=10) | scalars,
        "unknown_field": any_json,
    },
)
anthropic_block = st.fixed_dictionaries(
    {
        "type": st.sampled_from(["text", "image", "tool_use", "tool_result", "?"]),
        "text": st.text(max_size=20) | scalars,
    }
)
messages_bodies = st.fixed_dictionaries(
    {
        "model": models,
        "max_tokens": odd_numbers,
        "messages": st.lists(
            st.fixed_dictionaries(
                {
                    "role": st.sampled_from(["user", "assistant", "system", "x"]) | scalars,
                    "content": st.text(max_size=40)
                    | st.lists(anthropic_block | any_json, max_size=3)
                    | scalars,
                }
            ),
            max_size=4,
        )
        | any_json,
    },
    optional={
        "system": st.text(max_size=20) | st.lists(anthropic_block, max_size=2) | scalars,
        "stream": st.booleans() | scalars,
        "stop_sequences": st.lists(st.text(max_size=5), max_size=3) | scalars,
        "temperature": odd_numbers,
        "tools": any_json,
        "tool_choice": any_json,
        "metadata": any_json,
        "thinking": any_json,
    },
)
embedding_bodies = st.fixed_dictionaries(
    {
        "model": models,
        "input": st.text(max_size=40)
        | st.lists(st.text(max_size=20), max_size=4)
        | st.lists(st.lists(st.integers(), max_size=4), max_size=3)
        | any_json,
    },
    optional={
        "encoding_format": st.sampled_from(["float", "base64", "int8", ""]) | scalars,
        "dimensions": odd_numbers,
        "user": st.text(max_size=10) | scalars,
    },
)


def bodies(structured: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return structured | any_json


# --------------------------------------------------------------------- checks


def _post(stage: Stage, client: Keyed, outputs: Outputs, path: str, body: Any) -> httpx.Response:
    headers = {
        "authorization": f"Bearer {client.secret}",
        "x-api-key": client.secret,
        "anthropic-version": "2023-06-01",
        "x-switchboard-timeout": "10",
    }
    with httpx.Client(timeout=30) as http:
        response = http.post(stage.v1 + path, content=json.dumps(body), headers=headers)
    outputs.response(response.status_code, response.headers, response.content)
    outputs.load(f"fuzz {path}", 1, 1, response.elapsed.total_seconds())
    outputs.load("fuzz, all endpoints", 1, 1, response.elapsed.total_seconds())
    return response


def check_openai(response: httpx.Response, outputs: Outputs) -> None:
    assert response.status_code < 500, response.text
    if response.status_code >= 400:
        try:
            jsonschema.validate(response.json(), ERROR_SCHEMA)
        except (ValueError, jsonschema.ValidationError):
            outputs.count("unclean_errors")
            raise


def check_anthropic(response: httpx.Response, outputs: Outputs) -> None:
    assert response.status_code < 500, response.text
    if response.status_code >= 400:
        body = response.json()
        ok = (
            body.get("type") == "error"
            and isinstance(body.get("error"), dict)
            and isinstance(body["error"].get("type"), str)
            and isinstance(body["error"].get("message"), str)
        )
        if not ok:
            outputs.count("unclean_errors")
        assert ok, response.text


@FUZZ
@given(body=bodies(chat_bodies))
def test_chat_bodies_never_answer_5xx(stage: Stage, client: Keyed, outputs: Outputs, body: Any) -> None:
    check_openai(_post(stage, client, outputs, "/chat/completions", body), outputs)


@FUZZ
@given(body=bodies(messages_bodies))
def test_messages_bodies_never_answer_5xx(stage: Stage, client: Keyed, outputs: Outputs, body: Any) -> None:
    check_anthropic(_post(stage, client, outputs, "/messages", body), outputs)


@FUZZ
@given(body=bodies(embedding_bodies))
def test_embeddings_bodies_never_answer_5xx(stage: Stage, client: Keyed, outputs: Outputs, body: Any) -> None:
    check_openai(_post(stage, client, outputs, "/embeddings", body), outputs)


@pytest.mark.parametrize(
    "path",
    [
        pytest.param("/chat/completions", id="chat"),
        pytest.param("/messages", id="messages"),
        pytest.param("/embeddings", id="embeddings"),
    ],
)
@pytest.mark.parametrize("depth", [100, 5_000, 100_000])
def test_deeply_nested_json_is_a_clean_400(
    stage: Stage, client: Keyed, outputs: Outputs, path: str, depth: int
) -> None:
    raw = "[" * depth + "]" * depth
    headers = {
        "authorization": f"Bearer {client.secret}",
        "x-api-key": client.secret,
        "anthropic-version": "2023-06-01",
    }
    for body in (raw, '{"model": "ok", "messages": ' + raw + "}"):
        with httpx.Client(timeout=30) as http:
            response = http.post(stage.v1 + path, content=body, headers=headers)
        outputs.response(response.status_code, response.headers, response.content)
        assert response.status_code == 400, response.text
        (check_anthropic if path == "/messages" else check_openai)(response, outputs)


@pytest.mark.parametrize("path", ["/chat/completions", "/messages", "/embeddings"])
@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"not json",
        b"\xff\xfe\x00",
        b'{"model": "ok", "messages": [',
        b"null",
        b"[]",
        b'"text"',
        b"1e999999",
    ],
    ids=["empty", "text", "binary", "cut", "null", "list", "string", "huge-number"],
)
def test_bodies_that_are_not_an_object_are_a_clean_400(
    stage: Stage, client: Keyed, outputs: Outputs, path: str, raw: bytes
) -> None:
    headers = {
        "authorization": f"Bearer {client.secret}",
        "x-api-key": client.secret,
        "anthropic-version": "2023-06-01",
    }
    with httpx.Client(timeout=30) as http:
        response = http.post(stage.v1 + path, content=raw, headers=headers)
    outputs.response(response.status_code, response.headers, response.content)
    assert response.status_code == 400, response.text
    (check_anthropic if path == "/messages" else check_openai)(response, outputs)


# --------------------------------------------------------------------- the routing document loader

provider = st.fixed_dictionaries(
    {"kind": st.sampled_from(["openai", "anthropic", "bedrock", "gemini", "azure", "?"]) | scalars},
    optional={
        "base_url": st.sampled_from(["https://api.example.com/v1", "ftp://x", ""]) | scalars,
        "api_key": st.fixed_dictionaries(
            {}, optional={"ssm": st.text(max_size=10), "secretsmanager": st.text(max_size=10)}
        )
        | scalars,
        "headers": any_json,
    },
)
target = st.fixed_dictionaries(
    {"provider": st.sampled_from(["a", "b", "missing"]) | scalars, "model": st.text(max_size=10) | scalars},
    optional={"weight": odd_numbers, "timeouts": any_json, "dimensions": odd_numbers},
)
route = st.fixed_dictionaries(
    {"targets": st.lists(target, max_size=3) | scalars},
    optional={
        "mode": st.sampled_from(["chat", "embeddings", "x"]),
        "strategy": st.sampled_from(["fallback", "weighted", "x"]) | scalars,
        "retry": any_json,
        "fallback_on": st.lists(
            st.sampled_from(["rate_limit", "server", "timeout", "client", "x"]), max_size=3
        )
        | scalars,
    },
)
documents = st.fixed_dictionaries(
    {
        "version": st.sampled_from([1, 2, "1", None]),
        "providers": st.dictionaries(st.sampled_from(["a", "b", "", "a b"]), provider, max_size=2) | scalars,
        "models": st.dictionaries(st.sampled_from(["m", "n", "", "bad name!"]), route, max_size=2) | scalars,
    },
    optional={
        "rules": any_json,
        "prices": any_json,
        "defaults": any_json,
        "revision": scalars,
        "extra": any_json,
    },
)


@FUZZ
@given(doc=documents | any_json)
def test_routing_document_validates_or_names_the_path(doc: Any) -> None:
    try:
        loaded, revision = load_document(json.dumps(doc))
    except ValueError as exc:
        message = str(exc)
        assert message.startswith("invalid routing document:\n"), message
        problems = message.splitlines()[1:]
        assert problems, message
        for line in problems:
            # "  <path>: <why>"; the path is "(document)" at the top, and may be a blank key itself
            where, sep, why = line.removeprefix("  ").partition(": ")
            assert line.startswith("  ") and sep and where and why, line
        return
    assert isinstance(revision, str) and revision
    assert loaded.version == 1


@FUZZ
@given(raw=st.binary(max_size=64) | st.text(max_size=64))
def test_routing_document_that_is_not_json_is_rejected_cleanly(raw: bytes | str) -> None:
    try:
        load_document(raw)
    except ValueError as exc:
        assert str(exc).startswith("invalid routing document:\n")


@pytest.mark.parametrize("key", ["", " ", "\r", "a\nb", "\x00"])
def test_a_blank_or_unprintable_key_is_named_on_one_line(key: str) -> None:
    """Found by the fuzzer: an extra key "\\r" split its problem over two lines, naming no path."""
    with pytest.raises(ValueError) as caught:
        load_document(json.dumps({"version": 1, "providers": {}, "models": {}, key: 1}))
    [problem] = str(caught.value).splitlines()[1:]
    assert problem == f"  {json.dumps(key)}: Extra inputs are not permitted"


@pytest.mark.parametrize(
    "messages",
    [
        [{"role": "user", "content": True}],
        [{"role": "user", "content": [1]}],
        [{"role": "user", "content": 5}],
        [{"role": "assistant", "content": {"type": "text"}}, {"role": "user", "content": "hi"}],
        [{"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t", "content": 7}]}],
        [{"role": "user", "content": [{"type": "image", "source": "http://x"}]}],
        [{"role": "user", "content": []}],
    ],
    ids=[
        "bool",
        "list-of-int",
        "int",
        "assistant-object",
        "tool-result-int",
        "image-source-string",
        "no-turn",
    ],
)
def test_messages_content_of_the_wrong_type_is_a_clean_400(
    stage: Stage, client: Keyed, outputs: Outputs, messages: list[Any]
) -> None:
    """Found by the fuzzer: a message whose content is ``true`` answered 500 (TypeError), and so
    did a request whose only turn is empty (no chat message at all: a ValidationError)."""
    response = _post(
        stage, client, outputs, "/messages", {"model": "ok", "max_tokens": 8, "messages": messages}
    )
    assert response.status_code == 400, response.text
    check_anthropic(response, outputs)
