"""Thin dramatiq actors over the engine (STYLE.md "The engine owns state; actors are thin").

Actors receive ids, never payloads, and hold no state: the store is the record of truth and
dramatiq only decides when work runs (DESIGN.md §5).

========================  ===========================  ============================================
actor (name)              queue                        does
========================  ===========================  ============================================
``deliver.<platform>``    ``<prefix>push.<platform>``  ``deliver(outbox_id)``: wait for the target
                                                       connection's rate limiter, then
                                                       ``sync.delivery.deliver_from`` (claim, push,
                                                       record, and on an unlimited target more
                                                       rows and their keys' next rows for a while;
                                                       every retry decision is the engine's)
``pull.<platform>``       ``<prefix>pull.<platform>``  ``pull(connection, entity, mode, flow)``: one
                                                       flow step (:mod:`sync.flows`)
``relay``                 ``<prefix>hub``              ``relay(connection)``: send ``deliver`` for the
                                                       due outbox rows of a target (no claiming)
``sweep``                 ``<prefix>hub``              ``sweep()``: expired leases → ambiguous
========================  ===========================  ============================================

One queue per vendor platform, so a slow or rate-limited vendor never holds up the others.

Actors catch nothing the delivery module classifies. Whatever still escapes (the store is down,
a bug) is retried by dramatiq's ``Retries`` a few times; when those are exhausted,
:class:`StoreDeadLetters` writes the failure to the store's ``error_queue`` *before* the broker
dead-letters the message, so nothing lives only in ``<queue>.XQ`` (RELIABILITY §1.6).

Actors are declared against the broker given to :func:`declare_actors`, never against
dramatiq's global default broker, so tests and processes can build brokers at run time.
"""
from __future__ import annotations

import hashlib
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import dramatiq
from dramatiq.middleware import Middleware
from sqlalchemy import select

from connectors.redaction import redact_text
from sync.connections import Connections
from sync.ratelimit import RateLimiters, effective_rate
from sync.store import ErrorQueue, ErrorStatus, Outbox, OutboxStatus, Store, utcnow
from sync.store.outbox import due, not_held_back  # the claim rules, so the relay sends what a claim takes

log = logging.getLogger("erphub.sync.actors")

__all__ = [
    "Actors",
    "DISPATCH_FAILED",
    "Relay",
    "Runtime",
    "StoreDeadLetters",
    "declare_actors",
    "hub_queue",
    "pull_queue",
    "push_queue",
]

#: ``error_queue.kind`` of a message the broker gave up on.
DISPATCH_FAILED = "dispatch_failed"

#: The longest a worker thread sleeps on a rate limiter before handing the message back to the
#: broker with a delay instead (so one slow vendor cannot hold every thread).
MAX_INLINE_RATE_WAIT = 2.0

#: With its own row, a ``deliver`` claims up to this many more due rows of the same target in
#: the same statement and delivers them too (P6: a claim of several rows costs far less per row
#: than one claim per message). Messages for those rows then find them leased or sent: no-ops.
FOLLOW_ON = 16

#: How long one ``deliver`` message goes on following the ordering keys it delivered: each
#: time it records receipts it leases the next row of each of those keys in the same
#: transaction (``sync.delivery.deliver_from``). Bounded, so a busy target cannot keep a
#: worker thread from its other queues for long.
FOLLOW_ON_SECONDS = 2.0




def push_queue(platform: str, prefix: str = "") -> str:
    return f"{prefix}push.{platform}"


def pull_queue(platform: str, prefix: str = "") -> str:
    return f"{prefix}pull.{platform}"


def hub_queue(prefix: str = "") -> str:
    return f"{prefix}hub"


def default_worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


