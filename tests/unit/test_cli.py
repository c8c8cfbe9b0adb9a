"""The ``switchboard routing`` commands, run in-process; push and show go to moto over HTTP."""

from __future__ import annotations

import hashlib
import io
import json
import uuid
from pathlib import Path
from typing import Any

import boto3
import pytest
from jsonschema import Draft202012Validator
from switchboard.cli import main
from switchboard.routing.document import load_document

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "infra" / "routing.example.json"


def example() -> dict[str, Any]:
    return json.loads(EXAMPLE.read_text())


def write(tmp_path: Path, doc: dict[str, Any] | str, name: str = "routing.json") -> str:
    path = tmp_path / name
    path.write_text(doc if isinstance(doc, str) else json.dumps(doc, indent=2))
    return str(path)


def broken() -> dict[str, Any]:
    doc = example()
    doc["models"]["cheap"]["targets"][0]["provider"] = "nowhere"
    doc["providers"]["groq"]["kind"] = "telepathy"
    return doc


@pytest.fixture
def param() -> str:
    return f"/switchboard-test/{uuid.uuid4().hex[:10]}/routing"


def ssm_value(name: str) -> tuple[str, int]:
    out = boto3.client("ssm", region_name="us-east-1").get_parameter(Name=name)["Parameter"]
    return out["Value"], out["Version"]


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


# --------------------------------------------------------------------------- validate and schema


def test_validate_a_good_document_prints_a_summary(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "routing", "validate", str(EXAMPLE))
    doc = example()
    assert code == 0 and err == ""
    assert out.startswith("valid: schema version 1")
    assert f"revision {doc['revision']}" in out
    assert f"{len(doc['providers'])} providers" in out
    assert f"{len(doc['models'])} models ({', '.join(sorted(doc['models']))})" in out


