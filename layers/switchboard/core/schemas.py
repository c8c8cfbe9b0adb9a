"""OpenAI wire shapes at the gateway's edges.

Requests keep unknown fields (``extra="allow"``) so that new OpenAI parameters pass through to
OpenAI-compatible upstreams untouched; the fields the gateway reads are typed and validated.
Upstream responses are validated on the way back, so malformed upstream output is caught here
and classed as a server failure rather than forwarded.
"""

from __future__ import annotations

import base64
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

__all__ = [
    "ChatCompletion",
    "ChatCompletionChunk",
    "ChatCompletionRequest",
    "ChatMessage",
    "Embedding",
    "EmbeddingRequest",
    "EmbeddingResponse",
    "EmbeddingUsage",
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


_PART_MODALITY = {"image_url": "image", "input_audio": "audio", "file": "file"}


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

    def input_modalities(self) -> set[str]:
        """The kinds of input the messages carry: text, plus image, audio or file parts."""
        found = {"text"}
        for message in self.messages:
            if isinstance(message.content, list):
                found.update(_PART_MODALITY.get(str(part.get("type")), "text") for part in message.content)
        return found

    @property
    def wants_json(self) -> bool:
        """JSON mode or a JSON schema asked for through ``response_format``."""
        return (self.response_format or {}).get("type") in ("json_object", "json_schema")

    @property
    def output_cap(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens


def _absent(value: Any) -> bool:
    return value is None


class Usage(_Open):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    # cached_tokens (cache reads) and cache_write_tokens, as OpenAI's CompletionUsage names them
    prompt_tokens_details: dict[str, Any] | None = Field(default=None, exclude_if=_absent)


class ResponseMessage(_Open):
    role: Literal["assistant"]
    content: str | None = None
    # OpenAI's schema allows no null here: an absent list is left out, not sent as null.
    tool_calls: list[dict[str, Any]] | None = Field(default=None, exclude_if=_absent)


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
    """An alias in ``GET /v1/models``. OpenAI's Model allows extra properties: the optional ones
    below appear only when the routing document knows them."""

    id: str
    object: Literal["model"] = "model"
    created: int = 0
    owned_by: str = "switchboard"
    context_window: int | None = None
    max_output_tokens: int | None = None
    modalities: list[str] | None = None
    endpoints: list[str] | None = None
    dimensions: int | None = None
    description: str | None = None

    def to_json(self) -> str:
        return self.model_dump_json(exclude_none=True)


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[Model]

    def to_json(self) -> str:
        return self.model_dump_json(exclude_none=True)


class EmbeddingRequest(_Open):
    """POST /v1/embeddings. Unknown fields are kept and passed to OpenAI-compatible upstreams."""

    model: str = Field(min_length=1, max_length=256)
    input: str | list[str] | list[int] | list[list[int]]
    encoding_format: Literal["float", "base64"] | None = None
    dimensions: int | None = Field(default=None, ge=1)
    user: str | None = None

    @field_validator("input")
    @classmethod
    def _not_empty(
        cls, value: str | list[str] | list[int] | list[list[int]]
    ) -> str | list[str] | list[int] | list[list[int]]:
        if isinstance(value, list) and not 1 <= len(value) <= 2048:
            raise ValueError("input must hold 1 to 2048 items")
        if value == "":
            raise ValueError("input must not be empty")
        return value

    def texts(self) -> list[str] | None:
        """The inputs as strings, or None when they are token ids."""
        if isinstance(self.input, str):
            return [self.input]
        if all(isinstance(item, str) for item in self.input):
            return [str(item) for item in self.input]
        return None


class Embedding(_Open):
    object: Literal["embedding"] = "embedding"
    index: int
    embedding: list[float] | str  # str: base64 of little-endian float32, as OpenAI sends it


class EmbeddingUsage(_Open):
    prompt_tokens: int = 0
    total_tokens: int = 0


class EmbeddingResponse(_Open):
    object: Literal["list"] = "list"
    data: list[Embedding]
    model: str
    usage: EmbeddingUsage = EmbeddingUsage()

    def vector_length(self) -> int | None:
        """The length of the vectors, if every one has the same; None when mixed or empty."""
        lengths = set()
        for item in self.data:
            if isinstance(item.embedding, str):
                try:
                    lengths.add(len(base64.b64decode(item.embedding, validate=True)) // 4)
                except ValueError:
                    return None
            else:
                lengths.add(len(item.embedding))
        return lengths.pop() if len(lengths) == 1 else None
