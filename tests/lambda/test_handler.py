"""The buffered-mode Lambda entry point, invoked in-process with API Gateway REST proxy events.

``functions/gateway/handler.py`` is imported as Lambda would import it (its module body is the
init phase), with its parameters seeded in moto; the upstream is the mock over real sockets.
The events have the shape of ``sam local generate-event apigateway aws-proxy``.
"""

from __future__ import annotations

import asyncio
import base64
import importlib.util
import json
import time
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from switchboard.core.settings import Settings
from switchboard.devtools.devstack import seed_aws
from switchboard.devtools.mockupstream import MockUpstream
from switchboard.limits.table import call_counts

from tests.conftest import API_KEY, routing_doc

HANDLER_FILE = Path(__file__).resolve().parents[2] / "functions" / "gateway" / "handler.py"
STAGE = "Prod"

MODELS = {
    "echo": {"targets": [{"provider": "mock", "model": "echo"}]},
    "fallback": {
        "targets": [{"provider": "mock", "model": "fail-500"}, {"provider": "backup", "model": "echo"}]
    },
    "slow": {"targets": [{"provider": "mock", "model": "slow-3"}]},
}


def api_event(
    method: str,
    path: str,
    *,
    body: str | bytes | None = None,
    headers: dict[str, str] | None = None,
    query: dict[str, str] | None = None,
    binary: bool = False,
) -> dict[str, Any]:
    """An API Gateway REST (v1) proxy-integration event for ``{proxy+}`` on stage ``Prod``."""
    all_headers = {
        "Accept": "*/*",
        "Host": "a1b2c3d4e5.execute-api.us-east-1.amazonaws.com",
        "User-Agent": "OpenAI/Python 1.99.0",
        "X-Amzn-Trace-Id": f"Root=1-{uuid.uuid4().hex[:8]}-{uuid.uuid4().hex[:24]}",
        "X-Forwarded-For": "203.0.113.7",
        "X-Forwarded-Port": "443",
        "X-Forwarded-Proto": "https",
        **(headers or {}),
    }
    if body is not None and "Content-Type" not in all_headers:
        all_headers["Content-Type"] = "application/json"
    raw = body.encode() if isinstance(body, str) else body
    if raw is not None and binary:
        encoded_body: str | None = base64.b64encode(raw).decode()
    else:
        encoded_body = raw.decode() if raw is not None else None
    now = time.time()
    return {
        "body": encoded_body,
        "resource": "/{proxy+}",
        "path": path,
        "httpMethod": method,
        "isBase64Encoded": binary,
        "queryStringParameters": query,
        "multiValueQueryStringParameters": {k: [v] for k, v in query.items()} if query else None,
        "pathParameters": {"proxy": path.lstrip("/")},
        "stageVariables": None,
        "headers": all_headers,
        "multiValueHeaders": {k: [v] for k, v in all_headers.items()},
        "requestContext": {
            "accountId": "123456789012",
            "resourceId": "123456",
            "stage": STAGE,
            "requestId": str(uuid.uuid4()),
            "requestTime": time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime(now)),
            "requestTimeEpoch": int(now * 1000),
            "identity": {
                "cognitoIdentityPoolId": None,
                "accountId": None,
                "cognitoIdentityId": None,
                "caller": None,
                "accessKey": None,
                "sourceIp": "203.0.113.7",
                "cognitoAuthenticationType": None,
                "cognitoAuthenticationProvider": None,
                "userArn": None,
                "userAgent": all_headers["User-Agent"],
                "user": None,
            },
            "path": f"/{STAGE}{path}",
            "resourcePath": "/{proxy+}",
            "httpMethod": method,
            "apiId": "a1b2c3d4e5",
            "protocol": "HTTP/1.1",
        },
    }


class FakeContext:
    """The Lambda context object; the remaining time counts down from construction."""

    def __init__(self, remaining_ms: int = 29_000) -> None:
        self._deadline = time.monotonic() + remaining_ms / 1000
        self.function_name = "switchboard-gateway"
        self.function_version = "$LATEST"
        self.invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:switchboard-gateway"
        self.memory_limit_in_mb = 1024
        self.aws_request_id = str(uuid.uuid4())
        self.log_group_name = "/aws/lambda/switchboard-gateway"
        self.log_stream_name = "2026/11/25/[$LATEST]0123456789abcdef"

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))


