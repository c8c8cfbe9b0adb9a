"""Amazon Bedrock's Converse and ConverseStream APIs, through boto3 ``bedrock-runtime``.

No API key: the function's IAM role signs the calls (``bedrock:InvokeModel`` for Converse,
``bedrock:InvokeModelWithResponseStream`` for ConverseStream). The provider entry names a
``region`` and, optionally, a ``base_url`` to reach Bedrock through a VPC endpoint.

Wire format: the Converse / ConverseStream API reference
(https://docs.aws.amazon.com/bedrock/latest/APIReference/API_runtime_Converse.html and
..._ConverseStream.html) and botocore's ``bedrock-runtime`` 2023-09-30 service model, which also
validates every request in the tests.

Mapping (OpenAI chat -> Converse), the same choices as the Anthropic provider where they overlap:
    system / developer messages -> ``system`` text blocks; turns of one role merged; tool messages
    -> ``toolResult`` blocks; ``tool_calls`` -> ``toolUse``; ``data:`` image URLs -> image bytes;
    ``s3://`` URLs -> ``s3Location`` (http URLs are refused: the gateway does not fetch them);
    ``cache_control`` -> a ``cachePoint`` after the block; max_tokens / temperature (capped at 1) /
    top_p / stop -> ``inferenceConfig``; tools / tool_choice (auto, required -> any, named -> tool;
    ``none`` drops the tools, or is a 400 once the conversation holds tool blocks, since Converse
    needs the tool list then); ``response_format`` JSON mode through the forced ``json_response``
    tool; n > 1 and logprobs are a 400.
Response: text -> content, ``toolUse`` -> tool_calls, stopReason -> finish_reason,
``guardrail_intervened``/``content_filtered`` -> ``content_filter``; usage like Anthropic's
(cache reads and writes added to prompt tokens and reported in ``prompt_tokens_details``).
Errors: ThrottlingException / ServiceQuotaExceeded -> rate_limit; ServiceUnavailable,
ModelNotReady, InternalServer, ModelError, ModelStreamError -> server; ModelTimeout -> timeout;
ValidationException about input length -> context_window; other 4xx -> client.

boto3 is synchronous: each call (and each stream read) runs in a worker thread. Clients are built
lazily, once per region and endpoint, by an injectable factory (each costs tens of ms).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import functools
import json
import logging
import struct
import time
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any, ClassVar

from switchboard.core.errors import AttemptFailed, ErrorClass
from switchboard.core.money import usage_from_parts
from switchboard.core.schemas import (
    ChatCompletion,
    ChatCompletionChunk,
    ChatMessage,
    EmbeddingResponse,
    Usage,
)
from switchboard.routing.document import ProviderConfig
from switchboard.upstream.providers.anthropic import JSON_TOOL
from switchboard.upstream.providers.base import (
    Call,
    EmbedCall,
    StreamChunk,
    classify_http_error,
    tool_call_parts,
    unsupported,
)

__all__ = ["Bedrock", "ClientFactory", "classify_bedrock_error", "from_converse", "to_converse"]

log = logging.getLogger("switchboard.providers.bedrock")

ClientFactory = Callable[[ProviderConfig], Any]

_FINISH = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "guardrail_intervened": "content_filter",
    "content_filtered": "content_filter",
}
_MALFORMED = frozenset({"malformed_model_output", "malformed_tool_use"})
_FORMATS = {
    "image/png": "png",
    "image/jpeg": "jpeg",
    "image/jpg": "jpeg",
    "image/gif": "gif",
    "image/webp": "webp",
}
_MAPPED = frozenset(
    {
        "model",
        "messages",
        "stream",
        "stream_options",
        "n",
        "max_tokens",
        "max_completion_tokens",
        "temperature",
        "top_p",
        "stop",
        "tools",
        "tool_choice",
        "response_format",
        "logprobs",
        "top_logprobs",
    }
)
_RATE = frozenset({"throttlingexception", "servicequotaexceededexception"})
_SERVER = frozenset(
    {
        "serviceunavailableexception",
        "modelnotreadyexception",
        "internalserverexception",
        "modelerrorexception",
        "modelstreamerrorexception",
    }
)


# --------------------------------------------------------------------------- request


def _image(call: Call, part: Mapping[str, Any]) -> dict[str, Any]:
    image = part.get("image_url")
    url = image.get("url") if isinstance(image, dict) else image
    if isinstance(url, str) and url.startswith("data:"):
        header, _, data = url[5:].partition(",")
        media_type, _, encoding = header.partition(";")
        fmt = _FORMATS.get(media_type.lower())
        if encoding != "base64" or fmt is None:
            raise unsupported(call, "images other than base64 png, jpeg, gif or webp", "messages")
        try:
            raw = base64.b64decode(data, validate=True)
        except (binascii.Error, ValueError):
            raise unsupported(call, "an image data URL that is not valid base64", "messages") from None
        return {"image": {"format": fmt, "source": {"bytes": raw}}}
    if isinstance(url, str) and url.startswith("s3://"):
        fmt = _FORMATS.get("image/" + url.rsplit(".", 1)[-1].lower())
        if fmt is None:
            raise unsupported(
                call, "s3 images whose extension is not png, jpeg, jpg, gif or webp", "messages"
            )
        return {"image": {"format": fmt, "source": {"s3Location": {"uri": url}}}}
    raise unsupported(
        call, "image URLs other than data: or s3:// (the gateway does not fetch URLs)", "messages"
    )


def _blocks(call: Call, content: str | list[dict[str, Any]] | None) -> list[dict[str, Any]]:
    if content is None:
        return []
    if isinstance(content, str):
        return [{"text": content}] if content else []
    blocks: list[dict[str, Any]] = []
    for part in content:
        kind = part.get("type")
        if kind in ("text", "refusal"):
            if part.get(kind):
                blocks.append({"text": part[kind]})
        elif kind == "image_url":
            blocks.append(_image(call, part))
        else:
            raise unsupported(call, f"content parts of type {kind!r}", "messages")
        if "cache_control" in part and blocks:
            blocks.append({"cachePoint": {"type": "default"}})
    return blocks


def _tool_use(call: Call, tool_call: Mapping[str, Any]) -> dict[str, Any]:
    ident, name, arguments = tool_call_parts(call, tool_call)
    return {"toolUse": {"toolUseId": ident, "name": name, "input": arguments}}


def _tool_result(call: Call, message: ChatMessage) -> dict[str, Any]:
    content = message.content
    if isinstance(content, list):
        parts = [b for b in _blocks(call, content) if "cachePoint" not in b]
    else:
        parts = [{"text": content or ""}]
    return {"toolResult": {"toolUseId": message.tool_call_id, "content": parts or [{"text": ""}]}}


def _conversation(call: Call) -> tuple[list[dict[str, Any]], list[dict[str, Any]], bool]:
    """System blocks, alternating messages, and whether the history holds tool blocks."""
    system: list[dict[str, Any]] = []
    turns: list[dict[str, Any]] = []
    tool_history = False
    for message in call.request.messages:
        if message.role in ("system", "developer"):
            system += _blocks(call, message.content)
            continue
        if message.role == "user":
            role, blocks = "user", _blocks(call, message.content)
        elif message.role == "assistant":
            role = "assistant"
            blocks = _blocks(call, message.content) + [_tool_use(call, t) for t in message.tool_calls or ()]
        elif message.role == "tool":
            role, blocks = "user", [_tool_result(call, message)]
        else:
            raise unsupported(call, "the deprecated 'function' role; use tools", "messages")
        tool_history = tool_history or any("toolUse" in b or "toolResult" in b for b in blocks)
        if (message.model_extra or {}).get("cache_control") is not None and blocks:
            blocks.append({"cachePoint": {"type": "default"}})
        if not blocks:
            continue
        if turns and turns[-1]["role"] == role:
            turns[-1]["content"] += blocks
        else:
            turns.append({"role": role, "content": blocks})
    return system, turns, tool_history


def _tool_config(call: Call, tool_history: bool) -> dict[str, Any] | None:
    request = call.request
    tools: list[dict[str, Any]] = []
    for tool in request.tools or ():
        function = tool.get("function")
        if tool.get("type") != "function" or not isinstance(function, dict):
            raise unsupported(call, f"tools of type {tool.get('type')!r}", "tools")
        spec: dict[str, Any] = {
            "name": function.get("name"),
            "inputSchema": {"json": function.get("parameters") or {"type": "object", "properties": {}}},
        }
        if function.get("description"):
            spec["description"] = function["description"]
        tools.append({"toolSpec": spec})
        if "cache_control" in tool:
            tools.append({"cachePoint": {"type": "default"}})
    choice = _tool_choice(call, request.tool_choice) if tools else None
    if choice == "none":
        if tool_history:
            raise unsupported(
                call, "tool_choice 'none' in a conversation that holds tool calls", "tool_choice"
            )
        tools, choice = [], None
    fmt = request.response_format or {}
    if request.wants_json:
        schema: Any = {"type": "object"}
        if fmt["type"] == "json_schema":
            schema = (fmt.get("json_schema") or {}).get("schema") or schema
        if not isinstance(schema, dict) or schema.get("type") != "object":
            raise unsupported(call, "JSON schemas whose root is not an object", "response_format")
        has_client_tools = any("toolSpec" in t for t in tools)
        if not has_client_tools:
            choice = {"tool": {"name": JSON_TOOL}}
        elif choice is None or "auto" in choice:
            choice = {"any": {}}
        spec = {"name": JSON_TOOL, "description": "Give the final answer as this tool's input."}
        tools.append({"toolSpec": {**spec, "inputSchema": {"json": schema}}})
    elif fmt.get("type") not in (None, "text"):
        raise unsupported(call, f"response_format {fmt.get('type')!r}", "response_format")
    if not tools:
        return None
    config: dict[str, Any] = {"tools": tools}
    if isinstance(choice, dict):
        config["toolChoice"] = choice
    return config


def _tool_choice(call: Call, choice: str | dict[str, Any] | None) -> dict[str, Any] | str | None:
    if choice is None:
        return None
    if isinstance(choice, dict):
        name = (choice.get("function") or {}).get("name")
        if choice.get("type") != "function" or not name:
            raise unsupported(call, "this tool_choice", "tool_choice")
        return {"tool": {"name": name}}
    if choice == "none":
        return "none"
    if choice not in ("auto", "required"):
        raise unsupported(call, f"tool_choice {choice!r}", "tool_choice")
    return {"auto": {}} if choice == "auto" else {"any": {}}


def to_converse(call: Call) -> dict[str, Any]:
    """The keyword arguments of ``converse`` / ``converse_stream`` for ``call`` (pure)."""
    request = call.request
    extra = request.model_extra or {}
    if (request.n or 1) > 1:
        raise unsupported(call, "n > 1 (one completion per request); send n separate requests", "n")
    if extra.get("logprobs") or extra.get("top_logprobs"):
        raise unsupported(call, "logprobs", "logprobs")
    system, turns, tool_history = _conversation(call)
    kwargs: dict[str, Any] = {"modelId": call.target.model, "messages": turns}
    if system:
        kwargs["system"] = system
    inference: dict[str, Any] = {}
    if request.output_cap is not None:
        inference["maxTokens"] = request.output_cap
    if request.temperature is not None:
        inference["temperature"] = min(request.temperature, 1.0)
    if request.top_p is not None:
        inference["topP"] = request.top_p
    if request.stop:
        inference["stopSequences"] = [request.stop] if isinstance(request.stop, str) else list(request.stop)
    if inference:
        kwargs["inferenceConfig"] = inference
    tool_config = _tool_config(call, tool_history)
    if tool_config is not None:
        kwargs["toolConfig"] = tool_config
    dropped = sorted(name for name in extra if name not in _MAPPED)
    if request.user:
        dropped.append("user")
    if dropped:
        log.info("dropped parameters %s unsupported by %s", dropped, call.target.label)
    return kwargs


# --------------------------------------------------------------------------- response


def converse_usage(usage: Mapping[str, Any]) -> Usage:
    """OpenAI usage from Converse's: prompt tokens include cache reads and writes."""
    return usage_from_parts(
        int(usage.get("inputTokens") or 0),
        int(usage.get("cacheReadInputTokens") or 0),
        int(usage.get("cacheWriteInputTokens") or 0),
        int(usage.get("outputTokens") or 0),
    )


