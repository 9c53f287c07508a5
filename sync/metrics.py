"""Prometheus metrics of the hub (issue 5, item 6): event counters and gauges read from the store.

Two kinds of figure, kept apart on purpose:

- **Gauges** come from the store, the record of truth, computed on each scrape by
  :class:`StoreCollector` (:mod:`sync.metrics_store`): every process reports the same numbers,
  a restart loses nothing, and no code path has to remember to update them.
- **Counters** count events as they happen in this process (runs, records, deliveries, retries,
  re-logins). They live in :class:`EventCounters`, in its own ``CollectorRegistry`` (never the
  global default), and the engine reaches them through the module functions :func:`run_started`,
  :func:`records`, :func:`run_finished`, :func:`deliveries`, :func:`retried` and
  :func:`leases_expired`; connector clients report re-logins through :mod:`connectors.observe`,
  which this module subscribes to. Many worker processes each count their own events; Prometheus
  sums them with ``sum by (...)``, and ``erphub status --metrics URL`` reads them back
  (:func:`scrape_counters`).

============================================  =======  ======================================
metric                                        type     labels
============================================  =======  ======================================
``erphub_runs_started_total``                 counter  connection, entity, mode
``erphub_runs_finished_total``                counter  connection, entity, mode, status
``erphub_records_read_total``                 counter  connection, entity
``erphub_records_written_total``              counter  connection, entity
``erphub_records_failed_total``               counter  connection, entity
``erphub_deliveries_total``                   counter  target, outcome
``erphub_retries_total``                      counter  connection, kind, stage (in_process, requeued)
``erphub_relogins_total``                     counter  connection
``erphub_leases_expired_total``               counter  (none)
``erphub_webhooks_received_total``            counter  connection
``erphub_webhooks_duplicate_total``           counter  connection
``erphub_webhooks_refused_total``             counter  connection
``erphub_connection_paused``                  gauge    connection, platform
``erphub_outbox_rows``                        gauge    target, status (all but ``sent``)
``erphub_outbox_oldest_undelivered_age_seconds``  gauge  target
``erphub_error_queue_entries``                gauge    connection, kind, status (open, retrying)
``erphub_error_queue_oldest_open_age_seconds``    gauge  connection, kind
``erphub_last_successful_run_age_seconds``    gauge    connection, entity
``erphub_watermark_age_seconds``              gauge    connection, entity
``erphub_store_up``                           gauge    (none): 0 when the store could not be read
``erphub_store_scrape_duration_seconds``      gauge    (none)
============================================  =======  ======================================

``erphub_retries_total`` counts every retry the engine makes, by connection, error kind and
stage: ``in_process`` for each quick retry inside one delivery attempt (tenacity's
``before_sleep`` in :meth:`sync.retry.RetryPolicy.call`, and each row re-sent in a ``push_many``
batch, :meth:`~sync.retry.RetryPolicy.batch_wait`), and ``requeued`` for each outbox row
rescheduled for a later attempt (delivery outcomes ``retry``, ``reconcile``, ``deferred``).
``erphub_relogins_total`` counts the transparent re-logins of connector clients after the vendor
refused their session (Kingdee ``MsgCode 1``, SAP B1 Service Layer 401 / 301, DI Server 301);
a first login is not counted. The watermark age is the time since the
newest source modification the hub has committed: it grows in quiet periods too, so alert on
the last successful run's age, and read the watermark's to see how far behind the data is.

``erphub worker``, ``erphub sync run`` and ``erphub sync once`` with ``--metrics-port N`` serve
both on ``http://127.0.0.1:N/`` (:func:`serve`).
"""
from __future__ import annotations

import logging
import threading
import time
import urllib.request
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, Counter, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

from connectors import observe
from connectors.redaction import redact_text
from sync.metrics_store import NOT_SENT, read_snapshot
from sync.store import ConnectionStatus, Store

log = logging.getLogger("erphub.sync.metrics")

__all__ = [
    "IN_PROCESS",
    "REQUEUED",
    "EventCounters",
    "MetricsServer",
    "RetryFigures",
    "ScrapedCounters",
    "StoreCollector",
    "counters",
    "deliveries",
    "leases_expired",
    "records",
    "registry_for",
    "retried",
    "run_finished",
    "run_started",
    "scrape_counters",
    "serve",
    "use_counters",
    "webhook",
]

