"""Delivering outbox rows to their target connections (DESIGN.md §5 "Push", RELIABILITY.md §1).

One delivery of one row::

    claim (lease, attempts+1; commit) → resolve codes for the target → [find(key) if the outcome
    of an earlier attempt is unknown] → push(movement, key) with in-process retries → settle:
    mark_sent | reschedule | pause the connection | dead-letter (error queue)

- Rows of paused connections are not claimed; they wait until :func:`resume_connection`.
- Codes (sku, warehouses, partner) are translated into the target's codes through the code map
  (:func:`resolve_codes`); a code without a mapping is ``DependencyMissing``: deferred, retried.
- ``outcome_unknown`` (an ambiguous answer, or a lease that expired mid-send): ``find(key)``
  first. Found and posted → sent, nothing resent. Found but not posted → ``push(key)`` again,
  which finishes that same document. Not found → ``push``.
- ``connector.push`` runs inside :meth:`RetryPolicy.call` (Transient and RateLimited only).
  Whatever still fails goes through :meth:`RetryPolicy.decide`.
- A ``Retry-After`` applies to the tenant, not one row: after a rate-limited row is rescheduled,
  the rest of that target's claimed rows are handed back (attempt not counted), due when the
  window ends.
- Rate limits (given ``limiters``, :class:`sync.ratelimit.RateLimiters`): every call to the
  vendor takes tokens from the target's bucket right before it goes out (inline retries too):
  ``push`` and ``push_many`` take ``capabilities.posting_calls`` per request, ``find`` one. A
  ``RateLimited`` answer holds that bucket until ``now + retry_after`` (1 s when the vendor gave
  none), so every other thread and process waits out the window instead of extending it; the
  result carries ``retry_after``. The lookup some connectors make inside ``push`` (reference,
  SAP B1: find by key, then POST) is not charged: vendors limit their write endpoints (Jiandaoyun
  ``data/create`` 20/s), and charging reads against a write limit would halve throughput. A
  vendor that counts every call gets a connection rate that says so (e.g. half its limit).
- A ``Rejected`` row is dead-lettered, unless an older row for the same target, still in
  flight, adds stock where this one takes it (a transfer into the warehouse an issue takes
  from): then it is deferred until that one settles. This covers the positions the single
  ordering key of a row cannot (see :mod:`sync.push`); the attempt and age caps still apply.
- Following (``follow_seconds`` of :func:`deliver_from` and :func:`deliver_due`): each time a
  run records receipts, it leases the next row of each ordering key it just delivered in the
  same transaction (:func:`sync.store.outbox.claim_heads`: an index seek per key, not a search
  through every due row) and delivers those in a next round, until the time is up. Order per
  key is kept (a key's next row is leased only once the previous one is sent), and so are
  leases: before a row is sent with less than half its lease left, the leases of the rows of
  that round not sent yet are renewed (compare-and-set), and a row whose lease was lost is left
  to the worker that took it over (``lost_lease``, nothing sent).
- Several due rows for a connector whose ``capabilities.max_batch > 1`` go through
  ``push_many`` in chunks: each result is settled on its own, so in a partial failure the rows
  that were created are marked sent with their receipts and never sent again.

Every settle is compare-and-set on the lease (``sync.store.outbox``): a worker that lost its
lease changes nothing and reports ``lost_lease``. All times are aware UTC.
"""
from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from sqlalchemy import bindparam, or_, select, update
from sqlalchemy.orm import Session

import canonical
from connectors.base import Connector, Entity, Receipt
from connectors.errors import ConnectorError, DependencyMissing, RateLimited, Rejected
from connectors.redaction import redact_text
from sync import codemap, errorqueue, metrics
from sync.connections import Connections
from sync.push import movement_of
from sync.ratelimit import RateLimiter, RateLimiters, RateLimitTimeout
from sync.retry import Decision, RetryPolicy, Verdict, error_kind
from sync.store import Connection, ConnectionStatus, Movement, Outbox, OutboxStatus, Store, begin_write, utcnow
from sync.store import outbox as ob
from sync.store.outbox import due, not_held_back  # the claim rules, shared with claim_one

log = logging.getLogger("erphub.sync.delivery")

#: Receipts of rows pushed one by one are recorded in one transaction per this many rows, or
#: per this many seconds, whichever comes first (and always before a failure is settled).
SETTLE_ROWS = 50
SETTLE_SECONDS = 1.0

#: How many older in-flight rows of a target a refused row looks through for a feeder.
FEEDER_SCAN = 500

AMBIGUOUS_KINDS = frozenset({"ambiguous", ob.LEASE_EXPIRED, "internal"})


class Outcome(StrEnum):
    SENT = "sent"                # receipt recorded
    RETRY = "retry"              # rescheduled (transient, rate limited)
    RECONCILE = "reconcile"      # rescheduled as ambiguous: find() first next time
    DEFERRED = "deferred"        # rescheduled: a dependency (code mapping) is missing
    PAUSED = "paused"            # the connection was paused; the row waits, attempt not counted
    DEAD_LETTER = "dead_letter"  # failed; an error-queue entry explains it
    RELEASED = "released"        # handed back untried (its connection paused meanwhile)
    LOST_LEASE = "lost_lease"    # another worker took the row over; nothing recorded


