"""The dramatiq broker, chosen from a URL (DESIGN.md §5 "Execution", RELIABILITY §1.6).

- ``memory://`` → dramatiq's in-process ``StubBroker``; :class:`EmbeddedWorker` runs worker
  threads inside the same process (``erphub sync run`` does everything in one process), and its
  :meth:`~EmbeddedWorker.join` fails fast when a message was dead-lettered.
- ``redis://…`` / ``rediss://…`` → ``RedisBroker`` with a short worker heartbeat and maintenance on
  every dispatch, so the messages a SIGKILLed worker held come back in seconds instead of never
  (defaults: 60 s heartbeat and 0.1 % maintenance chance — measured "not redelivered within 90 s").
- ``amqp://…`` / ``amqps://…`` → ``RabbitmqBroker(confirm_delivery=True)`` (publisher confirms;
  the server requeues a dead consumer's unacked messages as soon as its connection closes).

The middleware is declared explicitly: ``AgeLimit``, ``TimeLimit`` (above the HTTP timeouts),
``ShutdownNotifications`` and ``Retries`` with ``max_retries`` set. The broker's own dead-letter
queue (``<queue>.XQ``, silently expired after 7 days) is transport only: :mod:`sync.actors`
adds a middleware that writes every message that exhausts its retries to the store's
``error_queue`` before the broker dead-letters it.

Nothing here touches dramatiq's global default broker: actors are declared against the broker
built here (see :func:`sync.actors.declare_actors`).
"""
from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal
from urllib.parse import urlsplit

import dramatiq
from dramatiq.brokers.stub import StubBroker
from dramatiq.middleware import AgeLimit, Middleware, Retries, ShutdownNotifications, TimeLimit

__all__ = [
    "BrokerConfig",
    "BrokerKind",
    "EmbeddedWorker",
    "broker_kind",
    "build_broker",
    "delete_queues",
    "middleware_for",
]

BrokerKind = Literal["memory", "redis", "rabbitmq"]

_SCHEMES: dict[str, BrokerKind] = {"memory": "memory", "redis": "redis", "rediss": "redis",
                                   "amqp": "rabbitmq", "amqps": "rabbitmq"}


@dataclass(frozen=True)
class BrokerConfig:
    """How the broker and its middleware are set up. Times are in milliseconds, as in dramatiq."""

    url: str = "memory://"
    #: Redis key prefix (``<namespace>:<queue>``); also the rate limiters' key prefix.
    namespace: str = "erphub"
    #: Put before every queue name (``<prefix>push.kingdee``): isolates tests and tenants sharing
    #: one RabbitMQ vhost. Empty by default.
    queue_prefix: str = ""
    #: Broker-level retries of a message whose actor raised. The engine owns delivery retries
    #: (the outbox row's next_attempt_at); these only cover what it cannot classify (a store
    #: outage, a bug), and the relay re-sends any row that is still due anyway.
    max_retries: int = 3
    min_backoff: int = 15_000
    max_backoff: int = 300_000
    #: A message older than this is dropped; the store still has its row and the relay re-sends it.
    max_age: int = 24 * 3_600_000
    #: Above every HTTP timeout of a push (Kingdee: Save, Submit, Audit, plus a find).
    time_limit: int = 10 * 60_000
    #: Redis: a worker silent this long is dead and its fetched messages go back to the queue.
    heartbeat_timeout: int = 5_000
    #: Redis: chance (per million dispatch calls) that a call also does that maintenance.
    maintenance_chance: int = 1_000_000
    #: RabbitMQ: publisher confirms.
    confirm_delivery: bool = True

    @property
    def kind(self) -> BrokerKind:
        return broker_kind(self.url)

    def with_url(self, url: str) -> BrokerConfig:
        return replace(self, url=url)


def broker_kind(url: str) -> BrokerKind:
    """``memory``, ``redis`` or ``rabbitmq`` for a broker URL; ``ValueError`` otherwise."""
    scheme = urlsplit(url).scheme.lower()
    if scheme not in _SCHEMES:
        raise ValueError(f"unsupported broker URL {url.split('://')[0]}://…; expected memory://, redis://… or amqp://…")
    return _SCHEMES[scheme]


def middleware_for(config: BrokerConfig) -> list[Middleware]:
    """The explicit middleware stack (no Callbacks/Pipelines: nothing here uses them)."""
    return [
        AgeLimit(max_age=config.max_age),
        TimeLimit(time_limit=config.time_limit),
        ShutdownNotifications(),
        Retries(max_retries=config.max_retries, min_backoff=config.min_backoff, max_backoff=config.max_backoff),
    ]


