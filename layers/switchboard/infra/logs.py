"""Structured JSON logs through Powertools Logger, correlated by request id.

``configure_logging()`` runs once at startup, in the entry points (Lambda init, ``switchboard
dev``). It puts Powertools' JSON formatter on the ``switchboard`` logger, so every module keeps its
plain ``logging.getLogger("switchboard.<module>")`` and its records come out as one JSON object per
line: ``level``, ``location``, ``message``, ``timestamp``, ``service`` and, inside a request,
``request_id`` (the same id as the ``x-request-id`` header and the cost event).

Every line is scrubbed of the secrets the gateway holds (``switchboard.core.redaction``): the formatter
masks them in the finished JSON line, and a filter on the handler masks them in the record itself
(its message and traceback), so other handlers that see the record (pytest's, a root handler)
get it clean too.

``bind_request(request_id)`` stores the id in a context variable (Powertools' thread-safe keys),
so concurrent requests on one event loop never mix their ids. Before ``configure_logging`` it does
nothing: tests and library users keep their own logging.
"""

from __future__ import annotations

import logging
import os
from typing import IO, Any

from switchboard.core.redaction import ScrubFilter, scrub

__all__ = ["bind_request", "configure_logging"]

_logger: Any = None


def configure_logging(
    level: str | None = None, service: str = "switchboard", stream: IO[str] | None = None
) -> Any:
    """Route the ``switchboard`` loggers through Powertools' JSON formatter (to stdout). Idempotent."""
    global _logger
    if _logger is None:
        from aws_lambda_powertools import Logger

        level = level or os.environ.get("POWERTOOLS_LOG_LEVEL") or os.environ.get("LOG_LEVEL") or "INFO"
        formatter = _scrubbing_formatter()
        _logger = Logger(service=service, level=level, stream=stream, logger_formatter=formatter)
        _logger.registered_handler.addFilter(ScrubFilter())
    return _logger


def _scrubbing_formatter() -> Any:
    """Powertools' JSON formatter (RFC 3339 timestamps), its every line scrubbed."""
    from aws_lambda_powertools.logging.formatter import LambdaPowertoolsFormatter

    class ScrubbingFormatter(LambdaPowertoolsFormatter):
        def format(self, record: logging.LogRecord) -> str:
            return scrub(super().format(record))

    return ScrubbingFormatter(use_rfc3339=True)


def bind_request(request_id: str) -> None:
    """Tag the current task's log records with ``request_id``."""
    if _logger is not None:
        _logger.thread_safe_append_keys(request_id=request_id)
