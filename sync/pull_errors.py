"""Dead letters for records a pull could not take (``error_queue``, kind ``mapping``).

A small helper of the pull engine until the shared error-queue module settles: one entry per
record and fingerprint, so a record read again (the lookback overlap, a retried page) bumps
``attempts`` and ``last_seen`` instead of piling up; the entry resolves itself when the record
is later written successfully. The fingerprint groups alike failures across records: the
connection, entity, kind, field and the message with its record key, quoted values and numbers
blanked out.
"""
from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from connectors.redaction import redact_data, redact_text
from sync.store import ErrorQueue, ErrorStatus, utcnow

__all__ = ["MAPPING", "dead_letter", "fingerprint", "resolve_written"]

MAPPING = "mapping"
_OPEN = (ErrorStatus.OPEN, ErrorStatus.RETRYING)
_QUOTED = re.compile(r"'[^']*'|\"[^\"]*\"")
_NUMBER = re.compile(r"\d+(?:\.\d+)?")
#: pydantic's "1 validation error for Item\nbase_unit\n  unknown unit ..." names the field on line 2
_PYDANTIC_FIELD = re.compile(r"validation errors? for \w+\n([^\s\n][^\n]*)\n")


def fingerprint(connection_id: int, entity: str, kind: str, field: str | None, message: str,
                record_key: str | None = None) -> str:
    shape = message
    if record_key:
        shape = shape.replace(record_key, "<key>")
    shape = _NUMBER.sub("<n>", _QUOTED.sub("<v>", shape))
    shape = re.sub(r"\s+", " ", shape).strip()[:500]
    text = "\x1f".join([str(connection_id), entity, kind, field or "", shape])
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def field_of(message: str, field: str | None) -> str | None:
    """``field`` when known, else the field a pydantic message names (``base_unit``), else None."""
    if field:
        return field
    match = _PYDANTIC_FIELD.search(message)
    return match.group(1).strip() if match else None


def dead_letter(session: Session, *, connection_id: int, entity: str, record_key: str | None, message: str,
                field: str | None = None, raw: Any = None, kind: str = MAPPING, vendor_code: str | None = None,
                now: datetime | None = None) -> ErrorQueue:
    """Record (or bump) the error-queue entry of one failed record, in the caller's transaction.

    ``raw`` is redacted here (secret keys and registered secret values masked) and stored as
    ``{"raw": ..., "field": ...}``.
    """
    now = now or utcnow()
    message = redact_text(message)
    field = field_of(message, field)
    key = record_key[:255] if record_key else record_key
    print_ = fingerprint(connection_id, entity, kind, field, message, key)
    payload = {"field": field, "raw": redact_data(_plain(raw))}
    existing = session.scalar(select(ErrorQueue).where(
        ErrorQueue.connection_id == connection_id, ErrorQueue.entity == entity, ErrorQueue.record_key == key,
        ErrorQueue.fingerprint == print_, ErrorQueue.status.in_(_OPEN)).limit(1))
    if existing is not None:
        existing.attempts += 1
        existing.last_seen = now
        existing.message = message
        existing.payload = payload
        return existing
    entry = ErrorQueue(connection_id=connection_id, entity=entity, record_key=key, kind=kind,
                       vendor_code=vendor_code, message=message, payload=payload, fingerprint=print_,
                       first_seen=now, last_seen=now)
    session.add(entry)
    return entry


def resolve_written(session: Session, *, connection_id: int, entity: str, record_keys: Iterable[str],
                    now: datetime | None = None) -> int:
    """Resolve open mapping errors of records that have now been written; returns how many."""
    keys = sorted(set(record_keys))
    resolved = 0
    for start in range(0, len(keys), 500):
        result = session.execute(
            update(ErrorQueue)
            .where(ErrorQueue.connection_id == connection_id, ErrorQueue.entity == entity,
                   ErrorQueue.kind == MAPPING, ErrorQueue.status == ErrorStatus.OPEN,
                   ErrorQueue.record_key.in_(keys[start:start + 500]))
            .values(status=ErrorStatus.RESOLVED, resolved_at=now or utcnow(), resolved_by="pull",
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
