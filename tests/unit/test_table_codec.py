"""``limits.table.dump``/``load`` write and read attribute values exactly as boto3's codec does,
without importing boto3 (they run on every key lookup and admission)."""

from __future__ import annotations

import base64
import subprocess
import sys
from decimal import Decimal
from typing import Any

import pytest
from boto3.dynamodb.types import Binary, TypeDeserializer, TypeSerializer
from hypothesis import given
from hypothesis import strategies as st
from switchboard.limits.table import dump, load

numbers = st.one_of(
    st.integers(min_value=-(10**37), max_value=10**37),
    st.decimals(allow_nan=False, allow_infinity=False, places=6, min_value=-(10**20), max_value=10**20),
    st.sampled_from([Decimal("1E+2"), Decimal("0.000"), Decimal("-0"), Decimal("1.50")]),
)
scalars = st.one_of(st.none(), st.booleans(), numbers, st.text(max_size=8), st.binary(max_size=8))
sets = st.one_of(
    st.frozensets(st.text(max_size=4), min_size=1, max_size=3).map(set),
    st.frozensets(st.integers(-100, 100), min_size=1, max_size=3).map(set),
)
values = st.recursive(
    st.one_of(scalars, sets),
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(min_size=1, max_size=4), inner, max_size=3)
    ),
    max_leaves=8,
)


def boto3_dump(item: dict[str, Any]) -> dict[str, Any]:
    serializer = TypeSerializer()
    return {k: serializer.serialize(v) for k, v in item.items() if v is not None}


def boto3_load(item: dict[str, Any]) -> dict[str, Any]:
    deserializer = TypeDeserializer()
    return {k: deserializer.deserialize(v) for k, v in item.items()}


def canonical(value: Any) -> Any:
    """Sets as sorted lists (their order is not part of the value), Binary as bytes."""
    if isinstance(value, dict):
        return {k: canonical(v) for k, v in value.items()}
    if isinstance(value, list):
        return [canonical(v) for v in value]
    if isinstance(value, set | frozenset):
        return sorted((canonical(v) for v in value), key=repr)
    if isinstance(value, Binary):
        return value.value
    return value


@given(st.dictionaries(st.text(min_size=1, max_size=6), values, max_size=5))
def test_dump_and_load_agree_with_boto3(item: dict[str, Any]) -> None:
    ours = dump(item)
    assert canonical(ours) == canonical(boto3_dump(item))
    assert canonical(load(ours)) == canonical(boto3_load(boto3_dump(item)))


@pytest.mark.parametrize(
    "bad", [1.5, Decimal("1e200"), Decimal("1.00000000000000000000000000000000000001"), object()]
)
def test_what_boto3_refuses_is_refused(bad: Any) -> None:
    with pytest.raises(Exception) as ours:
        dump({"x": bad})
    with pytest.raises(Exception) as theirs:
        boto3_dump({"x": bad})
    assert type(ours.value) is type(theirs.value)


def test_binary_reads_from_either_client() -> None:
    # boto3's client hands over bytes; switchboard.infra.awsjson the wire's base64 text.
    assert load({"b": {"B": b"\x00\x01"}}) == load({"b": {"B": base64.b64encode(b"\x00\x01").decode()}})


def test_the_codec_does_not_import_boto3() -> None:
    probe = (
        "import sys; from switchboard.limits.table import dump, load; "
        "load(dump({'a': 1, 'b': [True, None, {'c': 'd'}]})); "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('boto3', 'botocore')))"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
