"""Pull: read master data (and, for the push side, movements) from a connection into the store.

``pull(store, connections, "kd", "items")`` runs one read (DESIGN.md §5):

- **since** = watermark − ``lookback`` for an incremental run; None (everything) for a full run
  or when there is no watermark yet. ``since`` is inclusive, so the overlap is read again and
  de-duplicated by content hash.
- a ``sync_run`` row is opened; **each page is one transaction**: its records are upserted into
  the canonical table by natural key (a record whose content hash is unchanged is skipped), its
  keys are bound in ``id_map``, its failures go to the error queue, and the run's checkpoint
  (``resume_token``, counters, ``max_source_modified``) is updated, all committed together. The
  checkpoint update is a compare-and-set on the previous checkpoint, so two processes resuming
  the same run cannot both commit the same page.
- the **watermark** advances only when the run succeeds, to
  ``min(max_source_modified, run started)`` and never backwards: a record changed while the run
  was reading is read again next time. ``now`` is the run start; pass the source system's clock
  when it is known to be skewed from ours.
- an interrupted run (exception, Ctrl-C, killed process) **resumes from its checkpoint**:
  ``pull(..., resume_run=ID)``, or automatically when the last run of that connection, entity
  and mode is ``running``, ``interrupted`` or ``failed`` with a resume token. It keeps its
  original start time (the watermark cap) and its ``since``; pages already committed are not
  read again.
- records that fail (``Page.errors`` from the connector's mapping, a key the code map cannot
  translate, a canonical validation failure, an ``id_map`` conflict) go to the error queue
  (kind ``mapping``, record key, field, redacted raw payload, fingerprint) and the run goes on.

**Ids and codes.** Connectors speak codes, not vendor row ids, so a record's natural key as the
source reports it is its external id *and* external code (``id_map.external_id`` /
``external_code``; ``warehouse/bin`` for a location). The canonical id is that key translated
by :mod:`sync.codemap` (explicit table, then rules, then identity): with no mapping configured
the two are equal. The canonical record is stored under the canonical key. Locations translate
their warehouse through the ``warehouses`` map and keep their bin code.

Movements are not stored here: ``pull_movements`` runs the same machinery and hands each
canonical movement, codes translated, to a callback inside the page's transaction (so the push
side writes movement and outbox rows atomically with the checkpoint). ``pull_balances`` writes a
``balance_snapshot`` with bulk inserts.
"""
from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import closing
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal

from pydantic import ValidationError
from sqlalchemy import Text, bindparam, cast, delete, insert, select, update
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from canonical import CanonicalModel, Movement, RecordInvalid
from connectors.base import Entity, Page, RecordError
from connectors.errors import ConnectorError
from connectors.redaction import redact_text
from sync import codemap, metrics
from sync.connections import Connections
from sync.idmap import Binding, IdMapConflict, bind_many, entity_name, same_on_every_row
from sync.pull_errors import dead_letter, resolve_written
from sync.store import (
    BalanceSnapshot,
    BalanceSnapshotRow,
    Item,
    Location,
    Partner,
    RunStatus,
    Store,
    SyncMode,
    SyncRun,
    Warehouse,
    Watermark,
    utcnow,
)

__all__ = [
    "MASTER_ENTITIES",
    "PullResult",
    "RunTakenOver",
    "canonical_movement",
    "pull",
    "pull_balances",
    "pull_movements",
    "store_records",
]

log = logging.getLogger(__name__)

Mode = Literal["incremental", "full"]
MovementHandler = Callable[[Session, Movement], None]
#: Rows per INSERT executemany for balance snapshots (RELIABILITY §5.2(b): Core, in chunks).
SNAPSHOT_CHUNK = 5_000
#: Master records per SELECT of stored hashes and per INSERT/UPDATE executemany (well below the
#: parameter limits of SQLite and PostgreSQL).
UPSERT_CHUNK = 500
_RESUMABLE = (RunStatus.RUNNING, RunStatus.INTERRUPTED, RunStatus.FAILED)
#: Errors in a record callback that dead-letter the record rather than fail the run.
_RECORD_ERRORS = (RecordInvalid, ValidationError, ValueError, IdMapConflict)


@dataclass(frozen=True)
class _Table:
    model: type[Any]
    key_columns: tuple[str, ...]  # columns of the store table holding the natural key
    key_fields: tuple[str, ...]   # fields of the canonical record, same order


