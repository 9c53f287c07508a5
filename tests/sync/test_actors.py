"""Actor plumbing on the in-process broker, with stand-in engine functions (no vendor involved)."""
from __future__ import annotations

import threading
from collections import Counter
from datetime import date, timedelta

import pytest
from sqlalchemy import select, update

from connectors.base import ConnectionSettings
from sync.actors import DISPATCH_FAILED, Runtime, declare_actors, hub_queue, pull_queue, push_queue
from sync.broker import BrokerConfig, EmbeddedWorker, broker_kind, build_broker
from sync.connections import Connections
from sync.ratelimit import RateLimiters
from sync.store import ErrorQueue, Movement, Outbox, OutboxStatus, utcnow
from sync.store import outbox as leases


def _connections(store, **platforms: str) -> Connections:
    return Connections(store, {name: ConnectionSettings(platform=p, url="http://127.0.0.1:9")
                               for name, p in platforms.items()})


def _rows(store, connections, target: str, count: int, *, ordering_key=None) -> list[int]:
    target_id = connections.id(target)
    ids = []
    with store.session() as s:
        for n in range(count):
            reference = f"R-{target}-{n}-{utcnow().timestamp()}"
            movement = Movement(reference=reference, kind="transfer", document_date=date(2024, 3, 1),
                                payload={"reference": reference}, content_hash="h")
            s.add(movement)
            s.flush()
            row = Outbox(movement_id=movement.id, target_connection_id=target_id,
                         idempotency_key=f"K-{reference}", ordering_key=ordering_key)
            s.add(row)
            s.flush()
            ids.append(row.id)
    return ids


class FakeDelivery:
    """Claims the row like the engine does, records the push, marks it sent."""

    def __init__(self, fail: set[int] = frozenset()) -> None:
        self.pushed: Counter[int] = Counter()
        self.fail = set(fail)
        self.lock = threading.Lock()

    def __call__(self, store, connections, outbox_id, *, worker_id, policy) -> None:
        if outbox_id in self.fail:
            raise RuntimeError(f"store exploded for {outbox_id}")
        now = utcnow()
        with store.session(write=True) as s:  # claim this one row (compare-and-set), as the engine does
            claimed = s.execute(
                update(Outbox).where(Outbox.id == outbox_id, Outbox.status == OutboxStatus.PENDING,
                                     Outbox.next_attempt_at <= now)
                .values(status=OutboxStatus.SENDING, lease_owner=worker_id,
                        lease_expires_at=now + timedelta(seconds=30), attempts=Outbox.attempts + 1)
            ).rowcount
        if not claimed:
            return None
        with self.lock:
            self.pushed[outbox_id] += 1
        with store.session() as s:
            assert leases.mark_sent(s, outbox_id, worker_id=worker_id, now=utcnow())
        return None


@pytest.fixture
def embedded(store):
    made = []

    def make(connections, deliver_fn, **runtime_kwargs):
        broker = build_broker(BrokerConfig(url="memory://", min_backoff=10, max_backoff=50))
        runtime = Runtime(store, connections, deliver_fn=deliver_fn,
                          limiters=RateLimiters(runtime_kwargs.pop("rates", {})), **runtime_kwargs)
        actors = declare_actors(broker, runtime, resend_after=0.5,
                                deliver_options={"min_backoff": 10, "max_backoff": 50})
        worker = EmbeddedWorker(broker, threads=4).start()
        made.append(worker)
        return actors, worker

    yield make
    for worker in made:
        worker.stop()


def test_broker_kinds_from_urls():
    assert broker_kind("memory://") == "memory"
    assert broker_kind("redis://127.0.0.1:6379/0") == "redis"
    assert broker_kind("amqp://guest:guest@127.0.0.1:5672/") == "rabbitmq"
    with pytest.raises(ValueError):
        broker_kind("kafka://x")


