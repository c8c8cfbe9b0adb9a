"""Static checks of template.yaml: the deployment facts that are easy to break and costly to find
after a `sam deploy` (streaming wiring, architecture, table schema, log retention, IAM)."""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from switchboard.devtools.cfn import load_template, loads_template

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "template.yaml"

STREAM_URI_MARK = "/2021-11-15/functions/"
STREAM_URI_SUFFIX = "/response-streaming-invocations"
LWA_ACCOUNT = "753240598075"


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    return load_template(TEMPLATE)


def resources_of(template: dict[str, Any], type_: str) -> dict[str, dict[str, Any]]:
    return {name: res for name, res in template["Resources"].items() if res["Type"] == type_}


def only(template: dict[str, Any], type_: str) -> dict[str, Any]:
    found = resources_of(template, type_)
    assert len(found) == 1, f"expected one {type_}, found {sorted(found)}"
    return next(iter(found.values()))


def if_branches(value: Any, condition: str = "IsStreaming") -> tuple[Any, Any]:
    """(when true, when false) of an ``Fn::If`` on ``condition``; a plain value is both."""
    if isinstance(value, dict) and "Fn::If" in value:
        cond, when_true, when_false = value["Fn::If"]
        assert cond == condition
        return when_true, when_false
    return value, value


def leaves(value: Any) -> list[Any]:
    """Every value an ``Fn::If`` tree can take (a plain value is its own leaf)."""
    if isinstance(value, dict) and "Fn::If" in value:
        return [leaf for branch in value["Fn::If"][1:] for leaf in leaves(branch)]
    return [value]


def sub_text(value: Any) -> str:
    """The format string of an ``Fn::Sub`` (or a plain string)."""
    if isinstance(value, dict) and "Fn::Sub" in value:
        sub = value["Fn::Sub"]
        return sub if isinstance(sub, str) else sub[0]
    assert isinstance(value, str), value
    return value


def walk(node: Any) -> Iterator[Any]:
    yield node
    if isinstance(node, dict):
        for child in node.values():
            yield from walk(child)
    elif isinstance(node, list):
        for child in node:
            yield from walk(child)


def _branches(policies: list[Any]) -> Iterator[dict[str, Any]]:
    """Policies, with both sides of a conditional (``Fn::If``) policy; ``AWS::NoValue`` dropped."""
    for policy in policies:
        if isinstance(policy, dict) and "Fn::If" in policy:
            for branch in policy["Fn::If"][1:]:
                if branch != {"Ref": "AWS::NoValue"}:
                    yield branch
        else:
            yield policy