def _finish(call: Call, reason: str | None, tool_calls: int) -> str:
    if reason in _MALFORMED:
        raise AttemptFailed(
            ErrorClass.SERVER, f"{call.target.provider_name}: the model's output was malformed ({reason})"
        )
    finish = _FINISH.get(reason or "end_turn", "stop")
    return "stop" if finish == "tool_calls" and tool_calls == 0 else finish


def _request_id(response: Mapping[str, Any]) -> str:
    return "chatcmpl-" + str(
        (response.get("ResponseMetadata") or {}).get("RequestId") or int(time.time() * 1e6)
    )


def from_converse(response: Mapping[str, Any], call: Call, created: int) -> ChatCompletion:
    """An OpenAI completion from boto3's ``converse`` response (pure)."""
    message = (response.get("output") or {}).get("message") or {}
    json_mode = call.request.wants_json
    texts: list[str] = []
    tool_calls: list[dict[str, Any]] = []
    answer: str | None = None
    for block in message.get("content") or ():
        if "text" in block:
            texts.append(block["text"])
        elif "toolUse" in block:
            use = block["toolUse"]
            arguments = json.dumps(use.get("input") or {}, ensure_ascii=False)
            if json_mode and use.get("name") == JSON_TOOL:
                answer = arguments
            else:
                function = {"name": use.get("name"), "arguments": arguments}
                tool_calls.append({"id": use.get("toolUseId"), "type": "function", "function": function})
    content = answer if answer is not None else "".join(texts)
    msg: dict[str, Any] = {
        "role": "assistant",
        "content": content or (None if tool_calls else ""),
        "refusal": None,
    }
    if tool_calls:
        msg["tool_calls"] = tool_calls
    finish = _finish(call, response.get("stopReason"), len(tool_calls))
    return ChatCompletion.model_validate(
        {
            "id": _request_id(response),
            "object": "chat.completion",
            "created": created,
            "model": call.target.model,
            "choices": [{"index": 0, "message": msg, "finish_reason": finish, "logprobs": None}],
            "usage": converse_usage(response.get("usage") or {}).model_dump(),
        }
    )


