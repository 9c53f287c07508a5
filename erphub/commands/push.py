"""``erphub push FILE --to TARGET[,TARGET...]``: movements from a file into the outbox.

The file is read by :mod:`sync.intake` (CSV, .xlsx or JSON). Without ``--partial`` any problem
means nothing is enqueued: every problem is printed and the exit code is 1. With ``--partial``
the good movements are enqueued (in one transaction, through ``sync.push.enqueue_many``), the
problems printed, and the exit code is 0, unless nothing at all could be accepted (1).
``--dry-run`` reads and validates the file only; it touches neither the store nor a vendor.
``push`` never delivers: the outbox rows it writes are delivered by ``erphub sync run``/workers.

Times without a UTC offset are read in ``--timezone``; without it, in the ``timezone`` setting
shared by every target connection, else in Asia/Shanghai. The zone used, and where it came
from, is printed whenever the file held such times.

Exit codes: 0 done; 1 problems in the file (or movements already enqueued with other content);
2 usage or configuration errors (unknown target, bad zone, unreadable configuration).
"""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.table import Table

from erphub.cli import _load_settings, app, err, out

DEFAULT_TIMEZONE = "Asia/Shanghai"


def _targets(text: str, configured: dict[str, Any]) -> list[str]:
    names = list(dict.fromkeys(name.strip() for name in text.split(",") if name.strip()))
    if not names:
        raise typer.BadParameter("name at least one configured connection", param_hint="--to")
    unknown = [name for name in names if name not in configured]
    if unknown:
        listing = ", ".join(sorted(configured)) or "none configured"
        raise typer.BadParameter(f"no connection named {', '.join(map(repr, unknown))} (connections: {listing})",
                                 param_hint="--to")
    return names


def _timezone(given: str | None, targets: list[str], configured: dict[str, Any]) -> tuple[str, str]:
    """The zone for naive times and where it came from."""
    if given:
        return given, "--timezone"
    zones = {getattr(configured[name], "timezone", None) for name in targets}
    if len(zones) == 1 and (zone := zones.pop()):
        return str(zone), f"the timezone setting of {', '.join(targets)}"
    return DEFAULT_TIMEZONE, "default; declare it with --timezone"


def _print_problems(problems: list[str]) -> None:
    for problem in problems:
        err.print(problem, markup=False, highlight=False, soft_wrap=True)


def _summary(file: Path, result: Any, zone: str, zone_source: str, *, extra: list[tuple[str, str]]) -> None:
    described = result.format.upper() + (f", {result.encoding}" if result.encoding else "") + (
        f", sheet {result.sheet!r}" if result.sheet else "")
    out.print(f"{file.name} ({described})", markup=False, highlight=False, soft_wrap=True)
    if result.skipped_above_header:
        out.print(f"header on line {result.header_line}; {result.skipped_above_header} row(s) above it skipped "
                  "(not movement rows)", markup=False, highlight=False, soft_wrap=True)
    if result.encoding_note:
        out.print(f"encoding: {result.encoding_note}", markup=False, highlight=False, soft_wrap=True)
    if result.naive_times:
        out.print(f"{result.naive_times} time(s) without a UTC offset read as {zone} ({zone_source})",
                  markup=False, highlight=False, soft_wrap=True)
    table = Table("", "count", title="push summary", title_justify="left")
    table.columns[1].justify = "right"
    table.add_row("rows read" if result.format != "json" else "objects read", str(result.lines_read))
    table.add_row("movements accepted", str(result.accepted))
    table.add_row("movements rejected", str(len(result.rejected)))
    table.add_row("rows rejected" if result.format != "json" else "objects rejected", str(result.rows_rejected))
    for label, value in extra:
        table.add_row(label, value)
    out.print(table)


