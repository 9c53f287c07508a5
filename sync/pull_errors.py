"""Dead letters for records a pull could not take (``error_queue``, kind ``mapping``).

Thin pull-side helpers over :mod:`sync.errorqueue`: one entry per record and fingerprint, so a
record read again (the lookback overlap, a resumed page) bumps ``attempts`` and ``last_seen``
instead of piling up; the field that failed is kept in the payload; and the entries of records
that are later written successfully are resolved, a page at a time.
"""
from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import update
from sqlalchemy.orm import Session

from connectors.redaction import redact_text
from sync.errorqueue import MAPPING, record_record_error
from sync.store import ErrorQueue, ErrorStatus, utcnow

__all__ = ["MAPPING", "dead_letter", "field_of", "resolve_written"]

_OPEN = (ErrorStatus.OPEN, ErrorStatus.RETRYING)
#: pydantic's "1 validation error for Item\nbase_unit\n  unknown unit ..." names the field on line 2
_PYDANTIC_FIELD = re.compile(r"validation errors? for \w+\n([^\s\n][^\n]*)\n")


def field_of(message: str, field: str | None) -> str | None:
    """``field`` when known, else the field a pydantic message names (``base_unit``), else None."""
    if field:
        return field
    match = _PYDANTIC_FIELD.search(message)
    return match.group(1).strip() if match else None


def dead_letter(session: Session, *, connection_id: int, entity: str, record_key: str | None, message: str,
                field: str | None = None, raw: Any = None, kind: str = MAPPING, vendor_code: str | None = None,
                now: datetime | None = None) -> ErrorQueue:
    """Record (or bump) the error-queue entry of one failed record, in the caller's transaction,
    through :func:`sync.errorqueue.record_record_error` (which redacts message and payload). The
    payload is ``{"field": ..., "raw": ...}``; ``field`` is taken from a pydantic message when
    the connector did not name it."""
    message = redact_text(message)
    return record_record_error(session, connection_id=connection_id, entity=entity,
                               record_key=record_key[:255] if record_key else record_key, message=message,
                               kind=kind, vendor_code=vendor_code,
                               payload={"field": field_of(message, field), "raw": _plain(raw)}, now=now)


def resolve_written(session: Session, *, connection_id: int, entity: str, record_keys: Iterable[str],
                    now: datetime | None = None, by: str = "pull") -> int:
    """Resolve the open entries of records that have now been written (like
    :func:`sync.errorqueue.resolve_record`, one query per 500 keys; ``by`` is recorded as
    ``resolved_by``); returns how many."""
    keys = sorted(set(record_keys))
    resolved = 0
    for start in range(0, len(keys), 500):
        result = session.execute(
            update(ErrorQueue)
            .where(ErrorQueue.connection_id == connection_id, ErrorQueue.entity == entity,
                   ErrorQueue.outbox_id.is_(None), ErrorQueue.status.in_(_OPEN),
                   ErrorQueue.record_key.in_(keys[start:start + 500]))
            .values(status=ErrorStatus.RESOLVED, resolved_at=now or utcnow(), resolved_by=by,
                    note="the record was read and written successfully")
            .execution_options(synchronize_session=False))
        resolved += result.rowcount or 0
    return resolved


def _plain(value: Any) -> Any:
    """JSON-safe copy: mappings and sequences recursed, other scalars kept (the store's JSON
    serialiser writes Decimals and datetimes as text), unknown objects as their repr."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    if isinstance(value, (Decimal, date)):
        return value
    if hasattr(value, "model_dump"):
        return value.model_dump(mode="json")
    return repr(value)