@dataclass
class Runtime:
    """What actors need in a process: the store, the connections, rate limiters and the retry
    policy. One per process; shared by its worker threads.

    ``deliver_fn``, ``pull_fn`` and ``sweep_fn`` default to the engine (``sync.delivery``,
    :mod:`sync.flows`); tests may replace them.
    """

    store: Store
    connections: Connections
    policy: Any = None  # sync.retry.RetryPolicy; None = its defaults
    limiters: RateLimiters | None = None
    worker_id: str = field(default_factory=default_worker_id)
    queue_prefix: str = ""
    flows: dict[str, Any] = field(default_factory=dict)  # name -> flow (sync.flows.FlowLike)
    lookback: timedelta = timedelta(minutes=5)
    deliver_fn: Callable[..., Any] | None = None
    pull_fn: Callable[..., Any] | None = None
    sweep_fn: Callable[..., Any] | None = None
    follow_on: int = FOLLOW_ON  # extra due rows of the same target a deliver claims after its own (0 = none)

    def __post_init__(self) -> None:
        if self.policy is None:
            from sync.retry import RetryPolicy

            self.policy = RetryPolicy()
        if self.limiters is None:
            self.limiters = RateLimiters(self.rate_of)
        self._platforms: dict[int, str] = {}
        self._settled = threading.Condition()
        self._deliveries_ended = 0

    # -- connections ---------------------------------------------------------------------------

    def platforms(self) -> list[str]:
        return sorted({self.connections.platform(name) for name in self.connections.names()})

    def rate_of(self, name: str) -> float | None:
        """The rate to keep to for connection ``name``: its setting or its connector's capability."""
        configured = getattr(self.connections.settings[name], "rate_limit_per_second", None)
        try:
            advertised = self.connections.connector(name).capabilities.rate_limit_per_second
        except Exception:  # a connector that cannot even be built will fail loudly when used
            advertised = None
        return effective_rate(configured, advertised)

    def cost_of(self, name: str) -> int:
        """Rate-limit tokens one push takes: the API calls it makes to post (Kingdee: 3)."""
        try:
            return max(1, int(self.connections.connector(name).capabilities.posting_calls))
        except Exception:
            return 1

    def thread_worker_id(self) -> str:
        return f"{self.worker_id}/{threading.get_ident()}"

    # -- engine calls --------------------------------------------------------------------------

    def deliver(self, outbox_id: int) -> float | None:
        """Deliver one row. Returns None when done (or nothing to do), or the seconds the caller
        should wait before trying again because the rate limiter is full."""
        target = self._due_target(outbox_id)
        if target is None:
            return None  # already settled, not due, or leased by another worker: nothing to do
        assert self.limiters is not None
        limiter = self.limiters.for_connection(target)
        cost = self.cost_of(target) if limiter.rate is not None else 1
        if self.deliver_fn is None:
            # The engine takes the tokens itself, right before each call to the vendor (inline
            # retries included), and holds the bucket on a Retry-After; here only look ahead, so
            # a full or held bucket hands the message back instead of holding a thread.
            wait = limiter.peek(cost)
            if wait > MAX_INLINE_RATE_WAIT:
                return wait
            from sync.delivery import deliver_from

            # More rows and following only for an unlimited target: on a rate-limited one the
            # extra rows would sit leased while this thread waits for tokens (the relay's
            # messages pace those).
            more = self.follow_on > 0 and limiter.rate is None
            settled = True
            try:
                settled = bool(deliver_from(self.store, self.connections, outbox_id, worker_id=self.thread_worker_id(),
                                            policy=self.policy, limiters=self.limiters,
                                            also=self.follow_on if more else 0,
                                            follow_seconds=FOLLOW_ON_SECONDS if more else 0.0))
            finally:
                if settled:  # a message whose row another worker had taken changed nothing
                    self.delivered()
            return None
        while True:  # a replaced deliver_fn: take the tokens here, as it cannot
            wait = limiter.try_acquire(cost)
            if wait <= 0:
                break
            if wait > MAX_INLINE_RATE_WAIT:
                return wait
            time.sleep(wait)
        try:
            self.deliver_fn(self.store, self.connections, outbox_id, worker_id=self.thread_worker_id(),
                            policy=self.policy)
        finally:
            self.delivered()
        return None

    def delivered(self) -> None:
        """A delivery in this process settled rows (keys freed, rows rescheduled): wake
        :meth:`wait_for_deliveries`."""
        with self._settled:
            self._deliveries_ended += 1
            self._settled.notify_all()

    @property
    def deliveries_ended(self) -> int:
        """How many deliveries in this process have settled rows so far (see :meth:`delivered`)."""
        return self._deliveries_ended

    def wait_for_deliveries(self, seen: int, timeout: float) -> bool:
        """Wait until more than ``seen`` deliveries in this process have settled rows (at most
        ``timeout`` seconds); True if they had. Deliveries in other processes (``erphub worker``)
        do not wake it: callers poll."""
        with self._settled:
            return self._settled.wait_for(lambda: self._deliveries_ended != seen, timeout)

    def pull(self, connection: str, entity: str, mode: str, flow: str | None = None) -> Any:
        fn = self.pull_fn
        if fn is None:
            from sync.flows import pull_step as fn
        return fn(self, connection, entity, mode, flow)

    def sweep(self, now: datetime | None = None) -> int:
        now = now or utcnow()
        fn = self.sweep_fn
        if fn is None:
            from sync.delivery import sweep as fn
        swept = int(fn(self.store, now) or 0)
        from sync.webhooks import prune

        prune(self.store, now)  # old webhook delivery ids, by an indexed range: cheap when there are none
        return swept

    def _due_target(self, outbox_id: int) -> str | None:
        """The target connection name of ``outbox_id`` if the row is claimable now."""
        now = utcnow()
        with self.store.session() as session:
            row = session.execute(
                select(Outbox.target_connection_id, Outbox.status, Outbox.next_attempt_at, Outbox.lease_expires_at)
                .where(Outbox.id == outbox_id)
            ).one_or_none()
        if row is None:
            log.warning("deliver: outbox row %s does not exist", outbox_id)
            return None
        target_id, status, next_at, lease_until = row
        if status in (OutboxStatus.PENDING, OutboxStatus.AMBIGUOUS):
            if next_at is not None and next_at > now:
                return None
        elif status == OutboxStatus.SENDING:
            if lease_until is not None and lease_until > now:
                return None
        else:
            return None
        return self.connection_name(target_id)

    def connection_name(self, connection_id: int) -> str:
        return self.connections.name_of(connection_id)

    # -- dead letters --------------------------------------------------------------------------

    def record_dead_message(self, actor_name: str, args: tuple[Any, ...], kwargs: dict[str, Any],
                            error: BaseException, *, message_id: str, retries: int) -> int | None:
        """Write a message the broker gave up on to ``error_queue``; the id of the entry, or None
        when the message names no connection (a sweep tick: nothing is lost, the next tick
        re-runs it)."""
        base = actor_name.split(".", 1)[0]
        connection_id: int | None = None
        outbox_id: int | None = None
        movement_id: int | None = None
        record_key: str | None = None
        entity = base
        call = dict(zip(_PARAMS.get(base, ()), args)) | kwargs
        with self.store.session() as session:
            if base == "deliver" and "outbox_id" in call:
                row = session.get(Outbox, int(call["outbox_id"]))
                if row is not None:
                    connection_id, outbox_id, movement_id = row.target_connection_id, row.id, row.movement_id
                    record_key, entity = row.idempotency_key, "movements"
            elif call.get("connection"):
                connection_id = self.connections.id(str(call["connection"]))
                entity = str(call.get("entity") or base)
        if connection_id is None:
            log.error("%s gave up after %d broker retries: %s", actor_name, retries,
                      redact_text(f"{type(error).__name__}: {error}"))
            return None
        text = redact_text(f"{type(error).__name__}: {error}")
        message = (f"{actor_name} failed {retries + 1} time(s) and the broker dead-lettered its message; "
                   f"last error: {text}")
        fingerprint = hashlib.sha256(f"{DISPATCH_FAILED}|{base}|{type(error).__name__}".encode()).hexdigest()
        now = utcnow()
        payload = {"actor": actor_name, "call": {k: v for k, v in call.items()}, "message_id": message_id,
                   "broker_retries": retries}
        with self.store.session(write=True) as session:
            existing = session.scalars(
                select(ErrorQueue).where(
                    ErrorQueue.fingerprint == fingerprint, ErrorQueue.connection_id == connection_id,
                    ErrorQueue.status == ErrorStatus.OPEN,
                    ErrorQueue.outbox_id.is_(None) if outbox_id is None else ErrorQueue.outbox_id == outbox_id,
                    ErrorQueue.entity == entity,
                ).limit(1)
            ).first()
            if existing is not None:
                existing.attempts += 1
                existing.last_seen = now
                existing.message = message
                existing.payload = payload
                session.flush()
                return existing.id
            entry = ErrorQueue(connection_id=connection_id, outbox_id=outbox_id, movement_id=movement_id,
                               entity=entity, record_key=record_key, kind=DISPATCH_FAILED, vendor_code=None,
                               message=message, payload=payload, fingerprint=fingerprint, first_seen=now,
                               last_seen=now)
            session.add(entry)
            session.flush()
            return entry.id