def policy_statements(template: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    for name, res in template["Resources"].items():
        props = res.get("Properties", {})
        if res["Type"] == "AWS::IAM::Role":
            for policy in _branches(props.get("Policies", [])):
                for st in policy["PolicyDocument"]["Statement"]:
                    yield f"{name}/{policy['PolicyName']}", st
        elif res["Type"] in ("AWS::IAM::Policy", "AWS::IAM::ManagedPolicy"):
            for st in props["PolicyDocument"]["Statement"]:
                yield name, st
        elif res["Type"] == "AWS::Serverless::Function":
            policies = props.get("Policies", [])
            for policy in policies if isinstance(policies, list) else [policies]:
                if isinstance(policy, dict) and "Statement" in policy:
                    for st in policy["Statement"]:
                        yield name, st


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


# --------------------------------------------------------------------------- loader ---------


def test_loader_understands_short_form_tags() -> None:
    doc = loads_template(
        "A: !Ref X\nB: !GetAtt R.Arn\nC: !Sub 'x-${Y}'\nD: !If [IsStreaming, a, !Ref AWS::NoValue]\n"
        "E: !Join ['', [a, b]]\nF: !GetAtt Db.Endpoint.Address\nG: !Condition IsStreaming\n"
    )
    assert doc == {
        "A": {"Ref": "X"},
        "B": {"Fn::GetAtt": ["R", "Arn"]},
        "C": {"Fn::Sub": "x-${Y}"},
        "D": {"Fn::If": ["IsStreaming", "a", {"Ref": "AWS::NoValue"}]},
        "E": {"Fn::Join": ["", ["a", "b"]]},
        "F": {"Fn::GetAtt": ["Db", "Endpoint.Address"]},
        "G": {"Condition": "IsStreaming"},
    }


# ------------------------------------------------------------------------ API Gateway -------


def test_rest_api_is_regional(template: dict[str, Any]) -> None:
    api = only(template, "AWS::Serverless::Api")["Properties"]
    assert api["EndpointConfiguration"]["Type"] == "REGIONAL"
    assert not resources_of(template, "AWS::Serverless::HttpApi"), "HTTP APIs cannot stream"


def test_api_proxies_root_and_every_path_to_the_gateway(template: dict[str, Any]) -> None:
    paths = only(template, "AWS::Serverless::Api")["Properties"]["DefinitionBody"]["paths"]
    assert set(paths) == {"/", "/{proxy+}"}
    for path, item in paths.items():
        integration = item["x-amazon-apigateway-any-method"]["x-amazon-apigateway-integration"]
        assert integration["type"] == "aws_proxy", path
        assert integration["httpMethod"] == "POST", path
        for leaf in leaves(integration["uri"]):
            # the 'live' alias (where provisioned concurrency is set), of the mode's function
            text = sub_text(leaf)
            assert (
                "/${GatewayFunctionAliaslive}/" in text or "/${ManagedGatewayFunctionAliaslive}/" in text
            ), path


def test_streaming_mode_uses_response_stream_integration(template: dict[str, Any]) -> None:
    paths = only(template, "AWS::Serverless::Api")["Properties"]["DefinitionBody"]["paths"]
    for path, item in paths.items():
        integration = item["x-amazon-apigateway-any-method"]["x-amazon-apigateway-integration"]
        streaming, buffered = if_branches(integration["responseTransferMode"])
        assert (streaming, buffered) == ("STREAM", "BUFFERED"), path

        streams, buffered_uri = if_branches(integration["uri"])
        for stream_uri in (sub_text(leaf) for leaf in leaves(streams)):  # on demand, managed instances
            assert STREAM_URI_MARK in stream_uri and stream_uri.endswith(STREAM_URI_SUFFIX), path
        buffered_uri = sub_text(buffered_uri)
        assert "/2015-03-31/functions/" in buffered_uri and buffered_uri.endswith("/invocations"), path

        stream_timeout, buffered_timeout = if_branches(integration["timeoutInMillis"])
        assert stream_timeout == 900000, path
        assert buffered_timeout <= 29000, path


def test_sam_api_events_use_the_literal_that_sam_understands(template: dict[str, Any]) -> None:
    # samtranslator only honours the literal RESPONSE_STREAM; STREAM or an intrinsic is dropped.
    for name, fn in resources_of(template, "AWS::Serverless::Function").items():
        for event_name, event in fn["Properties"].get("Events", {}).items():
            props = event.get("Properties", {})
            if event["Type"] == "Api" and "ResponseTransferMode" in props:
                assert props["ResponseTransferMode"] == "RESPONSE_STREAM", f"{name}.{event_name}"


def test_api_redeploys_when_the_mode_changes(template: dict[str, Any]) -> None:
    # The DefinitionBody's mode-dependent fields are !If, invisible to SAM's deployment hash.
    assert only(template, "AWS::Serverless::Api")["Properties"]["AlwaysDeploy"] is True


def test_api_gateway_may_invoke_the_function(template: dict[str, Any]) -> None:
    perm = only(template, "AWS::Lambda::Permission")["Properties"]
    assert perm["Action"] == "lambda:InvokeFunction"
    assert perm["Principal"] == "apigateway.amazonaws.com"
    # the alias API Gateway invokes, of the mode's function
    assert perm["FunctionName"] == {
        "Fn::If": [
            "IsManagedInstances",
            {"Ref": "ManagedGatewayFunctionAliaslive"},
            {"Ref": "GatewayFunctionAliaslive"},
        ]
    }
    assert "${GatewayApi}/${StageName}/" in sub_text(perm["SourceArn"])


def test_api_url_output_is_the_v1_base_url(template: dict[str, Any]) -> None:
    url = sub_text(template["Outputs"]["ApiUrl"]["Value"])
    assert url.startswith("https://${GatewayApi}.execute-api.${AWS::Region}.")
    assert url.endswith("/${StageName}/v1")
    assert template["Parameters"]["StageName"]["Default"] != "v1", "would give .../v1/v1"
    assert {"TableName", "RoutingParameterName"} <= set(template["Outputs"])


# --------------------------------------------------------------------------- Lambda --------


def test_function_runtime_and_architecture(template: dict[str, Any]) -> None:
    fn = template["Resources"]["GatewayFunction"]
    props = fn["Properties"]
    assert props["Runtime"] == "python3.13"
    assert props["Architectures"] == ["arm64"]
    assert props["CodeUri"].rstrip("/") == "functions/gateway"
    assert fn["Metadata"]["BuildMethod"] == "makefile"


def test_function_modes(template: dict[str, Any]) -> None:
    props = template["Resources"]["GatewayFunction"]["Properties"]
    assert if_branches(props["Handler"]) == ("run.sh", "handler.handler")

    layers = props["Layers"]
    assert {"Ref": "GatewayLayer"} in layers
    adapter = [layer for layer in layers if "Fn::If" in layer and layer["Fn::If"][0] == "IsStreaming"]
    assert len(adapter) == 1
    streaming, buffered = if_branches(adapter[0])
    arn = sub_text(streaming)
    assert f":{LWA_ACCOUNT}:layer:LambdaAdapterLayerArm64:" in arn
    assert int(arn.rsplit(":", 1)[1]) >= 30
    assert buffered == {"Ref": "AWS::NoValue"}

    env = props["Environment"]["Variables"]
    streaming_env = {
        "AWS_LAMBDA_EXEC_WRAPPER": "/opt/bootstrap",
        "AWS_LWA_INVOKE_MODE": "response_stream",
        "AWS_LWA_READINESS_CHECK_PATH": "/health",
        "PORT": "8080",
    }
    for key, value in streaming_env.items():
        assert if_branches(env[key]) == (value, {"Ref": "AWS::NoValue"}), key
    for key in ("SWITCHBOARD_ROUTING_PARAM", "SWITCHBOARD_TABLE"):
        assert key in env
    assert env["POWERTOOLS_SERVICE_NAME"] == {"Ref": "AWS::StackName"}  # the metrics' service dimension
    assert env["POWERTOOLS_METRICS_NAMESPACE"] == "Switchboard"


def test_layer_targets_python313_arm64(template: dict[str, Any]) -> None:
    layer = template["Resources"]["GatewayLayer"]
    assert layer["Type"] == "AWS::Serverless::LayerVersion"
    assert layer["Properties"]["CompatibleRuntimes"] == ["python3.13"]
    assert layer["Properties"]["CompatibleArchitectures"] == ["arm64"]
    assert layer["Properties"]["ContentUri"].rstrip("/") == "layers"
    assert layer["Metadata"] == {"BuildMethod": "makefile", "BuildArchitecture": "arm64"}


def test_tracing_layer_is_attached_only_when_tracing_is_on(template: dict[str, Any]) -> None:
    # The default deployment carries no X-Ray SDK; EnableTracing=true adds the TracingLayer.
    layer = template["Resources"]["TracingLayer"]
    assert layer["Type"] == "AWS::Serverless::LayerVersion"
    assert layer["Condition"] == "TracingEnabled"
    gateway = template["Resources"]["GatewayLayer"]
    for key in ("CompatibleRuntimes", "CompatibleArchitectures", "ContentUri"):
        assert layer["Properties"][key] == gateway["Properties"][key], key
    assert layer["Metadata"] == gateway["Metadata"]

    uses = {
        name: [layer for layer in fn["Properties"].get("Layers", []) if "TracingLayer" in json.dumps(layer)]
        for name, fn in resources_of(template, "AWS::Serverless::Function").items()
    }
    for gateway in ("GatewayFunction", "ManagedGatewayFunction"):
        assert uses.pop(gateway) == [
            {"Fn::If": ["TracingEnabled", {"Ref": "TracingLayer"}, {"Ref": "AWS::NoValue"}]}
        ]
    # The sweeper never turns tracing on (no SWITCHBOARD_TRACING, no active tracing).
    assert not any(uses.values()), uses
    sweeper = template["Resources"]["SweeperFunction"]["Properties"]
    assert sweeper["Layers"] == [{"Ref": "GatewayLayer"}]
    assert "SWITCHBOARD_TRACING" not in sweeper["Environment"]["Variables"]


def test_run_sh_is_an_executable_uvicorn_launcher() -> None:
    run_sh = ROOT / "functions" / "gateway" / "run.sh"
    text = run_sh.read_text(encoding="utf-8")
    assert text.startswith("#!/bin/bash\n")
    assert "\r" not in text
    assert os.stat(run_sh).st_mode & stat.S_IXUSR
    assert "exec python -m uvicorn" in text and "app:app" in text
    assert "/opt/python" in text


def test_build_makefiles_have_the_targets_sam_calls(template: dict[str, Any]) -> None:
    for name, res in template["Resources"].items():
        if res.get("Metadata", {}).get("BuildMethod") != "makefile":
            continue
        props = res["Properties"]
        src = ROOT / (props.get("CodeUri") or props["ContentUri"])
        assert f"build-{name}:" in (src / "Makefile").read_text(encoding="utf-8"), name


# ------------------------------------------------------------------------- DynamoDB --------


def test_table_schema(template: dict[str, Any]) -> None:
    table = template["Resources"]["SwitchboardTable"]
    assert table["Type"] == "AWS::DynamoDB::Table"
    props = table["Properties"]
    assert props["BillingMode"] == "PAY_PER_REQUEST"
    assert props["KeySchema"] == [
        {"AttributeName": "pk", "KeyType": "HASH"},
        {"AttributeName": "sk", "KeyType": "RANGE"},
    ]
    assert props["TimeToLiveSpecification"] == {"AttributeName": "ttl", "Enabled": True}
    assert props["PointInTimeRecoverySpecification"] == {"PointInTimeRecoveryEnabled": True}
    (gsi,) = props["GlobalSecondaryIndexes"]
    assert gsi["IndexName"] == "gsi1"
    assert [k["AttributeName"] for k in gsi["KeySchema"]] == ["gsi1pk", "gsi1sk"]
    assert gsi["Projection"] == {"ProjectionType": "ALL"}
    defined = {a["AttributeName"]: a["AttributeType"] for a in props["AttributeDefinitions"]}
    assert defined == {"pk": "S", "sk": "S", "gsi1pk": "S", "gsi1sk": "S"}


def test_table_properties_are_plain_data(template: dict[str, Any]) -> None:
    # The local dev stack creates its table from these properties, without a CFN engine.
    props = template["Resources"]["SwitchboardTable"]["Properties"]
    for node in walk(props):
        if isinstance(node, dict):
            assert not any(k == "Ref" or k.startswith("Fn::") for k in node), node
    assert "TableName" not in props


# ----------------------------------------------------------------------- SSM / logs --------


def test_routing_parameter_seed_is_a_valid_empty_document(template: dict[str, Any]) -> None:
    param = template["Resources"]["RoutingParameter"]
    assert param["Type"] == "AWS::SSM::Parameter"
    props = param["Properties"]
    # the stack's own name unless the operator names it (tests/sam/test_stack_names.py)
    assert props["Name"]["Fn::If"][:2] == ["HasRoutingParameterName", {"Ref": "RoutingParameterName"}]
    assert props["Type"] == "String"
    assert json.loads(props["Value"]) == {"version": 1, "providers": {}, "models": {}}


def test_every_log_group_has_retention(template: dict[str, Any]) -> None:
    groups = resources_of(template, "AWS::Logs::LogGroup")
    assert groups
    for name, group in groups.items():
        assert group["Properties"].get("RetentionInDays"), name


def test_functions_log_to_their_retained_group(template: dict[str, Any]) -> None:
    groups = resources_of(template, "AWS::Logs::LogGroup")
    for name, fn in resources_of(template, "AWS::Serverless::Function").items():
        ref = fn["Properties"]["LoggingConfig"]["LogGroup"]
        assert ref.get("Ref") in groups, name


# --------------------------------------------------------------------------- IAM -----------


def test_iam_actions_are_explicit(template: dict[str, Any]) -> None:
    statements = list(policy_statements(template))
    assert statements
    for where, st in statements:
        for action in as_list(st.get("Action", [])):
            assert isinstance(action, str), (where, action)
            assert "*" not in action, (where, action)
        assert "NotAction" not in st, where
        # X-Ray's write actions have no resource-level permissions: '*' is the only form AWS accepts.
        if not all(str(a).startswith("xray:") for a in as_list(st.get("Action", []))):
            for resource in as_list(st.get("Resource", [])):
                assert resource != "*", where


def test_function_uses_the_least_privilege_role(template: dict[str, Any]) -> None:
    props = template["Resources"]["GatewayFunction"]["Properties"]
    assert props["Role"] == {"Fn::GetAtt": ["GatewayRole", "Arn"]}
    actions = {a for _, st in policy_statements(template) for a in as_list(st["Action"])}
    assert actions == {
        "logs:CreateLogStream",
        "logs:PutLogEvents",
        "ssm:GetParameter",
        "ssm:GetParameters",
        "kms:Decrypt",
        "secretsmanager:GetSecretValue",
        "dynamodb:GetItem",
        "dynamodb:BatchGetItem",
        "dynamodb:PutItem",
        "dynamodb:UpdateItem",
        "dynamodb:DeleteItem",
        "dynamodb:Query",
        "dynamodb:ConditionCheckItem",
        # only when the EnableBedrock parameter is on (a conditional policy)
        "bedrock:InvokeModel",
        "bedrock:InvokeModelWithResponseStream",
        # only when the EnableTracing parameter is on (a conditional policy)
        "xray:PutTraceSegments",
        "xray:PutTelemetryRecords",
    }


def test_kms_decrypt_only_through_ssm(template: dict[str, Any]) -> None:
    (kms,) = [st for _, st in policy_statements(template) if st["Action"] == "kms:Decrypt"]
    assert sub_text(kms["Condition"]["StringEquals"]["kms:ViaService"]) == "ssm.${AWS::Region}.amazonaws.com"


def test_bedrock_access_is_granted_only_when_enabled(template: dict[str, Any]) -> None:
    assert template["Parameters"]["EnableBedrock"]["Default"] == "false"
    policies = template["Resources"]["GatewayRole"]["Properties"]["Policies"]
    (conditional,) = [
        p for p in policies if isinstance(p, dict) and "Fn::If" in p and p["Fn::If"][0] == "BedrockEnabled"
    ]
    granted, otherwise = conditional["Fn::If"][1:]
    assert otherwise == {"Ref": "AWS::NoValue"}
    actions = {a for st in granted["PolicyDocument"]["Statement"] for a in as_list(st["Action"])}
    assert actions == {"bedrock:InvokeModel", "bedrock:InvokeModelWithResponseStream"}


def test_the_sweeper_runs_on_a_schedule_with_its_own_narrow_role(template: dict[str, Any]) -> None:
    fn = template["Resources"]["SweeperFunction"]["Properties"]
    assert fn["Runtime"] == "python3.13" and fn["Architectures"] == ["arm64"]
    assert fn["Role"] == {"Fn::GetAtt": ["SweeperRole", "Arn"]}
    (event,) = fn["Events"].values()
    assert event["Type"] == "ScheduleV2"
    assert event["Properties"]["ScheduleExpression"].startswith("rate(")
    actions = {
        a
        for policy in template["Resources"]["SweeperRole"]["Properties"]["Policies"]
        for st in policy["PolicyDocument"]["Statement"]
        for a in as_list(st["Action"])
    }
    assert not any(a.startswith(("ssm:", "secretsmanager:", "kms:", "bedrock:")) for a in actions)


def test_no_role_names_transact_write_items(template: dict[str, Any]) -> None:
    """TransactWriteItems is not an IAM action (each item of a transaction is authorised by its own
    PutItem, UpdateItem, DeleteItem or ConditionCheckItem): naming it grants nothing."""
    actions = {a for _, st in policy_statements(template) for a in as_list(st["Action"])}
    assert "dynamodb:TransactWriteItems" not in actions
    assert "dynamodb:TransactGetItems" not in actions


_WRITES = {"dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:DeleteItem", "dynamodb:ConditionCheckItem"}
_WRITES |= {
    "dynamodb:BatchWriteItem",
    "dynamodb:PartiQLInsert",
    "dynamodb:PartiQLUpdate",
    "dynamodb:PartiQLDelete",
}


def _write_patterns(template: dict[str, Any], role: str) -> list[list[str]]:
    """The ``dynamodb:LeadingKeys`` patterns of each statement of ``role`` that writes the table."""
    found = []
    for policy in _branches(template["Resources"][role]["Properties"]["Policies"]):
        for st in policy["PolicyDocument"]["Statement"]:
            if not set(as_list(st["Action"])) & _WRITES:
                continue
            assert st["Effect"] == "Allow"
            condition = st.get("Condition", {})
            assert list(condition) == ["ForAllValues:StringLike"], (role, st)
            found.append(as_list(condition["ForAllValues:StringLike"]["dynamodb:LeadingKeys"]))
    return found


def _written_and_protected_keys() -> tuple[dict[str, str], dict[str, str]]:
    """Partition keys as the code makes them: those the gateway writes, and those only the CLI may."""
    from switchboard.limits.table import budget_key, key_item_key, limit_item_key, rate_key, resv_key
    from switchboard.routing.copy import copy_key

    written = {
        "budget": budget_key("key", "key_1", "2026-12")["pk"]["S"],
        "rate": rate_key("key", "key_1", 123)["pk"]["S"],
        "reservation": resv_key("req_1")["pk"]["S"],
        "spend": "spend#2026-12#0",  # switchboard.billing.spendledger's line partition
        "routing copy": copy_key("/switchboard/routing")["pk"]["S"],  # switchboard.routing.copy
    }
    protected = {"key": key_item_key("ab" * 32)["pk"]["S"], "limit": limit_item_key("team", "t1")["pk"]["S"]}
    return written, protected


@pytest.mark.parametrize(
    ("role", "writes"),
    [
        ("GatewayRole", {"budget", "rate", "reservation", "spend", "routing copy"}),
        ("SweeperRole", {"budget", "rate", "reservation"}),
    ],
)
def test_roles_write_only_counter_items_never_keys_or_limits(
    template: dict[str, Any], role: str, writes: set[str]
) -> None:
    """Every table write of a runtime role is limited by dynamodb:LeadingKeys to the items serving
    changes; a key or a limit definition (written by the CLI, with the operator's credentials)
    matches none of the patterns, so a compromised function cannot mint a key or lift a limit."""
    from fnmatch import fnmatchcase

    statements = _write_patterns(template, role)
    assert statements, role
    written, protected = _written_and_protected_keys()
    for patterns in statements:
        for name, pk in protected.items():
            assert not any(fnmatchcase(pk, pattern) for pattern in patterns), (role, name, patterns)
        for name in writes:
            assert any(fnmatchcase(written[name], pattern) for pattern in patterns), (role, name, patterns)


def test_gateway_role_still_reads_keys_and_limits(template: dict[str, Any]) -> None:
    reads = [
        st
        for policy in template["Resources"]["GatewayRole"]["Properties"]["Policies"]
        if isinstance(policy, dict) and policy.get("PolicyName") == "table"
        for st in policy["PolicyDocument"]["Statement"]
        if "dynamodb:GetItem" in as_list(st["Action"])
    ]
    assert len(reads) == 1 and "Condition" not in reads[0]
    assert set(as_list(reads[0]["Action"])) == {"dynamodb:GetItem", "dynamodb:BatchGetItem", "dynamodb:Query"}


# --------------------------------------------------------------------------- API stage -----


def test_api_stage_is_throttled_by_parameters_with_sane_defaults(template: dict[str, Any]) -> None:
    api = template["Resources"]["GatewayApi"]["Properties"]
    (setting,) = api["MethodSettings"]
    assert (setting["ResourcePath"], setting["HttpMethod"]) == ("/*", "*")
    rate = template["Parameters"][setting["ThrottlingRateLimit"]["Ref"]]
    burst = template["Parameters"][setting["ThrottlingBurstLimit"]["Ref"]]
    assert rate["Type"] == burst["Type"] == "Number"
    assert 0 < rate["Default"] <= burst["Default"] <= 10_000  # the account's default stage quota
    assert rate["MinValue"] >= 1 and burst["MinValue"] >= 1
    # execution logs would write request headers and bodies (keys, prompts): off
    assert setting["LoggingLevel"] == "OFF" and setting["DataTraceEnabled"] is False


def test_api_access_log_is_json_with_retention_and_no_credentials(template: dict[str, Any]) -> None:
    access = template["Resources"]["GatewayApi"]["Properties"]["AccessLogSetting"]
    group_name = access["DestinationArn"]["Fn::GetAtt"][0]
    group = template["Resources"][group_name]
    assert group["Type"] == "AWS::Logs::LogGroup" and group["Properties"]["RetentionInDays"]
    line = json.loads(access["Format"])  # one JSON object per request
    assert {"requestId", "status", "ip", "httpMethod", "path", "responseLatency"} <= set(line)
    text = access["Format"].lower()
    for forbidden in (
        "authorization",
        "api-key",
        "apikey",
        "x-api-key",
        "$input",
        "request.header",
        "$context.authorizer",
    ):
        assert forbidden not in text, forbidden
    assert all(value.startswith("$context.") for value in line.values())


def test_access_logging_has_the_account_role_before_the_stage(template: dict[str, Any]) -> None:
    """REST API logging needs the account-wide API Gateway CloudWatch role; the stack sets it unless
    the operator says one exists, and the log group the stage writes to is ordered after it."""
    assert template["Parameters"]["CreateApiGatewayAccountRole"]["Default"] == "true"
    account = template["Resources"]["ApiGatewayAccount"]
    assert account["Condition"] == "MakeApiGatewayAccountRole"
    role = template["Resources"]["ApiGatewayCloudWatchRole"]
    assert account["Properties"]["CloudWatchRoleArn"] == {"Fn::GetAtt": ["ApiGatewayCloudWatchRole", "Arn"]}
    assert role["Condition"] == "MakeApiGatewayAccountRole"
    group = template["Resources"]["ApiAccessLogGroup"]
    refs = [node.get("Ref") for node in walk(group) if isinstance(node, dict)]
    assert "ApiGatewayAccount" in refs


def test_every_checkov_skip_says_why(template: dict[str, Any]) -> None:
    """`make audit` runs checkov; a finding is fixed, or skipped here with its reason."""
    skips = [
        (name, skip)
        for name, res in template["Resources"].items()
        for skip in res.get("Metadata", {}).get("checkov", {}).get("skip", [])
    ]
    assert skips
    for name, skip in skips:
        assert str(skip["id"]).startswith("CKV_"), (name, skip)
        assert len(str(skip.get("comment", ""))) > 40, (name, skip)


def test_the_app_knows_the_function_timeout_of_each_mode(template: dict[str, Any]) -> None:
    """The app derives its request bound from the timeout (switchboard.settings): both read the
    same mapping entry, and the buffered timeout is API Gateway's 29 s integration limit."""
    props = template["Resources"]["GatewayFunction"]["Properties"]
    lookup = props["Timeout"]
    assert lookup == {"Fn::FindInMap": ["ModeTimeouts", {"Ref": "DeploymentMode"}, "FunctionSeconds"]}
    assert props["Environment"]["Variables"]["SWITCHBOARD_FUNCTION_TIMEOUT_S"] == lookup
    modes = template["Mappings"]["ModeTimeouts"]
    assert set(modes) == set(template["Parameters"]["DeploymentMode"]["AllowedValues"])
    assert int(modes["buffered"]["FunctionSeconds"]) <= 29
    assert int(modes["streaming"]["FunctionSeconds"]) == 900


def test_routing_parameter_defaults_to_standard_and_the_gateway_reads_its_parts(
    template: dict[str, Any],
) -> None:
    """A document of any size fits Standard parameters (switchboard.routing.parts); the gateway
    reads the parts of a split one, and nothing else under the parameter's path."""
    import json

    assert template["Parameters"]["RoutingParameterTier"]["Default"] == "Standard"
    config = [
        st
        for policy in template["Resources"]["GatewayRole"]["Properties"]["Policies"]
        if isinstance(policy, dict) and policy.get("PolicyName") == "config"
        for st in policy["PolicyDocument"]["Statement"]
        if "ssm:GetParameters" in as_list(st["Action"])
    ]
    assert len(config) == 1
    resources = json.dumps(config[0]["Resource"])
    assert "parameter${RoutingParameter}/part-*" in resources
    assert "parameter${RoutingParameter}/*" not in resources
