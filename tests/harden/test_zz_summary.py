"""The suite's verdict, run last: no secret in any output of the whole run, and every count that
must be zero is zero. ``conftest.py`` prints the same numbers after the results."""

from __future__ import annotations

from tests.harden.conftest import Outputs


def test_nothing_leaked_lost_or_late(outputs: Outputs) -> None:
    assert outputs.secrets, "the run registered no secrets to look for"
    assert outputs.leaks() == []
    counts = {name: value for name, value in outputs.counts.items() if name != "requests"}
    assert counts == dict.fromkeys(counts, 0)