@dataclass(frozen=True)
class DeliveryResult:
    outbox_id: int
    movement_id: int
    reference: str
    target: str
    key: str
    outcome: Outcome
    attempts: int
    document_id: str | None = None
    document_number: str | None = None
    settled_by_find: bool = False  # sent without sending again: find() showed it posted
    pushed: bool = False  # push/push_many was called for this row in this delivery
    error_kind: str | None = None
    error: str | None = None
    next_attempt_at: datetime | None = None
    error_id: int | None = None
    retry_after: float | None = None  # the vendor's Retry-After (seconds) on a rate-limited outcome


@dataclass
class _Job:
    """What a delivery needs of a claimed row, read in the claim's transaction."""

    outbox_id: int
    movement_id: int
    target_id: int
    target: str
    key: str
    ordering_key: str | None
    attempts: int
    outcome_unknown: bool
    had_errors: bool
    created_at: datetime
    reference: str
    payload: dict[str, Any]
    movement: canonical.Movement | None = None  # in the target's codes, once resolved
    lease_until: float = float("inf")  # time.monotonic() by which the lease runs out (set by the claimer)


# -- codes --------------------------------------------------------------------------------------


def to_external(session: Session, connection_id: int, entity: str, canonical_code: str) -> str | None:
    """The target's code for a canonical code, or None when it has no mapping: the code map
    (:func:`sync.codemap.to_external`: id_map table, then configured rules, then identity)."""
    return codemap.to_external(session, connection_id, entity, canonical_code)


def to_externals(session: Session, connection_id: int, entity: str, canonical_codes: Iterable[str]) -> (
        dict[str, str | None]):
    """:func:`to_external` for many codes in one query per 500 (:func:`sync.codemap.to_externals`);
    a code maps to None when it has no mapping."""
    return codemap.to_externals(session, connection_id, entity, canonical_codes)


_CODE_ENTITIES = (Entity.ITEMS, Entity.WAREHOUSES, Entity.PARTNERS)


def lookup_codes(session: Session, connection_id: int, movements: Iterable[canonical.Movement], *,
                 cached: dict[tuple[str, str], str | None] | None = None) -> dict[tuple[str, str], str | None]:
    """The target's codes for every sku, warehouse and partner of ``movements``, keyed by
    ``(entity, canonical code)``: one query per entity for the lot (not one per line and code).
    Codes ``cached`` maps to a code (not None) are taken from there, not looked up again."""
    wanted: dict[Entity, dict[str, None]] = {entity: {} for entity in _CODE_ENTITIES}
    for movement in movements:
        for line in movement.lines:
            wanted[Entity.ITEMS][line.sku] = None
            if line.from_warehouse is not None:
                wanted[Entity.WAREHOUSES][line.from_warehouse] = None
            if line.to_warehouse is not None:
                wanted[Entity.WAREHOUSES][line.to_warehouse] = None
        if movement.counterparty is not None and movement.counterparty.code is not None:
            wanted[Entity.PARTNERS][movement.counterparty.code] = None
    known: dict[tuple[str, str], str | None] = {}
    for entity, codes in wanted.items():
        if cached:
            for code in [c for c in codes if cached.get((entity.value, c)) is not None]:
                known[(entity.value, code)] = cached[(entity.value, code)]
                del codes[code]
        if codes:
            for code, mapped in to_externals(session, connection_id, entity.value, codes).items():
                known[(entity.value, code)] = mapped
    return known


def resolve_codes(session: Session, connection_id: int, movement: canonical.Movement, *, target: str = "",
                  known: dict[tuple[str, str], str | None] | None = None) -> canonical.Movement:
    """``movement`` with sku, warehouses and partner in the target's codes; a missing mapping
    raises ``DependencyMissing`` naming what is missing. ``known`` is what :func:`lookup_codes`
    found for a batch that includes this movement (looked up here when not given)."""
    if known is None:
        known = lookup_codes(session, connection_id, [movement])
    missing: list[str] = []

    def code(entity: Entity, value: str | None) -> str | None:
        if value is None:
            return None
        key = (entity.value, value)
        if key not in known:  # not in the batch looked up: look it up on its own
            known[key] = to_externals(session, connection_id, entity.value, [value]).get(value)
        mapped = known[key]
        if mapped is None:
            missing.append(f"{entity.value[:-1]} {value!r}")
        return mapped or value

    lines = []
    for line in movement.lines:
        update_ = {"sku": code(Entity.ITEMS, line.sku), "from_warehouse": code(Entity.WAREHOUSES, line.from_warehouse),
                   "to_warehouse": code(Entity.WAREHOUSES, line.to_warehouse)}
        changed = {k: v for k, v in update_.items() if v != getattr(line, k)}
        lines.append(line.model_copy(update=changed) if changed else line)
    counterparty = movement.counterparty
    if counterparty is not None:
        mapped = code(Entity.PARTNERS, counterparty.code)
        if mapped != counterparty.code:
            counterparty = counterparty.model_copy(update={"code": mapped})
    if missing:
        raise DependencyMissing(f"no code in {target or f'connection {connection_id}'} for "
                                f"{', '.join(dict.fromkeys(missing))}", record=movement.reference)
    if counterparty is movement.counterparty and all(a is b for a, b in zip(lines, movement.lines, strict=True)):
        return movement
    return movement.model_copy(update={"lines": tuple(lines), "counterparty": counterparty})