def auth() -> dict[str, str]:
    return {"Authorization": f"Bearer {API_KEY}"}


def chat(model: str, **extra: Any) -> str:
    return json.dumps({"model": model, "messages": [{"role": "user", "content": "hello lambda"}], **extra})


def headers_of(response: dict[str, Any]) -> dict[str, str]:
    """Response headers, lower-cased, whether Mangum put them in headers or multiValueHeaders."""
    merged = {k.lower(): v for k, v in response["headers"].items()}
    for key, values in (response.get("multiValueHeaders") or {}).items():
        merged.setdefault(key.lower(), ", ".join(values))
    return merged


def body_of(response: dict[str, Any]) -> str:
    body = response["body"]
    return base64.b64decode(body).decode() if response["isBase64Encoded"] else body


@pytest.fixture(scope="module")
def lambda_module(aws: str, mock: MockUpstream) -> Iterator[ModuleType]:
    """``functions/gateway/handler.py``, imported after its parameters exist (Lambda's init)."""
    suffix = uuid.uuid4().hex[:10]
    with pytest.MonkeyPatch.context() as mp, warnings.catch_warnings():
        mp.setenv("SWITCHBOARD_ROUTING_PARAM", f"/switchboard-test/{suffix}/routing")
        seed_aws(Settings.from_env(), json.dumps(routing_doc(mock.base_url, MODELS)), API_KEY, {})
        # A fresh Lambda process has no event loop; Mangum makes its own through asyncio's
        # deprecated implicit creation, which warns on 3.13 (and is caught as a RuntimeError on 3.14).
        asyncio.set_event_loop(None)
        warnings.filterwarnings("ignore", "There is no current event loop", DeprecationWarning)
        spec = importlib.util.spec_from_file_location(f"lambda_handler_{suffix}", HANDLER_FILE)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        loop = asyncio.get_event_loop()  # the one Mangum set up at init
    yield module
    loop.run_until_complete(module.handler.app.state.gateway.aclose())
    loop.close()
    asyncio.set_event_loop(None)


def invoke(module: ModuleType, event: dict[str, Any], context: FakeContext | None = None) -> dict[str, Any]:
    response: dict[str, Any] = module.handler(event, context or FakeContext())
    assert set(response) >= {"statusCode", "headers", "body", "isBase64Encoded"}
    return response


# --------------------------------------------------------------------------- tests


def test_list_models(lambda_module: ModuleType) -> None:
    response = invoke(lambda_module, api_event("GET", "/v1/models", headers=auth()))
    assert response["statusCode"] == 200
    assert [m["id"] for m in json.loads(body_of(response))["data"]] == sorted(MODELS)
    assert headers_of(response)["content-type"] == "application/json"
    assert headers_of(response)["x-request-id"].startswith("req_")


def test_chat_completion_with_attribution_headers(lambda_module: ModuleType, mock: MockUpstream) -> None:
    response = invoke(
        lambda_module, api_event("POST", "/v1/chat/completions", body=chat("echo"), headers=auth())
    )
    assert response["statusCode"] == 200, body_of(response)
    completion = json.loads(body_of(response))
    assert completion["choices"][0]["message"]["content"] == "echo: hello lambda"
    headers = headers_of(response)
    assert headers["x-switchboard-provider"] == "mock"
    assert headers["x-switchboard-model"] == "echo"
    assert headers["x-switchboard-attempts"] == "1"
    assert headers["x-switchboard-trail"].startswith("mock/echo;ok;200;")
    assert headers["x-switchboard-routing-version"]
    assert mock.requests[-1]["headers"]["authorization"] == "Bearer mock-provider-key"


def test_the_spend_ledger_is_written_within_the_invocation(lambda_module: ModuleType) -> None:
    # Nothing tells the buffered mode that its execution environment ends: nothing may wait.
    spend = lambda_module.handler.app.state.gateway.spend
    before = call_counts().get("UpdateItem", 0)
    response = invoke(
        lambda_module, api_event("POST", "/v1/chat/completions", body=chat("echo"), headers=auth())
    )
    assert response["statusCode"] == 200
    assert spend.flush_s == 0 and spend.pending == 0
    assert call_counts().get("UpdateItem", 0) == before + 1


