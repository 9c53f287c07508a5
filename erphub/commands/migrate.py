"""``erphub migrate --from A --to B``: items, warehouses, bin locations and opening balances from one
system to another (:mod:`sync.migrate`), with a progress bar per phase, a summary and a reconciliation.

- ``--dry-run`` maps and validates everything without writing to the target and writes a report
  of what would fail, record by record with the field (``--report FILE``; default
  ``./erphub-migrate-<run>.md``). A report named ``*.csv`` holds the problems, with the summary
  in ``*.json`` next to it; one named ``*.json`` holds the summary, with the problems in ``*.csv``.
- ``--resume RUN`` continues an interrupted run from its last committed page (the plan comes
  from the run: ``--from``/``--to`` may be left out).
- ``--entities warehouses,locations,items,balances`` (default: all four; bin locations are copied
  where the source lists them or its balances name them, and the target can write them — else
  checked and reported), ``--batch N`` records per upsert
  call (default: the target's), ``--page-size N`` records per source read, ``--lines N`` lines per
  opening-balance document.

Exit codes: 0 migrated and reconciled with no difference (dry run: nothing would fail); 1 problems
(records that failed or would fail, documents not delivered, a difference in the reconciliation);
2 usage or configuration errors (unknown connection, a target that cannot write what is asked);
130 interrupted (resume with ``--resume RUN``).
"""
from __future__ import annotations

import csv
import json
import time
from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from erphub.cli import _load_settings, app, err, out

PHASE_TITLES = {"warehouses": "warehouses", "locations": "bin locations", "items": "items",
                "balances": "opening balances", "deliver": "delivering documents"}


class _Bars:
    """One rich progress bar per phase: counts and rate (totals are unknown while streaming)."""

    def __init__(self, progress: Progress, dry_run: bool) -> None:
        self.progress, self.dry_run = progress, dry_run
        self.tasks: dict[str, Any] = {}
        self.started: dict[str, float] = {}

    def __call__(self, phase: str, counts: Any) -> None:
        if phase == "reconcile":
            return
        if phase not in self.tasks:
            self.tasks[phase] = self.progress.add_task(PHASE_TITLES.get(phase, phase), total=None, detail="")
            self.started[phase] = time.monotonic()
        elapsed = max(time.monotonic() - self.started[phase], 1e-6)
        if phase == "deliver":
            detail = f"{counts.written} delivered · {counts.movements} outstanding · {counts.failed} dead-lettered"
            done = counts.written + counts.failed
        else:
            verb = "would write" if self.dry_run else "created"
            detail = (f"{counts.read} read · {counts.written} {verb} · {counts.unchanged} "
                      f"{'zero' if phase == 'balances' else 'already there'} · {counts.failed} failed")
            if phase == "balances":
                detail += f" · {counts.movements} documents"
            done = counts.read
        detail += f" · {done / elapsed:,.0f}/s"
        task = self.tasks[phase]
        self.progress.update(task, completed=done, detail=detail)
        if counts.done:
            self.progress.update(task, total=max(done, 1), completed=max(done, 1))


