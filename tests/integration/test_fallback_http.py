"""Retries, fallback and streaming failover over real sockets, against the scriptable mock."""

from __future__ import annotations

import time
import uuid

import httpx
import openai
import pytest

from tests.conftest import API_KEY, RunningGateway

MSG = [{"role": "user", "content": "ping pong"}]


def chain(*models: str, **route: object) -> dict[str, object]:
    providers = ["mock", "backup", "backup", "backup"]
    return {
        "targets": [{"provider": p, "model": m} for p, m in zip(providers, models, strict=False)],
        **route,
    }


def post(gw: RunningGateway, model: str, **body: object) -> httpx.Response:
    payload = {"model": model, "messages": MSG, **body}
    return httpx.post(gw.v1 + "/chat/completions", json=payload, headers=gw.headers(), timeout=30)


def trail(response: httpx.Response) -> list[list[str]]:
    return [entry.split(";") for entry in response.headers["x-switchboard-trail"].split(",")]


@pytest.mark.parametrize(
    ("failing", "error_class", "status"),
    [
        ("fail-429", "rate_limit", "429"),
        ("fail-500", "server", "500"),
        ("fail-503", "server", "503"),
        ("reset", "server", "-"),
        ("garbage", "server", "-"),
        ("garbage-valid-json", "server", "-"),
    ],
)
def test_falls_back_after_retrying(gateway_factory, failing: str, error_class: str, status: str) -> None:  # type: ignore[no-untyped-def]
    gw = gateway_factory(models={"m": chain(failing, "echo")})
    response = post(gw, "m")
    assert response.status_code == 200, response.text
    assert response.json()["choices"][0]["message"]["content"] == "echo: ping pong"
    assert response.headers["x-switchboard-provider"] == "backup"
    assert response.headers["x-switchboard-attempts"] == "3"
    steps = trail(response)
    assert [s[:3] for s in steps] == [
        [f"mock/{failing}", error_class, status],
        [f"mock/{failing}", error_class, status],
        ["backup/echo", "ok", "200"],
    ]


def test_timeout_is_retried_once_then_falls_back(gateway_factory) -> None:  # type: ignore[no-untyped-def]
    route = chain("slow-3", "echo", retry={"attempts": 5, "base_delay_ms": 1, "max_delay_ms": 1})
    route["targets"][0]["timeouts"] = {"connect_s": 1, "first_token_s": 1, "total_s": 0.3}  # type: ignore[index]
    gw = gateway_factory(models={"m": route})
    started = time.monotonic()
    response = post(gw, "m")
    assert response.status_code == 200
    assert [s[1] for s in trail(response)] == ["timeout", "timeout", "ok"]
    assert time.monotonic() - started < 2.5


def test_retry_after_is_honored(gateway_factory) -> None:  # type: ignore[no-untyped-def]
    flaky = f"flaky-1+fail-429+retry-after-1+id-{uuid.uuid4().hex[:6]}"
    gw = gateway_factory(
        models={"m": chain(flaky, retry={"attempts": 2, "base_delay_ms": 1, "max_delay_ms": 5})}
    )
    started = time.monotonic()
    response = post(gw, "m")
    elapsed = time.monotonic() - started
    assert response.status_code == 200
    assert [s[1] for s in trail(response)] == ["rate_limit", "ok"]
    assert elapsed >= 1.0, elapsed  # the backoff alone would have been a few ms


def test_a_retry_after_beyond_the_cap_moves_on_at_once(gateway_factory) -> None:  # type: ignore[no-untyped-def]
    retry = {"attempts": 3, "max_retry_after_s": 2}
    gw = gateway_factory(models={"m": chain("fail-429+retry-after-30", "echo", retry=retry)})
    started = time.monotonic()
    response = post(gw, "m")
    assert response.status_code == 200
    assert [s[1] for s in trail(response)] == ["rate_limit", "ok"]
    assert time.monotonic() - started < 1.0


