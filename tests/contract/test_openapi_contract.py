"""What the gateway sends to clients, validated against OpenAI's own OpenAPI description.

Every body and every streamed chunk is checked with Draft 2020-12 against
``#/components/schemas/<Name>`` of the spec, resolved through a ``referencing.Registry`` that holds
the whole document. The spec file is ``../shared/specs/openai-openapi.json`` from the repository
root, or the path in ``SWITCHBOARD_OPENAPI_SPEC``.
"""

from __future__ import annotations

import copy
import json
import os
import uuid
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import httpx
import pytest
from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012
from switchboard.core.settings import Settings
from switchboard.devtools.devstack import seed_aws
from switchboard.devtools.mockupstream import MockUpstream
from switchboard.http.app import create_app
from switchboard.wiring import Gateway

from tests.conftest import API_KEY, RunningGateway, routing_doc, serve_app

ROOT = Path(__file__).resolve().parents[2]
SPEC_PATH = Path(
    os.environ.get("SWITCHBOARD_OPENAPI_SPEC") or ROOT.parent / "shared" / "specs" / "openai-openapi.json"
)
SPEC_URI = "https://spec.openai.test/openapi.json"

pytestmark = pytest.mark.skipif(
    not SPEC_PATH.is_file(),
    reason=f"OpenAI OpenAPI spec not found at {SPEC_PATH} (set SWITCHBOARD_OPENAPI_SPEC to its path)",
)

MAX_BODY = 16 * 1024


# --------------------------------------------------------------------------- the spec as a validator


def _nullable_to_2020(node: Any) -> Any:
    """OpenAI's 3.1 spec still carries OpenAPI 3.0's ``nullable: true`` in places; JSON Schema
    ignores that keyword, so a null there would be rejected although the spec means to allow it.
    Rewrite each such schema as ``anyOf: [<schema>, {"type": "null"}]``."""
    if isinstance(node, list):
        return [_nullable_to_2020(item) for item in node]
    if not isinstance(node, dict):
        return node
    node = {key: _nullable_to_2020(value) for key, value in node.items()}
    if node.pop("nullable", False) is True:
        return {"anyOf": [node, {"type": "null"}]}
    return node


# Where the spec is stricter than OpenAI's API and SDK: (schema, property) that may also be null.
# ``system_fingerprint`` is typed ``str`` in the spec, but OpenAI and compatible servers send null
# and the official SDKs type it ``Optional[str]``. The gateway forwards upstream bytes untouched.
NULL_ALSO_ALLOWED = [
    ("CreateChatCompletionResponse", "system_fingerprint"),
    ("CreateChatCompletionStreamResponse", "system_fingerprint"),
]


@cache
def _registry() -> Registry:
    spec = _nullable_to_2020(json.loads(SPEC_PATH.read_text()))
    for schema, prop in NULL_ALSO_ALLOWED:
        properties = spec["components"]["schemas"][schema]["properties"]
        properties[prop] = {"anyOf": [properties[prop], {"type": "null"}]}
    assert str(spec["openapi"]).startswith("3.1")
    return Registry().with_resource(SPEC_URI, Resource.from_contents(spec, default_specification=DRAFT202012))


@cache
def validator(name: str) -> Draft202012Validator:
    return Draft202012Validator({"$ref": f"{SPEC_URI}#/components/schemas/{name}"}, registry=_registry())


def violations(name: str, instance: Any) -> list[str]:
    return [
        f"{'/'.join(map(str, error.absolute_path)) or '(root)'}: {error.message}"
        for error in validator(name).iter_errors(instance)
    ]


def assert_conforms(name: str, instance: Any) -> None:
    problems = violations(name, instance)
    assert not problems, f"{name} violated:\n  " + "\n  ".join(problems) + f"\n{json.dumps(instance)[:2000]}"


def test_the_validator_accepts_the_spec_examples_and_rejects_broken_shapes() -> None:
    """The validator must not be vacuous: OpenAI's own examples pass, mangled copies fail."""
    example_chunk = {
        "id": "chatcmpl-123",
        "object": "chat.completion.chunk",
        "created": 1694268190,
        "model": "gpt-4o-mini",
        "system_fingerprint": "fp_44709d6fcb",
        "choices": [
            {
                "index": 0,
                "delta": {"role": "assistant", "content": ""},
                "logprobs": None,
                "finish_reason": None,
            }
        ],
    }
    assert_conforms("CreateChatCompletionStreamResponse", example_chunk)
    for mutate in (
        lambda c: c.pop("created"),
        lambda c: c.update(object="chat.completion"),
        lambda c: c["choices"][0].update(finish_reason="done"),
        lambda c: c["choices"][0].pop("delta"),
    ):
        broken = copy.deepcopy(example_chunk)
        mutate(broken)
        assert violations("CreateChatCompletionStreamResponse", broken)
    assert_conforms("ErrorResponse", {"error": {"message": "m", "type": "t", "param": None, "code": None}})
    assert violations(
        "ErrorResponse", {"error": {"message": "m", "type": "t"}}
    )  # param and code are required
    assert violations("Model", {"id": "x", "object": "model"})


