"""Running the configured flows: once to completion, on their schedules, or as a worker process.

:class:`Hub` puts one process together: the :class:`~sync.actors.Runtime` (store, connections,
rate limiters, retry policy), a broker built from its URL (:mod:`sync.broker`) with the actors
declared on it, and, for the in-process broker, worker threads (the embedded mode).

- :meth:`Hub.once` — every flow once: its pulls run here (movements are enqueued in the pull's
  page transactions), then the relay sends ``deliver`` for every due row of the flows' targets
  until nothing is claimable or sending any more (drained, or only future retries remain).
  Deliveries run on the worker threads (embedded) or on ``erphub worker`` processes.
- :meth:`Hub.run` — the scheduler: sends each flow's pulls to the ``pull`` actors when it is due
  (``every``), relays due outbox rows and sweeps expired leases, until stopped.
- :func:`serve_worker` — a dramatiq worker over the hub's queues, until stopped.

Counts in the summaries come from the store (the record of truth), for the rows of each flow
(movements from the flow's source, outbox rows for its targets) touched since the run began:
``failed`` = rows not delivered yet that will be retried, ``dead`` = rows parked in the error
queue (rejected or given up) plus source records that could not be mapped.
"""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, func, or_, select

from connectors.redaction import redact_text
from sync.actors import Actors, Runtime, declare_actors
from sync.broker import BrokerConfig, EmbeddedWorker, build_broker
from sync.connections import Connections
from sync.flows import BALANCES, FlowLike, flow_steps
from sync.ratelimit import RateLimiters
from sync.store.outbox import due, not_held_back  # the claim's rules
from sync.store import BalanceSnapshot, Movement, Outbox, OutboxStatus, RunStatus, Store, SyncRun, utcnow

log = logging.getLogger("erphub.sync.runner")

#: With worker threads in this process, the longest a drain waits between relay ticks when no
#: delivery settles and no retry comes due (seconds): lost messages and expired leases.
EMBEDDED_MAX_WAIT = 0.5


__all__ = ["FlowSummary", "Hub", "serve_worker"]


@dataclass
class FlowSummary:
    name: str
    kind: str
    read: int = 0
    enqueued: int = 0
    delivered: int = 0
    failed: int = 0
    dead: int = 0
    duration: float = 0.0
    errors: list[str] = field(default_factory=list)
    last_pull: datetime | None = None
    next_pull: datetime | None = None

    @property
    def ok(self) -> bool:
        return not self.errors


