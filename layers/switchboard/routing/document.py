"""The routing document: one JSON value in SSM Parameter Store, validated on every load.

``version`` is the schema version (this module reads version 1). ``revision`` is the operator's
own label for an edit; when absent, a hash of the document's canonical JSON (keys sorted, no
whitespace) names the revision, so reformatting a document does not change it. See
``docs/routing.md`` for the format with examples, or ``switchboard routing schema``.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Literal, Protocol

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from switchboard.core.errors import ErrorClass
from switchboard.core.money import Price

__all__ = [
    "BreakerPolicy",
    "Cors",
    "Hours",
    "ModelRoute",
    "ProviderConfig",
    "ProviderKind",
    "ProviderRegistry",
    "RetryPolicy",
    "RoutingDocument",
    "Rule",
    "RuleCondition",
    "SecretRef",
    "Sticky",
    "Target",
    "Timeouts",
    "load_document",
    "register_providers",
]


class ProviderKind(Protocol):
    """What validating a document asks of a provider family (``upstream.providers`` has them)."""

    @property
    def default_base_url(self) -> str | None: ...

    @property
    def embeddings(self) -> bool: ...

    def check_config(self, config: ProviderConfig) -> None: ...


@dataclass(frozen=True, slots=True)
class ProviderRegistry:
    """The provider families a document may name: ``kinds`` by the ``kind`` a provider entry
    names, and the known ``param_rules``. Validation takes it as pydantic validation context
    (``{"providers": registry}``), so that this module never imports the providers above it."""

    kinds: Mapping[str, ProviderKind]
    param_rules: frozenset[str]


CONTEXT_KEY = "providers"
_registered: list[ProviderRegistry] = []  # the registry of validation without context


def register_providers(registry: ProviderRegistry) -> None:
    """The registry for validation given no context (a model built directly, ``ProviderConfig(...)``).
    ``upstream.providers`` registers its own when it is imported; explicit context wins."""
    _registered[:] = [registry]


def _registry(info: ValidationInfo) -> ProviderRegistry:
    context = info.context
    given = context.get(CONTEXT_KEY) if isinstance(context, dict) else None
    if isinstance(given, ProviderRegistry):
        return given
    if not _registered:
        raise RuntimeError(
            "routing document validated without a provider registry: pass "
            "context={'providers': registry} or import switchboard.upstream.providers"
        )
    return _registered[0]


_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/-]{0,127}$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SecretRef(_Strict):
    """Where a provider's API key lives. Exactly one of the two stores; never the key itself."""

    ssm: str | None = Field(default=None, description="SSM SecureString parameter name")
    secretsmanager: str | None = Field(default=None, description="Secrets Manager secret id")

    @model_validator(mode="after")
    def _exactly_one(self) -> SecretRef:
        if (self.ssm is None) == (self.secretsmanager is None):
            raise ValueError("api_key needs exactly one of 'ssm' or 'secretsmanager'")
        return self


class Timeouts(_Strict):
    connect_s: float = Field(default=5.0, gt=0, le=60)
    first_token_s: float = Field(default=30.0, gt=0, le=900)
    total_s: float = Field(default=300.0, gt=0, le=900)
    latency_trigger_s: float | None = Field(
        default=None,
        gt=0,
        le=900,
        description=(
            "the latency trigger: no first output (a stream's first content, a whole buffered answer) "
            "within this many seconds abandons the attempt for the next target, class 'slow', never "
            "retried; not applied to the plan's last target. Separate from the hard first_token_s"
        ),
    )


class RetryPolicy(_Strict):
    attempts: int = Field(default=2, ge=1, le=10, description="tries per target, the first included")
    base_delay_ms: int = Field(default=200, ge=0, le=60_000)
    max_delay_ms: int = Field(default=2_000, ge=0, le=120_000)
    honor_retry_after: bool = True
    max_retry_after_s: float = Field(
        default=20.0, ge=0, le=900, description="a longer Retry-After skips to the next target"
    )