def build_broker(config: BrokerConfig | str = BrokerConfig(), *,
                 extra_middleware: Sequence[Middleware] = ()) -> dramatiq.Broker:
    """A new broker for ``config.url`` with the explicit middleware (plus ``extra_middleware``,
    placed before ``Retries`` so that their ``after_*`` hooks see what ``Retries`` decided)."""
    if isinstance(config, str):
        config = BrokerConfig(url=config)
    middleware = middleware_for(config)
    retries_at = next(i for i, m in enumerate(middleware) if isinstance(m, Retries))
    middleware[retries_at:retries_at] = list(extra_middleware)
    kind = config.kind
    if kind == "memory":
        broker: dramatiq.Broker = StubBroker(middleware=middleware)
    elif kind == "redis":
        from dramatiq.brokers.redis import RedisBroker

        broker = RedisBroker(url=config.url, middleware=middleware, namespace=config.namespace,
                             heartbeat_timeout=config.heartbeat_timeout,
                             maintenance_chance=config.maintenance_chance)
    else:
        from dramatiq.brokers.rabbitmq import RabbitmqBroker

        broker = RabbitmqBroker(url=config.url, middleware=middleware, confirm_delivery=config.confirm_delivery)
    broker.erphub_config = config  # type: ignore[attr-defined]
    return broker


def delete_queues(broker: dramatiq.Broker, queue_names: Iterable[str]) -> None:
    """Remove queues (with their delay and dead-letter companions) from the server: test cleanup
    and decommissioning. The stub broker just forgets their messages."""
    names = [n for q in queue_names for n in (q, f"{q}.DQ", f"{q}.XQ")]
    kind = broker_kind(broker.erphub_config.url) if hasattr(broker, "erphub_config") else "memory"
    if kind == "memory":
        for name in names:
            if name in broker.queues:
                broker.flush(name)
    elif kind == "redis":
        client = broker.client  # type: ignore[attr-defined]
        namespace = broker.namespace  # type: ignore[attr-defined]
        keys = [f"{namespace}:{n}{suffix}" for n in names for suffix in ("", ".msgs")]
        client.delete(*keys)
    else:
        channel = broker.channel  # type: ignore[attr-defined]
        for name in names:
            channel.queue_delete(name)


class EmbeddedWorker:
    """Worker threads inside this process, for the in-process broker (or any broker, in tests).

    >>> with EmbeddedWorker(broker, threads=4) as worker:
    ...     deliver.send(42)
    ...     worker.join()          # raises the exception of a dead-lettered message
    """

    def __init__(self, broker: dramatiq.Broker, *, threads: int = 4, queues: Iterable[str] | None = None,
                 worker_timeout: int = 100) -> None:
        self.broker = broker
        self.worker = dramatiq.Worker(broker, worker_threads=threads, worker_timeout=worker_timeout,
                                      queues=set(queues) if queues is not None else None)
        self._started = False
        self._lock = threading.Lock()

    def start(self) -> EmbeddedWorker:
        with self._lock:
            if not self._started:
                self.worker.start()
                self._started = True
        return self

    def stop(self, timeout: float = 30.0) -> None:
        with self._lock:
            if self._started:
                self.worker.stop(timeout=int(timeout * 1000))
                self._started = False

    def join(self, queues: Iterable[str] | None = None, *, timeout: float | None = None,
             fail_fast: bool = True) -> None:
        """Wait until ``queues`` (default: all declared) are drained and their messages processed.

        In-process broker only: raises the exception of any message dead-lettered meanwhile when
        ``fail_fast``; ``TimeoutError`` after ``timeout`` seconds.
        """
        if not isinstance(self.broker, StubBroker):
            raise TypeError("join() needs the in-process broker; wait on the store instead")
        declared = self.broker.get_declared_queues()
        names = sorted(q for q in (queues if queues is not None else declared) if not q.endswith(".DQ"))
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            for name in names:
                remaining = None if deadline is None else max(1, int((deadline - time.monotonic()) * 1000))
                try:
                    self.broker.join(name, timeout=remaining, fail_fast=fail_fast)
                except dramatiq.errors.QueueJoinTimeout:
                    raise TimeoutError(f"queue {name} still busy after {timeout}s") from None
            self.worker.join()
            if all(self.broker.queues[n].unfinished_tasks == 0
                   and self.broker.queues[f"{n}.DQ"].unfinished_tasks == 0 for n in names):
                return

    def __enter__(self) -> EmbeddedWorker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def describe(broker: Any) -> str:
    """A one-line, password-free description for logs and the CLI."""
    config: BrokerConfig | None = getattr(broker, "erphub_config", None)
    if config is None:
        return type(broker).__name__
    parts = urlsplit(config.url)
    where = parts.hostname or ""
    if parts.port:
        where += f":{parts.port}"
    return f"{config.kind} {where}".strip()
