"""Usage and cost on the request path: what the client sees in ``usage`` and what hooks settle on.

Usage is normalised into OpenAI's shape whichever upstream reported it (DeepSeek's
``prompt_cache_hit_tokens``, Groq's ``x_groq.usage``), and priced with ``costs.cost_usd``.

Buffered responses get ``usage.cost`` (USD, a JSON number) and the ``x-switchboard-cost-usd``
header. A target with no price keeps the upstream's own ``usage.cost`` when it reports one
(OpenRouter does), and otherwise gets ``null``. The body is re-serialised once from the upstream's own
JSON, so every field the upstream sent is kept.

Streams: the gateway always asks OpenAI-compatible upstreams for the usage chunk
(``stream_options.include_usage``, see ``providers.openai``). ``StreamMeter`` sees every chunk:

- the client asked for usage: the usage chunk is forwarded with ``usage.cost`` added;
- the client did not: the usage-only chunk (``choices: []``) is dropped, its figures kept for
  settlement;
- the upstream sent no usage at all: it is estimated from what was streamed (about four characters
  per token, no tokenizer) and marked ``"estimated": true``; a client that asked for usage gets a
  synthesised usage chunk before ``[DONE]``.

Interrupted streams (the upstream broke, the client left) settle on the estimate of what was sent.
"""

from __future__ import annotations

import math
from decimal import Decimal
from typing import Any

import pydantic_core

from switchboard.core.money import cost_usd, estimate_prompt_tokens
from switchboard.core.schemas import (
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionRequest,
    EmbeddingResponse,
    Usage,
)
from switchboard.exchange import Exchange
from switchboard.routing.pricing import PriceMatch
from switchboard.upstream.providers.base import StreamChunk

__all__ = [
    "COST_HEADER",
    "Meter",
    "StreamMeter",
    "body_with_cost",
    "charge",
    "charge_usage",
    "completion_meter",
    "estimate_usage",
    "format_usd",
    "normalize_usage",
    "price_usage",
    "record",
    "upstream_cost",
]

COST_HEADER = "x-switchboard-cost-usd"
_CHARS_PER_TOKEN = 4


def normalize_usage(usage: Usage | None) -> Usage | None:
    """``usage`` in OpenAI's shape: cached tokens under ``prompt_tokens_details``, a total set."""
    if usage is None:
        return None
    extra = usage.model_extra or {}
    details = usage.prompt_tokens_details
    hit = extra.get("prompt_cache_hit_tokens")  # DeepSeek
    update: dict[str, Any] = {}
    if isinstance(hit, int) and hit > 0 and not (isinstance(details, dict) and details.get("cached_tokens")):
        update["prompt_tokens_details"] = {
            **(details if isinstance(details, dict) else {}),
            "cached_tokens": hit,
        }
    if not usage.total_tokens:
        update["total_tokens"] = usage.prompt_tokens + usage.completion_tokens
    if not update:
        return usage
    data = usage.model_dump()
    data.update(update)
    return Usage.model_validate(data)