class ProviderConfig(_Strict):
    """One upstream account. Which fields a kind needs is checked by that kind (``check_config``)."""

    kind: str = Field(description="provider family: openai, anthropic, bedrock, gemini, azure")
    base_url: str | None = Field(
        default=None, description="the API root; kinds with a public default (anthropic, gemini) may omit it"
    )
    api_key: SecretRef | None = None
    headers: dict[str, str] = Field(default_factory=dict, description="extra static, non-secret headers")
    unsupported_params: list[str] = Field(
        default_factory=list, description="dropped before sending, on top of the built-in rules"
    )
    param_rules: str = Field(
        default="auto",
        description=(
            "built-in table of parameters this upstream rejects (docs/providers.md): 'auto' picks it "
            "by kind and base URL, a name (groq, mistral, vllm, ollama...) selects one, 'none' turns it off"
        ),
    )
    region: str | None = Field(
        default=None, pattern=r"^[a-z]{2}(-[a-z]+)+-\d$", description="AWS region (bedrock)"
    )
    api_version: str | None = Field(
        default=None, max_length=40, description="azure: the api-version query value; omit for the v1 API"
    )
    default_max_tokens: int | None = Field(
        default=None, ge=1, description="anthropic: max_tokens when the client sends none (default 4096)"
    )
    responses: bool | None = Field(
        default=None,
        description=(
            "openai kind: the upstream serves /responses, so /v1/responses passes through to it; "
            "omitted: true for api.openai.com, false elsewhere (converted through chat)"
        ),
    )

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is not None and not re.match(r"^https?://[^\s/]+", value):
            raise ValueError("base_url must be an http(s) URL")
        return value.rstrip("/") if value else value

    @field_validator("param_rules")
    @classmethod
    def _known_rules(cls, value: str, info: ValidationInfo) -> str:
        rules = _registry(info).param_rules
        if value != "auto" and value not in rules:
            raise ValueError(f"unknown param_rules {value!r}; known: auto, {', '.join(sorted(rules))}")
        return value

    @field_validator("headers")
    @classmethod
    def _no_secret_headers(cls, value: dict[str, str]) -> dict[str, str]:
        for name in value:
            if name.lower() in {"authorization", "x-api-key", "api-key", "proxy-authorization"}:
                raise ValueError(f"header {name!r} carries a credential: use api_key with an ssm reference")
        return value

    @model_validator(mode="after")
    def _responses_is_openai(self) -> ProviderConfig:
        if self.responses and self.kind != "openai":
            raise ValueError(f"responses: true is for kind 'openai' only (this provider is {self.kind!r})")
        return self

    @field_validator("kind")
    @classmethod
    def _known_kind(cls, value: str, info: ValidationInfo) -> str:
        kinds = _registry(info).kinds
        if value not in kinds:
            raise ValueError(f"unknown provider kind {value!r}; known: {', '.join(sorted(kinds))}")
        return value

    @model_validator(mode="before")
    @classmethod
    def _default_base_url(cls, data: Any, info: ValidationInfo) -> Any:
        kinds = _registry(info).kinds
        if isinstance(data, dict) and data.get("base_url") is None and data.get("kind") in kinds:
            default = kinds[data["kind"]].default_base_url
            if default is not None:
                data = {**data, "base_url": default}
        return data

    @model_validator(mode="after")
    def _kind_accepts(self, info: ValidationInfo) -> ProviderConfig:
        _registry(info).kinds[self.kind].check_config(self)
        return self


