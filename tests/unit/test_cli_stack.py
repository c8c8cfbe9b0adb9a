"""``switchboard --stack NAME``: the CLI manages the stack it names, reading the table and the
routing parameter from the stack's outputs (moto's CloudFormation over HTTP)."""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path

import boto3
import pytest
from switchboard.cli import main

EXAMPLE = Path(__file__).resolve().parents[2] / "infra" / "routing.example.json"

# The outputs of template.yaml the CLI reads, from a stack moto can create.
TEMPLATE = """
Resources:
  Routing:
    Type: AWS::SSM::Parameter
    Properties:
      Name: !Sub /switchboard/${AWS::StackName}/routing
      Type: String
      Value: '{"version":1,"providers":{},"models":{}}'
Outputs:
  TableName:
    Value: !Sub ${AWS::StackName}-SwitchboardTable-ABC123
  RoutingParameterName:
    Value: !Ref Routing
"""


def deploy(name: str) -> None:
    cfn = boto3.client("cloudformation", region_name="us-east-1")
    cfn.create_stack(StackName=name, TemplateBody=TEMPLATE)


def routing_of(name: str) -> dict[str, object]:
    value = boto3.client("ssm", region_name="us-east-1").get_parameter(Name=name)["Parameter"]["Value"]
    return dict(json.loads(value))


def test_push_goes_to_the_named_stack_only(
    aws: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    dev, prod = f"sb-dev-{uuid.uuid4().hex[:6]}", f"sb-prod-{uuid.uuid4().hex[:6]}"
    deploy(dev)
    deploy(prod)
    monkeypatch.setenv("SWITCHBOARD_ROUTING_PARAM", "/switchboard/routing")  # the stack's win
    monkeypatch.delenv("SWITCHBOARD_STACK", raising=False)
    monkeypatch.delenv("SWITCHBOARD_TABLE", raising=False)  # restored after: --stack sets it
    assert main(["routing", "push", str(EXAMPLE), "--yes", "--stack", dev]) == 0
    out = capsys.readouterr().out
    assert f"pushed to /switchboard/{dev}/routing" in out
    assert routing_of(f"/switchboard/{dev}/routing")["models"]
    assert routing_of(f"/switchboard/{prod}/routing")["models"] == {}  # the other stack's is untouched

    monkeypatch.setenv("SWITCHBOARD_STACK", prod)  # the environment's form
    assert main(["routing", "show"]) == 0
    assert json.loads(capsys.readouterr().out)["models"] == {}
    assert os.environ["SWITCHBOARD_TABLE"] == f"{prod}-SwitchboardTable-ABC123"


def test_an_unknown_stack_is_a_clear_error(aws: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["routing", "show", "--stack", "no-such-stack"]) == 1
    assert "stack no-such-stack" in capsys.readouterr().err
