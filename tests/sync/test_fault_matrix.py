"""RELIABILITY.md §6(i) fault matrix, the rows ``test_faults.py`` does not cover: F3, F6, F7, F13.

(F1, F2, F4, F5, F8, F9, F14, F15, F17, F18 are in ``test_faults.py``; F10/F11 in
``test_workers.py``; F12 (Redis and RabbitMQ) in ``test_fault_f12.py``; F19 in
``test_stateful_delivery.py``; F16 (Jiandaoyun webhooks) in ``test_fault_f16.py``.)

Same pattern as ``test_faults.py``: enqueue, break something, deliver with the production policy
scaled down, and end with the history checker (lost = 0, duplicated = 0 against the simulator's
``documents_for(key)`` and its stock ledger). Network faults go through :mod:`tests.sync.faultproxy`
(half-open, latency) or a simulator server that is stopped and started again on its port. Each
test is bounded in count and time (a few seconds each).
"""
from __future__ import annotations

import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Any

import pytest
from sqlalchemy import create_engine, func, make_url, select, text

import sync.store.engine as store_engine
from sandbox.base import Simulator
from sandbox.server import SimulatorServer
from sync.connections import Connections
from sync.delivery import DeliveryResult, Outcome, deliver_due, sweep
from sync.store import ErrorQueue, ErrorStatus, Outbox, OutboxStatus, Store
from tests.conformance.kit import STANDARD_WORLD, Clock
from tests.conformance.target import ConformanceTarget
from tests.sync.conftest import KINGDEE, REFERENCE, Systems
from tests.sync.faultproxy import FaultProxy
from tests.sync.test_delivery_history import IN_FLIGHT, History, drain, fast_policy, outcomes
from tests.sync.test_faults import dead_letters, receipts

DOCUMENTS_POST = b"POST /api/documents"


# -- harness ----------------------------------------------------------------------------------------


@dataclass
class Served:
    """One simulator behind its own server (and optionally a fault proxy), wired as connection ``erp``."""

    target: ConformanceTarget
    sim: Simulator
    server: SimulatorServer
    systems: Systems
    proxy: FaultProxy | None = None

    @property
    def connections(self) -> Connections:
        return self.systems.connections

    def stop(self) -> None:
        self.server.stop()

    def restart(self) -> None:
        """Serve the same simulator (same state) again on the same port."""
        self.server = SimulatorServer(self.sim, port=self.server.port).start()


@pytest.fixture
def serve(store: Store) -> Iterator[Callable[..., Served]]:
    with ExitStack() as stack:
        def start(target: ConformanceTarget, *, on: Store | None = None, proxied: bool = False,
                  **overrides: Any) -> Served:
            clock = Clock()
            sim = target.simulator(clock=clock)
            sim.seed({"world": STANDARD_WORLD.to_dict()})
            server = SimulatorServer(sim).start()
            proxy = None
            url = server.url
            if proxied:
                proxy = FaultProxy(server.port).start()
                stack.callback(proxy.stop)
                url = proxy.url()
            settings = {"erp": target.settings(url, good_credentials=True,
                                               **{"connect_timeout": 2.0, "read_timeout": 5.0, **overrides})}
            connections = Connections(on or store, settings, factory=lambda name, s: target.build(s))
            stack.callback(connections.close)
            served = Served(target, sim, server, Systems(connections, {"erp": sim}, clock, {"erp": target}), proxy)
            stack.callback(lambda: served.server.stop())
            return served

        yield start


@dataclass
class WorkerRun:
    results: list[DeliveryResult] = field(default_factory=list)
    errors: list[BaseException] = field(default_factory=list)
    durations: list[float] = field(default_factory=list)  # of each deliver_due call
    elapsed: float = 0.0
    stuck: list[str] = field(default_factory=list)  # threads still alive when the run ended


def in_flight(store: Store) -> int:
    with store.session() as s:
        return int(s.scalar(select(func.count()).select_from(Outbox).where(Outbox.status.in_(IN_FLIGHT))) or 0)


