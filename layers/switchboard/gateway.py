"""The gateway's dependencies, built once per process (Lambda init, or the server's lifespan)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from functools import partial

import httpx

from switchboard import aws, tracing
from switchboard.auth import Authenticator, SsmKeyAuthenticator
from switchboard.costevents import CostEvents
from switchboard.engine import Engine
from switchboard.lifecycle import Hook
from switchboard.pricing import PriceBook
from switchboard.routing.store import RoutingStore
from switchboard.secrets import SecretResolver
from switchboard.settings import Settings
from switchboard.spendledger import SpendLedger

__all__ = ["Gateway", "make_http_client"]

log = logging.getLogger("switchboard")


def make_http_client() -> httpx.AsyncClient:
    """The shared upstream client: httpx's API over aiohttp's transport (half the CPU per request)."""
    from httpx_aiohttp import AiohttpTransport

    limits = httpx.Limits(max_connections=256, max_keepalive_connections=64, keepalive_expiry=60)
    return httpx.AsyncClient(
        transport=AiohttpTransport(limits=limits, trust_env=False),
        timeout=httpx.Timeout(300.0, connect=5.0),
        follow_redirects=False,
        trust_env=False,
    )


def _count_rejection(reason: str) -> None:
    """A rejected routing edit: counted as a metric (EMF) so an alarm can fire on it."""
    from aws_lambda_powertools.metrics import MetricUnit, single_metric

    with single_metric(
        name="RoutingDocumentRejected", unit=MetricUnit.Count, value=1, namespace="Switchboard"
    ) as metric:
        metric.add_dimension(name="service", value="switchboard")


@dataclass
class Gateway:
    settings: Settings
    routing: RoutingStore
    auth: Authenticator
    engine: Engine
    hooks: list[Hook] = field(default_factory=list)
    prices: PriceBook = field(default_factory=PriceBook)

    @classmethod
    def from_env(cls, settings: Settings | None = None, http: httpx.AsyncClient | None = None) -> Gateway:
        """Wire the real AWS-backed dependencies. Creates clients now, so requests do not pay for it."""
        settings = settings or Settings.from_env()
        tracing.configure(settings.tracing)  # before any client exists: it patches botocore and httpx
        ssm = aws.client("ssm", settings.region)
        routing = RoutingStore.from_ssm(
            settings.routing_param, settings.routing_max_age_s, ssm, on_rejected=_count_rejection
        )
        secrets = SecretResolver(
            lambda: ssm, partial(aws.client, "secretsmanager", settings.region), settings.secret_max_age_s
        )
        auth = SsmKeyAuthenticator.from_ssm(settings.api_key_param, settings.key_cache_s, lambda: ssm)
        hooks: list[Hook] = []
        if settings.spend_ledger.lower() not in {"off", "false", "0", "no"}:
            ddb = aws.client("dynamodb", settings.region)
            hooks.append(SpendLedger(settings.table, lambda: ddb))
        hooks.append(CostEvents())
        return cls(settings, routing, auth, Engine(http or make_http_client(), secrets), hooks)

    async def aclose(self) -> None:
        await self.engine.http.aclose()
