"""Prices and cost arithmetic. Money is ``Decimal`` end to end: the ledger must add up to the cent.

Usage follows OpenAI's convention whichever provider served it: ``prompt_tokens`` includes cached
tokens (``prompt_tokens_details.cached_tokens``); cache writes, where a provider reports them, are
in ``prompt_tokens_details.cache_write_tokens``. Providers map their own usage into this shape.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from switchboard.core.schemas import ChatCompletionRequest, Usage

__all__ = [
    "MTOK",
    "Price",
    "cost_usd",
    "estimate_prompt_tokens",
    "price_key",
    "usage_breakdown",
    "usage_from_parts",
]

MTOK = Decimal(1_000_000)


class Price(BaseModel):
    """USD per million tokens for one provider/model."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    input_per_mtok: Decimal = Field(ge=0)
    output_per_mtok: Decimal = Field(ge=0)
    cached_input_per_mtok: Decimal | None = Field(default=None, ge=0)
    cache_write_per_mtok: Decimal | None = Field(default=None, ge=0)
    max_output_tokens: int | None = Field(default=None, gt=0)
    source: str | None = None
    as_of: str | None = None


def price_key(provider: str, model: str) -> str:
    return f"{provider}/{model}"


def usage_breakdown(usage: Usage) -> tuple[int, int, int, int]:
    """(uncached input, cached input, cache writes, output) tokens from an OpenAI-shaped usage."""
    details: Any = getattr(usage, "prompt_tokens_details", None) or {}
    if not isinstance(details, dict):
        details = details.model_dump() if hasattr(details, "model_dump") else {}
    cached = int(details.get("cached_tokens") or 0)
    writes = int(details.get("cache_write_tokens") or 0)
    uncached = max(0, usage.prompt_tokens - cached - writes)
    return uncached, cached, writes, usage.completion_tokens


def usage_from_parts(fresh: int, cache_read: int, cache_write: int, output: int) -> Usage:
    """OpenAI-shaped usage from a provider that counts fresh, cache-read and cache-written input
    apart (Anthropic, Bedrock): OpenAI's ``prompt_tokens`` includes all three."""
    prompt = fresh + cache_read + cache_write
    return Usage(
        prompt_tokens=prompt,
        completion_tokens=output,
        total_tokens=prompt + output,
        prompt_tokens_details={"cached_tokens": cache_read, "cache_write_tokens": cache_write},
    )


def cost_usd(price: Price, usage: Usage) -> Decimal:
    """The exact cost of ``usage`` at ``price``."""
    uncached, cached, writes, output = usage_breakdown(usage)
    cached_rate = (
        price.cached_input_per_mtok if price.cached_input_per_mtok is not None else price.input_per_mtok
    )
    write_rate = (
        price.cache_write_per_mtok if price.cache_write_per_mtok is not None else price.input_per_mtok
    )
    total = (
        uncached * price.input_per_mtok
        + cached * cached_rate
        + writes * write_rate
        + output * price.output_per_mtok
    )
    return total / MTOK


def estimate_prompt_tokens(chat: ChatCompletionRequest) -> int:
    """An upper bound on prompt tokens with no tokenizer: a token is at least one UTF-8 byte.

    Settlement uses the provider's reported usage, so over-estimating here only holds budget
    briefly; under-estimating would let concurrent requests overspend.
    """
    size = 0
    for message in chat.messages:
        content = message.content
        if isinstance(content, str):
            size += len(content.encode())
        elif content:
            size += len(str(content).encode())
        if message.tool_calls:
            size += len(str(message.tool_calls).encode())
        size += 8  # role and message framing
    if chat.tools:
        size += len(str(chat.tools).encode())
    return size + 16
