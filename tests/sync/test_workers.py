"""``erphub worker`` processes on real Redis and RabbitMQ with PostgreSQL as the shared store.

The Kingdee simulator runs in this (the test) process and the workers, started as subprocesses
with a temporary configuration, talk to it over loopback; this process enqueues movements and
relays due outbox rows (as ``erphub sync run`` does with a remote broker). Every test uses its
own PostgreSQL schema, Redis namespace and queue prefix, and removes them afterwards.

RELIABILITY §6(i) F10/F11: a worker is SIGKILLed in the middle of delivering; a fresh one is
started; everything is delivered and the simulator holds exactly one document per movement.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest
from sqlalchemy import create_engine, make_url, select

from sync.broker import BrokerConfig, delete_queues
from sync.connections import Connections
from sync.push import enqueue
from sync.retry import RetryPolicy
from sync.runner import Hub
from sync.store import Outbox, OutboxStatus, Store
from tests.cli.test_sync_cli import kingdee_block
from tests.conformance.kit import STANDARD_WORLD, Clock, expected_change, ledger_change, ledger_snapshot, movement
from tests.conformance.targets.kingdee import signature_settings
from tests.conformance.targets.kingdee import simulator as kingdee_simulator

ROOT = Path(__file__).resolve().parents[2]
LEASE = 5.0  # seconds a delivery may hold a row: a killed worker's rows come back after this
BOUND = 60.0  # RELIABILITY §6(i): each fault test ≤ 60 s


@pytest.fixture
def pg_url(postgres_url: str) -> Iterator[str]:
    schema = f"test_workers_{uuid.uuid4().hex[:12]}"
    admin = create_engine(postgres_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
    try:
        yield make_url(postgres_url).update_query_dict({"options": f"-csearch_path={schema}"}) \
            .render_as_string(hide_password=False)
    finally:
        with admin.connect() as connection:
            connection.exec_driver_sql(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        admin.dispose()


@pytest.fixture(params=[pytest.param("redis", marks=pytest.mark.redis),
                        pytest.param("rabbitmq", marks=pytest.mark.rabbitmq)])
def broker_url(request: pytest.FixtureRequest) -> str:
    return request.getfixturevalue(f"{request.param}_url")


class Worker:
    """One ``erphub worker`` subprocess; ``ready`` once it printed its queues."""

    def __init__(self, config: Path, env: dict[str, str], prefix: str, namespace: str, threads: int = 4) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "erphub.cli", "--config", str(config), "worker", "--threads", str(threads),
             "--queue-prefix", prefix, "--namespace", namespace, "--lease-seconds", str(LEASE)],
            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
        self.lines: list[str] = []
        self.ready = threading.Event()
        threading.Thread(target=self._read, daemon=True).start()

    @property
    def pid(self) -> int:
        return self.process.pid

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line.rstrip())
            if "worker ready" in line:
                self.ready.set()

    def wait_ready(self, timeout: float = 30.0) -> None:
        if not self.ready.wait(timeout):
            self.stop()
            raise AssertionError("worker did not start:\n" + "\n".join(self.lines[-40:]))

    def kill(self) -> None:
        os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait(10)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)


class Setup:
    def __init__(self, stack: ExitStack, tmp_path: Path, store_url: str, broker_url: str) -> None:
        self.prefix = f"t{uuid.uuid4().hex[:8]}."
        self.namespace = f"erphub-test-{uuid.uuid4().hex[:8]}"
        self.broker_url = broker_url
        self.sim = kingdee_simulator(clock=Clock())
        self.sim.seed({"world": STANDARD_WORLD.to_dict()})
        self.sim.faults.set({"latency": [{"fixed": 0.03}]})  # ~0.1 s per 3-call posting: kills land mid-push
        url = stack.enter_context(self.sim.serve()).url
        self.store = Store.open(store_url)
        stack.callback(self.store.close)
        self.store.upgrade()
        settings = signature_settings(url)
        self.connections = Connections(self.store, {"kd": settings})
        stack.callback(self.connections.close)
        self.config = tmp_path / "erphub.toml"
        self.config.write_text(f'[store]\nurl = "{store_url}"\n\n[broker]\nurl = "{broker_url}"\n\n'
                               + kingdee_block("kd", url), encoding="utf-8")
        self.env = {**os.environ, "KD_APP_SECRET": settings.app_secret.get_secret_value(), "PYTHONPATH": str(ROOT)}
        self.hub = Hub(self.store, self.connections, [],
                       BrokerConfig(url=broker_url, namespace=self.namespace, queue_prefix=self.prefix),
                       policy=RetryPolicy(lease_seconds=LEASE), embedded_worker=False, resend_after=30.0)
        stack.callback(self._cleanup)
        self.workers: list[Worker] = []
        stack.callback(self._stop_workers)

    def _cleanup(self) -> None:
        queues = [q for q in self.hub.broker.get_declared_queues() if not q.endswith((".DQ", ".XQ"))]
        try:
            delete_queues(self.hub.broker, queues)
            if self.hub.config.kind == "redis":
                client = self.hub.broker.client
                for key in client.scan_iter(f"{self.namespace}:*"):
                    client.delete(key)
        finally:
            self.hub.close()

    def _stop_workers(self) -> None:
        for w in self.workers:  # all at once: each takes a few seconds to wind down
            if w.process.poll() is None:
                w.process.send_signal(signal.SIGTERM)
        for w in self.workers:
            w.stop()

    def worker(self) -> Worker:
        worker = Worker(self.config, self.env, self.prefix, self.namespace)
        self.workers.append(worker)
        return worker

    def enqueue(self, count: int, tag: str) -> list:
        # purchase receipts of every (lot-free) item into WH01 and WH02: 22 ordering keys, several movements each
        skus = [item.sku for item in STANDARD_WORLD.items if not item.batch_managed]
        spots = [(sku, wh) for sku in skus for wh in ("WH01", "WH02")]
        moves = [movement("purchase_receipt", reference=f"{tag}-{n:03d}", lines=[(spots[n % len(spots)][0], "1")],
                          dest=spots[n % len(spots)][1]) for n in range(count)]
        with self.store.session() as s:
            for m in moves:
                enqueue(s, m, ["kd"], connections=self.connections)
        return moves

    def assert_exactly_once(self, moves: list, before: dict) -> None:
        with self.store.session() as s:
            rows = s.scalars(select(Outbox)).all()
        assert len(rows) == len(moves)
        assert {r.status for r in rows} == {OutboxStatus.SENT}, [
            (r.id, r.status, r.attempts, r.last_error_kind, r.last_error_message) for r in rows if r.status != "sent"][:5]
        duplicated = {r.idempotency_key: n for r in rows if (n := len(self.sim.documents_for(r.idempotency_key))) != 1}
        assert duplicated == {}
        assert ledger_change(before, ledger_snapshot(self.sim)) == expected_change(*moves)


@pytest.fixture
def setup(tmp_path, pg_url, broker_url) -> Iterator[Setup]:
    with ExitStack() as stack:
        yield Setup(stack, tmp_path, pg_url, broker_url)


def test_worker_processes_deliver_everything_exactly_once(setup):
    # Given 40 movements in the PostgreSQL outbox and two worker processes
    before = ledger_snapshot(setup.sim)
    moves = setup.enqueue(40, "W")
    workers = [setup.worker(), setup.worker()]
    for w in workers:
        w.wait_ready()
    # When this process relays the due rows until nothing is outstanding
    setup.hub.drain(["kd"], timeout=BOUND)
    # Then each movement is one document at the simulator
    setup.assert_exactly_once(moves, before)


def _in_flight(store: Store, pid: int) -> int:
    owner = f"{socket.gethostname()}:{pid}/%"
    with store.session() as s:
        return len(s.scalars(select(Outbox.id).where(Outbox.status == OutboxStatus.SENDING,
                                                     Outbox.lease_owner.like(owner))).all())


def test_sigkill_a_worker_mid_delivery_loses_and_duplicates_nothing(setup):
    # Given 120 movements and two workers delivering them (the relay runs in the background)
    started = time.monotonic()
    before = ledger_snapshot(setup.sim)
    moves = setup.enqueue(120, "K")
    victim, survivor = setup.worker(), setup.worker()
    victim.wait_ready()
    survivor.wait_ready()
    failure: list[BaseException] = []

    def relay() -> None:
        try:
            setup.hub.drain(["kd"], timeout=BOUND - 5)
        except BaseException as exc:  # reported below
            failure.append(exc)

    drainer = threading.Thread(target=relay)
    drainer.start()
    # When the victim is SIGKILLed while it holds rows mid-push
    deadline = time.monotonic() + 20
    while _in_flight(setup.store, victim.pid) == 0:
        assert time.monotonic() < deadline, "the victim never started delivering"
        time.sleep(0.01)
    held = _in_flight(setup.store, victim.pid)
    victim.kill()
    # and a fresh worker is started, as an operator or a supervisor would
    setup.worker().wait_ready()
    drainer.join(BOUND)
    # Then everything is delivered, nothing twice, within the bound
    assert not failure, failure
    assert held >= 1
    setup.assert_exactly_once(moves, before)
    assert time.monotonic() - started < BOUND
