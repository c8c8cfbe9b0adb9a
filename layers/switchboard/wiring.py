"""The gateway's dependencies, built once per process (Lambda init, or the server's lifespan)."""

from __future__ import annotations

import asyncio
import http.cookiejar
import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any

import httpx

from switchboard.billing.costevents import CostEvents
from switchboard.billing.spendledger import SpendLedger
from switchboard.core.principal import Authenticator
from switchboard.core.settings import Settings
from switchboard.exchange import Hook
from switchboard.infra import aws, tracing
from switchboard.routing.breaker import Breaker
from switchboard.routing.pricing import PriceBook
from switchboard.routing.router import Router
from switchboard.routing.rules import BudgetUse
from switchboard.routing.speed import SpeedBoard, SpeedStore
from switchboard.routing.store import RoutingStore
from switchboard.upstream import providers
from switchboard.upstream.engine import Engine
from switchboard.upstream.secrets import SecretResolver

if TYPE_CHECKING:
    from switchboard.core.money import Price
    from switchboard.limits.hook import LimitsHook
    from switchboard.routing.document import RoutingDocument
    from switchboard.routing.planner import PlannedTarget

__all__ = ["Gateway", "make_http_client", "price_lookup"]

log = logging.getLogger("switchboard")


def make_http_client(environ: Mapping[str, str] | None = None) -> httpx.AsyncClient:
    """The shared upstream client: httpx's API over ``h1.H1Transport`` (why: that module).

    No cookies are kept: one client serves every caller, so a cookie set by one caller's upstream
    answer must never ride on another caller's request (it also spares httpx's per-response cookie
    parsing, ~40 us a request).

    ``HTTPS_PROXY`` / ``HTTP_PROXY`` / ``NO_PROXY`` in ``environ`` (default: the process's) are
    honoured by ``h1.with_proxies``; httpx's own ``trust_env`` stays off, so nothing else of the
    environment (``.netrc``, ``SSL_CERT_*`` beyond what OpenSSL reads) changes the client.
    """
    from switchboard.infra.h1 import H1Transport, with_proxies

    direct = H1Transport(keepalive_s=60.0, max_idle=64)
    return httpx.AsyncClient(
        transport=with_proxies(direct, os.environ if environ is None else environ),
        timeout=httpx.Timeout(300.0, connect=5.0),
        follow_redirects=False,
        trust_env=False,
        cookies=_NoCookies(),
    )


class _NoCookies(http.cookiejar.CookieJar):
    """httpx's jar for the upstream client: keeps nothing (see ``make_http_client``)."""

    def extract_cookies(self, response: Any, request: Any) -> None:
        return None


def _count_rejection(reason: str) -> None:
    """A rejected routing edit: counted as a metric (EMF) so an alarm can fire on it."""
    from aws_lambda_powertools.metrics import MetricUnit, single_metric

    with single_metric(
        name="RoutingDocumentRejected", unit=MetricUnit.Count, value=1, namespace="Switchboard"
    ) as metric:
        metric.add_dimension(name="service", value="switchboard")


def price_lookup(prices: PriceBook) -> Callable[[RoutingDocument, PlannedTarget], Price | None]:
    """The price of a target as metering finds it (the document's over the built-in table), for
    the reservations and for the router (``cheapest``, explain's costs, context windows)."""

    def price_of(document: RoutingDocument, target: PlannedTarget) -> Price | None:
        match = prices.lookup(document, target)
        return match.price if match is not None else None

    return price_of


