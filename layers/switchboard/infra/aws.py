"""AWS clients, created once per process: the light one for serving, boto3 for everything else.

- ``runtime_client`` is what a serving process (the gateway, the sweeper) uses for its DynamoDB,
  SSM and Secrets Manager calls: ``switchboard.infra.awsjson``'s client when the environment holds the
  credentials (in Lambda it does), so serving never imports boto3 (~160 ms) nor builds its clients
  (40-70 ms each), and a call costs a fraction of botocore's CPU. Otherwise (a developer's profile
  or SSO login, FIPS or dual-stack endpoints, a partition ``awsjson`` leaves to boto3) it is a
  boto3 client configured like the light one (``serving_config``): the same short connect and read
  timeouts (``SWITCHBOARD_AWS_CONNECT_TIMEOUT_S``, ``SWITCHBOARD_AWS_READ_TIMEOUT_S``; 1 s and 2 s),
  standard retries with 3 attempts in all, and ``awsjson.deadline`` checked before each attempt
  is sent (botocore cannot cut a socket wait or a backoff short, so its bound is looser: an
  attempt already waiting ends within its read timeout).
- ``client`` is the boto3 client for the CLI and the tools, which need boto3's credential chain
  and every operation, and are not on a request's clock (longer timeouts). All boto3 clients come
  from one session (a session per client loads the same configuration and models again).

``AWS_ENDPOINT_URL`` (read by boto3 and by ``awsjson``) points every client at moto locally.
"""

from __future__ import annotations

import functools
import os
import threading
from typing import Any

from switchboard.infra import awsjson, tracing

__all__ = ["client", "runtime_client", "serving_config"]

_LOCK = threading.Lock()  # a boto3 session is not thread safe, and a client may be built in a thread


@functools.cache
def _session() -> Any:
    import boto3  # deferred: boto3 alone costs ~160 ms of import

    return boto3.session.Session()


@functools.cache
def client(service: str, region: str) -> Any:
    """A shared boto3 client for ``service`` in ``region`` (the CLI's and the tools')."""
    from botocore.config import Config

    config = Config(retries={"max_attempts": 3, "mode": "standard"}, connect_timeout=2, read_timeout=5)
    with _LOCK:
        return _session().client(service, region_name=region, config=config)


def serving_config(env: dict[str, str] | None = None) -> Any:
    """The botocore ``Config`` of a serving boto3 client: ``awsjson``'s timeouts and attempts."""
    from botocore.config import Config

    connect_s, read_s = awsjson.timeouts_from_env(os.environ if env is None else env)
    return Config(
        retries={"total_max_attempts": awsjson.DEFAULT_MAX_ATTEMPTS, "mode": "standard"},
        connect_timeout=connect_s,
        read_timeout=read_s,
    )


def _check_deadline(**_: Any) -> None:
    """botocore's ``before-send``: an attempt that would start past the call's deadline is not sent."""
    left = awsjson.time_left()
    if left is not None and left <= 0:
        raise awsjson.DeadlineExceeded("the deadline passed before the next attempt")


@functools.cache
def _serving_boto3(service: str, region: str) -> Any:
    with _LOCK:
        made = _session().client(service, region_name=region, config=serving_config())
    made.meta.events.register("before-send", _check_deadline, unique_id="switchboard-deadline")
    return made


@functools.cache
def runtime_client(service: str, region: str) -> Any:
    """The serving path's client for ``service`` (``dynamodb``, ``ssm``, ``secretsmanager``) in
    ``region``: light when the environment has credentials, else a boto3 client configured for
    serving. Same methods, arguments, answers and error codes either way (see
    ``switchboard.infra.awsjson``)."""
    light = awsjson.from_env(service, region)
    if light is None:
        return _serving_boto3(service, region)
    if tracing.enabled():  # X-Ray's botocore patch cannot see these calls: a subsegment each
        light.trace = tracing.aws_call
    return light
