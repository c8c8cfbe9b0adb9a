"""Cost events and logs from real requests: valid EMF per request, JSON logs with the request id
(``infra.logs``), and no secret (provider key, client key) in anything the gateway writes."""

from __future__ import annotations

import io
import json
import logging
import time
import uuid
from collections.abc import Iterator
from typing import Any

import boto3
import httpx
import pytest
from switchboard.infra import logs

from tests.conftest import API_KEY, RunningGateway, routing_doc
from tests.unit.test_costevents import assert_valid_emf

PROVIDER_KEY = "sk-live-Pr0v1derSecret-" + uuid.uuid4().hex
MSG = [{"role": "user", "content": "a b c"}]


@pytest.fixture
def json_logs() -> Iterator[io.StringIO]:
    """Powertools JSON logs into a buffer for one test, then the logging config as it was."""
    stream = io.StringIO()
    _reset_logging()  # configure_logging is idempotent: an earlier test (Lambda's init) may have run it
    logs.configure_logging(level="DEBUG", stream=stream)
    yield stream
    _reset_logging()


def _reset_logging() -> None:
    logger = logging.getLogger("switchboard")
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
    for attr in ("init", "powertools_handler", "powertools_buffer_config", "powertools_buffer_cache"):
        if hasattr(logger, attr):
            delattr(logger, attr)
    logger.setLevel(logging.NOTSET)
    for handler in logging.root.handlers:
        for flt in list(handler.filters):
            if type(flt).__name__ == "SuppressFilter":
                handler.removeFilter(flt)
    logs._logger = None
    from aws_lambda_powertools.logging.formatter import clear_context_keys

    clear_context_keys()


@pytest.fixture
def gw(gateway_factory, mock) -> RunningGateway:  # type: ignore[no-untyped-def]
    secret_param = f"/switchboard-test/{uuid.uuid4().hex[:8]}/provider"
    boto3.client("ssm", region_name="us-east-1").put_parameter(
        Name=secret_param, Value=PROVIDER_KEY, Type="SecureString", Overwrite=True
    )
    doc = routing_doc(
        mock.base_url,
        {
            "echo": {"targets": [{"provider": "mock", "model": "echo"}]},
            "fallback": {
                "targets": [
                    {"provider": "mock", "model": "fail-500"},
                    {"provider": "backup", "model": "echo"},
                ]
            },
            "denied": {"targets": [{"provider": "mock", "model": "fail-401"}]},
            "cut": {"targets": [{"provider": "mock", "model": "break-2+chunks-6"}]},
            "unpriced": {"targets": [{"provider": "backup", "model": "echo"}]},
        },
        prices={"mock/echo": {"input_per_mtok": "1", "output_per_mtok": "2"}},
    )
    doc["providers"]["mock"]["api_key"] = {"ssm": secret_param}
    return gateway_factory(doc=doc)  # type: ignore[no-any-return]


def emf_events(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.startswith('{"_aws"')]


def run_flow(gw: RunningGateway, mock) -> list[httpx.Response]:  # type: ignore[no-untyped-def]
    url, headers = gw.v1 + "/chat/completions", gw.headers()
    responses = [
        httpx.post(url, json={"model": "echo", "messages": MSG}, headers=headers),
        httpx.post(url, json={"model": "echo", "messages": MSG, "stream": True}, headers=headers),
        httpx.post(url, json={"model": "fallback", "messages": MSG}, headers=headers),
        httpx.post(url, json={"model": "denied", "messages": MSG}, headers=headers),
        httpx.post(url, json={"model": "cut", "messages": MSG, "stream": True}, headers=headers),
        httpx.post(
            url, json={"model": "echo", "messages": MSG}, headers={"authorization": "Bearer sk-wrong"}
        ),
    ]
    assert mock.requests[-1]["headers"]["authorization"] == f"Bearer {PROVIDER_KEY}"  # the key was used
    time.sleep(0.2)  # streams settle after their last byte
    return responses


def test_one_valid_emf_event_per_request(gw, mock, capsys) -> None:  # type: ignore[no-untyped-def]
    responses = run_flow(gw, mock)
    events = {e["request_id"]: e for e in emf_events(capsys.readouterr().out)}
    assert len(events) == 5  # the unauthenticated request never reaches admit
    for event in events.values():
        assert_valid_emf(event)
    ok, stream, fallback, denied, cut = (events[r.headers["x-request-id"]] for r in responses[:5])
    assert ok["outcome"] == "ok" and ok["CostUSD"] == 0.000015 and ok["target"] == "mock/echo"
    assert stream["stream"] is True and stream["TimeToFirstToken"] > 0 and stream["CostUSD"] == 0.000015
    assert fallback["Fallbacks"] == 1 and [a["class"] for a in fallback["attempts"]] == [
        "server",
        "server",
        "ok",
    ]
    assert denied["outcome"] == "error" and denied["Errors"] == 1 and denied["status"] == 502
    assert (
        cut["outcome"] == "interrupted"
        and cut["error_code"] == "stream_interrupted"
        and cut["usage_estimated"]
    )


def test_logs_are_json_with_the_request_id(gw, json_logs) -> None:  # type: ignore[no-untyped-def]
    response = httpx.post(
        gw.v1 + "/chat/completions", json={"model": "unpriced", "messages": MSG}, headers=gw.headers()
    )
    assert response.status_code == 200 and response.json()["usage"]["cost"] is None
    lines = [json.loads(line) for line in json_logs.getvalue().splitlines() if line.strip()]
    [warning] = [line for line in lines if "no price for backup/echo" in line["message"]]
    assert warning["level"] == "WARNING" and warning["service"] == "switchboard" and warning["timestamp"]
    assert warning["request_id"] == response.headers["x-request-id"]


def test_no_secret_in_any_emitted_line(gw, mock, capsys, caplog, json_logs) -> None:  # type: ignore[no-untyped-def]
    caplog.set_level(logging.DEBUG, logger="switchboard")
    caplog.set_level(logging.INFO)
    responses = run_flow(gw, mock)
    captured = capsys.readouterr()
    records = "\n".join(
        f"{r.name} {r.getMessage()} {r.exc_text or ''} {json.dumps(r.__dict__, default=str)}"
        for r in caplog.records
    )
    emitted = {
        "stdout": captured.out,
        "stderr": captured.err,
        "records": records,
        "json logs": json_logs.getvalue(),
    }
    assert emf_events(captured.out), "the flow emitted no cost event"
    assert json_logs.getvalue(), "the flow logged nothing"
    for where, text in emitted.items():
        for secret in (PROVIDER_KEY, API_KEY, "sk-wrong"):
            assert secret not in text, f"{secret[:8]}... found in {where}"
    for response in responses:
        assert PROVIDER_KEY not in response.text
