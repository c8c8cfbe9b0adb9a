"""``core.schemas``: the request models' own checks and the properties the gateway reads.

What the gateway sends back is checked against OpenAI's published spec in
``tests/contract/test_openapi_contract.py``."""

from __future__ import annotations

import pytest
from pydantic import ValidationError
from switchboard.core.schemas import ChatCompletionRequest, EmbeddingRequest

MSG = [{"role": "user", "content": "hi"}]


def test_unknown_fields_are_kept_for_the_upstream() -> None:
    chat = ChatCompletionRequest.model_validate({"model": "m", "messages": MSG, "seed": 7})
    assert chat.model_dump(exclude_none=True)["seed"] == 7


def test_the_output_cap_prefers_max_completion_tokens() -> None:
    assert ChatCompletionRequest(model="m", messages=MSG, max_tokens=9).output_cap == 9
    both = ChatCompletionRequest(model="m", messages=MSG, max_tokens=9, max_completion_tokens=3)
    assert both.output_cap == 3


def test_input_modalities_and_json_mode() -> None:
    parts = [{"type": "text", "text": "x"}, {"type": "image_url", "image_url": {"url": "data:"}}]
    chat = ChatCompletionRequest.model_validate(
        {
            "model": "m",
            "messages": [{"role": "user", "content": parts}],
            "response_format": {"type": "json_object"},
        }
    )
    assert chat.input_modalities() == {"text", "image"} and chat.wants_json


@pytest.mark.parametrize(
    "body",
    [
        {"model": "m", "messages": []},
        {"model": "", "messages": MSG},
        {"model": "m", "messages": MSG, "stop": ["a", "b", "c", "d", "e"]},
        {"model": "m", "messages": MSG, "n": 0},
        {"model": "m", "messages": [{"role": "robot", "content": "x"}]},
    ],
)
def test_invalid_chat_requests_are_refused(body: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        ChatCompletionRequest.model_validate(body)


def test_embedding_inputs_as_texts_or_token_ids() -> None:
    assert EmbeddingRequest(model="e", input="a").texts() == ["a"]
    assert EmbeddingRequest(model="e", input=["a", "b"]).texts() == ["a", "b"]
    assert EmbeddingRequest(model="e", input=[1, 2]).texts() is None
    for empty in ("", []):
        with pytest.raises(ValidationError):
            EmbeddingRequest(model="e", input=empty)
