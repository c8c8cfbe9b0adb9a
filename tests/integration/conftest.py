"""Fixtures of the dev-stack tests: one ``switchboard dev`` process shared by the session."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.integration.devprocess import DevProcess


@pytest.fixture(scope="session")
def dev(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevProcess]:
    """``switchboard dev`` with its own state folder; tests add requests, none resets it."""
    process = DevProcess(tmp_path_factory.mktemp("dev") / "state")
    yield process
    process.stop()
