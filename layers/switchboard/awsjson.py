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

What it leaves to boto3 (``switchboard.aws`` picks): credentials that are not in the environment
(profiles, SSO, container or instance roles), FIPS and dual-stack endpoints, partitions other than
``aws``, ``aws-cn`` and ``aws-us-gov``, and every other service and operation. Lambda gives the
runtime its role's credentials in ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY`` and
``AWS_SESSION_TOKEN``, so there the light client serves.

Differences from boto3 a caller could see: no client-side parameter validation (the service
answers ``ValidationException`` instead of botocore's ``ParamValidationError``); answers are the
service's JSON as is, so timestamps (SSM's ``LastModifiedDate``) stay epoch numbers and DynamoDB
binary attributes stay base64 text; no retry quota (token bucket) across calls. Like botocore, a
``TransactWriteItems`` without ``ClientRequestToken`` gets a random one, so its retries are
idempotent, and DynamoDB answers are checked against their ``x-amz-crc32`` header.

Retries follow botocore's standard mode: at most 3 attempts, on a transport error (refused, reset,
timed out), a 500/502/503/504 or 429, a throttling code (``ThrottlingException``,
``ProvisionedThroughputExceededException``, ``RequestLimitExceeded``,
``TransactionInProgressException``...) or a DynamoDB checksum mismatch; exponential backoff with
full jitter, capped at 1 s. A keep-alive connection that the server closed while idle is reopened
at once, without counting as an attempt (checked before each reuse, as urllib3 does, and on a
send that finds it closed). Timeouts: 2 s to connect, 5 s to read. One connection per thread (the
call sites run in ``asyncio.to_thread``).

Errors::

    Exception
     ├── TransportError                       no answer after the retries (connection, timeout)
     └── ClientError                          the service answered with an error; .response
          ├── ConditionalCheckFailedException     (DynamoDB)
          ├── TransactionCanceledException        (DynamoDB; .response["CancellationReasons"])
          ├── TransactionConflictException        (DynamoDB)
          ├── ProvisionedThroughputExceededException (DynamoDB)
          ├── ResourceNotFoundException           (DynamoDB, Secrets Manager)
          ├── ParameterNotFound                   (SSM)
          └── DecryptionFailure                   (Secrets Manager)

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
import select
import ssl
import threading
import time
import uuid
import weakref
import zlib
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from functools import cache, partial
from typing import Any
from urllib.parse import quote, urlsplit

__all__ = [
    "DYNAMODB",
    "SECRETS_MANAGER",
    "SERVICES",
    "SSM",
    "Client",
    "ClientError",
    "ConditionalCheckFailedException",
    "Credentials",
    "DecryptionFailure",
    "ParameterNotFound",
    "ProvisionedThroughputExceededException",
    "ResourceNotFoundException",
    "Service",
    "Signer",
    "TransactionCanceledException",
    "TransactionConflictException",
    "TransportError",
    "endpoint_url",
    "from_env",
]

log = logging.getLogger("switchboard.awsjson")

_AMZ_DATE = "%Y%m%dT%H%M%SZ"
_ALGORITHM = "AWS4-HMAC-SHA256"


# ---------------------------------------------------------------------------------- errors


class TransportError(Exception):
    """The service could not be reached, or did not answer in time, after the retries."""


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


# Retried like botocore's standard mode (botocore/retries/standard.py).
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
# What a dropped connection, a refused one or a timeout raises out of http.client.
_TRANSPORT_ERRORS = (OSError, http.client.HTTPException)


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
)
SSM = Service("ssm", "SSM", "AmazonSSM", "1.1", {"get_parameter": "GetParameter"}, (ParameterNotFound,))
SECRETS_MANAGER = Service(
    "secretsmanager",
    "SECRETS_MANAGER",
    "secretsmanager",
    "1.1",
    {"get_secret_value": "GetSecretValue"},
    (ResourceNotFoundException, DecryptionFailure),
)
SERVICES: Mapping[str, Service] = {s.name: s for s in (DYNAMODB, SSM, SECRETS_MANAGER)}

