"""Claiming and settling outbox rows: leases with compare-and-set, safe with many workers.

Life of a row (``Outbox.status``):

- ``pending`` / ``ambiguous`` (due at ``next_attempt_at``) --claim--> ``sending`` (leased)
- ``sending`` --mark_sent--> ``sent``
- ``sending`` --reschedule--> ``pending`` (or ``ambiguous``), due again later
- ``sending`` --mark_failed--> ``failed`` (or ``dead``); ``failed``/``dead`` --requeue--> ``pending``
- ``sending`` --release--> back to ``pending`` (``ambiguous`` if ``outcome_unknown``), attempt not counted
- ``sending`` whose lease expired --sweep_expired_leases--> ``ambiguous``
  (``claim`` also takes an expired ``sending`` row directly)

Rules every helper keeps:
- ``claim`` takes rows that are due (``pending`` or ``ambiguous`` with ``next_attempt_at <= now``,
  or ``sending`` with an expired lease), oldest first, and never two with the same
  ``(target_connection_id, ordering_key)`` while an older one is still pending, sending or
  ambiguous: movements for the same item and warehouse are delivered in order. Rows that
  ended ``failed``/``dead`` do not hold later rows back (the error queue owns them).
- Only the lease owner can settle a row: ``mark_sent``/``reschedule``/``mark_failed``/``release``
  are compare-and-set on ``(status='sending', lease_owner=worker_id)`` and return False, changing
  nothing, when the worker lost its lease (swept and perhaps claimed by someone else).
- ``outcome_unknown`` is True when an earlier attempt may have reached the vendor (ambiguous
  answer, or a lease that expired mid-send). The deliverer must then call ``connector.find(key)``
  before pushing again. ``claim`` sets it when it takes an ambiguous or expired row.
- Choose ``lease_seconds`` longer than the longest push (HTTP timeouts included); a lease that
  expires while its worker is still pushing lets a second worker look the document up too early.

PostgreSQL: candidates are locked with ``SELECT … FOR UPDATE SKIP LOCKED``, so concurrent workers
skip each other's rows instead of waiting or double-claiming. SQLite: the claim takes the
database write lock first (``BEGIN IMMEDIATE``), so claimers run one after another. On both,
the final UPDATE re-checks that each row is still claimable.

All helpers work inside the caller's transaction and do not commit; commit promptly after
``claim`` so the lease is visible to others.
"""
from __future__ import annotations

import functools

from collections.abc import Collection, Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, and_, bindparam, case, exists, func, literal, or_, select, update
from sqlalchemy.orm import Session, aliased
from sqlalchemy.orm.util import identity_key

from sync.store.engine import begin_write
from sync.store.models import Outbox, OutboxStatus

#: Statuses of an older row that hold back a newer row with the same ordering key.
BLOCKING = (OutboxStatus.PENDING, OutboxStatus.SENDING, OutboxStatus.AMBIGUOUS)

LEASE_EXPIRED = "lease_expired"


def due(now: datetime) -> ColumnElement[bool]:
    """Rows a claim may take at ``now``: pending or ambiguous and due, or sending with a dead lease.

    Public because the relay and ``claim_one`` must select exactly what a claim would take."""
    return or_(
        and_(Outbox.status.in_((OutboxStatus.PENDING, OutboxStatus.AMBIGUOUS)), Outbox.next_attempt_at <= now),
        and_(
            Outbox.status == OutboxStatus.SENDING,
            or_(Outbox.lease_expires_at.is_(None), Outbox.lease_expires_at <= now),
        ),
    )


@functools.cache
def not_held_back() -> ColumnElement[bool]:
    """Rows with no older undelivered row of the same target and ordering key (item+warehouse).

    Built once: it takes no parameters, and building its aliased subquery on every claim or relay
    tick cost more than running it (about a tenth of the hub's time in the P6 bench)."""
    older = aliased(Outbox, name="older")
    return or_(
        Outbox.ordering_key.is_(None),
        ~exists().where(
            older.ordering_key == Outbox.ordering_key,
            older.target_connection_id == Outbox.target_connection_id,
            older.id < Outbox.id,
            older.status.in_(BLOCKING),
        ),
    )


