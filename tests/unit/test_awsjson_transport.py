"""``switchboard.infra.awsjson`` over real sockets: retries, keep-alive, timeouts, error shapes.

The server is a scripted HTTP/1.1 stub on a loopback port (``tests.awsjson_stub``): each request
takes the next reply of the script, so a test says exactly what the service answers, attempt by attempt.
"""

from __future__ import annotations

import http.client
import socket
import ssl
import threading
import time
from pathlib import Path

import pytest
from switchboard.infra import awsjson

from tests.awsjson_stub import KEY, SECRET, TOKEN, Reply, Stub, error, make_client
from tests.awsjson_stub import stub as stub  # the fixture
from tests.tls import self_signed


def test_a_call_is_a_signed_post_of_the_kwargs(stub: Stub) -> None:
    stub.script = [Reply(body={"Item": {"pk": {"S": "a"}}})]
    answer = make_client(stub.url, []).get_item(**KEY, ConsistentRead=True)
    assert answer["Item"] == {"pk": {"S": "a"}}
    assert answer["ResponseMetadata"]["HTTPStatusCode"] == 200
    assert answer["ResponseMetadata"]["RequestId"] == "req-1"
    [seen] = stub.seen
    assert seen.body == {**KEY, "ConsistentRead": True}
    assert seen.headers["X-Amz-Target"] == "DynamoDB_20120810.GetItem"
    assert seen.headers["Content-Type"] == "application/x-amz-json-1.0"
    assert seen.headers["Host"] == stub.url.removeprefix("http://")
    assert seen.headers["X-Amz-Security-Token"] == TOKEN
    assert seen.headers["Authorization"].startswith("AWS4-HMAC-SHA256 Credential=AKIDSTUB/")
    assert (
        "SignedHeaders=content-type;host;x-amz-date;x-amz-security-token;x-amz-target"
        in (seen.headers["Authorization"])
    )


def test_ssm_and_secrets_manager_speak_json_1_1(stub: Stub) -> None:
    stub.script = [Reply(body={"Parameter": {"Value": "v"}}), Reply(body={"SecretString": "s"})]
    assert make_client(stub.url, [], awsjson.SSM).get_parameter(Name="/p")["Parameter"]["Value"] == "v"
    sm = make_client(stub.url, [], awsjson.SECRETS_MANAGER)
    assert sm.get_secret_value(SecretId="x")["SecretString"] == "s"
    assert [s.headers["X-Amz-Target"] for s in stub.seen] == [
        "AmazonSSM.GetParameter",
        "secretsmanager.GetSecretValue",
    ]
    assert {s.headers["Content-Type"] for s in stub.seen} == {"application/x-amz-json-1.1"}


def test_an_unknown_method_is_an_attribute_error(stub: Stub) -> None:
    client = make_client(stub.url, [])
    with pytest.raises(AttributeError):
        client.scan  # noqa: B018 - not an operation the gateway makes
    assert not stub.seen


def test_a_500_then_a_200_succeeds_on_the_second_attempt(stub: Stub) -> None:
    sleeps: list[float] = []
    stub.script = [Reply(500, error("InternalServerError")), Reply(body={})]
    answer = make_client(stub.url, sleeps).put_item(TableName="t", Item={})
    assert len(stub.seen) == 2
    assert answer["ResponseMetadata"]["RetryAttempts"] == 1
    assert len(sleeps) == 1 and 0 <= sleeps[0] <= 0.025  # DynamoDB's transient base


def test_a_validation_error_is_not_retried(stub: Stub) -> None:
    sleeps: list[float] = []
    stub.script = [Reply(400, error("ValidationException", "One or more parameter values were invalid"))]
    with pytest.raises(awsjson.ClientError) as caught:
        make_client(stub.url, sleeps).get_item(**KEY)
    assert type(caught.value) is awsjson.ClientError
    assert caught.value.response["Error"] == {
        "Code": "ValidationException",
        "Message": "One or more parameter values were invalid",
    }
    assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert str(caught.value) == (
        "An error occurred (ValidationException) when calling the GetItem operation: "
        "One or more parameter values were invalid"
    )
    assert len(stub.seen) == 1 and sleeps == []


@pytest.mark.parametrize(
    "code", ["ThrottlingException", "ProvisionedThroughputExceededException", "RequestLimitExceeded"]
)
def test_a_throttling_error_is_retried(stub: Stub, code: str) -> None:
    sleeps: list[float] = []
    stub.script = [Reply(400, error(code)), Reply(body={"Items": []})]
    assert make_client(stub.url, sleeps).query(TableName="t")["Items"] == []
    assert len(stub.seen) == 2 and len(sleeps) == 1 and 0 <= sleeps[0] <= 1.0


def test_retries_stop_after_three_attempts_with_the_last_error(stub: Stub) -> None:
    sleeps: list[float] = []
    stub.script = [Reply(400, error("ProvisionedThroughputExceededException"))] * 3
    client = make_client(stub.url, sleeps, jitter=lambda: 1.0)  # the top of each jitter range
    with pytest.raises(client.exceptions.ProvisionedThroughputExceededException) as caught:
        client.update_item(**KEY, UpdateExpression="ADD n :one")
    assert caught.value.response["ResponseMetadata"]["RetryAttempts"] == 2
    assert len(stub.seen) == 3 and sleeps == [1.0, 2.0]  # throttling: base 1 s, doubled