class Hub:
    """One process of the hub: runtime, broker, actors and (embedded) worker threads.

    >>> with Hub(store, connections, settings.flows, BrokerConfig("memory://")) as hub:
    ...     summaries = hub.once()
    """

    def __init__(self, store: Store, connections: Connections, flows: Sequence[FlowLike] = (),
                 broker: BrokerConfig | str = BrokerConfig(), *, policy: Any = None, threads: int = 4,
                 embedded_worker: bool | None = None, resend_after: float | None = None,
                 lookback: timedelta = timedelta(minutes=5), worker_id: str | None = None,
                 rate_limit_url: str | None = None) -> None:
        self.config = BrokerConfig(url=broker) if isinstance(broker, str) else broker
        self.flows = list(flows)
        runtime_kwargs: dict[str, Any] = {}
        if worker_id:
            runtime_kwargs["worker_id"] = worker_id
        self.runtime = Runtime(store, connections, policy=policy, queue_prefix=self.config.queue_prefix,
                               flows={f.name: f for f in self.flows}, lookback=lookback, **runtime_kwargs)
        # Many worker processes share one bucket per connection in Redis: the broker's own Redis,
        # or ``rate_limit_url`` (a RabbitMQ deployment without it gets one bucket per process).
        shared_url = rate_limit_url or (self.config.url if self.config.kind == "redis" else None)
        if shared_url:
            self.runtime.limiters = RateLimiters(self.runtime.rate_of, redis_url=shared_url,
                                                 namespace=self.config.namespace)
        self.broker = build_broker(self.config)
        self.actors: Actors = declare_actors(self.broker, self.runtime, resend_after=resend_after)
        embedded = self.config.kind == "memory" if embedded_worker is None else embedded_worker
        self.worker = EmbeddedWorker(self.broker, threads=threads) if embedded else None
        self._started = False

    @property
    def store(self) -> Store:
        return self.runtime.store

    @property
    def connections(self) -> Connections:
        return self.runtime.connections

    def start(self) -> Hub:
        if self.worker is not None and not self._started:
            self.worker.start()
        self._started = True
        return self

    def close(self) -> None:
        if self.worker is not None and self._started:
            self.worker.stop()
        self._started = False
        self.broker.close()

    def __enter__(self) -> Hub:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- once --------------------------------------------------------------------------------

    def once(self, *, timeout: float | None = 600.0, poll: float = 0.05,
             on_progress: Callable[[list[FlowSummary]], None] | None = None) -> list[FlowSummary]:
        """Run every flow once to completion; one summary per flow. A flow whose pull failed
        says why in ``errors``; the other flows go on. Raises ``TimeoutError`` when deliveries
        are still outstanding after ``timeout`` seconds (nothing is lost: the rows stay due)."""
        self.start()
        started = utcnow()
        clock: dict[str, float] = {}
        errors: dict[str, list[str]] = {f.name: [] for f in self.flows}
        for flow in self.flows:
            t0 = time.monotonic()
            for step in self._steps(flow, errors[flow.name]):
                try:
                    self.runtime.pull(step.connection, step.entity, step.mode, flow.name)
                except Exception as exc:  # one failing flow must not hide the others' results
                    log.error("flow %s: pulling %s from %s failed: %s: %s", flow.name, step.entity, step.connection,
                              type(exc).__name__, exc)
                    errors[flow.name].append(f"{step.entity}: {type(exc).__name__}: {exc}")
            clock[flow.name] = time.monotonic() - t0
        pending = {f.name for f in self.flows if self._targets(f)}
        deadline = None if timeout is None else time.monotonic() + timeout
        drain_started = time.monotonic()
        last_sweep = 0.0
        while pending:
            targets = sorted({t for f in self.flows if f.name in pending for t in self._targets(f)})
            if time.monotonic() - last_sweep >= 1.0:  # a dead worker's leases come back
                last_sweep = time.monotonic()
                self.runtime.sweep()
            seen = self.runtime.deliveries_ended
            relay = self.actors.relay_engine
            relay.tick(targets)
            for name in list(pending):
                flow = next(f for f in self.flows if f.name == name)
                # a flow with a single target whose due rows the relay just saw is not done
                if relay.last_due and len(pending) == 1 and len(targets) == len(self._targets(flow)):
                    continue
                if not self.outstanding(self._targets(flow)):
                    pending.discard(name)
                    clock[name] += time.monotonic() - drain_started
            if on_progress is not None:
                on_progress(self.summaries(started, errors=errors))
            if not pending:
                break
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"deliveries still outstanding after {timeout:g}s for flows: {', '.join(sorted(pending))}")
            self._wait(seen, poll)
        summaries = self.summaries(started, errors=errors)
        for summary in summaries:
            summary.duration = clock.get(summary.name, 0.0)
        return summaries

    def drain(self, targets: Iterable[str], *, timeout: float | None = 600.0, poll: float = 0.05,
              sweep_every: float = 1.0) -> None:
        """Relay and wait until no row of ``targets`` is claimable or being sent (drained, or only
        future retries remain); ``TimeoutError`` after ``timeout`` seconds. Between relay ticks it
        waits as :meth:`_wait` says."""
        self.start()
        names = sorted(set(targets))
        deadline = None if timeout is None else time.monotonic() + timeout
        last_sweep = 0.0
        while True:
            if time.monotonic() - last_sweep >= sweep_every:  # a dead worker's leases come back
                last_sweep = time.monotonic()
                self.runtime.sweep()
            seen = self.runtime.deliveries_ended
            relay = self.actors.relay_engine
            relay.tick(names)
            # Due rows the relay just found are outstanding: no need to count them again.
            if not relay.last_due and not self.outstanding(names):
                return
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"deliveries to {', '.join(names)} still outstanding after {timeout:g}s")
            self._wait(seen, poll)

    def _wait(self, seen: int, poll: float) -> None:
        """Wait before the next relay tick. With worker threads in this process: until one of
        their deliveries settles rows (``seen`` is :attr:`Runtime.deliveries_ended` before the
        tick), a retry comes due, or :data:`EMBEDDED_MAX_WAIT` passes, so ticks (each a search
        through every due row) follow the work instead of a clock. Otherwise ``poll`` seconds:
        deliveries in other processes wake nothing here."""
        if self.worker is None:
            time.sleep(poll)
            return
        wait = EMBEDDED_MAX_WAIT
        now = utcnow()
        with self.store.session() as session:
            next_due = session.scalar(select(func.min(Outbox.next_attempt_at)).where(
                Outbox.status.in_((OutboxStatus.PENDING, OutboxStatus.AMBIGUOUS)), Outbox.next_attempt_at > now))
        if next_due is not None:
            wait = min(wait, max(0.0, (next_due - now).total_seconds()))
        self.runtime.wait_for_deliveries(seen, max(wait, 0.001))

    def outstanding(self, targets: Iterable[str], *, now: datetime | None = None) -> int:
        """Rows of ``targets`` that a claim could take now, plus rows being sent under a live lease."""
        now = now or utcnow()
        names = list(targets)
        if not names:
            return 0
        ids = [self.connections.id(n) for n in names]
        # One statement, so one snapshot: two separate counts could miss a row that moved from
        # "sending" to "sent" in between while the next row of its ordering key was still held back.
        with self.store.session() as session:
            return int(session.scalar(
                select(func.count()).select_from(Outbox).where(
                    Outbox.target_connection_id.in_(ids),
                    or_(and_(due(now), not_held_back()),
                        and_(Outbox.status == OutboxStatus.SENDING, Outbox.lease_expires_at > now)))
            ) or 0)

    # -- run (the scheduler) -----------------------------------------------------------------

    def run(self, *, stop: threading.Event | None = None, for_seconds: float | None = None, tick: float = 0.5,
            sweep_every: float = 10.0,
            on_progress: Callable[[list[FlowSummary]], None] | None = None) -> list[FlowSummary]:
        """Run the flows on their schedules until ``stop`` is set or ``for_seconds`` pass; the
        summaries since the start."""
        self.start()
        stop = stop or threading.Event()
        started = utcnow()
        began = time.monotonic()
        next_run = {f.name: began for f in self.flows}
        last_sweep = 0.0
        errors: dict[str, list[str]] = {f.name: [] for f in self.flows}
        last_pull: dict[str, datetime] = {}
        targets = sorted({t for f in self.flows for t in self._targets(f)})
        relay_failures, relay_at = 0, began
        while not stop.is_set():
            now = time.monotonic()
            if for_seconds is not None and now - began >= for_seconds:
                break
            for flow in self.flows:
                if now >= next_run[flow.name]:
                    next_run[flow.name] = now + flow.every.total_seconds()
                    last_pull[flow.name] = utcnow()
                    for step in self._steps(flow, errors[flow.name]):
                        if self._pull_in_flight(step.connection, step.entity, flow.every):
                            log.info("flow %s: %s from %s still running; not sent again", flow.name, step.entity,
                                     step.connection)
                            continue
                        self.actors.send_pull(step.connection, step.entity, step.mode, flow.name)
            if targets and now >= relay_at:
                try:
                    self.actors.relay_engine.tick(targets)
                    relay_failures = 0
                except Exception as exc:  # the broker or the store is unreachable: back off, rows wait
                    relay_failures += 1
                    wait = self.runtime.policy.relay_backoff(relay_failures, tick)
                    relay_at = now + wait
                    log.warning("relay tick failed (%d in a row): %s; next try in %.1f s", relay_failures,
                                redact_text(str(exc)) or type(exc).__name__, wait,
                                exc_info=relay_failures == 1)
            if now - last_sweep >= sweep_every:
                last_sweep = now
                try:
                    self.runtime.sweep()
                except Exception:
                    log.exception("lease sweep failed")
            if on_progress is not None:
                summaries = self.summaries(started, errors=errors)
                for s in summaries:
                    s.last_pull = last_pull.get(s.name)
                    s.next_pull = utcnow() + timedelta(seconds=max(0.0, next_run[s.name] - time.monotonic()))
                on_progress(summaries)
            stop.wait(tick)
        summaries = self.summaries(started, errors=errors)
        for s in summaries:
            s.duration = time.monotonic() - began
        return summaries

    # -- counts ------------------------------------------------------------------------------

    def summaries(self, since: datetime, *, errors: dict[str, list[str]] | None = None) -> list[FlowSummary]:
        return [self.summary(flow, since, errors=(errors or {}).get(flow.name, [])) for flow in self.flows]

    def summary(self, flow: FlowLike, since: datetime, *, errors: Sequence[str] = ()) -> FlowSummary:
        kind = str(getattr(flow.kind, "value", flow.kind))
        out = FlowSummary(flow.name, kind, errors=list(errors))
        source_id = self.connections.id(flow.source)
        entities = [str(getattr(e, "value", e)) for e in flow.entities]
        with self.store.session() as session:
            if kind == BALANCES:
                out.read = int(session.scalar(
                    select(func.coalesce(func.sum(BalanceSnapshot.row_count), 0)).where(
                        BalanceSnapshot.connection_id == source_id, BalanceSnapshot.created_at >= since)) or 0)
            else:
                read, failed = session.execute(
                    select(func.coalesce(func.sum(SyncRun.read_count), 0), func.coalesce(func.sum(SyncRun.failed_count), 0))
                    .where(SyncRun.connection_id == source_id, SyncRun.entity.in_(entities),
                           SyncRun.updated_at >= since)).one()
                out.read, out.dead = int(read), int(failed)
            target_ids = [self.connections.id(t) for t in self._targets(flow)]
            if target_ids:
                rows = (select(Outbox.status, Outbox.created_at, Outbox.sent_at, Outbox.attempts)
                        .join(Movement, Movement.id == Outbox.movement_id)
                        .where(Movement.source_connection_id == source_id, Outbox.target_connection_id.in_(target_ids),
                               Outbox.updated_at >= since))
                for status, created, sent_at, attempts in session.execute(rows):
                    if created is not None and created >= since:
                        out.enqueued += 1
                    if status == OutboxStatus.SENT:
                        out.delivered += 1 if sent_at is not None and sent_at >= since else 0
                    elif status in (OutboxStatus.FAILED, OutboxStatus.DEAD):
                        out.dead += 1
                    elif attempts:  # tried, failed, due again later
                        out.failed += 1
        return out

    # -- helpers -----------------------------------------------------------------------------

    def _targets(self, flow: FlowLike) -> list[str]:
        kind = str(getattr(flow.kind, "value", flow.kind))
        return list(flow.targets) if kind == "movements" else []

    def _steps(self, flow: FlowLike, errors: list[str]) -> list[Any]:
        try:
            return flow_steps(self.runtime, flow)
        except Exception as exc:
            log.error("flow %s: cannot plan its pulls: %s: %s", flow.name, type(exc).__name__, exc)
            errors.append(f"{type(exc).__name__}: {exc}")
            return []

    def _pull_in_flight(self, connection: str, entity: str, every: timedelta) -> bool:
        if entity == BALANCES:
            return False
        fresh = utcnow() - max(every * 2, timedelta(minutes=10))
        with self.store.session() as session:
            return session.scalar(
                select(func.count()).select_from(SyncRun).where(
                    SyncRun.connection_id == self.connections.id(connection), SyncRun.entity == entity,
                    SyncRun.status == RunStatus.RUNNING, SyncRun.updated_at >= fresh)) > 0