_PARAMS: dict[str, tuple[str, ...]] = {
    "deliver": ("outbox_id",),
    "pull": ("connection", "entity", "mode", "flow"),
    "relay": ("connection",),
    "sweep": (),
}


class StoreDeadLetters(Middleware):
    """Before the broker dead-letters a failed message, record it in the store's error queue.

    Runs in ``before_nack``: a message is nacked only once ``Retries`` gave up (or the actor's
    ``throws`` matched). If the process dies between the store write and the nack, the message
    comes back, fails again and bumps the same entry's ``attempts``. A message dropped by
    ``AgeLimit`` carries no exception: it is logged only, since its outbox row is still in the
    store and the relay sends it again.
    """

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    def before_nack(self, broker: dramatiq.Broker, message: Any) -> None:
        error = getattr(message, "_exception", None)
        if error is None or isinstance(error, dramatiq.middleware.SkipMessage):
            log.warning("message %s (%s%s) was dropped unprocessed (age limit); the store still has its work",
                        message.message_id, message.actor_name, tuple(message.args))
            return
        try:
            self.runtime.record_dead_message(
                message.actor_name, tuple(message.args), dict(message.kwargs), error,
                message_id=message.message_id, retries=int(message.options.get("retries", 1)) - 1)
        except Exception:  # the store is what failed: say so loudly; the XQ copy remains for 7 days
            log.critical("could not record dead-lettered message %s (%s) in the error queue",
                         message.message_id, message.actor_name, exc_info=True)


