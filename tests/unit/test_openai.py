"""``upstream.providers.openai``: the request an OpenAI-compatible upstream gets, and how its answer
is read. (Its rule sets per upstream are ``test_compat.py``'s; every HTTP test's mock is this kind.)"""

from __future__ import annotations

import json

import pytest
from switchboard.core.errors import AttemptFailed
from switchboard.upstream.providers import get
from switchboard.upstream.providers.openai import OpenAICompatible

from tests.support import chat_call

PROVIDER = {"kind": "openai", "base_url": "https://api.openai.com/v1", "headers": {"x-team": "t1"}}
MSG = [{"role": "user", "content": "x"}]


def openai() -> OpenAICompatible:
    provider = get("openai")
    assert isinstance(provider, OpenAICompatible)
    return provider


def test_the_request_names_the_target_model_and_carries_auth_and_the_provider_headers() -> None:
    call = chat_call({"model": "alias", "messages": MSG, "temperature": 0.5}, PROVIDER, "gpt-4o-mini")
    request = openai().build_request(call)
    assert (request.method, request.url) == ("POST", "https://api.openai.com/v1/chat/completions")
    assert json.loads(request.content) == {"model": "gpt-4o-mini", "messages": MSG, "temperature": 0.5}
    headers = dict(request.headers)
    assert headers["authorization"] == "Bearer sk-provider-key" and headers["x-team"] == "t1"
    assert headers["accept"] == "application/json"


def test_a_stream_always_asks_for_the_usage_chunk_keeping_the_client_s_options() -> None:
    body = {"model": "a", "messages": MSG, "stream": True, "stream_options": {"include_usage": False}}
    request = openai().build_request(chat_call(body, PROVIDER))
    sent = json.loads(request.content)
    assert sent["stream_options"] == {"include_usage": True}
    assert dict(request.headers)["accept"] == "text/event-stream"


def test_an_answer_that_is_no_completion_is_a_server_failure() -> None:
    call = chat_call({"model": "a", "messages": MSG}, PROVIDER)
    with pytest.raises(AttemptFailed) as caught:
        openai().parse_response(b'{"not": "a completion"}', call)
    assert caught.value.error_class == "server"
