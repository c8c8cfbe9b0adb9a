"""``switchboard.devtools.awsfaults``: each fault, met by the light client against the session's moto.

The faults sit below the client's retries, so each test checks both the fault's shape (as the
service answers it) and what the retry rules then do with it: a conflict is raised at once, a
throttle is retried with backoff and then raised, a blackhole ends by the read timeout.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ReadTimeoutError
from switchboard.core.principal import Period, Scope
from switchboard.devtools import awsfaults
from switchboard.devtools.awsfaults import Rule
from switchboard.infra import awsjson
from switchboard.limits.ledger import BudgetLine, Ledger, Reservation
from switchboard.limits.table import Table

from tests.limits.conftest import make_table

REGION = "us-east-1"


@pytest.fixture
def table(aws: str) -> Iterator[Table]:
    made = make_table()
    yield made
    made.client.delete_table(TableName=made.name)


def light(
    sleeps: list[float] | None = None, service: awsjson.Service = awsjson.DYNAMODB, **kwargs: Any
) -> awsjson.Client:
    """A light client on moto whose backoffs are recorded (not slept) and at the top of their range."""
    credentials = awsjson.Credentials.from_env(os.environ)
    assert credentials is not None
    return awsjson.Client(
        service,
        REGION,
        credentials,
        os.environ["AWS_ENDPOINT_URL"],
        sleep=(sleeps if sleeps is not None else []).append,
        jitter=lambda: 1.0,
        **kwargs,
    )


def key(pk: str) -> dict[str, Any]:
    return {"pk": {"S": pk}, "sk": {"S": "s"}}


def counter(client: awsjson.Client, table: Table, pk: str) -> int:
    item = client.get_item(TableName=table.name, Key=key(pk), ConsistentRead=True).get("Item")
    return int(item["n"]["N"]) if item else 0


def add(pk: str, table: Table) -> dict[str, Any]:
    return {
        "TableName": table.name,
        "Key": key(pk),
        "UpdateExpression": "ADD n :one",
        "ExpressionAttributeValues": {":one": {"N": "1"}},
    }


def test_a_conflict_cancels_a_transaction_with_one_reason_per_item_and_is_not_retried(table: Table) -> None:
    client = light()
    items = [{"Update": add(f"c{i}", table)} for i in range(3)]
    with (
        awsfaults.inject(Rule("conflict", operations={"TransactWriteItems"}), client=client) as faults,
        pytest.raises(client.exceptions.TransactionCanceledException) as caught,
    ):
        client.transact_write_items(TransactItems=items)
    response = caught.value.response
    reasons = response["CancellationReasons"]
    assert len(reasons) == 3
    assert sorted(r["Code"] for r in reasons) == ["None", "None", "TransactionConflict"]
    assert response["Error"]["Code"] == "TransactionCanceledException"
    assert "TransactionConflict" in response["Error"]["Message"]
    assert faults.attempts["TransactWriteItems"] == 1  # botocore does not retry a cancellation either
    assert [counter(client, table, f"c{i}") for i in range(3)] == [0, 0, 0]  # nothing applied
    client.transact_write_items(TransactItems=items)  # uninstalled with the block
    assert [counter(client, table, f"c{i}") for i in range(3)] == [1, 1, 1]


def test_a_transaction_cancelled_for_throttling(table: Table) -> None:
    client = light()
    rule = Rule("conflict", reason="ThrottlingError")
    with (
        awsfaults.inject(rule, client=client),
        pytest.raises(client.exceptions.TransactionCanceledException) as caught,
    ):
        client.transact_write_items(TransactItems=[{"Update": add("tt", table)}])
    [reason] = caught.value.response["CancellationReasons"]
    assert reason["Code"] == "ThrottlingError" and "capacity" in reason["Message"]


def test_a_conflict_on_a_single_write_is_a_transaction_conflict_and_reads_are_spared(table: Table) -> None:
    client = light()
    with awsfaults.inject(Rule("conflict"), client=client) as faults:
        with pytest.raises(client.exceptions.TransactionConflictException):
            client.update_item(**add("w", table))
        assert counter(client, table, "w") == 0  # GetItem: a conflict is not a read's fault
    assert faults.injected == {("conflict", "UpdateItem"): 1}


def test_the_ledger_rides_out_conflicts_through_the_fault_layer(table: Table) -> None:
    client = light()
    now = 1_800_000_000.0
    line = BudgetLine(Scope.KEY, "k1", "key k1", Decimal("1"), Period.MONTH, "2027-01", None)
    book = Ledger(Table(client, table.name), clock=lambda: now, sleep=lambda _: None)
    reservation = Reservation("r1", Decimal("0.5"), 10, (line,), (), int(now) + 600)
    with awsfaults.inject(Rule("conflict", times=2), client=client) as faults:
        assert book.reserve(reservation) is None  # admitted on its third transaction
    assert faults.injected[("conflict", "TransactWriteItems")] == 2
    assert faults.attempts["TransactWriteItems"] == 3


@pytest.mark.parametrize(
    ("fault", "code"),
    [("throttle", "ThrottlingException"), ("throughput", "ProvisionedThroughputExceededException")],
)
def test_throttling_is_retried_as_botocores_standard_mode_then_raised(
    table: Table, fault: str, code: str
) -> None:
    sleeps: list[float] = []
    client = light(sleeps)
    with awsfaults.inject(Rule(fault), client=client) as faults, pytest.raises(awsjson.ClientError) as caught:
        client.get_item(TableName=table.name, Key=key("t"))
    assert caught.value.response["Error"]["Code"] == code
    assert caught.value.response["ResponseMetadata"]["RetryAttempts"] == 2
    assert faults.attempts["GetItem"] == 3 and sleeps == [1.0, 2.0]  # throttling base 1 s, doubled
    assert client.retry_quota.available == awsjson.RetryQuota.INITIAL_CAPACITY - 2 * 5


def test_a_throttling_burst_then_success(table: Table) -> None:
    sleeps: list[float] = []
    client = light(sleeps)
    with awsfaults.inject(Rule("throughput", times=2, operations={"UpdateItem"}), client=client):
        answer = client.update_item(**add("b", table))
    assert answer["ResponseMetadata"]["RetryAttempts"] == 2 and len(sleeps) == 2
    assert counter(client, table, "b") == 1


def test_a_500_is_retried_with_the_short_base_then_raised(table: Table) -> None:
    sleeps: list[float] = []
    client = light(sleeps)
    with awsfaults.inject(Rule("error500"), client=client), pytest.raises(awsjson.ClientError) as caught:
        client.put_item(TableName=table.name, Item=key("e"))
    assert caught.value.response["Error"]["Code"] == "InternalServerError"
    assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == 500
    assert sleeps == [0.025, 0.05]  # DynamoDB's transient base
    ssm = light(service=awsjson.SSM)
    with (
        awsfaults.inject(Rule("error500", services={"ssm"}), client=ssm),
        pytest.raises(awsjson.ClientError) as ssm_error,
    ):
        ssm.get_parameter(Name="/nope")
    assert ssm_error.value.response["Error"]["Code"] == "InternalServerError"


def test_latency_below_the_read_timeout_slows_a_call_and_above_it_times_out(table: Table) -> None:
    client = light(read_timeout_s=0.2)
    with awsfaults.inject(Rule("latency", latency_s=0.01), client=client) as faults:
        client.put_item(TableName=table.name, Item=key("l"))
    assert faults.injected[("latency", "PutItem")] == 1
    with (
        awsfaults.inject(Rule("latency", latency_s=30), client=client),
        pytest.raises(awsjson.TransportError) as caught,
    ):
        client.get_item(TableName=table.name, Key=key("l"))
    assert isinstance(caught.value.__cause__, TimeoutError) and "3 attempts" in str(caught.value)
    with (
        awsfaults.inject(Rule("latency", latency_s=30), client=client),
        awsjson.deadline(time.monotonic() + 0.1),
        pytest.raises(awsjson.DeadlineExceeded),
    ):
        client.get_item(TableName=table.name, Key=key("l"))


def test_a_reset_after_the_service_applied_a_write_is_retried_and_counts_twice(table: Table) -> None:
    # As on DynamoDB: the update was applied, its answer lost, and the retry applies it again.
    client = light()
    with awsfaults.inject(Rule("reset", times=1, operations={"UpdateItem"}), client=client) as faults:
        answer = client.update_item(**add("r", table))
    assert answer["ResponseMetadata"]["RetryAttempts"] == 1
    assert faults.attempts["UpdateItem"] == 2 and counter(client, table, "r") == 2


def test_a_reset_before_the_service_saw_a_write_is_retried_once(table: Table) -> None:
    client = light()
    with awsfaults.inject(Rule("reset", times=1, phase="before", operations={"UpdateItem"}), client=client):
        client.update_item(**add("p", table))
    assert counter(client, table, "p") == 1


def test_a_reset_transaction_is_applied_once_thanks_to_its_token(table: Table) -> None:
    client = light()
    items = [{"Update": add("tx", table)}]
    with awsfaults.inject(Rule("reset", times=1, operations={"TransactWriteItems"}), client=client) as faults:
        answer = client.transact_write_items(TransactItems=items)
    assert answer["ResponseMetadata"]["RetryAttempts"] == 1 and faults.attempts["TransactWriteItems"] == 2
    assert counter(client, table, "tx") == 1


def test_a_reset_transaction_that_was_cancelled_is_run_afresh_when_retried(table: Table) -> None:
    # DynamoDB answers a token it already committed with success; a cancelled transaction (here a
    # condition that failed) is not committed, so its retry is refused again, never "done". A
    # fault layer that answered it with success made the soak's ledger admit unreserved requests.
    client = light()
    refused = {**add("cx", table), "ConditionExpression": "attribute_exists(pk)"}
    with (
        awsfaults.inject(Rule("reset", times=1, operations={"TransactWriteItems"}), client=client) as faults,
        pytest.raises(awsjson.ClientError) as caught,
    ):
        client.transact_write_items(TransactItems=[{"Update": refused}])
    assert caught.value.response["Error"]["Code"] == "TransactionCanceledException"
    assert faults.attempts["TransactWriteItems"] == 2 and counter(client, table, "cx") == 0


def test_resets_on_every_attempt_end_in_a_transport_error(table: Table) -> None:
    client = light()
    with (
        awsfaults.inject(Rule("reset", phase="before"), client=client),
        pytest.raises(awsjson.TransportError) as caught,
    ):
        client.get_item(TableName=table.name, Key=key("x"))
    assert isinstance(caught.value.__cause__, ConnectionResetError)


def test_a_blackhole_ends_by_the_read_timeout_on_a_real_socket(table: Table) -> None:
    client = light(read_timeout_s=0.1, max_attempts=2)
    with awsfaults.inject(Rule("blackhole", operations={"PutItem"}), client=client) as faults:
        with pytest.raises(awsjson.TransportError) as caught:
            client.put_item(TableName=table.name, Item=key("bh"))
        assert counter(client, table, "bh") == 0  # never reached moto; GetItem is not blackholed
    assert isinstance(caught.value.__cause__, TimeoutError)
    assert faults.injected[("blackhole", "PutItem")] == 2
    client.put_item(TableName=table.name, Item=key("bh"))  # the keep-alive connection is intact
    with (
        awsfaults.inject(Rule("blackhole"), client=client),
        awsjson.deadline(time.monotonic() + 0.05),
        pytest.raises(awsjson.DeadlineExceeded),
    ):
        client.get_item(TableName=table.name, Key=key("bh"))


def test_rates_are_honoured_and_a_seed_repeats_the_same_faults() -> None:
    rule = Rule("throttle", rate=0.3)
    faults = awsfaults.Faults((rule,), seed=11)
    fired = [faults.pick("dynamodb", "GetItem") is not None for _ in range(10_000)]
    assert 2_800 < sum(fired) < 3_200  # 30% of 10,000 (the seed fixes the draw: not flaky)
    again = awsfaults.Faults((rule,), seed=11)
    assert [again.pick("dynamodb", "GetItem") is not None for _ in range(10_000)] == fired
    other = awsfaults.Faults((rule,), seed=12)
    assert [other.pick("dynamodb", "GetItem") is not None for _ in range(10_000)] != fired
    assert awsfaults.Faults((Rule("throttle", rate=0.0),)).pick("ssm", "GetParameter") is None
    capped = awsfaults.Faults((Rule("throttle", times=3),))
    assert sum(capped.pick("ssm", "GetParameter") is not None for _ in range(10)) == 3


def test_a_seeded_run_meets_the_same_faults_through_the_client(table: Table) -> None:
    def run(seed: int) -> list[str]:
        client = light(max_attempts=1)
        outcomes = []
        with awsfaults.inject(
            Rule("throttle", rate=0.4), Rule("error500", rate=0.2), seed=seed, client=client
        ):
            for _ in range(30):
                try:
                    client.get_item(TableName=table.name, Key=key("s"))
                    outcomes.append("ok")
                except awsjson.ClientError as exc:
                    outcomes.append(exc.response["Error"]["Code"])
        return outcomes

    first = run(5)
    assert first == run(5)
    assert {"ok", "ThrottlingException", "InternalServerError"} == set(first)


def test_the_process_wide_layer_reaches_every_client_and_is_off_by_default(table: Table) -> None:
    one, two = light(max_attempts=1), light(max_attempts=1)
    one.get_item(TableName=table.name, Key=key("g"))  # nothing installed
    awsfaults.install(awsfaults.Faults((Rule("throttle"),)))
    try:
        for client in (one, two):
            with pytest.raises(awsjson.ClientError):
                client.get_item(TableName=table.name, Key=key("g"))
        mine = awsfaults.Faults((Rule("error500"),))
        awsfaults.install(mine, client=two)  # a client's own layer wins
        with pytest.raises(awsjson.ClientError) as caught:
            two.get_item(TableName=table.name, Key=key("g"))
        assert caught.value.response["Error"]["Code"] == "InternalServerError"
        awsfaults.uninstall(client=two)
    finally:
        awsfaults.uninstall()
    one.get_item(TableName=table.name, Key=key("g"))
    two.get_item(TableName=table.name, Key=key("g"))


def test_faults_from_the_environment(aws: str, monkeypatch: pytest.MonkeyPatch) -> None:
    plain = awsjson.from_env("dynamodb", REGION)
    assert plain is not None and plain.interceptor is None  # never active unless configured
    value = '{"seed": 3, "rules": [{"fault": "blackhole", "rate": 1.0, "operations": ["GetParameter"]}]}'
    monkeypatch.setenv(awsfaults.ENV, value)
    monkeypatch.setenv(awsjson.READ_TIMEOUT_ENV, "0.1")
    ssm, sm = awsjson.from_env("ssm", REGION), awsjson.from_env("secretsmanager", REGION)
    assert ssm is not None and sm is not None
    assert isinstance(ssm.interceptor, awsfaults.Faults) and ssm.interceptor is sm.interceptor  # shared
    with pytest.raises(awsjson.TransportError) as caught:
        ssm.get_parameter(Name="/switchboard-test/any")
    assert isinstance(caught.value.__cause__, TimeoutError)
    assert ssm.interceptor.injected == {("blackhole", "GetParameter"): 3}
    with pytest.raises(sm.exceptions.ResourceNotFoundException):  # other operations untouched
        sm.get_secret_value(SecretId="switchboard-test/none")


@pytest.mark.parametrize(
    "value",
    [
        "not json",
        '{"rules": {}}',
        '[{"fault": "meteor"}]',
        '[{"fault": "throttle", "rate": 2}]',
        '[{"fault": "throttle", "typo": 1}]',
        '{"seed": 1, "rules": [], "extra": 1}',
        '[{"fault": "reset", "phase": "during"}]',
        '[{"fault": "conflict", "reason": "Boredom"}]',
    ],
)
def test_a_malformed_environment_value_is_refused_loudly(value: str) -> None:
    with pytest.raises(ValueError, match=awsfaults.ENV + "|fault|rate|phase|reason"):
        awsfaults.parse(value)
    env = {"AWS_ACCESS_KEY_ID": "a", "AWS_SECRET_ACCESS_KEY": "s", awsfaults.ENV: value}
    with pytest.raises(ValueError):
        awsjson.from_env("dynamodb", REGION, env)


def test_a_bare_list_of_rules_is_accepted() -> None:
    faults = awsfaults.parse('[{"fault": "latency", "latency_s": 0.5, "services": ["ssm"], "times": 2}]')
    assert faults.seed == 0
    assert faults.rules == (Rule("latency", latency_s=0.5, services=frozenset({"ssm"}), times=2),)
    assert awsfaults.from_env({}) is None and awsfaults.from_env({awsfaults.ENV: "  "}) is None


def test_the_fault_proxy_passes_blackholes_and_resets_on_real_sockets(table: Table, aws: str) -> None:
    credentials = awsjson.Credentials.from_env(os.environ)
    assert credentials is not None
    with awsfaults.FaultProxy(aws) as proxy:
        client = awsjson.Client(
            awsjson.DYNAMODB, REGION, credentials, proxy.url, read_timeout_s=0.2, max_attempts=1
        )
        client.update_item(**add("px", table))  # pass
        proxy.mode = "blackhole"
        with pytest.raises(awsjson.TransportError) as hole:
            client.get_item(TableName=table.name, Key=key("px"))
        assert isinstance(hole.value.__cause__, TimeoutError)
        proxy.mode = "reset"
        with pytest.raises(awsjson.TransportError) as reset:
            client.get_item(TableName=table.name, Key=key("px"))
        assert isinstance(reset.value.__cause__, ConnectionError)
        proxy.mode = "pass"
        client.get_item(TableName=table.name, Key=key("px"))
        proxy.mode = "reset_after"  # moto applies the update; the answer is lost
        with pytest.raises(awsjson.TransportError):
            client.update_item(**add("px", table))
        proxy.mode = "pass"
        assert counter(client, table, "px") == 2  # the reset update was applied, once
        assert proxy.connections >= 3

        boto = boto3.client(
            "dynamodb",
            region_name=REGION,
            endpoint_url=proxy.url,
            config=Config(retries={"total_max_attempts": 1}, read_timeout=0.2, connect_timeout=0.2),
        )
        proxy.mode = "blackhole"
        with pytest.raises(ReadTimeoutError):
            boto.get_item(TableName=table.name, Key=key("px"))
