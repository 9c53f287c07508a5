"""The figures the store itself holds (DESIGN.md §5: the store is the record of truth).

:func:`read_snapshot` answers, in one short read-only transaction, what an operator (``erphub
status``) and a Prometheus scrape (:class:`sync.metrics.StoreCollector`) want to know:

- connections: state (active/paused) and why paused;
- outbox rows by target and status, and the oldest row not delivered yet per target;
- error queue entries still to act on (open, retrying) by connection and kind, and the oldest open;
- per connection and entity: the last run, the last successful run and the watermark.

Every query is a COUNT/MIN/MAX over an index (``ix_outbox_status_next_attempt_at``,
``ix_error_queue_connection_id_status``, ``ix_sync_run_connection_id_entity_started_at``) or over
a table with one row per connection (and entity). Delivered (``sent``) rows only ever grow, so
they are counted only on request (``include_sent=True``, for ``erphub status``); a scrape leaves
them to the ``erphub_deliveries_total`` counter. Nothing here writes or takes a lock that blocks
a writer: SQLite readers in WAL mode never block writers, PostgreSQL reads take no row locks, and
on PostgreSQL the transaction gets a ``statement_timeout`` so a slow scrape gives up instead of
holding a connection.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import func, select, text

from sync.store import (
    Connection,
    ErrorQueue,
    ErrorStatus,
    Outbox,
    OutboxStatus,
    RunStatus,
    Store,
    SyncRun,
    Watermark,
    utcnow,
)

__all__ = ["ConnectionFigures", "ErrorFigures", "OutboxFigures", "RunFigures", "Snapshot", "read_snapshot"]

#: Rows not delivered yet: their age is how late delivery is.
UNDELIVERED = (OutboxStatus.PENDING, OutboxStatus.SENDING, OutboxStatus.AMBIGUOUS)
#: Statuses counted on every scrape (all but ``sent``, which only grows).
NOT_SENT = (*UNDELIVERED, OutboxStatus.FAILED, OutboxStatus.DEAD)
#: Error-queue entries an operator still has to act on (or is acting on).
ACTIONABLE = (ErrorStatus.OPEN, ErrorStatus.RETRYING)
#: PostgreSQL: the longest one statement of a snapshot may run.
STATEMENT_TIMEOUT_MS = 5_000


@dataclass(frozen=True)
class ConnectionFigures:
    name: str
    platform: str
    status: str
    paused_reason: str | None


@dataclass(frozen=True)
class OutboxFigures:
    """The outbox rows of one target connection. ``sent`` is None when it was not counted."""

    target: str
    pending: int = 0
    sending: int = 0
    ambiguous: int = 0
    failed: int = 0
    dead: int = 0
    sent: int | None = None
    oldest_undelivered_at: datetime | None = None  # created_at of the oldest pending/sending/ambiguous row

    @property
    def undelivered(self) -> int:
        return self.pending + self.sending + self.ambiguous


@dataclass(frozen=True)
class ErrorFigures:
    """Error-queue entries of one connection and kind still to act on."""

    connection: str
    kind: str
    open: int = 0
    retrying: int = 0
    oldest_open_at: datetime | None = None  # first_seen of the oldest open entry


@dataclass(frozen=True)
class RunFigures:
    """Pull runs of one entity from one connection."""

    connection: str
    entity: str
    last_run_id: int | None = None
    last_status: str | None = None
    last_mode: str | None = None
    last_started_at: datetime | None = None
    last_error: str | None = None
    last_success_at: datetime | None = None  # finished_at of the newest succeeded run
    watermark: datetime | None = None
    watermark_updated_at: datetime | None = None


@dataclass(frozen=True)
class Snapshot:
    taken_at: datetime
    connections: list[ConnectionFigures] = field(default_factory=list)
    outbox: list[OutboxFigures] = field(default_factory=list)
    errors: list[ErrorFigures] = field(default_factory=list)
    runs: list[RunFigures] = field(default_factory=list)

    def age(self, when: datetime | None) -> float | None:
        """Seconds from ``when`` to the snapshot's time (never negative), or None."""
        return None if when is None else max(0.0, (self.taken_at - when).total_seconds())

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready data: datetimes as ISO 8601 strings, ages in seconds added."""
        def plain(value: Any) -> Any:
            if isinstance(value, datetime):
                return value.isoformat()
            if isinstance(value, dict):
                return {k: plain(v) for k, v in value.items()}
            if isinstance(value, list):
                return [plain(v) for v in value]
            return value

        outbox = [asdict(o) | {"undelivered": o.undelivered,
                               "oldest_undelivered_age_seconds": self.age(o.oldest_undelivered_at)}
                  for o in self.outbox]
        errors = [asdict(e) | {"oldest_open_age_seconds": self.age(e.oldest_open_at)} for e in self.errors]
        runs = [asdict(r) | {"last_success_age_seconds": self.age(r.last_success_at),
                             "watermark_age_seconds": self.age(r.watermark)} for r in self.runs]
        return plain({"taken_at": self.taken_at, "connections": [asdict(c) for c in self.connections],
                      "outbox": outbox, "errors": errors, "runs": runs})


def read_snapshot(store: Store, *, include_sent: bool = False, now: datetime | None = None) -> Snapshot:
    """The store's figures, read in one read-only transaction (one consistent view)."""
    taken_at = now or utcnow()
    with store.session() as session:
        if store.dialect == "postgresql":
            session.execute(text(f"SET LOCAL statement_timeout = {STATEMENT_TIMEOUT_MS}"))
        names: dict[int, str] = {}
        connections = []
        for cid, name, platform, status, reason in session.execute(
                select(Connection.id, Connection.name, Connection.platform, Connection.status,
                       Connection.paused_reason).order_by(Connection.name)):
            names[cid] = name
            connections.append(ConnectionFigures(name, platform, status, reason))

        def name_of(cid: int) -> str:
            return names.get(cid, f"#{cid}")

        statuses = (*NOT_SENT, OutboxStatus.SENT) if include_sent else NOT_SENT
        counts: dict[int, dict[str, Any]] = {cid: {} for cid in names}  # every connection, zeros included
        for cid, status, rows in session.execute(
                select(Outbox.target_connection_id, Outbox.status, func.count())
                .where(Outbox.status.in_(statuses)).group_by(Outbox.target_connection_id, Outbox.status)):
            counts.setdefault(cid, {})[str(status)] = int(rows)
        for cid, oldest in session.execute(
                select(Outbox.target_connection_id, func.min(Outbox.created_at))
                .where(Outbox.status.in_(UNDELIVERED)).group_by(Outbox.target_connection_id)):
            counts.setdefault(cid, {})["oldest_undelivered_at"] = oldest
        if include_sent:
            for by_status in counts.values():
                by_status.setdefault("sent", 0)
        outbox = sorted((OutboxFigures(target=name_of(cid), **figures) for cid, figures in counts.items()),
                        key=lambda o: o.target)

        errors: dict[tuple[int, str], dict[str, Any]] = {}
        for cid, kind, status, entries, oldest in session.execute(
                select(ErrorQueue.connection_id, ErrorQueue.kind, ErrorQueue.status, func.count(),
                       func.min(ErrorQueue.first_seen))
                .where(ErrorQueue.status.in_(ACTIONABLE))
                .group_by(ErrorQueue.connection_id, ErrorQueue.kind, ErrorQueue.status)):
            figures = errors.setdefault((cid, kind), {})
            figures[str(status)] = int(entries)
            if status == ErrorStatus.OPEN:
                figures["oldest_open_at"] = oldest
        error_figures = sorted((ErrorFigures(connection=name_of(cid), kind=kind, **figures)
                                for (cid, kind), figures in errors.items()),
                               key=lambda e: (e.connection, e.kind))

        runs = _runs(session, name_of)
    return Snapshot(taken_at, connections, outbox, error_figures, runs)


