"""The SSM simulation (switchboard.devtools.ssmsim): the numbers the issue asks of the copy, on a
virtual clock, and today's polling over SSM's quota from about 200 instances."""

from __future__ import annotations

import pytest
from switchboard.devtools import ssmsim


def test_at_1000_instances_the_copy_stays_under_the_quota_and_an_edit_reaches_everyone_in_a_minute() -> None:
    copy = ssmsim.simulate(1000, "copy", seconds=120)
    assert copy.ssm_calls_s <= 1 / ssmsim.MAX_AGE_S + 0.05  # one claim per max age, for the fleet
    assert copy.edit_s <= 60
    assert copy.table_reads_s == pytest.approx(1000 / (ssmsim.MAX_AGE_S + ssmsim.REQUEST_GAP_S), rel=0.05)


def test_todays_polling_meets_the_quota_and_the_copy_does_not() -> None:
    today = ssmsim.simulate(1000, "today", seconds=120)
    assert today.ssm_calls_s > ssmsim.SSM_RATE and today.throttled_s > 0
    small = ssmsim.simulate(100, "today", seconds=120)
    assert small.throttled_s == 0 and small.edit_s <= ssmsim.MAX_AGE_S + 1


def test_the_tool_prints_one_line_per_instance_count(capsys: pytest.CaptureFixture[str]) -> None:
    assert ssmsim.main(["--instances", "10,300", "--seconds", "90"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(":")[0] for line in lines[1:3]] == ["instances 10", "instances 300"]
    assert "today" in lines[2] and "copy 0.20 SSM calls/s" in lines[2]
    assert lines[-1].startswith("copy at 300 instances: 0.20 SSM calls/s (quota 40)")


def test_a_cold_start_storm_over_ssm_alone_is_refused_and_through_the_copy_served() -> None:
    assert ssmsim.cold_starts(1000, "today") < 0.75  # 100 cold starts/s against a 40/s quota
    assert ssmsim.cold_starts(1000, "copy") == 1.0
    assert ssmsim.cold_starts(100, "today") == 1.0
