"""``switchboard.cli.devenv``: which AWS a CLI command reaches, from its environment alone."""

from __future__ import annotations

import pytest
from switchboard.cli.devenv import apply, dev_requested

DUMMY = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_SESSION_TOKEN": "testing"}


@pytest.mark.parametrize(
    ("flag", "value", "expected"),
    [(True, "", True), (False, "1", True), (False, "yes", True), (False, "0", False), (False, "", False)],
)
def test_dev_is_the_flag_or_the_variable(flag: bool, value: str, expected: bool) -> None:
    assert dev_requested(flag, {"SWITCHBOARD_DEV": value}) is expected


def test_dev_uses_moto_port_dummy_credentials_and_the_stacks_region() -> None:
    env = {
        "MOTO_PORT": "5099",
        "AWS_PROFILE": "prod",
        "AWS_REGION": "eu-west-1",
        "AWS_ACCESS_KEY_ID": "AKIAREAL",
    }
    assert apply(True, env) == "http://127.0.0.1:5099"
    assert env["AWS_ENDPOINT_URL"] == "http://127.0.0.1:5099"
    assert {k: env[k] for k in DUMMY} == DUMMY  # never a real key against the local stack
    assert env["AWS_REGION"] == env["AWS_DEFAULT_REGION"] == "us-east-1"
    assert "AWS_PROFILE" not in env


def test_the_endpoint_variable_wins_in_dev_mode() -> None:
    env = {"AWS_ENDPOINT_URL": "http://localhost:4566", "MOTO_PORT": "5099"}
    assert apply(True, env) == "http://localhost:4566"


def test_outside_dev_a_loopback_endpoint_without_credentials_gets_dummy_ones() -> None:
    env = {"AWS_ENDPOINT_URL": "http://127.0.0.1:5055"}
    assert apply(False, env) == "http://127.0.0.1:5055"
    assert {k: env[k] for k in DUMMY} == DUMMY and env["AWS_REGION"] == "us-east-1"


@pytest.mark.parametrize(
    "env",
    [
        {"AWS_ENDPOINT_URL": "https://vpce-123.dynamodb.eu-west-1.vpce.amazonaws.com"},  # not loopback
        {"AWS_ENDPOINT_URL": "http://127.0.0.1:5055", "AWS_PROFILE": "local"},  # credentials of its own
        {"AWS_ENDPOINT_URL": "http://127.0.0.1:5055", "AWS_ACCESS_KEY_ID": "AKIA"},
        {},  # AWS itself
    ],
)
def test_otherwise_the_environment_is_left_alone(env: dict[str, str]) -> None:
    before = dict(env)
    apply(False, env)
    assert env == before
