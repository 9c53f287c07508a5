"""``erphub status``: what the store says about the hub right now (``sync.metrics_store``).

Four tables: connections (active or paused, and why), the outbox by target and status with the
age of the oldest row not delivered yet, the error queue's open and retrying entries by
connection and kind, and per connection and entity the last pull run, the last successful one
and the watermark. ``--format json`` prints the same figures as one JSON object (ages in
seconds). The same figures are Prometheus gauges on ``erphub worker --metrics-port``.

Retries and re-logins are events counted by the processes that make them, not the store: with
``--metrics URL`` (repeatable, or ``$ERPHUB_METRICS_URL``, space-separated) status reads them
from those processes' ``--metrics-port`` endpoints and adds two tables — retries by connection
and error kind (in process / re-queued) and re-logins by connection — summed over the endpoints
(``counters`` in JSON). An endpoint that does not answer is named on stderr; the rest is still
printed. Messages stored in the store are redacted when written; nothing here prints a secret.
"""
from __future__ import annotations

import json
import sys
from datetime import datetime, timezone
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)

FORMATS = ("text", "json")


def status(
    ctx: typer.Context,
    format_: Annotated[str, typer.Option("--format", help="text (tables) or json.")] = "text",
    metrics: Annotated[list[str] | None, typer.Option(
        "--metrics", envvar="ERPHUB_METRICS_URL", metavar="URL", help="Also show the retries and re-logins counted by the "
        "process serving Prometheus metrics here (e.g. http://127.0.0.1:9464/ of `erphub worker "
        "--metrics-port 9464`); repeat for several processes.")] = None,
) -> None:
    """Show connections, the outbox, the error queue and the last runs, from the store."""
    if format_ not in FORMATS:
        raise typer.BadParameter(f"one of {', '.join(FORMATS)}", param_hint="--format")
    from erphub.cli import _load_settings  # here, not at the top: erphub.cli imports this module
    from sync.metrics import scrape_counters
    from sync.metrics_store import read_snapshot
    from sync.store import Store

    with Store.open(_load_settings(ctx).store.url) as store:
        store.upgrade()
        snapshot = read_snapshot(store, include_sent=True)
    counters = scrape_counters([_endpoint(m) for m in metrics]) if metrics else None
    for url, why in counters.unreachable if counters else []:
        err.print(f"metrics endpoint {url} did not answer: {why}", markup=False, highlight=False)
    if format_ == "json":
        data = snapshot.to_dict()
        if counters is not None:
            data["counters"] = counters.to_dict()
        sys.stdout.write(json.dumps(data, indent=2, ensure_ascii=False) + "\n")
        return
    for table in _tables(snapshot) + (_counter_tables(counters) if counters is not None else []):
        out.print(table)


def _endpoint(value: str) -> str:
    """``host:port`` is short for ``http://host:port/``."""
    value = value.strip()
    return value if "://" in value else f"http://{value.rstrip('/')}/"


def _tables(s: Any) -> list[Table]:
    connections = Table(title="connections")
    for column in ("connection", "platform", "state"):
        connections.add_column(column)
    connections.add_column("paused because", overflow="fold")
    for c in s.connections:
        connections.add_row(c.name, c.platform, c.status, c.paused_reason or "")

    outbox = Table(title="outbox")
    outbox.add_column("target")
    for column in ("pending", "sending", "ambiguous", "failed", "dead", "sent"):
        outbox.add_column(column, justify="right")
    outbox.add_column("oldest undelivered", justify="right")
    for o in s.outbox:
        outbox.add_row(o.target, str(o.pending), str(o.sending), str(o.ambiguous), str(o.failed), str(o.dead),
                       str(o.sent or 0), _age(s.age(o.oldest_undelivered_at)))

    errors = Table(title="error queue (open and retrying)")
    errors.add_column("connection")
    errors.add_column("kind")
    errors.add_column("open", justify="right")
    errors.add_column("retrying", justify="right")
    errors.add_column("oldest open", justify="right")
    for e in s.errors:
        errors.add_row(e.connection, e.kind, str(e.open), str(e.retrying), _age(s.age(e.oldest_open_at)))

    runs = Table(title="pull runs")
    for column in ("connection", "entity", "last run", "started"):
        runs.add_column(column)
    runs.add_column("last success", justify="right")
    runs.add_column("watermark")
    runs.add_column("error", overflow="fold")
    for r in s.runs:
        last = f"#{r.last_run_id} {r.last_status} ({r.last_mode})" if r.last_run_id is not None else ""
        success = f"{_age(s.age(r.last_success_at))} ago" if r.last_success_at is not None else "never"
        watermark = f"{_when(r.watermark)} ({_age(s.age(r.watermark))} ago)" if r.watermark is not None else ""
        runs.add_row(r.connection, r.entity, last, _when(r.last_started_at), success, watermark,
                     r.last_error if r.last_status != "succeeded" and r.last_error else "")
    return [connections, outbox, errors, runs]


def _counter_tables(c: Any) -> list[Table]:
    processes = f"{len(c.scraped)} process(es), since each started"
    retries = Table(title=f"retries ({processes})")
    retries.add_column("connection")
    retries.add_column("kind")
    retries.add_column("in process", justify="right")
    retries.add_column("re-queued", justify="right")
    for r in c.retries:
        retries.add_row(r.connection, r.kind, str(r.in_process), str(r.requeued))
    relogins = Table(title=f"re-logins ({processes})")
    relogins.add_column("connection")
    relogins.add_column("re-logins", justify="right")
    for name, count in c.relogins.items():
        relogins.add_row(name, str(count))
    return [retries, relogins]


def _when(value: datetime | None) -> str:
    return value.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%SZ") if value else ""


def _age(seconds: float | None) -> str:
    """``42s``, ``3m 12s``, ``2h 05m``, ``4d 03h``; empty for None."""
    if seconds is None:
        return ""
    whole = int(seconds)
    if whole < 60:
        return f"{whole}s"
    if whole < 3600:
        return f"{whole // 60}m {whole % 60:02d}s"
    if whole < 86400:
        return f"{whole // 3600}h {whole % 3600 // 60:02d}m"
    return f"{whole // 86400}d {whole % 86400 // 3600:02d}h"