class Relay:
    """Finds outbox rows that are due (without claiming them) and sends ``deliver`` for each.

    A row is sent again only when its state changed (rescheduled, swept, requeued) or after
    ``resend_after`` seconds (its message may have been lost); duplicates are harmless anyway,
    since only one ``deliver`` can claim a row. Rows held back by an older row with the same
    ordering key are not sent until that row settles.
    """

    def __init__(self, runtime: Runtime, send: Callable[[int, str], None], *, resend_after: float = 60.0,
                 batch: int = 1000) -> None:
        self.runtime = runtime
        self.send = send
        self.resend_after = resend_after
        self.batch = batch
        self._sent: dict[int, tuple[tuple[Any, ...], float]] = {}
        self._lock = threading.Lock()
        #: How many due rows the last :meth:`due` found (so a drain knows work is left without
        #: asking the store again); None before the first.
        self.last_due: int | None = None

    def due(self, targets: Collection[str] | None = None, *, now: datetime | None = None) -> list[tuple[int, int, tuple[Any, ...]]]:
        """``(outbox id, target connection id, state)`` of the rows a claim could take now."""
        now = now or utcnow()
        query = (
            select(Outbox.id, Outbox.target_connection_id, Outbox.status, Outbox.attempts, Outbox.next_attempt_at)
            .where(due(now), not_held_back())  # the claim's own rules: what a claim could take now
            .order_by(Outbox.id)
            .limit(self.batch)
        )
        if targets is not None:
            ids = [self.runtime.connections.id(t) for t in targets]
            if not ids:
                self.last_due = 0
                return []
            query = query.where(Outbox.target_connection_id.in_(ids))
        with self.runtime.store.session() as session:
            rows = [(r[0], r[1], (r[2], r[3], r[4])) for r in session.execute(query)]
        self.last_due = len(rows)
        return rows

    def tick(self, targets: Collection[str] | None = None, *, now: datetime | None = None) -> int:
        """Send ``deliver`` for due rows not sent recently; returns how many were sent."""
        clock = time.monotonic()
        sent = 0
        rows = self.due(targets, now=now)
        with self._lock:
            live = {row_id for row_id, _, _ in rows}
            for row_id in [r for r in self._sent if r not in live and clock - self._sent[r][1] > self.resend_after]:
                del self._sent[row_id]
            for row_id, target_id, state in rows:
                previous = self._sent.get(row_id)
                if previous is not None and previous[0] == state and clock - previous[1] < self.resend_after:
                    continue
                self.send(row_id, self.runtime.connection_name(target_id))
                self._sent[row_id] = (state, clock)
                sent += 1
        return sent

    def forget(self) -> None:
        with self._lock:
            self._sent.clear()


