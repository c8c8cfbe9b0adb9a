"""Error classification of upstream HTTP failures, Retry-After, redaction and the error envelope."""

from __future__ import annotations

import email.utils
import json

import pytest
from switchboard.core.errors import (
    AllTargetsFailed,
    ErrorClass,
    GatewayError,
    InvalidRequest,
    ModelNotFound,
    PayloadTooLarge,
    PaymentRequired,
    PermissionDenied,
    RateLimited,
    Unauthorized,
    redact,
)
from switchboard.upstream.providers.base import classify_http_error, parse_retry_after


def openai_error(message: str, etype: str = "invalid_request_error", code: str | None = None) -> bytes:
    return json.dumps({"error": {"message": message, "type": etype, "param": None, "code": code}}).encode()


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (429, ErrorClass.RATE_LIMIT),
        (500, ErrorClass.SERVER),
        (502, ErrorClass.SERVER),
        (503, ErrorClass.SERVER),
        (504, ErrorClass.SERVER),
        (529, ErrorClass.SERVER),  # Anthropic's "overloaded"
        (408, ErrorClass.TIMEOUT),
        (409, ErrorClass.SERVER),
        (404, ErrorClass.CLIENT),
        (422, ErrorClass.CLIENT),
    ],
)
def test_status_alone_decides_the_class(status: int, expected: ErrorClass) -> None:
    failure = classify_http_error(status, openai_error("something"), {}, "prov")
    assert failure.error_class is expected
    assert failure.status == status
    assert failure.message == "prov: something"


@pytest.mark.parametrize(
    "body",
    [
        openai_error("Too long.", code="context_length_exceeded"),
        openai_error("This model's maximum context length is 8192 tokens. However, you requested 9000."),
        openai_error(
            "prompt is too long: 210000 tokens > 200000 maximum context window", etype="invalid_request_error"
        ),
        json.dumps({"detail": "Input has too many tokens for this model"}).encode(),
    ],
)
def test_400_context_length_by_code_or_message(body: bytes) -> None:
    failure = classify_http_error(400, body, {}, "prov")
    assert failure.error_class is ErrorClass.CONTEXT_WINDOW


@pytest.mark.parametrize(
    "body",
    [
        openai_error("Filtered.", code="content_filter"),
        openai_error(
            "The response was filtered due to the prompt triggering Azure OpenAI's content management policy."
        ),
        openai_error("Blocked by our safety system."),
    ],
)
def test_400_content_filter(body: bytes) -> None:
    assert classify_http_error(400, body, {}, "prov").error_class is ErrorClass.CONTENT_POLICY


def test_400_other_is_client_and_keeps_upstream_fields() -> None:
    body = json.dumps(
        {
            "error": {
                "message": "Invalid 'temperature'",
                "type": "invalid_request_error",
                "param": "temperature",
                "code": "invalid_value",
            }
        }
    ).encode()
    failure = classify_http_error(400, body, {}, "groq")
    assert failure.error_class is ErrorClass.CLIENT
    assert failure.message == "groq: Invalid 'temperature'"
    assert (failure.upstream_type, failure.upstream_code, failure.upstream_param) == (
        "invalid_request_error",
        "invalid_value",
        "temperature",
    )


@pytest.mark.parametrize("status", [401, 403])
def test_credential_failures_never_echo_the_upstream_text(status: int) -> None:
    body = openai_error(
        "Incorrect API key provided: sk-proj-abcdef123456. Find your key at ...", code="invalid_api_key"
    )
    failure = classify_http_error(status, body, {}, "openai")
    assert failure.error_class is ErrorClass.CLIENT
    assert failure.message == "openai: openai rejected the gateway's credentials"
    assert "sk-" not in failure.message and "Incorrect" not in failure.message


def test_403_content_policy_is_not_masked_as_a_credential_failure() -> None:
    failure = classify_http_error(403, openai_error("blocked", code="content_policy"), {}, "p")
    assert failure.error_class is ErrorClass.CONTENT_POLICY
    assert failure.message == "p: blocked"


@pytest.mark.parametrize(
    ("status", "body", "cls", "message"),
    [
        (
            502,
            b"<html><body>Bad Gateway</body></html>",
            ErrorClass.SERVER,
            "p: <html><body>Bad Gateway</body></html>",
        ),
        (503, b"", ErrorClass.SERVER, "p: no error body"),
        (400, b"plain text failure", ErrorClass.CLIENT, "p: plain text failure"),
        (400, b"\xff\xfe not utf-8", ErrorClass.CLIENT, "p: \ufffd\ufffd not utf-8"),
        (400, b'["a", "list"]', ErrorClass.CLIENT, "p: ['a', 'list']"),
        (400, b'{"error": "a bare string"}', ErrorClass.CLIENT, "p: a bare string"),
        (400, b'{"error": {}}', ErrorClass.CLIENT, "p: no error message"),
    ],
)
def test_non_json_and_odd_bodies(status: int, body: bytes, cls: ErrorClass, message: str) -> None:
    failure = classify_http_error(status, body, {}, "p")
    assert failure.error_class is cls
    assert failure.message == message


