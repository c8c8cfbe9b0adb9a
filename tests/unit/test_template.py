"""The template's monitoring matches the code: alarms and dashboard read metrics the gateway emits,
every log group has a retention, tracing is off by default. (``make sam-validate`` lints the rest.)"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from switchboard.billing.costevents import METRICS
from switchboard.devtools.cfn import load_template

TEMPLATE = load_template(Path(__file__).resolve().parents[2] / "template.yaml")
RESOURCES: dict[str, Any] = TEMPLATE["Resources"]
# Emitted outside the cost event: routing edits (wiring.py), ledger failures (billing/spendledger.py)
# and the circuit breaker's state (routing/breaker.py).
EMITTED = set(METRICS) | {"RoutingDocumentRejected", "SpendLedgerWriteFailures", "BreakerState"}


def of_type(kind: str) -> dict[str, dict[str, Any]]:
    return {name: res for name, res in RESOURCES.items() if res["Type"] == kind}


def test_every_log_group_has_a_retention_and_every_function_logs_to_one() -> None:
    groups = of_type("AWS::Logs::LogGroup")
    assert groups and all("RetentionInDays" in g["Properties"] for g in groups.values())
    for function in of_type("AWS::Serverless::Function").values():
        assert function["Properties"]["LoggingConfig"]["LogGroup"]["Ref"] in groups


def test_alarms_watch_metrics_the_gateway_emits() -> None:
    alarms = of_type("AWS::CloudWatch::Alarm")
    watched = {a["Properties"]["MetricName"] for a in alarms.values()}
    assert {"Errors", "Fallbacks", "BudgetRejections", "GatewayOverhead", "Throttles"} <= watched
    for alarm in alarms.values():
        props = alarm["Properties"]
        assert props["TreatMissingData"] == "notBreaching" and "AlarmActions" in props
        if props["Namespace"] == "Switchboard":
            assert props["MetricName"] in EMITTED
            # the stack's name: the gateway's POWERTOOLS_SERVICE_NAME (tests/sam/test_stack_names.py)
            assert props["Dimensions"] == [{"Name": "service", "Value": {"Ref": "AWS::StackName"}}]


def test_dashboard_is_valid_json_and_reads_emitted_metrics() -> None:
    body = RESOURCES["GatewayDashboard"]["Properties"]["DashboardBody"]["Fn::Sub"]
    body = body if isinstance(body, str) else body[0]  # [text, {variables}] names the mode's function
    body = re.sub(r"\$\{OverheadP99ThresholdMs\}", "50", body)
    body = re.sub(r"\$\{[A-Za-z:]+\}", "x", body)
    widgets = json.loads(body)["widgets"]
    names: set[str] = set()
    for widget in widgets:
        for row in widget["properties"].get("metrics", []):
            assert isinstance(row, list), row  # CloudWatch wants an array per metric or expression
            if row[0] == "Switchboard":
                names.add(row[1])
            elif "expression" in row[0]:
                for found in re.findall(r'MetricName="(\w+)"|SUM\((\w+)\)', row[0]["expression"]):
                    names.update(found)
    names.discard("")
    assert {
        "CostUSD",
        "Requests",
        "Errors",
        "Fallbacks",
        "Latency",
        "GatewayOverhead",
        "TimeToFirstToken",
    } <= names
    assert names <= EMITTED, names - EMITTED
    titles = " ".join(w["properties"].get("title", "") for w in widgets)
    for topic in ("Cost per hour", "outcome", "fallback", "p99", "first token", "Throttles", "breaker"):
        assert topic in titles


def test_tracing_is_a_parameter_off_by_default() -> None:
    assert TEMPLATE["Parameters"]["EnableTracing"]["Default"] == "false"
    env = RESOURCES["GatewayFunction"]["Properties"]["Environment"]["Variables"]
    assert env["SWITCHBOARD_TRACING"] == {"Fn::If": ["TracingEnabled", "on", "off"]}
    assert TEMPLATE["Conditions"]["HasAlarmEmail"] and RESOURCES["AlarmTopic"]["Condition"] == "HasAlarmEmail"


def test_the_dev_stack_builds_the_templates_tables_and_hands_each_caller_its_own_copy() -> None:
    from switchboard.devtools.cfn import table_definitions
    from switchboard.devtools.devstack import stack_tables

    tables = stack_tables()
    assert tables == table_definitions(TEMPLATE) and tables
    for kwargs, _ in tables.values():
        kwargs["KeySchema"].clear()  # a caller's change stays its own (the parse is cached)
    assert stack_tables() == table_definitions(TEMPLATE)
