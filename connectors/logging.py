"""Redact every log record before any handler formats it.

``RedactingFilter`` formats a record's message with its arguments, runs the result (and any
exception or stack text) through :func:`connectors.redaction.redact_text`, and stores the
redacted text back on the record, so a secret passed as a log argument never reaches a handler.

Where to install it matters: a filter on a *logger* only sees records created on that very
logger, not records propagating up from child loggers (``connectors.http`` → root). So
``install_redaction()`` wraps the log record factory, which every logger uses, and also puts the
filter on the root logger's current handlers. Call it once at start-up (the CLI does).
"""
from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from typing import Any

from connectors.redaction import redact_text


def redact_record(record: logging.LogRecord) -> logging.LogRecord:
    """Redact ``record`` in place: message, arguments, exception and stack text.

    Idempotent (a second pass finds nothing left to mask), so it is safe as both record factory and
    handler filter. No marker attribute is set: it would show up as an "extra" in structured logs.
    """
    if isinstance(record.msg, Mapping) and not record.args:
        pass  # a structlog event dict: its own processor chain redacts it (erphub.log)
    else:
        try:
            message = record.getMessage()
        except Exception:  # bad format args: keep what we can, redacted, rather than break the caller
            message = f"{record.msg!s} {record.args!r}"
        record.msg = redact_text(message)
        record.args = None
    if record.exc_info and record.exc_info[0] is not None and not record.exc_text:
        record.exc_text = logging.Formatter().formatException(record.exc_info)
    if record.exc_text:
        # Standard formatters print exc_text when it is set. exc_info stays for handlers that render
        # it themselves (structlog's ProcessorFormatter, which erphub.log redacts after rendering).
        record.exc_text = redact_text(record.exc_text)
    if record.stack_info:
        record.stack_info = redact_text(record.stack_info)
    return record


class RedactingFilter(logging.Filter):
    """A filter (for a handler or a logger) that redacts records and never drops one."""

    def filter(self, record: logging.LogRecord) -> bool:
        redact_record(record)
        return True


_install_lock = threading.Lock()
_installed_factory: Callable[..., logging.LogRecord] | None = None
_previous_factory: Callable[..., logging.LogRecord] | None = None


def install_redaction(logger: logging.Logger | None = None) -> RedactingFilter:
    """Redact every record from every logger, and filter ``logger``'s handlers (root by default).

    Safe to call more than once. Returns the filter so handlers added later can use it too.
    """
    global _installed_factory, _previous_factory
    target = logger or logging.getLogger()
    flt = next((f for f in target.filters if isinstance(f, RedactingFilter)), None) or RedactingFilter()
    if flt not in target.filters:
        target.addFilter(flt)
    for handler in target.handlers:
        if not any(isinstance(f, RedactingFilter) for f in handler.filters):
            handler.addFilter(flt)
    with _install_lock:
        if _installed_factory is None or logging.getLogRecordFactory() is not _installed_factory:
            previous = logging.getLogRecordFactory()

            def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
                return redact_record(previous(*args, **kwargs))

            _previous_factory = previous
            _installed_factory = factory
            logging.setLogRecordFactory(factory)
    return flt


def uninstall_redaction(logger: logging.Logger | None = None) -> None:
    """Undo :func:`install_redaction` (tests)."""
    global _installed_factory, _previous_factory
    target = logger or logging.getLogger()
    for holder in (target, *target.handlers):
        for f in [f for f in holder.filters if isinstance(f, RedactingFilter)]:
            holder.removeFilter(f)
    with _install_lock:
        if _installed_factory is not None and logging.getLogRecordFactory() is _installed_factory:
            logging.setLogRecordFactory(_previous_factory or logging.LogRecord)
        _installed_factory = _previous_factory = None