def test_upstream_message_is_redacted_and_bounded() -> None:
    body = openai_error("key sk-live-0123456789abcdef leaked " + "x" * 2000)
    failure = classify_http_error(500, body, {}, "p")
    assert "sk-live" not in failure.message and "[redacted]" in failure.message
    assert len(failure.message) <= len("p: ") + 500


def test_classify_reads_retry_after_from_the_headers() -> None:
    assert classify_http_error(429, b"", {"retry-after": "7"}, "p").retry_after_s == 7.0
    assert classify_http_error(429, b"", {}, "p").retry_after_s is None


NOW = 1_800_000_000.0


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"retry-after": "3"}, 3.0),
        ({"retry-after": "1.5"}, 1.5),
        ({"retry-after": "0"}, 0.0),
        ({"retry-after": "-4"}, 0.0),
        ({"retry-after": email.utils.formatdate(NOW + 30, usegmt=True)}, 30.0),
        ({"retry-after": email.utils.formatdate(NOW - 30, usegmt=True)}, 0.0),
        ({"retry-after-ms": "250"}, 0.25),
        ({"retry-after-ms": "250", "retry-after": "9"}, 0.25),  # the precise one wins
        ({"retry-after-ms": "soon", "retry-after": "9"}, 9.0),
        ({"retry-after": "whenever"}, None),
        ({"retry-after": ""}, None),
        ({}, None),
    ],
)
def test_parse_retry_after(headers: dict[str, str], expected: float | None) -> None:
    result = parse_retry_after(headers, now=NOW)
    if expected is None:
        assert result is None
    else:
        assert result == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        ("Incorrect API key provided: sk-proj-AbC123xyz789.", "sk-proj-AbC123xyz789"),
        ("key sk-ant-api03-aaaaaaaaaaaa rejected", "sk-ant-api03-aaaaaaaaaaaa"),
        ("header was Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.abc", "eyJhbGciOiJIUzI1NiJ9.abc"),
        ("bearer   tok_123456", "tok_123456"),
        ("groq gsk_ABCDEFGH12345678 invalid", "gsk_ABCDEFGH12345678"),
        (
            "API key not valid: AIzaSyDaGmWKa4JsXZ-HjGw7ISLn_3namBGewQe.",
            "AIzaSyDaGmWKa4JsXZ-HjGw7ISLn_3namBGewQe",
        ),
        ("xai key xai-AbCdEf0123456789 expired", "xai-AbCdEf0123456789"),
        ("(sk-abcdefgh12345678)", "sk-abcdefgh12345678"),
    ],
)
def test_redact_masks_credentials(text: str, secret: str) -> None:
    masked = redact(text)
    assert secret not in masked
    assert "[redacted]" in masked


@pytest.mark.parametrize(
    "text",
    [
        "This model's maximum context length is 8192 tokens (ask-me later; sk is fine).",
        "This is a task-specific model; use the risk-adjusted path or the monkey_business_plan.",
        "Unsupported value: 'messages[0].role' does not support 'developer' with this model.",
    ],
)
def test_redact_leaves_ordinary_text_alone(text: str) -> None:
    assert redact(text) == text


@pytest.mark.parametrize(
    ("cls", "expected"),
    [
        (ErrorClass.RATE_LIMIT, None),
        (ErrorClass.SERVER, None),
        (ErrorClass.TIMEOUT, 1),
        (ErrorClass.CONTEXT_WINDOW, 0),
        (ErrorClass.CONTENT_POLICY, 0),
        (ErrorClass.CLIENT, 0),
    ],
)
def test_max_same_target_retries(cls: ErrorClass, expected: int | None) -> None:
    assert cls.max_same_target_retries == expected


@pytest.mark.parametrize(
    ("error", "status", "etype", "code"),
    [
        (GatewayError("m"), 500, "server_error", None),
        (InvalidRequest("m"), 400, "invalid_request_error", None),
        (Unauthorized("m"), 401, "authentication_error", "invalid_api_key"),
        (PaymentRequired("m"), 402, "insufficient_quota", "budget_exceeded"),
        (PermissionDenied("m"), 403, "permission_error", "model_not_allowed"),
        (ModelNotFound("m"), 404, "invalid_request_error", "model_not_found"),
        (PayloadTooLarge("m"), 413, "invalid_request_error", "payload_too_large"),
        (RateLimited("m"), 429, "rate_limit_error", "rate_limit_exceeded"),
        (AllTargetsFailed("m", status=504), 504, "upstream_error", "all_targets_failed"),
    ],
)
def test_gateway_error_body_shape(error: GatewayError, status: int, etype: str, code: str | None) -> None:
    assert error.status == status
    assert error.body() == {"error": {"message": "m", "type": etype, "param": None, "code": code}}


def test_gateway_error_overrides_are_per_instance() -> None:
    err = InvalidRequest("bad", param="messages.0.role", code="invalid_value", headers={"x-a": "1"})
    assert err.body() == {
        "error": {
            "message": "bad",
            "type": "invalid_request_error",
            "param": "messages.0.role",
            "code": "invalid_value",
        }
    }
    assert err.headers == {"x-a": "1"}
    assert InvalidRequest("other").code is None  # the class default is untouched
    assert json.loads(json.dumps(err.body())) == err.body()
