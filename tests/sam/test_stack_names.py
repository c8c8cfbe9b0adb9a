"""Two stacks of template.yaml side by side in one account and region (a dev and a prod) share no
name: every name that must be unique there is derived from the stack name, and neither stack's
role may read the other's routing document or provider keys (issue 14, "Names scoped by stack")."""

from __future__ import annotations

from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

import pytest
from switchboard.devtools.cfn import load_template, loads_template

from tests.sam.stackrender import physical_names, render

TEMPLATE = Path(__file__).resolve().parents[2] / "template.yaml"
DEV, PROD = "sb-dev", "sb-prod"
# The account's API Gateway logging role is one per account and region: the first stack sets it,
# the second is deployed with CreateApiGatewayAccountRole=false (docs/deploy.md).
SECOND = {"CreateApiGatewayAccountRole": "false"}


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    return load_template(TEMPLATE)


def _collisions(template: dict[str, Any]) -> set[str]:
    dev = physical_names(render(template, DEV))
    second = {k: v for k, v in SECOND.items() if k in template.get("Parameters", {})}
    prod = physical_names(render(template, PROD, second))
    same = set(dev) & set(prod)
    # A grant is a pattern: one that matches the other stack's names is a collision too.
    grants = [n.removeprefix("grant:") for n in dev if n.startswith("grant:")]
    others = [n.removeprefix("grant:") for n in prod if n.startswith("grant:")]
    same |= {f"grant:{a} ~ {b}" for a in grants for b in others if fnmatchcase(b, a) or fnmatchcase(a, b)}
    return same


def test_two_stacks_share_no_name(template: dict[str, Any]) -> None:
    assert _collisions(template) == set()


def test_every_name_is_derived_from_the_stack_name(template: dict[str, Any]) -> None:
    for stack, params in ((DEV, {}), (PROD, SECOND)):
        names = physical_names(render(template, stack, params))
        assert any(n.startswith("schedule:") for n in names)
        assert any(n.startswith("AWS::SSM::Parameter:") for n in names)
        assert sum(n.startswith("grant:") for n in names) >= 3  # routing, SSM keys, Secrets Manager keys
        hard_coded = {
            name: where
            for name, where in names.items()
            if stack not in name and "(one per account" not in name
        }
        assert hard_coded == {}, f"names not derived from the stack name {stack!r}"


def test_the_one_account_singleton_is_optional(template: dict[str, Any]) -> None:
    """AWS::ApiGateway::Account cannot be scoped: the second stack leaves it out."""
    dev = physical_names(render(template, DEV))
    prod = physical_names(render(template, PROD, SECOND))
    assert any("AWS::ApiGateway::Account" in n for n in dev)
    assert not any("AWS::ApiGateway::Account" in n for n in prod)


def test_the_gateway_reads_the_names_of_its_own_stack(template: dict[str, Any]) -> None:
    rendered = render(template, DEV)
    env = rendered.resources["GatewayFunction"]["Properties"]["Environment"]["Variables"]
    routing = rendered.resources["RoutingParameter"]["Properties"]["Name"]
    assert env["SWITCHBOARD_ROUTING_PARAM"] == routing == f"/switchboard/{DEV}/routing"
    assert rendered.outputs["RoutingParameterName"] == routing
    assert rendered.outputs["SsmSecretsPrefix"] == f"/switchboard/{DEV}/secrets/"
    assert rendered.outputs["SecretsManagerPrefix"] == f"switchboard/{DEV}/"
    grants = [n for n in physical_names(rendered) if n.startswith("grant:")]
    assert any(g.endswith(f":parameter/switchboard/{DEV}/routing") for g in grants)
    assert any(g.endswith(f":parameter/switchboard/{DEV}/secrets/*") for g in grants)
    assert any(g.endswith(f":secret:switchboard/{DEV}/*") for g in grants)


def test_a_stack_deployed_before_keeps_its_names_by_parameter(template: dict[str, Any]) -> None:
    """An existing stack keeps its routing document and keys by naming the old layout."""
    old = {"RoutingParameterName": "/switchboard/routing", "SecretsPath": "switchboard"}
    rendered = render(template, "switchboard", old)
    assert rendered.resources["RoutingParameter"]["Properties"]["Name"] == "/switchboard/routing"
    grants = [n for n in physical_names(rendered) if n.startswith("grant:")]
    assert any(g.endswith(":parameter/switchboard/secrets/*") for g in grants)
    assert any(g.endswith(":secret:switchboard/*") for g in grants)


# ------------------------------------------------------------ the check can fail -----------

UNSCOPED = """
Parameters:
  RoutingParameterName: {Type: String, Default: /switchboard/routing}
Resources:
  Fn:
    Type: AWS::Serverless::Function
    Properties:
      Events:
        Every:
          Type: ScheduleV2
          Properties: {ScheduleExpression: rate(5 minutes)}
  Param:
    Type: AWS::SSM::Parameter
    Properties: {Name: !Ref RoutingParameterName, Type: String, Value: x}
  Role:
    Type: AWS::IAM::Role
    Properties:
      Policies:
        - PolicyName: config
          PolicyDocument:
            Statement:
              - Effect: Allow
                Action: ssm:GetParameter
                Resource: !Sub arn:aws:ssm:${AWS::Region}:${AWS::AccountId}:parameter/switchboard/secrets/*
  Group:
    Type: AWS::Logs::LogGroup
    Properties: {LogGroupName: !Sub '/aws/lambda/${AWS::StackName}-gateway'}
"""


def test_the_check_finds_the_collisions_of_an_unscoped_template() -> None:
    template = loads_template(UNSCOPED)
    assert _collisions(template) == {
        "schedule:FnEvery",
        "AWS::SSM::Parameter:/switchboard/routing",
        "grant:arn:aws:ssm:us-east-1:123456789012:parameter/switchboard/secrets/*",
        "grant:arn:aws:ssm:us-east-1:123456789012:parameter/switchboard/secrets/* ~ "
        "arn:aws:ssm:us-east-1:123456789012:parameter/switchboard/secrets/*",
    }


def _alarm_metrics(template: dict[str, Any], stack: str, params: dict[str, str]) -> set[str]:
    """(namespace, metric, dimensions) of every alarm on the gateway's own metrics."""
    rendered = render(template, stack, params)
    found = set()
    for res in rendered.resources.values():
        props = res["Properties"]
        if res["Type"] == "AWS::CloudWatch::Alarm" and props["Namespace"] == "Switchboard":
            dims = ",".join(f"{d['Name']}={d['Value']}" for d in props["Dimensions"])
            found.add(f"{props['Namespace']}/{props['MetricName']}/{dims}")
    return found


def test_two_stacks_alarm_on_their_own_metrics(template: dict[str, Any]) -> None:
    """The metrics' service dimension is the stack's (POWERTOOLS_SERVICE_NAME, which the cost
    events and Powertools' metrics both use): a dev stack's errors never fire the prod alarms."""
    dev = _alarm_metrics(template, DEV, {})
    prod = _alarm_metrics(template, PROD, SECOND)
    assert dev and prod and dev.isdisjoint(prod)
    env = render(template, DEV).resources["GatewayFunction"]["Properties"]["Environment"]["Variables"]
    assert env["POWERTOOLS_SERVICE_NAME"] == DEV
    dashboard = render(template, DEV).resources["GatewayDashboard"]["Properties"]["DashboardBody"]
    assert '"service", "switchboard"' not in dashboard
    assert dashboard.count("SEARCH(") == dashboard.count(f'service=\\"{DEV}\\"')
