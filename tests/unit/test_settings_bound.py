"""The request bound derived from the function's timeout (switchboard.settings, issue 14)."""

from __future__ import annotations

import pytest
from switchboard.core.settings import FUNCTION_ANSWER_MARGIN_S, Settings


@pytest.mark.parametrize(
    ("env", "bound"),
    [
        ({}, 600.0),  # not in Lambda: the default
        ({"SWITCHBOARD_FUNCTION_TIMEOUT_S": "29"}, 29 - FUNCTION_ANSWER_MARGIN_S),  # buffered
        ({"SWITCHBOARD_FUNCTION_TIMEOUT_S": "900"}, 600.0),  # streaming: the default is lower
        ({"SWITCHBOARD_FUNCTION_TIMEOUT_S": "29", "SWITCHBOARD_MAX_REQUEST_S": "10"}, 10.0),
        ({"SWITCHBOARD_FUNCTION_TIMEOUT_S": "29", "SWITCHBOARD_MAX_REQUEST_S": "60"}, 25.0),
        ({"SWITCHBOARD_FUNCTION_TIMEOUT_S": "5"}, 2.5),  # a short timeout keeps half for the answer
    ],
)
def test_max_request_s_sits_below_the_function_timeout(env: dict[str, str], bound: float) -> None:
    assert Settings.from_env(env).max_request_s == bound


def test_an_explicit_argument_is_bounded_too() -> None:
    assert Settings(max_request_s=600, function_timeout_s=29).max_request_s == 25.0
    assert (
        Settings.from_env({"SWITCHBOARD_FUNCTION_TIMEOUT_S": "29"}, max_request_s=100).max_request_s == 25.0
    )