def test_a_transaction_keeps_its_request_token_across_retries(stub: Stub) -> None:
    stub.script = [Reply(503, b"<html>busy</html>"), Reply(body={})]
    make_client(stub.url, []).transact_write_items(TransactItems=[])
    tokens = [s.body.get("ClientRequestToken") for s in stub.seen]
    assert len(tokens) == 2 and tokens[0] and tokens[0] == tokens[1]


def test_a_transaction_cancelled_carries_its_reasons(stub: Stub) -> None:
    reasons = [{"Code": "None"}, {"Code": "ConditionalCheckFailed", "Item": {"pk": {"S": "a"}}}]
    stub.script = [
        Reply(
            400,
            error("TransactionCanceledException", "Transaction cancelled", CancellationReasons=reasons),
        )
    ]
    client = make_client(stub.url, [])
    with pytest.raises(client.exceptions.TransactionCanceledException) as caught:
        client.transact_write_items(TransactItems=[], ClientRequestToken="mine")
    assert caught.value.response["CancellationReasons"] == reasons
    assert caught.value.response["Error"]["Code"] == "TransactionCanceledException"
    assert isinstance(caught.value, awsjson.ClientError)
    assert stub.seen[0].body["ClientRequestToken"] == "mine"


def test_a_body_that_is_not_json_gives_the_status_as_the_code(stub: Stub) -> None:
    stub.script = [Reply(413, b"<html>too large</html>")]
    with pytest.raises(awsjson.ClientError) as caught:
        make_client(stub.url, []).put_item(TableName="t", Item={})
    assert caught.value.response["Error"] == {"Code": "413", "Message": http.client.responses[413]}


@pytest.mark.parametrize("body", [b"<html>portal</html>", b"[1, 2]", b'{"cut'])
def test_a_success_that_is_not_a_json_object_is_a_transport_error(stub: Stub, body: bytes) -> None:
    stub.script = [Reply(200, body)]
    with pytest.raises(awsjson.TransportError, match="not a JSON object"):
        make_client(stub.url, [], awsjson.SSM).get_parameter(Name="/p")
    assert len(stub.seen) == 1  # not retried (botocore neither: it would read it as an empty answer)


def test_a_keep_alive_connection_is_reused(stub: Stub) -> None:
    client = make_client(stub.url, [])
    for _ in range(3):
        client.get_item(**KEY)
    assert len(stub.seen) == 3 and stub.connections() == 1


def test_a_keep_alive_connection_the_server_closed_is_reopened(stub: Stub) -> None:
    sleeps: list[float] = []
    stub.script = [Reply(close=True), Reply(body={"Item": {}})]
    client = make_client(stub.url, sleeps)
    client.get_item(**KEY)
    time.sleep(0.05)  # the server's close reaches the client's socket
    assert client._local.conn.reusable() is False  # seen before the next request is sent
    answer = client.get_item(**KEY)
    assert client._local.conn.reusable() is True
    assert answer["ResponseMetadata"]["RetryAttempts"] == 0  # not counted as an attempt
    assert len(stub.seen) == 2 and stub.connections() == 2 and sleeps == []


def test_a_request_written_on_a_reused_connection_is_sent_again_only_as_a_counted_attempt(stub: Stub) -> None:
    # The server read the request, then closed without answering: it may have applied it. So the
    # client does not quietly send it again; a retry is an attempt, under the retry rules.
    sleeps: list[float] = []
    stub.script = [Reply(), Reply(drop=True), Reply(body={"Item": {}})]
    client = make_client(stub.url, sleeps)
    client.get_item(**KEY)
    answer = client.get_item(**KEY)
    assert answer["ResponseMetadata"]["RetryAttempts"] == 1
    assert len(stub.seen) == 3 and stub.connections() == 2 and len(sleeps) == 1

    stub.script = [Reply(), Reply(drop=True)]
    once = make_client(stub.url, sleeps, max_attempts=1)
    once.update_item(**KEY, UpdateExpression="ADD n :one")
    with pytest.raises(awsjson.TransportError):
        once.update_item(**KEY, UpdateExpression="ADD n :one")
    assert len(stub.seen) == 5  # the second update reached the server once, not twice


def test_a_connection_dropped_without_an_answer_is_a_retried_attempt(stub: Stub) -> None:
    sleeps: list[float] = []
    stub.script = [Reply(drop=True), Reply(body={})]
    answer = make_client(stub.url, sleeps).delete_item(**KEY)
    assert answer["ResponseMetadata"]["RetryAttempts"] == 1
    assert len(stub.seen) == 2 and len(sleeps) == 1


