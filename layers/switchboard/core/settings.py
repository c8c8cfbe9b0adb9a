"""Typed configuration: explicit argument, then environment, then default. Never read at import.

One setting is derived: inside a Lambda function (``SWITCHBOARD_FUNCTION_TIMEOUT_S``, set by the
template to the function's timeout) ``max_request_s`` is capped below that timeout with
``FUNCTION_ANSWER_MARGIN_S`` to spare, so the app answers a request that runs out of time itself
(a 504 in the endpoint's shape, its reservation refunded) before Lambda kills it. In buffered mode
the timeout is 29 s, API Gateway's own limit, which also counts the cold start's init.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, fields

__all__ = ["FUNCTION_ANSWER_MARGIN_S", "Settings", "request_bound"]

# Seconds kept between the app's deadline and the function's timeout: the Lambda reserve of
# switchboard.api (0.5 s), writing the 504 and refunding the reservation, and the init of a cold
# start, which API Gateway's 29 s counts but Lambda's timeout does not (measured 1.0-1.2 s at
# 512 MB and 2.1-2.2 s at 256 MB under Lambda's CPU share; docs/performance.md).
FUNCTION_ANSWER_MARGIN_S = 4.0

_ENV = {
    "routing_param": "SWITCHBOARD_ROUTING_PARAM",
    "routing_max_age_s": "SWITCHBOARD_ROUTING_MAX_AGE_S",
    "routing_copy": "SWITCHBOARD_ROUTING_COPY",
    "table": "SWITCHBOARD_TABLE",
    "max_body_bytes": "SWITCHBOARD_MAX_BODY_BYTES",
    "max_request_s": "SWITCHBOARD_MAX_REQUEST_S",
    "function_timeout_s": "SWITCHBOARD_FUNCTION_TIMEOUT_S",
    "secret_max_age_s": "SWITCHBOARD_SECRET_MAX_AGE_S",
    "key_cache_s": "SWITCHBOARD_KEY_CACHE_S",
    "key_stale_s": "SWITCHBOARD_KEY_STALE_S",
    "aws_timeout_s": "SWITCHBOARD_AWS_TIMEOUT_S",
    "spend_ledger": "SWITCHBOARD_SPEND_LEDGER",
    "spend_flush_s": "SWITCHBOARD_SPEND_FLUSH_S",
    "tracing": "SWITCHBOARD_TRACING",
    "limits_fail_open": "SWITCHBOARD_LIMITS_FAIL_OPEN",
    "admit_timeout_s": "SWITCHBOARD_ADMIT_TIMEOUT_S",
    "heartbeat_after_s": "SWITCHBOARD_HEARTBEAT_AFTER_S",
    "heartbeat_every_s": "SWITCHBOARD_HEARTBEAT_EVERY_S",
    "breaker_report_s": "SWITCHBOARD_BREAKER_REPORT_S",
    "breaker_cache_s": "SWITCHBOARD_BREAKER_CACHE_S",
    "region": "AWS_REGION",
}


@dataclass(frozen=True)
class Settings:
    """Everything the gateway reads from its environment."""

    routing_param: str = "/switchboard/routing"
    routing_max_age_s: float = 5.0
    # "on": the routing document is read through its copy in the table, which one instance of the
    # fleet refreshes from SSM per routing_max_age_s (switchboard.routing.copy, docs/routing.md);
    # "off": every instance reads SSM every routing_max_age_s (fine for a few dozen instances).
    routing_copy: str = "on"
    table: str = "switchboard"
    # Lambda's synchronous payload limit is 6 MB; a larger body could never reach the function.
    max_body_bytes: int = 6 * 1024 * 1024
    max_request_s: float = 600.0
    # The Lambda function's timeout (the template sets it); 0: not in Lambda, nothing to derive.
    function_timeout_s: float = 0.0
    secret_max_age_s: float = 300.0
    key_cache_s: float = 30.0
    # While DynamoDB does not answer, a key seen this many seconds past key_cache_s keeps serving
    # from the cache (a key revoked meanwhile too); an unknown key gets a 503 (docs/limits.md).
    key_stale_s: float = 600.0
    # The longest a request waits for one read of the routing document, a key, the limit
    # definitions or a credential (the request's own deadline may cut it shorter; docs/routing.md).
    aws_timeout_s: float = 1.0
    # "off": no spend ledger (switchboard.billing.spendledger); the cost events remain.
    spend_ledger: str = "on"
    # Seconds a spend-ledger line waits for more requests before its write
    # (switchboard.billing.spendledger); 0 writes before the response ends: the default in Lambda
    # (AWS_LAMBDA_FUNCTION_NAME set), where an instance is frozen after its response and a delayed
    # flush would wait for the next request.
    spend_flush_s: float = 1.0
    # "on": X-Ray subsegments through Powertools Tracer (template parameter EnableTracing).
    tracing: str = "off"
    # "on": a key with limits is served unmetered when DynamoDB does not answer at admission, and
    # booked once it does; "off" (default): 503 limits_unavailable, no spend the ledger has not held.
    limits_fail_open: str = "off"
    # The longest an admission waits for DynamoDB (the request's deadline may cut it shorter)
    # before it answers 503 limits_unavailable (or serves, with fail-open).
    admit_timeout_s: float = 3.0
    # A stream with no output after this long commits its 200 and sends an SSE comment every
    # heartbeat_every_s (http.heartbeat): API Gateway drops a stream silent for 5 minutes.
    # The routing document's defaults.heartbeat_after_s, when set, wins.
    heartbeat_after_s: float = 30.0
    heartbeat_every_s: float = 15.0
    # The circuit breaker (routing.breaker): each target's counts are reported to DynamoDB at most
    # once per breaker_report_s; its shared state is re-read at most once per breaker_cache_s.
    breaker_report_s: float = 5.0
    breaker_cache_s: float = 2.0
    region: str = "us-east-1"

    def __post_init__(self) -> None:
        bound = request_bound(self.max_request_s, self.function_timeout_s)
        if bound != self.max_request_s:
            object.__setattr__(self, "max_request_s", bound)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: object) -> Settings:
        """Build settings from ``overrides``, then ``env`` (default ``os.environ``), then defaults."""
        source = os.environ if env is None else env
        values: dict[str, object] = {}
        for field in fields(cls):
            if field.name in overrides:
                values[field.name] = overrides[field.name]
                continue
            raw = source.get(_ENV[field.name])
            if field.name == "region" and not raw:
                raw = source.get("AWS_DEFAULT_REGION")
            if raw:
                kind: type = type(field.default)
                try:
                    values[field.name] = kind(raw)
                except ValueError as exc:
                    raise ValueError(f"{_ENV[field.name]}={raw!r} is not a valid {kind.__name__}") from exc
        if "spend_flush_s" not in values and source.get("AWS_LAMBDA_FUNCTION_NAME"):
            values["spend_flush_s"] = 0.0  # frozen between invocations: write inline (docs/performance.md)
        return cls(**values)  # type: ignore[arg-type]


def request_bound(max_request_s: float, function_timeout_s: float) -> float:
    """The longest a request may run: ``max_request_s``, and inside a function with a timeout, that
    timeout less ``FUNCTION_ANSWER_MARGIN_S`` (half of it for a timeout under twice the margin)."""
    if function_timeout_s <= 0:
        return max_request_s
    margin = min(FUNCTION_ANSWER_MARGIN_S, function_timeout_s / 2)
    return min(max_request_s, function_timeout_s - margin)
