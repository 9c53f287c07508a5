"""Broker selection and its middleware; dead letters on real Redis and RabbitMQ reach the store."""
from __future__ import annotations

import time
import uuid

import pytest
from dramatiq.brokers.stub import StubBroker
from dramatiq.middleware import AgeLimit, Retries, ShutdownNotifications, TimeLimit
from sqlalchemy import select

from connectors.base import ConnectionSettings
from sync.actors import DISPATCH_FAILED, Runtime, StoreDeadLetters, declare_actors
from sync.broker import BrokerConfig, EmbeddedWorker, build_broker, delete_queues, describe
from sync.connections import Connections
from sync.ratelimit import RateLimiters
from sync.store import ErrorQueue
from tests.sync.test_actors import _rows


def test_memory_url_gives_the_stub_broker_with_explicit_middleware():
    broker = build_broker("memory://")
    assert isinstance(broker, StubBroker)
    assert [type(m) for m in broker.middleware] == [AgeLimit, TimeLimit, ShutdownNotifications, Retries]
    retries = broker.middleware[-1]
    assert retries.max_retries == BrokerConfig().max_retries == 3
    # above the longest push: Kingdee's three posting calls plus a find at the default timeouts
    settings = ConnectionSettings(platform="x", url="http://x")
    assert broker.middleware[1].time_limit / 1000 > 4 * (settings.connect_timeout + settings.read_timeout)


@pytest.mark.redis
def test_redis_url_gives_a_redis_broker_with_a_short_heartbeat(redis_url):
    broker = build_broker(BrokerConfig(url=redis_url, namespace="erphub-test-x"))
    try:
        assert type(broker).__name__ == "RedisBroker"
        assert broker.heartbeat_timeout == 5_000 and broker.maintenance_chance == 1_000_000
        assert broker.namespace == "erphub-test-x"
        assert describe(broker) == "redis 127.0.0.1:6379"
    finally:
        broker.close()


@pytest.mark.rabbitmq
def test_amqp_url_gives_rabbitmq_with_publisher_confirms(rabbitmq_url):
    broker = build_broker(rabbitmq_url)
    try:
        assert type(broker).__name__ == "RabbitmqBroker" and broker.confirm_delivery is True
        assert "guest" not in describe(broker)
    finally:
        broker.close()


@pytest.fixture(params=[pytest.param("redis", marks=pytest.mark.redis),
                        pytest.param("rabbitmq", marks=pytest.mark.rabbitmq)])
def remote_url(request):
    return request.getfixturevalue(f"{request.param}_url")


def test_a_message_exhausted_on_a_real_broker_is_recorded_in_the_store(store, remote_url):
    # Given a real broker and a delivery that always raises something the engine does not classify
    prefix = f"t{uuid.uuid4().hex[:8]}."
    config = BrokerConfig(url=remote_url, namespace=f"erphub-test-{uuid.uuid4().hex[:8]}", queue_prefix=prefix,
                          min_backoff=10, max_backoff=20)
    connections = Connections(store, {"kd": ConnectionSettings(platform="kingdee", url="http://127.0.0.1:9")})
    [row_id] = _rows(store, connections, "kd", 1)

    def explode(*_args, **_kwargs):
        raise RuntimeError("database went away")

    broker = build_broker(config)
    runtime = Runtime(store, connections, deliver_fn=explode, limiters=RateLimiters({}), queue_prefix=prefix)
    actors = declare_actors(broker, runtime, deliver_options={"max_retries": 1, "min_backoff": 10, "max_backoff": 20})
    assert any(isinstance(m, StoreDeadLetters) for m in broker.middleware)
    worker = EmbeddedWorker(broker, threads=1).start()
    try:
        # When the message fails twice and the broker gives up on it
        actors.send_deliver(row_id, "kd")
        deadline = time.monotonic() + 20
        entries = []
        while not entries and time.monotonic() < deadline:
            time.sleep(0.1)
            with store.session() as s:
                entries = s.scalars(select(ErrorQueue)).all()
        # Then the store's error queue has it, naming the row (not only the broker's XQ)
        [entry] = entries
        assert entry.kind == DISPATCH_FAILED and entry.outbox_id == row_id
        assert "database went away" in entry.message and entry.payload["broker_retries"] == 1
    finally:
        worker.stop()
        delete_queues(broker, [q for q in broker.get_declared_queues() if not q.endswith((".DQ", ".XQ"))])
        if config.kind == "redis":
            for key in broker.client.scan_iter(f"{config.namespace}:*"):
                broker.client.delete(key)
        broker.close()