class Target(_Strict):
    """One upstream model (``provider`` and ``model``), or another alias of the document (``alias``)
    planned with its own strategy in this target's place (a nested group)."""

    provider: str | None = Field(default=None, description="a provider named in 'providers'")
    model: str | None = Field(
        default=None, min_length=1, description="the upstream's model id (azure: the deployment name)"
    )
    alias: str | None = Field(
        default=None, description="another alias of this document, planned in this target's place"
    )
    weight: int = Field(default=1, ge=0, le=1000)
    timeouts: Timeouts | None = None
    context_window: int | None = Field(
        default=None, gt=0, description="tokens; else the price table's; a prompt that cannot fit skips it"
    )
    dimensions: int | None = Field(
        default=None, gt=0, le=65536, description="embeddings routes: the length of this target's vectors"
    )

    @model_validator(mode="after")
    def _upstream_or_alias(self) -> Target:
        if self.alias is not None:
            if self.provider is not None or self.model is not None:
                raise ValueError("a target names either 'alias' or 'provider' and 'model', not both")
        elif self.provider is None or self.model is None:
            raise ValueError("a target needs 'provider' and 'model' (or 'alias' for a nested group)")
        return self


class Sticky(_Strict):
    """Sticky weighted assignment: the same ``user`` (or metadata value) draws the same order."""

    on: str = Field(
        pattern=r"^(user|metadata\.[A-Za-z0-9_.-]{1,64})$",
        description="'user' (the request's user field) or 'metadata.<field>'",
    )


Modality = Literal["text", "image", "audio", "file"]


class ModelRoute(_Strict):
    """One alias. ``mode`` says which endpoint serves it; the descriptive fields feed /v1/models."""

    mode: Literal["chat", "embeddings"] = "chat"
    strategy: Literal["fallback", "weighted", "cheapest", "fastest"] = Field(
        default="fallback",
        description="fallback: in order; weighted: drawn by weight; cheapest: by price for this "
        "request's tokens; fastest: by measured time to first token and throughput",
    )
    targets: list[Target] = Field(min_length=1)
    sticky: Sticky | None = Field(
        default=None, description="weighted only: the same user (or metadata value) gets the same order"
    )
    retry: RetryPolicy | None = None
    timeouts: Timeouts | None = None
    fallback_on: frozenset[ErrorClass] = frozenset(
        {ErrorClass.RATE_LIMIT, ErrorClass.SERVER, ErrorClass.TIMEOUT, ErrorClass.CONTEXT_WINDOW}
    )
    description: str | None = None
    owned_by: str | None = Field(default=None, max_length=64, description="shown in /v1/models")
    context_window: int | None = Field(
        default=None, gt=0, description="shown in /v1/models; else the smallest of the targets' windows"
    )
    max_output_tokens: int | None = Field(default=None, gt=0, description="shown in /v1/models")
    modalities: frozenset[Modality] | None = Field(
        default=None,
        description="input modalities every target accepts; a request with others gets a 400",
    )
    hedge_after_ms: int | None = Field(
        default=None,
        ge=1,
        le=900_000,
        description=(
            "hedging (off when absent): after this many ms without a first output, the next target is "
            "started as well; the first to answer wins and the other is cancelled"
        ),
    )

    @field_validator("fallback_on")
    @classmethod
    def _client_never_falls_back(cls, value: frozenset[ErrorClass]) -> frozenset[ErrorClass]:
        if ErrorClass.CLIENT in value:
            raise ValueError("'client' errors are the caller's to fix and never fall back")
        return value

    @model_validator(mode="after")
    def _weights(self) -> ModelRoute:
        if self.strategy == "weighted" and not any(t.weight for t in self.targets):
            raise ValueError("a weighted route needs at least one target with weight > 0")
        return self

    @model_validator(mode="after")
    def _sticky_weighted(self) -> ModelRoute:
        if self.sticky is not None and self.strategy != "weighted":
            raise ValueError("'sticky' applies to a weighted route only")
        return self

    @model_validator(mode="after")
    def _one_dimension(self) -> ModelRoute:
        """Embeddings fall back only between targets whose vectors have the same length."""
        dims = {t.dimensions for t in self.targets}
        if self.mode == "embeddings":
            if any(t.alias is not None for t in self.targets):
                raise ValueError("an embeddings route cannot nest aliases: name its targets directly")
            if None in dims:
                raise ValueError("every target of an embeddings route needs 'dimensions'")
            if len(dims) > 1:
                got = sorted(d for d in dims if d is not None)
                raise ValueError(
                    f"the targets of an embeddings route must share one 'dimensions' (got {got}): "
                    "vectors of different lengths cannot stand in for each other"
                )
        elif dims != {None}:
            raise ValueError("'dimensions' belongs on the targets of an embeddings route (mode 'embeddings')")
        return self

    @property
    def dimensions(self) -> int | None:
        return self.targets[0].dimensions if self.mode == "embeddings" else None