def test_a_read_timeout_is_retried_then_reported(stub: Stub) -> None:
    sleeps: list[float] = []
    stub.script = [Reply(delay_s=0.5)] * 3
    client = make_client(stub.url, sleeps, read_timeout_s=0.1)
    with pytest.raises(awsjson.TransportError) as caught:
        client.get_item(**KEY)
    assert "GetItem" in str(caught.value) and "TimeoutError" in str(caught.value)
    assert len(sleeps) == 2


def test_a_refused_connection_is_retried_then_reported() -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    sleeps: list[float] = []
    client = make_client(f"http://127.0.0.1:{port}", sleeps)
    with pytest.raises(awsjson.TransportError) as caught:
        client.get_item(**KEY)
    assert "after 3 attempts: ConnectionRefusedError" in str(caught.value)
    assert len(sleeps) == 2
    assert SECRET not in str(caught.value) and TOKEN not in str(caught.value)


def test_a_dynamodb_answer_with_a_bad_checksum_is_retried(stub: Stub) -> None:
    stub.script = [Reply(body={"Item": {}}, crc=12345), Reply(body={"Item": {}})]
    answer = make_client(stub.url, []).get_item(**KEY)
    assert answer["ResponseMetadata"]["RetryAttempts"] == 1


def test_each_thread_has_its_own_connection(stub: Stub) -> None:
    client = make_client(stub.url, [])
    client.get_item(**KEY)
    worker = threading.Thread(target=lambda: [client.get_item(**KEY) for _ in range(2)])
    worker.start()
    worker.join()
    client.get_item(**KEY)
    assert len(stub.seen) == 4 and stub.connections() == 2


def test_listeners_see_every_call_once(stub: Stub) -> None:
    client = make_client(stub.url, [])
    seen: list[str] = []
    client.on_call(seen.append)
    client.on_call(seen.append)  # idempotent, as botocore's unique_id
    client.get_item(**KEY)
    client.transact_write_items(TransactItems=[])
    assert seen == ["GetItem", "TransactWriteItems"]


def test_errors_never_carry_credentials(stub: Stub) -> None:
    stub.script = [Reply(403, {"__type": "UnrecognizedClientException", "message": "bad token"})]
    with pytest.raises(awsjson.ClientError) as caught:
        make_client(stub.url, []).get_item(**KEY)
    text = str(caught.value) + repr(caught.value.response)
    assert SECRET not in text and TOKEN not in text
    assert caught.value.response["Error"]["Code"] == "UnrecognizedClientException"


def test_endpoints_follow_botocores_environment_variables() -> None:
    ddb, sm = awsjson.DYNAMODB, awsjson.SECRETS_MANAGER
    assert awsjson.endpoint_url(ddb, "eu-west-1", {}) == "https://dynamodb.eu-west-1.amazonaws.com"
    assert awsjson.endpoint_url(ddb, "cn-north-1", {}) == "https://dynamodb.cn-north-1.amazonaws.com.cn"
    env = {"AWS_ENDPOINT_URL": "http://moto:5000", "AWS_ENDPOINT_URL_SECRETS_MANAGER": "http://sm:1"}
    assert awsjson.endpoint_url(ddb, "us-east-1", env) == "http://moto:5000"
    assert awsjson.endpoint_url(sm, "us-east-1", env) == "http://sm:1"
    ignored = {**env, "AWS_IGNORE_CONFIGURED_ENDPOINT_URLS": "true"}
    assert awsjson.endpoint_url(sm, "us-east-1", ignored) == "https://secretsmanager.us-east-1.amazonaws.com"


def test_from_env_needs_environment_credentials_and_a_plain_endpoint() -> None:
    creds = {"AWS_ACCESS_KEY_ID": "a", "AWS_SECRET_ACCESS_KEY": "s"}
    assert awsjson.from_env("dynamodb", "us-east-1", creds) is not None
    assert awsjson.from_env("dynamodb", "us-east-1", {"AWS_PROFILE": "dev"}) is None
    assert awsjson.from_env("dynamodb", "us-east-1", {**creds, "AWS_USE_FIPS_ENDPOINT": "true"}) is None
    assert awsjson.from_env("dynamodb", "us-iso-east-1", creds) is None
    assert awsjson.from_env("bedrock-runtime", "us-east-1", creds) is None


def test_https_verifies_the_certificate_and_keeps_the_connection(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cert, key = self_signed(tmp_path)
    server_side = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_side.load_cert_chain(cert, key)
    tls = Stub(tls=server_side)
    try:
        sleeps: list[float] = []
        with pytest.raises(awsjson.TransportError) as caught:  # the system trust store: refused
            make_client(tls.url, sleeps).get_item(**KEY)
        assert isinstance(caught.value.__cause__, ssl.SSLCertVerificationError)
        assert tls.seen == []

        trusting = ssl.create_default_context(cafile=str(cert))
        monkeypatch.setattr(awsjson, "_ssl_context", lambda: trusting)
        client = make_client(tls.url, sleeps)
        for _ in range(2):
            assert client.get_item(**KEY)["ResponseMetadata"]["HTTPStatusCode"] == 200
        assert tls.connections() == 1
        assert tls.seen[0].headers["Host"] == tls.url.removeprefix("https://")
        client.close()
    finally:
        tls.stop()