def estimate_usage(chat: ChatCompletionRequest, output_chars: int) -> Usage:
    """A tokenizer-free estimate: about four characters (prompt: bytes) per token."""
    prompt = math.ceil(estimate_prompt_tokens(chat) / _CHARS_PER_TOKEN)
    completion = math.ceil(output_chars / _CHARS_PER_TOKEN)
    total = prompt + completion
    return Usage.model_validate(
        {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": total, "estimated": True}
    )


def format_usd(cost: Decimal) -> str:
    """A plain decimal string, never in exponent form: ``0.0000125``."""
    text = format(cost.normalize(), "f")
    return text if text != "-0" else "0"


def _output_chars(chunk: ChatCompletionChunk) -> int:
    chars = 0
    for choice in chunk.choices:
        delta = choice.delta
        for name in ("content", "reasoning_content", "reasoning", "refusal"):
            value = delta.get(name)
            if isinstance(value, str):
                chars += len(value)
        for call in delta.get("tool_calls") or ():
            function = call.get("function") if isinstance(call, dict) else None
            if isinstance(function, dict):
                chars += len(function.get("arguments") or "") + len(function.get("name") or "")
    return chars


def _completion_chars(completion: ChatCompletion) -> int:
    chars = 0
    for choice in completion.choices:
        chars += len(choice.message.content or "")
        for call in choice.message.tool_calls or ():
            function = call.get("function") if isinstance(call, dict) else None
            if isinstance(function, dict):
                chars += len(function.get("arguments") or "") + len(function.get("name") or "")
    return chars


def upstream_cost(usage: Usage | None) -> Decimal | None:
    """The cost an upstream reported itself (OpenRouter's ``usage.cost``), if any."""
    value = (usage.model_extra or {}).get("cost") if usage is not None else None
    if isinstance(value, int | float) and not isinstance(value, bool) and value >= 0:
        return Decimal(str(value))
    return None


def price_usage(match: PriceMatch | None, usage: Usage | None) -> tuple[Decimal | None, str | None]:
    """The cost of ``usage`` and where its price came from: a price in force, else the upstream's
    own figure (``"upstream"``), else unknown."""
    if usage is None:
        return None, None
    if match is not None:
        return cost_usd(match.price, usage), match.origin
    reported = upstream_cost(usage)
    return (reported, "upstream") if reported is not None else (None, None)


def _price(ex: Exchange, match: PriceMatch | None, usage: Usage | None) -> None:
    ex.price = match.price if match is not None else None
    ex.cost_usd, ex.price_origin = price_usage(match, usage)


def record(ex: Exchange, usage: Usage | None, output_chars: int, match: PriceMatch | None) -> None:
    """Put ``usage`` (reported, else estimated from ``ex.chat`` and the output's length) and its
    cost on ``ex``. Embeddings (``ex.kind``) have no output: only their prompt is billed."""
    ex.usage_estimated = usage is None
    ex.usage = usage if usage is not None else estimate_usage(ex.chat, output_chars)
    if ex.kind == "embeddings":
        prompt = ex.usage.prompt_tokens
        ex.usage = Usage(prompt_tokens=prompt, completion_tokens=0, total_tokens=prompt)
    _price(ex, match, ex.usage)


def charge_usage(ex: Exchange, usage: Usage | None, output_chars: int, match: PriceMatch | None) -> None:
    """``record`` for a buffered answer, and set the cost header."""
    record(ex, usage, output_chars, match)
    if ex.cost_usd is not None:
        ex.headers[COST_HEADER] = format_usd(ex.cost_usd)


def charge(ex: Exchange, completion: ChatCompletion, match: PriceMatch | None) -> None:
    """Settle a buffered completion's usage and cost on ``ex``, and set the cost header."""
    charge_usage(ex, normalize_usage(completion.usage), _completion_chars(completion), match)


def completion_meter(completion: ChatCompletion) -> Meter:
    """The meter of a buffered completion: its usage as reported, its output's length."""
    meter = Meter()
    meter.usage = normalize_usage(completion.usage)
    meter.chars = _completion_chars(completion)
    return meter


def _cost_number(cost: Decimal | None) -> float | None:
    return float(cost) if cost is not None else None


def body_with_cost(raw: bytes | None, completion: ChatCompletion | EmbeddingResponse, ex: Exchange) -> bytes:
    """The client's body (a completion's or embeddings'): the upstream's JSON with ``usage.cost``
    added (one parse, one dump)."""
    body: Any = pydantic_core.from_json(raw) if raw is not None else completion.model_dump(mode="json")
    if not isinstance(body, dict):  # the upstream's body was validated as a completion: cannot happen
        return raw or completion.model_dump_json().encode()
    usage = body.get("usage")
    if not isinstance(usage, dict):
        usage = body["usage"] = ex.usage.model_dump(mode="json") if ex.usage is not None else {}
    usage["cost"] = _cost_number(ex.cost_usd)
    return pydantic_core.to_json(body)


class Meter:
    """The one meter every endpoint fills, whatever its wire format: the usage the answer reported
    (None: it reported none, and ``record`` estimates it from ``chars``, marked as estimated), the
    output characters seen, the price in force (``match``), and for a stream how it ended
    (``completed``; ``interrupted``: the upstream failed after output began)."""

    __slots__ = ("chars", "completed", "interrupted", "match", "usage")

    def __init__(self, match: PriceMatch | None = None) -> None:
        self.match = match
        self.usage: Usage | None = None
        self.chars = 0
        self.completed = False
        self.interrupted = False


class StreamMeter(Meter):
    """Watches a stream's chunks: keeps the usage, strips or prices the usage chunk, counts output."""

    __slots__ = ("_last", "chat", "wants_usage")

    def __init__(self, chat: ChatCompletionRequest, match: PriceMatch | None = None) -> None:
        super().__init__(match)
        self.chat = chat
        self.wants_usage = bool(chat.stream_options and chat.stream_options.include_usage)
        self._last: ChatCompletionChunk | None = None

    def chunk(self, item: StreamChunk) -> StreamChunk | None:
        """The chunk to send the client in place of ``item``; None to send nothing."""
        chunk = item.chunk
        self._last = chunk
        self.chars += _output_chars(chunk)
        usage = chunk.usage
        if usage is None:
            groq = (chunk.model_extra or {}).get("x_groq")
            if isinstance(groq, dict) and isinstance(groq.get("usage"), dict):
                self.usage = normalize_usage(Usage.model_validate(groq["usage"]))
            return item
        self.usage = normalize_usage(usage)
        if not self.wants_usage:
            return None if not chunk.choices else item
        return StreamChunk(chunk, self._priced(item.raw or chunk.model_dump_json().encode(), self.usage))

    def end(self) -> StreamChunk | None:
        """A usage chunk to send before ``[DONE]`` when the client asked and the upstream sent none."""
        if not self.wants_usage or self.usage is not None or self._last is None:
            return None
        usage = estimate_usage(self.chat, self.chars)
        last = self._last
        chunk = ChatCompletionChunk(
            id=last.id, created=last.created, model=last.model, choices=[], usage=usage
        )
        return StreamChunk(chunk, self._priced(chunk.model_dump_json().encode(), usage))

    def settle(self, ex: Exchange) -> None:
        """Put the stream's usage (reported, else estimated from what was sent) and cost on ``ex``."""
        record(ex, self.usage, self.chars, self.match)

    def _priced(self, raw: bytes, usage: Usage | None) -> bytes:
        body = pydantic_core.from_json(raw)
        if isinstance(body, dict) and isinstance(body.get("usage"), dict):
            body["usage"]["cost"] = _cost_number(price_usage(self.match, usage)[0])
        return pydantic_core.to_json(body)
