"""Render template.yaml for one stack name, as CloudFormation would, far enough to read its names.

A small resolver of the intrinsic functions the template uses (``Ref``, ``Fn::Sub``, ``Fn::If``,
``Fn::FindInMap``, ``Fn::GetAtt``, ``Fn::Join``, ``Fn::Select`` and the condition functions), with
parameters taken from their defaults unless given. A resource CloudFormation names itself (no name
property) gets a name that starts with the stack name, as CloudFormation's generated names do.

``physical_names`` then lists every name that must be unique in an account and region: the name
properties of the resources (``Name``, ``RoleName``, ``LogGroupName``, ``AlarmName``...), the
names SAM gives what it generates (a ``ScheduleV2`` event's schedule is named
``<Function><Event>`` unless it has a ``Name``), account-wide singletons, and the SSM parameter and
Secrets Manager ARNs the policies grant (a stack that may read another's keys collides with it too).
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["NO_VALUE", "Rendered", "physical_names", "render"]

NO_VALUE = object()  # AWS::NoValue: the property or list item disappears
REGION = "us-east-1"
ACCOUNT = "123456789012"

# The properties that name a resource, per type (a name CloudFormation would otherwise generate).
NAME_PROPERTIES: dict[str, tuple[str, ...]] = {
    "AWS::Serverless::Api": ("Name",),
    "AWS::ApiGateway::RestApi": ("Name",),
    "AWS::Serverless::Function": ("FunctionName",),
    "AWS::Serverless::CapacityProvider": ("CapacityProviderName",),
    "AWS::Lambda::Function": ("FunctionName",),
    "AWS::Serverless::LayerVersion": ("LayerName",),
    "AWS::Lambda::LayerVersion": ("LayerName",),
    "AWS::Logs::LogGroup": ("LogGroupName",),
    "AWS::IAM::Role": ("RoleName",),
    "AWS::IAM::ManagedPolicy": ("ManagedPolicyName",),
    "AWS::SSM::Parameter": ("Name",),
    "AWS::CloudWatch::Alarm": ("AlarmName",),
    "AWS::CloudWatch::Dashboard": ("DashboardName",),
    "AWS::DynamoDB::Table": ("TableName",),
    "AWS::SNS::Topic": ("TopicName",),
    "AWS::SQS::Queue": ("QueueName",),
    "AWS::Scheduler::Schedule": ("Name",),
    "AWS::Events::Rule": ("Name",),
    "AWS::SecretsManager::Secret": ("Name",),
}
# One per account and region, whatever it is called.
SINGLETONS = ("AWS::ApiGateway::Account",)
# Resource types that hold no account-wide name (their names, if any, are scoped to a parent).
UNNAMED = {
    "AWS::Lambda::Permission",
    "AWS::ApiGateway::Account",
}


@dataclass
class Rendered:
    stack: str
    parameters: dict[str, Any]
    conditions: dict[str, bool]
    resources: dict[str, dict[str, Any]] = field(default_factory=dict)  # only those that exist
    outputs: dict[str, Any] = field(default_factory=dict)


class _Resolver:
    def __init__(self, template: Mapping[str, Any], stack: str, parameters: Mapping[str, Any]) -> None:
        self.template = template
        self.stack = stack
        declared = template.get("Parameters", {})
        unknown = set(parameters) - set(declared)
        if unknown:
            raise KeyError(f"not parameters of the template: {sorted(unknown)}")
        self.params: dict[str, Any] = {name: str(spec.get("Default", "")) for name, spec in declared.items()}
        self.params.update({name: str(value) for name, value in parameters.items()})
        self.pseudo = {
            "AWS::StackName": stack,
            "AWS::Region": REGION,
            "AWS::AccountId": ACCOUNT,
            "AWS::Partition": "aws",
            "AWS::URLSuffix": "amazonaws.com",
            "AWS::StackId": f"arn:aws:cloudformation:{REGION}:{ACCOUNT}:stack/{stack}/0",
        }
        self.conditions: dict[str, bool] = {}
        for name in template.get("Conditions", {}):
            self.condition(name)

    # ---------------------------------------------------------------- conditions
    def condition(self, name: str) -> bool:
        if name not in self.conditions:
            self.conditions[name] = bool(self.value(self.template["Conditions"][name]))
        return self.conditions[name]

    # ---------------------------------------------------------------- references
    def ref(self, name: str) -> Any:
        if name == "AWS::NoValue":
            return NO_VALUE
        if name in self.pseudo:
            return self.pseudo[name]
        if name in self.params:
            return self.params[name]
        logical, _, attribute = name.partition(".")  # SAM's Function.Alias / Function.Version
        if logical not in self.template["Resources"]:
            return self.sam_alias(logical)
        resource = self.template["Resources"][logical]
        physical = self.physical_id(logical, resource)
        if attribute == "Alias":
            alias = resource["Properties"]["AutoPublishAlias"]
            return f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:{physical}:{alias}"
        if attribute:
            return f"{physical}.{attribute}"
        return physical

    def sam_alias(self, logical: str) -> str:
        """The alias SAM generates for ``AutoPublishAlias``, ``<Function>Alias<alias>``."""
        for function, resource in self.template["Resources"].items():
            alias = resource.get("Properties", {}).get("AutoPublishAlias")
            if alias and logical == f"{function}Alias{alias}":
                physical = self.physical_id(function, resource)
                return f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:{physical}:{alias}"
        raise KeyError(f"no resource {logical}")

    def physical_id(self, logical: str, resource: Mapping[str, Any]) -> str:
        """What ``Ref`` gives for a resource: its name property when it has one, else a name that
        CloudFormation generates from the stack name and the logical id."""
        for prop in NAME_PROPERTIES.get(resource["Type"], ()):
            raw = resource.get("Properties", {}).get(prop)
            if raw is not None:
                value = self.value(raw)
                if value is not NO_VALUE:
                    return str(value)
        return f"{self.stack}-{logical}-GENERATED"

    def get_att(self, logical: str, attribute: str) -> str:
        resource = self.template["Resources"][logical]
        return f"arn:aws:generated:{REGION}:{ACCOUNT}:{self.physical_id(logical, resource)}/{attribute}"

    # ---------------------------------------------------------------- values
    def value(self, node: Any) -> Any:
        if isinstance(node, list):
            items = [self.value(item) for item in node]
            return [item for item in items if item is not NO_VALUE]
        if not isinstance(node, dict):
            return node
        if len(node) == 1:
            ((key, arg),) = node.items()
            if key == "Ref":
                return self.ref(arg)
            if key == "Condition":
                return self.condition(arg)
            if key.startswith("Fn::"):
                return self.function(key[4:], arg)
        out = {k: self.value(v) for k, v in node.items()}
        return {k: v for k, v in out.items() if v is not NO_VALUE}

    def function(self, name: str, arg: Any) -> Any:
        if name == "If":
            cond, when_true, when_false = arg
            return self.value(when_true if self.condition(cond) else when_false)
        if name == "Equals":
            left, right = (self.value(a) for a in arg)
            return str(left) == str(right)
        if name == "Not":
            return not self.value(arg[0])
        if name == "And":
            return all(self.value(a) for a in arg)
        if name == "Or":
            return any(self.value(a) for a in arg)
        if name == "FindInMap":
            mapping, top, second = (self.value(a) for a in arg)
            return self.template["Mappings"][mapping][top][second]
        if name == "GetAtt":
            logical, attribute = arg if isinstance(arg, list) else arg.split(".", 1)
            return self.get_att(logical, attribute)
        if name == "Join":
            sep, items = arg
            return str(sep).join(str(i) for i in self.value(items))
        if name == "Select":
            index, items = arg
            return self.value(items)[int(self.value(index))]
        if name == "Sub":
            return self.sub(arg)
        if name in ("Base64", "ToJsonString"):
            return self.value(arg)
        raise NotImplementedError(f"Fn::{name}")

    def sub(self, arg: Any) -> str:
        text, variables = (arg, {}) if isinstance(arg, str) else (arg[0], arg[1])
        local = {k: self.value(v) for k, v in variables.items()}

        def one(match: re.Match[str]) -> str:
            inner = match.group(1)
            if inner.startswith("!"):
                return "${" + inner[1:] + "}"
            if inner in local:
                return str(local[inner])
            logical, _, attribute = inner.partition(".")
            if attribute and logical in self.template["Resources"] and attribute not in ("Alias", "Version"):
                return self.get_att(logical, attribute)
            return str(self.ref(inner))

        return re.sub(r"\$\{([^}]+)\}", one, text)


def render(template: Mapping[str, Any], stack: str, parameters: Mapping[str, Any] | None = None) -> Rendered:
    """``template`` as stack ``stack`` with ``parameters`` (the rest at their defaults)."""
    resolver = _Resolver(template, stack, parameters or {})
    rendered = Rendered(stack, dict(resolver.params), dict(resolver.conditions))
    for logical, resource in template["Resources"].items():
        if "Condition" in resource and not resolver.condition(resource["Condition"]):
            continue
        rendered.resources[logical] = {
            "Type": resource["Type"],
            "Properties": resolver.value(resource.get("Properties", {})),
        }
    for name, output in template.get("Outputs", {}).items():
        if "Condition" in output and not resolver.condition(output["Condition"]):
            continue
        rendered.outputs[name] = resolver.value(output["Value"])
    return rendered


def _policy_resources(props: Mapping[str, Any]) -> Iterator[str]:
    for policy in props.get("Policies", []):
        if not isinstance(policy, dict) or "PolicyDocument" not in policy:
            continue
        for statement in policy["PolicyDocument"]["Statement"]:
            resources = statement.get("Resource", [])
            yield from resources if isinstance(resources, list) else [resources]


def physical_names(rendered: Rendered) -> dict[str, str]:
    """Every account-and-region-unique name of the rendered stack: name -> where it comes from."""
    names: dict[str, str] = {}
    for logical, resource in rendered.resources.items():
        kind, props = resource["Type"], resource["Properties"]
        for prop in NAME_PROPERTIES.get(kind, ()):
            if prop in props:
                names[f"{kind}:{props[prop]}"] = f"{logical}.{prop}"
        if kind in SINGLETONS:
            names[f"{kind}:(one per account and region)"] = logical
        if kind == "AWS::Serverless::Function":
            for event_id, event in (props.get("Events") or {}).items():
                if event["Type"] in ("ScheduleV2", "Schedule"):
                    # SAM's default when the event has no Name: the function's and the event's ids.
                    default = f"{logical}{event_id}"
                    names[f"schedule:{event['Properties'].get('Name', default)}"] = (
                        f"{logical}.Events.{event_id}"
                    )
        if kind == "AWS::IAM::Role":
            for arn in _policy_resources(props):
                if ":ssm:" in arn or ":secretsmanager:" in arn:
                    names[f"grant:{arn}"] = f"{logical}.Policies"
    return names