class _StreamState:
    __slots__ = ("blocks", "created", "id", "json_mode", "model", "stopped", "tools", "with_usage")

    def __init__(self, call: Call, request_id: str) -> None:
        self.id = request_id
        self.model = call.target.model
        self.created = int(time.time())
        self.blocks: dict[int, tuple[str, int]] = {}
        self.tools = 0
        self.stopped = False
        self.json_mode = call.request.wants_json
        options = call.request.stream_options
        self.with_usage = bool(options and options.include_usage)

    def chunk(
        self, delta: dict[str, Any], finish: str | None = None, usage: Usage | None = None
    ) -> StreamChunk:
        choices = [] if usage else [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}]
        return StreamChunk(
            ChatCompletionChunk.model_validate(
                {
                    "id": self.id,
                    "object": "chat.completion.chunk",
                    "created": self.created,
                    "model": self.model,
                    "choices": choices,
                    "usage": usage.model_dump() if usage else None,
                }
            )
        )


def stream_chunks(event: Mapping[str, Any], call: Call, state: _StreamState) -> list[StreamChunk]:
    """OpenAI chunks for one parsed ConverseStream event (pure but for ``state``)."""
    if "messageStart" in event:
        return [state.chunk({"role": "assistant", "content": ""})]
    if "contentBlockStart" in event:
        start = event["contentBlockStart"]
        use = (start.get("start") or {}).get("toolUse")
        if use is None:
            return []
        index = int(start.get("contentBlockIndex", 0))
        if state.json_mode and use.get("name") == JSON_TOOL:
            state.blocks[index] = ("json", 0)
            return []
        number = state.tools
        state.tools += 1
        state.blocks[index] = ("tool", number)
        tool = {"index": number, "id": use.get("toolUseId"), "type": "function"}
        tool["function"] = {"name": use.get("name"), "arguments": ""}
        return [state.chunk({"tool_calls": [tool]})]
    if "contentBlockDelta" in event:
        body = event["contentBlockDelta"]
        delta = body.get("delta") or {}
        kind, number = state.blocks.get(int(body.get("contentBlockIndex", 0)), ("text", 0))
        if delta.get("text"):
            return [state.chunk({"content": delta["text"]})]
        partial = (delta.get("toolUse") or {}).get("input")
        if partial and kind == "json":
            return [state.chunk({"content": partial})]
        if partial and kind == "tool":
            return [state.chunk({"tool_calls": [{"index": number, "function": {"arguments": partial}}]})]
        return []  # reasoning and citation deltas have no OpenAI form
    if "messageStop" in event:
        state.stopped = True
        finish = _finish(call, event["messageStop"].get("stopReason"), state.tools)
        return [state.chunk({}, finish)]
    if "metadata" in event and state.with_usage:
        return [state.chunk({}, usage=converse_usage(event["metadata"].get("usage") or {}))]
    return []


