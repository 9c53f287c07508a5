"""The operator-facing error queue (DESIGN.md §5, RELIABILITY.md §1.5): dead letters kept in the
store, with what failed, why, the redacted original payload, and what became of it.

Life of an entry (``ErrorQueue.status``):

- ``open``: a record failed for good (delivery: rejected, contract violation, attempts or age
  used up; pull: a record that could not be mapped). Its outbox row is ``failed``.
- ``open`` --:func:`retry`--> ``retrying``: the outbox row is back to ``pending`` with a fresh
  attempt budget. Compare-and-set on ``open`` in the same transaction as the requeue, so two
  operators retrying the same entries at the same moment requeue each row once; the later one
  finds them ``retrying`` and changes nothing.
- ``retrying`` --delivered--> ``resolved`` (:func:`resolve_delivered`, called by delivery);
  ``retrying`` --fails again--> ``open`` (the same entry, ``attempts`` one higher).
- ``open`` --:func:`discard`--> ``discarded`` with a note; its outbox row becomes ``dead``.

One entry per outbox row (a row that fails again reopens its entry); pull-side record errors
(``kind='mapping'``, no outbox row) are one entry per (connection, entity, record, fingerprint).

``fingerprint`` groups alike errors: kind + vendor code + message with numbers, ids and quoted
values normalised away, so "库存不足: TS-001 in WH01 would be -3" and "... SH-001 in WH02 would be
-12" land in one group.

Payloads are redacted here (:func:`connectors.redaction.redact_data`) before they are stored.
Nothing in this module commits: callers own the transaction.
"""
from __future__ import annotations

import builtins
import csv
import hashlib
import io
import json
import logging
import re
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any, Literal

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from connectors.errors import ConnectorError
from connectors.redaction import redact_data, redact_text
from sync.store import Connection, ErrorQueue, ErrorStatus, Outbox, OutboxStatus, begin_write, utcnow
from sync.store.outbox import requeue_many

log = logging.getLogger("erphub.sync.errorqueue")

MAPPING = "mapping"  # kind of a pull-side record that could not be mapped
MOVEMENT = "movement"  # entity of a delivery dead letter

# -- fingerprints -------------------------------------------------------------------------------

_QUOTED = re.compile(r"'(?:[^'\\]|\\.|'')*'|\"(?:[^\"\\]|\\.)*\"|‘[^’]*’|“[^”]*”|「[^」]*」")
_UUID = re.compile(r"\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b", re.IGNORECASE)
# a token with a digit in it (TS-001, 2024-03-01, -3, 12.5, GRN-000042, 0x1f): an id or a number
_WITH_DIGIT = re.compile(r"[\w.:/+-]*\d[\w.:/+-]*")
_SPACES = re.compile(r"\s+")


def normalise_message(message: str) -> str:
    """``message`` with quoted values, ids and numbers replaced by placeholders."""
    text = _QUOTED.sub("'?'", message)
    text = _UUID.sub("#", text)
    text = _WITH_DIGIT.sub("#", text)
    return _SPACES.sub(" ", text).strip().lower()


def fingerprint(kind: str, vendor_code: str | None, message: str) -> str:
    """16 hex digits grouping alike errors (kind, vendor code, normalised message)."""
    material = "\x1f".join((kind, vendor_code or "", normalise_message(message)))
    return hashlib.sha256(material.encode("utf-8")).hexdigest()[:16]


# -- recording ----------------------------------------------------------------------------------