def run_workers(store: Store, connections: Connections, policy: Any, *, threads: int, until_drained: bool = False,
                timeout: float = 30.0, pause: float = 0.02) -> WorkerRun:
    """``threads`` workers, each claiming one row at a time (``deliver_due(limit=1)``), as dramatiq
    worker threads would. Without ``until_drained`` a worker stops when nothing is due; with it,
    when no row is in flight any more. Errors escaping ``deliver_due`` (the store failing under
    it) are recorded and the worker goes on after a short pause, sweeping expired leases, as a
    worker and the hub's scheduler do."""
    run = WorkerRun()
    lock = threading.Lock()
    deadline = time.monotonic() + timeout

    def worker(n: int) -> None:
        while time.monotonic() < deadline:
            began = time.monotonic()
            try:
                batch = deliver_due(store, connections, worker_id=f"worker-{n}", limit=1, policy=policy)
            except Exception as exc:  # the store under the engine failed: recorded, then retried
                with lock:
                    run.errors.append(exc)
                    run.durations.append(time.monotonic() - began)
                time.sleep(pause)
                continue
            with lock:
                run.durations.append(time.monotonic() - began)
                run.results.extend(batch)
            if batch:
                continue
            if not until_drained:
                return
            try:
                sweep(store)
                if in_flight(store) == 0:
                    return
            except Exception as exc:
                with lock:
                    run.errors.append(exc)
            time.sleep(pause)

    started = time.monotonic()
    workers = [threading.Thread(target=worker, args=(n,), name=f"delivery-{n}", daemon=True) for n in range(threads)]
    for t in workers:
        t.start()
    for t in workers:
        t.join(max(0.0, deadline - time.monotonic()) + 5)
    run.elapsed = time.monotonic() - started
    run.stuck = [t.name for t in workers if t.is_alive()]
    return run


def assert_consistent(store: Store) -> None:
    """No half-applied state transition: each row's status agrees with its lease, receipt and
    error-queue entry (those are written in the same transaction as the status)."""
    with store.session() as s:
        rows = list(s.scalars(select(Outbox)))
        latest: dict[int, ErrorQueue] = {}
        for entry in s.scalars(select(ErrorQueue).where(ErrorQueue.outbox_id.is_not(None)).order_by(ErrorQueue.id)):
            latest[entry.outbox_id] = entry
    statuses = set(OutboxStatus)
    for row in rows:
        where = f"row {row.id} ({row.status})"
        assert row.status in statuses, where
        leased = row.lease_owner is not None and row.lease_expires_at is not None
        assert leased == (row.status == OutboxStatus.SENDING), f"{where}: lease {row.lease_owner} {row.lease_expires_at}"
        if row.status == OutboxStatus.SENT:
            assert row.sent_at is not None and (row.receipt_document_id or row.receipt_document_number), where
        entry = latest.get(row.id)
        if row.status == OutboxStatus.FAILED:
            assert entry is not None and entry.status == ErrorStatus.OPEN, f"{where}: entry {entry and entry.status}"
        if entry is not None and entry.status == ErrorStatus.OPEN:
            assert row.status in (OutboxStatus.FAILED, OutboxStatus.DEAD), f"{where}: open entry {entry.id}"
        if entry is not None and entry.status == ErrorStatus.RETRYING:
            assert row.status in IN_FLIGHT, f"{where}: retrying entry {entry.id}"


# -- F3 ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("target", [KINGDEE, REFERENCE], ids=lambda t: t.name)
def test_f3_connection_refused_is_retried_without_reconciliation(store, serve, target) -> None:
    # Given 30 movements, a few delivered over a kept-alive connection
    served = serve(target)
    sim = served.sim
    history = History(store, served.systems)
    history.enqueue(receipts(30), ["erp"])
    policy = fast_policy()
    warm = deliver_due(store, served.connections, worker_id="w1", limit=5, policy=policy)
    assert outcomes(warm) == {"sent": 5}
    calls_before = len(sim.calls.list())
    # When the vendor's port refuses connections for a second while the worker keeps delivering
    served.stop()
    outage: list[DeliveryResult] = []
    until = time.monotonic() + 1.0
    while time.monotonic() < until:
        outage += deliver_due(store, served.connections, worker_id="w1", limit=50, policy=policy)
        time.sleep(0.01)
    # Then every attempt is a plain retry (nothing was sent, so nothing to reconcile), nothing
    # reached the vendor, and the rows wait as pending, not ambiguous
    assert outage and {r.outcome for r in outage} == {Outcome.RETRY}
    assert {r.error_kind for r in outage} == {"transient"}
    assert len(sim.calls.list()) == calls_before
    with store.session() as s:
        waiting = list(s.scalars(select(Outbox).where(Outbox.status != OutboxStatus.SENT)))
    assert len(waiting) == 25
    assert {r.status for r in waiting} == {OutboxStatus.PENDING} and not any(r.outcome_unknown for r in waiting)
    assert max(r.attempts for r in waiting) >= 2
    # When the vendor listens again on the same port
    served.restart()
    results = drain(store, served.connections, policy)
    # Then the backlog drains: each movement posted once, none settled by a lookup, no dead letter
    assert outcomes(results) == {"sent": 25}
    assert not any(r.settled_by_find for r in results)
    assert len(sim.calls.list(**target.extras["push_fault_target"])) == 30
    report = history.check()
    report.assert_clean()
    assert report.sent == 30 and dead_letters(store) == []