# --------------------------------------------------------------------------- errors


def classify_bedrock_error(exc: Exception, label: str) -> AttemptFailed:
    """The class of a botocore failure (a ``ClientError``, or a transport error)."""
    from botocore.exceptions import (
        ClientError,
        ConnectTimeoutError,
        ReadTimeoutError,
    )

    if isinstance(exc, ClientError):
        error = exc.response.get("Error") or {}
        code = str(error.get("Code") or "")
        message = str(error.get("Message") or code)
        status = int((exc.response.get("ResponseMetadata") or {}).get("HTTPStatusCode") or 0) or None
        lowered = code.lower()
        body = json.dumps({"message": message, "type": code}).encode()
        if lowered in _RATE:
            return AttemptFailed(ErrorClass.RATE_LIMIT, f"{label}: {message}", status=status or 429)
        if lowered in _SERVER:
            return AttemptFailed(ErrorClass.SERVER, f"{label}: {message}", status=status or 500)
        if lowered == "modeltimeoutexception":
            return AttemptFailed(ErrorClass.TIMEOUT, f"{label}: {message}", status=status or 408)
        return classify_http_error(status or 400, body, {}, label)
    if isinstance(exc, (ConnectTimeoutError, ReadTimeoutError)):
        return AttemptFailed(ErrorClass.TIMEOUT, f"{label}: timed out")
    return AttemptFailed(ErrorClass.SERVER, f"{label}: {type(exc).__name__}")


