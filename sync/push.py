"""Movements into the outbox (DESIGN.md §5 "Push"; RELIABILITY.md §1.2-1.3).

:func:`enqueue` writes a movement and one outbox row per target connection in the caller's
transaction (it flushes, never commits), so a movement is never stored without its deliveries
or the other way round. Delivery (:mod:`sync.delivery`) takes it from there.

Idempotency keys
    One fixed key per (movement, target), derived from the movement's ``reference`` and the
    target *connection name* (stable across stores, unlike row ids), persisted before the first
    attempt and reused by every retry and operator replay::

        key = "H" + crockford_base32(sha256(reference + "\\x1f" + target_name))[:10]

    11 characters from ``0-9 A-Z`` without I, L, O, U: it fits SAP B1's ``Reference2`` (11),
    Kingdee's remark (``FNote``) and any filter grammar without quoting, and upper case only, so
    case-insensitive collations cannot fold two keys together. 50 bits of hash: if a key is
    already taken by another (movement, target), the next candidate hashes
    ``reference + "\\x1f" + target + "\\x1f" + n`` for n = 2, 3, ...; whichever key was stored
    first stays that row's key for ever.

Ordering keys
    Movements for the same item and warehouse are delivered in order per target: ``claim``
    never hands out a row while an older row of the same target with the same ``ordering_key``
    is still pending, sending or ambiguous. A row has one ordering key, the movement's *anchor*
    position ``sku@warehouse``: the first position whose stock goes down (the side a
    negative-stock refusal happens on: issues, transfers), or, for a movement that only adds
    stock, the first position it adds to. So a receipt of A into W1 and a later transfer of A out
    of W1 share ``A@W1`` and go in that order. A multi-line movement is ordered on its anchor
    only; its other lines are not ordered against movements anchored elsewhere, nor is the
    inbound side of a transfer. Delivery closes that gap: a refusal while an older in-flight row
    adds stock where the refused one takes it is deferred, not dead-lettered
    (:mod:`sync.delivery`). A key longer than 255 characters is replaced by its hash.

Durable intake
    :func:`enqueue` writes in the caller's transaction and leaves its durability to the caller.
    A transaction that *accepts* movements from outside (a file through ``erphub push``, the
    Python API, a webhook) must be durable, because once it is acknowledged the source will not
    send again: open it with ``Store.session(durable=True)``, or call :func:`accept`, which does.
    Movements the hub pulls from a source (``sync.pull`` → :func:`enqueue`) and migration pages
    keep the ordinary session: the source still holds those documents, and a page lost to a
    power loss is read again from the last checkpoint and re-enqueued idempotently.

Re-enqueueing
    The same reference with the same content (``canonical.content_hash``, which ignores
    ``modified_at``) is a no-op that returns the stored id (targets it lacks are added); the same
    reference with different content raises :class:`MovementConflict`, naming the record.

Echoes
    A movement is never delivered back to the connection it came from. And a movement the hub
    has delivered to a system comes back when that system is itself a source (its documents are
    pulled, or it pushes webhooks): read from a connection that already has an outbox row for
    it, it is recognised as our own write and ignored, whatever that system kept of its content.
    So two systems can feed each other without posting a document twice.
"""
from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypedDict, Unpack
from weakref import WeakKeyDictionary

from sqlalchemy import Connection as SAConnection
from sqlalchemy import Dialect, Table, bindparam, insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

import canonical
from connectors.errors import ConfigError
from sync.connections import Connections, ensure_connection
from sync.store import Connection, Movement, Outbox, Store, begin_write, utcnow
from sync.store.types import json_dumps

KEY_LENGTH = 11
KEY_PREFIX = "H"
_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_KEY_SHIFTS = tuple(range(0, 5 * (KEY_LENGTH - len(KEY_PREFIX)), 5))  # lowest 5 bits first
_MAX_ORDERING_KEY = 255
_MAX_KEY_CANDIDATES = 20


class MovementConflict(ValueError):
    """A movement reference already stored with different content."""

    def __init__(self, reference: str, *, stored_hash: str, new_hash: str, stored_id: int,
                 source_document: str | None = None) -> None:
        where = f" (source document {source_document})" if source_document else ""
        super().__init__(
            f"movement {reference!r}{where}: already enqueued as movement #{stored_id} with different content "
            f"(stored hash {stored_hash[:12]}…, new {new_hash[:12]}…); a changed document needs a new reference "
            "or a reversal, the hub never posts two versions under one reference")
        self.reference = reference
        self.stored_id = stored_id