# --------------------------------------------------------------------------- one gateway for the module

SLOW = {"connect_s": 1, "first_token_s": 1, "total_s": 0.2}
MODELS: dict[str, Any] = {
    "echo": {"targets": [{"provider": "mock", "model": "echo"}]},
    "tools": {"targets": [{"provider": "mock", "model": "tools"}]},
    "all-fail": {
        "targets": [{"provider": "mock", "model": "fail-500"}, {"provider": "backup", "model": "fail-503"}],
        "retry": {"attempts": 1},
    },
    "rate-limited": {
        "targets": [{"provider": "mock", "model": "fail-429+retry-after-1"}],
        "retry": {"attempts": 1},
    },
    "too-slow": {
        "targets": [{"provider": "mock", "model": "slow-2", "timeouts": SLOW}],
        "retry": {"attempts": 1},
    },
    "rejects": {"targets": [{"provider": "mock", "model": "fail-400"}]},
    "ctx": {"targets": [{"provider": "mock", "model": "fail-400ctx"}]},
    "policy": {"targets": [{"provider": "mock", "model": "fail-400policy"}]},
    "bad-key": {"targets": [{"provider": "mock", "model": "fail-401"}]},
    "breaks": {"targets": [{"provider": "mock", "model": "break-2+chunks-5"}]},
}


@pytest.fixture(scope="module")
def gw(aws: str, mock: MockUpstream) -> Iterator[RunningGateway]:
    """Like ``gateway_factory``, but one gateway serves the whole module."""
    suffix = uuid.uuid4().hex[:10]
    settings = Settings.from_env(
        {},
        routing_param=f"/switchboard-test/{suffix}/routing",
        max_body_bytes=MAX_BODY,
    )
    seed_aws(settings, json.dumps(routing_doc(mock.base_url, MODELS)), API_KEY, {})
    gateway = Gateway.from_env(settings)
    url, stop = serve_app(create_app(gateway))
    yield RunningGateway(url, settings, API_KEY, gateway, stop)
    stop()


@pytest.fixture(scope="module")
def client(gw: RunningGateway) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=gw.v1, headers=gw.headers(), timeout=30) as c:
        yield c


def chat(**body: Any) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": "what is the weather in Paris"}], **body}


def stream_chunks(client: httpx.Client, body: dict[str, Any]) -> tuple[list[Any], list[str]]:
    """The JSON payloads of a stream's ``data:`` events, and its raw data lines."""
    with client.stream("POST", "/chat/completions", json=body) as response:
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in response.iter_lines() if line.startswith("data:")]
    payloads = [json.loads(line[5:]) for line in lines if line != "data: [DONE]"]
    return payloads, lines


# --------------------------------------------------------------------------- successful responses


def test_list_models(client: httpx.Client) -> None:
    response = client.get("/models")
    assert response.status_code == 200
    body = response.json()
    assert_conforms("ListModelsResponse", body)
    assert sorted(m["id"] for m in body["data"]) == sorted(MODELS)
    for model in body["data"]:
        assert_conforms("Model", model)


def test_retrieve_model(client: httpx.Client) -> None:
    response = client.get("/models/echo")
    assert response.status_code == 200
    assert_conforms("Model", response.json())
    assert response.json()["id"] == "echo"


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(chat(model="echo"), id="plain"),
        pytest.param(
            chat(
                model="tools",
                tools=[
                    {
                        "type": "function",
                        "function": {"name": "get_weather", "parameters": {"type": "object"}},
                    }
                ],
                tool_choice="auto",
            ),
            id="tools",
        ),
        pytest.param(chat(model="echo", n=2), id="n-2"),
        pytest.param(chat(model="echo", response_format={"type": "json_object"}), id="json-mode"),
        pytest.param(chat(model="echo", max_tokens=2), id="length-cut"),
        pytest.param(chat(model="echo", stop=["Paris"], temperature=0.2, seed=7), id="stop"),
    ],
)
def test_non_streaming_completion(client: httpx.Client, mock: MockUpstream, body: dict[str, Any]) -> None:
    response = client.post("/chat/completions", json=body)
    assert response.status_code == 200, response.text
    completion = response.json()
    assert_conforms("CreateChatCompletionResponse", completion)
    assert len(completion["choices"]) == body.get("n", 1)
    # and what the gateway forwarded upstream is itself a valid OpenAI request
    assert_conforms("CreateChatCompletionRequest", mock.requests[-1]["json"])


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(chat(model="echo", stream=True), id="plain"),
        pytest.param(
            chat(model="echo", stream=True, stream_options={"include_usage": True}), id="include-usage"
        ),
        pytest.param(
            chat(model="echo", stream=True, n=2, stream_options={"include_usage": True}), id="n-2-usage"
        ),
        pytest.param(
            chat(
                model="tools",
                stream=True,
                tools=[
                    {
                        "type": "function",
                        "function": {"name": "get_weather", "parameters": {"type": "object"}},
                    }
                ],
            ),
            id="tools",
        ),
    ],
)
def test_every_streamed_chunk(client: httpx.Client, mock: MockUpstream, body: dict[str, Any]) -> None:
    chunks, lines = stream_chunks(client, body)
    assert lines[-1] == "data: [DONE]"
    assert len(chunks) >= 3
    for chunk in chunks:
        assert_conforms("CreateChatCompletionStreamResponse", chunk)
    if body.get("stream_options", {}).get("include_usage"):
        assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["total_tokens"] > 0
    assert_conforms("CreateChatCompletionRequest", mock.requests[-1]["json"])