# -- F6 ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("forward", [False, True], ids=["request-swallowed", "answer-swallowed"])
def test_f6_half_open_posts_end_at_the_read_timeout_and_are_reconciled(store, serve, forward) -> None:
    # Given the reference ERP behind a proxy that accepts the document POSTs and never answers
    # (the request itself is swallowed, or it reaches the ERP and only the answer is lost), and
    # a read timeout of 0.5 s
    read_timeout = 0.5
    served = serve(REFERENCE, proxied=True, read_timeout=read_timeout)
    sim, proxy = served.sim, served.proxy
    assert proxy is not None
    history = History(store, served.systems)
    history.enqueue(receipts(8), ["erp"])
    proxy.blackhole(match=DOCUMENTS_POST, forward=forward)
    policy = fast_policy(reconcile_delay=2000)  # 2 s before the lookup
    # When four worker threads deliver
    run = run_workers(store, served.connections, policy, threads=4, timeout=20)
    # Then every hung call ended at the read timeout (none past timeout + 1 s), no worker thread
    # is stuck, and each row is ambiguous, waiting for a lookup
    assert run.stuck == [] and run.errors == []
    hung = proxy.wait_hung_closed()
    assert len(hung) == 8
    assert all(c.waited is not None and read_timeout * 0.9 <= c.waited <= read_timeout + 1 for c in hung), \
        [c.waited for c in hung]
    assert max(run.durations) <= read_timeout + 1
    assert run.elapsed <= 2 * (read_timeout + 1) + 1  # 8 hangs on 4 threads: two rounds, not eight
    assert outcomes(run.results) == {"reconcile": 8}
    with store.session() as s:
        assert set(s.scalars(select(Outbox.status))) == {OutboxStatus.AMBIGUOUS}
    posted = len(sim.calls.list(method="POST", path="/api/documents"))
    assert posted == (8 if forward else 0)
    # When the proxy heals
    proxy.heal()
    results = drain(store, served.connections, policy, timeout=30)
    # Then the lookup settles each one: found (no second POST) or not found (posted once now)
    assert outcomes(results) == {"sent": 8}
    assert sum(r.settled_by_find for r in results) == (8 if forward else 0)
    assert len(sim.calls.list(method="POST", path="/api/documents")) == 8
    report = history.check()
    report.assert_clean()
    assert report.sent == 8 and dead_letters(store) == []


# -- F7 ---------------------------------------------------------------------------------------------


def test_f7_half_second_latency_on_every_call_costs_no_timeouts(store, serve) -> None:
    # Given every answer of the reference ERP held 500 ± 200 ms by the proxy, a read timeout of
    # 5 s, and 18 movements on 18 stock positions
    served = serve(REFERENCE, proxied=True, read_timeout=5.0)
    sim, proxy = served.sim, served.proxy
    assert proxy is not None
    proxy.latency(0.5, 0.2)
    history = History(store, served.systems)
    history.enqueue(receipts(18), ["erp"])
    threads = 6
    # When six worker threads deliver
    run = run_workers(store, served.connections, fast_policy(), threads=threads, timeout=30)
    # Then everything is delivered on the first attempt: no timeout, no retry, no dead letter
    assert run.stuck == [] and run.errors == []
    assert outcomes(run.results) == {"sent": 18}
    assert all(r.attempts == 1 for r in run.results)
    # And the calls overlap: throughput ≥ concurrency / 0.7 s (RELIABILITY §6(i) F7)
    calls = len(sim.calls.list())
    assert calls / run.elapsed >= threads / 0.7, f"{calls} calls in {run.elapsed:.2f} s"
    report = history.check()
    report.assert_clean()
    assert report.sent == 18 and dead_letters(store) == []