def test_one_queue_per_vendor_and_a_hub_queue(store, embedded):
    connections = _connections(store, kd="kingdee", ref="reference", b1="sap_b1")
    actors, _ = embedded(connections, FakeDelivery(), queue_prefix="t1.")
    assert {push_queue(p, "t1.") for p in ("kingdee", "reference", "sap_b1")} <= set(actors.queues)
    assert {pull_queue(p, "t1.") for p in ("kingdee", "reference", "sap_b1")} <= set(actors.queues)
    assert hub_queue("t1.") in actors.queues
    assert actors.deliver["kingdee"].actor_name == "deliver.kingdee"


def test_relayed_rows_are_delivered_exactly_once(store, embedded):
    # Given 40 due rows for two targets of different vendors
    connections = _connections(store, kd="kingdee", ref="reference")
    ids = _rows(store, connections, "kd", 20) + _rows(store, connections, "ref", 20)
    fake = FakeDelivery()
    actors, worker = embedded(connections, fake)
    # When the relay ticks three times (re-sending nothing that is still in flight) and the worker drains
    for _ in range(3):
        actors.relay_engine.tick()
        worker.join(timeout=30)
    # Then every row was pushed once and is sent
    assert fake.pushed == Counter({i: 1 for i in ids})
    with store.session() as s:
        assert set(s.scalars(select(Outbox.status))) == {OutboxStatus.SENT}
    assert actors.relay_engine.tick() == 0


def test_a_row_that_is_not_due_is_left_alone(store, embedded):
    connections = _connections(store, kd="kingdee")
    [row_id] = _rows(store, connections, "kd", 1)
    with store.session() as s:
        s.get(Outbox, row_id).next_attempt_at = utcnow() + timedelta(hours=1)
    fake = FakeDelivery()
    actors, worker = embedded(connections, fake)
    actors.send_deliver(row_id, "kd")
    worker.join(timeout=10)
    assert fake.pushed == Counter() and actors.relay_engine.tick() == 0


def test_an_exhausted_message_lands_in_the_store_error_queue(store, embedded):
    # Given a row whose delivery raises something the engine did not classify
    connections = _connections(store, kd="kingdee")
    [row_id] = _rows(store, connections, "kd", 1)
    actors, worker = embedded(connections, FakeDelivery(fail={row_id}))
    # When it is sent and the broker's retries run out
    actors.send_deliver(row_id, "kd")
    with pytest.raises(RuntimeError, match="store exploded"):
        worker.join(timeout=30)  # fail fast on the dead-lettered message
    # Then the store's error queue says so (not only the broker's XQ), naming row and connection
    with store.session() as s:
        [entry] = s.scalars(select(ErrorQueue)).all()
    assert entry.kind == DISPATCH_FAILED and entry.outbox_id == row_id
    assert entry.connection_id == connections.id("kd") and "store exploded" in entry.message
    assert entry.payload["actor"] == "deliver.kingdee" and entry.payload["broker_retries"] == 3
    assert "4 time(s)" in entry.message


def test_rows_held_back_by_an_older_row_are_not_relayed(store, embedded):
    connections = _connections(store, kd="kingdee")
    first, second = _rows(store, connections, "kd", 2, ordering_key="TS-001|WH01")
    fake = FakeDelivery()
    actors, worker = embedded(connections, fake)
    assert [r[0] for r in actors.relay_engine.due()] == [first]
    actors.relay_engine.tick()
    worker.join(timeout=10)
    assert [r[0] for r in actors.relay_engine.due()] == [second]


def test_a_full_rate_limiter_hands_the_message_back_with_a_delay(store, embedded):
    connections = _connections(store, kd="kingdee")
    ids = _rows(store, connections, "kd", 2)
    fake = FakeDelivery()
    # 0.45/s: the first goes at once, the next would wait 2.2 s > the inline limit → delayed message
    actors, worker = embedded(connections, fake, rates={"kd": 0.45})
    for row_id in ids:
        actors.send_deliver(row_id, "kd")
    worker.join(timeout=30)
    assert fake.pushed == Counter({i: 1 for i in ids})