MASTER_ENTITIES: dict[str, _Table] = {
    "items": _Table(Item, ("sku",), ("sku",)),
    "warehouses": _Table(Warehouse, ("code",), ("code",)),
    "partners": _Table(Partner, ("code",), ("code",)),
    "locations": _Table(Location, ("warehouse_code", "bin_code"), ("warehouse", "code")),
}


class RunTakenOver(RuntimeError):
    """Another process committed a checkpoint of this run first; this one stops without writing."""


@dataclass
class PullResult:
    """What a pull did. ``read``/``written``/``failed`` are the run's totals (including pages
    committed before a resume); ``unchanged`` and ``pages`` count this call only."""

    run_id: int
    connection: str
    entity: str
    mode: str
    status: str
    resumed: bool
    since: datetime | None
    read: int = 0
    written: int = 0
    unchanged: int = 0
    failed: int = 0
    pages: int = 0
    max_source_modified: datetime | None = None
    watermark: datetime | None = None


@dataclass
class StoredCounts:
    """What one batch of records did: read, written (new or changed), unchanged, failed (dead-lettered)."""

    read: int = 0
    written: int = 0
    unchanged: int = 0
    failed: int = 0


@dataclass
class _Context:
    connection_id: int
    entity: str
    rules: codemap.CodeMapRules | None
    now: datetime
    on_movement: MovementHandler | None = None
    errors: list[tuple[str | None, str | None, str, Any]] = field(default_factory=list)

    def fail(self, key: str | None, field: str | None, message: str, raw: Any) -> None:
        self.errors.append((key, field, message, raw))


# --- the entry points -------------------------------------------------------------------------


def pull(store: Store, connections: Connections, name: str, entity: Entity | str, *, mode: Mode = "incremental",
         lookback: timedelta = timedelta(minutes=5), now: datetime | None = None, page_size: int | None = None,
         resume_run: int | None = None, auto_resume: bool = True, rules: codemap.CodeMapRules | None = None,
         on_movement: MovementHandler | None = None) -> PullResult:
    """Pull ``entity`` (items, warehouses, locations, partners; movements with ``on_movement``)
    from connection ``name`` into ``store``. See the module documentation for the rules.

    Raises what the connector raises (after recording the run as ``failed``, or ``interrupted``
    for KeyboardInterrupt/SystemExit, with its checkpoint kept for the next call to resume).
    """
    entity = entity_name(entity)
    if mode not in ("incremental", "full"):
        raise ValueError(f"mode must be 'incremental' or 'full', not {mode!r}")
    if entity == "movements" and on_movement is None:
        raise ValueError("pulling movements needs on_movement (see pull_movements)")
    if entity != "movements" and entity not in MASTER_ENTITIES:
        raise ValueError(f"cannot pull {entity!r}")
    if lookback < timedelta(0):
        raise ValueError("lookback must not be negative")
    connection_id = connections.id(name)
    connector = connections.connector(name)
    started = now or utcnow()

    run, resumed = _open_run(store, connection_id, entity, mode, lookback, started, resume_run, auto_resume)
    result = PullResult(run_id=run.id, connection=name, entity=entity, mode=run.mode, status=RunStatus.RUNNING,
                        resumed=resumed, since=run.since, read=run.read_count, written=run.written_count,
                        failed=run.failed_count, max_source_modified=run.max_source_modified)
    ctx = _Context(connection_id, entity, rules, started, on_movement)
    metrics.run_started(name, entity, run.mode)
    token, read_count = run.resume_token, run.read_count
    log.info("[%s] pull %s %s: run %d %s (since %s)", name, entity, run.mode, run.id,
             "resumed from its checkpoint" if resumed else "started", run.since)
    try:
        if token is not None:
            pages = connector.read(Entity(entity), resume=token, page_size=page_size)
        else:
            pages = connector.read(Entity(entity), since=run.since, page_size=page_size)
        with closing(_iterate(pages)):
            for page in pages:
                counts = _commit_page(store, ctx, run.id, page, token, read_count)
                metrics.records(name, entity, read=counts.read, written=counts.written, failed=counts.failed)
                token, read_count = page.resume, read_count + counts.read
                result.pages += 1
                result.read += counts.read
                result.written += counts.written
                result.unchanged += counts.unchanged
                result.failed += counts.failed
                if page.max_modified is not None:
                    result.max_source_modified = _later(result.max_source_modified, page.max_modified)
                if page.resume is None:
                    break
        result.watermark = _finish(store, run.id, token, read_count)
    except RunTakenOver:
        raise
    except BaseException as exc:
        status = RunStatus.INTERRUPTED if isinstance(exc, (KeyboardInterrupt, SystemExit)) else RunStatus.FAILED
        _abandon(store, run.id, status, exc)
        metrics.run_finished(name, entity, run.mode, status)
        exc.add_note(f"sync_run {run.id} is {status.value}; pull again (or resume_run={run.id}) to resume "
                     f"from its checkpoint")
        raise
    result.status = RunStatus.SUCCEEDED
    metrics.run_finished(name, entity, run.mode, result.status)
    log.info("[%s] pull %s: run %d succeeded: %d read, %d written, %d unchanged, %d failed, watermark %s", name,
             entity, run.id, result.read, result.written, result.unchanged, result.failed, result.watermark)
    return result