def test_validate_reads_stdin(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    doc = example()
    del doc["revision"]
    text = json.dumps(doc)
    monkeypatch.setattr("sys.stdin", io.StringIO(text))
    code, out, _ = run(capsys, "routing", "validate", "-")
    assert code == 0
    canonical = json.dumps(doc, sort_keys=True, separators=(",", ":"))
    assert (
        f"revision {hashlib.sha256(canonical.encode()).hexdigest()[:12]}," in out
    )  # no label: a content hash


def test_validate_a_bad_document_names_every_problem(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code, out, err = run(capsys, "routing", "validate", write(tmp_path, broken()))
    assert code == 1 and out == ""
    assert err.startswith("switchboard: invalid routing document:")
    assert "providers.groq.kind" in err and "'telepathy'" in err
    assert "Traceback" not in err


@pytest.mark.parametrize(
    ("content", "words"),
    [("{not json", ["invalid routing document", "Invalid JSON"]), (None, ["No such file"])],
    ids=["not-json", "missing-file"],
)
def test_validate_unreadable_input(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, content: str | None, words: list[str]
) -> None:
    path = write(tmp_path, content) if content is not None else str(tmp_path / "absent.json")
    code, out, err = run(capsys, "routing", "validate", path)
    assert code == 1 and out == ""
    for word in words:
        assert word in err
    assert "Traceback" not in err


def test_schema_prints_a_valid_json_schema(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "routing", "schema")
    assert code == 0
    schema = json.loads(out)
    Draft202012Validator.check_schema(schema)
    assert Draft202012Validator(schema).is_valid(example())
    assert not Draft202012Validator(schema).is_valid({**example(), "version": 2})


def test_no_command_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["routing"])
    assert info.value.code == 2
    assert "usage:" in capsys.readouterr().err


# --------------------------------------------------------------------------- push and show, against moto


def test_push_then_show(aws: str, capsys: pytest.CaptureFixture[str], tmp_path: Path, param: str) -> None:
    path = write(tmp_path, example())
    code, out, err = run(capsys, "routing", "push", path, "--yes", "--param", param)
    assert code == 0, err
    assert "valid: schema version 1" in out
    assert f"{param} does not exist yet" in out
    assert f"pushed to {param}" in out
    value, _ = ssm_value(param)
    assert json.loads(value) == example()

    code, out, _ = run(capsys, "routing", "show", "--param", param)
    assert code == 0
    assert json.loads(out) == example()


def test_a_second_push_of_the_same_file_changes_nothing(
    aws: str, capsys: pytest.CaptureFixture[str], tmp_path: Path, param: str
) -> None:
    path = write(tmp_path, example())
    assert run(capsys, "routing", "push", path, "--yes", "--param", param)[0] == 0
    before = ssm_value(param)
    # the same document, formatted differently, is still no change
    same = write(tmp_path, json.dumps(example(), separators=(",", ":"), sort_keys=True), "compact.json")
    code, out, _ = run(capsys, "routing", "push", same, "--yes", "--param", param)
    assert code == 0
    assert "no change" in out
    assert ssm_value(param) == before


def test_a_changed_push_shows_the_diff(
    aws: str, capsys: pytest.CaptureFixture[str], tmp_path: Path, param: str
) -> None:
    run(capsys, "routing", "push", write(tmp_path, example()), "--yes", "--param", param)
    changed = example()
    changed["revision"] = "2026-11-26.1"
    code, out, _ = run(
        capsys, "routing", "push", write(tmp_path, changed, "v2.json"), "--yes", "--param", param
    )
    assert code == 0
    assert f'-  "revision": "{example()["revision"]}"' in out
    assert '+  "revision": "2026-11-26.1"' in out
    assert json.loads(ssm_value(param)[0])["revision"] == "2026-11-26.1"


def test_pushing_an_invalid_file_leaves_the_parameter_unchanged(
    aws: str, capsys: pytest.CaptureFixture[str], tmp_path: Path, param: str
) -> None:
    run(capsys, "routing", "push", write(tmp_path, example()), "--yes", "--param", param)
    before = ssm_value(param)
    code, out, err = run(
        capsys, "routing", "push", write(tmp_path, broken(), "bad.json"), "--yes", "--param", param
    )
    assert code == 1
    assert err.startswith("switchboard: not pushed: invalid routing document:")
    assert "providers.groq.kind" in err and "Traceback" not in err
    assert "pushed to" not in out
    assert ssm_value(param) == before


def test_push_without_yes_when_not_interactive_refuses(
    aws: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path, param: str
) -> None:
    run(capsys, "routing", "push", write(tmp_path, example()), "--yes", "--param", param)
    before = ssm_value(param)
    changed = example()
    changed["revision"] = "unconfirmed"
    monkeypatch.setattr("sys.stdin", io.StringIO("y\n"))  # not a tty, even though it says yes
    code, _, err = run(capsys, "routing", "push", write(tmp_path, changed, "v2.json"), "--param", param)
    assert code == 2
    assert "refusing to push without --yes" in err
    assert ssm_value(param) == before


def test_push_without_yes_to_a_new_parameter_refuses_too(
    aws: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path, param: str
) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    code, out, _ = run(capsys, "routing", "push", write(tmp_path, example()), "--param", param)
    assert code == 2
    assert "does not exist yet" in out
    assert run(capsys, "routing", "show", "--param", param)[0] == 1


def test_show_a_missing_parameter(aws: str, capsys: pytest.CaptureFixture[str], param: str) -> None:
    code, out, err = run(capsys, "routing", "show", "--param", param)
    assert code == 1 and out == ""
    assert f"{param} does not exist" in err


def test_push_uses_the_routing_param_setting_by_default(
    aws: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path, param: str
) -> None:
    monkeypatch.setenv("SWITCHBOARD_ROUTING_PARAM", param)
    assert run(capsys, "routing", "push", write(tmp_path, example()), "--yes")[0] == 0
    assert json.loads(ssm_value(param)[0]) == example()
    code, out, _ = run(capsys, "routing", "show")
    assert code == 0 and json.loads(out)["revision"] == example()["revision"]


def test_the_revision_push_prints_is_the_one_the_gateway_reports(
    aws: str, capsys: pytest.CaptureFixture[str], tmp_path: Path, param: str
) -> None:
    doc = example()
    del doc["revision"]  # no label: the revision is a hash, and it must not depend on formatting
    code, out, _ = run(capsys, "routing", "push", write(tmp_path, doc), "--yes", "--param", param)
    assert code == 0
    printed = out.split("revision ", 1)[1].split(",", 1)[0]
    _, in_force = load_document(ssm_value(param)[0])  # what the gateway loads from the parameter
    assert in_force == printed
