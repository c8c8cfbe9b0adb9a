"""The provider registry: one line per provider family.

``KINDS`` maps the ``kind`` named in the routing document to the class that speaks it.
``REGISTRY`` is what validating a routing document needs of them (``routing.document`` takes it as
validation context; importing this package also registers it there for validation without context).
"""

from __future__ import annotations

from switchboard.routing.document import ProviderRegistry, register_providers
from switchboard.upstream.providers.anthropic import Anthropic
from switchboard.upstream.providers.azure import AzureOpenAI
from switchboard.upstream.providers.base import Call, EmbedCall, Provider, StreamChunk
from switchboard.upstream.providers.bedrock import Bedrock
from switchboard.upstream.providers.compat import RULES
from switchboard.upstream.providers.gemini import Gemini
from switchboard.upstream.providers.openai import OpenAICompatible

__all__ = ["KINDS", "REGISTRY", "Call", "EmbedCall", "Provider", "StreamChunk", "get"]

KINDS: dict[str, type[Provider]] = {
    "openai": OpenAICompatible,
    "anthropic": Anthropic,
    "bedrock": Bedrock,
    "gemini": Gemini,
    "azure": AzureOpenAI,
}
REGISTRY = ProviderRegistry(KINDS, frozenset(RULES))
register_providers(REGISTRY)

_INSTANCES: dict[str, Provider] = {}


def get(kind: str) -> Provider:
    """The shared, stateless instance for ``kind``."""
    provider = _INSTANCES.get(kind)
    if provider is None:
        provider = _INSTANCES[kind] = KINDS[kind]()
    return provider
