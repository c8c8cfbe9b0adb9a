"""boto3 clients, created lazily and once per process (each costs 40-70 ms to build).

``AWS_ENDPOINT_URL`` (read by boto3 itself) points every client at moto locally.
"""

from __future__ import annotations

import functools
from typing import Any

__all__ = ["client"]


@functools.cache
def client(service: str, region: str) -> Any:
    """A shared boto3 client for ``service`` in ``region``."""
    import boto3  # deferred: boto3 alone costs ~180 ms of import
    from botocore.config import Config

    config = Config(retries={"max_attempts": 3, "mode": "standard"}, connect_timeout=2, read_timeout=5)
    return boto3.session.Session().client(service, region_name=region, config=config)
