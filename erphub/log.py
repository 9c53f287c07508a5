"""Structured logging: readable lines by default, JSON with ``--log-format json``.

Both structlog and standard-library loggers (requests, urllib3, dramatiq, SQLAlchemy) go through
one formatter, and every event is scrubbed of registered secrets and secret-looking pairs
before it is rendered.
"""
from __future__ import annotations

import logging
import sys
from typing import Any, Literal

import structlog

from connectors.logging import install_redaction
from connectors.redaction import redact_data

LogFormat = Literal["text", "json"]


def _redact_event(_logger: Any, _method: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    return redact_data(event_dict)


def configure(level: str = "INFO", fmt: LogFormat = "text", stream: Any = None) -> None:
    """Route structlog and stdlib logging to ``stream`` (stderr) in the chosen format."""
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.stdlib.ExtraAdder(),
    ]
    renderer: Any
    if fmt == "json":
        renderer = structlog.processors.JSONRenderer()
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=False)
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            _redact_event,
            renderer,
        ],
    )
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # A filter on the root logger alone misses records propagating from child loggers; this
    # redacts every record where it is created, whichever logger made it.
    install_redaction()
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )


def get_logger(name: str) -> structlog.stdlib.BoundLogger:
    return structlog.get_logger(name)