class Defaults(_Strict):
    timeouts: Timeouts = Timeouts()
    retry: RetryPolicy = RetryPolicy()
    heartbeat_after_s: float | None = Field(
        default=None,
        gt=0,
        le=900,
        description=(
            "a stream with no output this long commits its 200 and sends SSE keep-alive comments "
            "while failover goes on (default: the gateway's setting, 30 s)"
        ),
    )


Day = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
Endpoint = Literal["chat", "messages", "responses"]


class Hours(_Strict):
    """A span of hours in UTC, ``from`` included, ``to`` excluded; wraps past midnight when
    ``from`` > ``to`` (22 to 6 is the night)."""

    from_: int = Field(alias="from", ge=0, le=23)
    to: int = Field(ge=0, le=24)

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    def holds(self, hour: int) -> bool:
        if self.from_ <= self.to:
            return self.from_ <= hour < self.to
        return hour >= self.from_ or hour < self.to


class RuleCondition(_Strict):
    """When a rule fires: every condition given must hold (an AND). See docs/rules.md."""

    budget_used_over: float | None = Field(
        default=None,
        ge=0,
        description="fraction of the scope's budget used (spent + reserved) this period, e.g. 0.8",
    )
    scope: Literal["key", "team", "user", "model"] = Field(
        default="key", description="whose budget: the key's, its team's, its user's or the alias's"
    )
    key_tags: list[str] | None = Field(
        default=None, min_length=1, description="the key carries at least one of these tags"
    )
    user: list[str] | None = Field(
        default=None, min_length=1, description="the request's 'user' field is one of these"
    )
    metadata: dict[str, str] | None = Field(
        default=None, min_length=1, description="the request's 'metadata' has each of these values"
    )
    endpoint: list[Endpoint] | None = Field(
        default=None, min_length=1, description="the request came in on one of these endpoints"
    )
    hours_utc: Hours | None = Field(default=None, description="the hour of the day, UTC")
    days_utc: list[Day] | None = Field(default=None, min_length=1, description="the day of the week, UTC")

    @model_validator(mode="after")
    def _something(self) -> RuleCondition:
        given = self.model_dump(exclude={"scope"}, exclude_none=True)
        if not given:
            raise ValueError("a rule's 'when' needs at least one condition")
        return self


class Rule(_Strict):
    """While the condition holds: reroute some aliases to others, and/or skip some targets.
    Rules are read in order; the first that reroutes the requested alias decides the alias, and
    every rule that fires and skips applies to the served alias's targets."""

    when: RuleCondition
    reroute: dict[str, str] = Field(
        default_factory=dict, description="requested alias -> alias to serve instead"
    )
    skip: list[str] = Field(
        default_factory=list, description="'provider/model' targets not to use while the rule holds"
    )
    models: list[str] | None = Field(
        default=None, min_length=1, description="skip rules: the aliases they apply to (default: every alias)"
    )
    description: str | None = None

    @model_validator(mode="after")
    def _acts(self) -> Rule:
        if not self.reroute and not self.skip:
            raise ValueError("a rule needs 'reroute' or 'skip'")
        return self

    def names(self, alias: str) -> bool:
        """Whether this rule could act on a request for ``alias``."""
        if alias in self.reroute:
            return True
        return bool(self.skip) and (self.models is None or alias in self.models)


