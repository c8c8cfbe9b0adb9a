"""The Bedrock provider against golden Converse fixtures, with botocore validating every request.

Non-streaming calls go through a real ``bedrock-runtime`` client with botocore's ``Stubber``, which
checks the keyword arguments against the service model and asserts them equal to the fixture's.
Streams use a stand-in client (the Stubber cannot produce event streams); the integration tests run
the real client against an AWS event-stream server.
"""

from __future__ import annotations

import base64
import copy
import functools
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError, ReadTimeoutError
from botocore.stub import Stubber
from botocore.validate import validate_parameters
from switchboard.core.errors import AttemptFailed, ErrorClass
from switchboard.routing.document import ProviderConfig
from switchboard.upstream.providers.bedrock import Bedrock, classify_bedrock_error, to_converse

from tests.support import chat_call, fixture, fixtures, normalise, validate_openai

PROVIDER = {"kind": "bedrock", "region": "us-east-1"}


@functools.cache
def runtime() -> Any:
    return boto3.session.Session().client(
        "bedrock-runtime", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="y"
    )


def decoded(value: Any) -> Any:
    """Fixture JSON with ``{"$bytes_b64": ...}`` turned into the bytes boto3 takes."""
    if isinstance(value, dict):
        if set(value) == {"$bytes_b64"}:
            return base64.b64decode(value["$bytes_b64"])
        return {k: decoded(v) for k, v in value.items()}
    if isinstance(value, list):
        return [decoded(v) for v in value]
    return value


def check(operation: str, kwargs: dict[str, Any]) -> None:
    shape = runtime().meta.service_model.operation_model(operation).input_shape
    validate_parameters(kwargs, shape)  # raises ParamValidationError on any shape error


@pytest.mark.parametrize("name", fixtures("bedrock", "chat_"))
async def test_converse_matches_the_golden_pair(name: str) -> None:
    case = fixture("bedrock", name)
    client = runtime()
    expected = decoded(case["converse_request"])
    with Stubber(client) as stub:
        stub.add_response("converse", copy.deepcopy(case["converse_response"]), expected)
        call = chat_call(case["openai_request"], PROVIDER, case["target_model"], api_key=None)
        completion, raw = await Bedrock(lambda config: client).complete(call)
        stub.assert_no_pending_responses()
    assert raw is None
    assert normalise(completion) == case["openai_response"]
    validate_openai("CreateChatCompletionResponse", completion)


class FakeStream:
    def __init__(self, events: list[dict[str, Any]], fail: Exception | None = None) -> None:
        self.events = events
        self.fail = fail
        self.closed = False

    def __iter__(self) -> Iterator[dict[str, Any]]:
        yield from self.events
        if self.fail is not None:
            raise self.fail

    def close(self) -> None:
        self.closed = True


class FakeClient:
    def __init__(self, stream: FakeStream) -> None:
        self.stream = stream
        self.kwargs: dict[str, Any] = {}

    def converse_stream(self, **kwargs: Any) -> dict[str, Any]:
        check("ConverseStream", kwargs)
        self.kwargs = kwargs
        return {"ResponseMetadata": {"RequestId": "stream-req-1"}, "stream": self.stream}


@pytest.mark.parametrize("name", fixtures("bedrock", "stream_"))
async def test_converse_stream_matches_the_golden_chunks(name: str) -> None:
    case = fixture("bedrock", name)
    fake = FakeClient(FakeStream(case["converse_stream"]))
    call = chat_call(case["openai_request"], PROVIDER, case["target_model"], api_key=None)
    chunks = [c async for c in Bedrock(lambda config: fake).stream(call)]
    assert fake.kwargs == decoded(case["converse_request"])
    assert [normalise(c.chunk) for c in chunks] == case["openai_chunks"]
    for chunk in chunks:
        validate_openai("CreateChatCompletionStreamResponse", chunk.chunk)
    assert fake.stream.closed


async def test_an_exception_event_fails_the_stream_with_its_class() -> None:
    case = fixture("bedrock", "stream_tools")
    error = ClientError({"Error": {"Code": "throttlingException", "Message": "slow down"}}, "ConverseStream")
    fake = FakeClient(FakeStream(case["converse_stream"][:3], fail=error))
    call = chat_call(case["openai_request"], PROVIDER, case["target_model"], api_key=None)
    seen = []
    with pytest.raises(AttemptFailed) as caught:
        async for chunk in Bedrock(lambda config: fake).stream(call):
            seen.append(chunk)
    assert len(seen) == 3 and caught.value.error_class is ErrorClass.RATE_LIMIT
    assert fake.stream.closed


