"""Static checks of layers/Makefile: what the two layers hold.

The X-Ray SDK stays out of the layer that every deployment attaches; the TracingLayer carries it.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MAKEFILE = ROOT / "layers" / "Makefile"


def make_variables(text: str) -> dict[str, list[str]]:
    """``NAME := words`` and ``NAME ?= words`` (with continuations), ``$(NAME)`` expanded."""
    joined = re.sub(r"\\\n", " ", text)
    raw = dict(re.findall(r"^([A-Z_0-9]+) *[:?]?= *(.*)$", joined, re.M))

    def expand(value: str) -> list[str]:
        words: list[str] = []
        for word in value.split():
            ref = re.fullmatch(r"\$\(([A-Z_0-9]+)\)", word)
            words += expand(raw[ref.group(1)]) if ref else [word]
        return words

    return {name: expand(value) for name, value in raw.items()}


VARS = make_variables(MAKEFILE.read_text(encoding="utf-8"))


def recipe(target: str) -> str:
    text = MAKEFILE.read_text(encoding="utf-8")
    match = re.search(rf"^{target}:.*\n((?:\t.*\n|#.*\n)+)", text, re.M)
    assert match, target
    return match.group(1)


def test_the_xray_sdk_is_only_in_the_tracing_layer() -> None:
    requirements = (ROOT / "layers" / "requirements.txt").read_text(encoding="utf-8").lower()
    for name in ("aws-xray-sdk", "wrapt"):
        assert not re.search(rf"^{name}\b", requirements, re.M), name
    assert set(VARS["TRACING_ONLY"]) == {"aws_xray_sdk", "wrapt"}

    gateway, tracing = recipe("build-GatewayLayer"), recipe("build-TracingLayer")
    assert "requirements-tracing.txt" not in gateway
    assert "$(call absent,$(TRACING_ONLY)" in gateway  # the build fails if a dependency pulls them in
    assert "requirements-tracing.txt" in tracing and "--no-deps" in tracing
    assert "$(call absent,$(RUNTIME_PROVIDED)" in gateway and "$(call absent,$(RUNTIME_PROVIDED)" in tracing
