"""``erphub reconcile SYSTEM [SYSTEM…] [--count-sheet FILE]``: compare stock across systems (or with a
physical count) and explain every difference (``compare.variance``).

Each named connection's balances are read into a new stored snapshot (``sync.pull.pull_balances``,
codes translated to canonical ones); a count sheet (CSV/XLSX) is checked and stored as a snapshot
too. The reference side is the count sheet when there is one, else the first system. With a count
sheet and no ``--warehouse``, only the warehouses on the sheet are compared.

Reports (HTML, Markdown, JSON) go to ``--output`` (default ``./erphub-report``). ``--propose FILE``
writes the count gains/losses that would bring ``--to`` (default: the one system that is not the
reference) to the reference as a movements file ``erphub push`` reads; ``--apply --to SYSTEM``
enqueues them through the outbox (never without ``--apply``; references are deterministic, so a
repeat enqueues nothing new).

Exit codes: 0 every row agrees or is in flight; 1 differences found, or count-sheet problems
(nothing is compared unless ``--partial``); 2 usage or configuration errors.
"""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.table import Table

from erphub.cli import _load_settings, app, err, out


def _fail(message: str, code: int = 2) -> typer.Exit:
    err.print(message, markup=False, highlight=False, soft_wrap=True)
    return typer.Exit(code)


@app.command()
def reconcile(
    systems: Annotated[Optional[list[str]], typer.Argument(help="Connections to compare (two or more, or one "
                                                                "with --count-sheet).")] = None,
    count_sheet: Annotated[Optional[Path], typer.Option("--count-sheet", help="Physical count: .csv or .xlsx.",
                                                        exists=True, dir_okay=False, readable=True)] = None,
    sheet: Annotated[Optional[str], typer.Option("--sheet", help="Worksheet of an .xlsx count sheet.")] = None,
    sheet_codes: Annotated[Optional[str], typer.Option("--sheet-codes", help="The count sheet uses this "
                                                       "connection's codes (translated through its code map).")] = None,
    warehouse: Annotated[Optional[str], typer.Option("--warehouse", help="Compare one warehouse only.")] = None,
    tolerance: Annotated[Optional[str], typer.Option("--tolerance", help="Agreeing difference: 0.5 (units), "
                                                     "1% (percent) or both: 0.5,1%.")] = None,
    by_location: Annotated[bool, typer.Option("--by-location", help="Compare per bin and lot, not per "
                                              "item and warehouse.")] = False,
    propose_file: Annotated[Optional[Path], typer.Option("--propose", help="Write the closing count "
                                                         "adjustments here (.json, .jsonl or .csv).")] = None,
    apply_: Annotated[bool, typer.Option("--apply", help="Enqueue the adjustments for --to.")] = False,
    to: Annotated[Optional[str], typer.Option("--to", help="The system to adjust toward the reference.")] = None,
    output: Annotated[Path, typer.Option("--output", help="Directory for the reports.")] = Path("erphub-report"),
    partial: Annotated[bool, typer.Option("--partial", help="Compare the good count-sheet rows even if "
                                          "others have problems.")] = False,
    limit: Annotated[int, typer.Option("--limit", min=1, help="Drill-down rows in the HTML/Markdown.")] = 500,
) -> None:
    """Snapshot balances, align them through the canonical codes, and classify every difference."""
    from compare.variance import Tolerance

    names = list(dict.fromkeys(systems or []))
    settings = _load_settings()
    if len(names) + (1 if count_sheet else 0) < 2:
        raise _fail("name two or more systems, or one system and --count-sheet")
    unknown = [n for n in names if n not in settings.connections]
    if unknown:
        listing = ", ".join(sorted(settings.connections)) or "none configured"
        raise _fail(f"no connection named {', '.join(map(repr, unknown))} (connections: {listing})")
    if sheet_codes is not None and sheet_codes not in settings.connections:
        raise _fail(f"--sheet-codes: no connection named {sheet_codes!r}")
    if apply_ and propose_file is None and to is None:
        raise _fail("--apply needs --to SYSTEM (the system whose stock is adjusted)")
    try:
        tol = Tolerance.parse(tolerance)
    except ValueError as exc:
        raise _fail(f"--tolerance: {exc}") from None

    from compare.proposals import apply as apply_movements
    from compare.proposals import propose, write_movements
    from compare.reconcile_report import CLASS_LABELS, write_reconcile_report
    from compare.snapshots import snapshot_systems
    from compare.variance import CLASS_ORDER, reconcile_snapshots
    from connectors.errors import ConnectorError
    from sync import codemap
    from sync.connections import Connections
    from sync.store import Store

    codemap.configure(settings.codemap)
    with Store.open(settings.store.url) as store:
        store.upgrade()
        with Connections(store, settings.connections) as connections:
            try:
                ids = snapshot_systems(store, connections, names, warehouse=warehouse, rules=settings.codemap)
            except ConnectorError as exc:
                raise _fail(f"could not read balances: {exc}", 1) from None
            problems: list[str] = []
            scope: set[str] | None = {warehouse} if warehouse else None
            reference = 0
            if count_sheet is not None:
                sheet_id, problems, scope = _count_sheet(store, connections, count_sheet, ids, sheet=sheet,
                                                         codes_of=sheet_codes, warehouse=warehouse, partial=partial)
                ids = [sheet_id, *ids]
            result = reconcile_snapshots(store, ids, tolerance=tol, warehouses=scope, by_location=by_location,
                                         reference=reference)
            result.problems = problems
            if count_sheet is not None and warehouse is None and scope is not None:
                result.notes.append(f"compared the warehouses on the count sheet: {', '.join(sorted(scope))}")
            simulators = tuple(n for n in names if _is_simulator(settings.connections[n]))
            written = write_reconcile_report(result, output, limit=limit, simulators=simulators)

            summary = Table("class", "rows", title="reconcile " + " vs ".join(s.label for s in result.sides),
                            title_justify="left")
            summary.columns[1].justify = "right"
            for cls in CLASS_ORDER:
                summary.add_row(CLASS_LABELS[cls], f"{result.counts.get(cls, 0):,}")
            out.print(summary)
            out.print(f"账实相符率 match rate {result.match_rate:.2%} ({result.matched:,} of {result.total_rows:,} "
                      f"rows); value at stake {result.value_at_stake:,.2f}"
                      + (f" ({result.rows_without_cost} differing rows without a cost)" if result.rows_without_cost
                         else ""), markup=False, highlight=False, soft_wrap=True)
            for row in [r for r in result.variances if r.cls.is_error or r.cls.value == "in_flight"][:10]:
                out.print(f"  {row.sku} @ {row.warehouse}: {CLASS_LABELS[row.cls]}: {row.explanation}",
                          markup=False, highlight=False, soft_wrap=True)
            out.print("reports: " + ", ".join(str(p) for p in written.values()), markup=False, highlight=False,
                      soft_wrap=True)

            if propose_file is not None or apply_:
                target = to
                try:
                    movements = propose(result, target)
                except ValueError as exc:
                    raise _fail(str(exc)) from None
                target = target or next(s.label for i, s in enumerate(result.sides)
                                        if i != result.reference and s.connection)
                if propose_file is not None:
                    try:
                        write_movements(propose_file, movements)
                    except ValueError as exc:
                        raise _fail(str(exc)) from None
                    out.print(f"proposed {len(movements)} count adjustment(s) for {target} in {propose_file} "
                              f"(enqueue with: erphub push {propose_file} --to {target})", markup=False,
                              highlight=False, soft_wrap=True)
                if apply_:
                    applied = apply_movements(store, connections, movements, target)
                    out.print(f"applied: {applied.new} new count adjustment(s) enqueued for {target} "
                              f"({applied.movements - applied.new} already enqueued); delivery happens in "
                              "`erphub sync run` or the workers", markup=False, highlight=False, soft_wrap=True)
    if result.errors:
        raise typer.Exit(1)