async def test_a_stream_cut_before_message_stop_is_a_server_failure() -> None:
    case = fixture("bedrock", "stream_tools")
    fake = FakeClient(FakeStream(case["converse_stream"][:4]))
    call = chat_call(case["openai_request"], PROVIDER, case["target_model"], api_key=None)
    with pytest.raises(AttemptFailed) as caught:
        _ = [c async for c in Bedrock(lambda config: fake).stream(call)]
    assert caught.value.error_class is ErrorClass.SERVER


@pytest.mark.parametrize(
    "case", fixture("bedrock", "errors")["cases"], ids=lambda c: f"{c['code']}-{c['status']}"
)
def test_errors_are_classed(case: dict[str, Any]) -> None:
    response = {
        "Error": {"Code": case["code"], "Message": case["message"]},
        "ResponseMetadata": {"HTTPStatusCode": case["status"]},
    }
    failure = classify_bedrock_error(ClientError(response, "Converse"), "bedrock")  # type: ignore[arg-type]
    assert failure.error_class == case["error_class"]


def test_transport_timeouts_are_timeouts() -> None:
    failure = classify_bedrock_error(ReadTimeoutError(endpoint_url="https://bedrock"), "bedrock")
    assert failure.error_class is ErrorClass.TIMEOUT


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"n": 3}, "n"),
        ({"top_logprobs": 2}, "logprobs"),
        (
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [
                            {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}
                        ],
                    }
                ]
            },
            "messages",
        ),
        (
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [
                            {"type": "image_url", "image_url": {"url": "data:image/tiff;base64,AAAA"}}
                        ],
                    }
                ]
            },
            "messages",
        ),
        (
            {
                "tool_choice": "none",
                "messages": [
                    {
                        "role": "assistant",
                        "tool_calls": [
                            {"id": "t1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
                        ],
                    },
                    {"role": "tool", "tool_call_id": "t1", "content": "ok"},
                ],
            },
            "tool_choice",
        ),
    ],
)
def test_what_converse_cannot_do_is_a_clear_400(extra: dict[str, Any], param: str) -> None:
    request = {
        "model": "x",
        "messages": [{"role": "user", "content": "hi"}],
        "tools": [{"type": "function", "function": {"name": "f"}}],
        **extra,
    }
    with pytest.raises(AttemptFailed) as caught:
        to_converse(chat_call(request, PROVIDER, "amazon.nova-lite-v1:0", api_key=None))
    assert caught.value.error_class is ErrorClass.CLIENT and caught.value.status == 400
    assert caught.value.upstream_param == param


def test_tool_choice_none_without_tool_history_drops_the_tools() -> None:
    request = {
        "model": "x",
        "messages": [{"role": "user", "content": "hi"}],
        "tool_choice": "none",
        "tools": [{"type": "function", "function": {"name": "f"}}],
        "temperature": 1.5,
    }
    kwargs = to_converse(chat_call(request, PROVIDER, "m", api_key=None))
    assert "toolConfig" not in kwargs
    assert kwargs["inferenceConfig"] == {"temperature": 1.0}
    check("Converse", kwargs)


def test_config_needs_a_region_and_no_key() -> None:
    assert ProviderConfig.model_validate(PROVIDER).region == "us-east-1"
    with pytest.raises(ValueError, match="needs a region"):
        ProviderConfig.model_validate({"kind": "bedrock"})
    with pytest.raises(ValueError, match="IAM role"):
        ProviderConfig.model_validate({**PROVIDER, "api_key": {"ssm": "/x"}})
    with pytest.raises(ValueError):
        ProviderConfig.model_validate({"kind": "bedrock", "region": "not a region"})


def test_clients_are_created_lazily_once_per_region_and_endpoint() -> None:
    made: list[ProviderConfig] = []

    def factory(config: ProviderConfig) -> Any:
        made.append(config)
        return object()

    provider = Bedrock(factory)
    assert made == []  # nothing at construction: a gateway without Bedrock traffic pays nothing
    from switchboard.upstream.providers import bedrock

    first = bedrock.default_client(ProviderConfig.model_validate({**PROVIDER, "region": "eu-west-3"}))
    again = bedrock.default_client(ProviderConfig.model_validate({**PROVIDER, "region": "eu-west-3"}))
    assert first is again
    assert provider is not None