def test_client_errors_do_not_fall_back(gateway_factory) -> None:  # type: ignore[no-untyped-def]
    gw = gateway_factory(models={"m": chain("fail-400", "echo")})
    response = post(gw, "m")
    assert response.status_code == 400
    assert response.headers["x-switchboard-attempts"] == "1"
    assert set(response.json()["error"]) == {"message", "type", "param", "code"}


def test_upstream_auth_failure_is_502_and_hides_the_upstream_text(gateway_factory) -> None:  # type: ignore[no-untyped-def]
    gw = gateway_factory(models={"m": chain("fail-401", "echo")})
    response = post(gw, "m")
    assert response.status_code == 502
    assert response.json()["error"]["code"] == "upstream_auth_failed"
    assert "sk-abc" not in response.text and "Incorrect API key" not in response.text


def test_an_upstream_404_is_the_routing_documents_fault_502(gateway_factory) -> None:  # type: ignore[no-untyped-def]
    gw = gateway_factory(models={"m": chain("fail-404", "echo")})
    response = post(gw, "m")
    assert response.status_code == 502 and response.headers["x-switchboard-attempts"] == "1"
    error = response.json()["error"]
    assert (error["type"], error["code"]) == ("upstream_error", "upstream_not_found")
    assert "routing document" in error["message"]


def test_context_window_falls_back_to_a_larger_target(gateway_factory) -> None:  # type: ignore[no-untyped-def]
    route = chain("fail-400ctx", "echo+small", "echo+large")
    for target, window in zip(route["targets"], (8192, 4096, 128000), strict=True):  # type: ignore[call-overload]
        target["context_window"] = window
    gw = gateway_factory(models={"m": route})
    response = post(gw, "m")
    assert response.status_code == 200
    assert [s[:2] for s in trail(response)] == [
        ["mock/fail-400ctx", "context_window"],
        ["backup/echo+large", "ok"],
    ]


def test_content_policy_falls_back_only_when_configured(gateway_factory) -> None:  # type: ignore[no-untyped-def]
    gw = gateway_factory(
        models={
            "strict": chain("fail-400policy", "echo"),
            "lenient": chain("fail-400policy", "echo", fallback_on=["content_policy", "server"]),
        }
    )
    refused = post(gw, "strict")
    assert refused.status_code == 400
    assert refused.json()["error"]["code"] == "content_filter"
    assert post(gw, "lenient").status_code == 200


@pytest.mark.parametrize(
    ("failing", "status", "classes"),
    [("fail-500", 502, "server"), ("fail-429", 429, "rate_limit"), ("slow-2", 504, "timeout")],
)
def test_every_target_failing_names_each_attempt(
    gateway_factory, failing: str, status: int, classes: str
) -> None:  # type: ignore[no-untyped-def]
    route = chain(failing, failing, retry={"attempts": 1})
    for target in route["targets"]:  # type: ignore[attr-defined]
        target["timeouts"] = {"total_s": 0.3}
    gw = gateway_factory(models={"m": route})
    response = post(gw, "m")
    assert response.status_code == status
    error = response.json()["error"]
    assert error["code"] == "all_targets_failed"
    assert (
        f"mock/{failing}: {classes}" in error["message"]
        and f"backup/{failing}: {classes}" in error["message"]
    )
    assert response.headers["x-switchboard-attempts"] == "2"


def test_the_request_deadline_bounds_the_whole_plan(gateway_factory) -> None:  # type: ignore[no-untyped-def]
    gw = gateway_factory(models={"m": chain("slow-3", "slow-3", "slow-3")})
    started = time.monotonic()
    response = httpx.post(
        gw.v1 + "/chat/completions",
        json={"model": "m", "messages": MSG},
        headers={**gw.headers(), "x-switchboard-timeout": "0.5"},
        timeout=10,
    )
    assert response.status_code == 504
    assert time.monotonic() - started < 1.5


