"""Optional X-Ray tracing through Powertools Tracer: off unless ``SWITCHBOARD_TRACING=on``.

``configure(setting)`` runs once in ``Gateway.from_env``, before any client is built. When on, it
loads Powertools Tracer and patches httpx (the upstream calls) and botocore (the clients of boto3:
Bedrock, and AWS calls where ``switchboard.infra.aws`` falls back to boto3), so each becomes a
subsegment of the invocation's trace; the template's ``EnableTracing`` parameter turns on Lambda's
active tracing and grants the X-Ray permissions. The gateway's own DynamoDB, SSM and Secrets
Manager calls go through ``switchboard.infra.awsjson``, which the botocore patch cannot see: ``aws_call``
gives each of them a subsegment of its own (service, operation and region, and the error if it
failed; no request id, and no trace header is sent to the service). When off, nothing is
imported: tracing costs no cold-start time and no per-request work beyond a boolean test.

Under the Lambda Web Adapter the app is a long-running uvicorn process, so the runtime never
updates ``_X_AMZN_TRACE_ID`` for it; the adapter passes the invocation's trace header instead, and
``bind`` makes it current. A Lambda instance serves one request at a time, so the process-wide
variable is safe there; the local server never enables tracing. (The patched httpx client adds an
``X-Amzn-Trace-Id`` header to upstream requests.)
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

__all__ = ["aws_call", "bind", "configure", "enabled"]

log = logging.getLogger("switchboard.tracing")

_ON = {"on", "true", "1", "yes"}
_tracer: Any = None


def enabled() -> bool:
    return _tracer is not None


def configure(setting: str, service: str = "switchboard") -> bool:
    """Start tracing when ``setting`` says so. Idempotent; returns whether tracing is on."""
    global _tracer
    if _tracer is not None or setting.strip().lower() not in _ON:
        return _tracer is not None
    try:
        from aws_lambda_powertools import Tracer

        _tracer = Tracer(service=service, patch_modules=["botocore", "httpx"])
    except ImportError as exc:  # aws-xray-sdk is not in the deployment package
        log.warning("tracing requested but unavailable (%s); serving without it", exc)
        return False
    log.info("X-Ray tracing on (botocore and httpx patched)")
    return True


# Subsegment names as X-Ray's botocore patch writes them (the service's class name).
_AWS_NAMES = {"dynamodb": "DynamoDB", "ssm": "SSM", "secretsmanager": "SecretsManager"}


@contextmanager
def aws_call(service: str, operation: str, region: str) -> Iterator[None]:
    """An X-Ray subsegment around one ``switchboard.infra.awsjson`` call (namespace ``aws``), marked as
    X-Ray's botocore patch marks a failed one: the exception, and the HTTP status with the request id."""
    from aws_xray_sdk.core import xray_recorder

    with xray_recorder.in_subsegment(_AWS_NAMES.get(service, service), namespace="aws") as subsegment:
        meta = {"operation": operation, "region": region}
        try:
            yield
        except Exception as exc:
            answered = getattr(exc, "response", {}).get("ResponseMetadata", {})
            if subsegment is not None and answered:
                meta["request_id"] = answered.get("RequestId")
                subsegment.put_http_meta("status", answered.get("HTTPStatusCode"))
            raise
        finally:
            if subsegment is not None:
                subsegment.set_aws(meta)


def bind(headers: Mapping[str, str]) -> None:
    """Make the invocation's trace current (Lambda Web Adapter passes it as a header)."""
    if _tracer is None:
        return
    trace = headers.get("x-amzn-trace-id")
    if trace:
        os.environ["_X_AMZN_TRACE_ID"] = trace
