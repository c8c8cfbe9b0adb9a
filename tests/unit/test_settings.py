"""``core.settings``: what the gateway reads from its environment, and what it refuses."""

from __future__ import annotations

import pytest
from switchboard.core.settings import Settings


def test_defaults_without_an_environment() -> None:
    settings = Settings.from_env({})
    assert (settings.table, settings.max_request_s, settings.region) == ("switchboard", 600.0, "us-east-1")


def test_the_environment_is_read_and_typed_and_overrides_win_over_it() -> None:
    env = {
        "SWITCHBOARD_TABLE": "t1",
        "SWITCHBOARD_MAX_BODY_BYTES": "1024",
        "SWITCHBOARD_AWS_TIMEOUT_S": "0.5",
    }
    settings = Settings.from_env(env, table="t2")
    assert (settings.table, settings.max_body_bytes, settings.aws_timeout_s) == ("t2", 1024, 0.5)


def test_the_region_falls_back_to_aws_default_region() -> None:
    assert Settings.from_env({"AWS_DEFAULT_REGION": "eu-west-1"}).region == "eu-west-1"
    assert (
        Settings.from_env({"AWS_REGION": "us-west-2", "AWS_DEFAULT_REGION": "eu-west-1"}).region
        == "us-west-2"
    )


def test_a_value_of_the_wrong_type_names_its_variable() -> None:
    with pytest.raises(ValueError, match="SWITCHBOARD_MAX_REQUEST_S='soon' is not a valid float"):
        Settings.from_env({"SWITCHBOARD_MAX_REQUEST_S": "soon"})
