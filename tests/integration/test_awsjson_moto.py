"""``switchboard.infra.awsjson`` against the session's moto server, beside boto3 on the same calls.

Every operation the gateway makes, the answers compared with boto3's (less ``ResponseMetadata``),
the error shapes the call sites read, pagination keys passed through, and the key store and the
ledger running on the light client.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import boto3
import pytest
from switchboard.core.principal import Period, Scope
from switchboard.infra import aws as clients
from switchboard.infra import awsjson
from switchboard.limits.keys import KeyStore
from switchboard.limits.ledger import BudgetLine, Ledger, Reservation
from switchboard.limits.table import Table, call_counts, load

from tests.limits.conftest import make_table

REGION = "us-east-1"


@pytest.fixture
def tables(aws: str) -> Iterator[tuple[Table, Table]]:
    """One table, seen through the light client and through boto3."""
    made = make_table()
    light = awsjson.from_env("dynamodb", REGION)
    assert light is not None
    yield Table(light, made.name), made
    made.client.delete_table(TableName=made.name)
    light.close()


def same(a: dict[str, Any], b: dict[str, Any]) -> bool:
    strip = {k: v for k, v in a.items() if k != "ResponseMetadata"}
    return strip == {k: v for k, v in b.items() if k != "ResponseMetadata"}


def key(pk: str, sk: str = "s") -> dict[str, Any]:
    return {"pk": {"S": pk}, "sk": {"S": sk}}


def test_every_dynamodb_operation_answers_as_boto3(tables: tuple[Table, Table]) -> None:
    light, boto = tables
    name, lc, bc = light.name, light.client, boto.client
    lc.put_item(TableName=name, Item={**key("a"), "n": {"N": "1"}, "s": {"SS": ["x", "y"]}})
    assert same(lc.get_item(TableName=name, Key=key("a")), bc.get_item(TableName=name, Key=key("a")))
    assert "Item" not in lc.get_item(TableName=name, Key=key("missing"), ConsistentRead=True)

    update = {
        "TableName": name,
        "Key": key("a"),
        "UpdateExpression": "ADD n :one SET #t = :t",
        "ExpressionAttributeNames": {"#t": "ttl"},
        "ExpressionAttributeValues": {":one": {"N": "1"}, ":t": {"N": "99"}},
        "ReturnValues": "ALL_NEW",
    }
    assert lc.update_item(**update)["Attributes"]["n"] == {"N": "2"}
    assert bc.update_item(**update)["Attributes"]["n"] == {"N": "3"}

    lc.transact_write_items(
        TransactItems=[
            {"Put": {"TableName": name, "Item": {**key("b"), "v": {"S": "1"}}}},
            {"Update": {**{k: v for k, v in update.items() if k != "ReturnValues"}, "Key": key("a")}},
        ]
    )
    batch = {name: {"Keys": [key("a"), key("b"), key("missing")]}}
    ours, theirs = lc.batch_get_item(RequestItems=batch), bc.batch_get_item(RequestItems=batch)
    order = sorted  # the service returns a batch in any order
    assert order(map(str, ours["Responses"][name])) == order(map(str, theirs["Responses"][name]))
    assert ours.get("UnprocessedKeys") == theirs.get("UnprocessedKeys") == {}

    query = {
        "TableName": name,
        "KeyConditionExpression": "pk = :p",
        "ExpressionAttributeValues": {":p": {"S": "a"}},
    }
    assert same(lc.query(**query), bc.query(**query))
    deleted = lc.delete_item(TableName=name, Key=key("b"), ReturnValues="ALL_OLD")
    assert deleted["Attributes"] == {**key("b"), "v": {"S": "1"}}
    assert "Attributes" not in lc.delete_item(TableName=name, Key=key("b"), ReturnValues="ALL_OLD")


def test_query_pages_pass_their_keys_through(tables: tuple[Table, Table]) -> None:
    light, boto = tables
    for i in range(23):
        light.client.put_item(
            TableName=light.name, Item={**key("p", f"{i:02d}"), "gsi1pk": {"S": "g"}, "gsi1sk": {"S": f"{i}"}}
        )
    kwargs: dict[str, Any] = {
        "TableName": light.name,
        "KeyConditionExpression": "pk = :p",
        "ExpressionAttributeValues": {":p": {"S": "p"}},
        "Limit": 5,
    }
    seen, pages = [], 0
    while True:
        page = light.client.query(**kwargs)
        pages += 1
        seen += [item["sk"]["S"] for item in page["Items"]]
        if "LastEvaluatedKey" not in page:
            break
        assert page["LastEvaluatedKey"] == boto.client.query(**kwargs)["LastEvaluatedKey"]
        kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]
    assert seen == [f"{i:02d}" for i in range(23)] and pages >= 5
    assert len(list(light.index_items("g"))) == 23  # the table's own paginated index query


def test_error_shapes_are_botocores(tables: tuple[Table, Table]) -> None:
    light, boto = tables
    lc, bc, name = light.client, boto.client, light.name
    lc.put_item(TableName=name, Item={**key("c"), "v": {"S": "old"}})

    conditional = {"TableName": name, "Item": key("c"), "ConditionExpression": "attribute_not_exists(pk)"}
    with pytest.raises(lc.exceptions.ConditionalCheckFailedException) as ours:
        lc.put_item(**conditional)
    with pytest.raises(bc.exceptions.ConditionalCheckFailedException) as theirs:
        bc.put_item(**conditional)
    assert ours.value.response["Error"] == theirs.value.response["Error"]
    assert ours.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert str(ours.value) == str(theirs.value)

    items = [
        {"Put": {"TableName": name, "Item": key("d")}},
        {**{"Put": {**conditional, "ReturnValuesOnConditionCheckFailure": "ALL_OLD"}}},
    ]
    with pytest.raises(lc.exceptions.TransactionCanceledException) as ours_tx:
        lc.transact_write_items(TransactItems=items)
    with pytest.raises(bc.exceptions.TransactionCanceledException) as theirs_tx:
        bc.transact_write_items(TransactItems=items)
    assert ours_tx.value.response["Error"] == theirs_tx.value.response["Error"]
    reasons = ours_tx.value.response["CancellationReasons"]
    assert reasons == theirs_tx.value.response["CancellationReasons"]
    assert [r["Code"] for r in reasons] == ["None", "ConditionalCheckFailed"]
    assert reasons[1]["Item"]["v"] == {"S": "old"}

    with pytest.raises(lc.exceptions.ResourceNotFoundException) as missing:
        lc.get_item(TableName="no-such-table", Key=key("a"))
    assert missing.value.response["Error"]["Code"] == "ResourceNotFoundException"
    with pytest.raises(awsjson.ClientError) as invalid:
        lc.get_item(TableName=name, Key={"pk": {"S": "only the hash key"}})
    assert invalid.value.response["Error"]["Code"] == "ValidationException"


def test_ssm_and_secrets_manager(aws: str) -> None:
    name, secret = f"/switchboard-test/{uuid.uuid4().hex}", f"switchboard-test/{uuid.uuid4().hex}"
    boto3.client("ssm", region_name=REGION).put_parameter(Name=name, Value="v1", Type="SecureString")
    boto3.client("secretsmanager", region_name=REGION).create_secret(Name=secret, SecretString="s1")
    ssm, sm = awsjson.from_env("ssm", REGION), awsjson.from_env("secretsmanager", REGION)
    assert ssm is not None and sm is not None
    assert ssm.get_parameter(Name=name, WithDecryption=True)["Parameter"]["Value"] == "v1"
    with pytest.raises(ssm.exceptions.ParameterNotFound) as missing:
        ssm.get_parameter(Name=name + "-nope")
    assert missing.value.response["Error"]["Code"] == "ParameterNotFound"
    assert sm.get_secret_value(SecretId=secret)["SecretString"] == "s1"
    with pytest.raises(sm.exceptions.ResourceNotFoundException):
        sm.get_secret_value(SecretId=secret + "-nope")
    ssm.close()
    sm.close()


def test_ssm_reads_of_a_split_routing_document(aws: str) -> None:
    """GetParameters with version selectors and GetParametersByPath page by page, as boto3 answers."""
    base = f"/switchboard-test/{uuid.uuid4().hex}/routing"
    boto = boto3.client("ssm", region_name=REGION)
    for i in range(5):
        boto.put_parameter(Name=f"{base}/part-{i}", Value=f"old-{i}", Type="String")
        boto.put_parameter(Name=f"{base}/part-{i}", Value=f"new-{i}", Type="String", Overwrite=True)
    ssm = awsjson.from_env("ssm", REGION)
    assert ssm is not None
    names = [f"{base}/part-0:1", f"{base}/part-3:2", f"{base}/part-9"]
    light = ssm.get_parameters(Names=names, WithDecryption=True)

    def undated(answer: dict[str, Any]) -> dict[str, Any]:  # boto3 parses LastModifiedDate, we keep epochs
        return {**answer, "Parameters": [{**p, "LastModifiedDate": 0} for p in answer["Parameters"]]}

    assert same(undated(light), undated(boto.get_parameters(Names=names, WithDecryption=True)))
    values = {(p["Name"], p["Version"]): p["Value"] for p in light["Parameters"]}
    assert values == {(f"{base}/part-0", 1): "old-0", (f"{base}/part-3", 2): "new-3"}
    assert light["InvalidParameters"] == [f"{base}/part-9"]

    seen: list[str] = []
    pages = 0
    params: dict[str, Any] = {"Path": base, "MaxResults": 2, "WithDecryption": True}
    while True:
        page = ssm.get_parameters_by_path(**params)
        pages += 1
        seen += [p["Value"] for p in page["Parameters"]]
        if not page.get("NextToken"):
            break
        params["NextToken"] = page["NextToken"]
    assert pages == 3 and sorted(seen) == [f"new-{i}" for i in range(5)]
    ssm.close()


def test_the_key_store_and_the_ledger_run_on_the_light_client(tables: tuple[Table, Table]) -> None:
    light, boto = tables
    store = KeyStore(light)
    secret, record = store.create("light", team="t", models=["echo"])
    assert KeyStore(boto).by_digest(record.digest) == record == store.get(record.id)
    assert store.ensure(secret, "light") == record  # the ConditionalCheckFailed path when it exists
    store.revoke(record.id)
    assert store.ensure(secret, "light").revoked_at is None  # ...and when it is revoked

    now = 1_800_000_000.0
    line = BudgetLine(Scope.KEY, "k1", "key k1", Decimal("1"), Period.MONTH, "2027-01", None)
    book = Ledger(light, clock=lambda: now)

    def res(request_id: str, usd: str) -> Reservation:
        return Reservation(request_id, Decimal(usd), 10, (line,), (), int(now) + 600)

    before = call_counts().get("TransactWriteItems", 0)
    assert book.reserve(res("r1", "0.75")) is None
    refused = book.reserve(res("r2", "0.5"))  # over the budget: TransactionCanceled, reasons read
    assert refused is not None and "k1" in str(refused)
    assert book.settle(res("r1", "0.75").hold, Decimal("0.25"), 5) is True
    assert call_counts()["TransactWriteItems"] - before == 3  # counted on the light client too
    [row] = [load(i) for i in light.client.query(
        TableName=light.name,
        KeyConditionExpression="pk = :p",
        ExpressionAttributeValues={":p": {"S": "budget#key#k1"}},
    )["Items"]]  # fmt: skip
    assert (row["spent"], row["reserved"]) == (Decimal("0.25"), 0)


def test_the_runtime_client_is_light_when_the_environment_has_credentials(aws: str) -> None:
    assert isinstance(aws_runtime("dynamodb"), awsjson.Client)
    assert isinstance(aws_runtime("ssm"), awsjson.Client)
    assert isinstance(aws_runtime("secretsmanager"), awsjson.Client)
    assert not isinstance(clients.client("dynamodb", REGION), awsjson.Client)  # the CLI's: boto3


def aws_runtime(service: str) -> Any:
    return clients.runtime_client(service, REGION)


def test_the_boto3_fallback_is_configured_for_serving(aws: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_USE_DUALSTACK_ENDPOINT", "true")  # a setting the light client leaves to boto3
    fallback = clients.runtime_client.__wrapped__("ssm", REGION)  # not the process's cached one
    assert not isinstance(fallback, awsjson.Client)
    assert fallback is clients._serving_boto3("ssm", REGION)
    monkeypatch.delenv("AWS_USE_DUALSTACK_ENDPOINT")
    made = clients._serving_boto3("dynamodb", REGION)
    config = made.meta.config
    assert (config.connect_timeout, config.read_timeout) == (1.0, 2.0)
    assert config.retries["total_max_attempts"] == awsjson.DEFAULT_MAX_ATTEMPTS == 3
    assert "TableNames" in made.list_tables()
    with awsjson.deadline(time.monotonic() - 1), pytest.raises(awsjson.DeadlineExceeded):
        made.list_tables()  # an attempt past the call's deadline is not sent
    assert "TableNames" in made.list_tables()
    cli = clients.client("dynamodb", REGION).meta.config
    assert (cli.connect_timeout, cli.read_timeout) == (2, 5)  # the CLI's, not on a request's clock