def _is_simulator(settings: Any) -> bool:
    url = str(getattr(settings, "url", "") or "")
    return "127.0.0.1" in url or "localhost" in url


def _count_sheet(store: Any, connections: Any, path: Path, snapshot_ids: list[int], *, sheet: str | None,
                 codes_of: str | None, warehouse: str | None, partial: bool) -> tuple[int, list[str], set[str]]:
    """Read, check and store the count sheet; its snapshot id, problems and warehouse scope."""
    from sqlalchemy import select

    from compare.countsheet import read_count_sheet
    from compare.snapshots import store_rows
    from sync.store import BalanceSnapshotRow

    with store.session() as session:
        known = session.execute(select(BalanceSnapshotRow.sku).distinct().where(
            BalanceSnapshotRow.snapshot_id.in_(snapshot_ids))).scalars().all()
        known_whs = session.execute(select(BalanceSnapshotRow.warehouse).distinct().where(
            BalanceSnapshotRow.snapshot_id.in_(snapshot_ids))).scalars().all()
    try:
        result = read_count_sheet(path, store=store, connections=connections, codes_of=codes_of, sheet=sheet,
                                  known_skus=known, known_warehouses=known_whs,
                                  warehouses={warehouse} if warehouse else None)
    except ValueError as exc:
        raise _fail(str(exc)) from None
    problems = [str(p) for p in result.problems]
    for problem in problems:
        err.print(f"{path.name}: {problem}", markup=False, highlight=False, soft_wrap=True)
    if problems and not partial:
        raise _fail(f"{path.name}: {len(problems)} problem(s); nothing compared (fix them, or compare the good rows "
                    "with --partial)", 1)
    if not result.rows:
        raise _fail(f"{path.name}: no count rows to compare", 1)
    label = f"count sheet {path.name}"
    sheet_id = store_rows(store, result.balance_rows(), source_label=label)
    scope = {warehouse} if warehouse else result.warehouses
    return sheet_id, [f"{path.name}: {p}" for p in problems], scope