def idempotency_key(reference: str, target: str, n: int = 1) -> str:
    """The ``n``-th candidate key for (``reference``, ``target``); see the module doc."""
    material = f"{reference}\x1f{target}" if n == 1 else f"{reference}\x1f{target}\x1f{n}"
    digest = int.from_bytes(hashlib.sha256(material.encode("utf-8")).digest()[:8], "big")
    return KEY_PREFIX + "".join([_CROCKFORD[(digest >> shift) & 31] for shift in _KEY_SHIFTS])


def ordering_key(movement: canonical.Movement) -> str | None:
    """``sku@warehouse`` of the movement's anchor position (see the module doc)."""
    deltas = movement.stock_deltas()
    if not deltas:
        return None
    anchor = next((d for d in deltas if d.quantity < 0), deltas[0])
    key = f"{anchor.sku}@{anchor.warehouse}"
    if len(key) > _MAX_ORDERING_KEY:
        key = "h:" + hashlib.sha256(key.encode("utf-8")).hexdigest()
    return key


def payload_of(movement: canonical.Movement) -> dict[str, Any]:
    """The stored form of a movement (JSON; read back with :func:`movement_of`)."""
    return movement.model_dump(mode="json", exclude_none=True)


def movement_of(payload: dict[str, Any]) -> canonical.Movement:
    return canonical.Movement.model_validate(payload)


@dataclass(frozen=True)
class _Target:
    id: int
    name: str


def _known_id(session: Session, connections: Connections, name: str) -> int | None:
    """``name``'s row id from the ``Connections`` cache, when the session is on its store.

    ``Connections.id`` caches only ids it committed itself, so a cached id never belongs to a
    transaction that might still roll back; an id created in the caller's transaction (by
    ``ensure_connection`` below) is not cached here."""
    cached = getattr(connections, "_ids", None)
    if not cached or name not in cached:
        return None
    store = getattr(connections, "store", None)
    if store is None or session.get_bind() is not getattr(store, "engine", None):
        return None
    return cached[name]


def _check_targets(targets: Sequence[int | str]) -> None:
    if isinstance(targets, (str, int)):
        raise TypeError("targets must be a sequence of connection names or ids")
    if not targets:
        raise ValueError("a movement needs at least one target connection")
    for target in targets:
        if isinstance(target, bool) or not isinstance(target, (int, str)):
            raise TypeError(f"target {target!r} is not a connection name or id")


def _targets(session: Session, targets: Sequence[int | str], connections: Connections) -> list[_Target]:
    _check_targets(targets)
    out: dict[int, _Target] = {}
    for target in targets:
        if isinstance(target, int):
            row = session.get(Connection, target)
            if row is None:
                raise ConfigError(f"target connection id {target} does not exist")
            if row.name not in connections.settings:
                raise ConfigError(f"target connection {row.name!r} (id {target}) is not configured")
            out[row.id] = _Target(row.id, row.name)
        else:
            platform = connections.platform(target)  # ConfigError naming the configured ones
            row_id = _known_id(session, connections, target)
            if row_id is None:
                row_id = ensure_connection(session, target, platform)
            out[row_id] = _Target(row_id, target)
    return list(out.values())


def _source_id(session: Session, source: str | None, connections: Connections) -> int | None:
    if source is None:
        return None
    platform = connections.platform(source)
    known = _known_id(session, connections, source)
    return known if known is not None else ensure_connection(session, source, platform)


def enqueue(
    session: Session,
    movement: canonical.Movement,
    targets: Sequence[int | str],
    *,
    connections: Connections,
    source_connection: str | None = None,
    source_document: str | None = None,
    now: datetime | None = None,
) -> int:
    """Store ``movement`` and one outbox row per target in the caller's transaction; its id.

    ``targets`` are connection names or ``connection`` row ids. Idempotent on the movement's
    reference (see the module doc); raises :class:`MovementConflict` for a reference already
    stored with other content, ``ConfigError`` for a target that is not configured.
    """
    return enqueue_many(session, [movement], targets, connections=connections, source_connection=source_connection,
                        source_documents=[source_document], now=now)[0]