def pull_movements(store: Store, connections: Connections, name: str, on_movement: MovementHandler,
                   **options: Any) -> PullResult:
    """Pull movements with the same machinery: each canonical movement, its codes translated to
    canonical ones (:func:`canonical_movement`), is passed to ``on_movement(session, movement)``
    inside its page's transaction (in a savepoint). A ``RecordInvalid``/``ValueError``/
    ``IdMapConflict`` raised by the callback dead-letters that movement; anything else fails the
    run, which resumes from its last committed page."""
    return pull(store, connections, name, "movements", on_movement=on_movement, **options)


def pull_balances(store: Store, connections: Connections, name: str, *, warehouse: str | None = None,
                  page_size: int | None = None, now: datetime | None = None, translate: bool = True,
                  rules: codemap.CodeMapRules | None = None) -> int:
    """Read the connection's current balances into a new ``balance_snapshot``; returns its id.

    Rows are written page by page with Core ``executemany`` in chunks of ``SNAPSHOT_CHUNK``, each
    page in its own short transaction (a long read never holds the database's write lock); the
    last transaction sets ``row_count``, so a snapshot is complete when ``row_count`` equals its
    number of rows. A failed read deletes the partial snapshot. With ``translate`` sku and
    warehouse codes are translated to canonical ones through the code map, so snapshots of
    different systems line up; records the connector could not map go to the error queue.
    """
    connection_id = connections.id(name)
    connector = connections.connector(name)
    with store.session(write=True) as session:
        snapshot = BalanceSnapshot(connection_id=connection_id, taken_at=now or utcnow(), row_count=0)
        session.add(snapshot)
        session.flush()
        snapshot_id = snapshot.id
    total = 0
    table = BalanceSnapshotRow.__table__
    try:
        pages = connector.read_balances(warehouse=warehouse, page_size=page_size)
        with closing(_iterate(pages)):
            for page in pages:
                with store.session(write=True) as session:
                    rows = _balance_rows(session, connection_id, snapshot_id, page, translate, rules)
                    for start in range(0, len(rows), SNAPSHOT_CHUNK):
                        session.execute(insert(table), rows[start:start + SNAPSHOT_CHUNK])
                    for error in page.errors:
                        dead_letter(session, connection_id=connection_id, entity="balances",
                                    record_key=error.record_key, field=error.field, message=error.message,
                                    raw=error.raw)
                total += len(rows)
        with store.session(write=True) as session:
            session.execute(update(BalanceSnapshot).where(BalanceSnapshot.id == snapshot_id).values(row_count=total))
    except BaseException:
        try:
            with store.session(write=True) as session:
                session.execute(delete(BalanceSnapshotRow).where(BalanceSnapshotRow.snapshot_id == snapshot_id))
                session.execute(delete(BalanceSnapshot).where(BalanceSnapshot.id == snapshot_id))
        except Exception:  # the original failure matters more
            log.exception("[%s] could not delete the partial balance snapshot %d", name, snapshot_id)
        raise
    log.info("[%s] balance snapshot %d: %d rows", name, snapshot_id, total)
    return snapshot_id


# --- runs -------------------------------------------------------------------------------------


