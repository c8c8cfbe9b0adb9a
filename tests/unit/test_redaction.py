"""Redaction by value: what is registered is masked, in every form, and the set stays bounded."""

from __future__ import annotations

import asyncio
import contextvars
import json
import logging
import uuid

from switchboard.core import redaction
from switchboard.core.errors import redact


def _key() -> str:
    return uuid.uuid4().hex  # 32 characters, no prefix any pattern knows


def test_a_registered_value_is_masked_plainly_and_json_escaped() -> None:
    key, odd = _key(), 'k"ey\\' + _key()
    assert redact(f"bad key {key}") == f"bad key {key}"  # the patterns alone miss it
    redaction.register(key)
    redaction.register(odd)
    assert redact(f"bad key {key}!") == "bad key [redacted]!"
    escaped = json.dumps({"m": odd})
    assert redaction.scrub(escaped) == json.dumps({"m": "[redacted]"})


def test_a_key_cut_short_at_the_end_of_an_upstream_message_is_masked() -> None:
    key = _key()
    redaction.register(key)
    assert redact(f"error page ... {key[:20]}") == "error page ... [redacted]"
    assert redact(f"{key[:7]}") == key[:7]  # too short a piece to say it is the key
    assert redaction.scrub(f"log line {key[:20]}") == f"log line {key[:20]}"  # only where text is cut


def test_short_values_are_never_registered() -> None:
    redaction.register("abc")
    redaction.bind_request("short")
    assert redaction.scrub("abc short") == "abc short"


def test_the_set_is_bounded_and_a_key_in_use_stays() -> None:
    kept = _key()
    redaction.register(kept)
    for _ in range(redaction.MAX_SECRETS * 2):
        redaction.register(_key())
        redaction.register(kept)  # the resolver registers on every use
    assert len(redaction._known) == redaction.MAX_SECRETS
    assert redaction.scrub(kept) == "[redacted]"


def test_a_client_key_is_masked_only_in_its_own_request() -> None:
    mine, theirs = _key(), _key()

    async def request(key: str) -> tuple[str, str]:
        redaction.bind_request(key)
        await asyncio.sleep(0)
        return redaction.scrub(mine), redaction.scrub(theirs)

    async def both() -> list[tuple[str, str]]:
        return list(await asyncio.gather(request(mine), request(theirs)))

    first, second = asyncio.run(both())
    assert first == ("[redacted]", theirs) and second == (mine, "[redacted]")
    assert contextvars.copy_context().run(redaction.scrub, mine) == mine  # nothing left behind


def test_the_filter_scrubs_message_arguments_and_traceback() -> None:
    key = _key()
    redaction.register(key)
    record = logging.LogRecord("switchboard.x", logging.ERROR, __file__, 1, "said %s", (key,), None)
    try:
        raise ValueError(f"upstream quoted {key}")
    except ValueError as exc:
        record.exc_info = (ValueError, exc, exc.__traceback__)
    assert redaction.ScrubFilter().filter(record)
    formatted = logging.Formatter().format(record)
    assert (
        key not in formatted and "said [redacted]" in formatted and "upstream quoted [redacted]" in formatted
    )
    assert record.exc_info is not None and key not in str(record.exc_info[1])