def _enqueue(settings: Any, movements: list[Any], targets: list[str], lines: dict[str, tuple[int, ...]],
             *, partial: bool) -> tuple[list[str], dict[str, int]]:
    """Enqueue in one transaction; the conflict problems and the counts. Without ``partial`` a
    conflict means nothing is written."""
    from sqlalchemy import func, select

    from canonical import content_hash
    from sync.connections import Connections
    from sync.push import enqueue_many
    from sync.store import Movement, Outbox, Store

    with Store.open(settings.store.url) as store:
        store.upgrade()
        # durable: once this commits, push reports the movements as accepted and the file may be
        # gone; the commit must survive a power loss (sync.store.engine, "Durability of a commit")
        with Connections(store, settings.connections) as connections, \
                store.session(write=True, durable=True) as session:
            references = [m.reference for m in movements]
            stored = dict(session.execute(
                select(Movement.reference, Movement.content_hash).where(Movement.reference.in_(references))).all())
            conflicts = [m for m in movements if m.reference in stored and stored[m.reference] != content_hash(m)]
            problems = [f"line {lines.get(m.reference, (0,))[0]}: reference: {m.reference!r} is already enqueued "
                        "with different content; a changed document needs a new reference" for m in conflicts]
            if conflicts and not partial:
                return problems, {}
            good = [m for m in movements if m not in conflicts]
            known_ids = list(session.scalars(select(Movement.id).where(
                Movement.reference.in_([m.reference for m in good]))))
            rows_before = session.scalar(select(func.count()).select_from(Outbox).where(
                Outbox.movement_id.in_(known_ids))) if known_ids else 0
            ids = enqueue_many(session, good, targets, connections=connections)
            rows_after = session.scalar(select(func.count()).select_from(Outbox).where(Outbox.movement_id.in_(ids))) \
                if ids else 0
    counts = {"enqueued": len(good) - len(known_ids), "unchanged": len(known_ids),
              "outbox": (rows_after or 0) - (rows_before or 0), "conflicts": len(conflicts)}
    return problems, counts


@app.command()
def push(
    file: Annotated[Path, typer.Argument(help="Movements: .csv, .xlsx, .json or .jsonl.", exists=True,
                                         dir_okay=False, readable=True)],
    to: Annotated[str, typer.Option("--to", help="Target connection name(s), comma-separated.")],
    partial: Annotated[bool, typer.Option("--partial", help="Enqueue the good movements even if others "
                                                              "have problems.")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Read and validate only; enqueue nothing.")] = False,
    timezone: Annotated[Optional[str], typer.Option("--timezone", help="Zone of times written without a UTC "
                                                    "offset (default: the targets' timezone, else "
                                                    "Asia/Shanghai).")] = None,
    sheet: Annotated[Optional[str], typer.Option("--sheet", help="Worksheet of an .xlsx file (default: the "
                                                 "first).")] = None,
) -> None:
    """Read movements from a file and enqueue them for delivery to the target connections."""
    from sync.intake import read_movements

    settings = _load_settings()
    targets = _targets(to, settings.connections)
    zone, zone_source = _timezone(timezone, targets, settings.connections)
    try:
        result = read_movements(file, sheet=sheet, timezone=zone)
    except ValueError as exc:
        err.print(str(exc), markup=False, highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None

    problems = [str(p) for p in result.problems]
    extra: list[tuple[str, str]] = []
    movements = list(result.movements)
    if problems and not partial:
        _print_problems(problems)
        _summary(file, result, zone, zone_source, extra=[("enqueued", "0")])
        err.print(f"nothing enqueued: {len(problems)} problem(s); fix them, or enqueue the good movements "
                  "with --partial", markup=False, highlight=False, soft_wrap=True)
        raise typer.Exit(1)
    if dry_run:
        _print_problems(problems)
        _summary(file, result, zone, zone_source, extra=[("enqueued (dry run)", "0")])
        out.print(f"dry run: {len(movements)} movement(s) would be enqueued for {', '.join(targets)}",
                  markup=False, highlight=False, soft_wrap=True)
        raise typer.Exit(1 if problems and not movements else 0)
    if not movements:
        _print_problems(problems)
        _summary(file, result, zone, zone_source, extra=[("enqueued", "0")])
        err.print("nothing to enqueue: no movement was accepted", markup=False, highlight=False, soft_wrap=True)
        raise typer.Exit(1)

    conflicts, counts = _enqueue(settings, movements, targets, result.lines, partial=partial)
    _print_problems(sorted(problems + conflicts, key=_line_number))
    if conflicts and not partial:
        _summary(file, result, zone, zone_source, extra=[("already enqueued, other content", str(len(conflicts))),
                                                          ("enqueued", "0")])
        err.print("nothing enqueued: movements already enqueued with other content", markup=False, highlight=False, soft_wrap=True)
        raise typer.Exit(1)
    extra = [("enqueued", str(counts["enqueued"])),
             ("already enqueued, unchanged", str(counts["unchanged"])),
             ("outbox rows written", str(counts["outbox"]))]
    if counts["conflicts"]:
        extra.insert(0, ("already enqueued, other content", str(counts["conflicts"])))
    _summary(file, result, zone, zone_source, extra=extra)
    out.print(f"targets: {', '.join(targets)}; delivery happens in `erphub sync run` or the workers",
              markup=False, highlight=False, soft_wrap=True)
    if counts["enqueued"] + counts["unchanged"] == 0:
        raise typer.Exit(1)


def _line_number(problem: str) -> int:
    head = problem.split(":", 1)[0].split()
    return int(head[1]) if len(head) > 1 and head[1].isdigit() else 0
