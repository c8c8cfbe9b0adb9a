"""The provider registry: one line per provider family.

``KINDS`` maps the ``kind`` named in the routing document to the class that speaks it.
"""

from __future__ import annotations

from switchboard.upstream.providers.anthropic import Anthropic
from switchboard.upstream.providers.azure import AzureOpenAI
from switchboard.upstream.providers.base import Call, EmbedCall, Provider, StreamChunk
from switchboard.upstream.providers.bedrock import Bedrock
from switchboard.upstream.providers.gemini import Gemini
from switchboard.upstream.providers.openai import OpenAICompatible

__all__ = ["KINDS", "Call", "EmbedCall", "Provider", "StreamChunk", "get"]

KINDS: dict[str, type[Provider]] = {
    "openai": OpenAICompatible,
    "anthropic": Anthropic,
    "bedrock": Bedrock,
    "gemini": Gemini,
    "azure": AzureOpenAI,
}

_INSTANCES: dict[str, Provider] = {}


def get(kind: str) -> Provider:
    """The shared, stateless instance for ``kind``."""
    provider = _INSTANCES.get(kind)
    if provider is None:
        provider = _INSTANCES[kind] = KINDS[kind]()
    return provider
