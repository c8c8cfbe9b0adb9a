"""Typed configuration: explicit argument, then environment, then default. Never read at import."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, fields

__all__ = ["Settings"]

_ENV = {
    "routing_param": "SWITCHBOARD_ROUTING_PARAM",
    "routing_max_age_s": "SWITCHBOARD_ROUTING_MAX_AGE_S",
    "table": "SWITCHBOARD_TABLE",
    "max_body_bytes": "SWITCHBOARD_MAX_BODY_BYTES",
    "max_request_s": "SWITCHBOARD_MAX_REQUEST_S",
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
    table: str = "switchboard"
    # Lambda's synchronous payload limit is 6 MB; a larger body could never reach the function.
    max_body_bytes: int = 6 * 1024 * 1024
    max_request_s: float = 600.0
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
    # Seconds a spend-ledger line waits for more requests before its write (switchboard.billing.spendledger);
    # 0 writes before the response ends (the buffered Lambda handler sets that).
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
        return cls(**values)  # type: ignore[arg-type]
