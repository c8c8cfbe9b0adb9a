"""``switchboard routing explain FILE ...``: a decision offline, from the same ``decide`` as a call."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from switchboard.cli import main

PROVIDERS = {
    "openai": {"kind": "openai", "base_url": "https://api.openai.com/v1"},
    "groq": {"kind": "openai", "base_url": "https://api.groq.com/openai/v1"},
}
DOC: dict[str, Any] = {
    "version": 1,
    "revision": "cli-test",
    "providers": PROVIDERS,
    "models": {
        "gpt-4o": {
            "targets": [
                {"provider": "openai", "model": "gpt-4o", "context_window": 128000},
                {"provider": "groq", "model": "llama-3.1-8b-instant", "context_window": 8192},
            ]
        },
        "cheap": {"targets": [{"provider": "groq", "model": "llama-3.3-70b-versatile"}]},
        "priced": {
            "strategy": "cheapest",
            "targets": [
                {"provider": "openai", "model": "gpt-4o"},
                {"provider": "openai", "model": "gpt-4o-mini"},
            ],
        },
        "quick": {
            "strategy": "fastest",
            "targets": [
                {"provider": "openai", "model": "gpt-4o"},
                {"provider": "groq", "model": "llama-3.3-70b-versatile"},
            ],
        },
    },
    "prices": {
        "openai/gpt-4o": {"input_per_mtok": 2.5, "output_per_mtok": 10},
        "openai/gpt-4o-mini": {"input_per_mtok": 0.15, "output_per_mtok": 0.6},
    },
    "rules": [
        {"when": {"key_tags": ["batch"], "hours_utc": {"from": 22, "to": 6}}, "reroute": {"gpt-4o": "cheap"}},
        {"when": {"budget_used_over": 0.9, "scope": "team"}, "skip": ["openai/gpt-4o"], "models": ["gpt-4o"]},
    ],
}


@pytest.fixture
def doc_file(tmp_path: Path) -> str:
    path = tmp_path / "routing.json"
    path.write_text(json.dumps(DOC, indent=2))
    return str(path)


def explain(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, Any, str]:
    code = main(["routing", "explain", *argv])
    out, err = capsys.readouterr()
    return code, (json.loads(out) if code == 0 else out), err


def targets(answer: dict[str, Any]) -> list[tuple[str, str]]:
    return [(f"{t['provider']}/{t['model']}", t["reason"]) for t in answer["targets"]]


def test_context_windows_and_prices_offline(doc_file: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, answer, _ = explain(capsys, doc_file, "--model", "gpt-4o", "--prompt-tokens", "20000")
    assert code == 0
    assert answer["routing_revision"] == "cli-test" and answer["model"] == "gpt-4o"
    assert targets(answer) == [("openai/gpt-4o", "kept"), ("groq/llama-3.1-8b-instant", "context_too_small")]
    assert "admission" not in answer  # needs the live ledger
    # 20000 in at $2.5/M plus the default 4096 out at $10/M
    assert answer["estimated_cost_usd"] == {"min": "0.09096", "max": "0.09096"}


def test_rules_fire_on_the_given_tags_time_and_budget(
    doc_file: str, capsys: pytest.CaptureFixture[str]
) -> None:
    night = ("--key-tags", "batch,ci", "--at", "2026-12-05T23:00:00Z")
    code, answer, _ = explain(capsys, doc_file, "--model", "gpt-4o", "--prompt-tokens", "10", *night)
    assert code == 0 and answer["model"] == "cheap"
    assert answer["rules"] == [{"index": 0, "action": "reroute gpt-4o -> cheap", "description": None}]
    code, day, _ = explain(
        capsys,
        doc_file,
        "--model",
        "gpt-4o",
        "--prompt-tokens",
        "10",
        "--key-tags",
        "batch",
        "--at",
        "2026-12-05T12:00:00",
    )
    assert day["model"] == "gpt-4o" and day["rules"] == []
    code, budget, _ = explain(
        capsys, doc_file, "--model", "gpt-4o", "--prompt-tokens", "10", "--budget-used", "team=0.95"
    )
    assert targets(budget) == [("openai/gpt-4o", "budget_rule"), ("groq/llama-3.1-8b-instant", "kept")]


def test_cheapest_and_fastest_offline(doc_file: str, capsys: pytest.CaptureFixture[str]) -> None:
    _, cheap, _ = explain(
        capsys, doc_file, "--model", "priced", "--prompt-tokens", "1000", "--max-tokens", "10"
    )
    assert [t for t, _ in targets(cheap)] == ["openai/gpt-4o-mini", "openai/gpt-4o"]
    speeds = ("--speed", "openai/gpt-4o=0.9:100", "--speed", "groq/llama-3.3-70b-versatile=0.2:300")
    _, quick, _ = explain(
        capsys, doc_file, "--model", "quick", "--prompt-tokens", "10", "--seed", "1", *speeds
    )
    assert [t for t, _ in targets(quick)] == ["groq/llama-3.3-70b-versatile", "openai/gpt-4o"]
    assert quick["targets"][0]["speed"] == {"ttft_s": 0.2, "tokens_per_s": 300.0}


def test_mistakes_are_one_line_errors(doc_file: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = explain(capsys, doc_file, "--model", "nope", "--prompt-tokens", "10")
    assert code == 1 and "The model 'nope' does not exist. Valid models: cheap, gpt-4o, priced, quick" in err
    code, _, err = explain(
        capsys, doc_file, "--model", "gpt-4o", "--prompt-tokens", "10", "--metadata", "novalue"
    )
    assert code == 1 and "--metadata takes NAME=VALUE" in err
    code, _, err = explain(capsys, doc_file, "--model", "gpt-4o", "--prompt-tokens", "999999")
    assert code == 1 and "fits none of the model 'gpt-4o''s targets" in err


def test_the_installed_command(doc_file: str) -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "switchboard.cli",
            "routing",
            "explain",
            doc_file,
            "--model",
            "gpt-4o",
            "--prompt-tokens",
            "5",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["targets"][0]["reason"] == "kept"