def record_dead_letter(
    session: Session,
    *,
    outbox: Outbox,
    payload: dict[str, Any] | None,
    record_key: str | None,
    error: BaseException,
    now: datetime | None = None,
    kind: str | None = None,
    message: str | None = None,
) -> ErrorQueue:
    """Write (or reopen) the entry for a delivery that failed for good; ``payload`` is the
    original canonical movement (redacted here). Call in the transaction that marks the outbox
    row failed."""
    now = now or utcnow()
    kind = kind or (error.kind if isinstance(error, ConnectorError) else "internal")
    vendor_code = error.vendor_code if isinstance(error, ConnectorError) else None
    text = redact_text(message or _message(error))
    print_ = fingerprint(kind, vendor_code, text)
    entry = session.scalars(
        select(ErrorQueue).where(ErrorQueue.outbox_id == outbox.id).order_by(ErrorQueue.id.desc()).limit(1)
    ).first()
    if entry is not None and entry.status != ErrorStatus.DISCARDED:
        entry.status = ErrorStatus.OPEN
        entry.kind, entry.vendor_code, entry.message, entry.fingerprint = kind, vendor_code, text, print_
        entry.payload = redact_data(payload) if payload is not None else entry.payload
        entry.attempts += 1
        entry.last_seen = now
        entry.resolved_at = None
        entry.resolved_by = None
    else:
        entry = ErrorQueue(
            connection_id=outbox.target_connection_id, outbox_id=outbox.id, movement_id=outbox.movement_id,
            entity=MOVEMENT, record_key=record_key, kind=kind, vendor_code=vendor_code, message=text,
            payload=redact_data(payload) if payload is not None else None, fingerprint=print_,
            status=ErrorStatus.OPEN, attempts=1, first_seen=now, last_seen=now,
        )
        session.add(entry)
    session.flush()
    log.error("dead letter #%d: %s %s to connection %d: %s [%s] %s", entry.id, MOVEMENT, record_key,
              outbox.target_connection_id, kind, vendor_code or "-", text)
    return entry


def record_record_error(
    session: Session,
    *,
    connection_id: int,
    entity: str,
    record_key: str | None,
    message: str,
    kind: str = MAPPING,
    vendor_code: str | None = None,
    payload: Any = None,
    now: datetime | None = None,
) -> ErrorQueue:
    """A source record that could not be taken in (pull side: mapping or validation). The same
    record failing the same way again bumps ``attempts`` and ``last_seen`` of its open entry."""
    now = now or utcnow()
    text = redact_text(message)
    print_ = fingerprint(kind, vendor_code, text)
    stored = redact_data(payload) if payload is not None else None
    if stored is not None and not isinstance(stored, dict):
        stored = {"raw": stored}
    entry = session.scalars(
        select(ErrorQueue).where(
            ErrorQueue.connection_id == connection_id, ErrorQueue.entity == entity,
            ErrorQueue.record_key == record_key if record_key is not None else ErrorQueue.record_key.is_(None),
            ErrorQueue.outbox_id.is_(None), ErrorQueue.fingerprint == print_,
            ErrorQueue.status.in_((ErrorStatus.OPEN, ErrorStatus.RETRYING)),
        ).limit(1)
    ).first()
    if entry is not None:
        entry.status = ErrorStatus.OPEN
        entry.attempts += 1
        entry.last_seen = now
        entry.message = text
        entry.payload = stored if stored is not None else entry.payload
    else:
        entry = ErrorQueue(connection_id=connection_id, entity=entity, record_key=record_key, kind=kind,
                           vendor_code=vendor_code, message=text, payload=stored, fingerprint=print_,
                           status=ErrorStatus.OPEN, attempts=1, first_seen=now, last_seen=now)
        session.add(entry)
    session.flush()
    return entry


def resolve_delivered(session: Session, outbox_id: int, *, now: datetime | None = None,
                      by: str = "delivery") -> int:
    """Mark the entries of a row that has now been delivered ``resolved``; how many."""
    return _resolve(session, [ErrorQueue.outbox_id == outbox_id], now=now, by=by)


def resolve_delivered_many(session: Session, outbox_ids: Sequence[int], *, now: datetime | None = None,
                           by: str = "delivery") -> int:
    """:func:`resolve_delivered` for several delivered rows in one statement; how many entries."""
    return _resolve(session, [ErrorQueue.outbox_id.in_(builtins.list(outbox_ids))], now=now, by=by) if outbox_ids else 0


def resolve_record(session: Session, *, connection_id: int, entity: str, record_key: str,
                   now: datetime | None = None, by: str = "pull") -> int:
    """Pull side: the record maps now; resolve its open/retrying entries. How many."""
    return _resolve(session, [ErrorQueue.connection_id == connection_id, ErrorQueue.entity == entity,
                              ErrorQueue.record_key == record_key, ErrorQueue.outbox_id.is_(None)], now=now, by=by)


def _resolve(session: Session, where: list[Any], *, now: datetime | None, by: str) -> int:
    result = session.execute(
        update(ErrorQueue)
        .where(*where, ErrorQueue.status.in_((ErrorStatus.OPEN, ErrorStatus.RETRYING)))
        .values(status=ErrorStatus.RESOLVED, resolved_at=now or utcnow(), resolved_by=by)
        .execution_options(synchronize_session=False)
    )
    changed = int(getattr(result, "rowcount", 0) or 0)
    if changed:
        _expire(session)
    return changed


