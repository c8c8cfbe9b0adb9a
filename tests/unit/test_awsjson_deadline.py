"""``switchboard.infra.awsjson`` over real sockets: time bounds, the retry quota, ``x-amz-retry-after``.

A call on the serving path must end by its deadline whatever the service does, and an outage must
not be multiplied by retries. The service is the scripted stub of ``tests.awsjson_stub``.
"""

from __future__ import annotations

import asyncio
import time

import pytest
from switchboard.infra import awsjson

from tests.awsjson_stub import KEY, Reply, Stub, error, make_client
from tests.awsjson_stub import stub as stub  # the fixture


def test_a_deadline_ends_a_call_to_a_server_that_does_not_answer(stub: Stub) -> None:
    stub.script = [Reply(delay_s=1.0)] * 3
    client = make_client(stub.url, [], read_timeout_s=5.0)  # the read timeout alone: 3 x 5 s
    with awsjson.deadline(time.monotonic() + 0.2), pytest.raises(awsjson.DeadlineExceeded) as caught:
        client.get_item(**KEY)
    assert isinstance(caught.value, awsjson.TransportError)  # callers that catch transport errors
    assert isinstance(caught.value.__cause__, TimeoutError)
    assert "GetItem" in str(caught.value)
    assert len(stub.seen) == 1  # the socket wait was cut to the deadline; no retry after it


def test_the_deadline_follows_the_call_into_a_thread(stub: Stub) -> None:
    stub.script = [Reply(delay_s=1.0)] * 3
    client = make_client(stub.url, [], read_timeout_s=5.0)

    async def serve() -> None:
        with awsjson.deadline(time.monotonic() + 0.2):
            await asyncio.to_thread(client.get_item, **KEY)

    with pytest.raises(awsjson.DeadlineExceeded):
        asyncio.run(serve())
    assert awsjson.time_left() is None  # nothing leaks out of the block


def test_background_work_spawned_under_a_deadline_can_lift_it(stub: Stub) -> None:
    stub.script = [Reply(delay_s=0.3, body={"Item": {}})]
    client = make_client(stub.url, [], read_timeout_s=5.0)

    async def request() -> asyncio.Task[dict[str, object]]:
        with awsjson.deadline(time.monotonic() + 0.05):  # the request's, long gone when it runs

            async def refresh() -> dict[str, object]:
                with awsjson.without_deadline():
                    return await asyncio.to_thread(client.get_item, **KEY)

            return asyncio.create_task(refresh())

    async def main() -> dict[str, object]:
        return await (await request())

    assert asyncio.run(main())["Item"] == {}


def test_a_backoff_that_would_pass_the_deadline_is_not_slept(stub: Stub) -> None:
    sleeps: list[float] = []
    stub.script = [Reply(400, error("ThrottlingException"))]
    client = make_client(stub.url, sleeps, jitter=lambda: 1.0)  # a 1 s backoff
    with awsjson.deadline(time.monotonic() + 0.5), pytest.raises(awsjson.DeadlineExceeded) as caught:
        client.query(TableName="t")
    assert sleeps == [] and len(stub.seen) == 1
    assert isinstance(caught.value.__cause__, awsjson.ClientError)
    assert caught.value.__cause__.response["Error"]["Code"] == "ThrottlingException"


def test_a_call_past_its_deadline_sends_nothing(stub: Stub) -> None:
    with awsjson.deadline(time.monotonic() - 1), pytest.raises(awsjson.DeadlineExceeded):
        make_client(stub.url, []).get_item(**KEY)
    assert stub.seen == []


def test_a_call_within_its_deadline_is_untouched(stub: Stub) -> None:
    sleeps: list[float] = []
    stub.script = [Reply(500, error("InternalServerError")), Reply(body={"Item": {}})]
    with awsjson.deadline(time.monotonic() + 30):
        answer = make_client(stub.url, sleeps).get_item(**KEY)
    assert answer["ResponseMetadata"]["RetryAttempts"] == 1 and len(sleeps) == 1


def test_deadlines_nest_to_the_earliest_and_cut_the_socket_timeouts() -> None:
    client = awsjson.Client(awsjson.SSM, "us-east-1", awsjson.Credentials("a", "s"), "http://127.0.0.1:9")
    assert awsjson.time_left() is None
    assert client.socket_timeouts() == (awsjson.DEFAULT_CONNECT_TIMEOUT_S, awsjson.DEFAULT_READ_TIMEOUT_S)
    now = time.monotonic()
    with awsjson.deadline(now + 0.5):
        with awsjson.deadline(now + 60), awsjson.deadline(None):
            left = awsjson.time_left()
            assert left is not None and left <= 0.5
            connect, read = client.socket_timeouts()
            assert connect <= 0.5 and read <= 0.5
        with awsjson.deadline(now + 0.1):
            left = awsjson.time_left()
            assert left is not None and left <= 0.1
    assert awsjson.time_left() is None


