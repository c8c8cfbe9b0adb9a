"""DeploymentMode=managed-instances: the gateway on Lambda Managed Instances (docs/performance.md).

SAM takes a function's CapacityProviderConfig only as a literal, so this mode is a second,
conditional function. These tests render the template per mode (tests/sam/stackrender.py) and
check that the second function stays the first one apart from its capacity settings, and that
everything that names the gateway function names the mode's one.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from switchboard.devtools.cfn import load_template

from tests.sam.stackrender import physical_names, render

TEMPLATE = Path(__file__).resolve().parents[2] / "template.yaml"
MANAGED = {
    "DeploymentMode": "managed-instances",
    "CapacityProviderSubnetIds": "subnet-1,subnet-2",
    "CapacityProviderSecurityGroupIds": "sg-1",
}
# What only the managed function has or lacks; everything else must match GatewayFunction.
CAPACITY_ONLY = {"Description", "MemorySize", "ReservedConcurrentExecutions", "ProvisionedConcurrencyConfig"}
CAPACITY_ONLY |= {"CapacityProviderConfig"}


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    return load_template(TEMPLATE)


def test_the_managed_function_is_the_streaming_gateway_on_a_capacity_provider(
    template: dict[str, Any],
) -> None:
    streaming = render(template, "sb", {"DeploymentMode": "streaming"}).resources["GatewayFunction"]
    managed_stack = render(template, "sb", MANAGED)
    managed = managed_stack.resources["ManagedGatewayFunction"]
    on_demand, on_instances = streaming["Properties"], managed["Properties"]
    env, managed_env = on_demand.pop("Environment"), on_instances.pop("Environment")
    assert managed_env["Variables"].pop("SWITCHBOARD_DEPLOYMENT_MODE") == "managed-instances"
    assert env["Variables"].pop("SWITCHBOARD_DEPLOYMENT_MODE") == "streaming"
    assert managed_env == env  # a variable added to one function must be added to the other
    for key in CAPACITY_ONLY:
        on_demand.pop(key, None)
        on_instances.pop(key, None)
    assert on_instances == on_demand
    raw = template["Resources"]["ManagedGatewayFunction"]["Properties"]
    assert raw["CapacityProviderConfig"]["Arn"] == {"Fn::GetAtt": ["GatewayCapacityProvider", "Arn"]}
    assert raw["AutoPublishAlias"] == "live"  # LMI invokes published versions only
    provider = managed_stack.resources["GatewayCapacityProvider"]["Properties"]
    assert provider["VpcConfig"]["SubnetIds"] == "subnet-1,subnet-2"
    assert provider["InstanceRequirements"]["Architectures"] == ["arm64"]


@pytest.mark.parametrize("mode", ["streaming", "buffered", "managed-instances"])
def test_every_reference_names_the_function_of_the_mode(template: dict[str, Any], mode: str) -> None:
    params = MANAGED if mode == "managed-instances" else {"DeploymentMode": mode}
    rendered = render(template, "sb", params)
    gateway, other = (
        ("ManagedGatewayFunction", "GatewayFunction")
        if mode == "managed-instances"
        else ("GatewayFunction", "ManagedGatewayFunction")
    )
    assert gateway in rendered.resources and other not in rendered.resources
    assert ("GatewayCapacityProvider" in rendered.resources) == (mode == "managed-instances")
    name = f"sb-{gateway}-GENERATED"
    api = rendered.resources["GatewayApi"]["Properties"]["DefinitionBody"]["paths"]
    for item in api.values():
        integration = item["x-amazon-apigateway-any-method"]["x-amazon-apigateway-integration"]
        assert f":function:{name}:live/" in integration["uri"]
        assert integration["responseTransferMode"] == ("BUFFERED" if mode == "buffered" else "STREAM")
    assert rendered.resources["GatewayInvokePermission"]["Properties"]["FunctionName"].endswith(
        f"{name}:live"
    )
    (dimension,) = rendered.resources["LambdaThrottleAlarm"]["Properties"]["Dimensions"]
    assert dimension["Value"] == name
    dashboard = json.loads(rendered.resources["GatewayDashboard"]["Properties"]["DashboardBody"])
    assert name in json.dumps(dashboard) and f"sb-{other}-GENERATED" not in json.dumps(dashboard)
    assert rendered.outputs["GatewayFunctionName"] == name


def test_two_managed_instances_stacks_share_no_name(template: dict[str, Any]) -> None:
    dev = physical_names(render(template, "sb-dev", MANAGED))
    prod = physical_names(render(template, "sb-prod", {**MANAGED, "CreateApiGatewayAccountRole": "false"}))
    assert "AWS::Serverless::CapacityProvider:sb-dev-gateway" in dev
    assert set(dev) & set(prod) == set()