# -- claiming -----------------------------------------------------------------------------------




def claim_one(session: Session, outbox_id: int, *, worker_id: str, lease_seconds: float, now: datetime,
              target_connection_ids: Iterable[int] | None = None) -> Outbox | None:
    """Lease row ``outbox_id`` to ``worker_id`` if ``claim`` would hand it out now (due, not held
    back by an older row with its ordering key, target allowed); the row, or None.

    One ``UPDATE … WHERE <due> AND <not held back> RETURNING`` (compare-and-set: two workers can
    never both get the row; on PostgreSQL the second waits for the first and re-checks ``due``
    on the updated row, which then fails)."""
    begin_write(session)
    where = [Outbox.id == outbox_id, due(now), not_held_back()]
    if target_connection_ids is not None:
        where.append(Outbox.target_connection_id.in_(list(target_connection_ids)))
    return session.scalars(
        update(Outbox)
        .where(*where)
        .values(
            status=OutboxStatus.SENDING,
            lease_owner=worker_id,
            lease_expires_at=now + timedelta(seconds=lease_seconds),
            attempts=Outbox.attempts + 1,
            outcome_unknown=or_(Outbox.outcome_unknown, Outbox.status.in_((OutboxStatus.AMBIGUOUS, OutboxStatus.SENDING))),
            updated_at=now,
        )
        .returning(Outbox)
        .execution_options(synchronize_session=False, populate_existing=True)
    ).one_or_none()


def _jobs_by_id(session: Session, ids: Sequence[int], connections: Connections) -> list[_Job]:
    """:func:`_jobs` for rows ``ids`` in one Core query (no ORM objects), ordered by id."""
    if not ids:
        return []
    rows = session.connection().execute(_job_rows(), {"b_ids": list(ids)}).all()
    return [
        _Job(outbox_id=r.id, movement_id=r.movement_id, target_id=r.target_connection_id,
             target=connections.name_of(r.target_connection_id), key=r.idempotency_key, ordering_key=r.ordering_key,
             attempts=r.attempts, outcome_unknown=bool(r.outcome_unknown) or r.last_error_kind in AMBIGUOUS_KINDS,
             had_errors=r.last_error_kind is not None, created_at=r.created_at, reference=r.reference,
             payload=r.payload)
        for r in rows
    ]


def _leased(jobs: list[_Job], leased_at: float, policy: RetryPolicy) -> list[_Job]:
    """``jobs`` whose leases were taken at ``leased_at`` (``time.monotonic()`` before the claim)."""
    for job in jobs:
        job.lease_until = leased_at + policy.lease_seconds
    return jobs


@functools.cache
def _job_rows() -> Any:
    """What a job needs of outbox rows ``b_ids`` and their movements (built once, Core)."""
    o, m = Outbox.__table__, Movement.__table__
    return (select(o.c.id, o.c.movement_id, o.c.target_connection_id, o.c.idempotency_key, o.c.ordering_key,
                   o.c.attempts, o.c.outcome_unknown, o.c.last_error_kind, o.c.created_at, m.c.reference,
                   m.c.payload)
            .join(m, m.c.id == o.c.movement_id).where(o.c.id.in_(bindparam("b_ids", expanding=True)))
            .order_by(o.c.id))


def _jobs(session: Session, rows: Sequence[Outbox], connections: Connections) -> list[_Job]:
    if not rows:
        return []
    movements = {m.id: m for m in session.scalars(select(Movement).where(Movement.id.in_({r.movement_id for r in rows})))}
    names = {cid: connections.name_of(cid) for cid in {r.target_connection_id for r in rows}}
    return [
        _Job(outbox_id=r.id, movement_id=r.movement_id, target_id=r.target_connection_id,
             target=names[r.target_connection_id], key=r.idempotency_key, ordering_key=r.ordering_key,
             attempts=r.attempts,
             outcome_unknown=bool(r.outcome_unknown) or r.last_error_kind in AMBIGUOUS_KINDS,
             had_errors=r.last_error_kind is not None, created_at=r.created_at,
             reference=movements[r.movement_id].reference, payload=movements[r.movement_id].payload)
        for r in rows
    ]


def active_targets(session: Session, connections: Connections, targets: Iterable[str] | None = None) -> dict[int, str]:
    """Configured connections (all, or ``targets``) that are not paused: id → name."""
    names = list(targets) if targets is not None else connections.names()
    ids = {connections.id(name): name for name in names}
    paused = set(session.scalars(select(Connection.id).where(Connection.id.in_(ids),
                                                              Connection.status == ConnectionStatus.PAUSED)))
    return {cid: name for cid, name in ids.items() if cid not in paused}


