"""Read pip-audit's JSON report (``make audit``) and say plainly what was and was not audited.

pip-audit exits 0 when it could not audit a dependency at all (its advisory service unreachable,
or a package index without PyPI's JSON API): a green run that checked nothing. This turns the
report into a verdict:

    exit 1  a pinned dependency has a known vulnerability (each is listed with its fix versions)
    exit 1  some dependencies could not be audited, unless ``--offline-ok``: then a loud warning
            naming how many, and exit 0 (CI on a machine without the advisory services)
    exit 0  every pinned dependency audited, no known vulnerability

Usage: ``python tests/harden/audit_report.py REPORT.json [--offline-ok]``
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

__all__ = ["main", "verdict"]


def verdict(report: dict[str, Any], offline_ok: bool) -> tuple[int, list[str]]:
    """The exit code and the lines to print for a pip-audit JSON ``report``."""
    deps = report.get("dependencies", [])
    lines: list[str] = []
    vulnerable = [d for d in deps if d.get("vulns")]
    skipped = [d for d in deps if d.get("skip_reason")]
    audited = len(deps) - len(skipped)
    for dep in vulnerable:
        for vuln in dep["vulns"]:
            fixes = ", ".join(vuln.get("fix_versions") or []) or "no fix yet"
            lines.append(
                f"VULNERABLE {dep['name']} {dep.get('version')}: {vuln.get('id')} (fixed in {fixes})"
            )
    lines.append(
        f"pip-audit: {audited} of {len(deps)} pinned dependencies audited, {len(vulnerable)} vulnerable"
    )
    if skipped:
        lines.append(f"pip-audit: {len(skipped)} NOT audited; first reason: {skipped[0]['skip_reason']}")
        lines.append(
            "pip-audit: the advisory service (PyPI's JSON API or OSV) is not reachable from here; "
            "run `make audit` where it is"
        )
    if vulnerable:
        return 1, lines
    if skipped and not offline_ok:
        return 1, lines
    return 0, lines


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__, file=sys.stderr)
        return 2
    report = json.loads(Path(argv[0]).read_text())
    code, lines = verdict(report, "--offline-ok" in argv[1:])
    for line in lines:
        print(line)
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