def serve_worker(hub: Hub, *, queues: Iterable[str] | None = None, threads: int = 8,
                 stop: threading.Event | None = None, with_scheduler: bool = False,
                 on_ready: Callable[[list[str]], None] | None = None) -> None:
    """A dramatiq worker over ``queues`` (default: all of the hub's) until ``stop`` is set.
    With ``with_scheduler`` this process also runs :meth:`Hub.run` (exactly one process should)."""
    import dramatiq

    stop = stop or threading.Event()
    declared = set(hub.broker.get_declared_queues())
    chosen = set(queues) if queues else {q for q in declared if not q.endswith((".DQ", ".XQ"))}
    unknown = chosen - declared
    if unknown:
        raise ValueError(f"unknown queue(s) {', '.join(sorted(unknown))}; this hub has {', '.join(sorted(declared))}")
    worker = dramatiq.Worker(hub.broker, queues=chosen, worker_threads=threads)
    worker.start()
    scheduler: threading.Thread | None = None
    try:
        if on_ready is not None:
            on_ready(sorted(chosen))
        if with_scheduler:
            scheduler = threading.Thread(target=hub.run, kwargs={"stop": stop}, name="erphub-scheduler", daemon=True)
            scheduler.start()
        while not stop.wait(0.5):
            pass
    finally:
        if scheduler is not None:
            scheduler.join(timeout=30)
        worker.stop(timeout=30_000)