def claim(
    session: Session,
    *,
    worker_id: str,
    limit: int,
    lease_seconds: float,
    now: datetime,
    target_connection_ids: Collection[int] | None = None,
) -> list[Outbox]:
    """Lease up to ``limit`` due rows to ``worker_id`` for ``lease_seconds``; oldest first.

    Each claimed row becomes ``sending`` with ``lease_owner=worker_id``,
    ``lease_expires_at=now+lease_seconds`` and ``attempts`` one higher. Returns the rows
    (refreshed ORM objects, ordered by id); an empty list when nothing is due.
    """
    if limit < 1:
        raise ValueError(f"limit must be at least 1, got {limit}")
    if lease_seconds <= 0:
        raise ValueError(f"lease_seconds must be positive, got {lease_seconds}")
    if target_connection_ids is not None and not target_connection_ids:
        return []

    begin_write(session)
    candidates = select(Outbox.id).where(due(now), not_held_back()).order_by(Outbox.id).limit(limit)
    if target_connection_ids is not None:
        candidates = candidates.where(Outbox.target_connection_id.in_(list(target_connection_ids)))
    if session.connection().dialect.name == "postgresql":
        candidates = candidates.with_for_update(skip_locked=True, of=Outbox)
    ids = list(session.scalars(candidates))
    if not ids:
        return []
    return _lease(session, ids, worker_id=worker_id, lease_seconds=lease_seconds, now=now, recheck_order=False)


def claim_heads(
    session: Session,
    keys: Collection[tuple[int, str]],
    *,
    worker_id: str,
    lease_seconds: float,
    now: datetime,
) -> list[int]:
    """Lease, for each ``(target_connection_id, ordering_key)`` in ``keys``, the oldest row of that
    key still pending, sending or ambiguous, when it is due: the row a ``claim`` would take next
    for that key. Returns the ids of the rows leased (in no particular order; nothing is loaded
    into the session).

    A deliverer calls it in the transaction that records its receipts for those keys, so the
    next row of a key it just delivered is leased at the moment it stops being held back (no
    other worker can see it due in between), and finding it is an index seek per key instead of
    ``claim``'s search through every due row. Same lease, attempt and ``outcome_unknown`` rules
    as ``claim``; the final UPDATE re-checks ``due`` and ``not_held_back``, so a row leased or
    settled by another worker meanwhile is left alone."""
    if lease_seconds <= 0:
        raise ValueError(f"lease_seconds must be positive, got {lease_seconds}")
    by_target: dict[int, list[str]] = {}
    for target_id, ordering_key in keys:
        if ordering_key is not None:  # a row without an ordering key holds nothing back
            by_target.setdefault(target_id, []).append(ordering_key)
    if not by_target:
        return []
    begin_write(session)
    connection = session.connection()
    ids = [head for target_id, ordering_keys in by_target.items()
           for head in connection.scalars(_heads(), {"b_target": target_id, "b_keys": list(dict.fromkeys(ordering_keys))})]
    if not ids:
        return []
    return _lease_ids(session, ids, worker_id=worker_id, lease_seconds=lease_seconds, now=now, recheck_order=True)


# Statements run once or more per delivered row are built once (Core, on the table: no ORM
# statement compilation or cache-key generation per call); their values are bound parameters.
_T = Outbox.__table__


@functools.cache
def _heads() -> Any:
    """The oldest pending, sending or ambiguous row of each of some ordering keys of a target."""
    return (select(func.min(_T.c.id))
            .where(_T.c.target_connection_id == bindparam("b_target"),
                   _T.c.ordering_key.in_(bindparam("b_keys", expanding=True)),
                   _T.c.status.in_([s.value for s in BLOCKING]))
            .group_by(_T.c.ordering_key))


@functools.cache
def _lease_statement(recheck_order: bool) -> Any:
    where = [_T.c.id.in_(bindparam("b_ids", expanding=True)), due(bindparam("b_now", type_=_T.c.updated_at.type))]
    if recheck_order:
        where.append(not_held_back())
    return (update(_T)
            .where(*where)
            .values(status=OutboxStatus.SENDING.value, lease_owner=bindparam("b_worker"),
                    lease_expires_at=bindparam("b_until", type_=_T.c.lease_expires_at.type),
                    attempts=_T.c.attempts + 1,
                    outcome_unknown=case(
                        (_T.c.status.in_((OutboxStatus.AMBIGUOUS.value, OutboxStatus.SENDING.value)), literal(True)),
                        else_=_T.c.outcome_unknown),
                    updated_at=bindparam("b_now", type_=_T.c.updated_at.type))
            .returning(_T.c.id))


@functools.cache
def _mark_sent_statement() -> Any:
    return (update(_T)
            .where(_T.c.id == bindparam("b_id"), _T.c.status == OutboxStatus.SENDING.value,
                   _T.c.lease_owner == bindparam("b_worker"))
            .values(status=OutboxStatus.SENT.value, sent_at=bindparam("b_now", type_=_T.c.sent_at.type),
                    receipt_document_id=bindparam("b_document_id"),
                    receipt_document_number=bindparam("b_document_number"), outcome_unknown=False,
                    updated_at=bindparam("b_now", type_=_T.c.updated_at.type), lease_owner=None,
                    lease_expires_at=None))