def enqueue_many(
    session: Session,
    movements: Iterable[canonical.Movement],
    targets: Sequence[int | str],
    *,
    connections: Connections,
    source_connection: str | None = None,
    source_documents: Sequence[str | None] | None = None,
    now: datetime | None = None,
) -> list[int]:
    """:func:`enqueue` for many movements in one transaction (all or nothing); their ids in order.

    Happy path per movement: one ``INSERT … ON CONFLICT DO NOTHING`` for the movement and one
    per outbox row, no ORM flush (see :class:`_Writer`). Only when the reference is already
    stored does it read the stored row (hash, existing targets); only when an idempotency key is
    already taken does it look further (next candidate).
    """
    return _enqueue_in_session(session, _batch(movements, source_documents), targets, connections,
                               source_connection, now)


def _enqueue_in_session(session: Session, batch: _Batch, targets: Sequence[int | str], connections: Connections,
                        source_connection: str | None, now: datetime | None) -> list[int]:
    session.flush()  # the caller's pending ORM objects go first (the statements below do not autoflush)
    # SQLite: open the write transaction now, so the statements below run in one transaction
    # holding the write lock (and a savepoint, if one is needed, nests inside it).
    begin_write(session)
    resolved = _targets(session, targets, connections)
    source_id = _source_id(session, source_connection, connections)
    return _write(_writer(session), batch, resolved, source_id, now or utcnow())


class EnqueueOptions(TypedDict, total=False):
    """:func:`enqueue_many`'s optional keywords, which :func:`accept` passes on."""

    source_connection: str | None
    source_documents: Sequence[str | None] | None
    now: datetime | None


def accept(store: Store, movements: Iterable[canonical.Movement], targets: Sequence[int | str], *,
           connections: Connections, durable: bool = True, **options: Unpack[EnqueueOptions]) -> list[int]:
    """Accept movements from outside: :func:`enqueue_many` in a durable write transaction of
    its own, committed before it returns; their ids in order.

    Once this returns the movements survive a power loss, so the caller may acknowledge them
    to their source (see "Durable intake" in the module doc). ``durable=False`` is only for
    input that can be read again from where it came from (and for the benchmark's orientation
    figure). On SQLite, targets and the source are resolved through ``connections`` (row ids
    it commits and caches) and the rows are written in a driver transaction
    (``Store.driver_transaction``), without an ORM session.
    """
    batch = _batch(movements, options.get("source_documents"))
    _check_targets(targets)
    source, now = options.get("source_connection"), options.get("now")
    if store.dialect != "sqlite" or connections.store is not store or \
            not all(isinstance(target, str) for target in targets):  # ids to check, or another store's cache
        with store.session(write=True, durable=durable) as session:
            return _enqueue_in_session(session, batch, targets, connections, source, now)
    for name in targets:
        connections.platform(str(name))  # ConfigError naming the configured ones, before any row is made
    resolved = list({(t := connections.id(str(name))): _Target(t, str(name)) for name in targets}.values())
    source_id = connections.id(source) if source is not None else None
    with store.driver_transaction(durable=durable) as driver:
        return _write(_SqliteWriter(driver, store.engine.dialect), batch, resolved, source_id, now or utcnow())


@dataclass(frozen=True)
class _Batch:
    """Validated movements with what is worked out once per movement (before the transaction
    takes the write lock): source document, content hash, ordering key."""

    movements: list[canonical.Movement]
    documents: list[str | None]
    digests: list[str]
    orders: list[str | None]


def _batch(movements: Iterable[canonical.Movement], source_documents: Sequence[str | None] | None) -> _Batch:
    movements = list(movements)
    documents = list(source_documents) if source_documents is not None else [None] * len(movements)
    if len(documents) != len(movements):
        raise ValueError("source_documents must have one entry per movement")
    references = [m.reference for m in movements]
    if len(set(references)) != len(references):
        seen: set[str] = set()
        twice = next(r for r in references if r in seen or seen.add(r))  # type: ignore[func-returns-value]
        raise ValueError(f"movement {twice!r} appears twice in one batch")
    return _Batch(movements, [d or m.source_document for d, m in zip(documents, movements, strict=True)],
                  [canonical.content_hash(m) for m in movements], [ordering_key(m) for m in movements])