# -- the public entry points --------------------------------------------------------------------


def deliver_due(store: Store, connections: Connections, *, worker_id: str, limit: int = 50, policy: RetryPolicy,
                now: datetime | None = None, targets: Iterable[str] | None = None,
                limiters: RateLimiters | None = None, follow_seconds: float = 0.0) -> list[DeliveryResult]:
    """Claim up to ``limit`` due rows (of ``targets``, default every configured connection that is
    not paused), commit the leases, and deliver them. One result per claimed row (followed rows
    included, see :func:`deliver_one`)."""
    clock = _clock(now)
    with store.session() as session:
        active = active_targets(session, connections, targets)
    if not active:
        return []
    leased_at = time.monotonic()
    with store.session(write=True) as session:
        rows = ob.claim(session, worker_id=worker_id, limit=limit, lease_seconds=policy.lease_seconds, now=clock(),
                        target_connection_ids=list(active))
        jobs = _leased(_jobs(session, rows, connections), leased_at, policy)
    return _Delivery(store, connections, worker_id, policy, clock, limiters, follow_seconds).run(jobs)


def deliver_one(store: Store, connections: Connections, outbox_id: int, *, worker_id: str, policy: RetryPolicy,
                now: datetime | None = None, limiters: RateLimiters | None = None) -> DeliveryResult | None:
    """Claim row ``outbox_id`` if it is due now (and its connection not paused) and deliver it;
    None when there was nothing to do (sent already, leased by another worker, not due yet,
    held back by an older row of its ordering key, connection paused)."""
    results = deliver_from(store, connections, outbox_id, worker_id=worker_id, policy=policy, now=now,
                           limiters=limiters)
    return results[0] if results else None


def deliver_from(store: Store, connections: Connections, outbox_id: int, *, worker_id: str, policy: RetryPolicy,
                 now: datetime | None = None, limiters: RateLimiters | None = None, also: int = 0,
                 follow_seconds: float = 0.0) -> list[DeliveryResult]:
    """:func:`deliver_one`, going on from there: the results of every row delivered, row
    ``outbox_id``'s first; empty when it was not claimable.

    ``also``: in the claim's transaction, up to that many more due rows of the same target are
    claimed and delivered too. ``follow_seconds``: for that long, each time receipts are
    recorded, the next row of each ordering key just delivered is claimed in the same
    transaction (:func:`sync.store.outbox.claim_heads`, an index seek per key) and delivered in
    turn, so a key's rows go out one after another without a search through every due row
    and without a second transaction per row."""
    clock = _clock(now)
    leased_at = time.monotonic()
    with store.session(write=True) as session:  # one transaction: which targets are active, and the claim
        active = active_targets(session, connections)
        row = claim_one(session, outbox_id, worker_id=worker_id, lease_seconds=policy.lease_seconds, now=clock(),
                        target_connection_ids=list(active))
        rows = [row] if row is not None else []
        if row is not None and also > 0:
            rows += ob.claim(session, worker_id=worker_id, limit=also, lease_seconds=policy.lease_seconds,
                             now=clock(), target_connection_ids=[row.target_connection_id])
        jobs = _leased(_jobs(session, rows, connections), leased_at, policy)
    if not jobs:
        return []
    return _Delivery(store, connections, worker_id, policy, clock, limiters, follow_seconds).run(jobs)


def sweep(store: Store, now: datetime | None = None) -> int:
    """Re-queue rows whose lease expired (their worker died or hung): they become ambiguous and
    are reconciled with ``find`` before anything is sent again. How many."""
    with store.session(write=True) as session:
        swept = ob.sweep_expired_leases(session, _clock(now)())
    metrics.leases_expired(swept)
    return swept


def pause_connection(session: Session, connection_id: int, reason: str, *, now: datetime | None = None) -> None:
    session.execute(update(Connection).where(Connection.id == connection_id)
                    .values(status=ConnectionStatus.PAUSED, paused_reason=redact_text(reason)[:2000],
                            updated_at=now or utcnow())
                    .execution_options(synchronize_session=False))


def resume_connection(session: Session, connection: int | str, *, now: datetime | None = None) -> bool:
    """Let a paused connection deliver again; True if it was paused."""
    where = Connection.id == connection if isinstance(connection, int) else Connection.name == connection
    result = session.execute(update(Connection).where(where, Connection.status == ConnectionStatus.PAUSED)
                             .values(status=ConnectionStatus.ACTIVE, paused_reason=None, updated_at=now or utcnow())
                             .execution_options(synchronize_session=False))
    return int(getattr(result, "rowcount", 0) or 0) > 0


def _clock(now: datetime | None) -> Callable[[], datetime]:
    if now is None:
        return utcnow
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError(f"now must be timezone-aware, got {now.isoformat()}")
    return lambda: now


# -- one delivery run ---------------------------------------------------------------------------