def stream_text(gw: RunningGateway, model: str) -> tuple[httpx.Response, list[str]]:
    body = {"model": model, "messages": MSG, "stream": True}
    with (
        httpx.Client(timeout=30) as client,
        client.stream("POST", gw.v1 + "/chat/completions", json=body, headers=gw.headers()) as response,
    ):
        lines = [line for line in response.iter_lines() if line.startswith("data:")]
    return response, lines


def test_stream_failing_before_the_first_token_fails_over_invisibly(gateway_factory) -> None:  # type: ignore[no-untyped-def]
    gw = gateway_factory(models={"m": chain("break-0", "echo")})
    response, lines = stream_text(gw, "m")
    assert response.status_code == 200
    assert response.headers["x-switchboard-provider"] == "backup"
    assert lines[-1] == "data: [DONE]"
    assert not any('"error"' in line for line in lines)
    client = openai.OpenAI(base_url=gw.v1, api_key=API_KEY, max_retries=0)
    text = "".join(
        c.choices[0].delta.content or ""
        for c in client.chat.completions.create(model="m", messages=MSG, stream=True)  # type: ignore[arg-type]
        if c.choices
    )
    assert text == "echo: ping pong"


def test_stream_stalling_before_the_first_token_fails_over(gateway_factory) -> None:  # type: ignore[no-untyped-def]
    route = chain("stall-3", "echo", retry={"attempts": 1})
    route["targets"][0]["timeouts"] = {"connect_s": 1, "first_token_s": 0.3, "total_s": 10}  # type: ignore[index]
    gw = gateway_factory(models={"m": route})
    started = time.monotonic()
    response, lines = stream_text(gw, "m")
    assert response.headers["x-switchboard-provider"] == "backup"
    assert lines[-1] == "data: [DONE]"
    assert time.monotonic() - started < 2


def test_stream_failing_after_the_first_token_ends_with_an_error_event(gateway_factory) -> None:  # type: ignore[no-untyped-def]
    gw = gateway_factory(models={"m": chain("break-2+chunks-5", "echo")})
    response, lines = stream_text(gw, "m")
    assert response.status_code == 200
    assert response.headers["x-switchboard-provider"] == "mock"
    assert "data: [DONE]" not in lines  # never a silent, normal-looking end
    assert '"code":"stream_interrupted"' in lines[-1]
    client = openai.OpenAI(base_url=gw.v1, api_key=API_KEY, max_retries=0)
    with pytest.raises(openai.APIError, match="incomplete"):
        for _ in client.chat.completions.create(model="m", messages=MSG, stream=True):  # type: ignore[arg-type]
            pass


def test_streaming_errors_before_commit_are_plain_http_errors(gateway_factory) -> None:  # type: ignore[no-untyped-def]
    gw = gateway_factory(models={"m": chain("fail-500", retry={"attempts": 1})})
    body = {"model": "m", "messages": MSG, "stream": True}
    response = httpx.post(gw.v1 + "/chat/completions", json=body, headers=gw.headers())
    assert response.status_code == 502
    assert response.json()["error"]["code"] == "all_targets_failed"


def test_the_lambda_web_adapter_deadline_caps_the_plan(gateway_factory) -> None:  # type: ignore[no-untyped-def]
    """Under the adapter, the invocation's deadline arrives as JSON in x-amzn-lambda-context."""
    gw = gateway_factory(models={"m": chain("slow-3", "slow-3")})
    deadline_ms = int((time.time() + 1.2) * 1000)  # 0.5 s of it is kept back for the answer
    started = time.monotonic()
    response = httpx.post(
        gw.v1 + "/chat/completions",
        json={"model": "m", "messages": MSG},
        headers={
            **gw.headers(),
            "x-amzn-lambda-context": f'{{"request_id": "r1", "deadline": {deadline_ms}}}',
        },
        timeout=10,
    )
    assert response.status_code == 504
    assert time.monotonic() - started < 1.5
