"""``erphub sync once|run`` and ``erphub worker``: run the configured flows (sync.runner).

- ``erphub sync once`` — every flow once to completion (pull, enqueue, deliver until the outbox is
  drained or only future retries remain), then a summary table. Exit 1 when a flow failed or
  deliveries were still outstanding at ``--timeout``.
- ``erphub sync run [--for SECONDS]`` — the flows on their schedules, with a live table, until
  Ctrl-C / SIGTERM (or ``--for``). With ``broker.url = "memory://"`` (the default) this one process
  does everything (worker threads inside); with Redis or RabbitMQ it schedules and relays, and
  ``erphub worker`` processes deliver.
  ``--webhook-port P`` also receives vendor webhooks in this process (``erphub webhook serve``).
- ``erphub worker [--queues Q …] [--threads N] [--with-scheduler]`` — a dramatiq worker against the
  configured Redis/RabbitMQ broker and (normally PostgreSQL) store.

``--metrics-port P`` on all three serves this process's Prometheus metrics (:mod:`sync.metrics`:
its event counters and the store's gauges) on ``http://127.0.0.1:P/`` while it runs.

``--queue-prefix`` / ``$ERPHUB_QUEUE_PREFIX`` and ``--namespace`` / ``$ERPHUB_BROKER_NAMESPACE``
isolate hubs (or tests) that share one broker; every process of one hub must use the same.
"""
from __future__ import annotations

import signal
import threading
import time
from contextlib import contextmanager
from typing import Annotated, Any, Iterator, Optional

import typer
from rich.console import Console
from rich.live import Live
from rich.table import Table

sync_app = typer.Typer(help="Run the configured flows (pull, enqueue, deliver).", no_args_is_help=True)

out = Console()
err = Console(stderr=True)

QueuePrefix = Annotated[str, typer.Option("--queue-prefix", envvar="ERPHUB_QUEUE_PREFIX",
                                          help="Put before every queue name (hubs sharing one broker).")]
Namespace = Annotated[str, typer.Option("--namespace", envvar="ERPHUB_BROKER_NAMESPACE",
                                        help="Redis key prefix of the broker and the rate limiters.")]
LeaseSeconds = Annotated[Optional[float], typer.Option(
    "--lease-seconds", min=1, help="How long a delivery may hold an outbox row (default from the retry policy).")]
Threads = Annotated[int, typer.Option("--threads", min=1, help="Worker threads.")]
RateLimitUrl = Annotated[Optional[str], typer.Option(
    "--rate-limit-redis", envvar="ERPHUB_RATELIMIT_REDIS_URL",
    help="Redis URL for rate limiters shared by all workers (default: the broker's Redis; with RabbitMQ "
         "and no Redis each worker process keeps its own bucket).")]
MetricsPort = Annotated[Optional[int], typer.Option("--metrics-port", min=0, max=65535, help="Serve Prometheus "
                                                    "metrics on this port (sync.metrics).")]
MetricsHost = Annotated[str, typer.Option("--metrics-host", help="Address for --metrics-port.")]


@contextmanager
def _hub(settings: Any, *, queue_prefix: str, namespace: str, lease_seconds: float | None, threads: int,
         embedded_worker: bool | None = None, rate_limit_url: str | None = None) -> Iterator[Any]:
    from sync.broker import BrokerConfig
    from sync.connections import Connections
    from sync.retry import RetryPolicy
    from sync.runner import Hub
    from sync.store import Store

    policy = RetryPolicy(lease_seconds=lease_seconds) if lease_seconds else RetryPolicy()
    config = BrokerConfig(url=settings.broker.url, namespace=namespace, queue_prefix=queue_prefix)
    store = Store.open(settings.store.url)
    try:
        store.upgrade()
        with Connections(store, settings.connections) as connections:
            hub = Hub(store, connections, settings.flows, config, policy=policy, threads=threads,
                      embedded_worker=embedded_worker, rate_limit_url=rate_limit_url)
            try:
                yield hub
            finally:
                hub.close()
    finally:
        store.close()


@contextmanager
def _stop_on_signals() -> Iterator[threading.Event]:
    """An event set by Ctrl-C or SIGTERM (the main thread's handlers, restored afterwards)."""
    stop = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}

    def handler(signum: int, _frame: Any) -> None:
        if stop.is_set() and signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C: stop waiting
        stop.set()

    for sig in previous:
        signal.signal(sig, handler)
    try:
        yield stop
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def _table(summaries: list[Any], *, title: str | None = None, live: bool = False) -> Table:
    table = Table(title=title)
    table.add_column("flow")
    table.add_column("kind")
    for column in ("read", "enqueued", "delivered", "failed", "dead-lettered"):
        table.add_column(column, justify="right")
    table.add_column("next pull" if live else "duration", justify="right")
    table.add_column("problems", overflow="fold")
    for s in summaries:
        if live:
            last = "" if s.next_pull is None else f"in {max(0, int((s.next_pull.timestamp() - time.time())))}s"
        else:
            last = f"{s.duration:.1f}s"
        table.add_row(s.name, s.kind, str(s.read), str(s.enqueued), str(s.delivered), str(s.failed), str(s.dead),
                      last, "; ".join(s.errors))
    return table


