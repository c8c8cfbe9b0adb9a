"""``core.attempts``: one attempt's record, and how it reads in the ``x-switchboard-trail`` header."""

from __future__ import annotations

from switchboard.core.attempts import AttemptRecord, header_safe


def test_an_attempt_renders_target_outcome_status_and_latency() -> None:
    assert AttemptRecord("mock/echo", "ok", 200, 12.4).render() == "mock/echo;ok;200;12ms"


def test_an_attempt_without_a_status_renders_a_dash() -> None:
    assert AttemptRecord("mock/echo", "timeout", None, 5000.0).render() == "mock/echo;timeout;-;5000ms"


def test_a_header_value_is_kept_when_ascii_and_quoted_when_not() -> None:
    assert header_safe("openai/gpt-4o") == "openai/gpt-4o"
    quoted = header_safe("mock/modèle")
    assert quoted == "mock/mod%C3%A8le" and quoted.isascii()
    quoted.encode("latin-1")  # a header value: encodable as HTTP requires
    assert AttemptRecord("mock/modèle", "ok", 200, 1.0).render() == "mock/mod%C3%A8le;ok;200;1ms"