def _open_run(store: Store, connection_id: int, entity: str, mode: str, lookback: timedelta, started: datetime,
              resume_run: int | None, auto_resume: bool) -> tuple[SyncRun, bool]:
    with store.session(write=True) as session:
        run: SyncRun | None = None
        if resume_run is not None:
            run = session.get(SyncRun, resume_run)
            if run is None:
                raise ValueError(f"sync_run {resume_run} does not exist")
            if run.connection_id != connection_id or run.entity != entity:
                raise ValueError(f"sync_run {resume_run} is a run of another connection or entity")
            if run.status == RunStatus.SUCCEEDED:
                raise ValueError(f"sync_run {resume_run} has already succeeded; nothing to resume")
        elif auto_resume:
            last = session.scalar(
                select(SyncRun)
                .where(SyncRun.connection_id == connection_id, SyncRun.entity == entity,
                       SyncRun.mode.in_((SyncMode.FULL, SyncMode.INCREMENTAL)))
                .order_by(SyncRun.started_at.desc(), SyncRun.id.desc()).limit(1))
            if (last is not None and last.mode == mode and last.status in _RESUMABLE
                    and last.resume_token is not None):
                run = last
        if run is not None:
            run.status = RunStatus.RUNNING
            run.error = None
            run.finished_at = None
            return run, True
        since = None
        if mode == "incremental":
            watermark = session.get(Watermark, (connection_id, entity))
            if watermark is not None:
                since = watermark.cursor - lookback
        run = SyncRun(connection_id=connection_id, entity=entity, mode=mode, status=RunStatus.RUNNING,
                      started_at=started, since=since)
        session.add(run)
        session.flush()
        return run, False


def store_records(session: Session, connection_id: int, entity: Entity | str, records: Sequence[Any],
                  errors: Sequence[RecordError] = (), *, now: datetime | None = None,
                  rules: codemap.CodeMapRules | None = None, on_movement: MovementHandler | None = None) -> StoredCounts:
    """Write canonical ``records`` read from ``connection_id`` exactly as a pull writes one page, in
    the caller's transaction and without a checkpoint: master records are upserted by natural key
    and bound in ``id_map``; movements, codes translated, go to ``on_movement``; ``errors`` and the
    records that fail are dead-lettered. The pull's pages and the webhook intake
    (:mod:`sync.webhooks`) both come through here."""
    entity = entity_name(entity)
    if entity == "movements" and on_movement is None:
        raise ValueError("storing movements needs on_movement")
    if entity != "movements" and entity not in MASTER_ENTITIES:
        raise ValueError(f"cannot store {entity!r}")
    ctx = _Context(connection_id, entity, rules, now or utcnow(), on_movement)
    return _store(session, ctx, records, errors)


def _store(session: Session, ctx: _Context, records: Sequence[Any], errors: Sequence[RecordError]) -> StoredCounts:
    ctx.errors = []
    if ctx.entity == "movements":
        counts = _write_movements(session, ctx, records)
    else:
        counts = _write_master(session, ctx, records)
    for error in errors:
        ctx.fail(error.record_key, error.field, error.message, error.raw)
    for key, field_, message, raw in ctx.errors:
        dead_letter(session, connection_id=ctx.connection_id, entity=ctx.entity, record_key=key, field=field_,
                    message=message, raw=raw, now=ctx.now)
    counts.read = len(records) + len(errors)
    counts.failed = len(ctx.errors)
    return counts


def _commit_page(store: Store, ctx: _Context, run_id: int, page: Page[Any], token: str | None,
                 read_count: int) -> StoredCounts:
    """Write one page and its checkpoint in one transaction."""
    with store.session(write=True) as session:
        counts = _store(session, ctx, page.records, page.errors)
        values: dict[str, Any] = {
            "resume_token": page.resume,
            "read_count": SyncRun.read_count + counts.read,
            "written_count": SyncRun.written_count + counts.written,
            "failed_count": SyncRun.failed_count + counts.failed,
            "updated_at": utcnow(),
        }
        if page.max_modified is not None:
            current = session.scalar(select(SyncRun.max_source_modified).where(SyncRun.id == run_id))
            values["max_source_modified"] = _later(current, page.max_modified)
        claimed = session.execute(
            update(SyncRun)
            .where(SyncRun.id == run_id, SyncRun.status == RunStatus.RUNNING, SyncRun.read_count == read_count,
                   SyncRun.resume_token.is_not_distinct_from(token))
            .values(**values).execution_options(synchronize_session=False))
        if claimed.rowcount != 1:
            raise RunTakenOver(f"sync_run {run_id}: another process moved its checkpoint first")
    return counts


