"""``upstream.providers``: the registry, one line per provider family."""

from __future__ import annotations

import pytest
from switchboard.upstream import providers
from switchboard.upstream.providers import KINDS, REGISTRY, get
from switchboard.upstream.providers.compat import RULES


def test_every_kind_has_one_shared_instance_of_its_class() -> None:
    for kind, cls in KINDS.items():
        provider = get(kind)
        assert isinstance(provider, cls) and get(kind) is provider


def test_an_unknown_kind_is_a_key_error() -> None:
    with pytest.raises(KeyError):
        get("carrier-pigeon")


def test_the_registry_the_routing_document_is_validated_with_names_every_kind_and_rule() -> None:
    assert dict(REGISTRY.kinds) == dict(KINDS) and REGISTRY.param_rules == frozenset(RULES)
    assert set(providers.__all__) >= {"KINDS", "REGISTRY", "get"}