def _write(writer: _Writer | _SqliteWriter, batch: _Batch, targets: list[_Target], source_id: int | None,
           now: datetime) -> list[int]:
    writer.stamp(now)
    ids: list[int] = []
    for movement, document, digest, order in zip(batch.movements, batch.documents, batch.digests, batch.orders,
                                                 strict=True):
        row_id = writer.insert_movement(movement, digest, source_id, document)
        new = row_id is not None
        if row_id is None:  # the reference is stored already (by us earlier, or by a concurrent enqueue)
            stored = writer.stored_movement(movement.reference)
            if stored is None:
                raise RuntimeError(f"movement {movement.reference!r}: insert conflicted but no stored row found")
            row_id, stored_hash, origin = stored
            existing = writer.targets_of(row_id)
            if source_id is not None and source_id != origin and source_id in existing:
                # Our own delivery read back from the system we posted it to (a pull of its
                # documents, a webhook): not a new movement. Its content may differ where that
                # system keeps less than we sent, so this is not a conflict either.
                ids.append(row_id)
                continue
            if stored_hash != digest:
                raise MovementConflict(movement.reference, stored_hash=stored_hash, new_hash=digest,
                                       stored_id=row_id, source_document=document)
            # never deliver a movement back to the system it came from
            _add_outbox_rows(writer, row_id, movement, [t for t in targets if t.id != origin], order,
                             existing)
        else:
            _add_outbox_rows(writer, row_id, movement, targets, order, set())
        ids.append(row_id)
    return ids


def _writer(session: Session) -> _Writer | _SqliteWriter:
    connection = session.connection()
    if connection.dialect.name == "sqlite":
        return _SqliteWriter(connection.connection.dbapi_connection, connection.dialect)
    return _Writer(connection, session.begin_nested)


class _Writer:
    """The statements of one enqueue, as Core on the session's connection (same transaction).

    ``nested`` opens a savepoint, needed only on a dialect without ``ON CONFLICT``."""

    def __init__(self, connection: SAConnection, nested: Callable[[], AbstractContextManager[Any]]) -> None:
        self.connection = connection
        self.nested = nested
        self.statements = _statements(connection.dialect.name)
        self.now: datetime | None = None

    def stamp(self, now: datetime) -> None:
        """The time written into every row of this batch."""
        self.now = now

    def _insert_or_nothing(self, which: str, params: dict[str, Any]) -> int | None:
        stmt = self.statements[which]
        if self.statements["upsert"]:
            return self.connection.execute(stmt, params).scalar()
        try:  # a dialect without ON CONFLICT: a savepoint keeps the transaction usable
            with self.nested():
                return self.connection.execute(stmt, params).scalar()
        except IntegrityError:
            return None

    def insert_movement(self, movement: canonical.Movement, digest: str, source_id: int | None,
                        document: str | None) -> int | None:
        """The new movement's id, or None when its reference is stored already."""
        return self._insert_or_nothing("movement", {
            "reference": movement.reference, "kind": movement.kind.value, "document_date": movement.document_date,
            "payload": payload_of(movement), "content_hash": digest, "source_connection_id": source_id,
            "source_document": document, "created_at": self.now})

    def insert_outbox(self, movement_id: int, target_id: int, key: str, order: str | None) -> int | None:
        """The new outbox row's id, or None when (movement, target) or the key is taken."""
        return self._insert_or_nothing("outbox", {
            "movement_id": movement_id, "target_connection_id": target_id, "idempotency_key": key,
            "ordering_key": order, "next_attempt_at": self.now, "created_at": self.now, "updated_at": self.now})

    def stored_movement(self, reference: str) -> tuple[int, str, int | None] | None:
        """``(id, content hash, source connection id)`` of the stored movement, or None."""
        row = self.connection.execute(self.statements["stored"], {"reference": reference}).first()
        return None if row is None else (int(row[0]), str(row[1]), row[2])

    def targets_of(self, movement_id: int) -> set[int]:
        return set(self.connection.execute(self.statements["targets"], {"movement_id": movement_id}).scalars())

    def has_row(self, movement_id: int, target_id: int) -> bool:
        return self.connection.execute(self.statements["exists"], {"movement_id": movement_id,
                                                                   "target_id": target_id}).first() is not None