# -- reading ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ErrorGroup:
    """Entries sharing a fingerprint (``list``)."""

    fingerprint: str
    kind: str
    vendor_code: str | None
    message: str  # the newest entry's message
    count: int
    connections: tuple[str, ...]
    statuses: dict[str, int]
    first_seen: datetime
    last_seen: datetime
    ids: tuple[int, ...]


@dataclass(frozen=True)
class ErrorDetail:
    """One entry with its context (``show``, ``export``)."""

    id: int
    status: str
    connection: str
    kind: str
    vendor_code: str | None
    message: str
    fingerprint: str
    entity: str
    record_key: str | None
    movement_id: int | None
    outbox_id: int | None
    idempotency_key: str | None
    outbox_status: str | None
    delivery_attempts: int | None
    attempts: int
    first_seen: datetime
    last_seen: datetime
    note: str | None
    resolved_at: datetime | None
    resolved_by: str | None
    payload: Any = field(default=None)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        for name in ("first_seen", "last_seen", "resolved_at"):
            if data[name] is not None:
                data[name] = data[name].isoformat()
        return data


def _filtered(session: Session, *, connection: str | int | None, kind: str | None, status: str | None,
              since: datetime | None, fingerprint_: str | None = None) -> Any:
    query = select(ErrorQueue, Connection.name).join(Connection, Connection.id == ErrorQueue.connection_id)
    if connection is not None:
        query = query.where(Connection.id == connection if isinstance(connection, int) else Connection.name == connection)
    if kind is not None:
        query = query.where(ErrorQueue.kind == kind)
    if status is not None:
        query = query.where(ErrorQueue.status == ErrorStatus(status))
    if since is not None:
        if since.tzinfo is None:
            raise ValueError("since must be timezone-aware")
        query = query.where(ErrorQueue.last_seen >= since)
    if fingerprint_ is not None:
        query = query.where(ErrorQueue.fingerprint == fingerprint_)
    return query.order_by(ErrorQueue.id)


def list_errors(session: Session, *, connection: str | int | None = None, kind: str | None = None,
                status: str | None = None, since: datetime | None = None) -> builtins.list[ErrorGroup]:
    """Entries matching the filters, grouped by fingerprint, most recent group first."""
    groups: dict[str, builtins.list[tuple[ErrorQueue, str]]] = {}
    for entry, name in session.execute(_filtered(session, connection=connection, kind=kind, status=status,
                                                 since=since)):
        groups.setdefault(entry.fingerprint, []).append((entry, name))
    out = []
    for print_, members in groups.items():
        newest = max(members, key=lambda m: (m[0].last_seen, m[0].id))[0]
        statuses: dict[str, int] = {}
        for entry, _ in members:
            statuses[entry.status] = statuses.get(entry.status, 0) + 1
        out.append(ErrorGroup(
            fingerprint=print_, kind=newest.kind, vendor_code=newest.vendor_code, message=newest.message,
            count=len(members), connections=tuple(sorted({name for _, name in members})), statuses=statuses,
            first_seen=min(e.first_seen for e, _ in members), last_seen=max(e.last_seen for e, _ in members),
            ids=tuple(e.id for e, _ in members),
        ))
    return sorted(out, key=lambda g: g.last_seen, reverse=True)


def entries(session: Session, *, connection: str | int | None = None, kind: str | None = None,
            status: str | None = None, since: datetime | None = None,
            fingerprint: str | None = None) -> builtins.list[ErrorDetail]:
    """Entries matching the filters, oldest first, each with its context."""
    rows = session.execute(_filtered(session, connection=connection, kind=kind, status=status, since=since,
                                     fingerprint_=fingerprint)).all()
    outbox_ids = [e.outbox_id for e, _ in rows if e.outbox_id is not None]
    outboxes = {o.id: o for o in session.scalars(select(Outbox).where(Outbox.id.in_(outbox_ids)))} if outbox_ids else {}
    return [_detail(entry, name, outboxes.get(entry.outbox_id)) for entry, name in rows]


def show(session: Session, entry_id: int) -> ErrorDetail | None:
    """One entry with its connection and outbox row, or None."""
    row = session.execute(
        select(ErrorQueue, Connection.name).join(Connection, Connection.id == ErrorQueue.connection_id)
        .where(ErrorQueue.id == entry_id)
    ).first()
    if row is None:
        return None
    entry, name = row
    outbox = session.get(Outbox, entry.outbox_id) if entry.outbox_id is not None else None
    return _detail(entry, name, outbox)


