"""``erphub codemap``: import, list and export the code map of a connection (``sync.codemap``)."""
from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(help="Cross-system code mapping: which code each connection uses for a record.",
                  no_args_is_help=True)
out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)  # one problem per line, never folded

ENTITY_HELP = "items, warehouses, locations or partners."


@contextmanager
def _connection(name: str, entity: str) -> Iterator[tuple[object, int, str]]:
    """(session, connection id, entity) for a configured connection, in one committed transaction."""
    from erphub.cli import _load_settings
    from sync.connections import ensure_connection
    from sync.idmap import entity_name
    from sync.store import Store

    settings = _load_settings()
    try:
        entity = entity_name(entity)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--entity") from None
    if entity == "movements":
        raise typer.BadParameter("movements have no code map", param_hint="--entity")
    if name not in settings.connections:
        known = ", ".join(sorted(settings.connections)) or "none configured"
        err.print(f"no connection named {name!r} (connections: {known})", markup=False, highlight=False)
        raise typer.Exit(2)
    with Store.open(settings.store.url) as store:
        store.upgrade()
        with store.session(write=True) as session:
            yield session, ensure_connection(session, name, settings.connections[name].platform), entity


@app.command("import")
def import_(
    file: Annotated[Path, typer.Argument(help="CSV with columns canonical_code,external_code (UTF-8).")],
    connection: Annotated[str, typer.Option("--connection", help="The connection the external codes belong to.")],
    entity: Annotated[str, typer.Option("--entity", help=ENTITY_HELP)] = "items",
    partial: Annotated[bool, typer.Option("--partial", help="Write the good rows even if some are bad.")] = False,
) -> None:
    """Import a code map. Every bad row is reported with its line number; without --partial a
    single bad row stops the import and nothing is written."""
    from sync.codemap import import_csv

    with _connection(connection, entity) as (session, connection_id, entity):
        report = import_csv(session, connection_id, entity, file, partial=partial)  # type: ignore[arg-type]
    for problem in report.problems:
        err.print(f"{file}: {problem}", markup=False, highlight=False)
    if not report.written:
        err.print(f"{len(report.problems)} problem(s); nothing imported (fix the rows, or use --partial to "
                  f"import the good ones)", markup=False, highlight=False)
        raise typer.Exit(1)
    out.print(f"{connection} {entity}: {report.added} added, {report.unchanged} already mapped, "
              f"{len(report.problems)} rejected", markup=False, highlight=False)


@app.command("list")
def list_(
    connection: Annotated[str, typer.Option("--connection", help="The connection whose codes to list.")],
    entity: Annotated[str, typer.Option("--entity", help=ENTITY_HELP)] = "items",
    limit: Annotated[Optional[int], typer.Option(help="Show at most this many rows.")] = None,
) -> None:
    """Show the code map of one connection and entity."""
    from sync.idmap import bindings

    with _connection(connection, entity) as (session, connection_id, entity):
        rows = bindings(session, connection_id, entity)  # type: ignore[arg-type]
    table = Table("canonical_code", "external_code", title=f"{connection} {entity}: {len(rows)} mapped")
    for row in rows[:limit] if limit is not None else rows:
        table.add_row(row.canonical_id, row.code)
    out.print(table)


@app.command("export")
def export(
    connection: Annotated[str, typer.Option("--connection", help="The connection whose codes to export.")],
    entity: Annotated[str, typer.Option("--entity", help=ENTITY_HELP)] = "items",
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="File to write (default stdout).")] = None,
) -> None:
    """Write the code map as CSV, in the shape `erphub codemap import` reads."""
    from sync.codemap import export_csv

    with _connection(connection, entity) as (session, connection_id, entity):
        if output is None:
            export_csv(session, connection_id, entity, sys.stdout)  # type: ignore[arg-type]
            return
        with output.open("w", encoding="utf-8", newline="") as handle:
            count = export_csv(session, connection_id, entity, handle)  # type: ignore[arg-type]
    err.print(f"wrote {count} row(s) to {output}", markup=False, highlight=False)