# -- F13 --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("busy_ms", [30_000, 200], ids=["waits-out-the-lock", "gives-up-and-retries"])
def test_f13_sqlite_write_lock_held_by_another_writer(store, serve, tmp_path, monkeypatch, busy_ms) -> None:
    # Given a store whose connections wait ``busy_ms`` for SQLite's write lock, and pushes that
    # take 0.1 s each (so the lock is taken while deliveries are in the middle of a push)
    monkeypatch.setattr(store_engine, "SQLITE_BUSY_TIMEOUT_MS", busy_ms)
    path = tmp_path / "hub.db"
    with Store.open(f"sqlite:///{path}") as hub_store:
        served = serve(REFERENCE, on=hub_store)
        served.sim.faults.set({"latency": [{"method": "POST", "path": "/api/documents", "fixed": 0.1}]})
        history = History(hub_store, served.systems)
        history.enqueue(receipts(20), ["erp"])
        policy = fast_policy(lease_seconds=1.0)
        # When another writer holds the database's write lock for 1.5 s while three workers deliver
        held = threading.Event()
        released: list[float] = []

        def long_writer() -> None:
            time.sleep(0.3)
            conn = sqlite3.connect(path, timeout=5, isolation_level=None)
            try:
                conn.execute("BEGIN IMMEDIATE")
                held.set()
                time.sleep(1.5)
                assert_consistent(hub_store)  # readers still see a consistent store meanwhile
                conn.execute("ROLLBACK")
            finally:
                released.append(time.monotonic())
                conn.close()

        writer = threading.Thread(target=long_writer, daemon=True)
        writer.start()
        run = run_workers(hub_store, served.connections, policy, threads=3, until_drained=True, timeout=30)
        writer.join(5)
        # Then the lock really was held, and nobody waited longer than the busy timeout for it
        # (a push whose settle waited past its 1 s lease may come back as lost_lease: the row was
        # taken over, reconciled by find() and marked sent by another worker)
        assert held.is_set() and released
        assert run.stuck == []
        if busy_ms >= 30_000:
            assert run.errors == []  # the lock was waited out
            assert max(run.durations) >= 0.5  # someone really waited for it
        else:
            # a bounded number of "database is locked", each after ~0.2 s, then retried
            assert run.errors and all("locked" in str(e) for e in run.errors)
            assert len(run.errors) <= 3 * (1.5 / 0.2 + 3)
        assert max(run.durations) <= 1.5 + busy_ms / 1000 + 2 if busy_ms < 30_000 else max(run.durations) <= 5
        # And no state transition was half applied; everything ended delivered once
        assert_consistent(hub_store)
        report = history.check()
        report.assert_clean()
        assert report.sent == 20 and dead_letters(hub_store) == []


@pytest.fixture
def pg_store_named(postgres_url: str) -> Iterator[tuple[Store, str, Any]]:
    """A PostgreSQL store in its own schema whose connections carry their own application_name
    (so the test can find and kill exactly its own backends, and no one else's)."""
    schema = f"test_f13_{uuid.uuid4().hex[:12]}"
    app = f"erphub-f13-{uuid.uuid4().hex[:8]}"
    admin = create_engine(postgres_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
    store = Store.open(make_url(postgres_url).update_query_dict({"options": f"-csearch_path={schema}"}),
                       connect_args={"connect_timeout": 10, "application_name": app})
    try:
        store.upgrade()
        yield store, app, admin
    finally:
        store.close()
        with admin.connect() as connection:
            connection.exec_driver_sql(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        admin.dispose()


@pytest.mark.postgres
def test_f13_postgres_backends_killed_mid_run(serve, pg_store_named) -> None:
    # Given a PostgreSQL store and pushes that take 0.1 s each
    pg, app, admin = pg_store_named
    served = serve(REFERENCE, on=pg)
    served.sim.faults.set({"latency": [{"method": "POST", "path": "/api/documents", "fixed": 0.1}]})
    history = History(pg, served.systems)
    history.enqueue(receipts(20), ["erp"])
    policy = fast_policy(lease_seconds=1.0)
    # When this store's backends are terminated (pg_terminate_backend) every 0.2 s for 1.2 s
    # while three workers deliver
    killed: list[int] = []

    def killer() -> None:
        time.sleep(0.2)
        for _ in range(6):
            with admin.connect() as connection:
                killed.append(int(connection.execute(text(
                    "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity "
                    "WHERE application_name = :app AND pid <> pg_backend_pid()"), {"app": app}).scalar() or 0))
            time.sleep(0.2)

    murderer = threading.Thread(target=killer, daemon=True)
    murderer.start()
    run = run_workers(pg, served.connections, policy, threads=3, until_drained=True, timeout=40)
    murderer.join(10)
    # Then backends really died, the errors they caused were bounded and retried, and the engine
    # recovered: consistent state, everything delivered once
    assert sum(killed) >= 1
    assert run.stuck == []
    assert len(run.errors) <= sum(killed) + 3
    assert_consistent(pg)
    report = history.check()
    report.assert_clean()
    assert report.sent == 20 and dead_letters(pg) == []
