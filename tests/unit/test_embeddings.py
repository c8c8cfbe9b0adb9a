"""Embeddings: the routing schema's one-dimension rule and Bedrock's Titan and Cohere mappings."""

from __future__ import annotations

import base64
import io
import json
import struct
from typing import Any

import pytest
from botocore.validate import validate_parameters
from switchboard.core.errors import AttemptFailed, ErrorClass
from switchboard.core.schemas import EmbeddingResponse
from switchboard.routing.document import load_document
from switchboard.upstream.providers.bedrock import Bedrock

from tests.support import embed_call, fixture, validate_openai
from tests.unit.test_bedrock import runtime

BEDROCK = {"kind": "bedrock", "region": "us-east-1"}


def doc(models: dict[str, Any]) -> str:
    return json.dumps(
        {
            "version": 1,
            "providers": {
                "oa": {"kind": "openai", "base_url": "https://api.openai.com/v1", "api_key": {"ssm": "/k"}},
                "br": BEDROCK,
                "an": {"kind": "anthropic", "api_key": {"ssm": "/k"}},
            },
            "models": models,
        }
    )


def test_an_embeddings_route_shares_one_dimension() -> None:
    good = {
        "e": {
            "mode": "embeddings",
            "targets": [
                {"provider": "oa", "model": "text-embedding-3-small", "dimensions": 1024},
                {"provider": "br", "model": "amazon.titan-embed-text-v2:0", "dimensions": 1024},
            ],
        }
    }
    document, _ = load_document(doc(good))
    assert document.models["e"].dimensions == 1024


@pytest.mark.parametrize(
    ("models", "message"),
    [
        (
            {
                "e": {
                    "mode": "embeddings",
                    "targets": [
                        {"provider": "oa", "model": "a", "dimensions": 1536},
                        {"provider": "br", "model": "b", "dimensions": 1024},
                    ],
                }
            },
            "must share one 'dimensions'",
        ),
        ({"e": {"mode": "embeddings", "targets": [{"provider": "oa", "model": "a"}]}}, "needs 'dimensions'"),
        (
            {"c": {"targets": [{"provider": "oa", "model": "a", "dimensions": 8}]}},
            "belongs on the targets of an embeddings",
        ),
        (
            {"e": {"mode": "embeddings", "targets": [{"provider": "an", "model": "a", "dimensions": 8}]}},
            "offers no embeddings",
        ),
    ],
)
def test_the_schema_refuses_mixed_or_missing_dimensions(models: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        load_document(doc(models))


class FakeRuntime:
    """InvokeModel answering each fixture body with its fixture reply (calls run concurrently)."""

    def __init__(self, case: dict[str, Any] | None = None) -> None:
        self.case = case or {"invoke_bodies": [], "invoke_responses": []}
        self.bodies: list[dict[str, Any]] = []

    def invoke_model(self, **kwargs: Any) -> dict[str, Any]:
        shape = runtime().meta.service_model.operation_model("InvokeModel").input_shape
        validate_parameters(kwargs, shape)
        body = json.loads(kwargs["body"])
        self.bodies.append(body)
        reply = self.case["invoke_responses"][self.case["invoke_bodies"].index(body)]
        return {
            "body": io.BytesIO(json.dumps(reply["body"]).encode()),
            "ResponseMetadata": {"HTTPHeaders": reply["headers"]},
        }


@pytest.mark.parametrize("name", ["embed_titan", "embed_cohere"])
async def test_bedrock_embeddings_match_the_golden_pair(name: str) -> None:
    case = fixture("bedrock", name)
    fake = FakeRuntime(case)
    call = embed_call(
        case["openai_request"], BEDROCK, case["target_model"], api_key=None, dimensions=case["dimensions"]
    )
    response, raw = await Bedrock(lambda config: fake).embed(call)
    assert raw is None
    assert sorted(fake.bodies, key=json.dumps) == sorted(case["invoke_bodies"], key=json.dumps)
    assert json.loads(response.model_dump_json()) == case["openai_response"]
    validate_openai("CreateEmbeddingResponse", json.loads(response.model_dump_json()))


async def test_base64_encoding_is_little_endian_float32() -> None:
    case = fixture("bedrock", "embed_titan")
    fake = FakeRuntime(case)
    request = {**case["openai_request"], "encoding_format": "base64"}
    call = embed_call(request, BEDROCK, case["target_model"], api_key=None, dimensions=4)
    response, _ = await Bedrock(lambda config: fake).embed(call)
    first = response.data[0].embedding
    assert isinstance(first, str)
    assert struct.unpack("<4f", base64.b64decode(first)) == pytest.approx((0.1, -0.2, 0.3, 0.4))
    assert response.vector_length() == 4


async def test_token_ids_and_other_models_are_a_400() -> None:
    fake = FakeRuntime()
    with pytest.raises(AttemptFailed) as caught:
        await Bedrock(lambda c: fake).embed(
            embed_call(
                {"model": "e", "input": [1, 2, 3]}, BEDROCK, "amazon.titan-embed-text-v2:0", api_key=None
            )
        )
    assert caught.value.error_class is ErrorClass.CLIENT and caught.value.upstream_param == "input"
    with pytest.raises(AttemptFailed):
        await Bedrock(lambda c: fake).embed(
            embed_call({"model": "e", "input": "x"}, BEDROCK, "meta.llama3", api_key=None)
        )


def test_vector_length_of_mixed_answers_is_unknown() -> None:
    response = EmbeddingResponse.model_validate(
        {"data": [{"index": 0, "embedding": [1.0, 2.0]}, {"index": 1, "embedding": [1.0]}], "model": "m"}
    )
    assert response.vector_length() is None


@pytest.mark.parametrize("name", ["routing.example.json", "routing.dev.json"])
def test_the_shipped_routing_documents_still_load(name: str) -> None:
    """The schema grew (kinds, modes, dimensions, modalities); the documents in infra/ stay valid."""
    from pathlib import Path

    text = (Path(__file__).resolve().parents[2] / "infra" / name).read_text()
    load_document(text.replace("${MOCK_BASE_URL}", "http://127.0.0.1:9100/v1"))
