"""Which price applies to a target: the routing document's overrides over the built-in list prices.

The built-in table (``data/prices.json``) holds public list prices per vendor and model, each with
its source and date; it is read once, on the first lookup, never at import. The routing document's
``prices`` map (``"provider/model"``, the provider as named in the document) wins over it, for
negotiated rates or a figure that moved.

A target is matched to a vendor of the built-in table by, in order: its provider name in the
document, its provider ``kind`` (``anthropic``, ``bedrock``, ``gemini``...) and the host of its
``base_url`` (``api.groq.com`` is ``groq``). Model names match exactly, then without a trailing
snapshot date (``-2025-09-29``, ``-20250929``) and without a Bedrock region prefix (``us.``).

A target with no price is served; its cost is reported as unknown (``null``), never as zero. The
first time each unpriced target is seen under a routing revision, a warning names it and the key to
add under ``prices``; the cost event counts every such request (``UnpricedRequests``).
"""

from __future__ import annotations

import functools
import json
import logging
import re
from dataclasses import dataclass
from importlib import resources
from typing import Any
from urllib.parse import urlsplit

from switchboard.core.money import Price, price_key
from switchboard.routing.document import RoutingDocument
from switchboard.routing.planner import PlannedTarget

__all__ = ["BuiltinPrices", "PriceBook", "PriceMatch", "builtin_prices", "model_variants"]

log = logging.getLogger("switchboard.pricing")

_DATED = re.compile(r"-(?:\d{4}-\d{2}-\d{2}|\d{8})$")
_REGION = re.compile(r"^(?:us|eu|apac|global|jp|au|ca|us-gov)\.")


@dataclass(frozen=True, slots=True)
class BuiltinPrices:
    version: str
    hosts: dict[str, str]
    prices: dict[str, Price]


@dataclass(frozen=True, slots=True)
class PriceMatch:
    """The price in force for one target, the key it was found under, and where it came from."""

    price: Price
    key: str
    origin: str  # "override" (routing document) or "builtin" (data/prices.json)


@functools.cache
def builtin_prices() -> BuiltinPrices:
    """The shipped list prices, parsed and validated once per process."""
    text = resources.files("switchboard").joinpath("data/prices.json").read_text(encoding="utf-8")
    raw: dict[str, Any] = json.loads(text)
    prices = {key: Price.model_validate(value) for key, value in raw["prices"].items()}
    return BuiltinPrices(str(raw.get("version", "")), dict(raw.get("hosts", {})), prices)


def model_variants(model: str) -> list[str]:
    """``model`` and the names it may be listed under: without a snapshot date or region prefix."""
    variants = [model]
    for candidate in (_DATED.sub("", model), _REGION.sub("", model), _DATED.sub("", _REGION.sub("", model))):
        if candidate not in variants:
            variants.append(candidate)
    return variants


def _vendors(target: PlannedTarget, hosts: dict[str, str]) -> list[str]:
    vendors = [target.provider_name]
    kind = target.provider.kind
    if kind != "openai" and kind not in vendors:
        vendors.append(kind)
    if target.provider.base_url:
        host = urlsplit(target.provider.base_url).hostname or ""
        vendor = hosts.get(host)
        if vendor is None and host.startswith("bedrock-runtime.") and host.endswith(".amazonaws.com"):
            vendor = "bedrock"
        if vendor and vendor not in vendors:
            vendors.append(vendor)
    return vendors


class PriceBook:
    """Resolves and caches the price of each target under the routing document in force."""

    def __init__(self, builtin: BuiltinPrices | None = None) -> None:
        self._builtin = builtin
        self._doc: RoutingDocument | None = None
        self._cache: dict[str, PriceMatch | None] = {}

    def lookup(self, doc: RoutingDocument, target: PlannedTarget) -> PriceMatch | None:
        """The price for ``target``, or None (logged once per document) when there is none."""
        if doc is not self._doc:  # a new routing document: its overrides may differ
            self._doc, self._cache = doc, {}
        label = target.label
        if label in self._cache:
            return self._cache[label]
        match = self._resolve(doc, target)
        if match is None:
            log.warning(
                "no price for %s: its requests are served with cost unknown; add %r under 'prices' "
                "in the routing document",
                label,
                label,
            )
        self._cache[label] = match
        return match

    def _resolve(self, doc: RoutingDocument, target: PlannedTarget) -> PriceMatch | None:
        models = model_variants(target.model)
        for model in models:
            key = price_key(target.provider_name, model)
            if key in doc.prices:
                return PriceMatch(doc.prices[key], key, "override")
        builtin = self._builtin or builtin_prices()
        for vendor in _vendors(target, builtin.hosts):
            for model in models:
                key = price_key(vendor, model)
                if key in builtin.prices:
                    return PriceMatch(builtin.prices[key], key, "builtin")
        return None
