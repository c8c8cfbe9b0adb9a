"""Switchboard's benchmark suite (issue 6). Not shipped in the Lambda package.

``python -m bench`` (or ``make bench`` / ``make bench-full``) runs every target against the same
local mock upstream and prints a markdown report, also written to ``bench/results/``.
See ``docs/performance.md`` for the method.
"""