@app.command("migrate")
def migrate_command(
    ctx: typer.Context,
    source: Annotated[Optional[str], typer.Option("--from", help="Connection to migrate from.")] = None,
    target: Annotated[Optional[str], typer.Option("--to", help="Connection to migrate into.")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Map and validate only; write nothing to the target; "
                                                             "report what would fail.")] = False,
    resume: Annotated[Optional[int], typer.Option("--resume", metavar="RUN", help="Continue an interrupted run.")] = None,
    entities: Annotated[str, typer.Option("--entities", help="What to migrate, comma-separated.")] =
        "warehouses,locations,items,balances",
    batch: Annotated[Optional[int], typer.Option("--batch", min=1, help="Records per upsert call "
                                                 "(default: the target's limit).")] = None,
    page_size: Annotated[Optional[int], typer.Option("--page-size", min=1, help="Records per source read.")] = None,
    lines: Annotated[int, typer.Option("--lines", min=1, help="Lines per opening-balance document.")] = 100,
    report: Annotated[Optional[Path], typer.Option("--report", help="Report file (.md, or .csv/.json for CSV + "
                                                   "JSON); default ./erphub-migrate-<run>.md for a dry run.")] = None,
    new: Annotated[bool, typer.Option("--new", help="Start a new run although an earlier one is unfinished or already posted the opening balances.")] = False,
    timeout: Annotated[float, typer.Option("--timeout", min=0, help="Seconds to wait for deliveries to be retried.")]
        = 600.0,
) -> None:
    """Migrate items, warehouses, bin locations and opening balances from one system to another."""
    from connectors.errors import ConfigError, ConnectorError
    from connectors.redaction import redact_text
    from sync.connections import Connections
    from sync.migrate import ENTITIES, MigrateOptions, default_report_path, migrate
    from sync.migrate_workspace import Workspace
    from sync.store import Store

    chosen = tuple(dict.fromkeys(e.strip().lower() for e in entities.split(",") if e.strip()))
    unknown = [e for e in chosen if e not in ENTITIES]
    if unknown or not chosen:
        raise typer.BadParameter(f"unknown {', '.join(unknown) or 'nothing'}; choose from {', '.join(ENTITIES)}",
                                 param_hint="--entities")
    if resume is None and (not source or not target):
        raise typer.BadParameter("name both --from and --to (or --resume RUN)", param_hint="--from/--to")
    if resume is not None and dry_run:
        raise typer.BadParameter("a dry run starts afresh; it cannot resume", param_hint="--dry-run")
    settings = _load_settings(ctx)
    for name, hint in ((source, "--from"), (target, "--to")):
        if name is not None and name not in settings.connections:
            listing = ", ".join(sorted(settings.connections)) or "none configured"
            raise typer.BadParameter(f"no connection named {name!r} (connections: {listing})", param_hint=hint)
    options = MigrateOptions(source=source, target=target, entities=chosen, dry_run=dry_run, resume_run=resume,
                             batch=batch, page_size=page_size, lines_per_movement=lines, new=new,
                             deliver_timeout=timeout)
    store = Store.open(settings.store.url)
    try:
        store.upgrade()
        with Connections(store, settings.connections) as connections, Workspace() as ws:
            progress = Progress(SpinnerColumn(), TextColumn("{task.description:<22}"), BarColumn(),
                                TextColumn("{task.fields[detail]}"), TimeElapsedColumn(), console=out, transient=False)
            try:
                with progress:
                    result = migrate(store, connections, options, on_progress=_Bars(progress, dry_run),
                                     rules=settings.codemap, workspace=ws)
            except ConfigError as exc:
                err.print(f"cannot migrate: {exc}", markup=False, highlight=False, soft_wrap=True)
                raise typer.Exit(2) from None
            except KeyboardInterrupt as exc:
                notes = " ".join(getattr(exc, "__notes__", []))
                err.print(f"interrupted. {notes}", markup=False, highlight=False, soft_wrap=True)
                raise typer.Exit(130) from None
            except ConnectorError as exc:
                notes = " ".join(getattr(exc, "__notes__", []))
                err.print(f"migration stopped: {exc} ({exc.kind}). {notes}", markup=False, highlight=False,
                          soft_wrap=True)
                raise typer.Exit(1) from None
            _print_summary(result)
            path = report or (default_report_path(result.run_id) if dry_run else None)
            if path is not None:
                written = write_report(path, result, ws)
                out.print(f"report: {', '.join(str(p) for p in written)}", markup=False, highlight=False)
    except Exception as exc:
        if isinstance(exc, (typer.Exit, typer.BadParameter)):
            raise
        err.print(redact_text(f"migration failed: {type(exc).__name__}: {exc}"), markup=False, highlight=False,
                  soft_wrap=True)
        raise typer.Exit(1) from None
    finally:
        store.close()
    raise typer.Exit(0 if result.ok else 1)


# --- summary ---------------------------------------------------------------------------------------


def _print_summary(result: Any) -> None:
    title = (f"migration run {result.run_id}{' (dry run)' if result.dry_run else ''}{' (resumed)' if result.resumed else ''}"
             f": {result.source} → {result.target} in {result.seconds:.1f}s")
    table = Table("phase", "read", "would write" if result.dry_run else "created", "already there", "failed",
                  "documents", title=title, title_justify="left")
    for column in table.columns[1:]:
        column.justify = "right"
    for phase, c in result.phases.items():
        if phase == "deliver":
            table.add_row("deliver", "", str(c.written), "", str(c.failed), f"{c.movements} outstanding")
        else:
            table.add_row(phase, str(c.read), str(c.written), str(c.unchanged), str(c.failed),
                          str(c.movements) if phase == "balances" else "")
    out.print(table)
    for problem in result.capability_problems:
        err.print(f"capability: {problem}", markup=False, highlight=False)
    if result.errors or result.warnings:
        out.print(f"{result.errors} problem(s){' that would fail' if result.dry_run else ''}, {result.warnings} "
                  f"warning(s){'' if result.dry_run else '; see `erphub errors list`'}", highlight=False)
    rec = result.reconciliation
    if rec is None:
        return
    table = Table("reconciliation", "matched", "missing in target", "different", "extra in target",
                  title=f"target vs source: {'MATCH' if rec.ok else 'DIFFERENT'}", title_justify="left")
    for column in table.columns[1:]:
        column.justify = "right"
    for entity, s in rec.sets.items():
        table.add_row(entity, str(s.matched), str(s.missing), "", str(s.extra))
    if rec.balances is not None:
        b = rec.balances
        table.add_row("on-hand per sku + warehouse", str(b.matched), str(b.missing), str(b.different), str(b.extra))
    out.print(table)
    if rec.balances is not None and rec.balances.examples:
        for sku, wh, here, there in rec.balances.examples[:10]:
            out.print(f"  {sku} @ {wh}: source {here if here is not None else '-'}, target "
                      f"{there if there is not None else '-'}", markup=False, highlight=False)


