"""OpenAI wire shapes at the gateway's edges.

Requests keep unknown fields (``extra="allow"``) so that new OpenAI parameters pass through to
OpenAI-compatible upstreams untouched; the fields the gateway reads are typed and validated.
Upstream responses are validated on the way back, so malformed upstream output is caught here
and classed as a server failure rather than forwarded.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

__all__ = [
    "ChatCompletion",
    "ChatCompletionChunk",
    "ChatCompletionRequest",
    "ChatMessage",
    "Model",
    "ModelList",
    "Usage",
]


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow")


class ChatMessage(_Open):
    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[dict[str, Any]] | None = None
    name: str | None = None
    tool_calls: list[dict[str, Any]] | None = None
    tool_call_id: str | None = None


class StreamOptions(_Open):
    include_usage: bool | None = None


class ChatCompletionRequest(_Open):
    """POST /v1/chat/completions. Unknown fields are kept and passed upstream."""

    model: str = Field(min_length=1, max_length=256)
    messages: list[ChatMessage] = Field(min_length=1)
    stream: bool | None = None
    stream_options: StreamOptions | None = None
    n: int | None = Field(default=None, ge=1, le=128)
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, ge=0, le=1)
    stop: str | list[str] | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    response_format: dict[str, Any] | None = None
    user: str | None = None

    @field_validator("stop")
    @classmethod
    def _stop_bounded(cls, value: str | list[str] | None) -> str | list[str] | None:
        if isinstance(value, list) and len(value) > 4:
            raise ValueError("at most 4 stop sequences")
        return value

    @property
    def wants_stream(self) -> bool:
        return bool(self.stream)

    @property
    def output_cap(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens


class Usage(_Open):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0


class ResponseMessage(_Open):
    role: Literal["assistant"]
    content: str | None = None
    tool_calls: list[dict[str, Any]] | None = None


class Choice(_Open):
    index: int
    message: ResponseMessage
    finish_reason: str | None = None


class ChatCompletion(_Open):
    """An upstream's non-streaming answer, validated before it reaches the client."""

    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[Choice]
    usage: Usage | None = None


class ChunkChoice(_Open):
    index: int
    delta: dict[str, Any]
    finish_reason: str | None = None


class ChatCompletionChunk(_Open):
    """One streamed chunk from an upstream."""

    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChunkChoice]
    usage: Usage | None = None

    def has_content(self) -> bool:
        """True once the chunk carries something the client will treat as output."""
        for choice in self.choices:
            delta = choice.delta
            if delta.get("content") or delta.get("tool_calls") or delta.get("refusal"):
                return True
            if delta.get("function_call") or choice.finish_reason:
                return True
        return False


class Model(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int = 0
    owned_by: str = "switchboard"


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[Model]