class _Delivery:
    def __init__(self, store: Store, connections: Connections, worker_id: str, policy: RetryPolicy,
                 clock: Callable[[], datetime], limiters: RateLimiters | None = None,
                 follow_seconds: float = 0.0) -> None:
        self.store = store
        self.connections = connections
        self.worker_id = worker_id
        self.policy = policy
        self.clock = clock
        self.limiters = limiters
        self._gate: _Gate | None = None
        self._pushed: set[int] = set()  # outbox ids push was called for in this run
        # following: until when the next row of each delivered ordering key is claimed along
        # with the receipts; the rows so claimed, delivered in the next round
        self._follow_until = time.monotonic() + follow_seconds if follow_seconds > 0 else None
        self._followed: list[_Job] = []
        self._stopped: set[int] = set()  # targets paused or rate limited in this run: not followed
        self._codes: dict[int, dict[tuple[str, str], str | None]] = {}  # target id -> codes found this run
        self._lost: set[int] = set()  # outbox ids whose lease was lost before they were sent

    def run(self, jobs: list[_Job]) -> list[DeliveryResult]:
        results: dict[int, DeliveryResult] = {}
        order: list[int] = []
        while jobs:
            by_target: dict[int, list[_Job]] = {}
            for job in jobs:
                by_target.setdefault(job.target_id, []).append(job)
            for target_jobs in by_target.values():
                for result in self._deliver_target(target_jobs):
                    results[result.outbox_id] = result
            order.extend(job.outbox_id for job in jobs)
            jobs, self._followed = self._followed, []
        metrics.deliveries(results.values())
        return [results[outbox_id] for outbox_id in order]

    def _deliver_target(self, jobs: list[_Job]) -> list[DeliveryResult]:
        results: list[DeliveryResult] = []
        ready: list[_Job] = []
        with self.store.session() as session:
            parsed: list[tuple[_Job, canonical.Movement | BaseException]] = []
            for job in jobs:
                try:
                    parsed.append((job, movement_of(job.payload)))
                except Exception as exc:  # a payload that no longer validates
                    parsed.append((job, exc))
            # every code of the claimed rows in one query per entity; codes found in an earlier
            # round of this run are not looked up again (a run lasts seconds, like one big claim)
            cached = self._codes.setdefault(jobs[0].target_id, {})
            try:
                known: dict[tuple[str, str], str | None] | None = lookup_codes(
                    session, jobs[0].target_id, [m for _, m in parsed if isinstance(m, canonical.Movement)],
                    cached=cached)
            except Exception:  # looked up row by row below, so each row fails (or not) on its own
                known = None
            else:
                cached.update(known)
            for job, movement in parsed:
                try:
                    if not isinstance(movement, canonical.Movement):
                        raise movement
                    job.movement = resolve_codes(session, job.target_id, movement, target=job.target,
                                                 known=known)
                    ready.append(job)
                except Exception as exc:  # DependencyMissing, or a payload that no longer validates
                    results.append(self._failed(job, exc, pushed=False))
        if not ready:
            return results
        try:
            connector = self.connections.connector(ready[0].target)
            max_batch = connector.capabilities.max_batch
            cost = max(1, int(connector.capabilities.posting_calls))
        except Exception as exc:  # ConfigError from a connector that cannot even be built
            return results + self._fail_all(ready, exc)
        self._gate = _Gate(self.limiters.for_connection(ready[0].target), ready[0].target, cost, self.policy) \
            if self.limiters is not None else None
        # Rows to reconcile go one by one (find first); the others in push_many chunks when the
        # connector has a bulk endpoint and there is more than one of them.
        batchable = [j for j in ready if not j.outcome_unknown] if max_batch > 1 else []
        if len(batchable) < 2:
            batchable = []
        in_batch = {j.outbox_id for j in batchable}
        single = [j for j in ready if j.outbox_id not in in_batch]
        # Receipts of rows sent one by one are recorded together (one transaction for up to
        # SETTLE_ROWS rows or SETTLE_SECONDS), not one commit each; always before a failure is
        # settled, so a refused row never sees an earlier delivered row as still in flight.
        unsettled: list[tuple[_Job, Receipt, bool, bool]] = []
        since = 0.0
        for index, job in enumerate(single):
            if self._lease_lost(job, single[index:] + batchable):
                results.append(self._result(job, Outcome.LOST_LEASE))
                continue
            outcome = self._push_single(connector, job)
            if not isinstance(outcome, BaseException):
                if not unsettled:
                    since = time.monotonic()
                unsettled.append((job, *outcome))
                if len(unsettled) >= SETTLE_ROWS or time.monotonic() - since >= SETTLE_SECONDS:
                    results.extend(self._sent_many(unsettled))
                    unsettled = []
                continue
            results.extend(self._sent_many(unsettled))
            unsettled = []
            result = self._failed(job, outcome, pushed=job.outbox_id in self._pushed)
            results.append(result)
            if _stops_target(result):
                return results + self._stop(job.target_id, single[index + 1:] + batchable, result)
        results.extend(self._sent_many(unsettled))
        for start in range(0, len(batchable), max_batch):
            chunk = [j for j in batchable[start:start + max_batch] if not self._lease_lost(j, batchable[start:])]
            results.extend(self._result(j, Outcome.LOST_LEASE) for j in batchable[start:start + max_batch]
                           if j.outbox_id in self._lost)
            chunk_results = self._deliver_batch(connector, chunk) if chunk else []
            results.extend(chunk_results)
            stop = next((r for r in chunk_results if _stops_target(r)), None)
            if stop is not None:
                return results + self._stop(batchable[0].target_id, batchable[start + max_batch:], stop)
        return results

    def _lease_lost(self, job: _Job, unsent: Sequence[_Job]) -> bool:
        """Before ``job`` is sent: when less than half its lease is left, renew the leases of the
        rows of this round not sent yet (``unsent``, one transaction), so none goes out after its
        lease ran out; True if ``job``'s lease was lost (another worker took the row over)."""
        if job.outbox_id not in self._lost and time.monotonic() > job.lease_until - self.policy.lease_seconds / 2:
            mine = [j for j in unsent if j.outbox_id not in self._lost]
            renewed_at = time.monotonic()
            with self.store.session(write=True) as session:
                held = ob.renew_leases(session, [j.outbox_id for j in mine], worker_id=self.worker_id,
                                       now=self.clock(), lease_seconds=self.policy.lease_seconds)
            for j in mine:
                if j.outbox_id in held:
                    j.lease_until = renewed_at + self.policy.lease_seconds
                else:
                    self._lost.add(j.outbox_id)
                    log.warning("%s → %s: lease lost before sending; left to the worker that took it over",
                                j.reference, j.target)
        return job.outbox_id in self._lost

    def _stop(self, target_id: int, untried: list[_Job], result: DeliveryResult) -> list[DeliveryResult]:
        """Send nothing more to this target in this run: hand back the rows not tried yet,
        those claimed by following included."""
        self._stopped.add(target_id)
        followed = [j for j in self._followed if j.target_id == target_id]
        self._followed = [j for j in self._followed if j.target_id != target_id]
        return self._release_all(untried + followed, until=_hold_until(result))

    # -- one row ------------------------------------------------------------------------------

    def _push_single(self, connector: Connector, job: _Job) -> tuple[Receipt, bool, bool] | Exception:
        """find (when the outcome is unknown) and push one row, recording nothing: the receipt
        with ``(settled_by_find, pushed)``, or the error (the row is in ``self._pushed`` if
        push was called)."""
        assert job.movement is not None
        try:
            if job.outcome_unknown:
                found = self.policy.call(self._gated(connector.find, 1), job.key, what=f"find {job.key}",
                                         connection=job.target)
                if found is not None and found.posted:
                    log.info("%s → %s: key %s found posted as %s; not sent again", job.reference, job.target, job.key,
                             found.document_number or found.document_id)
                    return found, True, False
            self._pushed.add(job.outbox_id)
            receipt = self.policy.call(self._gated(connector.push), job.movement, job.key, what=f"push {job.key}",
                                       connection=job.target)
        except Exception as exc:
            return exc
        return receipt, False, True

    # -- several rows through push_many --------------------------------------------------------

    def _deliver_batch(self, connector: Connector, jobs: list[_Job]) -> list[DeliveryResult]:
        results: list[DeliveryResult] = []
        pending = jobs
        attempt = 1
        while pending:
            try:
                outcomes: list[Receipt | ConnectorError | BaseException] = list(
                    self._gated(connector.push_many)([(j.movement, j.key) for j in pending]))  # type: ignore[misc]
                if len(outcomes) != len(pending):
                    raise RuntimeError(f"push_many answered {len(outcomes)} results for {len(pending)} movements")
            except Exception as exc:
                outcomes = [exc] * len(pending)
            if self._gate is not None:  # a per-row RateLimited in a batch answer holds the bucket too
                self._gate.hold_for([o for o in outcomes if isinstance(o, RateLimited)])
            again: list[tuple[_Job, BaseException]] = []
            # the chunk's receipts in one transaction, before any of its failures is settled
            results.extend(self._sent_many([(job, outcome, False, True) for job, outcome in zip(pending, outcomes)
                                            if isinstance(outcome, Receipt)]))
            for job, outcome in zip(pending, outcomes, strict=True):
                if isinstance(outcome, Receipt):
                    continue
                if attempt < self.policy.inline_attempts and self.policy.retries_inline(outcome):
                    again.append((job, outcome))
                else:
                    results.append(self._failed(job, outcome, pushed=True))
            if not again:
                break
            self.policy.sleep(self.policy.batch_wait(attempt, [e for _, e in again], connection=pending[0].target))
            attempt += 1
            pending = [j for j, _ in again]
        return results

    def _gated(self, fn: Callable[..., Any], cost: int | None = None) -> Callable[..., Any]:
        return fn if self._gate is None else self._gate.wrap(fn, cost)

    # -- settling -----------------------------------------------------------------------------

    def _sent_many(self, sent: Sequence[tuple[_Job, Receipt, bool, bool]]) -> list[DeliveryResult]:
        """Record receipts ``(job, receipt, settled_by_find, pushed)`` in one transaction; each
        row is still its own compare-and-set on its lease."""
        if not sent:
            return []
        now = self.clock()
        oks = []
        with self.store.session(write=True) as session:
            for job, receipt, _, _ in sent:
                oks.append(ob.mark_sent(session, job.outbox_id, worker_id=self.worker_id, now=now,
                                        receipt_document_id=receipt.document_id,
                                        receipt_document_number=receipt.document_number))
            errorqueue.resolve_delivered_many(session, [job.outbox_id for ok, (job, _, _, _) in zip(oks, sent, strict=True)
                                                        if ok and job.had_errors], now=now)
            if self._follow_until is not None and time.monotonic() < self._follow_until:
                # the next row of each key just delivered, leased in this same transaction
                keys = [(job.target_id, job.ordering_key) for ok, (job, _, _, _) in zip(oks, sent, strict=True)
                        if ok and job.ordering_key is not None and job.target_id not in self._stopped]
                leased_at = time.monotonic()
                ids = ob.claim_heads(session, keys, worker_id=self.worker_id, lease_seconds=self.policy.lease_seconds,
                                     now=now)
                self._followed.extend(_leased(_jobs_by_id(session, ids, self.connections), leased_at, self.policy))
        results = []
        for ok, (job, receipt, settled_by_find, pushed) in zip(oks, sent, strict=True):
            if not ok:
                log.warning("%s → %s: delivered as %s but the lease was lost; the next claimer will find it",
                            job.reference, job.target, receipt.document_number or receipt.document_id)
            results.append(self._result(job, Outcome.SENT if ok else Outcome.LOST_LEASE,
                                        document_id=receipt.document_id, document_number=receipt.document_number,
                                        settled_by_find=settled_by_find, pushed=pushed))
        return results

    def _failed(self, job: _Job, error: BaseException, *, pushed: bool) -> DeliveryResult:
        if not isinstance(error, ConnectorError):
            log.exception("%s → %s: unexpected %s", job.reference, job.target, type(error).__name__, exc_info=error)
        now = self.clock()
        decision = self.policy.decide(error, job.attempts, job.created_at, now)
        kind = error_kind(error)
        if decision.verdict is Verdict.DEAD_LETTER and isinstance(error, Rejected) and not decision.exhausted:
            feeder = self._earlier_feeder(job)
            if feeder is not None:
                # F17: refused (e.g. negative stock) while an older movement that adds stock where
                # this one takes it is still on its way: wait for it instead of dead-lettering.
                waiting = DependencyMissing(f"refused ({error}) while earlier movement {feeder} that adds stock "
                                            "here is still in flight; waiting for it", record=job.reference)
                decision = self.policy.decide(waiting, job.attempts, job.created_at, now)
                if decision.verdict is Verdict.DEFER:
                    error, kind = waiting, waiting.kind
        # The vendor code has its own column; the record is the row's movement.
        message = redact_text(error.message if isinstance(error, ConnectorError) else
                              f"{type(error).__name__}: {error}")
        if decision.exhausted:
            message = f"{decision.reason}; last error: {message}"
        with self.store.session(write=True) as session:
            outcome, error_id = self._settle_failure(session, job, decision, error, kind, message, now)
        level = logging.ERROR if outcome in (Outcome.DEAD_LETTER, Outcome.PAUSED) else logging.INFO
        log.log(level, "%s → %s (key %s, attempt %d): %s → %s", job.reference, job.target, job.key, job.attempts,
                message, outcome.value)
        return self._result(job, outcome, error_kind=kind, error=message, pushed=pushed,
                            next_attempt_at=decision.at if outcome in (Outcome.RETRY, Outcome.RECONCILE,
                                                                       Outcome.DEFERRED) else None,
                            error_id=error_id, retry_after=decision.retry_after)

    def _earlier_feeder(self, job: _Job) -> str | None:
        """The reference of an older row for the same target, still pending, sending or
        ambiguous, whose movement adds stock to a position this one takes from; or None."""
        assert job.payload is not None
        takes = {(d.sku, d.warehouse, d.bin, d.lot) for d in movement_of(job.payload).stock_deltas() if d.quantity < 0}
        if not takes:
            return None
        with self.store.session() as session:
            older = session.execute(
                select(Movement.reference, Movement.payload).join(Outbox, Outbox.movement_id == Movement.id)
                .where(Outbox.target_connection_id == job.target_id, Outbox.id < job.outbox_id,
                       Outbox.status.in_(ob.BLOCKING))
                .order_by(Outbox.id.desc()).limit(FEEDER_SCAN)
            ).all()
        for reference, payload in older:
            try:
                deltas = movement_of(payload).stock_deltas()
            except Exception:  # a stored payload that no longer validates is not a feeder
                continue
            if any(d.quantity > 0 and (d.sku, d.warehouse, d.bin, d.lot) in takes for d in deltas):
                return reference
        return None

    def _settle_failure(self, session: Session, job: _Job, decision: Decision, error: BaseException, kind: str,
                        message: str, now: datetime) -> tuple[Outcome, int | None]:
        verdict = decision.verdict
        if verdict in (Verdict.RETRY, Verdict.DEFER, Verdict.RECONCILE):
            assert decision.at is not None
            # Once unknown, stay unknown until settled: an earlier request may still land.
            ambiguous = decision.ambiguous or job.outcome_unknown
            ok = ob.reschedule(session, job.outbox_id, worker_id=self.worker_id, now=now,
                               next_attempt_at=decision.at, error_kind=kind, error_message=message, ambiguous=ambiguous)
            outcome = {Verdict.RETRY: Outcome.RETRY, Verdict.DEFER: Outcome.DEFERRED,
                       Verdict.RECONCILE: Outcome.RECONCILE}[verdict]
            return (outcome if ok else Outcome.LOST_LEASE), None
        if verdict is Verdict.PAUSE:
            ok = ob.release(session, job.outbox_id, worker_id=self.worker_id, now=now)
            pause_connection(session, job.target_id, f"{kind}: {message}", now=now)
            log.error("connection %s paused: %s", job.target, message)
            return (Outcome.PAUSED if ok else Outcome.LOST_LEASE), None
        ok = ob.mark_failed(session, job.outbox_id, worker_id=self.worker_id, now=now, error_kind=kind,
                            error_message=message)
        if not ok:
            return Outcome.LOST_LEASE, None
        row = session.get(Outbox, job.outbox_id)
        assert row is not None
        entry = errorqueue.record_dead_letter(session, outbox=row, payload=job.payload, record_key=job.reference,
                                              error=error, now=now, kind=kind, message=message)
        return Outcome.DEAD_LETTER, entry.id

    def _release_all(self, jobs: Sequence[_Job], *, until: datetime | None = None) -> list[DeliveryResult]:
        """Hand rows back untried (attempt not counted), due again at ``until`` (default now)."""
        if not jobs:
            return []
        now = self.clock()
        results = []
        with self.store.session(write=True) as session:
            for job in jobs:
                ok = ob.release(session, job.outbox_id, worker_id=self.worker_id, now=now, next_attempt_at=until)
                results.append(self._result(job, Outcome.RELEASED if ok else Outcome.LOST_LEASE))
        return results

    def _fail_all(self, jobs: Sequence[_Job], error: BaseException) -> list[DeliveryResult]:
        results = []
        for index, job in enumerate(jobs):
            result = self._failed(job, error, pushed=False)
            results.append(result)
            if result.outcome is Outcome.PAUSED:
                return results + self._release_all(jobs[index + 1:])
        return results

    def _result(self, job: _Job, outcome: Outcome, **fields: Any) -> DeliveryResult:
        return DeliveryResult(outbox_id=job.outbox_id, movement_id=job.movement_id, reference=job.reference,
                              target=job.target, key=job.key, outcome=outcome, attempts=job.attempts, **fields)