@sync_app.command("once")
def once(
    ctx: typer.Context,
    timeout: Annotated[float, typer.Option(help="Give up waiting for deliveries after this many seconds.")] = 600.0,
    threads: Threads = 4,
    queue_prefix: QueuePrefix = "",
    namespace: Namespace = "erphub",
    lease_seconds: LeaseSeconds = None,
    metrics_port: MetricsPort = None,
    metrics_host: MetricsHost = "127.0.0.1",
) -> None:
    """Run every configured flow once to completion and print a summary."""
    from connectors.redaction import redact_text
    from erphub.cli import _load_settings  # here, not at the top: erphub.cli imports this module

    with _hub(_load_settings(ctx), queue_prefix=queue_prefix, namespace=namespace, lease_seconds=lease_seconds,
              threads=threads) as hub, _metrics(hub.store, metrics_port, metrics_host):
        if not hub.flows:
            out.print("no flows configured (see `erphub init`)")
            return
        try:
            summaries = hub.once(timeout=timeout)
        except TimeoutError as exc:
            err.print(redact_text(str(exc)), markup=False)
            raise typer.Exit(1) from None
    out.print(_table(summaries))
    if any(not s.ok for s in summaries):
        raise typer.Exit(1)


@sync_app.command("run")
def run(
    ctx: typer.Context,
    for_seconds: Annotated[Optional[float], typer.Option("--for", min=0, help="Stop after this many seconds.")] = None,
    threads: Threads = 4,
    queue_prefix: QueuePrefix = "",
    namespace: Namespace = "erphub",
    lease_seconds: LeaseSeconds = None,
    metrics_port: MetricsPort = None,
    metrics_host: MetricsHost = "127.0.0.1",
    webhook_port: Annotated[Optional[int], typer.Option("--webhook-port", min=0, max=65535, help="Also receive "
                                                        "webhooks on this port (see `erphub webhook serve`).")] = None,
    webhook_host: Annotated[str, typer.Option("--webhook-host", help="Address for --webhook-port.")] = "127.0.0.1",
) -> None:
    """Run the flows on their schedules until Ctrl-C or SIGTERM."""
    from erphub.cli import _load_settings  # here, not at the top: erphub.cli imports this module
    from erphub.commands.webhook import receiver

    with _hub(_load_settings(ctx), queue_prefix=queue_prefix, namespace=namespace, lease_seconds=lease_seconds,
              threads=threads) as hub, _stop_on_signals() as stop, \
            _metrics(hub.store, metrics_port, metrics_host), \
            receiver(hub.store, hub.connections, hub.flows, webhook_port, webhook_host):
        if not hub.flows:
            out.print("no flows configured (see `erphub init`)")
            return
        mode = "embedded (one process)" if hub.worker is not None else \
            f"scheduler + relay; deliveries by `erphub worker` on {hub.config.kind}"
        out.print(f"running {len(hub.flows)} flow(s), {mode}; Ctrl-C to stop", highlight=False)
        with Live(_table([], live=True), console=out, refresh_per_second=4, transient=False) as live:
            summaries = hub.run(stop=stop, for_seconds=for_seconds,
                                on_progress=lambda s: live.update(_table(s, live=True)))
    out.print(_table(summaries, title="since start"))


@contextmanager
def _metrics(store: Any, port: int | None, host: str) -> Iterator[Any]:
    """``--metrics-port``: the Prometheus endpoint (sync.metrics.serve) while the block runs, or
    None without the option."""
    if port is None:
        yield None
        return
    from sync.metrics import serve

    try:
        server = serve(store, port, host=host)
    except OSError as exc:
        err.print(f"cannot serve metrics on {host}:{port}: {exc}", markup=False)
        raise typer.Exit(2) from None
    out.print(f"metrics on {server.url}", highlight=False)
    with server:
        yield server


def worker(
    ctx: typer.Context,
    queues: Annotated[Optional[list[str]], typer.Option("--queues", "-Q", help="Queues to consume (repeat or comma-"
                                                        "separate); default: all of this hub's.")] = None,
    threads: Threads = 8,
    with_scheduler: Annotated[bool, typer.Option("--with-scheduler", help="Also run the flows' schedule, relay and "
                                                 "lease sweeper here (exactly one process should).")] = False,
    queue_prefix: QueuePrefix = "",
    namespace: Namespace = "erphub",
    lease_seconds: LeaseSeconds = None,
    rate_limit_redis: RateLimitUrl = None,
    metrics_port: MetricsPort = None,
    metrics_host: MetricsHost = "127.0.0.1",
) -> None:
    """Start a dramatiq worker against the configured Redis or RabbitMQ broker."""
    from sync.broker import broker_kind, describe
    from sync.runner import serve_worker

    from erphub.cli import _load_settings  # here, not at the top: erphub.cli imports this module

    settings = _load_settings(ctx)
    if broker_kind(settings.broker.url) == "memory":
        err.print("broker.url is memory:// (in-process): a separate worker cannot share it; run `erphub sync run`, "
                  "or set broker.url to redis://… or amqp://…", markup=False)
        raise typer.Exit(2)
    if settings.store.url.startswith("sqlite"):
        err.print("warning: the store is SQLite; workers on other machines need a shared PostgreSQL store",
                  markup=False)
    chosen = [q.strip() for item in (queues or []) for q in item.split(",") if q.strip()] or None
    with _hub(settings, queue_prefix=queue_prefix, namespace=namespace, lease_seconds=lease_seconds,
              threads=threads, embedded_worker=False, rate_limit_url=rate_limit_redis) as hub, \
            _stop_on_signals() as stop, _metrics(hub.store, metrics_port, metrics_host):
        def ready(names: list[str]) -> None:
            out.print(f"worker ready: {describe(hub.broker)}, {threads} thread(s), queues: {', '.join(names)}",
                      highlight=False)
        try:
            serve_worker(hub, queues=chosen, threads=threads, stop=stop, with_scheduler=with_scheduler,
                         on_ready=ready)
        except ValueError as exc:
            err.print(str(exc), markup=False)
            raise typer.Exit(2) from None
    out.print("worker stopped", highlight=False)