#: Delivery outcomes that put a row back for a later attempt (sync.delivery.Outcome values).
RESCHEDULED = frozenset({"retry", "reconcile", "deferred"})
#: ``stage`` of ``erphub_retries_total``: a quick retry inside one delivery attempt ...
IN_PROCESS = "in_process"
#: ... or an outbox row rescheduled for a later attempt.
REQUEUED = "requeued"


# -- counters (this process's events) -------------------------------------------------------------


class EventCounters:
    """The in-process event counters, registered in their own registry."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.runs_started = Counter("erphub_runs_started", "Pull runs started (new or resumed).",
                                    ["connection", "entity", "mode"], registry=r)
        self.runs_finished = Counter("erphub_runs_finished", "Pull runs ended, by final status.",
                                     ["connection", "entity", "mode", "status"], registry=r)
        self.records_read = Counter("erphub_records_read", "Source records read by pulls.",
                                    ["connection", "entity"], registry=r)
        self.records_written = Counter("erphub_records_written", "Records written to the store by pulls "
                                       "(new or changed).", ["connection", "entity"], registry=r)
        self.records_failed = Counter("erphub_records_failed", "Source records sent to the error queue by pulls.",
                                      ["connection", "entity"], registry=r)
        self.deliveries = Counter("erphub_deliveries", "Outbox rows settled by a delivery, by outcome.",
                                  ["target", "outcome"], registry=r)
        self.retries = Counter("erphub_retries", "Retries by connection, error kind and stage (in_process: "
                               "inside one delivery attempt; requeued: the row rescheduled for a later one).",
                               ["connection", "kind", "stage"], registry=r)
        self.relogins = Counter("erphub_relogins", "Transparent re-logins of connector clients after the "
                                "vendor refused their session.", ["connection"], registry=r)
        self.leases_expired = Counter("erphub_leases_expired", "Outbox rows re-queued by the sweeper because "
                                      "their lease expired (a worker died or hung).", registry=r)
        self.webhooks_received = Counter("erphub_webhooks_received", "Webhook requests received by the intake.",
                                         ["connection"], registry=r)
        self.webhooks_duplicate = Counter("erphub_webhooks_duplicate", "Webhook deliveries answered as duplicates "
                                          "(delivery id already taken in).", ["connection"], registry=r)
        self.webhooks_refused = Counter("erphub_webhooks_refused", "Webhook requests refused (bad signature, stale "
                                        "timestamp: 401), nothing written.", ["connection"], registry=r)


_lock = threading.Lock()
_current = EventCounters()


def counters() -> EventCounters:
    """The counters the engine increments in this process."""
    return _current


@contextmanager
def use_counters(fresh: EventCounters | None = None) -> Iterator[EventCounters]:
    """Count into ``fresh`` (default: new, zeroed counters) inside the block; for tests."""
    global _current
    fresh = fresh or EventCounters()
    with _lock:
        previous, _current = _current, fresh
    try:
        yield fresh
    finally:
        with _lock:
            _current = previous


def _safely(fn: Any) -> Any:
    """Counting must never break the work it counts."""
    def wrapper(*args: Any, **kwargs: Any) -> None:
        try:
            fn(*args, **kwargs)
        except Exception:
            log.exception("could not update metric in %s", fn.__name__)
    wrapper.__name__ = fn.__name__
    wrapper.__doc__ = fn.__doc__
    return wrapper


@_safely
def run_started(connection: str, entity: str, mode: str) -> None:
    _current.runs_started.labels(connection, entity, str(mode)).inc()


@_safely
def records(connection: str, entity: str, *, read: int, written: int, failed: int) -> None:
    """One committed page of a pull."""
    c = _current
    if read:
        c.records_read.labels(connection, entity).inc(read)
    if written:
        c.records_written.labels(connection, entity).inc(written)
    if failed:
        c.records_failed.labels(connection, entity).inc(failed)


@_safely
def run_finished(connection: str, entity: str, mode: str, status: str) -> None:
    _current.runs_finished.labels(connection, entity, str(mode), str(status)).inc()


@_safely
def deliveries(results: Iterable[Any]) -> None:
    """Settled ``sync.delivery.DeliveryResult`` objects."""
    c = _current
    for result in results:
        outcome = str(result.outcome)
        c.deliveries.labels(result.target, outcome).inc()
        if outcome in RESCHEDULED:
            c.retries.labels(result.target, result.error_kind or "unknown", REQUEUED).inc()


@_safely
def retried(connection: str, kind: str, stage: str = IN_PROCESS, count: int = 1) -> None:
    """``count`` retries of ``connection`` after an error of ``kind`` (sync.retry.error_kind)."""
    if count:
        _current.retries.labels(connection, kind, stage).inc(count)


@_safely
def leases_expired(count: int) -> None:
    if count:
        _current.leases_expired.inc(count)


@_safely
def _observed(event: observe.Event) -> None:
    if event.kind == observe.RELOGIN:
        _current.relogins.labels(event.connection).inc()


observe.subscribe(_observed)  # once per process: this module is imported once


@_safely
def webhook(connection: str, outcome: str) -> None:
    """One webhook request the intake answered (``sync.webhooks``); ``outcome`` ``duplicate`` and
    ``refused`` are also counted on their own."""
    c = _current
    c.webhooks_received.labels(connection).inc()
    if outcome == "duplicate":
        c.webhooks_duplicate.labels(connection).inc()
    elif outcome == "refused":
        c.webhooks_refused.labels(connection).inc()


# -- gauges (the store) ---------------------------------------------------------------------------


class StoreCollector(Collector):
    """Gauges read from the store on each scrape (see :mod:`sync.metrics_store`).

    When the store cannot be read the scrape still answers, with ``erphub_store_up 0`` and no
    store gauges, so the failure shows in Prometheus instead of as a failed scrape.
    """

    def __init__(self, store: Store) -> None:
        self.store = store

    def describe(self) -> list[Metric]:
        return []  # gauges depend on the store's contents; nothing to check at registration

    def collect(self) -> Iterator[Metric]:
        started = time.perf_counter()
        try:
            snap = read_snapshot(self.store)
        except Exception:
            log.exception("metrics: could not read the store")
            snap = None
        up = GaugeMetricFamily("erphub_store_up", "1 when this scrape could read the store.", value=0 if snap is None
                               else 1)
        duration = GaugeMetricFamily("erphub_store_scrape_duration_seconds", "Time the store queries of this "
                                     "scrape took.", value=time.perf_counter() - started)
        if snap is None:
            yield up
            yield duration
            return

        paused = GaugeMetricFamily("erphub_connection_paused", "1 when the connection is paused (auth or config "
                                   "error; an operator must resume it).", labels=["connection", "platform"])
        for c in snap.connections:
            paused.add_metric([c.name, c.platform], 1 if c.status == ConnectionStatus.PAUSED else 0)

        rows = GaugeMetricFamily("erphub_outbox_rows", "Outbox rows by target and status (sent rows are counted "
                                 "by erphub_deliveries_total).", labels=["target", "status"])
        oldest = GaugeMetricFamily("erphub_outbox_oldest_undelivered_age_seconds", "Age of the oldest outbox row "
                                   "of the target not delivered yet (pending, sending or ambiguous).",
                                   labels=["target"])
        for o in snap.outbox:
            for status in NOT_SENT:
                rows.add_metric([o.target, str(status)], getattr(o, str(status)))
            age = snap.age(o.oldest_undelivered_at)
            if age is not None:
                oldest.add_metric([o.target], age)

        entries = GaugeMetricFamily("erphub_error_queue_entries", "Error-queue entries still to act on, by "
                                    "connection, kind and status.", labels=["connection", "kind", "status"])
        oldest_open = GaugeMetricFamily("erphub_error_queue_oldest_open_age_seconds", "Age of the oldest open "
                                        "error-queue entry.", labels=["connection", "kind"])
        for e in snap.errors:
            entries.add_metric([e.connection, e.kind, "open"], e.open)
            entries.add_metric([e.connection, e.kind, "retrying"], e.retrying)
            age = snap.age(e.oldest_open_at)
            if age is not None:
                oldest_open.add_metric([e.connection, e.kind], age)

        success = GaugeMetricFamily("erphub_last_successful_run_age_seconds", "Time since the last successful "
                                    "pull run of the entity ended.", labels=["connection", "entity"])
        watermark = GaugeMetricFamily("erphub_watermark_age_seconds", "Time since the watermark's source "
                                      "modification time (how far behind the committed data may be).",
                                      labels=["connection", "entity"])
        for r in snap.runs:
            age = snap.age(r.last_success_at)
            if age is not None:
                success.add_metric([r.connection, r.entity], age)
            age = snap.age(r.watermark)
            if age is not None:
                watermark.add_metric([r.connection, r.entity], age)

        yield up
        yield duration
        yield from (paused, rows, oldest, entries, oldest_open, success, watermark)


class _Counters(Collector):
    """Whatever :func:`counters` is at scrape time (so :func:`use_counters` also reaches a server)."""

    def collect(self) -> Iterator[Metric]:
        yield from counters().registry.collect()


def registry_for(store: Store) -> CollectorRegistry:
    """A registry with this process's event counters and the store's gauges."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Counters())
    registry.register(StoreCollector(store))
    return registry


