"""``switchboard.infra.awsjson``'s retry rules, error codes and endpoints, held equal to botocore's own.

botocore (installed for the CLI and the tests) is the reference: its standard retry mode
(``botocore.retries.standard``), its retry quota, its JSON error parser and its endpoint rule
sets. Each test asks botocore and the light client the same question and compares the answers,
so a botocore upgrade that changes a rule fails here.
"""

from __future__ import annotations

import itertools
from typing import Any

import botocore.session
import pytest
from botocore.endpoint_provider import EndpointProvider
from botocore.exceptions import ConnectionClosedError
from botocore.parsers import JSONParser
from botocore.retries import quota, standard
from switchboard.infra import awsjson

SESSION = botocore.session.get_session()
LOADER = SESSION.get_component("data_loader")


def model(service: awsjson.Service) -> Any:
    return SESSION.get_service_model(service.name)


class _HTTPResponse:
    def __init__(self, status: int, headers: dict[str, str] | None = None) -> None:
        self.status_code = status
        self.headers = headers or {}
        self.content = b"{}"


def botocore_context(
    service: awsjson.Service,
    operation: str,
    status: int | None,
    code: str | None,
    headers: dict[str, str] | None = None,
    attempt: int = 1,
) -> standard.RetryContext:
    """The context botocore's retry handler builds for one failed attempt."""
    if status is None:  # no answer: a transport error
        return standard.RetryContext(
            attempt_number=attempt,
            operation_model=model(service).operation_model(operation),
            caught_exception=ConnectionClosedError(endpoint_url="https://x"),
        )
    return standard.RetryContext(
        attempt_number=attempt,
        operation_model=model(service).operation_model(operation),
        http_response=_HTTPResponse(status, headers),
        parsed_response={"Error": {"Code": code, "Message": ""}},
    )


def botocore_kind(
    service: awsjson.Service, operation: str, status: int | None, code: str | None
) -> str | None:
    context = botocore_context(service, operation, status, code)
    # Attempt 1 of many: the max-attempts check passes, leaving the retry conditions themselves.
    if not standard.StandardRetryConditions(max_attempts=99).is_retryable(context):
        return None
    detector = standard.ThrottlingErrorDetector(standard.RetryEventAdapter())
    return awsjson.THROTTLING if detector.is_throttling_error_from_context(context) else awsjson.TRANSIENT


def test_the_retryable_codes_are_botocores() -> None:
    assert set(standard.ThrottledRetryableChecker._THROTTLED_ERROR_CODES) == awsjson._THROTTLING_CODES
    assert set(standard.TransientRetryableChecker._TRANSIENT_ERROR_CODES) == awsjson._TRANSIENT_CODES
    assert set(standard.TransientRetryableChecker._TRANSIENT_STATUS_CODES) == awsjson._TRANSIENT_STATUS
    assert standard.ThrottlingStatusCodeChecker._THROTTLING_STATUS_CODES == [awsjson._THROTTLING_STATUS]


@pytest.mark.parametrize("service", awsjson.SERVICES.values(), ids=lambda s: s.name)
def test_each_operations_modeled_errors_are_botocores(service: awsjson.Service) -> None:
    for operation in service.operations.values():
        shapes = model(service).operation_model(operation).error_shapes
        codes = {s.metadata.get("error", {}).get("code") or s.name for s in shapes}
        retryable = {s.name for s in shapes if s.metadata.get("retryable") is not None}
        assert service.modeled_errors[operation] == codes, operation
        assert retryable <= service.retryable_errors, operation
        assert not any(s.metadata.get("retryable", {}).get("throttling") for s in shapes)


CODES = sorted(
    awsjson._THROTTLING_CODES
    | awsjson._TRANSIENT_CODES
    | {code for s in awsjson.SERVICES.values() for codes in s.modeled_errors.values() for code in codes}
    | {"ValidationException", "AccessDeniedException", "UnrecognizedClientException", "SomethingNew"}
)
STATUSES = [None, 400, 403, 404, 413, 429, 500, 502, 503, 504, 505]


