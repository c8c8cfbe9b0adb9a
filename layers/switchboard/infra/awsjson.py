"""A small AWS JSON-protocol client: the gateway's DynamoDB, SSM and Secrets Manager calls without boto3.

What: one ``Client`` per service that takes the same method names and keyword arguments as the
boto3 low-level client for the operations the gateway makes at run time (the table of operations
below), signs them with SigV4, and sends them over stdlib ``http.client``. It answers with the
same dictionaries, and fails with exceptions shaped like botocore's ``ClientError``
(``exc.response["Error"]["Code"]``, ``client.exceptions.ConditionalCheckFailedException``...),
so the call sites do not change.

Why: the serving process paid for boto3 in its cold start and on every call. Measured on the
2-core development machine: importing boto3/botocore took ~160 ms and building the two clients
~130 ms (service model JSON, the list of every service directory, a session per client), out of a
~420 ms lifespan, while the target from process start to the first served request is 0.6 s. Each
DynamoDB call also cost ~2.3 ms of CPU in botocore (serialising against the model, its event
hooks, urllib3), which Lambda bills. The AWS JSON protocol is small: a POST of the request's JSON
to ``/``, the operation in ``X-Amz-Target``, the answer as JSON. DynamoDB's low-level wire format
is exactly the boto3 client's keyword arguments.

What it leaves to boto3 (``switchboard.infra.aws`` picks): credentials that are not in the environment
(profiles, SSO, container or instance roles), FIPS and dual-stack endpoints, regions outside the
allow-listed partitions ``aws``, ``aws-cn`` and ``aws-us-gov`` (``PARTITIONS``: there every
endpoint is ``https://<service>.<region>.<suffix>``, checked against botocore's endpoint rules in
the tests) unless ``AWS_ENDPOINT_URL[_<SERVICE>]`` names the endpoint, and every other service
and operation. Lambda gives the runtime its role's credentials in ``AWS_ACCESS_KEY_ID``,
``AWS_SECRET_ACCESS_KEY`` and ``AWS_SESSION_TOKEN``, so there the light client serves.

Differences from boto3 a caller could see: no client-side parameter validation (the service
answers ``ValidationException`` instead of botocore's ``ParamValidationError``); answers are the
service's JSON as is, so timestamps (SSM's ``LastModifiedDate``) stay epoch numbers and DynamoDB
binary attributes stay base64 text; an error without ``__type`` takes its code from the
``x-amzn-errortype`` header (as the awsJson protocol allows) where botocore would use the status.
Like botocore, a ``TransactWriteItems`` without ``ClientRequestToken`` gets a random one, so its
retries are idempotent, and DynamoDB answers are checked against their ``x-amz-crc32`` header.

Retries are botocore's standard mode (``retry_kind``; a test holds them equal to botocore's):

- on a transport error (refused, reset, timed out), a 500/502/503/504, a throttling code
  (``ThrottlingException``, ``ProvisionedThroughputExceededException``, ``RequestLimitExceeded``,
  ``TransactionInProgressException``...), a 429 that is not one of the operation's modeled
  errors, an error modeled as retryable, or a DynamoDB checksum mismatch; never on
  ``TransactionCanceledException`` (the caller reads its reasons and decides);
- at most 3 attempts (botocore's default; its DynamoDB default is now 4: on the serving path the
  request's deadline matters more, and ``switchboard.infra.aws`` configures boto3 the same);
- backoff ``rand(0, 1) * min(base * 2^(attempt-1), 20 s)``, base 1 s after throttling, else 25 ms
  (DynamoDB) or 50 ms; ``x-amz-retry-after`` (milliseconds) raises it to that, by at most 5 s;
- a retry quota per client (``RetryQuota``: 500 tokens, 14 a retry, 5 after throttling, paid back
  on success): in an outage, calls stop retrying instead of multiplying the load.

A keep-alive connection that the server closed while idle is reopened at once, without counting
as an attempt (checked before each reuse, as urllib3 does, and on a send that finds it closed).
Once a request is written, a failure counts as an attempt, even on a reused connection: the
service may have applied it, so only the retry rules may send it again.
One connection per thread (the call sites run in ``asyncio.to_thread``).

Time bounds, for the serving path: each attempt has a connect timeout (1 s, covering TLS) and a
read timeout (2 s, each socket wait), settable with ``SWITCHBOARD_AWS_CONNECT_TIMEOUT_S`` and
``SWITCHBOARD_AWS_READ_TIMEOUT_S`` (``timeouts_from_env``). And ``with awsjson.deadline(t):``
bounds every call in the block, attempts, backoffs and socket waits together, by the monotonic
time ``t``: past it, the call raises ``DeadlineExceeded`` (a ``TransportError``). The deadline
is a context variable, so it follows the call into ``asyncio.to_thread`` (and into a task created
inside the block: ``without_deadline`` lifts it for work that outlives the request).

Errors::

    Exception
     ├── TransportError                       no answer after the retries (connection, timeout)
     │    └── DeadlineExceeded                no answer by the call's deadline
     └── ClientError                          the service answered with an error; .response
          ├── ConditionalCheckFailedException     (DynamoDB)
          ├── TransactionCanceledException        (DynamoDB; .response["CancellationReasons"])
          ├── TransactionConflictException        (DynamoDB)
          ├── ProvisionedThroughputExceededException (DynamoDB)
          ├── ResourceNotFoundException           (DynamoDB, Secrets Manager)
          ├── ParameterNotFound                   (SSM)
          └── DecryptionFailure                   (Secrets Manager)

Tests inject faults (conflicts, throttling, 500s, latency, resets, a blackhole) at the attempt
level through ``set_interceptor``/``Client.interceptor``: see ``switchboard.devtools.awsfaults``.
Nothing is injected unless a test installs it or ``SWITCHBOARD_AWS_FAULTS`` is set.

Credentials are never logged, and never part of an exception's message or ``response``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import http.client
import json
import logging
import os
import random
import re
import select
import ssl
import threading
import time
import uuid
import weakref
import zlib
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from functools import cache, partial
from typing import Any, Protocol
from urllib.parse import quote, urlsplit

__all__ = [
    "CONNECT_TIMEOUT_ENV",
    "DEFAULT_CONNECT_TIMEOUT_S",
    "DEFAULT_MAX_ATTEMPTS",
    "DEFAULT_READ_TIMEOUT_S",
    "DYNAMODB",
    "FAULTS_ENV",
    "PARTITIONS",
    "READ_TIMEOUT_ENV",
    "SECRETS_MANAGER",
    "SERVICES",
    "SSM",
    "THROTTLING",
    "TRANSIENT",
    "Answer",
    "Client",
    "ClientError",
    "ConditionalCheckFailedException",
    "Credentials",
    "DeadlineExceeded",
    "DecryptionFailure",
    "Interceptor",
    "ParameterNotFound",
    "Partition",
    "ProvisionedThroughputExceededException",
    "ResourceNotFoundException",
    "RetryQuota",
    "Send",
    "Service",
    "Signer",
    "TransactionCanceledException",
    "TransactionConflictException",
    "TransportError",
    "configured_endpoint",
    "deadline",
    "endpoint_url",
    "error_code",
    "from_env",
    "partition",
    "retry_kind",
    "set_interceptor",
    "time_left",
    "timeouts_from_env",
    "without_deadline",
]

log = logging.getLogger("switchboard.awsjson")

_AMZ_DATE = "%Y%m%dT%H%M%SZ"
_ALGORITHM = "AWS4-HMAC-SHA256"


# ---------------------------------------------------------------------------------- errors


class TransportError(Exception):
    """The service could not be reached, or did not answer in time, after the retries."""


class DeadlineExceeded(TransportError):
    """The call's deadline (``awsjson.deadline``) passed before the service answered: no attempt was
    left running, and no backoff sleeps past it."""


class ClientError(Exception):
    """The service answered with an error. ``response`` is shaped like botocore's ``ClientError``'s:
    ``{"Error": {"Code", "Message"}, "ResponseMetadata": {...}, **the error's other fields}``."""

    def __init__(self, response: dict[str, Any], operation_name: str) -> None:
        error = response.get("Error", {})
        super().__init__(
            f"An error occurred ({error.get('Code', 'Unknown')}) when calling the {operation_name} "
            f"operation: {error.get('Message', '')}"
        )
        self.response = response
        self.operation_name = operation_name


class ConditionalCheckFailedException(ClientError):
    pass


class TransactionCanceledException(ClientError):
    pass


class TransactionConflictException(ClientError):
    pass


class ProvisionedThroughputExceededException(ClientError):
    pass


class ResourceNotFoundException(ClientError):
    pass


class ParameterNotFound(ClientError):
    pass


class DecryptionFailure(ClientError):
    pass


class _Exceptions:
    """``client.exceptions``: the error classes a service's callers catch by name, as in boto3."""

    def __init__(self, classes: tuple[type[ClientError], ...]) -> None:
        self.ClientError = ClientError
        self._by_code = {cls.__name__: cls for cls in classes}
        for cls in classes:
            setattr(self, cls.__name__, cls)

    def for_code(self, code: str) -> type[ClientError]:
        return self._by_code.get(code, ClientError)


# Retried like botocore's standard mode (botocore/retries/standard.py); tests/unit/test_awsjson_retries.py
# compares these, and the decisions made from them, with botocore's own.
_THROTTLING_CODES = frozenset(
    {
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "RequestThrottledException",
        "TooManyRequestsException",
        "ProvisionedThroughputExceededException",
        "TransactionInProgressException",  # the same ClientRequestToken still running: wait, resend
        "RequestLimitExceeded",
        "BandwidthLimitExceeded",
        "LimitExceededException",
        "RequestThrottled",
        "SlowDown",
        "PriorRequestNotComplete",
        "EC2ThrottledException",
    }
)
_TRANSIENT_CODES = frozenset({"RequestTimeout", "RequestTimeoutException", "PriorRequestNotComplete"})
_TRANSIENT_STATUS = frozenset({500, 502, 503, 504})
_THROTTLING_STATUS = 429  # throttling, unless the code is one of the operation's modeled errors
# What a dropped connection, a refused one or a timeout raises out of http.client.
_TRANSPORT_ERRORS = (OSError, http.client.HTTPException)

THROTTLING = "throttling"
TRANSIENT = "transient"
_MAX_BACKOFF_S = 20.0  # botocore's ExponentialBackoff._MAX_BACKOFF
_THROTTLING_BASE_S = 1.0
_RETRY_AFTER_MAX_ADDITIONAL_S = 5.0  # x-amz-retry-after may raise a delay by at most this much


class RetryQuota:
    """botocore's standard-mode retry quota (``retries/quota.py`` and ``RetryQuotaChecker``), one
    per client: a retry takes 14 tokens (5 after a throttling error) out of 500; a call that
    succeeds gives back what its last retry took, or 1 token if it needed none. Once the tokens
    run out, a failure is raised at once instead of retried, so an outage is not multiplied by
    every caller's retries."""

    INITIAL_CAPACITY = 500
    RETRY_COST = 14
    THROTTLING_RETRY_COST = 5
    NO_RETRY_INCREMENT = 1

    def __init__(self, capacity: int = INITIAL_CAPACITY) -> None:
        self.capacity = capacity
        self.available = capacity
        self._lock = threading.Lock()

    def acquire(self, throttled: bool) -> int:
        """Take a retry's tokens: how many were taken, 0 when there are not enough."""
        cost = self.THROTTLING_RETRY_COST if throttled else self.RETRY_COST
        with self._lock:
            if cost > self.available:
                return 0
            self.available -= cost
            return cost

    def release(self, amount: int) -> None:
        if self.available >= self.capacity:
            return
        with self._lock:
            self.available = min(self.capacity, self.available + amount)


def retry_kind(service: Service, operation: str, status: int | None, code: str | None) -> str | None:
    """How botocore's standard mode treats a failed attempt of ``operation``: ``THROTTLING``
    (retried, 1 s backoff base, 5 quota tokens), ``TRANSIENT`` (retried, the service's short base,
    14 tokens) or None (raised). ``status`` None is a transport error (no answer); ``code`` is the
    parsed error code. A DynamoDB checksum mismatch is transient too (the caller checks it)."""
    if code in _THROTTLING_CODES:
        return THROTTLING
    modeled = code is not None and code in service.modeled_errors.get(operation, ())
    if modeled and code in service.retryable_errors:
        return TRANSIENT
    if status == _THROTTLING_STATUS and not modeled:
        return THROTTLING
    if status is None or status in _TRANSIENT_STATUS or code in _TRANSIENT_CODES:
        return TRANSIENT
    return None


def _retry_after_s(headers: Mapping[str, str]) -> float | None:
    """``x-amz-retry-after``: milliseconds, as botocore reads it; None when absent or invalid."""
    raw = headers.get("x-amz-retry-after")
    if raw is None:
        return None
    try:
        value = int(raw) / 1000.0
    except (ValueError, OverflowError):
        return None
    return value if value >= 0 else None


# ------------------------------------------------------------------- timeouts and deadline

# Socket timeouts for every attempt. DynamoDB answers a single-item call in single-digit ms and a
# transaction in tens of ms; SSM and Secrets Manager (with a KMS decrypt) in tens to ~100 ms; a
# connection with TLS in the region takes ~10-50 ms. So 1 s to connect and 2 s to read are each
# more than 10x the slow case, yet bound a blackholed endpoint to ~3 s an attempt instead of
# botocore's 60 + 60 s. Settable per deployment (``timeouts_from_env``).
DEFAULT_CONNECT_TIMEOUT_S = 1.0
DEFAULT_READ_TIMEOUT_S = 2.0
CONNECT_TIMEOUT_ENV = "SWITCHBOARD_AWS_CONNECT_TIMEOUT_S"
READ_TIMEOUT_ENV = "SWITCHBOARD_AWS_READ_TIMEOUT_S"
DEFAULT_MAX_ATTEMPTS = 3
FAULTS_ENV = "SWITCHBOARD_AWS_FAULTS"  # tests only: see switchboard.devtools.awsfaults

_DEADLINE: ContextVar[float | None] = ContextVar("switchboard_awsjson_deadline", default=None)
_DEADLINE_SLACK_S = 0.001  # a socket timeout of exactly the time left may wake a hair early


def timeouts_from_env(env: Mapping[str, str]) -> tuple[float, float]:
    """(connect, read) socket timeouts in seconds: ``SWITCHBOARD_AWS_CONNECT_TIMEOUT_S`` and
    ``SWITCHBOARD_AWS_READ_TIMEOUT_S`` when set to a positive number, else 1 s and 2 s."""
    return (
        _positive(env.get(CONNECT_TIMEOUT_ENV), DEFAULT_CONNECT_TIMEOUT_S),
        _positive(env.get(READ_TIMEOUT_ENV), DEFAULT_READ_TIMEOUT_S),
    )


def _positive(raw: str | None, default: float) -> float:
    try:
        value = float(raw) if raw else default
    except ValueError:
        value = default
    return value if 0 < value < float("inf") else default


@contextmanager
def deadline(at: float | None) -> Iterator[None]:
    """Bound every call made inside the block by ``at`` (a ``time.monotonic()`` value; None: no
    bound): its attempts, its backoffs and each socket wait end by then, and a call still without
    an answer raises ``DeadlineExceeded``. Nested deadlines keep the earlier one. Context variables
    are copied into ``asyncio.to_thread``'s thread, so this bounds the thread's call::

        with awsjson.deadline(time.monotonic() + 2):
            item = await asyncio.to_thread(client.get_item, TableName=t, Key=k)
    """
    current = _DEADLINE.get()
    token = _DEADLINE.set(current if at is None else at if current is None else min(at, current))
    try:
        yield
    finally:
        _DEADLINE.reset(token)


@contextmanager
def without_deadline() -> Iterator[None]:
    """Lift any ``deadline`` for the block: for work that outlives the request that started it (a
    background refresh or settlement spawned inside a request's ``deadline`` copies its context,
    and with it the deadline)."""
    token = _DEADLINE.set(None)
    try:
        yield
    finally:
        _DEADLINE.reset(token)


def time_left() -> float | None:
    """Seconds until the current ``deadline``, None when there is none."""
    at = _DEADLINE.get()
    return None if at is None else at - time.monotonic()


# -------------------------------------------------------------------------------- services


@dataclass(frozen=True, slots=True)
class Service:
    """One AWS JSON-protocol service: how to address, sign and name its operations."""

    name: str  # signing name and endpoint prefix
    endpoint_env: str  # AWS_ENDPOINT_URL_<this>, as botocore spells the service id
    target_prefix: str  # X-Amz-Target: <prefix>.<Operation>
    json_version: str  # Content-Type: application/x-amz-json-<version>
    operations: Mapping[str, str]  # boto3 method name -> operation name
    errors: tuple[type[ClientError], ...] = ()
    crc32: bool = False  # answers carry x-amz-crc32 (DynamoDB)
    transient_base_s: float = 0.05  # first retry's backoff ceiling for a non-throttling error
    # From botocore's service model, for its retry rules: each operation's modeled error codes (a
    # 429 with one of them is not retried as throttling), and those modeled as retryable.
    modeled_errors: Mapping[str, frozenset[str]] = field(default_factory=dict)
    retryable_errors: frozenset[str] = frozenset()


_DDB_READ_ERRORS = frozenset(
    {
        "InternalServerError",
        "ProvisionedThroughputExceededException",
        "RequestLimitExceeded",
        "ResourceNotFoundException",
        "ThrottlingException",
    }
)
_DDB_WRITE_ERRORS = _DDB_READ_ERRORS | {
    "ConditionalCheckFailedException",
    "ItemCollectionSizeLimitExceededException",
    "ReplicatedWriteConflictException",
    "TransactionConflictException",
}

DYNAMODB = Service(
    "dynamodb",
    "DYNAMODB",
    "DynamoDB_20120810",
    "1.0",
    {
        "get_item": "GetItem",
        "put_item": "PutItem",
        "update_item": "UpdateItem",
        "delete_item": "DeleteItem",
        "query": "Query",
        "batch_get_item": "BatchGetItem",
        "transact_write_items": "TransactWriteItems",
    },
    (
        ConditionalCheckFailedException,
        TransactionCanceledException,
        TransactionConflictException,
        ProvisionedThroughputExceededException,
        ResourceNotFoundException,
    ),
    crc32=True,
    transient_base_s=0.025,  # botocore's DynamoDB figure
    modeled_errors={
        "GetItem": _DDB_READ_ERRORS,
        "Query": _DDB_READ_ERRORS,
        "BatchGetItem": _DDB_READ_ERRORS,
        "PutItem": _DDB_WRITE_ERRORS,
        "UpdateItem": _DDB_WRITE_ERRORS,
        "DeleteItem": _DDB_WRITE_ERRORS,
        "TransactWriteItems": _DDB_READ_ERRORS
        | {
            "IdempotentParameterMismatchException",
            "TransactionCanceledException",
            "TransactionInProgressException",
        },
    },
    retryable_errors=frozenset({"ReplicatedWriteConflictException"}),
)
SSM = Service(
    "ssm",
    "SSM",
    "AmazonSSM",
    "1.1",
    {
        "get_parameter": "GetParameter",
        "get_parameters": "GetParameters",  # a split routing document's parts (switchboard.routing.parts)
        "get_parameters_by_path": "GetParametersByPath",
    },
    (ParameterNotFound,),
    modeled_errors={
        "GetParameter": frozenset(
            {"InternalServerError", "InvalidKeyId", "ParameterNotFound", "ParameterVersionNotFound"}
        ),
        "GetParameters": frozenset({"InternalServerError", "InvalidKeyId"}),
        "GetParametersByPath": frozenset(
            {
                "InternalServerError",
                "InvalidFilterKey",
                "InvalidFilterOption",
                "InvalidFilterValue",
                "InvalidKeyId",
                "InvalidNextToken",
            }
        ),
    },
)
SECRETS_MANAGER = Service(
    "secretsmanager",
    "SECRETS_MANAGER",
    "secretsmanager",
    "1.1",
    {"get_secret_value": "GetSecretValue"},
    (ResourceNotFoundException, DecryptionFailure),
    modeled_errors={
        "GetSecretValue": frozenset(
            {
                "DecryptionFailure",
                "InternalServiceError",
                "InvalidParameterException",
                "InvalidRequestException",
                "ResourceNotFoundException",
            }
        )
    },
)
SERVICES: Mapping[str, Service] = {s.name: s for s in (DYNAMODB, SSM, SECRETS_MANAGER)}


@dataclass(frozen=True, slots=True)
class Partition:
    """An AWS partition whose endpoints for these services are ``https://<service>.<region>.<suffix>``
    (botocore's endpoint rule sets give exactly that when FIPS and dual-stack are off)."""

    name: str
    dns_suffix: str
    region_pattern: re.Pattern[str]  # botocore's partitions.json regionRegex


# The allow-list. The isolated partitions (aws-iso*, their own suffixes and CA bundles) and the
# European sovereign cloud (aws-eusc, amazonaws.eu) are left to boto3, as is any region no
# pattern matches: botocore resolves those through its own data.
PARTITIONS = (
    Partition("aws", "amazonaws.com", re.compile(r"^(us|eu|ap|sa|ca|me|af|il|mx)\-\w+\-\d+$")),
    Partition("aws-cn", "amazonaws.com.cn", re.compile(r"^cn\-\w+\-\d+$")),
    Partition("aws-us-gov", "amazonaws.com", re.compile(r"^us\-gov\-\w+\-\d+$")),
)


def partition(region: str) -> Partition | None:
    """The allow-listed partition ``region`` belongs to, or None (boto3 resolves it)."""
    for candidate in PARTITIONS:
        if candidate.region_pattern.match(region):
            return candidate
    return None


def configured_endpoint(service: Service, env: Mapping[str, str]) -> str | None:
    """``AWS_ENDPOINT_URL_<SERVICE>``, then ``AWS_ENDPOINT_URL`` (as botocore honours them, unless
    ``AWS_IGNORE_CONFIGURED_ENDPOINT_URLS`` is true), else None."""
    if env.get("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS", "").strip().lower() != "true":
        for name in (f"AWS_ENDPOINT_URL_{service.endpoint_env}", "AWS_ENDPOINT_URL"):
            if env.get(name):
                return env[name]
    return None


def endpoint_url(service: Service, region: str, env: Mapping[str, str]) -> str | None:
    """The configured endpoint (``configured_endpoint``), else the service's regional endpoint in
    an allow-listed partition; None when neither (boto3 resolves it)."""
    configured = configured_endpoint(service, env)
    if configured is not None:
        return configured
    found = partition(region)
    return None if found is None else f"https://{service.name}.{region}.{found.dns_suffix}"


# --------------------------------------------------------------------------------- signing


@dataclass(frozen=True, slots=True)
class Credentials:
    """Static credentials. Only the access key id shows in a repr."""

    access_key: str
    secret_key: str = field(repr=False)
    token: str | None = field(default=None, repr=False)

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Credentials | None:
        """The environment's credentials (how Lambda hands the role's to the runtime), or None."""
        access, secret = env.get("AWS_ACCESS_KEY_ID"), env.get("AWS_SECRET_ACCESS_KEY")
        if not access or not secret:
            return None
        return cls(access, secret, env.get("AWS_SESSION_TOKEN") or None)


def _hmac(key: bytes, text: str) -> bytes:
    return hmac.new(key, text.encode(), hashlib.sha256).digest()


class Signer:
    """Signature Version 4 for one region and service (AWS's "Create a signed AWS API request").

    The signing key depends only on the date, the region and the service, so it is derived once
    per day (UTC) instead of with four HMACs per request."""

    def __init__(self, credentials: Credentials, region: str, service: str) -> None:
        self.credentials = credentials
        self.region = region
        self.service = service
        self._key: tuple[str, bytes] | None = None

    def signing_key(self, day: str) -> bytes:
        cached = self._key
        if cached is not None and cached[0] == day:
            return cached[1]
        key = _hmac(("AWS4" + self.credentials.secret_key).encode(), day)
        for part in (self.region, self.service, "aws4_request"):
            key = _hmac(key, part)
        self._key = (day, key)
        return key

    def sign(
        self,
        method: str,
        path: str,
        headers: Mapping[str, str],
        body: bytes,
        now: float,
        query: str = "",
    ) -> dict[str, str]:
        """The headers to add to a request: ``X-Amz-Date``, ``X-Amz-Security-Token`` (with a session
        token) and ``Authorization``. ``headers`` must include ``Host``; every header given is
        signed. ``query`` is the canonical query string (already sorted and encoded)."""
        amz_date = time.strftime(_AMZ_DATE, time.gmtime(now))
        added = {"X-Amz-Date": amz_date}
        if self.credentials.token:
            added["X-Amz-Security-Token"] = self.credentials.token
        canonical = sorted((k.lower(), " ".join(v.split())) for k, v in (*headers.items(), *added.items()))
        signed_names = ";".join(name for name, _ in canonical)
        request = "\n".join(
            (
                method,
                quote(path or "/", safe="/~"),
                query,
                "".join(f"{name}:{value}\n" for name, value in canonical),
                signed_names,
                hashlib.sha256(body).hexdigest(),
            )
        )
        day = amz_date[:8]
        scope = f"{day}/{self.region}/{self.service}/aws4_request"
        to_sign = f"{_ALGORITHM}\n{amz_date}\n{scope}\n{hashlib.sha256(request.encode()).hexdigest()}"
        signature = hmac.new(self.signing_key(day), to_sign.encode(), hashlib.sha256).hexdigest()
        added["Authorization"] = (
            f"{_ALGORITHM} Credential={self.credentials.access_key}/{scope}, "
            f"SignedHeaders={signed_names}, Signature={signature}"
        )
        return added


# ------------------------------------------------------------------------------- transport


@cache
def _ssl_context() -> ssl.SSLContext:
    return ssl.create_default_context()


class _Connection:
    """A thread's keep-alive connection, listed in its client's set of open connections.

    It is closed when dropped: by the client after a failure or a ``Connection: close``, by its
    thread's end (the thread-local goes), or with the client (``weakref.finalize``, which the
    cyclic GC runs before it finalises the sockets, so none is left to warn as unclosed)."""

    __slots__ = ("http", "open", "used")

    def __init__(self, conn: http.client.HTTPConnection, open_set: set[http.client.HTTPConnection]) -> None:
        self.http = conn
        self.open = open_set
        self.used = False  # has carried a request: a failure may just mean the server closed it
        open_set.add(conn)

    def reusable(self) -> bool:
        """False when the server has closed the connection while it was idle (its socket reads as
        ready: the end of the stream), as urllib3 checks before it reuses one; one poll, no wait."""
        sock = self.http.sock
        if sock is None:
            return False
        try:
            poller = select.poll()
            poller.register(sock, select.POLLIN)
            return not poller.poll(0)
        except (OSError, ValueError):
            return False

    def close(self) -> None:
        self.open.discard(self.http)
        self.http.close()

    def __del__(self) -> None:
        self.close()


def _close_all(open_set: set[http.client.HTTPConnection]) -> None:
    for conn in list(open_set):
        open_set.discard(conn)
        conn.close()


def _json_default(value: object) -> str:
    if isinstance(value, bytes | bytearray):  # DynamoDB B/BS values, as boto3 takes them
        return base64.b64encode(value).decode()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable in an AWS request")


# ---------------------------------------------------------------------------------- client

# (service, operation, region) -> a context manager around the call (an X-Ray subsegment)
Trace = Callable[[str, str, str], AbstractContextManager[object]]

# One attempt's answer on the wire: (status, lower-cased headers, body).
Answer = tuple[int, dict[str, str], bytes]


class Send(Protocol):
    """Make the attempt's real exchange; ``via`` sends it to that (host, port) over plain HTTP
    instead of the endpoint, on a connection of its own (a test seam: a socket that never answers)."""

    def __call__(self, via: tuple[str, int] | None = None) -> Answer: ...


# A test seam around each attempt: (client, operation, request body, send) -> the answer, or raise
# what the socket would. Set only by ``switchboard.devtools.awsfaults``; None in production.
Interceptor = Callable[["Client", str, bytes, Send], Answer]
_interceptor: Interceptor | None = None


def set_interceptor(hook: Interceptor | None) -> Interceptor | None:
    """Put ``hook`` around every attempt of every client without one of its own
    (``Client.interceptor``); the previous hook is returned. For ``switchboard.devtools.awsfaults``."""
    global _interceptor
    previous, _interceptor = _interceptor, hook
    return previous


class Client:
    """A boto3-compatible low-level client for ``service``'s operations in ``Service.operations``:
    ``client.get_item(TableName=..., Key=...)`` sends ``DynamoDB_20120810.GetItem``."""

    def __init__(
        self,
        service: Service,
        region: str,
        credentials: Credentials,
        endpoint: str,
        *,
        connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S,
        read_timeout_s: float = DEFAULT_READ_TIMEOUT_S,
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
        max_backoff_s: float = _MAX_BACKOFF_S,
        retry_quota: RetryQuota | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.time,
        jitter: Callable[[], float] = random.random,
    ) -> None:
        parts = urlsplit(endpoint)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"endpoint {endpoint!r} is not an http(s) URL")
        self.service = service
        self.region = region
        self.endpoint = endpoint
        self.exceptions = _Exceptions(service.errors)
        self.trace: Trace | None = None  # set by switchboard.infra.aws when X-Ray tracing is on
        self.interceptor: Interceptor | None = None  # a test seam (switchboard.devtools.awsfaults)
        self.retry_quota = retry_quota if retry_quota is not None else RetryQuota()
        self.connect_timeout_s = connect_timeout_s
        self.read_timeout_s = read_timeout_s
        self._signer = Signer(credentials, region, service.name)
        self._https = parts.scheme == "https"
        self._address = (parts.hostname, parts.port or (443 if self._https else 80))
        default_port = parts.port is None or parts.port == (443 if self._https else 80)
        host = parts.hostname if ":" not in parts.hostname else f"[{parts.hostname}]"
        self._host = host if default_port else f"{host}:{parts.port}"
        self._path = parts.path or "/"
        self._content_type = f"application/x-amz-json-{service.json_version}"
        self._max_attempts = max(1, max_attempts)
        self._max_backoff_s = max_backoff_s
        self._sleep = sleep
        self._clock = clock
        self._jitter = jitter
        self._listeners: list[Callable[[str], None]] = []
        self._local = threading.local()
        self._open: set[http.client.HTTPConnection] = set()
        weakref.finalize(self, _close_all, self._open)

    def __repr__(self) -> str:
        return f"<awsjson.Client {self.service.name} {self.region} {self.endpoint}>"

    def __getattr__(self, name: str) -> Callable[..., dict[str, Any]]:
        service: Service | None = self.__dict__.get("service")  # None while being built or copied
        operation = service.operations.get(name) if service is not None else None
        if service is None or operation is None:
            raise AttributeError(f"awsjson.Client has no operation {name!r}")
        # Not cached on the instance: a bound method there would be a reference cycle, and a
        # client collected by the cyclic GC could not close its sockets before they are finalised.
        return partial(self._operation, operation)

    def _operation(self, operation: str, **params: Any) -> dict[str, Any]:
        return self.call(operation, params)

    def on_call(self, listener: Callable[[str], None]) -> None:
        """Run ``listener(operation)`` before each call (botocore's ``before-call`` event). Idempotent."""
        if listener not in self._listeners:
            self._listeners.append(listener)

    def close(self) -> None:
        """Close every connection (at shutdown: a call in flight on another thread would be retried)."""
        self._local.__dict__.pop("conn", None)
        _close_all(self._open)

    def drop_connection(self) -> None:
        """Close this thread's keep-alive connection (the next attempt opens a new one), as after
        a reset. Other threads' connections are left alone."""
        holder: _Connection | None = self._local.__dict__.pop("conn", None)
        if holder is not None:
            holder.close()

    def socket_timeouts(self) -> tuple[float, float]:
        """(connect, read) timeouts for the next socket wait: the client's, cut to the time left
        before the current ``deadline``."""
        left = time_left()
        if left is None:
            return self.connect_timeout_s, self.read_timeout_s
        left = max(left, _DEADLINE_SLACK_S)
        return min(self.connect_timeout_s, left), min(self.read_timeout_s, left)

    def call(self, operation: str, params: Mapping[str, Any]) -> dict[str, Any]:
        """Send ``operation`` with ``params`` (the wire JSON); its answer, with ``ResponseMetadata``."""
        for listener in self._listeners:
            listener(operation)
        if operation == "TransactWriteItems" and "ClientRequestToken" not in params:
            params = {**params, "ClientRequestToken": str(uuid.uuid4())}  # as botocore: idempotent retries
        body = json.dumps(params, separators=(",", ":"), default=_json_default).encode()
        if self.trace is None:
            return self._call(operation, body)
        with self.trace(self.service.name, operation, self.region):
            return self._call(operation, body)

    def _call(self, operation: str, body: bytes) -> dict[str, Any]:
        target = f"{self.service.target_prefix}.{operation}"
        attempt, taken = 0, 0  # taken: the retry quota the last retry took
        while True:
            attempt += 1
            left = time_left()
            if left is not None and left <= _DEADLINE_SLACK_S:
                raise DeadlineExceeded(f"{operation}: the deadline passed before attempt {attempt}")
            failure: Exception
            retry_after: float | None = None
            try:
                status, headers, data = self._attempt(operation, target, body)
            except _TRANSPORT_ERRORS as exc:
                left = time_left()
                if left is not None and left <= _DEADLINE_SLACK_S:
                    raise DeadlineExceeded(
                        f"{operation} to {self.endpoint}: no answer by the deadline ({type(exc).__name__})"
                    ) from exc
                failure, kind = exc, TRANSIENT
            else:
                metadata = {
                    "RequestId": headers.get("x-amzn-requestid", ""),
                    "HTTPStatusCode": status,
                    "HTTPHeaders": headers,
                    "RetryAttempts": attempt - 1,
                }
                if self.service.crc32 and not _crc_ok(headers, data):
                    failure, kind = (
                        TransportError(f"{operation}: the answer failed its CRC32 check"),
                        TRANSIENT,
                    )
                elif 200 <= status < 300:
                    self.retry_quota.release(taken or RetryQuota.NO_RETRY_INCREMENT)
                    answer = _json_object(data)
                    if answer is None:  # a proxy's page, say: not the service's answer
                        raise TransportError(f"{operation}: the {status} answer is not a JSON object")
                    answer["ResponseMetadata"] = metadata
                    return answer
                else:
                    error = self._error(operation, status, headers, data, metadata)
                    found = retry_kind(self.service, operation, status, error.response["Error"]["Code"])
                    if found is None:
                        raise error
                    failure, kind, retry_after = error, found, _retry_after_s(headers)
            if attempt >= self._max_attempts:
                raise self._final(operation, attempt, failure)
            taken = self.retry_quota.acquire(throttled=kind == THROTTLING)
            if not taken:
                log.debug("%s: retry quota exhausted, not retrying", operation)
                raise self._final(operation, attempt, failure)
            delay = self._delay(attempt, kind, retry_after)
            left = time_left()
            if left is not None and delay >= left:
                raise DeadlineExceeded(
                    f"{operation}: the deadline falls within the backoff after attempt {attempt}"
                ) from failure
            log.debug("%s: %s, retrying in %.3f s", operation, type(failure).__name__, delay)
            self._sleep(delay)

    def _final(self, operation: str, attempt: int, failure: Exception) -> Exception:
        """What a call that gives up raises: the service's error as is, else a ``TransportError``."""
        if isinstance(failure, ClientError | TransportError):
            return failure
        error = TransportError(
            f"{operation} to {self.endpoint} failed after {attempt} attempts: {type(failure).__name__}"
        )
        error.__cause__ = failure
        return error

    def _delay(self, attempt: int, kind: str, retry_after: float | None) -> float:
        # botocore's ExponentialBackoff: rand(0, 1) * min(base * 2^(attempt-1), 20 s), with a base
        # of 1 s after a throttling error, else 50 ms (25 ms for DynamoDB); an x-amz-retry-after
        # raises it to that value, but by at most 5 s.
        base = _THROTTLING_BASE_S if kind == THROTTLING else self.service.transient_base_s
        delay = self._jitter() * min(base * 2.0 ** (attempt - 1), self._max_backoff_s)
        if retry_after is not None:
            delay = max(delay, min(retry_after, delay + _RETRY_AFTER_MAX_ADDITIONAL_S))
        return delay

    def _error(
        self, operation: str, status: int, headers: Mapping[str, str], data: bytes, metadata: dict[str, Any]
    ) -> ClientError:
        try:
            parsed = json.loads(data) if data else {}
        except ValueError:
            parsed = None
        if isinstance(parsed, dict):
            message = str(parsed.get("message") or parsed.get("Message") or "")
        else:  # not JSON (a proxy's page): the status is the code, as botocore
            parsed, message = {}, http.client.responses.get(status, "")
        extra = {k: v for k, v in parsed.items() if k != "__type"}  # botocore's modeled fields
        code = error_code(str(parsed.get("__type") or headers.get("x-amzn-errortype") or status))
        response = {**extra, "Error": {"Code": code, "Message": message}, "ResponseMetadata": metadata}
        return self.exceptions.for_code(code)(response, operation)

    # ------------------------------------------------------------------------- the wire

    def _attempt(self, operation: str, target: str, body: bytes) -> Answer:
        hook = self.interceptor or _interceptor
        if hook is None:
            return self._send(target, body)
        return hook(self, operation, body, partial(self._send, target, body))

    def _send(self, target: str, body: bytes, via: tuple[str, int] | None = None) -> Answer:
        headers = {
            "Host": self._host,
            "Content-Type": self._content_type,
            "X-Amz-Target": target,
        }
        headers.update(self._signer.sign("POST", self._path, headers, body, self._clock()))
        if via is not None:
            once = _Connection(self._connect(via, tls=False), self._open)
            try:
                return self._exchange(once, headers, body)
            finally:
                once.close()
        holder: _Connection | None = getattr(self._local, "conn", None)
        if holder is not None and not holder.reusable():
            self._drop(holder)
            holder = None
        if holder is not None and holder.used:
            try:
                self._write(holder, headers, body)
            except (ConnectionResetError, BrokenPipeError):
                # The server had closed the idle keep-alive connection: the request could not reach
                # it, so it goes again on a new one, not as a new attempt. Once it is written, a
                # failure is an attempt's (the service may have applied it): the retry rules decide.
                log.debug("%s: keep-alive connection closed by the server; reconnecting", target)
            else:
                return self._read(holder)
        holder = _Connection(self._connect(self._address, tls=self._https), self._open)
        self._local.conn = holder
        return self._exchange(holder, headers, body)

    def _exchange(self, holder: _Connection, headers: dict[str, str], body: bytes) -> Answer:
        self._write(holder, headers, body)
        return self._read(holder)

    def _write(self, holder: _Connection, headers: dict[str, str], body: bytes) -> None:
        try:
            holder.used = True
            sock, read_s = holder.http.sock, self.socket_timeouts()[1]
            if sock is not None and sock.gettimeout() != read_s:  # the deadline may cut it
                sock.settimeout(read_s)
            holder.http.request("POST", self._path, body, headers)
        except BaseException:
            self._drop(holder)  # its state is unknown: never reuse it
            raise

    def _read(self, holder: _Connection) -> Answer:
        try:
            response = holder.http.getresponse()
            data = response.read()
        except BaseException:
            self._drop(holder)
            raise
        if response.will_close:
            self._drop(holder)
        return response.status, {k.lower(): v for k, v in response.getheaders()}, data

    def _drop(self, holder: _Connection) -> None:
        if self._local.__dict__.get("conn") is holder:
            del self._local.conn
        holder.close()

    def _connect(self, address: tuple[str, int], *, tls: bool) -> http.client.HTTPConnection:
        host, port = address
        timeout = self.socket_timeouts()[0]
        conn: http.client.HTTPConnection
        if tls:
            conn = http.client.HTTPSConnection(host, port, timeout=timeout, context=_ssl_context())
        else:
            conn = http.client.HTTPConnection(host, port, timeout=timeout)
        conn.connect()  # the TLS handshake too: both within the connect timeout
        return conn