class _SqliteWriter:
    """:class:`_Writer`'s statements straight on the SQLite driver connection, in the
    transaction open on it (a session's, or ``Store.driver_transaction``'s).

    Each is the Core statement compiled once per dialect (:class:`_DriverStatement`), its
    values bound with SQLAlchemy's own bind processors for the columns, so the stored values
    are exactly what the Core statements store (a test compares every column); the driver's
    statement cache keeps them prepared. The payload is ``model_dump_json`` of the movement,
    the same text as the store's JSON serialiser gives for :func:`payload_of` (a test pins
    that) without building the dict first; the batch's time is converted once."""

    def __init__(self, dbapi_connection: Any, dialect: Dialect) -> None:
        self.statements = _driver_statements(dialect)
        self.cursor = dbapi_connection.cursor()
        self.stamped: Any = None

    def stamp(self, now: datetime) -> None:
        self.stamped = self.statements.movement.process("created_at", now)

    def insert_movement(self, movement: canonical.Movement, digest: str, source_id: int | None,
                        document: str | None) -> int | None:
        insert = self.statements.movement
        payload = movement.model_dump_json(exclude_none=True) if self.statements.store_serialiser else \
            insert.process("payload", payload_of(movement))
        return insert.insert(self.cursor, {
            "reference": movement.reference, "kind": movement.kind.value,
            "document_date": insert.process("document_date", movement.document_date),
            "payload": payload, "content_hash": digest,
            "source_connection_id": source_id, "source_document": document, "created_at": self.stamped})

    def insert_outbox(self, movement_id: int, target_id: int, key: str, order: str | None) -> int | None:
        stamped = self.stamped
        return self.statements.outbox.insert(self.cursor, {
            "movement_id": movement_id, "target_connection_id": target_id, "idempotency_key": key,
            "ordering_key": order, "next_attempt_at": stamped, "created_at": stamped, "updated_at": stamped})

    def stored_movement(self, reference: str) -> tuple[int, str, int | None] | None:
        rows = self.statements.stored.rows(self.cursor, {"reference": reference})
        return None if not rows else (int(rows[0][0]), str(rows[0][1]), rows[0][2])

    def targets_of(self, movement_id: int) -> set[int]:
        return {row[0] for row in self.statements.targets.rows(self.cursor, {"movement_id": movement_id})}

    def has_row(self, movement_id: int, target_id: int) -> bool:
        return bool(self.statements.exists.rows(self.cursor, {"movement_id": movement_id, "target_id": target_id}))


class _DriverStatement:
    """A Core statement compiled once for a SQLite dialect, run on the driver cursor.

    Values go in already in driver form: the caller converts with :meth:`process`
    (SQLAlchemy's bind processor of that column on this dialect) where a column has one. An
    insert gets the constant Python-side defaults of the columns it is not given (``status``,
    ``attempts``), as Core would; a column with a computed default must be given."""

    def __init__(self, stmt: Any, dialect: Dialect, table: Table, keys: Sequence[str] = ()) -> None:
        given = set(keys)
        self.defaults = {column.key: column.default.arg for column in table.columns  # type: ignore[union-attr]
                         if keys and column.key not in given and column.default is not None
                         and column.default.is_scalar}
        compiled = stmt.compile(dialect=dialect, column_keys=[*keys, *self.defaults] if keys else None)
        if getattr(compiled, "insert_prefetch", None):
            raise RuntimeError(f"{table.name}: columns {[c.key for c in compiled.insert_prefetch]} need a value")
        self.sql = str(compiled)
        self.order = list(compiled.positiontup or ())
        self.processors = {name: table.c[name].type.dialect_impl(dialect).bind_processor(dialect)
                           for name in self.order if name in table.c}
        self.defaults = {name: self.process(name, value) for name, value in self.defaults.items()}

    def process(self, name: str, value: Any) -> Any:
        processor = self.processors[name]
        return value if processor is None or value is None else processor(value)

    def insert(self, cursor: Any, values: dict[str, Any]) -> int | None:
        """The new row's id, or None when a unique constraint already holds the row."""
        values.update(self.defaults)
        cursor.execute(self.sql, [values[name] for name in self.order])
        return cursor.lastrowid if cursor.rowcount == 1 else None

    def rows(self, cursor: Any, values: dict[str, Any]) -> list[Any]:
        return cursor.execute(self.sql, [values[name] for name in self.order]).fetchall()


@dataclass(frozen=True)
class _DriverStatements:
    movement: _DriverStatement
    outbox: _DriverStatement
    stored: _DriverStatement
    targets: _DriverStatement
    exists: _DriverStatement
    #: the engine serialises JSON with the store's ``json_dumps`` (an engine made with another
    #: ``json_serializer`` gets its payloads through that serialiser instead)
    store_serialiser: bool