class _NoSlot(RateLimited):
    """Our own limiter had no slot within the inline wait: nothing was sent (no hold)."""


class _Gate:
    """One target's rate limiter around the calls of a delivery (see the module doc)."""

    #: Hold when the vendor refuses with 429 but names no Retry-After (seconds).
    DEFAULT_HOLD = 1.0

    def __init__(self, limiter: RateLimiter, target: str, cost: int, policy: RetryPolicy) -> None:
        self.limiter = limiter
        self.target = target
        self.cost = cost
        self.policy = policy

    def wrap(self, fn: Callable[..., Any], cost: int | None = None) -> Callable[..., Any]:
        tokens = self.cost if cost is None else cost

        def call(*args: Any, **kwargs: Any) -> Any:
            try:  # every attempt takes its tokens, inline retries included
                self.limiter.acquire(tokens, timeout=self.policy.max_inline_wait)
            except RateLimitTimeout:
                wait = self.limiter.peek(tokens)
                raise _NoSlot(f"{self.target}: no rate-limit slot for {wait:.1f} s; not sent",
                              retry_after=wait) from None
            try:
                return fn(*args, **kwargs)
            except RateLimited as exc:
                self.hold_for([exc])
                raise

        return call

    def hold_for(self, refusals: Sequence[RateLimited]) -> None:
        """The vendor refused with Retry-After: hold the bucket for every thread and process."""
        refusals = [r for r in refusals if not isinstance(r, _NoSlot)]
        if not refusals:
            return
        seconds = max(self.DEFAULT_HOLD if r.retry_after is None else max(0.0, float(r.retry_after))
                      for r in refusals)
        self.limiter.hold(seconds)
        log.info("%s: rate limited by the vendor; every sender holds for %.3g s", self.target, seconds)


def _stops_target(result: DeliveryResult) -> bool:
    """After this result, send nothing more to its target in this run: the connection was
    paused, or the vendor asked us to wait (Retry-After applies to the tenant, not one row)."""
    return result.outcome is Outcome.PAUSED or (result.error_kind == "rate_limited" and
                                                result.next_attempt_at is not None)


def _hold_until(result: DeliveryResult) -> datetime | None:
    return result.next_attempt_at if result.outcome is not Outcome.PAUSED else None


__all__ = ["DeliveryResult", "Outcome", "active_targets", "claim_one", "deliver_due", "deliver_from", "deliver_one",
           "lookup_codes", "pause_connection", "resolve_codes", "resume_connection", "sweep", "to_external",
           "to_externals"]