def _detail(entry: ErrorQueue, connection: str, outbox: Outbox | None) -> ErrorDetail:
    return ErrorDetail(
        id=entry.id, status=entry.status, connection=connection, kind=entry.kind, vendor_code=entry.vendor_code,
        message=entry.message, fingerprint=entry.fingerprint, entity=entry.entity, record_key=entry.record_key,
        movement_id=entry.movement_id, outbox_id=entry.outbox_id,
        idempotency_key=outbox.idempotency_key if outbox else None, outbox_status=outbox.status if outbox else None,
        delivery_attempts=outbox.attempts if outbox else None, attempts=entry.attempts,
        first_seen=entry.first_seen, last_seen=entry.last_seen, note=entry.note, resolved_at=entry.resolved_at,
        resolved_by=entry.resolved_by, payload=entry.payload,
    )


# -- operator actions ---------------------------------------------------------------------------


@dataclass
class ActionResult:
    """What an operator action did: the entries it changed and why the others were left alone."""

    changed: builtins.list[int] = field(default_factory=builtins.list)
    skipped: builtins.list[tuple[int, str]] = field(default_factory=builtins.list)


def _select_ids(session: Session, ids: Iterable[int] | None, fingerprint_: str | None) -> builtins.list[int]:
    if (ids is None) == (fingerprint_ is None):
        raise ValueError("give either entry ids or a fingerprint")
    if ids is not None:
        return sorted({int(i) for i in ids})
    return builtins.list(session.scalars(
        select(ErrorQueue.id).where(ErrorQueue.fingerprint == fingerprint_).order_by(ErrorQueue.id)))


def retry(session: Session, ids: Iterable[int] | None = None, *, fingerprint: str | None = None,
          now: datetime | None = None, by: str | None = None) -> ActionResult:
    """Re-queue the outbox rows of ``open`` entries (by id, or every entry of a fingerprint).

    Each entry goes ``open`` → ``retrying`` by compare-and-set, in the same transaction as the
    requeue of its row (same idempotency key, fresh attempt budget), so a row is re-queued once
    however many operators retry it at the same moment; entries that are not ``open`` are
    skipped. Pull-side entries (no outbox row) become ``retrying`` until the next pull resolves
    them. Commit the session to make it happen. Entries are taken :data:`RETRY_CHUNK` at a time,
    a few statements per chunk (not per entry).
    """
    now = now or utcnow()
    begin_write(session)
    result = ActionResult()
    entry_ids = _select_ids(session, ids, fingerprint)
    for start in range(0, len(entry_ids), RETRY_CHUNK):
        _retry_chunk(session, entry_ids[start:start + RETRY_CHUNK], now=now, by=by, result=result)
    _expire(session)
    if result.changed:
        log.warning("error queue: %s re-queued %d entr%s: %s", by or "an operator", len(result.changed),
                    "y" if len(result.changed) == 1 else "ies", ", ".join(map(str, result.changed)))
    return result


#: Entries :func:`retry` handles per statement.
RETRY_CHUNK = 500


