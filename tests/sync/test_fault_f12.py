"""RELIABILITY.md §6(i) F12 — the broker down for a while, on Redis and on RabbitMQ.

"Broker down 15 s (stop Redis or RabbitMQ) | 5k | outbox rows stay pending; relay backs off; 0
lost after restart; producers never block the business transaction."

The relay publishes through a :class:`~tests.sync.faultproxy.FaultProxy` in front of the real
broker (the fixtures of ``tests/conftest.py``: skipped locally when absent, failing under
``CI=true``); stopping the proxy is the broker going away for the relay — the port refuses and
live connections are cut — without stopping a server other tests share. A worker consuming the
same queues stays connected directly, so whatever the relay publishes after the broker is back
is delivered. Scaled down to stay well under 60 s: the broker is down for ``OUTAGE`` seconds while
producers commit ``PRODUCED`` movements, and the test ends with the history checker (0 lost,
0 duplicated against the simulator's documents and stock ledger).
"""
from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from contextlib import ExitStack
from urllib.parse import urlsplit, urlunsplit

from sqlalchemy import func, select

from sync.broker import BrokerConfig, broker_kind, delete_queues
from sync.push import enqueue
from sync.runner import Hub
from sync.store import Outbox, OutboxStatus, Store
from tests.sync import test_fault_matrix, test_workers
from tests.sync.conftest import REFERENCE
from tests.sync.faultproxy import FaultProxy
from tests.sync.test_delivery_history import History, fast_policy
from tests.sync.test_faults import dead_letters, receipts

serve = test_fault_matrix.serve  # one simulator behind its own server, as connection "erp" (a fixture)
broker_url = test_workers.broker_url  # the real Redis or RabbitMQ (a fixture, parametrised)

OUTAGE = 3.0     # seconds the broker is down (F12: 15 s)
PRODUCED = 30    # movements committed by producers meanwhile (F12: 5k)
RELAY_TICK = 0.1  # seconds between relay ticks (Hub.run: 0.5 s)
DEFAULT_PORTS = {"redis": 6379, "rabbitmq": 5672}


def through(url: str, port: int) -> str:
    """``url`` with its host and port replaced by the proxy's (user, password and path kept)."""
    parts = urlsplit(url)
    userinfo = parts.netloc.rpartition("@")[0]
    return urlunsplit(parts._replace(netloc=f"{userinfo + '@' if userinfo else ''}127.0.0.1:{port}"))


def test_f12_broker_down_never_blocks_producers_and_the_backlog_drains(store, serve, broker_url) -> None:
    # Given the relay publishing through a proxy in front of the broker, and a worker consuming
    # the same queues directly; each test has its own namespace and queue prefix
    kind = broker_kind(broker_url)
    served = serve(REFERENCE)
    namespace, prefix = f"erphub-test-{uuid.uuid4().hex[:8]}", f"f12{uuid.uuid4().hex[:6]}."
    broker = FaultProxy(urlsplit(broker_url).port or DEFAULT_PORTS[kind]).start()
    policy = fast_policy(lease_seconds=30)
    history = History(store, served.systems)
    with ExitStack() as stack:
        stack.callback(broker.stop)
        worker = Hub(store, served.connections, [], BrokerConfig(url=broker_url, namespace=namespace,
                                                                  queue_prefix=prefix),
                     policy=policy, threads=2, embedded_worker=True)
        if kind == "redis":
            stack.callback(_forget_namespace, broker_url, namespace)
        stack.callback(worker.close)
        relay = Hub(store, served.connections, [], BrokerConfig(url=through(broker_url, broker.port),
                                                                 namespace=namespace, queue_prefix=prefix),
                    policy=policy, embedded_worker=False, resend_after=1.0)
        stack.callback(relay.close)
        stack.callback(delete_queues, worker.broker, worker.actors.queues)
        worker.start()

        ticks: list[tuple[float, BaseException | None]] = []
        stop = threading.Event()

        def relay_loop() -> None:  # what Hub.run does every tick: a failing tick is logged, not fatal
            while not stop.is_set():
                began = time.monotonic()
                try:
                    relay.actors.relay_engine.tick(["erp"])
                    ticks.append((time.monotonic() - began, None))
                except Exception as exc:  # noqa: BLE001 - a failing tick is what is measured
                    ticks.append((time.monotonic() - began, exc))
                stop.wait(RELAY_TICK)

        relayer = threading.Thread(target=relay_loop, name="relay", daemon=True)
        relayer.start()
        stack.callback(relayer.join, 10)
        stack.callback(stop.set)
        # (the path works: 5 movements go through)
        history.enqueue(receipts(5), ["erp"])
        _wait(lambda: delivered(store) == 5, 20, "the first 5 movements")
        # When the broker goes away (port refused, live connections cut) for OUTAGE seconds while
        # producers keep committing movements, one business transaction each
        broker.stop()
        down_since = time.monotonic()
        failed_before = sum(1 for _, e in ticks if e is not None)
        spent = []
        for n, mv in enumerate(receipts(PRODUCED)):
            began = time.monotonic()
            with store.session() as s:
                enqueue(s, mv, ["erp"], connections=served.connections)
            spent.append(time.monotonic() - began)
            time.sleep(max(0.0, down_since + OUTAGE * (n + 1) / PRODUCED - time.monotonic()))
        # Then every producer committed at once (none waited for the broker)
        assert max(spent) < 0.5, f"slowest enqueue {max(spent):.3f} s"
        # And the relay kept failing fast on every tick (it never hangs on the dead broker, and
        # carries on), and nothing was handed out: the rows wait as pending, never attempted
        failing = [(d, e) for d, e in ticks[failed_before:] if e is not None]
        assert len(failing) >= 2, "the relay never noticed the broker was down"
        assert max(d for d, _ in failing) < 5.0
        with store.session() as s:
            waiting = list(s.scalars(select(Outbox).where(Outbox.status != OutboxStatus.SENT)))
        assert len(waiting) == PRODUCED
        assert {r.status for r in waiting} == {OutboxStatus.PENDING} and {r.attempts for r in waiting} == {0}
        # When the broker is back on the same port
        broker.start()
        # Then the backlog drains through the broker: everything delivered once
        _wait(lambda: delivered(store) == 5 + PRODUCED, 30, "the backlog after the broker came back")
        stop.set()
    report = history.check()
    report.assert_clean()
    assert report.sent == 5 + PRODUCED and dead_letters(store) == []


def delivered(store: Store) -> int:
    with store.session() as s:
        return int(s.scalar(select(func.count()).select_from(Outbox).where(Outbox.status == OutboxStatus.SENT)) or 0)


def _wait(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not done after {timeout} s")
        time.sleep(0.05)


def _forget_namespace(redis_url: str, namespace: str) -> None:
    import redis

    client = redis.Redis.from_url(redis_url)
    try:
        keys = list(client.scan_iter(f"{namespace}:*"))
        if keys:
            client.delete(*keys)
    finally:
        client.close()

