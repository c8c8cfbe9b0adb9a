"""Azure OpenAI (``kind: azure``): OpenAI's wire format behind deployments and an ``api-key`` header.

``base_url`` is the resource endpoint (``https://<resource>.openai.azure.com``); a target's
``model`` is the *deployment* name. With ``api_version`` set, requests go to
``{base_url}/openai/deployments/{deployment}/chat/completions?api-version={api_version}``;
without it, to the v1 API, ``{base_url}/openai/v1/chat/completions``, with the deployment as
``model``. The key travels as ``api-key`` (https://learn.microsoft.com/azure/ai-foundry/openai/reference
and .../api-version-lifecycle). Content-filter refusals (400 ``content_filter``) are content_policy.
Answers pass through with Azure's extra fields (``prompt_filter_results``...); a stream's opening
filter-results chunk, which is not a valid chunk, is left out.
"""

from __future__ import annotations

import json
from typing import Any, ClassVar
from urllib.parse import quote

from switchboard.core.sse import SSEEvent
from switchboard.routing.document import ProviderConfig
from switchboard.routing.planner import PlannedTarget
from switchboard.upstream.providers.base import Call, StreamChunk
from switchboard.upstream.providers.openai import OpenAICompatible

__all__ = ["AzureOpenAI"]


class AzureOpenAI(OpenAICompatible):
    kind = "azure"
    default_base_url: ClassVar[str | None] = None
    rules_name: ClassVar[str | None] = "azure"

    @classmethod
    def check_config(cls, config: ProviderConfig) -> None:
        if config.base_url is None:
            raise ValueError(
                "kind 'azure' needs base_url, the resource endpoint (https://<resource>.openai.azure.com)"
            )
        if config.base_url.rstrip("/").endswith(("/openai", "/openai/v1")):
            raise ValueError("kind 'azure': base_url is the resource endpoint, without /openai")
        if config.api_key is None:
            raise ValueError("kind 'azure' needs an api_key reference")

    def url(self, target: PlannedTarget, operation: str) -> str:
        base = target.provider.base_url
        version = target.provider.api_version
        if version is None:
            return f"{base}/openai/v1/{operation}"
        deployment = quote(target.model, safe="")
        return f"{base}/openai/deployments/{deployment}/{operation}?api-version={quote(version, safe='')}"

    def auth(self, api_key: str) -> dict[str, str]:
        return {"api-key": api_key}

    def parse_event(self, event: SSEEvent, call: Call, state: dict[str, Any]) -> list[StreamChunk] | None:
        # Azure opens a stream with a chunk that is not one (object "", no choices) and carries only
        # prompt_filter_results: it is left out, so the client sees OpenAI's shape throughout.
        if event.data.startswith(b"{") and b'"prompt_filter_results"' in event.data:
            try:
                data = json.loads(event.data)
            except ValueError:
                data = None
            if (
                isinstance(data, dict)
                and not data.get("choices")
                and data.get("object") != "chat.completion.chunk"
            ):
                return []
        return super().parse_event(event, call, state)
