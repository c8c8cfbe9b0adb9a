"""/v1/completions bodies, streamed chunks and errors against OpenAI's spec
(``CreateCompletionRequest``, ``CreateCompletionResponse``, ``ErrorResponse``).

One allowance, as for chat: a streamed chunk's ``finish_reason`` is null until the last one (OpenAI
sends null; the spec describes the streamed and the whole object with one schema that has no null).
"""

from __future__ import annotations

import copy
import json
from typing import Any

import httpx
import pytest

from tests.contract.test_openapi_contract import (  # noqa: F401
    SPEC_PATH,
    assert_conforms,
    client,
    gw,
    violations,
)

pytestmark = pytest.mark.skipif(not SPEC_PATH.is_file(), reason="OpenAI OpenAPI spec not found")

BODIES: list[dict[str, Any]] = [
    {"model": "echo", "prompt": "what is the weather in Paris"},
    {"model": "echo", "prompt": ["one", "two"], "max_tokens": 3, "n": 2, "stop": ["x"]},
    {"model": "echo", "prompt": [1, 2, 3], "echo": False, "temperature": 0.2, "user": "u"},
]


@pytest.mark.parametrize("body", BODIES)
def test_the_request_and_the_answer_conform(client: httpx.Client, body: dict[str, Any]) -> None:  # noqa: F811
    assert_conforms("CreateCompletionRequest", body)
    response = client.post("/completions", json=body)
    assert response.status_code == 200, response.text
    assert_conforms("CreateCompletionResponse", response.json())


def _chunk_with_null_finish(chunk: dict[str, Any]) -> dict[str, Any]:
    """The chunk as the spec's schema can check it: a null ``finish_reason`` (not yet finished)
    stands in as ``stop``; every other field is checked as sent."""
    checked = copy.deepcopy(chunk)
    for choice in checked.get("choices", []):
        if choice.get("finish_reason", "") is None:
            choice["finish_reason"] = "stop"
    return checked


@pytest.mark.parametrize("usage", [False, True])
def test_every_streamed_chunk_conforms(client: httpx.Client, usage: bool) -> None:  # noqa: F811
    body: dict[str, Any] = {"model": "echo", "prompt": "a b c", "stream": True}
    if usage:
        body["stream_options"] = {"include_usage": True}
    assert_conforms("CreateCompletionRequest", body)
    with client.stream("POST", "/completions", json=body) as response:
        assert response.status_code == 200
        lines = [line for line in response.iter_lines() if line.startswith("data: ")]
    assert lines[-1] == "data: [DONE]"
    chunks = [json.loads(line[6:]) for line in lines[:-1]]
    for chunk in chunks:
        assert_conforms("CreateCompletionResponse", _chunk_with_null_finish(chunk))
    assert ("usage" in chunks[-1]) is usage


def test_the_allowance_is_narrow() -> None:
    chunk = {"id": "c", "object": "text_completion", "created": 1, "model": "m", "choices": []}
    chunk["choices"] = [{"text": "x", "index": 0, "logprobs": None, "finish_reason": "done"}]
    assert violations("CreateCompletionResponse", _chunk_with_null_finish(chunk))


@pytest.mark.parametrize(
    "body",
    [
        {"prompt": "no model"},
        {"model": "echo", "prompt": "x", "n": 0},
        {"model": "nope", "prompt": "x"},
    ],
)
def test_errors_conform(client: httpx.Client, body: dict[str, Any]) -> None:  # noqa: F811
    response = client.post("/completions", json=body)
    assert response.status_code in (400, 404)
    assert_conforms("ErrorResponse", response.json())
