"""Which AWS the CLI talks to: the account in the environment, or the local stack.

``--dev`` (accepted by every subcommand) or ``SWITCHBOARD_DEV=1`` points every AWS client at the
local stack of ``switchboard dev``: its moto endpoint, dummy credentials and the stack's region.
The endpoint is found one way everywhere: ``AWS_ENDPOINT_URL`` when it is set (it wins, dev or
not), else ``127.0.0.1:$MOTO_PORT`` (5055). An endpoint on loopback with no credentials in the
environment gets the dummy ones too: moto checks none, but boto3 refuses to sign without some.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, MutableMapping
from urllib.parse import urlsplit

__all__ = ["DEV_REGION", "apply", "dev_requested", "local_endpoint"]

DEV_REGION = "us-east-1"  # the region the local stack seeds its tables and parameters in
DEFAULT_MOTO_PORT = "5055"
_TRUE = {"1", "true", "yes", "on"}
_DUMMY = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_SESSION_TOKEN": "testing"}


def dev_requested(flag: bool, env: Mapping[str, str]) -> bool:
    """``--dev`` on the command line, or ``SWITCHBOARD_DEV`` set to a true value."""
    return flag or env.get("SWITCHBOARD_DEV", "").strip().lower() in _TRUE


def local_endpoint(env: Mapping[str, str]) -> str:
    """The local stack's moto: ``AWS_ENDPOINT_URL`` when set, else ``127.0.0.1:$MOTO_PORT``."""
    return env.get("AWS_ENDPOINT_URL") or f"http://127.0.0.1:{env.get('MOTO_PORT') or DEFAULT_MOTO_PORT}"


def _loopback(url: str) -> bool:
    host = urlsplit(url).hostname or ""
    return host in {"localhost", "::1"} or host.startswith("127.")


def apply(dev: bool, env: MutableMapping[str, str] | None = None) -> str | None:
    """Set up ``env`` (default ``os.environ``) for the AWS the command should reach.

    Returns the endpoint every client will use, or None for AWS itself.
    """
    target = os.environ if env is None else env
    if dev:
        target["AWS_ENDPOINT_URL"] = local_endpoint(target)
        target.update(_DUMMY)
        target["AWS_REGION"] = target["AWS_DEFAULT_REGION"] = DEV_REGION
        target.pop("AWS_PROFILE", None)
        return target["AWS_ENDPOINT_URL"]
    endpoint = target.get("AWS_ENDPOINT_URL")
    if (
        endpoint
        and _loopback(endpoint)
        and not (target.get("AWS_ACCESS_KEY_ID") or target.get("AWS_PROFILE"))
    ):
        target.update(_DUMMY)
        target.setdefault("AWS_REGION", target.get("AWS_DEFAULT_REGION") or DEV_REGION)
    return endpoint or None
