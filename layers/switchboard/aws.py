"""AWS clients, created once per process: the light one for serving, boto3 for everything else.

- ``runtime_client`` is what a serving process (the gateway, the sweeper) uses for its DynamoDB,
  SSM and Secrets Manager calls: ``switchboard.awsjson``'s client when the environment holds the
  credentials (in Lambda it does), so serving never imports boto3 (~160 ms) nor builds its clients
  (40-70 ms each), and a call costs a fraction of botocore's CPU. Otherwise (a developer's profile
  or SSO login, FIPS or dual-stack endpoints) it is the boto3 client.
- ``client`` is the boto3 client: the CLI and the tools, which need boto3's credential chain and
  every operation. All of them come from one session (a session per client loads the same
  configuration and models again).

``AWS_ENDPOINT_URL`` (read by boto3 and by ``awsjson``) points every client at moto locally.
"""

from __future__ import annotations

import functools
import threading
from typing import Any

from switchboard import awsjson, tracing

__all__ = ["client", "runtime_client"]

_LOCK = threading.Lock()  # a boto3 session is not thread safe, and a client may be built in a thread


@functools.cache
def _session() -> Any:
    import boto3  # deferred: boto3 alone costs ~160 ms of import

    return boto3.session.Session()


@functools.cache
def client(service: str, region: str) -> Any:
    """A shared boto3 client for ``service`` in ``region``."""
    from botocore.config import Config

    config = Config(retries={"max_attempts": 3, "mode": "standard"}, connect_timeout=2, read_timeout=5)
    with _LOCK:
        return _session().client(service, region_name=region, config=config)


@functools.cache
def runtime_client(service: str, region: str) -> Any:
    """The serving path's client for ``service`` (``dynamodb``, ``ssm``, ``secretsmanager``) in
    ``region``: light when the environment has credentials, else the boto3 client. Same methods,
    arguments, answers and error codes either way (see ``switchboard.awsjson``)."""
    light = awsjson.from_env(service, region)
    if light is None:
        return client(service, region)
    if tracing.enabled():  # X-Ray's botocore patch cannot see these calls: a subsegment each
        light.trace = tracing.aws_call
    return light