class MetricsServer:
    """The HTTP endpoint started by :func:`serve`; ``close()`` stops it."""

    def __init__(self, server: Any, thread: threading.Thread | None) -> None:
        self.server = server
        self.thread = thread

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    @property
    def url(self) -> str:
        host = self.server.server_address[0]
        return f"http://{f'[{host}]' if ':' in host else host}:{self.port}/"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        if self.thread is not None:
            self.thread.join(timeout=5)

    def __enter__(self) -> MetricsServer:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


def serve(store: Store, port: int, *, host: str = "127.0.0.1") -> MetricsServer:
    """Serve :func:`registry_for` ``store`` in Prometheus text format on ``host:port`` (0 = any free
    port) from a daemon thread. Loopback by default: metrics name connections and error kinds."""
    started = start_http_server(port, addr=host, registry=registry_for(store))
    if started is None:  # pragma: no cover - prometheus_client before 0.20 returned nothing
        raise RuntimeError("prometheus_client is too old: start_http_server must return its server (>= 0.20)")
    server, thread = started
    log.info("metrics served on %s:%d", host, int(server.server_address[1]))
    return MetricsServer(server, thread)


# -- reading the counters of running processes (erphub status --metrics) ---------------------------


@dataclass(frozen=True)
class RetryFigures:
    connection: str
    kind: str
    in_process: int = 0
    requeued: int = 0