@functools.cache
def _shared_client(region: str, endpoint: str | None) -> Any:
    import boto3  # deferred: ~180 ms, paid only by a gateway with a Bedrock target
    from botocore.config import Config

    # The engine retries and falls back; a long read timeout leaves the deadline to the engine.
    config = Config(retries={"max_attempts": 1, "mode": "standard"}, connect_timeout=5, read_timeout=900)
    return boto3.session.Session().client(
        "bedrock-runtime", region_name=region, endpoint_url=endpoint, config=config
    )


def default_client(config: ProviderConfig) -> Any:
    """One shared bedrock-runtime client per region and endpoint, built on first use."""
    return _shared_client(str(config.region), config.base_url)


_END = object()


class Bedrock:
    kind = "bedrock"
    default_base_url: ClassVar[str | None] = None
    embeddings: ClassVar[bool] = True

    def __init__(self, client_factory: ClientFactory = default_client) -> None:
        self._client_factory = client_factory

    @classmethod
    def check_config(cls, config: ProviderConfig) -> None:
        if config.region is None:
            raise ValueError("kind 'bedrock' needs a region")
        if config.api_key is not None:
            raise ValueError("kind 'bedrock' signs with the function's IAM role: remove api_key")

    def _client(self, call: Call | EmbedCall) -> Any:
        return self._client_factory(call.target.provider)

    async def complete(self, call: Call) -> tuple[ChatCompletion, bytes | None]:
        kwargs = to_converse(call)
        client = self._client(call)
        try:
            response = await asyncio.to_thread(client.converse, **kwargs)
        except Exception as exc:
            raise classify_bedrock_error(exc, call.target.provider_name) from None
        try:
            return from_converse(response, call, int(time.time())), None
        except (KeyError, TypeError, ValueError):
            raise AttemptFailed(
                ErrorClass.SERVER, f"{call.target.provider_name}: malformed upstream response"
            ) from None

    async def stream(self, call: Call) -> AsyncIterator[StreamChunk]:
        kwargs = to_converse(call)
        client = self._client(call)
        label = call.target.provider_name
        try:
            response = await asyncio.to_thread(client.converse_stream, **kwargs)
        except Exception as exc:
            raise classify_bedrock_error(exc, label) from None
        events = response["stream"]
        iterator = iter(events)
        state = _StreamState(call, _request_id(response))
        try:
            while True:
                try:
                    event = await asyncio.to_thread(next, iterator, _END)
                except Exception as exc:  # EventStreamError (an exception event) or a broken connection
                    raise classify_bedrock_error(exc, label) from None
                if not isinstance(event, Mapping):  # the _END sentinel
                    break
                for chunk in stream_chunks(event, call, state):
                    yield chunk
        finally:
            close = getattr(events, "close", None)
            if close is not None:
                close()
        if not state.stopped:
            raise AttemptFailed(ErrorClass.SERVER, f"{label}: upstream stream ended before it finished")

    async def embed(self, call: EmbedCall) -> tuple[EmbeddingResponse, bytes | None]:
        """Titan Text Embeddings (one input per call) or Cohere Embed (96 per call) via InvokeModel."""
        texts = call.request.texts()
        if texts is None:
            raise unsupported(call, "token-id input (send text)", "input")
        family = _embedding_family(call.target.model)
        if family is None:
            raise unsupported(call, "embeddings from models other than Titan or Cohere Embed", "model")
        client = self._client(call)
        bodies = _embedding_bodies(family, texts, call)
        try:
            results = await asyncio.gather(
                *(asyncio.to_thread(_invoke, client, call.target.model, b) for b in bodies)
            )
        except AttemptFailed:
            raise
        except Exception as exc:
            raise classify_bedrock_error(exc, call.target.provider_name) from None
        vectors: list[list[float]] = []
        tokens = 0
        for payload, counted in results:
            try:
                if family == "titan":
                    vectors.append([float(x) for x in payload["embedding"]])
                    tokens += int(payload.get("inputTextTokenCount") or counted)
                else:
                    found = payload["embeddings"]
                    vectors += found["float"] if isinstance(found, dict) else found
                    tokens += counted
            except (KeyError, TypeError, ValueError):
                raise AttemptFailed(
                    ErrorClass.SERVER, f"{call.target.provider_name}: malformed embeddings response"
                ) from None
        as_base64 = call.request.encoding_format == "base64"
        data = [
            {"object": "embedding", "index": i, "embedding": _b64(v) if as_base64 else v}
            for i, v in enumerate(vectors)
        ]
        response = {
            "object": "list",
            "data": data,
            "model": call.target.model,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }
        return EmbeddingResponse.model_validate(response), None