_DRIVER_STATEMENTS: WeakKeyDictionary[Dialect, _DriverStatements] = WeakKeyDictionary()


def _driver_statements(dialect: Dialect) -> _DriverStatements:
    """Built once per dialect instance (its JSON serialiser and processors are the engine's)."""
    found = _DRIVER_STATEMENTS.get(dialect)
    if found is not None:
        return found
    from sqlalchemy.dialects.sqlite import insert as sqlite_insert

    movement, outbox = Movement.__table__, Outbox.__table__
    core = _statements("sqlite")
    found = _DRIVER_STATEMENTS[dialect] = _DriverStatements(
        _DriverStatement(sqlite_insert(movement).on_conflict_do_nothing(index_elements=[movement.c.reference]),
                         dialect, movement, ["reference", "kind", "document_date", "payload",  # type: ignore[arg-type]
                                             "content_hash", "source_connection_id", "source_document", "created_at"]),
        _DriverStatement(sqlite_insert(outbox).on_conflict_do_nothing(),  # either unique constraint
                         dialect, outbox, ["movement_id", "target_connection_id", "idempotency_key",  # type: ignore[arg-type]
                                           "ordering_key", "next_attempt_at", "created_at", "updated_at"]),
        _DriverStatement(core["stored"], dialect, movement),  # type: ignore[arg-type]
        _DriverStatement(core["targets"], dialect, outbox),  # type: ignore[arg-type]
        _DriverStatement(core["exists"], dialect, outbox),  # type: ignore[arg-type]
        getattr(dialect, "_json_serializer", None) is json_dumps)
    return found


_STATEMENTS: dict[str, dict[str, Any]] = {}


def _statements(dialect: str) -> dict[str, Any]:
    """Built once per dialect, so SQLAlchemy's compiled cache is hit without rebuilding them."""
    found = _STATEMENTS.get(dialect)
    if found is not None:
        return found
    movement, outbox = Movement.__table__, Outbox.__table__
    if dialect in ("sqlite", "postgresql"):
        from sqlalchemy.dialects import postgresql, sqlite

        insert_ = sqlite.insert if dialect == "sqlite" else postgresql.insert
        mov = insert_(movement).on_conflict_do_nothing(index_elements=[movement.c.reference])
        out = insert_(outbox).on_conflict_do_nothing()  # either unique constraint: (movement, target) or key
        upsert = True
    else:
        mov, out, upsert = insert(movement), insert(outbox), False
    built = {
        "upsert": upsert,
        "movement": mov.returning(movement.c.id),
        "outbox": out.returning(outbox.c.id),
        "stored": select(movement.c.id, movement.c.content_hash, movement.c.source_connection_id).where(movement.c.reference == bindparam("reference")),
        "targets": select(outbox.c.target_connection_id).where(outbox.c.movement_id == bindparam("movement_id")),
        "exists": select(outbox.c.id).where(outbox.c.movement_id == bindparam("movement_id"),
                                            outbox.c.target_connection_id == bindparam("target_id")),
    }
    _STATEMENTS[dialect] = built
    return built


def _add_outbox_rows(writer: _Writer | _SqliteWriter, movement_id: int, movement: canonical.Movement, targets: list[_Target],
                     order: str | None, existing: set[int]) -> None:
    """One outbox row per target the movement has no row for yet (``existing``: target ids)."""
    for target in targets:
        if target.id in existing:
            continue
        for n in range(1, _MAX_KEY_CANDIDATES + 1):
            inserted = writer.insert_outbox(movement_id, target.id, idempotency_key(movement.reference, target.name, n),
                                            order)
            if inserted is not None:
                break
            # Either a concurrent enqueue added this (movement, target) first, or the key belongs
            # to another (movement, target): then take the next candidate.
            if writer.has_row(movement_id, target.id):
                break
        else:
            raise RuntimeError(f"no free idempotency key for {movement.reference!r} → {target.name!r} "
                               f"after {_MAX_KEY_CANDIDATES} candidates")


__all__ = ["KEY_LENGTH", "EnqueueOptions", "MovementConflict", "accept", "enqueue", "enqueue_many", "idempotency_key", "movement_of",
           "ordering_key", "payload_of"]