def _lease_ids(session: Session, ids: list[int], *, worker_id: str, lease_seconds: float, now: datetime,
              recheck_order: bool) -> list[int]:
    """Lease rows ``ids`` that are still due (and, with ``recheck_order``, not held back); the
    ids leased."""
    return list(session.connection().scalars(
        _lease_statement(recheck_order),
        {"b_ids": ids, "b_now": now, "b_worker": worker_id, "b_until": now + timedelta(seconds=lease_seconds)}))


def _lease(session: Session, ids: list[int], *, worker_id: str, lease_seconds: float, now: datetime,
           recheck_order: bool) -> list[Outbox]:
    """:func:`_lease_ids`, the leased rows as refreshed ORM objects, ordered by id."""
    claimed = _lease_ids(session, ids, worker_id=worker_id, lease_seconds=lease_seconds, now=now,
                         recheck_order=recheck_order)
    if not claimed:
        return []
    rows = session.scalars(
        select(Outbox).where(Outbox.id.in_(claimed)).order_by(Outbox.id).execution_options(populate_existing=True)
    )
    return list(rows)


def mark_sent(
    session: Session,
    outbox_id: int,
    *,
    worker_id: str,
    now: datetime,
    receipt_document_id: str | None = None,
    receipt_document_number: str | None = None,
) -> bool:
    """Record the vendor's receipt; True if ``worker_id`` still held the lease (an expired lease
    still counts until a sweep or another worker's claim takes it away)."""
    result = session.connection().execute(_mark_sent_statement(), {
        "b_id": outbox_id, "b_worker": worker_id, "b_now": now, "b_document_id": receipt_document_id,
        "b_document_number": receipt_document_number})
    return _changed(session, outbox_id, result)


def reschedule(
    session: Session,
    outbox_id: int,
    *,
    worker_id: str,
    now: datetime,
    next_attempt_at: datetime,
    error_kind: str,
    error_message: str,
    ambiguous: bool = False,
) -> bool:
    """Try again at ``next_attempt_at`` after a failure that may pass (transient, rate limited,
    dependency missing). ``ambiguous=True`` when the request may have reached the vendor: the
    row becomes ``ambiguous`` and the next attempt must ``find`` first. The attempt counts."""
    return _settle(
        session,
        outbox_id,
        worker_id,
        status=OutboxStatus.AMBIGUOUS if ambiguous else OutboxStatus.PENDING,
        outcome_unknown=ambiguous,
        next_attempt_at=next_attempt_at,
        last_error_kind=error_kind,
        last_error_message=error_message,
        updated_at=now,
    )


def mark_failed(
    session: Session,
    outbox_id: int,
    *,
    worker_id: str,
    now: datetime,
    error_kind: str,
    error_message: str,
    dead: bool = False,
) -> bool:
    """Stop delivering: ``failed`` (rejected; an operator may :func:`requeue` it) or, with
    ``dead=True``, ``dead`` (given up for good). Write the error_queue entry in the same
    transaction."""
    return _settle(
        session,
        outbox_id,
        worker_id,
        status=OutboxStatus.DEAD if dead else OutboxStatus.FAILED,
        last_error_kind=error_kind,
        last_error_message=error_message,
        updated_at=now,
    )


def release(
    session: Session,
    outbox_id: int,
    *,
    worker_id: str,
    now: datetime,
    next_attempt_at: datetime | None = None,
) -> bool:
    """Hand a claimed row back without having tried it (shutdown, local rate limit): it becomes
    ``pending`` again (``ambiguous`` if ``outcome_unknown``), due at ``next_attempt_at``
    (default ``now``), and the claim's attempt is not counted."""
    return _settle(
        session,
        outbox_id,
        worker_id,
        status=case(
            (Outbox.outcome_unknown, literal(OutboxStatus.AMBIGUOUS.value)),
            else_=literal(OutboxStatus.PENDING.value),
        ),
        attempts=case((Outbox.attempts > 0, Outbox.attempts - 1), else_=0),
        next_attempt_at=next_attempt_at or now,
        updated_at=now,
    )


def renew_leases(session: Session, ids: Collection[int], *, worker_id: str, now: datetime,
                 lease_seconds: float) -> set[int]:
    """Extend the leases ``worker_id`` still holds on rows ``ids`` to ``now + lease_seconds``
    (compare-and-set, like a settle); the ids still held. A deliverer working through several
    claimed rows one after another renews the rows it has not sent yet, so none is sent after
    its lease ran out (when another worker may have claimed it)."""
    if not ids:
        return set()
    begin_write(session)
    return set(session.connection().scalars(_renew_statement(), {
        "b_ids": list(ids), "b_worker": worker_id, "b_until": now + timedelta(seconds=lease_seconds),
        "b_now": now}))


