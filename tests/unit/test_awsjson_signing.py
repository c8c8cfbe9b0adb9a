"""SigV4 of ``switchboard.infra.awsjson``: the same headers as botocore's signer, and AWS's
published vectors."""

from __future__ import annotations

import datetime
import json

import botocore.auth
import pytest
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials as BotoCredentials
from switchboard.infra import awsjson
from switchboard.infra.awsjson import Credentials, Signer

# 2026-11-25T23:59:58Z, two seconds before a new signing day.
NOW = datetime.datetime(2026, 11, 25, 23, 59, 58, tzinfo=datetime.UTC)
ACCESS = "AKIDEXAMPLE"
SECRET = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
TOKEN = "IQoJb3JpZ2luX2VjEXAMPLE//////////wEaCXVzLWVhc3QtMSJHMEUCIQ=="

CASES = [
    (
        awsjson.DYNAMODB,
        "eu-west-1",
        "https://dynamodb.eu-west-1.amazonaws.com",
        "DynamoDB_20120810.GetItem",
        {"TableName": "switchboard", "Key": {"pk": {"S": "key#abc"}, "sk": {"S": "key"}}},
    ),
    (
        awsjson.SSM,
        "us-east-1",
        "https://ssm.us-east-1.amazonaws.com",
        "AmazonSSM.GetParameter",
        {"Name": "/switchboard/routing", "WithDecryption": True},
    ),
    (
        awsjson.SECRETS_MANAGER,
        "cn-north-1",
        "https://secretsmanager.cn-north-1.amazonaws.com.cn",
        "secretsmanager.GetSecretValue",
        {"SecretId": "switchboard/anthropic"},
    ),
    (  # moto's kind of endpoint: a port in the host, plain HTTP
        awsjson.DYNAMODB,
        "us-east-1",
        "http://127.0.0.1:5055",
        "DynamoDB_20120810.TransactWriteItems",
        {"TransactItems": [], "ClientRequestToken": "t-1"},
    ),
]


def botocore_headers(
    url: str, service: str, region: str, headers: dict[str, str], body: bytes, token: str | None
) -> dict[str, str]:
    request = AWSRequest(method="POST", url=url, headers=dict(headers), data=body)
    botocore.auth.SigV4Auth(BotoCredentials(ACCESS, SECRET, token), service, region).add_auth(request)
    return dict(request.headers.items())


@pytest.mark.parametrize("token", [None, TOKEN], ids=["no-token", "session-token"])
@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c[0].name}-{c[1]}" if isinstance(c, tuple) else "")
def test_signature_equals_botocores(
    case: tuple[awsjson.Service, str, str, str, dict[str, object]],
    token: str | None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    service, region, endpoint, target, params = case
    assert awsjson.endpoint_url(service, region, {}) == endpoint or endpoint.startswith("http://")
    monkeypatch.setattr(botocore.auth, "get_current_datetime", lambda: NOW.replace(tzinfo=None))
    client = awsjson.Client(service, region, Credentials(ACCESS, SECRET, token), endpoint)
    body = json.dumps(params).encode()
    # What the client sends besides the signature: the Host it computes, its content type, the target.
    host = endpoint.split("://", 1)[1]
    headers = {
        "Host": host,
        "Content-Type": f"application/x-amz-json-{service.json_version}",
        "X-Amz-Target": target,
    }
    ours = client._signer.sign("POST", "/", headers, body, NOW.timestamp())
    theirs = botocore_headers(endpoint + "/", service.name, region, headers, body, token)
    assert ours["X-Amz-Date"] == theirs["X-Amz-Date"] == "20261125T235958Z"
    assert ours["Authorization"] == theirs["Authorization"]
    assert ours.get("X-Amz-Security-Token") == theirs.get("X-Amz-Security-Token") == token
    assert client._host == host


def test_signing_key_is_derived_once_per_day() -> None:
    signer = Signer(Credentials(ACCESS, SECRET), "us-east-1", "dynamodb")
    headers = {"Host": "dynamodb.us-east-1.amazonaws.com"}
    signer.sign("POST", "/", headers, b"{}", NOW.timestamp())
    first = signer._key
    signer.sign("POST", "/", headers, b"{}", NOW.timestamp() + 1)
    assert signer._key is first  # same day: the cached key
    signer.sign("POST", "/", headers, b"{}", NOW.timestamp() + 2)  # 2026-11-26
    assert signer._key is not None and signer._key[0] == "20261126" and signer._key is not first


# AWS's SigV4 test suite (the "aws-sig-v4-test-suite" published with the Signature Version 4
# documentation): credentials AKIDEXAMPLE, 2015-08-30T12:36:00Z, us-east-1, service "service",
# headers Host and X-Amz-Date only.
SUITE_TIME = datetime.datetime(2015, 8, 30, 12, 36, 0, tzinfo=datetime.UTC).timestamp()
SUITE_SCOPE = "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, "


@pytest.mark.parametrize(
    ("name", "method", "query", "signature"),
    [
        ("get-vanilla", "GET", "", "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"),
        ("post-vanilla", "POST", "", "5da7c1a2acd57cee7505fc6676e4e544621c30862966e37dddb68e92efbe5d6b"),
        (
            "get-vanilla-query-order-key-case",
            "GET",
            "Param1=value1&Param2=value2",
            "b97d918cfa904a5beff61c982a1b6f458b799221646efd99d3219ec94cdf2500",
        ),
    ],
)
def test_aws_published_vectors(name: str, method: str, query: str, signature: str) -> None:
    signer = Signer(Credentials(ACCESS, SECRET), "us-east-1", "service")
    added = signer.sign(method, "/", {"Host": "example.amazonaws.com"}, b"", SUITE_TIME, query=query)
    assert added["X-Amz-Date"] == "20150830T123600Z"
    assert added["Authorization"] == (
        SUITE_SCOPE + f"SignedHeaders=host;x-amz-date, Signature={signature}"
    ), name


def test_credentials_never_show_in_a_repr() -> None:
    creds = Credentials(ACCESS, SECRET, TOKEN)
    client = awsjson.Client(awsjson.SSM, "us-east-1", creds, "https://ssm.us-east-1.amazonaws.com")
    for text in (repr(creds), repr(client), repr(client._signer.__dict__)):
        assert SECRET not in text and TOKEN not in text