def _runs(session: Any, name_of: Any) -> list[RunFigures]:
    """Per (connection, entity) with a run or a watermark: the newest run, the newest success
    (each found by walking ``ix_sync_run_connection_id_entity_started_at`` backwards) and the
    watermark."""
    marks = {(cid, entity): (cursor, updated) for cid, entity, cursor, updated in session.execute(
        select(Watermark.connection_id, Watermark.entity, Watermark.cursor, Watermark.updated_at))}
    pairs = set(marks) | {(cid, entity) for cid, entity in session.execute(
        select(SyncRun.connection_id, SyncRun.entity).distinct())}
    newest = (SyncRun.started_at.desc(), SyncRun.id.desc())
    out = []
    for cid, entity in pairs:
        of_pair = (SyncRun.connection_id == cid, SyncRun.entity == entity)
        last = session.execute(
            select(SyncRun.id, SyncRun.status, SyncRun.mode, SyncRun.started_at, SyncRun.error)
            .where(*of_pair).order_by(*newest).limit(1)).one_or_none()
        success = session.scalar(
            select(SyncRun.finished_at).where(*of_pair, SyncRun.status == RunStatus.SUCCEEDED)
            .order_by(*newest).limit(1))
        cursor, updated = marks.get((cid, entity), (None, None))
        out.append(RunFigures(
            connection=name_of(cid), entity=entity,
            last_run_id=last.id if last else None, last_status=str(last.status) if last else None,
            last_mode=str(last.mode) if last else None, last_started_at=last.started_at if last else None,
            last_error=last.error if last else None, last_success_at=success,
            watermark=cursor, watermark_updated_at=updated))
    return sorted(out, key=lambda r: (r.connection, r.entity))
