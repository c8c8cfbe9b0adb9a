"""Redaction by value: every secret the gateway holds is masked in whatever text leaves it.

A pattern (``errors.redact``'s ``sk-...``) only finds keys that look like keys; a Mistral-style
32-character key, or any operator's own format, does not. So the values themselves are known here:

* the provider keys, registered by ``SecretResolver`` as it resolves them (process-wide, because
  any request may be served with them). At most ``MAX_SECRETS`` are kept, the least recently
  resolved dropped first: the resolver re-registers a key on every use, so only keys no longer
  in use age out, and rotation cannot grow the set without bound;
* the client's own key, bound by ``bind_request`` to the current request's context (a context
  variable: each request task has its own, and tasks it starts inherit it) once it has
  authenticated, so it never joins the process-wide set and ends with its request.

``scrub(text)`` masks every known value (and its JSON-escaped form) in ``text``. It runs on every
error body and header the gateway builds, on streamed error events, on log lines (``logs``) and on
cost events (``costevents``). Values shorter than ``MIN_LENGTH`` are never registered: masking
a short, common string would garble text without protecting anything.
"""

from __future__ import annotations

import json
import logging
import threading
from collections import OrderedDict
from contextvars import ContextVar

__all__ = ["MASK", "MAX_SECRETS", "MIN_LENGTH", "ScrubFilter", "bind_request", "register", "scrub"]

MASK = "[redacted]"
MIN_LENGTH = 8
MAX_SECRETS = 256

# value -> the forms it may take in text (itself, and escaped as inside a JSON string)
_known: OrderedDict[str, tuple[str, ...]] = OrderedDict()
_forms_now: tuple[tuple[str, ...], ...] = ()  # _known's values, replaced whole: scrub never locks
_lock = threading.Lock()  # the resolver registers from worker threads
_request: ContextVar[tuple[str, ...]] = ContextVar("switchboard_request_secrets", default=())


def _forms(value: str) -> tuple[str, ...]:
    escaped = json.dumps(value)[1:-1]
    return (value,) if escaped == value else (value, escaped)


def register(value: str | None) -> None:
    """Remember a resolved secret (a provider key) for the life of the process, or until
    ``MAX_SECRETS`` more recent ones push it out."""
    global _forms_now
    if not value or len(value) < MIN_LENGTH:
        return
    with _lock:
        if value in _known:
            _known.move_to_end(value)
            return
        _known[value] = _forms(value)
        while len(_known) > MAX_SECRETS:
            _known.popitem(last=False)
        _forms_now = tuple(_known.values())


def bind_request(value: str | None) -> None:
    """Mask ``value`` (the client's key) in everything the current request writes."""
    if value and len(value) >= MIN_LENGTH:
        _request.set(_forms(value))


def scrub(text: str, *, cut: bool = False) -> str:
    """``text`` with every known secret replaced by ``MASK``. With ``cut`` (text that may have
    been truncated, as upstream error bodies are), a secret's first ``MIN_LENGTH`` or more
    characters ending the text are masked too."""
    for forms in (*_forms_now, _request.get()):
        for form in forms:
            if form in text:
                text = text.replace(form, MASK)
            elif cut:
                at = text.find(form[:MIN_LENGTH], max(0, len(text) - len(form)))
                if at >= 0 and form.startswith(text[at:]):
                    text = text[:at] + MASK
    return text


class ScrubFilter(logging.Filter):
    """A handler filter: the record's message (arguments merged in) and traceback, scrubbed.

    On a handler it sees every record that reaches it, whichever logger made it; the record is
    changed in place, so handlers further up the chain (pytest's, a root handler) get it clean too.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        clean = scrub(message)
        if clean != message:
            record.msg, record.args = clean, None
        if record.exc_info and record.exc_info[0] is not None:
            text = record.exc_text or logging.Formatter().formatException(record.exc_info)
            record.exc_text = scrub(text)
            kind, value, trace = record.exc_info
            if record.exc_text != text and value is not None:
                # Formatters that re-read the exception itself (Powertools') get a stand-in.
                record.exc_info = (kind, _Redacted(scrub(str(value))), trace)
        elif record.exc_text:
            record.exc_text = scrub(record.exc_text)
        return True


class _Redacted(Exception):
    """Stands in, in a log record, for an exception whose text quoted a secret."""