class BreakerPolicy(_Strict):
    """The shared circuit breaker (``routing.breaker``), per target. See docs/routing.md."""

    window_s: float = Field(default=60.0, gt=0, le=3600, description="length of one error-rate window")
    min_requests: int = Field(default=20, ge=1, description="requests in a window before it can open")
    error_rate: float = Field(default=0.5, gt=0, le=1, description="failed share of a window that opens it")
    open_s: float = Field(
        default=30.0, gt=0, le=3600, description="how long an open breaker sends no traffic"
    )
    ramp_s: float = Field(
        default=60.0,
        gt=0,
        le=3600,
        description="half-open: the share let through rises to all over this long",
    )
    probe_share: float = Field(
        default=0.1, gt=0, le=1, description="half-open: the share let through at first"
    )
    half_open_min_requests: int = Field(
        default=3, ge=1, description="half-open: requests before the error rate can open it again"
    )
    count: frozenset[ErrorClass] = Field(
        default=frozenset({ErrorClass.SERVER, ErrorClass.TIMEOUT}),
        description="attempt classes counted as failures (ok attempts count as successes; others not at all)",
    )


# An origin as a browser sends it: scheme, host, optional port; no path, no trailing slash.
_ORIGIN = r"^(\*|https?://(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9]([A-Za-z0-9.-]{0,251}[A-Za-z0-9])?)(:[0-9]{1,5})?)$"


class Cors(_Strict):
    """Browser access (``switchboard.http.cors``): off unless this section is present."""

    allow_origins: list[Annotated[str, Field(pattern=_ORIGIN)]] = Field(
        min_length=1,
        description="origins allowed to call the gateway from a browser, e.g. https://app.example.com "
        "(scheme://host[:port], no path); '*' allows any",
    )
    max_age_s: int = Field(
        default=600, ge=0, le=86400, description="how long a browser may cache a preflight"
    )