def _finish(store: Store, run_id: int, token: str | None, read_count: int) -> datetime | None:
    """Mark the run succeeded and advance the watermark; returns the watermark."""
    with store.session(write=True) as session:
        run = session.get(SyncRun, run_id)
        assert run is not None
        if run.status != RunStatus.RUNNING or run.read_count != read_count or run.resume_token != token:
            raise RunTakenOver(f"sync_run {run_id}: another process moved its checkpoint first")
        run.status = RunStatus.SUCCEEDED
        run.resume_token = None
        run.finished_at = utcnow()
        watermark = session.get(Watermark, (run.connection_id, run.entity))
        if run.max_source_modified is None:
            return watermark.cursor if watermark is not None else None
        cursor = min(run.max_source_modified, run.started_at)
        if watermark is None:
            watermark = Watermark(connection_id=run.connection_id, entity=run.entity, cursor=cursor,
                                  sync_run_id=run.id)
            session.add(watermark)
        elif cursor > watermark.cursor:
            watermark.cursor = cursor
            watermark.sync_run_id = run.id
        return watermark.cursor


def _abandon(store: Store, run_id: int, status: RunStatus, exc: BaseException) -> None:
    message = redact_text(f"{type(exc).__name__}: {exc}")[:4000]
    try:
        with store.session(write=True) as session:
            session.execute(update(SyncRun).where(SyncRun.id == run_id, SyncRun.status == RunStatus.RUNNING)
                            .values(status=status, error=message, updated_at=utcnow())
                            .execution_options(synchronize_session=False))
    except Exception:  # the original failure matters more than the bookkeeping
        log.exception("could not record sync_run %d as %s", run_id, status)


# --- master data --------------------------------------------------------------------------------


def _external_key(table: _Table, record: CanonicalModel) -> str:
    return "/".join(str(getattr(record, name)) for name in table.key_fields)


def _write_master(session: Session, ctx: _Context, records: Sequence[CanonicalModel]) -> StoredCounts:
    table = MASTER_ENTITIES[ctx.entity]
    counts = StoredCounts()
    # 1. translate keys to canonical codes (last one wins if a page repeats a key)
    translated: dict[str, tuple[str, CanonicalModel]] = {}  # external key -> (canonical key, record)
    for record, canonical in _translate_keys(session, ctx, table, records):
        external = _external_key(table, record)
        if canonical is None:
            ctx.fail(external, table.key_fields[-1] if ctx.entity != "locations" else "warehouse",
                     f"{record.label}: the code map has no canonical code for {external!r}",
                     record.model_dump(mode="json"))
            continue
        translated[external] = (external if canonical is record else _external_key(table, canonical), canonical)
    # 2. bind keys in id_map; conflicts are dead letters
    _, conflicts = bind_many(session, ctx.connection_id, ctx.entity,
                             [Binding(c_key, e_key, e_key) for e_key, (c_key, _) in translated.items()])
    for conflict in conflicts:
        external = conflict.wanted.external_id
        _, record = translated.pop(external)
        ctx.fail(external, conflict.field, str(conflict), record.model_dump(mode="json"))
    # 3. upsert by natural key, skipping unchanged hashes
    by_key = {c_key: record for c_key, record in translated.values()}
    written = _upsert(session, ctx, table, by_key)
    counts.written = written
    counts.unchanged = len(by_key) - written
    resolve_written(session, connection_id=ctx.connection_id, entity=ctx.entity, record_keys=translated, now=ctx.now)
    return counts