@pytest.mark.parametrize("service", awsjson.SERVICES.values(), ids=lambda s: s.name)
def test_every_retry_decision_is_botocores(service: awsjson.Service) -> None:
    checked = 0
    for operation, status, code in itertools.product(service.operations.values(), STATUSES, CODES):
        if status is None:
            code = None
        ours = awsjson.retry_kind(service, operation, status, code)
        assert ours == botocore_kind(service, operation, status, code), (operation, status, code)
        checked += 1
    assert checked > 200
    # The ones a caller relies on, spelled out.
    ddb = awsjson.DYNAMODB
    assert awsjson.retry_kind(ddb, "TransactWriteItems", 400, "TransactionCanceledException") is None
    assert awsjson.retry_kind(ddb, "UpdateItem", 400, "ConditionalCheckFailedException") is None
    assert awsjson.retry_kind(ddb, "UpdateItem", 400, "ThrottlingException") == awsjson.THROTTLING
    assert awsjson.retry_kind(ddb, "PutItem", 400, "ReplicatedWriteConflictException") == awsjson.TRANSIENT
    assert awsjson.retry_kind(ddb, "GetItem", 429, "ConditionalCheckFailedException") == awsjson.THROTTLING
    assert awsjson.retry_kind(ddb, "PutItem", 429, "ConditionalCheckFailedException") is None  # modeled


def test_the_retry_quota_is_botocores() -> None:
    assert awsjson.RetryQuota.INITIAL_CAPACITY == quota.RetryQuota.INITIAL_CAPACITY
    assert awsjson.RetryQuota.RETRY_COST == standard.RetryQuotaChecker._RETRY_COST
    assert awsjson.RetryQuota.THROTTLING_RETRY_COST == standard.RetryQuotaChecker._THROTTLING_RETRY_COST
    assert awsjson.RetryQuota.NO_RETRY_INCREMENT == standard.RetryQuotaChecker._NO_RETRY_INCREMENT
    ours, theirs = awsjson.RetryQuota(), quota.RetryQuota()
    for throttled in [False] * 30 + [True] * 30:  # run both dry
        cost = ours.acquire(throttled)
        assert bool(cost) == theirs.acquire(5 if throttled else 14)
        assert ours.available == theirs.available_capacity
    assert ours.acquire(False) == 0 and ours.available < 14
    ours.release(5)
    theirs.release(5)
    assert ours.available == theirs.available_capacity


@pytest.mark.parametrize("service", awsjson.SERVICES.values(), ids=lambda s: s.name)
def test_the_backoff_is_botocores(service: awsjson.Service) -> None:
    cases = [
        (429, "ThrottlingException", {}),
        (400, "ProvisionedThroughputExceededException", {}),
        (500, "InternalServerError", {}),
        (503, "ServiceUnavailable", {"x-amz-retry-after": "1500"}),
        (400, "ThrottlingException", {"x-amz-retry-after": "30000"}),  # at most 5 s more
        (400, "ThrottlingException", {"x-amz-retry-after": "-1"}),  # invalid: ignored
        (400, "ThrottlingException", {"x-amz-retry-after": "soon"}),
    ]
    operation = next(iter(service.operations.values()))
    for (status, code, headers), attempt, jitter in itertools.product(cases, range(1, 9), (0.0, 0.3, 1.0)):
        backoff = standard.ExponentialBackoff(
            random=lambda: jitter,  # noqa: B023 - used at once
            service_name=model(service).service_id.hyphenize(),
            throttling_detector=standard.ThrottlingErrorDetector(standard.RetryEventAdapter()),
        )
        context = botocore_context(service, operation, status, code, headers, attempt)
        client = awsjson.Client(
            service,
            "us-east-1",
            awsjson.Credentials("a", "s"),
            "http://x",
            jitter=lambda: jitter,  # noqa: B023
        )
        kind = awsjson.retry_kind(service, operation, status, code)
        assert kind is not None
        ours = client._delay(attempt, kind, awsjson._retry_after_s(headers))
        assert ours == pytest.approx(backoff.delay_amount(context)), (status, code, headers, attempt, jitter)