@dataclass
class Actors:
    """The actors declared on one broker, and how to send to them."""

    broker: dramatiq.Broker
    runtime: Runtime
    deliver: dict[str, dramatiq.Actor]  # platform -> actor
    pull: dict[str, dramatiq.Actor]     # platform -> actor
    relay: dramatiq.Actor
    sweep: dramatiq.Actor
    relay_engine: Relay

    @property
    def queues(self) -> list[str]:
        return sorted(self.broker.get_declared_queues())

    def push_queues(self) -> list[str]:
        return sorted(actor.queue_name for actor in self.deliver.values())

    def send_deliver(self, outbox_id: int, connection: str, *, delay_ms: int | None = None) -> None:
        actor = self.deliver[self.runtime.connections.platform(connection)]
        actor.send_with_options(args=(int(outbox_id),), delay=delay_ms)

    def send_pull(self, connection: str, entity: str, mode: str, flow: str | None = None) -> None:
        self.pull[self.runtime.connections.platform(connection)].send(connection, entity, mode, flow)


def declare_actors(broker: dramatiq.Broker, runtime: Runtime, *, platforms: Iterable[str] | None = None,
                   resend_after: float | None = None, deliver_options: dict[str, Any] | None = None,
                   pull_options: dict[str, Any] | None = None) -> Actors:
    """Declare the hub's actors on ``broker`` (one deliver and one pull actor per platform) and
    add :class:`StoreDeadLetters` to it. Call once per broker; every process that sends or
    works on the same queues must declare the same platforms."""
    if not any(isinstance(m, StoreDeadLetters) for m in broker.middleware):
        from dramatiq.middleware import Retries

        broker.add_middleware(StoreDeadLetters(runtime), before=Retries)
    prefix = runtime.queue_prefix
    platforms = sorted(set(platforms if platforms is not None else runtime.platforms()))
    deliver_opts = {"max_retries": 3, "min_backoff": 1_000, "max_backoff": 60_000, **(deliver_options or {})}
    pull_opts = {"max_retries": 2, "min_backoff": 5_000, "max_backoff": 60_000, "time_limit": 60 * 60_000,
                 **(pull_options or {})}

    deliver_actors: dict[str, dramatiq.Actor] = {}
    pull_actors: dict[str, dramatiq.Actor] = {}
    for platform in platforms:
        deliver_actors[platform] = _deliver_actor(broker, runtime, platform, prefix, deliver_opts)
        pull_actors[platform] = _pull_actor(broker, runtime, platform, prefix, pull_opts)

    def send(outbox_id: int, connection: str) -> None:
        deliver_actors[runtime.connections.platform(connection)].send(int(outbox_id))

    relay_engine = Relay(runtime, send, resend_after=resend_after if resend_after is not None
                         else max(60.0, float(runtime.policy.lease_seconds) / 2))

    def relay(connection: str | None = None) -> int:
        return relay_engine.tick([connection] if connection else None)

    def sweep() -> int:
        return runtime.sweep()

    relay_actor = dramatiq.actor(relay, broker=broker, actor_name="relay", queue_name=hub_queue(prefix),
                                 max_retries=1, min_backoff=1_000)
    sweep_actor = dramatiq.actor(sweep, broker=broker, actor_name="sweep", queue_name=hub_queue(prefix),
                                 max_retries=1, min_backoff=1_000)
    return Actors(broker, runtime, deliver_actors, pull_actors, relay_actor, sweep_actor, relay_engine)


def _deliver_actor(broker: dramatiq.Broker, runtime: Runtime, platform: str, prefix: str,
                   options: dict[str, Any]) -> dramatiq.Actor:
    def deliver(outbox_id: int) -> None:
        wait = runtime.deliver(int(outbox_id))
        if wait is not None:  # the vendor's rate limit is full for a while: come back later
            actor.send_with_options(args=(int(outbox_id),), delay=int(wait * 1000) + 1)

    actor = dramatiq.actor(deliver, broker=broker, actor_name=f"deliver.{platform}",
                           queue_name=push_queue(platform, prefix), **options)
    return actor


def _pull_actor(broker: dramatiq.Broker, runtime: Runtime, platform: str, prefix: str,
                options: dict[str, Any]) -> dramatiq.Actor:
    def pull(connection: str, entity: str, mode: str, flow: str | None = None) -> None:
        runtime.pull(connection, entity, mode, flow)

    return dramatiq.actor(pull, broker=broker, actor_name=f"pull.{platform}",
                          queue_name=pull_queue(platform, prefix), **options)
