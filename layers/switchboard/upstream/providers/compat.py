"""What each OpenAI-compatible upstream rejects, and how the gateway adapts a request to it.

The table behind ``docs/providers.md``. A provider entry picks its rules with ``param_rules``:
``auto`` (the default) recognises the upstream by its base URL's host (Ollama by its default port);
a rule-set name (``vllm``, ``ollama``...) selects one for a self-hosted server whose URL says
nothing; ``none`` turns the built-in rules off. ``unsupported_params`` always adds to them.

Each rule set is taken from the provider's public documentation (``source``). A parameter is
*renamed* when the upstream has the same control under another name, *dropped* when it has none
and the answer stays right without it, and refused (a 400) when dropping it would change the
answer: ``n > 1`` where the upstream returns one choice whatever ``n`` says.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

__all__ = ["RULES", "Adaptation", "ParamRules", "adapt", "rules_for"]

log = logging.getLogger("switchboard.providers.compat")

# Newer OpenAI-only request fields that most compatible servers do not know.
_OPENAI_ONLY = frozenset(
    {"store", "metadata", "service_tier", "prediction", "web_search_options", "modalities", "audio"}
)


@dataclass(frozen=True, slots=True)
class ParamRules:
    name: str
    drop: frozenset[str] = frozenset()
    rename: tuple[tuple[str, str], ...] = ()
    single_choice: bool = False  # n > 1 is refused: the upstream would not honour it
    drop_message_names: bool = False  # messages[].name is rejected
    source: str = ""


RULES: dict[str, ParamRules] = {
    rules.name: rules
    for rules in (
        ParamRules("openai", source="https://platform.openai.com/docs/api-reference/chat/create"),
        ParamRules(
            "groq",
            drop=frozenset({"logprobs", "top_logprobs", "logit_bias"}),
            single_choice=True,
            drop_message_names=True,
            source="https://console.groq.com/docs/openai (Currently Unsupported OpenAI Features)",
        ),
        ParamRules(
            "together",
            drop=_OPENAI_ONLY,
            rename=(("max_completion_tokens", "max_tokens"),),
            source="https://docs.together.ai/reference/chat-completions-1",
        ),
        ParamRules(
            "mistral",
            drop=_OPENAI_ONLY
            | {"user", "logprobs", "top_logprobs", "logit_bias", "stream_options", "reasoning_effort"},
            rename=(("max_completion_tokens", "max_tokens"), ("seed", "random_seed")),
            source="https://docs.mistral.ai/api/#tag/chat (unknown fields are a 422)",
        ),
        ParamRules(
            "deepseek",
            drop=_OPENAI_ONLY | {"logit_bias", "parallel_tool_calls", "user", "seed"},
            rename=(("max_completion_tokens", "max_tokens"),),
            single_choice=True,
            source="https://api-docs.deepseek.com/api/create-chat-completion",
        ),
        ParamRules(
            "fireworks",
            drop=_OPENAI_ONLY,
            source="https://docs.fireworks.ai/api-reference/post-chatcompletions",
        ),
        ParamRules(
            "openrouter",
            source="https://openrouter.ai/docs/api-reference/parameters (ignores what a model lacks)",
        ),
        ParamRules(
            "vllm",
            source="https://docs.vllm.ai/en/latest/serving/openai_compatible_server.html",
        ),
        ParamRules(
            "ollama",
            drop=_OPENAI_ONLY | {"logit_bias", "user"},
            rename=(("max_completion_tokens", "max_tokens"),),
            single_choice=True,
            source="https://docs.ollama.com/api/openai-compatibility (supported request fields)",
        ),
        ParamRules(
            "gemini",
            drop=frozenset({"logit_bias", "store", "metadata", "prediction", "web_search_options", "user"}),
            source="https://ai.google.dev/gemini-api/docs/openai",
        ),
        ParamRules("azure", source="https://learn.microsoft.com/azure/ai-foundry/openai/reference"),
        ParamRules("none"),
    )
}

_HOSTS = (
    ("api.openai.com", "openai"),
    ("api.groq.com", "groq"),
    ("api.together.xyz", "together"),
    ("api.together.ai", "together"),
    ("api.mistral.ai", "mistral"),
    ("api.deepseek.com", "deepseek"),
    ("api.fireworks.ai", "fireworks"),
    ("openrouter.ai", "openrouter"),
    ("generativelanguage.googleapis.com", "gemini"),
    ("openai.azure.com", "azure"),
)
_OLLAMA_PORT = 11434


def rules_for(setting: str, base_url: str | None, kind_default: str | None = None) -> ParamRules:
    """The rule set for a provider entry: named, or (``auto``) by kind, host and port."""
    if setting != "auto":
        return RULES[setting]
    if kind_default is not None:
        return RULES[kind_default]
    parts = urlsplit(base_url or "")
    host = (parts.hostname or "").lower()
    for suffix, name in _HOSTS:
        if host == suffix or host.endswith("." + suffix):
            return RULES[name]
    if parts.port == _OLLAMA_PORT:
        return RULES["ollama"]
    return RULES["none"]


@dataclass(slots=True)
class Adaptation:
    """What ``adapt`` changed, for the log line."""

    dropped: list[str] = field(default_factory=list)
    renamed: list[str] = field(default_factory=list)
    refused: str | None = None  # the parameter that cannot be honoured, if any

    def __bool__(self) -> bool:
        return bool(self.dropped or self.renamed)


def adapt(
    body: dict[str, Any], rules: ParamRules, extra_drop: list[str] | tuple[str, ...] = ()
) -> Adaptation:
    """Drop and rename ``body``'s parameters in place for ``rules``; report what changed.

    ``refused`` is set (and nothing else done) when the request asks for what the upstream
    cannot give: the caller turns it into a 400.
    """
    change = Adaptation()
    if rules.single_choice and int(body.get("n") or 1) > 1:
        change.refused = "n"
        return change
    if rules.single_choice:
        body.pop("n", None)
    for old, new in rules.rename:
        if old in body:
            value = body.pop(old)
            if new in body:
                change.dropped.append(old)  # the client sent both: its own new-style value wins
            else:
                body[new] = value
                change.renamed.append(f"{old}->{new}")
    for name in sorted(rules.drop.union(extra_drop)):
        if name in body:
            del body[name]
            change.dropped.append(name)
    if rules.drop_message_names:
        named = [
            m for m in body.get("messages") or () if isinstance(m, dict) and m.pop("name", None) is not None
        ]
        if named:
            change.dropped.append("messages[].name")
    return change