def _translate_keys(session: Session, ctx: _Context, table: _Table,
                    records: Sequence[CanonicalModel]) -> Iterator[tuple[CanonicalModel, CanonicalModel | None]]:
    """Each record with its copy under canonical codes (None when a code cannot be translated)."""
    entity = "warehouses" if ctx.entity == "locations" else ctx.entity
    field_ = "warehouse" if ctx.entity == "locations" else table.key_fields[0]
    codes = codemap.to_canonicals(session, ctx.connection_id, entity, [getattr(r, field_) for r in records],
                                  rules=ctx.rules)
    for record in records:
        code = codes.get(getattr(record, field_))
        if code is None:
            yield record, None
        elif code == getattr(record, field_):
            yield record, record
        else:
            try:
                yield record, record.replace(**{field_: code})
            except (RecordInvalid, ValidationError, ValueError) as exc:
                ctx.fail(_external_key(table, record), field_, f"{record.label}: canonical code {code!r}: {exc}",
                         record.model_dump(mode="json"))


def _upsert(session: Session, ctx: _Context, table: _Table, records: dict[str, CanonicalModel]) -> int:
    """Insert new records, update changed ones; returns how many were written.

    Each record is hashed once. One SELECT per ``UPSERT_CHUNK`` keys reads the stored ids and
    hashes; unchanged records stop there (no payload is built for them). New records go in with
    one Core ``INSERT`` executemany and changed ones with one ``UPDATE … WHERE id = ?``
    executemany per chunk, in a savepoint: if another connection inserted one of the keys first,
    the savepoint is rolled back and the page is read again (up to three times).
    """
    if not records:
        return 0
    hashed = [(c_key, record, record.content_hash()) for c_key, record in records.items()]
    for attempt in range(3):
        try:
            with session.begin_nested():
                return sum(_upsert_chunk(session, ctx, table, hashed[start:start + UPSERT_CHUNK])
                           for start in range(0, len(hashed), UPSERT_CHUNK))
        except IntegrityError:
            if attempt == 2:
                raise
            continue  # another connection's pull inserted one of these keys first: read again
    return 0  # pragma: no cover


def _upsert_chunk(session: Session, ctx: _Context, table: _Table,
                  chunk: Sequence[tuple[str, CanonicalModel, str]]) -> int:
    existing = _existing(session, table, chunk)
    target = table.model.__table__
    stamp, now = same_on_every_row(session, target.c.updated_at, utcnow())
    inserts: list[dict[str, Any]] = []
    updates: list[dict[str, Any]] = []
    for c_key, record, digest in chunk:
        found = existing.get(c_key)
        if found is not None and found[1] == digest:
            continue
        values = {
            "content_hash": digest,
            "payload_json": record.model_dump_json(),
            "source_connection_id": ctx.connection_id,
            "source_modified_at": getattr(record, "modified_at", None),
            stamp.key: now,
        }
        if found is None:
            values.update(zip(table.key_columns, (getattr(record, f) for f in table.key_fields)))
            inserts.append(values)
        else:
            values["_id"] = found[0]
            updates.append(values)
    payload = _json_text(session)
    if inserts:
        session.execute(insert(target).values(payload=payload, created_at=stamp, updated_at=stamp), inserts)
    if updates:
        session.execute(update(target).where(target.c.id == bindparam("_id"))
                        .values(payload=payload, updated_at=stamp), updates)
    return len(inserts) + len(updates)


def _json_text(session: Session) -> Any:
    """The payload column's value as JSON text already serialised (``model_dump_json``, the same
    JSON ``model_dump(mode="json")`` gives, 3-4× faster): a plain text parameter on SQLite,
    cast to JSONB on PostgreSQL."""
    param = bindparam("payload_json", type_=Text())
    return cast(param, JSONB) if session.get_bind().dialect.name == "postgresql" else param


def _existing(session: Session, table: _Table,
              chunk: Sequence[tuple[str, CanonicalModel, str]]) -> dict[str, tuple[int, str]]:
    """``{canonical key: (id, content_hash)}`` of the chunk's records already stored (one SELECT;
    for a two-column key each column is matched against the chunk's values, which the unique
    index answers, rather than reading every bin of the chunk's warehouses)."""
    model = table.model
    columns = [getattr(model, name) for name in table.key_columns]
    wanted = {c_key for c_key, _, _ in chunk}
    conditions = [column.in_({getattr(record, name) for _, record, _ in chunk})
                  for column, name in zip(columns, table.key_fields, strict=True)]
    out: dict[str, tuple[int, str]] = {}
    for row in session.execute(select(model.id, model.content_hash, *columns).where(*conditions)):
        key = row[2] if len(columns) == 1 else "/".join(str(v) for v in row[2:])
        if key in wanted:
            out[key] = (row[0], row[1])
    return out


