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
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from switchboard.costs import Price
from switchboard.errors import ErrorClass

__all__ = [
    "ModelRoute",
    "ProviderConfig",
    "RetryPolicy",
    "RoutingDocument",
    "Rule",
    "RuleCondition",
    "SecretRef",
    "Target",
    "Timeouts",
    "load_document",
]

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


class RetryPolicy(_Strict):
    attempts: int = Field(default=2, ge=1, le=10, description="tries per target, the first included")
    base_delay_ms: int = Field(default=200, ge=0, le=60_000)
    max_delay_ms: int = Field(default=2_000, ge=0, le=120_000)
    honor_retry_after: bool = True
    max_retry_after_s: float = Field(
        default=20.0, ge=0, le=900, description="a longer Retry-After skips to the next target"
    )


class ProviderConfig(_Strict):
    kind: str = Field(description="provider family, e.g. 'openai' for any OpenAI-compatible server")
    base_url: str | None = None
    api_key: SecretRef | None = None
    headers: dict[str, str] = Field(default_factory=dict, description="extra static, non-secret headers")
    unsupported_params: list[str] = Field(default_factory=list, description="dropped before sending")

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is not None and not re.match(r"^https?://[^\s/]+", value):
            raise ValueError("base_url must be an http(s) URL")
        return value.rstrip("/") if value else value

    @field_validator("headers")
    @classmethod
    def _no_secret_headers(cls, value: dict[str, str]) -> dict[str, str]:
        for name in value:
            if name.lower() in {"authorization", "x-api-key", "api-key", "proxy-authorization"}:
                raise ValueError(f"header {name!r} carries a credential: use api_key with an ssm reference")
        return value

    @field_validator("kind")
    @classmethod
    def _known_kind(cls, value: str) -> str:
        from switchboard.providers import KINDS

        if value not in KINDS:
            raise ValueError(f"unknown provider kind {value!r}; known: {', '.join(sorted(KINDS))}")
        return value


class Target(_Strict):
    provider: str
    model: str = Field(min_length=1)
    weight: int = Field(default=1, ge=0, le=1000)
    timeouts: Timeouts | None = None
    context_window: int | None = Field(default=None, gt=0)


class ModelRoute(_Strict):
    strategy: Literal["fallback", "weighted"] = "fallback"
    targets: list[Target] = Field(min_length=1)
    retry: RetryPolicy | None = None
    timeouts: Timeouts | None = None
    fallback_on: frozenset[ErrorClass] = frozenset(
        {ErrorClass.RATE_LIMIT, ErrorClass.SERVER, ErrorClass.TIMEOUT, ErrorClass.CONTEXT_WINDOW}
    )
    description: str | None = None

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


class Defaults(_Strict):
    timeouts: Timeouts = Timeouts()
    retry: RetryPolicy = RetryPolicy()


class RuleCondition(_Strict):
    """When a rule fires. See docs/rules.md."""

    budget_used_over: float = Field(
        ge=0, description="fraction of the scope's budget used (spent + reserved) this period, e.g. 0.8"
    )
    scope: Literal["key", "team", "user", "model"] = Field(
        default="key", description="whose budget: the key's, its team's, its user's or the alias's"
    )


class Rule(_Strict):
    """Reroute some aliases to others while the condition holds. The first matching rule wins."""

    when: RuleCondition
    reroute: dict[str, str] = Field(min_length=1, description="requested alias -> alias to serve instead")
    description: str | None = None


class RoutingDocument(_Strict):
    """The whole routing configuration in force."""

    version: Literal[1] = Field(description="schema version of this document")
    revision: str | None = Field(default=None, max_length=64, description="operator's label for this edit")
    defaults: Defaults = Defaults()
    providers: dict[Annotated[str, Field(pattern=_NAME.pattern)], ProviderConfig]
    models: dict[Annotated[str, Field(pattern=_NAME.pattern)], ModelRoute]
    prices: dict[str, Price] = Field(default_factory=dict, description="'provider/model' -> USD per Mtok")
    rules: list[Rule] = Field(default_factory=list, description="budget-aware reroutes (docs/rules.md)")

    @model_validator(mode="after")
    def _targets_name_providers(self) -> RoutingDocument:
        for alias, route in self.models.items():
            for target in route.targets:
                if target.provider not in self.providers:
                    raise ValueError(
                        f"model {alias!r} names provider {target.provider!r}, which is not in 'providers'"
                    )
        return self

    @model_validator(mode="after")
    def _rules_name_models(self) -> RoutingDocument:
        for index, rule in enumerate(self.rules):
            for source, target in rule.reroute.items():
                for alias in (source, target):
                    if alias not in self.models:
                        raise ValueError(f"rules[{index}] reroutes {alias!r}, which is not in 'models'")
                if source == target:
                    raise ValueError(f"rules[{index}] reroutes {source!r} to itself")
        return self


def load_document(raw: str | bytes) -> tuple[RoutingDocument, str]:
    """Parse and validate ``raw``; return the document and the revision in force.

    Raises ``ValueError`` with a readable, multi-line account of every problem.
    """
    try:
        doc = RoutingDocument.model_validate_json(raw)
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            where = ".".join(str(part) for part in err["loc"]) or "(document)"
            lines.append(f"  {where}: {err['msg']}")
        raise ValueError("invalid routing document:\n" + "\n".join(lines)) from None
    # Hash the canonical JSON, not the raw text: the CLI validates a pretty file but pushes it
    # compact, and both must name the same revision.
    canonical = json.dumps(json.loads(raw), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    revision = doc.revision or hashlib.sha256(canonical.encode()).hexdigest()[:12]
    return doc, revision