# --------------------------------------------------------------------------- errors


def test_mid_stream_error_event_is_an_error_response(client: httpx.Client) -> None:
    chunks, lines = stream_chunks(client, chat(model="breaks", stream=True))
    assert "data: [DONE]" not in lines
    *content, error = chunks
    assert content and all(not violations("CreateChatCompletionStreamResponse", c) for c in content)
    assert_conforms("ErrorResponse", error)
    assert error["error"]["code"] == "stream_interrupted"


def _oversized() -> bytes:
    return json.dumps(
        chat(model="echo", messages=[{"role": "user", "content": "x" * (MAX_BODY + 1)}])
    ).encode()


@pytest.mark.parametrize(
    ("method", "path", "content", "headers", "status", "code"),
    [
        pytest.param("POST", "/chat/completions", b"{not json", None, 400, "invalid_json", id="400-bad-json"),
        pytest.param("POST", "/chat/completions", b"[]", None, 400, "invalid_json", id="400-not-an-object"),
        pytest.param(
            "POST",
            "/chat/completions",
            json.dumps({"model": "echo"}).encode(),
            None,
            400,
            "invalid_value",
            id="400-invalid",
        ),
        pytest.param(
            "GET",
            "/models",
            None,
            {"authorization": "Bearer sk-wrong"},
            401,
            "invalid_api_key",
            id="401-wrong-key",
        ),
        pytest.param("GET", "/models", None, {"authorization": ""}, 401, "missing_api_key", id="401-no-key"),
        pytest.param(
            "POST",
            "/chat/completions",
            json.dumps(chat(model="nope")).encode(),
            None,
            404,
            "model_not_found",
            id="404-model",
        ),
        pytest.param("GET", "/models/nope", None, None, 404, "model_not_found", id="404-retrieve"),
        pytest.param("GET", "/no/such/path", None, None, 404, None, id="404-path"),
        pytest.param("GET", "/chat/completions", None, None, 405, None, id="405"),
        pytest.param("POST", "/chat/completions", _oversized(), None, 413, "payload_too_large", id="413"),
        pytest.param(
            "POST",
            "/chat/completions",
            json.dumps(chat(model="all-fail")).encode(),
            None,
            502,
            "all_targets_failed",
            id="502",
        ),
        pytest.param(
            "POST",
            "/chat/completions",
            json.dumps(chat(model="all-fail", stream=True)).encode(),
            None,
            502,
            "all_targets_failed",
            id="502-stream",
        ),
        pytest.param(
            "POST",
            "/chat/completions",
            json.dumps(chat(model="rate-limited")).encode(),
            None,
            429,  # every target rate limited: the SDKs' RateLimitError, Retry-After at the soonest reset
            "all_targets_failed",
            id="429-all-rate-limited",
        ),
        pytest.param(
            "POST",
            "/chat/completions",
            json.dumps(chat(model="too-slow")).encode(),
            None,
            504,
            "all_targets_failed",
            id="504",
        ),
        pytest.param(
            "POST",
            "/chat/completions",
            json.dumps(chat(model="bad-key")).encode(),
            None,
            502,
            "upstream_auth_failed",
            id="502-auth",
        ),
        pytest.param(
            "POST",
            "/chat/completions",
            json.dumps(chat(model="rejects")).encode(),
            None,
            400,
            None,
            id="400-upstream",
        ),
        pytest.param(
            "POST",
            "/chat/completions",
            json.dumps(chat(model="ctx")).encode(),
            None,
            400,
            "context_length_exceeded",
            id="400-ctx",
        ),
        pytest.param(
            "POST",
            "/chat/completions",
            json.dumps(chat(model="policy")).encode(),
            None,
            400,
            "content_filter",
            id="400-policy",
        ),
    ],
)
def test_every_error_body(
    client: httpx.Client,
    method: str,
    path: str,
    content: bytes | None,
    headers: dict[str, str] | None,
    status: int,
    code: str | None,
) -> None:
    response = client.request(
        method, path, content=content, headers={"content-type": "application/json", **(headers or {})}
    )
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert_conforms("ErrorResponse", body)
    assert body["error"]["code"] == code
    assert response.headers["x-request-id"].startswith("req_")
