"""A routing document larger than a Standard parameter, split under its path, against moto's SSM.

``switchboard routing push`` splits it into Standard parts and a manifest naming each part's
version and the hash of the whole; ``pull``/``show`` and the gateway's store join it; a reader
never joins parts of two edits (the torn read), and a join that does not match is refused while
the last good document keeps serving. A document that fits stays one Standard parameter.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path
from typing import Any

import boto3
import pytest
from switchboard.cli import main
from switchboard.infra import awsjson
from switchboard.routing import parts
from switchboard.routing.store import RoutingStore

REGION = "us-east-1"


def big_doc(aliases: int, revision: str = "r1") -> dict[str, Any]:
    """A valid document with many aliases (a few dozen aliases with prices outgrow 8 KB)."""
    return {
        "version": 1,
        "revision": revision,
        "providers": {"p": {"kind": "openai", "base_url": "http://p.test/v1"}},
        "models": {
            f"alias-{i:03d}-{revision}": {"targets": [{"provider": "p", "model": f"upstream-model-{i:03d}"}]}
            for i in range(aliases)
        },
    }


def compact(doc: dict[str, Any]) -> str:
    return json.dumps(doc, separators=(",", ":"))


@pytest.fixture
def name(aws: str) -> str:
    return f"/switchboard-test/{uuid.uuid4().hex[:10]}/routing"


@pytest.fixture
def ssm(aws: str) -> Any:
    client = awsjson.from_env("ssm", REGION)
    assert client is not None
    yield client
    client.close()


def boto() -> Any:
    return boto3.client("ssm", region_name=REGION)


def tier(name: str) -> str:
    found = boto().describe_parameters(
        ParameterFilters=[{"Key": "Name", "Option": "Equals", "Values": [name]}]
    )
    return str(found["Parameters"][0]["Tier"])


def push(capsys: pytest.CaptureFixture[str], tmp_path: Path, doc: dict[str, Any], name: str) -> str:
    path = tmp_path / f"{uuid.uuid4().hex[:6]}.json"
    path.write_text(json.dumps(doc, indent=2))
    code = main(["routing", "push", str(path), "--yes", "--param", name])
    out, err = capsys.readouterr()
    assert code == 0, err
    return out


def test_a_document_over_the_standard_limit_is_pushed_in_parts_and_read_whole(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, name: str, ssm: Any
) -> None:
    doc = big_doc(200)
    assert len(compact(doc)) > 8192  # too big even for one Advanced parameter
    out = push(capsys, tmp_path, doc, name)
    count = -(-len(compact(doc)) // parts.PART_BYTES)
    assert f"{count} parts under {name}/" in out and "Standard tier" in out

    manifest = parts.manifest_of(boto().get_parameter(Name=name)["Parameter"]["Value"])
    assert manifest is not None and len(manifest["parts"]) == count
    for i in range(count):
        assert tier(f"{name}/part-{i}") == "Standard"
        assert len(boto().get_parameter(Name=f"{name}/part-{i}")["Parameter"]["Value"].encode()) <= 4096
    assert tier(name) == "Standard"

    assert json.loads(parts.read(ssm, name)) == doc  # the gateway's light client joins it
    assert main(["routing", "pull", str(tmp_path / "pulled.json"), "--param", name]) == 0
    assert json.loads((tmp_path / "pulled.json").read_text()) == doc
    capsys.readouterr()
    assert main(["routing", "show", "--param", name]) == 0
    assert json.loads(capsys.readouterr().out) == doc

    loaded = asyncio.run(RoutingStore.from_ssm(name, 5.0, ssm).current())
    assert loaded.revision == "r1" and len(loaded.document.models) == 200

    # an unchanged push changes nothing; a smaller edit goes back to one parameter
    assert "no change" in push(capsys, tmp_path, doc, name)
    small = big_doc(3, "r2")
    assert "one parameter" in push(capsys, tmp_path, small, name)
    assert json.loads(boto().get_parameter(Name=name)["Parameter"]["Value"]) == small
    assert json.loads(parts.read(ssm, name)) == small


def test_a_document_that_fits_stays_one_standard_parameter(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, name: str
) -> None:
    out = push(capsys, tmp_path, big_doc(3), name)
    assert "one parameter" in out and "Standard tier" in out
    assert tier(name) == "Standard"
    assert json.loads(boto().get_parameter(Name=name)["Parameter"]["Value"]) == big_doc(3)
    assert boto().get_parameters_by_path(Path=name)["Parameters"] == []  # no parts


def test_an_advanced_parameter_stays_advanced_and_whole_up_to_8_kb(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, name: str, ssm: Any
) -> None:
    boto().put_parameter(Name=name, Value="{}", Type="String", Tier="Advanced")
    doc = big_doc(60)
    assert 4096 < len(compact(doc)) <= 8192
    assert "one parameter" in push(capsys, tmp_path, doc, name)
    assert tier(name) == "Advanced"
    assert json.loads(parts.read(ssm, name)) == doc


def test_a_reader_never_joins_parts_of_two_edits(name: str, ssm: Any) -> None:
    """The torn read: a push lands between the reader's manifest and its parts. Unpinned, the parts
    would mix the two edits; pinned to the manifest's versions, the reader gets the first whole."""
    first, second = compact(big_doc(200, "r1")), compact(big_doc(200, "r2"))
    assert len(parts.split(first)) == len(parts.split(second)) > 1
    parts.write(boto(), name, first)
    source = parts.read_source(ssm, name)  # the reader has the manifest of r1 ...
    parts.write(boto(), name, second)  # ... when r2's parts (and manifest) land
    assert json.loads(parts.read(ssm, name, source))["revision"] == "r1"
    assert json.loads(parts.read(ssm, name))["revision"] == "r2"

    # Had a part come from the other edit (versions not pinned, or a part rewritten in place),
    # the hash of the whole refuses the join.
    manifest = parts.manifest_of(source)
    assert manifest is not None
    newest = {p["Name"]: p["Value"] for p in boto().get_parameters_by_path(Path=name)["Parameters"]}

    def mixed(Names: list[str], WithDecryption: bool) -> dict[str, Any]:
        answer = ssm.get_parameters(Names=Names, WithDecryption=WithDecryption)
        for param in answer["Parameters"]:
            if param["Name"].endswith("/part-0"):
                param["Value"] = newest[param["Name"]]  # r2's first part, r1's others
        return answer

    with pytest.raises(parts.SplitMismatch, match="hash"):
        parts.join(manifest, mixed)


