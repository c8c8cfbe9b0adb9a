"""Buffered mode answers a request that runs out of time itself, with room to spare before API
Gateway gives up (issue 14, "Buffered mode").

API Gateway's buffered integration stops at 29 s, counted from before the function's init on a
cold start; the function's timeout is 29 s too, counted from after it. The template passes the
timeout to the app (``SWITCHBOARD_FUNCTION_TIMEOUT_S``), which bounds every request at
``timeout - FUNCTION_ANSWER_MARGIN_S`` (switchboard.settings). Here the function's timeout is
6 s: the request is bounded at 3 s and must be answered, a 504 in OpenAI's shape, while a cold
start's 2 s of init still leaves API Gateway waiting. Before the bound, the only cap was Lambda's
remaining time less 0.5 s: the answer came at 5.5 s, after API Gateway had given up.
"""

from __future__ import annotations

import asyncio
import importlib
import importlib.util
import json
import threading
import uuid
import warnings
from collections.abc import Iterator
from types import ModuleType
from typing import Any

import pytest
from switchboard.core.settings import Settings
from switchboard.devtools.devstack import seed_aws
from switchboard.devtools.mockupstream import MockUpstream

from tests.conftest import API_KEY, routing_doc

# ``lambda`` is a keyword: the sibling module's helpers are imported by name.
_handler_tests = importlib.import_module("tests.lambda.test_handler")
HANDLER_FILE = _handler_tests.HANDLER_FILE
FakeContext = _handler_tests.FakeContext
api_event, auth = _handler_tests.api_event, _handler_tests.auth
body_of, headers_of = _handler_tests.body_of, _handler_tests.headers_of

FUNCTION_TIMEOUT_S = 6
COLD_INIT_S = 2.0  # counted by API Gateway's clock, not by the function's
API_GATEWAY_WAITS_S = FUNCTION_TIMEOUT_S - COLD_INIT_S  # after the invocation starts

MODELS = {"stalled": {"targets": [{"provider": "mock", "model": "slow-30"}]}}


@pytest.fixture(scope="module")
def buffered(aws: str, mock: MockUpstream) -> Iterator[ModuleType]:
    """``functions/gateway/handler.py`` initialised as the template configures it in buffered mode."""
    suffix = uuid.uuid4().hex[:10]
    doc = routing_doc(mock.base_url, MODELS)
    # The upstream's own timeouts are longer than the function's: only the request's bound can act.
    doc["defaults"]["timeouts"] = {"connect_s": 2, "first_token_s": 60, "total_s": 120}
    with pytest.MonkeyPatch.context() as mp, warnings.catch_warnings():
        mp.setenv("SWITCHBOARD_ROUTING_PARAM", f"/switchboard-test/{suffix}/routing")
        mp.setenv("SWITCHBOARD_DEPLOYMENT_MODE", "buffered")
        mp.setenv("SWITCHBOARD_FUNCTION_TIMEOUT_S", str(FUNCTION_TIMEOUT_S))
        seed_aws(Settings.from_env(), json.dumps(doc), API_KEY, {})
        asyncio.set_event_loop(None)
        warnings.filterwarnings("ignore", "There is no current event loop", DeprecationWarning)
        spec = importlib.util.spec_from_file_location(f"buffered_handler_{suffix}", HANDLER_FILE)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        loop = asyncio.get_event_loop()
        module.init_loop = loop  # type: ignore[attr-defined]
    yield module
    loop.run_until_complete(module.handler.app.state.gateway.aclose())
    loop.close()
    asyncio.set_event_loop(None)


def test_the_bound_is_derived_from_the_function_timeout(buffered: ModuleType) -> None:
    settings = buffered.handler.app.state.gateway.settings
    assert settings.function_timeout_s == FUNCTION_TIMEOUT_S
    assert settings.max_request_s == 3.0


def test_a_stalled_upstream_is_answered_504_before_api_gateway_gives_up(buffered: ModuleType) -> None:
    event = api_event(
        "POST",
        "/v1/chat/completions",
        body=json.dumps({"model": "stalled", "messages": [{"role": "user", "content": "hi"}]}),
        headers=auth(),
    )
    answer: dict[str, Any] = {}

    def invocation() -> None:  # Lambda calls the handler with its full timeout remaining
        asyncio.set_event_loop(buffered.init_loop)  # Lambda's one thread, with the loop of its init
        answer["response"] = buffered.handler(event, FakeContext(remaining_ms=FUNCTION_TIMEOUT_S * 1000))

    thread = threading.Thread(target=invocation, daemon=True)
    thread.start()
    thread.join(API_GATEWAY_WAITS_S)
    late = thread.is_alive()
    thread.join(FUNCTION_TIMEOUT_S)  # a late answer still ends before the loop is closed
    assert not late, "no answer while API Gateway was still waiting"
    response = answer["response"]
    assert response["statusCode"] == 504
    assert headers_of(response)["content-type"] == "application/json"
    error = json.loads(body_of(response))["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["code"] == "all_targets_failed"
