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
"""
from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

import canonical
from connectors.errors import ConfigError
from sync.connections import Connections, ensure_connection
from sync.store import Connection, Movement, Outbox, Store, begin_write, utcnow

KEY_LENGTH = 11
KEY_PREFIX = "H"
_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
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
    chars = []
    for _ in range(KEY_LENGTH - len(KEY_PREFIX)):
        chars.append(_CROCKFORD[digest & 31])
        digest >>= 5
    return KEY_PREFIX + "".join(chars)


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


def _targets(session: Session, targets: Sequence[int | str], connections: Connections) -> list[_Target]:
    if isinstance(targets, (str, int)):
        raise TypeError("targets must be a sequence of connection names or ids")
    if not targets:
        raise ValueError("a movement needs at least one target connection")
    out: dict[int, _Target] = {}
    for target in targets:
        if isinstance(target, bool):
            raise TypeError(f"target {target!r} is not a connection name or id")
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

    Happy path per movement: one ``INSERT … ON CONFLICT DO NOTHING RETURNING id`` for the
    movement and one per outbox row (Core statements built once, no ORM flush). Only when the
    reference is already stored does it read the stored row (hash, existing targets); only when
    an idempotency key is already taken does it look further (next candidate).
    """
    now = now or utcnow()
    movements = list(movements)
    documents = list(source_documents) if source_documents is not None else [None] * len(movements)
    if len(documents) != len(movements):
        raise ValueError("source_documents must have one entry per movement")
    references = [m.reference for m in movements]
    if len(set(references)) != len(references):
        seen: set[str] = set()
        twice = next(r for r in references if r in seen or seen.add(r))  # type: ignore[func-returns-value]
        raise ValueError(f"movement {twice!r} appears twice in one batch")
    session.flush()  # the caller's pending ORM objects go first (Core statements below do not autoflush)
    # SQLite: open the write transaction now, so the statements below run in one transaction
    # holding the write lock (and a savepoint, if one is needed, nests inside it).
    begin_write(session)
    resolved = _targets(session, targets, connections)
    source_id = _source_id(session, source_connection, connections)
    writer = _Writer(session)
    ids: list[int] = []
    for movement, document in zip(movements, documents, strict=True):
        digest = canonical.content_hash(movement)  # once per movement
        document = document or movement.source_document
        row_id = writer.insert_movement({
            "reference": movement.reference, "kind": movement.kind.value, "document_date": movement.document_date,
            "payload": payload_of(movement), "content_hash": digest, "source_connection_id": source_id,
            "source_document": document, "created_at": now})
        new = row_id is not None
        if row_id is None:  # the reference is stored already (by us earlier, or by a concurrent enqueue)
            stored = writer.stored_movement(movement.reference)
            if stored is None:
                raise RuntimeError(f"movement {movement.reference!r}: insert conflicted but no stored row found")
            row_id, stored_hash = stored
            if stored_hash != digest:
                raise MovementConflict(movement.reference, stored_hash=stored_hash, new_hash=digest,
                                       stored_id=row_id, source_document=document)
        _add_outbox_rows(writer, row_id, movement, resolved, new, now)
        ids.append(row_id)
    return ids


def accept(store: Store, movements: Iterable[canonical.Movement], targets: Sequence[int | str], *,
           connections: Connections, **options: Any) -> list[int]:
    """Accept movements from outside: :func:`enqueue_many` (``options`` are its keyword options)
    in one durable write transaction of its own, committed before it returns; their ids in order.

    Once this returns the movements survive a power loss, so the caller may acknowledge them
    to their source (see "Durable intake" in the module doc).
    """
    with store.session(write=True, durable=True) as session:
        return enqueue_many(session, movements, targets, connections=connections, **options)


class _Writer:
    """Core statements of one enqueue, on the session's connection (same transaction)."""

    def __init__(self, session: Session) -> None:
        self.session = session
        self.connection = session.connection()
        self.statements = _statements(self.connection.dialect.name)

    def _insert_or_nothing(self, which: str, params: dict[str, Any]) -> int | None:
        stmt = self.statements[which]
        if self.statements["upsert"]:
            return self.connection.execute(stmt, params).scalar()
        try:  # a dialect without ON CONFLICT: a savepoint keeps the transaction usable
            with self.session.begin_nested():
                return self.connection.execute(stmt, params).scalar()
        except IntegrityError:
            return None

    def insert_movement(self, params: dict[str, Any]) -> int | None:
        """The new movement's id, or None when its reference is stored already."""
        return self._insert_or_nothing("movement", params)

    def insert_outbox(self, params: dict[str, Any]) -> int | None:
        """The new outbox row's id, or None when (movement, target) or the key is taken."""
        return self._insert_or_nothing("outbox", params)

    def stored_movement(self, reference: str) -> tuple[int, str] | None:
        row = self.connection.execute(self.statements["stored"], {"reference": reference}).first()
        return None if row is None else (int(row[0]), str(row[1]))

    def targets_of(self, movement_id: int) -> set[int]:
        return set(self.connection.execute(self.statements["targets"], {"movement_id": movement_id}).scalars())

    def has_row(self, movement_id: int, target_id: int) -> bool:
        return self.connection.execute(self.statements["exists"], {"movement_id": movement_id,
                                                                   "target_id": target_id}).first() is not None


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
        "stored": select(movement.c.id, movement.c.content_hash).where(movement.c.reference == bindparam("reference")),
        "targets": select(outbox.c.target_connection_id).where(outbox.c.movement_id == bindparam("movement_id")),
        "exists": select(outbox.c.id).where(outbox.c.movement_id == bindparam("movement_id"),
                                            outbox.c.target_connection_id == bindparam("target_id")),
    }
    _STATEMENTS[dialect] = built
    return built


def _add_outbox_rows(writer: _Writer, movement_id: int, movement: canonical.Movement, targets: list[_Target],
                     new: bool, now: datetime) -> None:
    existing = set() if new else writer.targets_of(movement_id)
    order = ordering_key(movement)
    for target in targets:
        if target.id in existing:
            continue
        for n in range(1, _MAX_KEY_CANDIDATES + 1):
            inserted = writer.insert_outbox({
                "movement_id": movement_id, "target_connection_id": target.id,
                "idempotency_key": idempotency_key(movement.reference, target.name, n), "ordering_key": order,
                "next_attempt_at": now, "created_at": now, "updated_at": now})
            if inserted is not None:
                break
            # Either a concurrent enqueue added this (movement, target) first, or the key belongs
            # to another (movement, target): then take the next candidate.
            if writer.has_row(movement_id, target.id):
                break
        else:
            raise RuntimeError(f"no free idempotency key for {movement.reference!r} → {target.name!r} "
                               f"after {_MAX_KEY_CANDIDATES} candidates")


__all__ = ["KEY_LENGTH", "MovementConflict", "accept", "enqueue", "enqueue_many", "idempotency_key", "movement_of",
           "ordering_key", "payload_of"]