# Partitions whose endpoints are <service>.<region>.<suffix>; others are left to boto3.
_UNSUPPORTED_REGION_PREFIXES = ("us-iso", "eu-iso")


def endpoint_url(service: Service, region: str, env: Mapping[str, str]) -> str:
    """``AWS_ENDPOINT_URL_<SERVICE>``, then ``AWS_ENDPOINT_URL`` (as botocore honours them, unless
    ``AWS_IGNORE_CONFIGURED_ENDPOINT_URLS`` is true), else the service's regional endpoint."""
    if env.get("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS", "").strip().lower() != "true":
        for name in (f"AWS_ENDPOINT_URL_{service.endpoint_env}", "AWS_ENDPOINT_URL"):
            if env.get(name):
                return env[name]
    suffix = "amazonaws.com.cn" if region.startswith("cn-") else "amazonaws.com"
    return f"https://{service.name}.{region}.{suffix}"


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
        connect_timeout_s: float = 2.0,
        read_timeout_s: float = 5.0,
        max_attempts: int = 3,
        max_backoff_s: float = 1.0,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.time,
    ) -> None:
        parts = urlsplit(endpoint)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"endpoint {endpoint!r} is not an http(s) URL")
        self.service = service
        self.region = region
        self.endpoint = endpoint
        self.exceptions = _Exceptions(service.errors)
        self.trace: Trace | None = None  # set by switchboard.aws when X-Ray tracing is on
        self._signer = Signer(credentials, region, service.name)
        self._https = parts.scheme == "https"
        self._address = (parts.hostname, parts.port or (443 if self._https else 80))
        default_port = parts.port is None or parts.port == (443 if self._https else 80)
        host = parts.hostname if ":" not in parts.hostname else f"[{parts.hostname}]"
        self._host = host if default_port else f"{host}:{parts.port}"
        self._path = parts.path or "/"
        self._content_type = f"application/x-amz-json-{service.json_version}"
        self._connect_timeout_s = connect_timeout_s
        self._read_timeout_s = read_timeout_s
        self._max_attempts = max(1, max_attempts)
        self._max_backoff_s = max_backoff_s
        self._sleep = sleep
        self._clock = clock
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
        attempt = 0
        while True:
            attempt += 1
            last = attempt >= self._max_attempts
            try:
                status, headers, data = self._send(target, body)
            except _TRANSPORT_ERRORS as exc:
                if last:
                    failure = type(exc).__name__
                    raise TransportError(
                        f"{operation} to {self.endpoint} failed after {attempt} attempts: {failure}"
                    ) from exc
                log.debug("%s: %s, retrying", operation, type(exc).__name__)
                self._backoff(attempt, throttled=False)
                continue
            metadata = {
                "RequestId": headers.get("x-amzn-requestid", ""),
                "HTTPStatusCode": status,
                "HTTPHeaders": headers,
                "RetryAttempts": attempt - 1,
            }
            if self.service.crc32 and not _crc_ok(headers, data):
                if last:
                    raise TransportError(f"{operation}: the answer failed its CRC32 check {attempt} times")
                self._backoff(attempt, throttled=False)
                continue
            if 200 <= status < 300:
                answer: dict[str, Any] = json.loads(data) if data else {}
                answer["ResponseMetadata"] = metadata
                return answer
            error = self._error(operation, status, data, metadata)
            code = error.response["Error"]["Code"]
            throttled = code in _THROTTLING_CODES or status == 429
            if last or not (throttled or code in _TRANSIENT_CODES or status in _TRANSIENT_STATUS):
                raise error
            log.debug("%s: %s (%s), retrying", operation, code, status)
            self._backoff(attempt, throttled=throttled)

    def _backoff(self, attempt: int, *, throttled: bool) -> None:
        # Full jitter: uniform in [0, min(cap, base * 2^(attempt-1))]; botocore's bases (1 s when
        # throttled, else 50 ms, 25 ms for DynamoDB), capped at max_backoff_s.
        base = 1.0 if throttled else self.service.transient_base_s
        self._sleep(random.random() * min(self._max_backoff_s, base * 2 ** (attempt - 1)))

    def _error(self, operation: str, status: int, data: bytes, metadata: dict[str, Any]) -> ClientError:
        try:
            parsed = json.loads(data) if data else {}
        except ValueError:
            parsed = None
        if not isinstance(parsed, dict):  # not JSON (a proxy's page): the status is the code, as botocore
            code, message, extra = str(status), http.client.responses.get(status, ""), {}
        else:
            extra = {k: v for k, v in parsed.items() if k != "__type"}  # botocore's modeled fields
            code = str(parsed.get("__type") or status).rsplit("#", 1)[-1]
            message = str(parsed.get("message") or parsed.get("Message") or "")
        response = {**extra, "Error": {"Code": code, "Message": message}, "ResponseMetadata": metadata}
        return self.exceptions.for_code(code)(response, operation)

    # ------------------------------------------------------------------------- the wire

    def _send(self, target: str, body: bytes) -> tuple[int, dict[str, str], bytes]:
        headers = {
            "Host": self._host,
            "Content-Type": self._content_type,
            "X-Amz-Target": target,
        }
        headers.update(self._signer.sign("POST", self._path, headers, body, self._clock()))
        holder: _Connection | None = getattr(self._local, "conn", None)
        if holder is not None and not holder.reusable():
            self._drop(holder)
            holder = None
        if holder is not None and holder.used:
            try:
                return self._exchange(holder, headers, body)
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                # The server closed the idle keep-alive connection: a new one, not a new attempt.
                log.debug("%s: keep-alive connection closed by the server; reconnecting", target)
        holder = _Connection(self._connect(), self._open)
        self._local.conn = holder
        return self._exchange(holder, headers, body)

    def _exchange(
        self, holder: _Connection, headers: dict[str, str], body: bytes
    ) -> tuple[int, dict[str, str], bytes]:
        try:
            holder.used = True
            holder.http.request("POST", self._path, body, headers)
            response = holder.http.getresponse()
            data = response.read()
        except BaseException:
            self._drop(holder)  # its state is unknown: never reuse it
            raise
        if response.will_close:
            self._drop(holder)
        return response.status, {k.lower(): v for k, v in response.getheaders()}, data

    def _drop(self, holder: _Connection) -> None:
        if self._local.__dict__.get("conn") is holder:
            del self._local.conn
        holder.close()

    def _connect(self) -> http.client.HTTPConnection:
        host, port = self._address
        conn: http.client.HTTPConnection
        if self._https:
            conn = http.client.HTTPSConnection(
                host, port, timeout=self._connect_timeout_s, context=_ssl_context()
            )
        else:
            conn = http.client.HTTPConnection(host, port, timeout=self._connect_timeout_s)
        conn.connect()
        if conn.sock is not None:  # connected within the connect timeout; now the read timeout
            conn.sock.settimeout(self._read_timeout_s)
        return conn


def _crc_ok(headers: Mapping[str, str], data: bytes) -> bool:
    expected = headers.get("x-amz-crc32")
    return expected is None or (expected.isdigit() and zlib.crc32(data) == int(expected))


def from_env(service: str, region: str, env: Mapping[str, str] | None = None) -> Client | None:
    """A client for ``service`` from the environment (default ``os.environ``), or None when boto3
    is needed: credentials not in the environment, FIPS or dual-stack endpoints asked for, or an
    unsupported partition."""
    env = os.environ if env is None else env
    spec = SERVICES.get(service)
    credentials = Credentials.from_env(env)
    if spec is None or credentials is None or region.startswith(_UNSUPPORTED_REGION_PREFIXES):
        return None
    for name in ("AWS_USE_FIPS_ENDPOINT", "AWS_USE_DUALSTACK_ENDPOINT"):
        if env.get(name, "").strip().lower() == "true":
            return None
    return Client(spec, region, credentials, endpoint_url(spec, region, env))