@functools.cache
def _renew_statement() -> Any:
    return (update(_T)
            .where(_T.c.id.in_(bindparam("b_ids", expanding=True)), _T.c.status == OutboxStatus.SENDING.value,
                   _T.c.lease_owner == bindparam("b_worker"))
            .values(lease_expires_at=bindparam("b_until", type_=_T.c.lease_expires_at.type),
                    updated_at=bindparam("b_now", type_=_T.c.updated_at.type))
            .returning(_T.c.id))


def sweep_expired_leases(session: Session, now: datetime) -> int:
    """Give up the leases that expired at or before ``now``: those rows become ``ambiguous``
    (their worker may have sent before it died), due now, with ``last_error_kind='lease_expired'``.
    Returns how many rows were swept."""
    result = session.execute(
        update(Outbox)
        .where(
            Outbox.status == OutboxStatus.SENDING,
            or_(Outbox.lease_expires_at.is_(None), Outbox.lease_expires_at <= now),
        )
        .values(
            status=OutboxStatus.AMBIGUOUS,
            outcome_unknown=True,
            lease_owner=None,
            lease_expires_at=None,
            next_attempt_at=now,
            last_error_kind=LEASE_EXPIRED,
            last_error_message="the lease expired before the worker recorded an outcome",
            updated_at=now,
        )
        .execution_options(synchronize_session=False)
    )
    swept = int(getattr(result, "rowcount", 0) or 0)
    if swept:
        _expire_all_outbox(session)
    return swept


def requeue(session: Session, outbox_id: int, *, now: datetime, next_attempt_at: datetime | None = None) -> bool:
    """Operator retry: put a ``failed`` or ``dead`` row back to ``pending`` (same idempotency
    key, attempts kept). True if the row was failed or dead."""
    result = session.execute(
        update(Outbox)
        .where(Outbox.id == outbox_id, Outbox.status.in_((OutboxStatus.FAILED, OutboxStatus.DEAD)))
        .values(status=OutboxStatus.PENDING, next_attempt_at=next_attempt_at or now, updated_at=now)
        .execution_options(synchronize_session=False)
    )
    return _changed(session, outbox_id, result)


def requeue_many(session: Session, outbox_ids: Collection[int], *, now: datetime, reset_attempts: bool = False) -> (
        set[int]):
    """:func:`requeue` for many rows in one statement (due ``now``; with ``reset_attempts`` a
    fresh attempt budget); the ids that were failed or dead and are pending now."""
    if not outbox_ids:
        return set()
    values: dict[str, Any] = {"status": OutboxStatus.PENDING, "next_attempt_at": now, "updated_at": now}
    if reset_attempts:
        values["attempts"] = 0
    requeued = set(session.scalars(
        update(Outbox)
        .where(Outbox.id.in_(list(outbox_ids)), Outbox.status.in_((OutboxStatus.FAILED, OutboxStatus.DEAD)))
        .values(**values)
        .returning(Outbox.id)
        .execution_options(synchronize_session=False)
    ))
    if requeued:
        _expire_all_outbox(session)
    return requeued


def _settle(session: Session, outbox_id: int, worker_id: str, **values: Any) -> bool:
    """Compare-and-set: apply ``values`` and clear the lease only if ``worker_id`` holds it."""
    result = session.execute(
        update(Outbox)
        .where(
            Outbox.id == outbox_id,
            Outbox.status == OutboxStatus.SENDING,
            Outbox.lease_owner == worker_id,
        )
        .values(lease_owner=None, lease_expires_at=None, **values)
        .execution_options(synchronize_session=False)
    )
    return _changed(session, outbox_id, result)


def _changed(session: Session, outbox_id: int, result: Any) -> bool:
    changed = int(getattr(result, "rowcount", 0) or 0) == 1
    if changed:
        row = session.identity_map.get(identity_key(Outbox, outbox_id))
        if row is not None:
            session.expire(row)
    return changed


def _expire_all_outbox(session: Session) -> None:
    for row in list(session.identity_map.values()):
        if isinstance(row, Outbox):
            session.expire(row)


__all__: Sequence[str] = (
    "BLOCKING",
    "LEASE_EXPIRED",
    "claim",
    "claim_heads",
    "mark_failed",
    "mark_sent",
    "release",
    "renew_leases",
    "requeue",
    "requeue_many",
    "reschedule",
    "sweep_expired_leases",
)
