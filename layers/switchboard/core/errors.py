"""The gateway's error tree, and the classes of upstream failure.

Errors the gateway returns to a client::

    GatewayError                        (status, OpenAI error type, code)
    ├── InvalidRequest                  400 invalid_request_error
    ├── Unauthorized                    401 authentication_error / invalid_api_key
    ├── PaymentRequired                 402 insufficient_quota / budget_exceeded
    ├── PermissionDenied                403 permission_error / model_not_allowed
    ├── ModelNotFound                   404 invalid_request_error / model_not_found
    ├── PayloadTooLarge                 413 invalid_request_error / payload_too_large
    ├── RateLimited                     429 rate_limit_error / rate_limit_exceeded
    ├── UpstreamRejected                the upstream's own 4xx (client class), passed on sanitised
    ├── ServiceUnavailable              503 server_error, Retry-After: a store the gateway reads
    │   │                               (keys, routing) did not answer in time
    │   ├── limits.hook.LimitsUnavailable   limits_unavailable: DynamoDB silent at admission
    │   └── limits.hook.LimitsBusy          limits_busy: conflicts or throttling outlasted retries
    └── AllTargetsFailed                502 / 503 / 504, names every attempt's class; 429 with
                                        Retry-After when every target was rate limited

Failures of one upstream attempt are ``AttemptFailed``; each carries an ``ErrorClass`` that says
whether the same target is worth another try and whether the plan may fall back:

    ============== ================ =====================
    class          retry same       fall back (default)
    ============== ================ =====================
    rate_limit     yes (Retry-After) yes
    server         yes              yes
    timeout        once             yes
    slow           no               always (the latency trigger: no first token in time)
    context_window no               to a larger context
    content_policy no               only if configured
    client         no               no
    ============== ================ =====================
"""

from __future__ import annotations

import enum
import re
from typing import Any

from switchboard.core.attempts import AttemptRecord
from switchboard.core.redaction import scrub

__all__ = [
    "AllTargetsFailed",
    "AttemptFailed",
    "ErrorClass",
    "GatewayError",
    "InvalidRequest",
    "ModelNotFound",
    "PayloadTooLarge",
    "PaymentRequired",
    "PermissionDenied",
    "RateLimited",
    "ServiceUnavailable",
    "Unauthorized",
    "UpstreamRejected",
    "redact",
]


class ErrorClass(enum.StrEnum):
    """What kind of upstream failure an attempt met."""

    RATE_LIMIT = "rate_limit"
    SERVER = "server"
    TIMEOUT = "timeout"
    SLOW = "slow"  # the route's latency trigger: no first output within ``latency_trigger_s``
    CONTEXT_WINDOW = "context_window"
    CONTENT_POLICY = "content_policy"
    CLIENT = "client"

    @property
    def max_same_target_retries(self) -> int | None:
        """How many more tries the same target deserves: None means as the policy allows."""
        if self in (ErrorClass.RATE_LIMIT, ErrorClass.SERVER):
            return None
        if self is ErrorClass.TIMEOUT:
            return 1
        return 0


# A key starts a word (so "task-specific" stays readable); Google keys are "AIza" + 35 characters.
_SECRETISH = re.compile(
    r"\b(?:(?:sk|pk|rk|key|gsk|xai)[-_][A-Za-z0-9_\-.*]{6,}|AIza[A-Za-z0-9_\-]{30,})|Bearer\s+\S+",
    re.IGNORECASE,
)


def redact(text: str) -> str:
    """Mask every secret the gateway holds (by value, ``switchboard.core.redaction``; also a key cut
    short at the end of a truncated body), then anything else that looks like a credential (by
    pattern: keys the gateway never saw, such as another tenant's that an upstream quotes)."""
    return _SECRETISH.sub("[redacted]", scrub(text, cut=True))


class GatewayError(Exception):
    """An error the client sees, in OpenAI's shape."""

    status = 500
    type = "server_error"
    code: str | None = None

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        status: int | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code
        if status is not None:
            self.status = status
        self.headers: dict[str, str] = dict(headers or {})
        self.attempts: list[AttemptRecord] = []  # when upstreams were tried

    def body(self) -> dict[str, Any]:
        """The OpenAI error envelope. Every field is scrubbed of known secrets: message, type, code
        and param may all have come from an upstream (whose text was also ``redact``-ed on entry)."""
        fields = {"message": self.message, "type": self.type, "param": self.param, "code": self.code}
        return {"error": {name: scrub(v) if v else v for name, v in fields.items()}}


class InvalidRequest(GatewayError):
    status = 400
    type = "invalid_request_error"


class Unauthorized(GatewayError):
    status = 401
    type = "authentication_error"
    code = "invalid_api_key"


class PaymentRequired(GatewayError):
    status = 402
    type = "insufficient_quota"
    code = "budget_exceeded"


class PermissionDenied(GatewayError):
    status = 403
    type = "permission_error"
    code = "model_not_allowed"


class ModelNotFound(GatewayError):
    status = 404
    type = "invalid_request_error"
    code = "model_not_found"


class PayloadTooLarge(GatewayError):
    status = 413
    type = "invalid_request_error"
    code = "payload_too_large"


class RateLimited(GatewayError):
    status = 429
    type = "rate_limit_error"
    code = "rate_limit_exceeded"


class ServiceUnavailable(GatewayError):
    """Something the gateway must read before it can serve (the key store, the routing document)
    failed or did not answer in time. Not the client's fault, and worth a retry after a moment."""

    status = 503
    type = "server_error"
    code = "service_unavailable"

    def __init__(self, message: str, *, retry_after_s: int = 2, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.headers.setdefault("retry-after", str(retry_after_s))


class UpstreamRejected(GatewayError):
    """The upstream refused the request itself (a client-class 4xx); retrying cannot help."""

    type = "invalid_request_error"


class AllTargetsFailed(GatewayError):
    """Every target in the plan failed; the message names each attempt and its class."""

    type = "upstream_error"
    code = "all_targets_failed"


class AttemptFailed(Exception):
    """One upstream attempt failed. The message is safe to show: no secret, no upstream key."""

    def __init__(
        self,
        error_class: ErrorClass,
        message: str,
        *,
        status: int | None = None,
        retry_after_s: float | None = None,
        upstream_type: str | None = None,
        upstream_code: str | None = None,
        upstream_param: str | None = None,
    ) -> None:
        super().__init__(message)
        self.error_class = error_class
        self.message = message
        self.status = status
        self.retry_after_s = retry_after_s
        self.upstream_type = upstream_type
        self.upstream_code = upstream_code
        self.upstream_param = upstream_param
