"""``make audit``'s reading of pip-audit's report: a vulnerability fails, and so does a dependency
that could not be audited, unless the machine is known to be offline (then it is said loudly)."""

from __future__ import annotations

from tests.harden.audit_report import verdict

AUDITED = {"name": "httpx", "version": "0.28.1", "vulns": []}
VULNERABLE = {
    "name": "h11",
    "version": "0.14.0",
    "vulns": [{"id": "GHSA-vqfr-h8mv-ghfj", "fix_versions": ["0.16.0"]}],
}
SKIPPED = {"name": "uvicorn", "skip_reason": "Dependency not found on PyPI and could not be audited: uvicorn"}


def test_all_audited_and_clean_passes() -> None:
    code, lines = verdict({"dependencies": [AUDITED]}, offline_ok=False)
    assert code == 0 and lines == ["pip-audit: 1 of 1 pinned dependencies audited, 0 vulnerable"]


def test_a_vulnerability_fails_even_offline() -> None:
    code, lines = verdict({"dependencies": [AUDITED, VULNERABLE, SKIPPED]}, offline_ok=True)
    assert code == 1
    assert "VULNERABLE h11 0.14.0: GHSA-vqfr-h8mv-ghfj (fixed in 0.16.0)" in lines


def test_unaudited_dependencies_fail_unless_offline_is_accepted_and_are_always_named() -> None:
    report = {"dependencies": [AUDITED, SKIPPED]}
    assert verdict(report, offline_ok=False)[0] == 1
    code, lines = verdict(report, offline_ok=True)
    assert code == 0
    assert any("1 NOT audited" in line for line in lines)