@dataclass(frozen=True)
class ScrapedCounters:
    """The retry and re-login counters of the processes scraped, added up (each process counts
    its own events since it started)."""

    scraped: list[str] = field(default_factory=list)                   # endpoints that answered
    unreachable: list[tuple[str, str]] = field(default_factory=list)   # (endpoint, why)
    retries: list[RetryFigures] = field(default_factory=list)
    relogins: dict[str, int] = field(default_factory=dict)             # connection -> re-logins

    def to_dict(self) -> dict[str, Any]:
        return {"scraped": self.scraped, "unreachable": [{"url": u, "error": e} for u, e in self.unreachable],
                "retries": [asdict(r) for r in self.retries], "relogins": dict(self.relogins)}


def scrape_counters(urls: Sequence[str], *, timeout: float = 5.0) -> ScrapedCounters:
    """GET each Prometheus endpoint in ``urls`` (as served by :func:`serve`) and add up its
    ``erphub_retries_total`` and ``erphub_relogins_total``. An endpoint that does not answer is
    listed in ``unreachable``, not raised."""
    retries: dict[tuple[str, str], dict[str, float]] = {}
    relogins: dict[str, float] = {}
    scraped: list[str] = []
    unreachable: list[tuple[str, str]] = []
    for url in urls:
        try:
            with urllib.request.urlopen(url, timeout=timeout) as answer:
                text = answer.read().decode("utf-8")
            families = list(text_string_to_metric_families(text))
        except (OSError, ValueError) as exc:
            unreachable.append((url, redact_text(f"{type(exc).__name__}: {exc}")))
            continue
        scraped.append(url)
        for family in families:
            for sample in family.samples:
                labels = sample.labels
                if sample.name == "erphub_retries_total":
                    by_stage = retries.setdefault((labels.get("connection", ""), labels.get("kind", "")), {})
                    stage = labels.get("stage", "")
                    by_stage[stage] = by_stage.get(stage, 0.0) + sample.value
                elif sample.name == "erphub_relogins_total":
                    name = labels.get("connection", "")
                    relogins[name] = relogins.get(name, 0.0) + sample.value
    figures = [RetryFigures(connection, kind, in_process=int(by_stage.get(IN_PROCESS, 0)),
                            requeued=int(by_stage.get(REQUEUED, 0)))
               for (connection, kind), by_stage in sorted(retries.items())]
    return ScrapedCounters(scraped, unreachable, figures, {k: int(v) for k, v in sorted(relogins.items())})
