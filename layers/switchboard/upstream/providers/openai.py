"""Any OpenAI-compatible upstream: OpenAI, Groq, Together, Mistral, DeepSeek, OpenRouter, vLLM...

Configuration, not code: a base URL, an optional key reference and the parameters the upstream
rejects (the built-in table in ``providers.compat`` plus the entry's ``unsupported_params``, dropped
or renamed before sending, and logged). Otherwise bodies pass through with the model name replaced,
so every OpenAI parameter, known or new, reaches the upstream as the client sent it. Gemini and
Azure OpenAI are this class with another URL, auth header or rule set (``gemini.py``, ``azure.py``).
Streams always ask for the usage chunk (``stream_options.include_usage``) unless a rule or
``unsupported_params`` drops ``stream_options``.
"""

from __future__ import annotations

import json
import logging
from typing import Any, ClassVar

import httpx
from pydantic import ValidationError

from switchboard.core.errors import AttemptFailed, ErrorClass, redact
from switchboard.core.schemas import ChatCompletion, ChatCompletionChunk, EmbeddingResponse
from switchboard.core.sse import SSEEvent
from switchboard.routing.planner import PlannedTarget
from switchboard.upstream.providers.base import (
    Call,
    EmbedCall,
    HttpProvider,
    StreamChunk,
    UpstreamRequest,
    classify_http_error,
    unsupported,
)
from switchboard.upstream.providers.compat import adapt, rules_for

__all__ = ["OpenAICompatible"]

log = logging.getLogger("switchboard.providers.openai")


class OpenAICompatible(HttpProvider):
    """The shared base. Subclasses change only where the upstream differs: URL, auth, rule set."""

    kind = "openai"
    default_base_url: ClassVar[str | None] = "https://api.openai.com/v1"
    embeddings: ClassVar[bool] = True
    rules_name: ClassVar[str | None] = None  # None: recognise the upstream by its base URL

    def url(self, target: PlannedTarget, operation: str) -> str:
        """Where ``operation`` (``chat/completions``, ``embeddings``) lives for ``target``."""
        return f"{target.provider.base_url}/{operation}"

    def auth(self, api_key: str) -> dict[str, str]:
        return {"authorization": f"Bearer {api_key}"}

    def adapt(self, call: Call | EmbedCall, body: dict[str, Any]) -> None:
        """Drop and rename, in place, what this upstream rejects (``providers.compat``); log it."""
        provider = call.target.provider
        rules = rules_for(provider.param_rules, provider.base_url, self.rules_name)
        change = adapt(body, rules, provider.unsupported_params)
        if change.refused is not None:
            raise unsupported(call, f"{change.refused} > 1 ({rules.name} returns one choice)", change.refused)
        if change:
            log.info(
                "adapted request for %s (%s rules): dropped %s, renamed %s",
                call.target.label,
                rules.name,
                change.dropped,
                change.renamed,
            )

    def headers(self, call: Call | EmbedCall, stream: bool = False) -> dict[str, str]:
        provider = call.target.provider
        headers = {"content-type": "application/json", "accept": "application/json", **provider.headers}
        if stream:
            headers["accept"] = "text/event-stream"
        if call.api_key:
            headers.update(self.auth(call.api_key))
        return headers

    def build_request(self, call: Call) -> UpstreamRequest:
        body: dict[str, Any] = call.request.model_dump(exclude_unset=True)
        body["model"] = call.target.model
        if call.stream:
            # Always ask for the usage chunk: the cost is settled on it. The gateway drops it again
            # when the client did not ask (switchboard.billing.metering.StreamMeter). ``adapt`` removes
            # stream_options again for an upstream that rejects it.
            options = body.get("stream_options")
            body["stream_options"] = {**(options if isinstance(options, dict) else {}), "include_usage": True}
        self.adapt(call, body)
        return UpstreamRequest(
            "POST",
            self.url(call.target, "chat/completions"),
            self.headers(call, call.stream),
            json.dumps(body, separators=(",", ":")).encode(),
        )

    async def embed(self, call: EmbedCall) -> tuple[EmbeddingResponse, bytes | None]:
        """``POST {base}/embeddings``: the body as sent (model replaced, rejected fields dropped)."""
        body: dict[str, Any] = call.request.model_dump(exclude_unset=True)
        body["model"] = call.target.model
        self.adapt(call, body)
        timeouts = call.target.timeouts
        request = call.http.build_request(
            "POST",
            self.url(call.target, "embeddings"),
            headers=self.headers(call),
            content=json.dumps(body, separators=(",", ":")).encode(),
            timeout=httpx.Timeout(timeouts.total_s, connect=timeouts.connect_s),
        )
        response = await call.http.send(request)
        content = await response.aread()
        if response.status_code != 200:
            raise classify_http_error(
                response.status_code, content, response.headers, call.target.provider_name
            )
        try:
            return EmbeddingResponse.model_validate_json(content), content
        except ValidationError:
            raise _malformed(call, content) from None

    def parse_response(self, content: bytes, call: Call) -> tuple[ChatCompletion, bytes | None]:
        try:
            return ChatCompletion.model_validate_json(content), content
        except ValidationError:
            raise _malformed(call, content) from None

    def parse_event(self, event: SSEEvent, call: Call, state: dict[str, Any]) -> list[StreamChunk] | None:
        data = event.data
        if data == b"[DONE]":
            return None
        if not data:
            return []
        try:
            chunk = ChatCompletionChunk.model_validate_json(data)
        except ValidationError:
            raise _malformed(call, data) from None
        seen: set[int] = state.setdefault("seen", set())
        done: set[int] = state.setdefault("done", set())
        for choice in chunk.choices:
            seen.add(choice.index)
            if choice.finish_reason:
                done.add(choice.index)
        return [StreamChunk(chunk, data)]

    def finished(self, state: dict[str, Any]) -> bool:
        seen: set[int] = state.get("seen", set())
        return bool(seen) and seen <= state.get("done", set())


def _malformed(call: Call | EmbedCall, content: bytes) -> AttemptFailed:
    """An upstream answered 200 with something that is not a completion: a server-class failure."""
    try:
        err = json.loads(content).get("error")
    except (ValueError, AttributeError):
        err = None
    if isinstance(err, dict):
        detail = redact(str(err.get("message", "")))[:300]
        return AttemptFailed(ErrorClass.SERVER, f"{call.target.provider_name}: upstream error: {detail}")
    return AttemptFailed(ErrorClass.SERVER, f"{call.target.provider_name}: malformed upstream response")
