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

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

import canonical
from connectors.errors import ConfigError
from sync.connections import Connections, ensure_connection
from sync.store import Connection, Movement, Outbox, begin_write, utcnow

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
            row_id = ensure_connection(session, target, platform)
            out[row_id] = _Target(row_id, target)
    return list(out.values())


def _source_id(session: Session, source: str | None, connections: Connections) -> int | None:
    if source is None:
        return None
    return ensure_connection(session, source, connections.platform(source))


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
    """:func:`enqueue` for many movements in one transaction (all or nothing); their ids in order."""
    now = now or utcnow()
    # SQLite: open the write transaction now, so the savepoints below nest inside it (pysqlite
    # would otherwise let the first savepoint's RELEASE commit on its own).
    begin_write(session)
    movements = list(movements)
    documents = list(source_documents) if source_documents is not None else [None] * len(movements)
    if len(documents) != len(movements):
        raise ValueError("source_documents must have one entry per movement")
    resolved = _targets(session, targets, connections)
    source_id = _source_id(session, source_connection, connections)
    references = [m.reference for m in movements]
    if len(set(references)) != len(references):
        seen: set[str] = set()
        twice = next(r for r in references if r in seen or seen.add(r))  # type: ignore[func-returns-value]
        raise ValueError(f"movement {twice!r} appears twice in one batch")
    stored = {row.reference: row for row in session.scalars(select(Movement).where(Movement.reference.in_(references)))} \
        if references else {}
    ids: list[int] = []
    for movement, document in zip(movements, documents, strict=True):
        digest = canonical.content_hash(movement)
        row = stored.get(movement.reference)
        new = False
        if row is None:
            row, new = _insert(session, movement, digest, source_id, document or movement.source_document, now)
        if row.content_hash != digest:
            raise MovementConflict(movement.reference, stored_hash=row.content_hash, new_hash=digest,
                                   stored_id=row.id, source_document=document or movement.source_document)
        _add_outbox_rows(session, row, movement, resolved, new, now)
        ids.append(row.id)
    session.flush()
    return ids


def _insert(session: Session, movement: canonical.Movement, digest: str, source_id: int | None,
            source_document: str | None, now: datetime) -> tuple[Movement, bool]:
    row = Movement(reference=movement.reference, kind=movement.kind.value, document_date=movement.document_date,
                   payload=payload_of(movement), content_hash=digest, source_connection_id=source_id,
                   source_document=source_document, created_at=now)
    try:
        with session.begin_nested():
            session.add(row)
    except IntegrityError:  # another transaction stored the same reference first
        found = session.scalars(select(Movement).where(Movement.reference == movement.reference)).first()
        if found is None:
            raise
        return found, False
    return row, True


def _add_outbox_rows(session: Session, row: Movement, movement: canonical.Movement, targets: list[_Target],
                     new: bool, now: datetime) -> None:
    existing = set() if new else set(
        session.scalars(select(Outbox.target_connection_id).where(Outbox.movement_id == row.id)))
    order = ordering_key(movement)
    for target in targets:
        if target.id in existing:
            continue
        for n in range(1, _MAX_KEY_CANDIDATES + 1):
            outbox = Outbox(movement_id=row.id, target_connection_id=target.id,
                            idempotency_key=idempotency_key(movement.reference, target.name, n), ordering_key=order,
                            next_attempt_at=now, created_at=now, updated_at=now)
            try:
                with session.begin_nested():
                    session.add(outbox)
                break
            except IntegrityError:
                # Either a concurrent enqueue added this (movement, target) first, or the key
                # belongs to another (movement, target): then take the next candidate.
                if session.scalar(select(Outbox.id).where(Outbox.movement_id == row.id,
                                                          Outbox.target_connection_id == target.id)) is not None:
                    break
        else:
            raise RuntimeError(f"no free idempotency key for {movement.reference!r} → {target.name!r} "
                               f"after {_MAX_KEY_CANDIDATES} candidates")


__all__ = ["KEY_LENGTH", "MovementConflict", "enqueue", "enqueue_many", "idempotency_key", "movement_of",
           "ordering_key", "payload_of"]