ERROR_FORMS = [
    "com.amazonaws.dynamodb.v20120810#ConditionalCheckFailedException",
    "ConditionalCheckFailedException",
    "ValidationException:http://internal.amazon.com/coral/com.amazon.coral.validate/",
    "aws.protocoltests.json#FooError:http://internal.amazon.com/coral/com.amazon.coral.validate/",
    "com.amazon.coral.availability#ThrottlingException",
    "ThrottlingException",
]


@pytest.mark.parametrize("raw", ERROR_FORMS)
def test_error_codes_are_read_as_botocore_reads_them(raw: str) -> None:
    body = f'{{"__type": "{raw}", "message": "m"}}'.encode()
    parsed = JSONParser().parse(
        {"status_code": 400, "headers": {}, "body": body},
        model(awsjson.DYNAMODB).operation_model("PutItem").output_shape,
    )
    assert awsjson.error_code(raw) == parsed["Error"]["Code"]
    assert ":" not in awsjson.error_code(raw) and "#" not in awsjson.error_code(raw)


def _botocore_endpoint(service: awsjson.Service, region: str) -> str:
    rules = LOADER.load_service_model(service.name, "endpoint-rule-set-1")
    provider = EndpointProvider(rules, LOADER.load_data("partitions"))
    url: str = provider.resolve_endpoint(Region=region, UseFIPS=False, UseDualStack=False).url
    return url


PARTITIONS = LOADER.load_data("partitions")["partitions"]
REGIONS = sorted(
    {region for p in PARTITIONS for region in p["regions"] if not region.endswith("-global")}
    | {"us-west-9", "cn-south-7", "us-gov-south-3", "eusc-de-west-9", "us-isob-west-9", "local", "xx-yy-1"}
)


@pytest.mark.parametrize("service", awsjson.SERVICES.values(), ids=lambda s: s.name)
def test_endpoints_are_botocores_in_the_allowed_partitions_and_boto3s_elsewhere(
    service: awsjson.Service,
) -> None:
    creds = {"AWS_ACCESS_KEY_ID": "a", "AWS_SECRET_ACCESS_KEY": "s"}
    served = set()
    for region in REGIONS:
        client = awsjson.from_env(service.name, region, creds)
        named = awsjson.partition(region)
        assert named == next((p for p in awsjson.PARTITIONS if p.region_pattern.match(region)), None)
        if client is None:
            assert named is None, region
            continue
        served.add(region)
        assert named is not None and named.name in {"aws", "aws-cn", "aws-us-gov"}
        assert client.endpoint == _botocore_endpoint(service, region), region
    # Every region botocore lists in the three partitions is served; the others are not.
    listed = {r for p in PARTITIONS if p["id"] in {"aws", "aws-cn", "aws-us-gov"} for r in p["regions"]}
    assert {r for r in listed if not r.endswith("-global")} <= served
    for region in (
        "eusc-de-east-1",
        "us-iso-east-1",
        "us-isob-east-1",
        "eu-isoe-west-1",
        "us-isof-south-1",
        "local",
    ):
        assert region not in served
    assert {"us-west-9", "cn-south-7", "us-gov-south-3"} <= served  # future regions, by pattern


def test_a_configured_endpoint_wins_over_the_partition_but_not_over_fips() -> None:
    env = {
        "AWS_ACCESS_KEY_ID": "a",
        "AWS_SECRET_ACCESS_KEY": "s",
        "AWS_ENDPOINT_URL": "http://127.0.0.1:5000",
    }
    for region in ("us-east-1", "eusc-de-east-1", "local", "us-iso-east-1"):
        client = awsjson.from_env("dynamodb", region, env)
        assert client is not None and client.endpoint == "http://127.0.0.1:5000"
    ssm_only = {**env, "AWS_ENDPOINT_URL_SSM": "http://127.0.0.1:6000"}
    ssm = awsjson.from_env("ssm", "eusc-de-east-1", ssm_only)
    assert ssm is not None and ssm.endpoint == "http://127.0.0.1:6000"
    for setting in ("AWS_USE_FIPS_ENDPOINT", "AWS_USE_DUALSTACK_ENDPOINT"):
        assert awsjson.from_env("dynamodb", "us-east-1", {**env, setting: "true"}) is None
        assert awsjson.from_env("dynamodb", "us-east-1", {**env, setting: "false"}) is not None
