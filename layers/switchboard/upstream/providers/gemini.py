"""Google Gemini through its OpenAI-compatible endpoint (``kind: gemini``).

``https://generativelanguage.googleapis.com/v1beta/openai`` takes OpenAI chat and embeddings
requests with a Bearer key (https://ai.google.dev/gemini-api/docs/openai), so this is the
OpenAI-compatible provider with that default base URL and the ``gemini`` rule set. Where that
endpoint is faithful and where it is not is in docs/providers.md; Gemini-only features travel in
the request as the client sends them (``extra_body`` in the OpenAI SDK), since unknown fields pass.
"""

from __future__ import annotations

from typing import ClassVar

from switchboard.routing.document import ProviderConfig
from switchboard.upstream.providers.openai import OpenAICompatible

__all__ = ["Gemini"]


class Gemini(OpenAICompatible):
    kind = "gemini"
    default_base_url: ClassVar[str | None] = "https://generativelanguage.googleapis.com/v1beta/openai"
    rules_name: ClassVar[str | None] = "gemini"

    @classmethod
    def check_config(cls, config: ProviderConfig) -> None:
        super().check_config(config)
        if config.api_key is None:
            raise ValueError("kind 'gemini' needs an api_key reference (a Gemini API key)")
