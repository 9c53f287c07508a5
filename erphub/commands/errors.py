"""``erphub errors``: the operator's view of the error queue (``sync.errorqueue``).

``list`` groups entries by fingerprint; ``show`` prints one entry with its redacted payload;
``retry`` re-queues entries (each row is re-queued at most once, whoever else retries it at the
same moment); ``discard`` gives up on entries with a note; ``export`` writes CSV or JSON.
Payloads and messages are redacted when they are stored; nothing here prints a secret.
"""
from __future__ import annotations

import getpass
import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

app = typer.Typer(help="The error queue: records that could not be delivered or taken in.", no_args_is_help=True)
out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)

STATUSES = ("open", "retrying", "resolved", "discarded")


@contextmanager
def _session(*, write: bool = False) -> Iterator[Any]:
    from erphub.cli import _load_settings
    from sync.store import Store

    settings = _load_settings()
    with Store.open(settings.store.url) as store:
        store.upgrade()
        with store.session(write=write) as session:
            yield session


def _since(value: str | None) -> datetime | None:
    """``2026-01-05``, ``2026-01-05T09:00+08:00`` or a duration back from now: ``30m``, ``12h``, ``7d``."""
    if value is None:
        return None
    units = {"m": "minutes", "h": "hours", "d": "days"}
    if value[-1:] in units and value[:-1].isdigit():
        return datetime.now(timezone.utc) - timedelta(**{units[value[-1]]: int(value[:-1])})
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise typer.BadParameter("an ISO date/time (2026-01-05, 2026-01-05T09:00+08:00) or 30m, 12h, 7d",
                                 param_hint="--since") from None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=timezone.utc)


def _status(value: str | None) -> str | None:
    if value is not None and value not in STATUSES:
        raise typer.BadParameter(f"one of {', '.join(STATUSES)}", param_hint="--status")
    return value


def _operator() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no login name in some containers
        return "operator"


def _when(value: datetime | None) -> str:
    return value.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%SZ") if value else ""


@app.command("list")
def list_(
    connection: Annotated[Optional[str], typer.Option("--connection", help="Only this connection.")] = None,
    kind: Annotated[Optional[str], typer.Option("--kind", help="rejected, contract_violation, mapping...")] = None,
    status: Annotated[Optional[str], typer.Option("--status", help="open, retrying, resolved, discarded.")] = None,
    since: Annotated[Optional[str], typer.Option("--since", help="Seen since: ISO date/time or 30m, 12h, 7d.")] = None,
) -> None:
    """Entries grouped by fingerprint (alike errors together), most recent first."""
    from sync import errorqueue

    with _session() as session:
        groups = errorqueue.list_errors(session, connection=connection, kind=kind, status=_status(status),
                                        since=_since(since))
    if not groups:
        out.print("the error queue is empty" if not any((connection, kind, status, since)) else "no matching entries")
        return
    table = Table(title=f"{sum(g.count for g in groups)} entr{'y' if sum(g.count for g in groups) == 1 else 'ies'} "
                        f"in {len(groups)} group(s)")
    for name in ("fingerprint", "kind", "code", "n"):
        table.add_column(name, no_wrap=True)
    table.add_column("status / last seen")
    table.add_column("message, connections, ids", overflow="fold", ratio=1)
    for g in groups:
        ids = ", ".join(map(str, g.ids[:8])) + (f" … (+{len(g.ids) - 8})" if len(g.ids) > 8 else "")
        statuses = ", ".join(f"{s} {n}" for s, n in sorted(g.statuses.items()))
        table.add_row(g.fingerprint, g.kind, g.vendor_code or "", str(g.count), f"{statuses}\n{_when(g.last_seen)}",
                      Text(f"{g.message}\n{', '.join(g.connections)}; ids {ids}"))
    out.print(table)


@app.command("show")
def show(entry_id: Annotated[int, typer.Argument(help="The entry id (from `errors list`).")]) -> None:
    """One entry: what failed, why, its attempts and times, and the redacted original payload."""
    from sync import errorqueue

    with _session() as session:
        detail = errorqueue.show(session, entry_id)
    if detail is None:
        err.print(f"no error queue entry {entry_id}", markup=False)
        raise typer.Exit(1)
    table = Table("field", "value", show_header=False)
    table.columns[1].overflow = "fold"
    data = detail.to_dict()
    payload = data.pop("payload")
    for name, value in data.items():
        table.add_row(name, "" if value is None else str(value))
    out.print(table)
    out.print("payload (redacted):", highlight=False)
    sys.stdout.write(json.dumps(payload, ensure_ascii=False, indent=2, default=str) + "\n")


def _report(action: str, result: Any) -> None:
    if result.changed:
        out.print(f"{action} {len(result.changed)}: {', '.join(map(str, result.changed))}", highlight=False)
    for entry_id, why in result.skipped:
        out.print(f"skipped {entry_id}: {why}", markup=False, highlight=False)
    if not result.changed and not result.skipped:
        out.print("nothing matched", highlight=False)


@app.command("retry")
def retry(
    ids: Annotated[Optional[list[int]], typer.Argument(help="Entry ids.")] = None,
    fingerprint: Annotated[Optional[str], typer.Option("--fingerprint", help="Every entry of this group.")] = None,
) -> None:
    """Deliver entries again (same idempotency key, a fresh attempt budget). Only open entries are
    retried, each at most once even if someone else retries it at the same moment."""
    from sync import errorqueue

    if bool(ids) == bool(fingerprint):
        raise typer.BadParameter("give entry ids or --fingerprint (not both)")
    with _session(write=True) as session:
        result = errorqueue.retry(session, ids or None, fingerprint=fingerprint, by=_operator())
    _report("re-queued", result)


@app.command("discard")
def discard(
    ids: Annotated[Optional[list[int]], typer.Argument(help="Entry ids.")] = None,
    note: Annotated[str, typer.Option("--note", help="Why (kept with the entry).")] = "",
    fingerprint: Annotated[Optional[str], typer.Option("--fingerprint", help="Every entry of this group.")] = None,
) -> None:
    """Give up on open entries for good; their movements will not be delivered."""
    from sync import errorqueue

    if bool(ids) == bool(fingerprint):
        raise typer.BadParameter("give entry ids or --fingerprint (not both)")
    if not note.strip():
        raise typer.BadParameter("say why", param_hint="--note")
    with _session(write=True) as session:
        result = errorqueue.discard(session, ids or None, fingerprint=fingerprint, note=note, by=_operator())
    _report("discarded", result)


@app.command("export")
def export(
    format: Annotated[str, typer.Option("--format", help="csv or json.")] = "csv",
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="File to write (default stdout).")] = None,
    connection: Annotated[Optional[str], typer.Option("--connection")] = None,
    kind: Annotated[Optional[str], typer.Option("--kind")] = None,
    status: Annotated[Optional[str], typer.Option("--status")] = None,
    since: Annotated[Optional[str], typer.Option("--since")] = None,
) -> None:
    """Every matching entry, with its redacted payload, as CSV or JSON."""
    from sync import errorqueue

    if format not in ("csv", "json"):
        raise typer.BadParameter("csv or json", param_hint="--format")
    with _session() as session:
        text = errorqueue.export(session, format, connection=connection, kind=kind,  # type: ignore[arg-type]
                                 status=_status(status), since=_since(since))
    if output is None:
        sys.stdout.write(text)
    else:
        output.write_text(text, encoding="utf-8")
        err.print(f"wrote {output}", markup=False, highlight=False)