def test_a_join_that_does_not_match_its_manifest_is_refused_and_the_last_good_serves(
    name: str, ssm: Any
) -> None:
    parts.write(boto(), name, compact(big_doc(200, "r1")))
    store = RoutingStore.from_ssm(name, 0.0, ssm, timeout_s=5.0)
    assert asyncio.run(store.current()).revision == "r1"

    manifest = parts.manifest_of(boto().get_parameter(Name=name)["Parameter"]["Value"])
    assert manifest is not None
    forged = {parts.MANIFEST_KEY: {**manifest, "sha256": "0" * 64}}
    boto().put_parameter(Name=name, Value=json.dumps(forged), Type="String", Overwrite=True)
    with pytest.raises(parts.SplitMismatch):
        parts.read(ssm, name)
    missing = {parts.MANIFEST_KEY: {**manifest, "parts": [*manifest["parts"][:-1], f"{name}/part-99:1"]}}
    boto().put_parameter(Name=name, Value=json.dumps(missing), Type="String", Overwrite=True)
    with pytest.raises(parts.SplitMismatch, match="missing"):
        parts.read(ssm, name)

    async def twice() -> str:
        await store.current()
        if store.refreshing is not None:
            await asyncio.wait([store.refreshing])
        return (await store.current()).revision

    assert asyncio.run(twice()) == "r1"  # the refused join kept the last good document
    assert store.rejected >= 1


def test_a_document_over_the_parts_limit_is_refused_and_nothing_written(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, name: str
) -> None:
    doc = big_doc(3000)
    assert len(compact(doc)) > parts.MAX_PARTS * parts.PART_BYTES
    path = tmp_path / "huge.json"
    path.write_text(json.dumps(doc))
    assert main(["routing", "push", str(path), "--yes", "--param", name]) == 1
    assert "not pushed" in capsys.readouterr().err
    assert boto().get_parameters_by_path(Path=name)["Parameters"] == []
    with pytest.raises(boto().exceptions.ParameterNotFound):
        boto().get_parameter(Name=name)


def test_split_never_cuts_a_character() -> None:
    text = "é" * 5000 + "x"  # two bytes each
    pieces = parts.split(text, 4097)
    assert "".join(pieces) == text
    assert all(len(p.encode()) <= 4097 for p in pieces)


def test_the_dev_stacks_state_keeps_a_split_document_across_a_restart(tmp_path: Path, name: str) -> None:
    """``switchboard dev`` saves every parameter and restores them into a new moto, where part
    versions start again at 1: the document is pushed again whole, with a new manifest. The
    fleet's copy is not saved (the next read refills it from SSM). In a region of its own: the
    snapshot takes every parameter of the region, and the other tests' are none of its business."""
    from switchboard.core.settings import Settings
    from switchboard.devtools.devstack import restore_state, save_state, seed_aws
    from switchboard.routing.copy import FleetCopy

    region = "eu-north-1"
    settings = Settings.from_env({}, routing_param=name, table="switchboard", region=region)
    ssm_boto = boto3.client("ssm", region_name=region)
    seed = compact(big_doc(3, "seed"))
    seed_aws(settings, seed, "sk-dev-state", {})
    pushed = compact(big_doc(200, "pushed"))
    parts.write(ssm_boto, name, compact(big_doc(200, "earlier")))
    parts.write(ssm_boto, name, pushed)  # its manifest names the parts' second versions
    ssm, ddb = awsjson.from_env("ssm", region), awsjson.from_env("dynamodb", region)
    assert FleetCopy(ddb, "switchboard", name, ssm, 5.0).fetch() == pushed  # writes the copy
    state = tmp_path / "state.json"
    save_state(state, settings, seed)
    saved = json.loads(state.read_text())
    assert not [i for i in saved["dynamodb"]["switchboard"] if i["pk"]["S"].startswith("routing#")]

    pages = ssm_boto.get_paginator("get_parameters_by_path").paginate(Path="/", Recursive=True)
    for param in [p for page in pages for p in page["Parameters"]]:  # a new moto: no history
        ssm_boto.delete_parameter(Name=param["Name"])
    seed_aws(settings, seed, "sk-dev-state", {})
    assert restore_state(state, settings, set())
    assert parts.read(ssm, name) == pushed
    ssm.close()
    ddb.close()
