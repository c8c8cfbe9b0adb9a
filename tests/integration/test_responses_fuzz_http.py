"""Odd /v1/responses bodies are answered cleanly: a 200 or a 4xx in OpenAI's error shape, never a
5xx; the converter raises nothing but ``Unconvertible``."""

from __future__ import annotations

import contextlib
import json
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from switchboard.core.settings import Settings
from switchboard.devtools.devstack import seed_aws
from switchboard.devtools.mockupstream import MockUpstream
from switchboard.http.app import create_app
from switchboard.http.endpoints.responses_format import ResponsesRequest, Unconvertible, input_items, to_chat
from switchboard.wiring import Gateway

from tests.conftest import API_KEY, routing_doc, serve_app

scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8)
any_json = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=12,
)
part = st.fixed_dictionaries(
    {"type": st.sampled_from(["input_text", "output_text", "input_image", "input_file", "refusal", "?"])},
    optional={"text": st.text(max_size=10) | scalars, "image_url": st.text(max_size=10) | scalars},
)
member = st.fixed_dictionaries(
    {"type": st.sampled_from(["function", "custom", "web_search", "?"]) | scalars},
    optional={"name": st.text(max_size=6) | scalars, "format": any_json, "description": scalars},
)
tool = st.fixed_dictionaries(
    {"type": st.sampled_from(["function", "custom", "namespace", "web_search", "?"]) | scalars},
    optional={
        "name": st.text(max_size=6) | scalars,
        "parameters": any_json,
        "tools": st.lists(member, max_size=2) | any_json,
        "format": any_json,
    },
)
item = st.fixed_dictionaries(
    {},
    optional={
        "type": st.sampled_from(
            [
                "message",
                "function_call",
                "function_call_output",
                "custom_tool_call",
                "custom_tool_call_output",
                "additional_tools",
                "reasoning",
                "web_search_call",
                "?",
            ]
        )
        | scalars,
        "role": st.sampled_from(["user", "assistant", "system", "developer", "tool"]) | scalars,
        "content": st.text(max_size=10) | st.lists(part | any_json, max_size=3) | scalars,
        "call_id": st.text(max_size=6) | scalars,
        "name": st.text(max_size=6) | scalars,
        "arguments": st.text(max_size=10) | scalars | any_json,
        "output": st.text(max_size=10) | st.lists(part, max_size=2) | scalars,
        "namespace": st.text(max_size=6) | scalars,
        "input": st.text(max_size=10) | scalars,
        "tools": st.lists(tool, max_size=2) | any_json,
        "summary": st.lists(part | any_json, max_size=2) | scalars,
    },
)
bodies = st.fixed_dictionaries(
    {"model": st.sampled_from(["echo", "pass", "nope"]) | scalars},
    optional={
        "input": st.text(max_size=20) | st.lists(item | any_json, max_size=4) | scalars,
        "instructions": st.text(max_size=10) | scalars,
        "tools": st.lists(tool, max_size=2) | any_json,
        "tool_choice": st.sampled_from(["auto", "none", "required"]) | any_json,
        "text": st.fixed_dictionaries(
            {
                "format": st.fixed_dictionaries(
                    {"type": st.sampled_from(["text", "json_schema", "json_object", "x"])}
                )
                | any_json
            }
        )
        | any_json,
        "max_output_tokens": st.integers(-2, 10) | scalars,
        "temperature": scalars,
        "reasoning": any_json,
        "metadata": any_json,
        "store": st.booleans() | scalars,
        "stream": st.booleans() | scalars,
        "previous_response_id": st.text(max_size=8) | scalars,
        "background": any_json,
    },
)


@pytest.fixture(scope="module")
def base(aws: str, mock: MockUpstream) -> Iterator[str]:
    suffix = uuid.uuid4().hex[:10]
    config = Settings.from_env({}, routing_param=f"/switchboard-test/{suffix}/routing")
    doc = routing_doc(mock.base_url, {"echo": {"targets": [{"provider": "mock", "model": "echo"}]}})
    doc["models"]["pass"] = {"targets": [{"provider": "oai", "model": "echo"}]}
    doc["providers"]["oai"] = {**doc["providers"]["mock"], "responses": True}
    seed_aws(config, json.dumps(doc), API_KEY, {})
    url, stop = serve_app(create_app(Gateway.from_env(config)))
    yield url + "/v1"
    stop()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=bodies | any_json)
def test_odd_bodies_never_answer_5xx(base: str, body: Any) -> None:
    headers = {"authorization": f"Bearer {API_KEY}"}
    response = httpx.post(base + "/responses", content=json.dumps(body), headers=headers, timeout=30)
    assert response.status_code < 500, response.text
    if response.status_code >= 400:
        error = response.json()["error"]
        assert isinstance(error["message"], str) and set(error) == {"message", "type", "param", "code"}


@settings(max_examples=300, deadline=None)
@given(body=bodies)
def test_the_converter_raises_only_unconvertible(body: dict[str, Any]) -> None:
    try:
        request = ResponsesRequest.model_validate({**body, "model": "m"})
    except ValueError:
        return
    with contextlib.suppress(Unconvertible):
        to_chat(request, input_items(request.input), stream=bool(request.stream))