def test_x_amz_retry_after_sets_the_backoff(stub: Stub) -> None:
    sleeps: list[float] = []
    stub.script = [
        Reply(400, error("ThrottlingException"), headers={"x-amz-retry-after": "1500"}),
        Reply(503, b"", headers={"x-amz-retry-after": "60000"}),  # at most 5 s over the backoff
        Reply(body={}),
    ]
    make_client(stub.url, sleeps, jitter=lambda: 0.1).put_item(TableName="t", Item={})
    assert sleeps == [pytest.approx(1.5), pytest.approx(0.005 + 5)]  # 0.1 * 25 ms * 2, + 5 s


def test_the_retry_quota_stops_retrying_once_spent_and_refills_on_success(stub: Stub) -> None:
    sleeps: list[float] = []
    bucket = awsjson.RetryQuota(28)  # two non-throttling retries
    client = make_client(stub.url, sleeps, retry_quota=bucket)
    stub.script = [Reply(500, error("InternalServerError"))] * 4
    with pytest.raises(awsjson.ClientError):
        client.get_item(**KEY)
    assert (len(stub.seen), len(sleeps), bucket.available) == (3, 2, 0)
    with pytest.raises(awsjson.ClientError) as caught:  # no tokens: raised at once
        client.get_item(**KEY)
    assert caught.value.response["ResponseMetadata"]["RetryAttempts"] == 0
    assert (len(stub.seen), len(sleeps)) == (4, 2)
    for _ in range(5):  # each success without a retry pays back one token
        client.get_item(**KEY)
    assert bucket.available == 5
    stub.script = [Reply(400, error("ThrottlingException")), Reply(body={})]  # a throttling retry: 5
    client.get_item(**KEY)
    assert bucket.available == 5  # took 5, and its success gave the 5 back


def test_a_transport_failure_that_exhausts_the_quota_is_a_transport_error(stub: Stub) -> None:
    stub.script = [Reply(drop=True)] * 2
    client = make_client(stub.url, [], retry_quota=awsjson.RetryQuota(14))
    with pytest.raises(awsjson.TransportError) as caught:
        client.get_item(**KEY)
    assert "failed after 2 attempts" in str(caught.value) and len(stub.seen) == 2


def test_timeouts_come_from_the_environment() -> None:
    defaults = (awsjson.DEFAULT_CONNECT_TIMEOUT_S, awsjson.DEFAULT_READ_TIMEOUT_S)
    assert awsjson.timeouts_from_env({}) == defaults == (1.0, 2.0)
    env = {awsjson.CONNECT_TIMEOUT_ENV: "0.25", awsjson.READ_TIMEOUT_ENV: "0.75"}
    assert awsjson.timeouts_from_env(env) == (0.25, 0.75)
    for bad in ("0", "-1", "soon", "inf", "nan"):
        assert awsjson.timeouts_from_env({awsjson.READ_TIMEOUT_ENV: bad}) == defaults
    creds = {"AWS_ACCESS_KEY_ID": "a", "AWS_SECRET_ACCESS_KEY": "s"}
    client = awsjson.from_env("dynamodb", "us-east-1", {**creds, **env})
    assert client is not None and (client.connect_timeout_s, client.read_timeout_s) == (0.25, 0.75)


def test_a_read_timeout_from_the_environment_bounds_each_attempt(stub: Stub) -> None:
    stub.script = [Reply(delay_s=1.0)] * 2
    env = {"AWS_ACCESS_KEY_ID": "a", "AWS_SECRET_ACCESS_KEY": "s", "AWS_ENDPOINT_URL": stub.url}
    client = awsjson.from_env("ssm", "us-east-1", {**env, awsjson.READ_TIMEOUT_ENV: "0.1"})
    assert client is not None
    client._max_attempts = 2
    with pytest.raises(awsjson.TransportError) as caught:
        client.get_parameter(Name="/p")
    assert "TimeoutError" in str(caught.value) and len(stub.seen) == 2


@pytest.mark.parametrize(
    ("body", "headers", "code"),
    [
        (error("ConditionalCheckFailedException"), {}, "ConditionalCheckFailedException"),
        (
            {"__type": "com.amazon.coral.validate#ValidationException:http://internal.amazon.com/coral/"},
            {},
            "ValidationException",
        ),
        (
            {"message": "no type"},
            {"x-amzn-errortype": "AccessDeniedException:http://internal/"},
            "AccessDeniedException",
        ),
        ({"message": "neither"}, {}, "400"),
    ],
)
def test_error_codes_drop_their_namespace_and_their_url(
    stub: Stub, body: dict[str, str], headers: dict[str, str], code: str
) -> None:
    stub.script = [Reply(400, body, headers=headers)]
    client = make_client(stub.url, [])
    with pytest.raises(awsjson.ClientError) as caught:
        client.put_item(TableName="t", Item={})
    assert caught.value.response["Error"]["Code"] == code
    assert type(caught.value) is client.exceptions.for_code(code)
