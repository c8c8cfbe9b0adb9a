"""Any OpenAI-compatible upstream: OpenAI, Groq, Together, Mistral, DeepSeek, OpenRouter, vLLM...

Configuration, not code: a base URL, an optional key reference and a list of parameters the
upstream rejects (dropped before sending). Bodies pass through with the model name replaced, so
every OpenAI parameter, known or new, reaches the upstream as the client sent it.
"""

from __future__ import annotations

import json
import logging
from typing import Any, ClassVar

from pydantic import ValidationError

from switchboard.errors import AttemptFailed, ErrorClass, redact
from switchboard.providers.base import Call, HttpProvider, StreamChunk, UpstreamRequest
from switchboard.schemas import ChatCompletion, ChatCompletionChunk
from switchboard.sse import SSEEvent

__all__ = ["OpenAICompatible"]

log = logging.getLogger("switchboard.providers.openai")


class OpenAICompatible(HttpProvider):
    kind = "openai"
    default_base_url: ClassVar[str | None] = "https://api.openai.com/v1"

    def build_request(self, call: Call) -> UpstreamRequest:
        provider = call.target.provider
        body: dict[str, Any] = call.request.model_dump(exclude_unset=True)
        body["model"] = call.target.model
        dropped = [name for name in provider.unsupported_params if body.pop(name, None) is not None]
        if dropped:
            log.info("dropped parameters %s unsupported by %s", dropped, call.target.provider_name)
        headers = {"content-type": "application/json", "accept": "application/json", **provider.headers}
        if call.stream:
            headers["accept"] = "text/event-stream"
        if call.api_key:
            headers["authorization"] = f"Bearer {call.api_key}"
        return UpstreamRequest(
            "POST",
            f"{provider.base_url}/chat/completions",
            headers,
            json.dumps(body, separators=(",", ":")).encode(),
        )

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


def _malformed(call: Call, content: bytes) -> AttemptFailed:
    """An upstream answered 200 with something that is not a completion: a server-class failure."""
    try:
        err = json.loads(content).get("error")
    except (ValueError, AttributeError):
        err = None
    if isinstance(err, dict):
        detail = redact(str(err.get("message", "")))[:300]
        return AttemptFailed(ErrorClass.SERVER, f"{call.target.provider_name}: upstream error: {detail}")
    return AttemptFailed(ErrorClass.SERVER, f"{call.target.provider_name}: malformed upstream response")