def _limits(
    settings: Settings, ddb: Any, routing: RoutingStore, prices: PriceBook, books: SpendLedger | None
) -> tuple[Authenticator, LimitsHook]:
    """Keys, budgets and rate limits over the DynamoDB table (the SSM single key is retired).

    Reservations are priced with the same price book as the cost events, so a target priced only
    by the built-in list is not refused as unpriced."""
    from switchboard.infra.refresh import Health
    from switchboard.limits.definitions import LimitCache, LimitStore
    from switchboard.limits.hook import LimitsHook
    from switchboard.limits.keys import DynamoKeyAuthenticator, KeyStore
    from switchboard.limits.ledger import Leases, Ledger
    from switchboard.limits.table import Table

    table = Table(ddb, settings.table)
    health = Health(retry_s=1.0)  # the table's: a read of it that fails or hangs marks both caches
    auth = DynamoKeyAuthenticator(
        KeyStore(table),
        settings.key_cache_s,
        timeout_s=settings.aws_timeout_s,
        max_stale_s=settings.key_stale_s,
        health=health,
    )
    definitions = LimitCache(
        LimitStore(table), settings.key_cache_s, timeout_s=settings.aws_timeout_s, health=health
    )

    hook = LimitsHook(
        Ledger(table, leases=Leases()),  # this instance's reservations ahead on shared lines
        definitions,
        routing,
        max_request_s=settings.max_request_s,
        prices=prices,  # the one lookup: admission estimates at the price metering charges
        books=books,  # a request with limits is booked in its settlement transaction
        fail_open=settings.limits_fail_open.lower() in {"on", "true", "1", "yes"},
        buffered=settings.spend_flush_s <= 0,  # in Lambda (either mode) nothing runs after a response
        admit_timeout_s=settings.admit_timeout_s,
    )
    return auth, hook


@dataclass
class Gateway:
    settings: Settings
    routing: RoutingStore
    auth: Authenticator
    engine: Engine
    hooks: list[Hook] = field(default_factory=list)
    prices: PriceBook = field(default_factory=PriceBook)
    budget_use: BudgetUse | None = None  # what routing rules read (the limits hook)
    spend: SpendLedger | None = None  # flushed at shutdown
    router: Router = field(default_factory=Router)  # strategies, conditions, explain
    breaker: Breaker | None = None  # the shared circuit breaker (routing.breaker)

    @classmethod
    def from_env(cls, settings: Settings | None = None, http: httpx.AsyncClient | None = None) -> Gateway:
        """Wire the real AWS-backed dependencies. Creates clients now, so requests do not pay for it."""
        settings = settings or Settings.from_env()
        tracing.configure(settings.tracing)  # before any client exists: it patches botocore and httpx
        ssm = aws.runtime_client("ssm", settings.region)
        # the table's one client (runtime_client is cached per service), for every user of the table
        ddb = aws.runtime_client("dynamodb", settings.region)
        copy = settings.routing_copy.lower() not in {"off", "false", "0", "no"}
        routing = RoutingStore.from_ssm(
            settings.routing_param,
            settings.routing_max_age_s,
            ssm,
            table=(ddb, settings.table) if copy else None,
            timeout_s=settings.aws_timeout_s,
            on_rejected=_count_rejection,
            providers=providers.REGISTRY,
        )
        secrets = SecretResolver(
            lambda: ssm,
            partial(aws.runtime_client, "secretsmanager", settings.region),
            settings.secret_max_age_s,
            timeout_s=settings.aws_timeout_s,
        )
        prices = PriceBook()
        spend = None
        if settings.spend_ledger.lower() not in {"off", "false", "0", "no"}:
            spend = SpendLedger(settings.table, lambda: ddb, flush_s=settings.spend_flush_s)
        auth, limits = _limits(settings, ddb, routing, prices, spend)
        hooks: list[Hook] = [limits]  # first: a refusal costs the others nothing
        if spend is not None:
            hooks.append(spend)
        breaker = Breaker(
            settings.table,
            lambda: ddb,
            report_s=settings.breaker_report_s,
            cache_s=settings.breaker_cache_s,
        )
        hooks.append(breaker)  # counts every attempt; does nothing while the document has no breaker
        hooks.append(CostEvents())
        speeds = SpeedBoard(SpeedStore(settings.table, lambda: ddb), timeout_s=settings.aws_timeout_s)
        hooks.append(speeds)  # feeds ``fastest``: one observation per answered request
        router = Router(price_lookup(prices), speeds)
        engine = Engine(http or make_http_client(), secrets)
        return cls(
            settings,
            routing,
            auth,
            engine,
            hooks,
            prices=prices,
            budget_use=limits,
            spend=spend,
            router=router,
            breaker=breaker,
        )

    async def flush(self) -> None:
        """Write what is still buffered (settlements still retrying, the spend ledger's lines), side
        by side: a shutdown has little time. Run at shutdown."""
        pending = [hook.drain() for hook in self.hooks if hasattr(hook, "drain")]
        if self.spend is not None:
            pending.append(self.spend.flush())
        await asyncio.gather(*pending)

    async def aclose(self) -> None:
        await self.flush()
        await self.engine.http.aclose()
