"""``erphub status``: what the store says about the hub right now (``sync.metrics_store``).

Four tables: connections (active or paused, and why), the outbox by target and status with the
age of the oldest row not delivered yet, the error queue's open and retrying entries by
connection and kind, and per connection and entity the last pull run, the last successful one
and the watermark. ``--format json`` prints the same figures as one JSON object (ages in
seconds). The same figures are Prometheus gauges on ``erphub worker --metrics-port``.
Messages stored in the store are redacted when written; nothing here prints a secret.
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
) -> None:
    """Show connections, the outbox, the error queue and the last runs, from the store."""
    if format_ not in FORMATS:
        raise typer.BadParameter(f"one of {', '.join(FORMATS)}", param_hint="--format")
    from sync.metrics_store import read_snapshot
    from sync.store import Store

    with Store.open(_settings(ctx).store.url) as store:
        store.upgrade()
        snapshot = read_snapshot(store, include_sent=True)
    if format_ == "json":
        sys.stdout.write(json.dumps(snapshot.to_dict(), indent=2, ensure_ascii=False) + "\n")
        return
    for table in _tables(snapshot):
        out.print(table)


def _settings(ctx: typer.Context) -> Any:
    """The configuration named by the root ``--config`` option (from the click context, so this
    also works under ``python -m erphub.cli``)."""
    from erphub.config import ConfigInvalid, load

    try:
        return load(ctx.find_root().params.get("config"))
    except ConfigInvalid as exc:
        err.print(f"[bold red]configuration is invalid[/] ({len(exc.problems)} problem(s)):", highlight=False)
        for path, message in exc.problems:
            err.print(f"  {path}: {message}", markup=False, highlight=False)
        raise typer.Exit(2) from None


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