# --- report ----------------------------------------------------------------------------------------

PROBLEM_COLUMNS = ("severity", "phase", "record", "position", "field", "problem", "vendor_code")


def _summary(result: Any) -> dict[str, Any]:
    rec = result.reconciliation
    return {
        "run": result.run_id, "dry_run": result.dry_run, "resumed": result.resumed, "source": result.source,
        "target": result.target, "entities": list(result.entities), "ok": result.ok, "status": str(result.status),
        "errors": result.errors, "warnings": result.warnings, "outstanding": result.outstanding,
        "capability_problems": result.capability_problems,
        "phases": {name: asdict(c) for name, c in result.phases.items()},
        "reconciliation": None if rec is None else {
            "ok": rec.ok, "sets": {name: asdict(s) for name, s in rec.sets.items()},
            "balances": None if rec.balances is None else {
                **{k: v for k, v in asdict(rec.balances).items() if k != "examples"},
                "examples": [{"sku": s, "warehouse": w, "source": None if a is None else str(a),
                              "target": None if b is None else str(b)} for s, w, a, b in rec.balances.examples]},
        },
    }


def _problem_row(p: Any) -> list[Any]:
    return [p.severity, p.phase, p.record, "" if p.position is None else p.position, p.field or "", p.message,
            p.vendor_code or ""]


def write_report(path: Path, result: Any, ws: Any) -> list[Path]:
    """Write the report (streaming the problems from the workspace); the files written."""
    suffix = path.suffix.lower()
    if suffix in (".csv", ".json"):
        csv_path, json_path = path.with_suffix(".csv"), path.with_suffix(".json")
        with csv_path.open("w", encoding="utf-8-sig", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(PROBLEM_COLUMNS)
            for problem in ws.problems():
                writer.writerow(_problem_row(problem))
        json_path.write_text(json.dumps({**_summary(result), "problems_file": csv_path.name}, indent=2,
                                        ensure_ascii=False) + "\n", encoding="utf-8")
        return [path, json_path if path == csv_path else csv_path]
    with path.open("w", encoding="utf-8") as f:
        kind = "dry run" if result.dry_run else "run"
        f.write(f"# erphub migration {kind} {result.run_id}: {result.source} → {result.target}\n\n")
        if result.dry_run:
            f.write("Nothing was written to the target. Each row below names a record that **would fail**, "
                    "with its position in the source stream and the field.\n\n")
        f.write(f"- entities: {', '.join(result.entities)}\n- problems: {result.errors}, warnings: "
                f"{result.warnings}\n")
        if not result.dry_run:
            f.write(f"- documents not delivered: {result.outstanding}\n")
        for problem in result.capability_problems:
            f.write(f"- **capability**: {problem}\n")
        f.write("\n## Phases\n\n| phase | read | " + ("would write" if result.dry_run else "created")
                + " | already there | failed | documents |\n|---|--:|--:|--:|--:|--:|\n")
        for name, c in result.phases.items():
            f.write(f"| {name} | {c.read} | {c.written} | {c.unchanged} | {c.failed} | {c.movements} |\n")
        rec = result.reconciliation
        if rec is not None:
            f.write(f"\n## Reconciliation: {'target matches source' if rec.ok else 'DIFFERENCES'}\n\n"
                    "| what | matched | missing in target | different | extra in target |\n|---|--:|--:|--:|--:|\n")
            for entity, s in rec.sets.items():
                f.write(f"| {entity} | {s.matched} | {s.missing} | | {s.extra} |\n")
            if rec.balances is not None:
                b = rec.balances
                f.write(f"| on-hand per sku + warehouse | {b.matched} | {b.missing} | {b.different} | {b.extra} |\n")
        f.write("\n## Problems\n\n| severity | phase | record | position | field | problem | vendor code |\n"
                "|---|---|---|--:|---|---|---|\n")
        count = 0
        for problem in ws.problems():
            f.write("| " + " | ".join(_md(v) for v in _problem_row(problem)) + " |\n")
            count += 1
        if not count:
            f.write("| | | none | | | | |\n")
    return [path]


def _md(value: Any) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ")