class RoutingDocument(_Strict):
    """The whole routing configuration in force."""

    version: Literal[1] = Field(description="schema version of this document")
    revision: str | None = Field(default=None, max_length=64, description="operator's label for this edit")
    defaults: Defaults = Defaults()
    providers: dict[Annotated[str, Field(pattern=_NAME.pattern)], ProviderConfig]
    models: dict[Annotated[str, Field(pattern=_NAME.pattern)], ModelRoute]
    prices: dict[str, Price] = Field(default_factory=dict, description="'provider/model' -> USD per Mtok")
    rules: list[Rule] = Field(
        default_factory=list, description="conditional reroutes and skips (docs/rules.md)"
    )
    cors: Cors | None = Field(default=None, description="browser access; absent: CORS off")
    breaker: BreakerPolicy | None = Field(
        default=None, description="the shared circuit breaker per target; absent: off (docs/routing.md)"
    )
    responses_ttl_days: int = Field(
        default=30, ge=1, le=3650, description="days a stored /v1/responses answer is kept (store: true)"
    )

    @model_validator(mode="after")
    def _targets_name_providers(self, info: ValidationInfo) -> RoutingDocument:
        kinds = _registry(info).kinds
        for alias, route in self.models.items():
            for target in route.targets:
                if target.provider is None:
                    continue  # a nested alias (_nested_aliases)
                if target.provider not in self.providers:
                    raise ValueError(
                        f"model {alias!r} names provider {target.provider!r}, which is not in 'providers'"
                    )
                kind = self.providers[target.provider].kind
                if route.mode == "embeddings" and not kinds[kind].embeddings:
                    raise ValueError(
                        f"embeddings model {alias!r} names provider {target.provider!r}, "
                        f"whose kind {kind!r} offers no embeddings"
                    )
        return self

    @model_validator(mode="after")
    def _nested_aliases(self) -> RoutingDocument:
        """A nested alias exists, is a chat model, and no alias reaches itself (a cycle)."""
        for alias, route in self.models.items():
            for target in route.targets:
                if target.alias is None:
                    continue
                nested = self.models.get(target.alias)
                if nested is None:
                    raise ValueError(
                        f"model {alias!r} nests alias {target.alias!r}, which is not in 'models'"
                    )
                if nested.mode != route.mode:
                    raise ValueError(f"model {alias!r} nests {target.alias!r}, a {nested.mode} model")
        for alias in self.models:
            cycle = self._cycle_from(alias, [])
            if cycle:
                raise ValueError(f"nested aliases form a cycle: {' -> '.join(cycle)}")
        return self

    def _cycle_from(self, alias: str, path: list[str]) -> list[str] | None:
        if alias in path:
            return [*path[path.index(alias) :], alias]
        for target in self.models[alias].targets:
            if target.alias is not None:
                found = self._cycle_from(target.alias, [*path, alias])
                if found:
                    return found
        return None

    @model_validator(mode="after")
    def _rules_name_models(self) -> RoutingDocument:
        for index, rule in enumerate(self.rules):
            for alias in rule.models or ():
                if alias not in self.models:
                    raise ValueError(f"rules[{index}].models names {alias!r}, which is not in 'models'")
            for source, target in rule.reroute.items():
                for alias in (source, target):
                    if alias not in self.models:
                        raise ValueError(f"rules[{index}] reroutes {alias!r}, which is not in 'models'")
                    if self.models[alias].mode == "embeddings":
                        # Vectors from another embeddings model are not comparable with the first's.
                        raise ValueError(
                            f"rules[{index}] reroutes {alias!r}, an embeddings model; rules reroute "
                            "chat models only (another model's vectors would not match the index)"
                        )
                if source == target:
                    raise ValueError(f"rules[{index}] reroutes {source!r} to itself")
        return self

    @model_validator(mode="after")
    def _skips_name_targets(self) -> RoutingDocument:
        """A skip names a target some chat route has: a typo would otherwise skip nothing."""
        labels = {
            f"{t.provider}/{t.model}"
            for route in self.models.values()
            if route.mode == "chat"
            for t in route.targets
            if t.alias is None
        }
        for index, rule in enumerate(self.rules):
            for label in rule.skip:
                if label not in labels:
                    raise ValueError(
                        f"rules[{index}] skips {label!r}, which no chat model's targets name "
                        "(write it as provider/model)"
                    )
        return self


def _path_part(part: object) -> str:
    """One step of a problem's path. A key that would not read as one (empty, blank, or with a
    line break or another unprintable character) is quoted, so every problem stays one line that
    names where it is."""
    text = str(part)
    if isinstance(part, str) and (not text.strip() or not text.isprintable()):
        return json.dumps(text)
    return text


def load_document(raw: str | bytes, providers: ProviderRegistry | None = None) -> tuple[RoutingDocument, str]:
    """Parse and validate ``raw`` against ``providers`` (else the registered one); return the
    document and the revision in force.

    Raises ``ValueError`` with a readable, multi-line account of every problem.
    """
    context = None if providers is None else {CONTEXT_KEY: providers}
    try:
        doc = RoutingDocument.model_validate_json(raw, context=context)
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            where = ".".join(_path_part(part) for part in err["loc"]) or "(document)"
            lines.append(f"  {where}: {err['msg']}")
        raise ValueError("invalid routing document:\n" + "\n".join(lines)) from None
    # Hash the canonical JSON, not the raw text: the CLI validates a pretty file but pushes it
    # compact, and both must name the same revision.
    canonical = json.dumps(json.loads(raw), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    revision = doc.revision or hashlib.sha256(canonical.encode()).hexdigest()[:12]
    return doc, revision