def error_code(raw: str) -> str:
    """An error code as botocore's JSON parser reads it from ``__type``: the part before any ``:``
    (``Foo:http://internal.amazon.com/...``), then after the last ``#``
    (``com.amazonaws.dynamodb.v20120810#ConditionalCheckFailedException``)."""
    return raw.split(":", 1)[0].rsplit("#", 1)[-1]


def _json_object(data: bytes) -> dict[str, Any] | None:
    try:
        parsed = json.loads(data) if data else {}
    except ValueError:
        return None
    return parsed if isinstance(parsed, dict) else None


def _crc_ok(headers: Mapping[str, str], data: bytes) -> bool:
    expected = headers.get("x-amz-crc32")
    return expected is None or (expected.isdigit() and zlib.crc32(data) == int(expected))


def from_env(service: str, region: str, env: Mapping[str, str] | None = None) -> Client | None:
    """A client for ``service`` from the environment (default ``os.environ``), or None when boto3
    is needed: credentials not in the environment, FIPS or dual-stack endpoints asked for, or a
    region outside the allow-listed partitions (``PARTITIONS``) with no endpoint configured.
    Socket timeouts from ``timeouts_from_env``. With ``SWITCHBOARD_AWS_FAULTS`` set (tests only),
    the client injects the faults it describes (``switchboard.devtools.awsfaults``)."""
    env = os.environ if env is None else env
    spec = SERVICES.get(service)
    credentials = Credentials.from_env(env)
    if spec is None or credentials is None:
        return None
    for name in ("AWS_USE_FIPS_ENDPOINT", "AWS_USE_DUALSTACK_ENDPOINT"):
        if env.get(name, "").strip().lower() == "true":
            return None
    endpoint = endpoint_url(spec, region, env)
    if endpoint is None:
        return None
    connect_s, read_s = timeouts_from_env(env)
    client = Client(spec, region, credentials, endpoint, connect_timeout_s=connect_s, read_timeout_s=read_s)
    if env.get(FAULTS_ENV):
        from switchboard.devtools import awsfaults  # test-only; never imported unless asked for

        client.interceptor = awsfaults.from_env(env)
    return client