def test_base64_encoded_body(lambda_module: ModuleType) -> None:
    event = api_event("POST", "/v1/chat/completions", body=chat("echo"), headers=auth(), binary=True)
    response = invoke(lambda_module, event)
    assert response["statusCode"] == 200
    assert json.loads(body_of(response))["choices"][0]["message"]["content"] == "echo: hello lambda"


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer sk-not-the-key"}, {"Authorization": "Basic dXNlcjpwYXNz"}],
    ids=["no-key", "wrong-key", "wrong-scheme"],
)
def test_unauthenticated_is_401(lambda_module: ModuleType, headers: dict[str, str]) -> None:
    response = invoke(
        lambda_module, api_event("POST", "/v1/chat/completions", body=chat("echo"), headers=headers)
    )
    assert response["statusCode"] == 401
    error = json.loads(body_of(response))["error"]
    assert error["type"] == "authentication_error"
    assert "sk-not-the-key" not in body_of(response)


def test_unknown_model_is_404(lambda_module: ModuleType) -> None:
    response = invoke(
        lambda_module, api_event("POST", "/v1/chat/completions", body=chat("gpt-9"), headers=auth())
    )
    assert response["statusCode"] == 404
    error = json.loads(body_of(response))["error"]
    assert error["code"] == "model_not_found"
    assert ", ".join(sorted(MODELS)) in error["message"]


def test_malformed_json_is_400(lambda_module: ModuleType) -> None:
    response = invoke(
        lambda_module, api_event("POST", "/v1/chat/completions", body='{"model": ', headers=auth())
    )
    assert response["statusCode"] == 400
    assert json.loads(body_of(response))["error"]["code"] == "invalid_json"


def test_fallback_to_the_next_target(lambda_module: ModuleType) -> None:
    response = invoke(
        lambda_module, api_event("POST", "/v1/chat/completions", body=chat("fallback"), headers=auth())
    )
    assert response["statusCode"] == 200
    headers = headers_of(response)
    assert headers["x-switchboard-provider"] == "backup"
    trail = [entry.split(";")[:3] for entry in headers["x-switchboard-trail"].split(",")]
    assert trail == [
        ["mock/fail-500", "server", "500"],
        ["mock/fail-500", "server", "500"],
        ["backup/echo", "ok", "200"],
    ]
    assert json.loads(body_of(response))["choices"][0]["message"]["content"] == "echo: hello lambda"


def test_streaming_request_is_buffered_whole(lambda_module: ModuleType) -> None:
    body = chat("echo", stream=True, stream_options={"include_usage": True})
    response = invoke(lambda_module, api_event("POST", "/v1/chat/completions", body=body, headers=auth()))
    assert response["statusCode"] == 200
    assert headers_of(response)["content-type"].startswith("text/event-stream")
    text = body_of(response)
    assert text.endswith("data: [DONE]\n\n")
    events = [line[6:] for line in text.split("\n\n") if line.startswith("data: {")]
    content = "".join(c["delta"].get("content") or "" for e in events for c in json.loads(e)["choices"])
    assert content == "echo: hello lambda"
    assert json.loads(events[-1])["usage"]["total_tokens"] > 0


def test_the_lambda_deadline_bounds_the_request(lambda_module: ModuleType) -> None:
    started = time.monotonic()
    event = api_event("POST", "/v1/chat/completions", body=chat("slow"), headers=auth())
    response = invoke(lambda_module, event, FakeContext(remaining_ms=700))
    elapsed = time.monotonic() - started
    assert response["statusCode"] == 504
    assert json.loads(body_of(response))["error"]["code"] == "all_targets_failed"
    assert elapsed < 0.7  # the gateway answers before Lambda would cut it off (3 s upstream)


def test_warm_invocations_reuse_the_loop_and_the_http_client(
    lambda_module: ModuleType, mock: MockUpstream
) -> None:
    gateway = lambda_module.handler.app.state.gateway
    event = api_event("POST", "/v1/chat/completions", body=chat("echo"), headers=auth())
    connections = mock.connections
    first = invoke(lambda_module, event)
    client = gateway.engine.http
    second = invoke(lambda_module, event)
    assert first["statusCode"] == second["statusCode"] == 200
    assert gateway.engine.http is client and not client.is_closed
    assert lambda_module.handler.app.state.gateway is gateway  # built once, at init
    assert mock.connections - connections <= 1  # the second call rode the first one's connection