_COHERE_BATCH = 96  # Cohere Embed's limit on texts per request


def _embedding_family(model: str) -> str | None:
    if "titan-embed" in model:
        return "titan"
    if "cohere.embed" in model:
        return "cohere"
    return None


def _embedding_bodies(family: str, texts: list[str], call: EmbedCall) -> list[dict[str, Any]]:
    """InvokeModel bodies: Titan takes one text (v2 also a length and normalisation), Cohere a batch."""
    if family == "titan":
        extra: dict[str, Any] = {}
        if "titan-embed-text-v2" in call.target.model and call.target.dimensions:
            extra = {"dimensions": call.target.dimensions, "normalize": True}
        return [{"inputText": text, **extra} for text in texts]
    input_type = (call.request.model_extra or {}).get("input_type") or "search_document"
    return [
        {"texts": texts[i : i + _COHERE_BATCH], "input_type": input_type}
        for i in range(0, len(texts), _COHERE_BATCH)
    ]


def _invoke(client: Any, model: str, body: dict[str, Any]) -> tuple[dict[str, Any], int]:
    """One InvokeModel call: the parsed body and Bedrock's input token count header."""
    response = client.invoke_model(
        modelId=model,
        body=json.dumps(body).encode(),
        contentType="application/json",
        accept="application/json",
    )
    headers = (response.get("ResponseMetadata") or {}).get("HTTPHeaders") or {}
    payload = json.loads(response["body"].read())
    return payload, int(headers.get("x-amzn-bedrock-input-token-count") or 0)


def _b64(vector: list[float]) -> str:
    """OpenAI's ``encoding_format: base64``: little-endian float32, base64-encoded."""
    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