# --- movements ----------------------------------------------------------------------------------


def canonical_movement(session: Session, connection_id: int, movement: Movement, *,
                       rules: codemap.CodeMapRules | None = None) -> Movement:
    """``movement`` as read from ``connection_id`` with its sku, warehouse and counterparty codes
    translated to canonical ones (table, rules, identity). Raises ValueError naming the field of a
    code the code map cannot translate."""
    def translate(entity: str, code: str | None, where: str) -> str | None:
        if code is None:
            return None
        found = codemap.to_canonical(session, connection_id, entity, code, rules=rules)
        if found is None:
            raise _FieldError(where, f"{movement.label}: {where}: the code map has no canonical code for {code!r}")
        return found

    lines = []
    changed = False
    for i, line in enumerate(movement.lines):
        changes = {
            "sku": translate("items", line.sku, f"lines[{i}].sku"),
            "from_warehouse": translate("warehouses", line.from_warehouse, f"lines[{i}].from_warehouse"),
            "to_warehouse": translate("warehouses", line.to_warehouse, f"lines[{i}].to_warehouse"),
        }
        changes = {k: v for k, v in changes.items() if v != getattr(line, k)}
        changed = changed or bool(changes)
        lines.append(line.replace(**changes) if changes else line)
    counterparty = movement.counterparty
    if counterparty is not None:
        code = translate("partners", counterparty.code, "counterparty.code")
        if code != counterparty.code:
            counterparty = counterparty.replace(code=code)
            changed = True
    return movement.replace(lines=tuple(lines), counterparty=counterparty) if changed else movement


class _FieldError(ValueError):
    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


def _write_movements(session: Session, ctx: _Context, records: Sequence[Movement]) -> StoredCounts:
    assert ctx.on_movement is not None
    counts = StoredCounts()
    for movement in records:
        try:
            with session.begin_nested():
                ctx.on_movement(session, canonical_movement(session, ctx.connection_id, movement, rules=ctx.rules))
            counts.written += 1
        except _RECORD_ERRORS as exc:
            ctx.fail(movement.reference, _field_of(exc), f"{movement.label}: {exc}", movement.model_dump(mode="json"))
        except ConnectorError as exc:
            if exc.retryable:
                raise
            ctx.fail(movement.reference, _field_of(exc), f"{movement.label}: {exc}", movement.model_dump(mode="json"))
    return counts


def _field_of(exc: BaseException) -> str | None:
    if isinstance(exc, RecordInvalid) and exc.problems:
        return exc.problems[0].field or None
    if isinstance(exc, IdMapConflict):
        return exc.field
    return getattr(exc, "field", None)


# --- balances ---------------------------------------------------------------------------------


def _balance_rows(session: Session, connection_id: int, snapshot_id: int, page: Page[Any], translate: bool,
                  rules: codemap.CodeMapRules | None) -> list[dict[str, Any]]:
    skus: dict[str, str | None] = {}
    warehouses: dict[str, str | None] = {}
    if translate and page.records:
        skus = codemap.to_canonicals(session, connection_id, "items", {b.sku for b in page.records}, rules=rules)
        warehouses = codemap.to_canonicals(session, connection_id, "warehouses",
                                           {b.warehouse for b in page.records}, rules=rules)
    rows = []
    for balance in page.records:
        rows.append({
            "snapshot_id": snapshot_id,
            "sku": skus.get(balance.sku) or balance.sku,
            "warehouse": warehouses.get(balance.warehouse) or balance.warehouse,
            "bin": balance.bin,
            "lot": balance.lot,
            "on_hand": balance.on_hand,
            "available": balance.available,
            "unit": balance.unit,
            "unit_cost": balance.unit_cost,
        })
    return rows


# --- helpers ----------------------------------------------------------------------------------


def _iterate(pages: Iterable[Page[Any]]) -> Any:
    """Something ``closing`` can close: the generator itself, or a no-op wrapper."""
    return pages if hasattr(pages, "close") else _NoClose()


class _NoClose:
    def close(self) -> None:
        pass


def _later(a: datetime | None, b: datetime | None) -> datetime | None:
    if a is None:
        return b
    if b is None:
        return a
    return max(a, b)