def _retry_chunk(session: Session, chunk: builtins.list[int], *, now: datetime, by: str | None,
                 result: ActionResult) -> None:
    claimed = dict(session.execute(
        update(ErrorQueue)
        .where(ErrorQueue.id.in_(chunk), ErrorQueue.status == ErrorStatus.OPEN)
        .values(status=ErrorStatus.RETRYING, resolved_by=by)
        .returning(ErrorQueue.id, ErrorQueue.outbox_id)
        .execution_options(synchronize_session=False)
    ).all())
    missed = [i for i in chunk if i not in claimed]
    entry_status = dict(session.execute(select(ErrorQueue.id, ErrorQueue.status).where(ErrorQueue.id.in_(missed)))
                        .all()) if missed else {}
    # A fresh budget: the operator fixed the cause, so the row gets its full attempts again.
    requeued = requeue_many(session, {o for o in claimed.values() if o is not None}, now=now, reset_attempts=True)
    changed: dict[int, str | None] = {}  # entry id -> None (re-queued) or why it was put back to open
    back: builtins.list[int] = []
    for entry_id in chunk:
        if entry_id not in claimed:
            continue
        outbox_id = claimed[entry_id]
        if outbox_id is None or outbox_id in requeued:
            requeued.discard(outbox_id)  # the row's first entry re-queued it; a second one finds it pending
            changed[entry_id] = None
        else:
            back.append(entry_id)
    if back:
        # The row is not failed/dead (already pending or sent): nothing to send again.
        session.execute(update(ErrorQueue).where(ErrorQueue.id.in_(back))
                        .values(status=ErrorStatus.OPEN, resolved_by=None)
                        .execution_options(synchronize_session=False))
        row_status = dict(session.execute(select(Outbox.id, Outbox.status).where(
            Outbox.id.in_({claimed[e] for e in back}))).all())
        for entry_id in back:
            changed[entry_id] = f"its outbox row is {row_status.get(claimed[entry_id])}, not failed"
    for entry_id in chunk:
        if entry_id not in claimed:
            status = entry_status.get(entry_id)
            result.skipped.append((entry_id, f"is {status}, not open" if status else "no such entry"))
        elif changed[entry_id] is None:
            result.changed.append(entry_id)
        else:
            result.skipped.append((entry_id, changed[entry_id]))


def discard(session: Session, ids: Iterable[int] | None = None, *, note: str, fingerprint: str | None = None,
            now: datetime | None = None, by: str | None = None) -> ActionResult:
    """Give up on ``open`` entries for good, with a note saying why; their rows become ``dead``."""
    if not note or not note.strip():
        raise ValueError("a discard needs a note saying why")
    now = now or utcnow()
    begin_write(session)
    result = ActionResult()
    for entry_id in _select_ids(session, ids, fingerprint):
        done = session.execute(
            update(ErrorQueue)
            .where(ErrorQueue.id == entry_id, ErrorQueue.status == ErrorStatus.OPEN)
            .values(status=ErrorStatus.DISCARDED, note=redact_text(note.strip()), resolved_at=now, resolved_by=by)
            .returning(ErrorQueue.outbox_id)
            .execution_options(synchronize_session=False)
        ).first()
        if done is None:
            status = session.scalar(select(ErrorQueue.status).where(ErrorQueue.id == entry_id))
            result.skipped.append((entry_id, f"is {status}, not open" if status else "no such entry"))
            continue
        if done[0] is not None:
            session.execute(update(Outbox).where(Outbox.id == done[0], Outbox.status == OutboxStatus.FAILED)
                            .values(status=OutboxStatus.DEAD, updated_at=now)
                            .execution_options(synchronize_session=False))
        result.changed.append(entry_id)
    _expire(session)
    return result


def export(session: Session, format: Literal["csv", "json"] = "csv", *, connection: str | int | None = None,
           kind: str | None = None, status: str | None = None, since: datetime | None = None) -> str:
    """The matching entries as CSV (payload as a JSON column) or a JSON array. Payloads are the
    redacted ones stored."""
    details = entries(session, connection=connection, kind=kind, status=status, since=since)
    rows = [d.to_dict() for d in details]
    if format == "json":
        return json.dumps(rows, ensure_ascii=False, indent=2, default=str) + "\n"
    if format != "csv":
        raise ValueError(f"format must be csv or json, not {format!r}")
    buffer = io.StringIO()
    columns = builtins.list(ErrorDetail.__dataclass_fields__)
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        row["payload"] = json.dumps(row["payload"], ensure_ascii=False, default=str) if row["payload"] is not None else ""
        writer.writerow(row)
    return buffer.getvalue()


def _message(error: BaseException) -> str:
    if isinstance(error, ConnectorError):
        return error.message  # the vendor code has its own column
    return f"{type(error).__name__}: {error}"


def _expire(session: Session) -> None:
    for obj in builtins.list(session.identity_map.values()):
        if isinstance(obj, (ErrorQueue, Outbox)):
            session.expire(obj)


# The names the brief gives the operator API (``errorqueue.list(...)``); ``list_errors`` inside
# this module, where the builtin is still needed.
list = list_errors  # noqa: A001

__all__: Sequence[str] = (
    "MAPPING", "ActionResult", "ErrorDetail", "ErrorGroup", "discard", "entries", "export", "fingerprint",
    "list", "list_errors", "normalise_message", "record_dead_letter", "record_record_error", "resolve_delivered",
    "resolve_delivered_many",
    "resolve_record", "retry", "show",
)
