"""The reconciliation report: JSON, Markdown and HTML from one :class:`compare.variance.Reconciliation`.

:func:`reconcile_json` is the complete, machine-readable result (every drill-down row, decimals
as exact strings). :func:`reconcile_document` lays the same facts out as a
:class:`compare.report.Document` (the trial report's model and page chrome), which
:func:`write_reconcile_report` writes as ``reconcile.html``, ``reconcile.md`` and
``reconcile.json``. The Markdown and HTML drill-down show the first ``limit`` rows that need
attention (the worst classes first, then by value at stake); the JSON has them all.
"""
from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any

from compare.report import Bullets, Document, Section, Table, Text, render_markdown, write_document
from compare.variance import CLASS_ORDER, Reconciliation, Variance, VarianceClass

__all__ = ["CLASS_LABELS", "DRILL_DOWN_LIMIT", "reconcile_document", "reconcile_json", "reconcile_markdown",
           "write_reconcile_report"]

FORMAT = "erphub-reconcile-report/1"
DRILL_DOWN_LIMIT = 500
CLASS_LABELS = {
    VarianceClass.MATCH: "match",
    VarianceClass.IN_FLIGHT: "in flight",
    VarianceClass.MISSING: "missing on one side",
    VarianceClass.QUANTITY_MISMATCH: "quantity mismatch",
    VarianceClass.UNIT_MISMATCH: "unit mismatch",
}


def _num(value: Decimal | None) -> str | None:
    if value is None:
        return None
    if not value:
        return "0"
    return format(value.normalize(), "f")


def _shown(value: Decimal | None) -> str:
    text = _num(value)
    return "—" if text is None else text


def _money(value: Decimal | None) -> str:
    return "—" if value is None else f"{value:,.2f}"


def _row_json(row: Variance, labels: tuple[str, ...]) -> dict[str, Any]:
    return {
        "sku": row.sku, "warehouse": row.warehouse, "bin": row.bin, "lot": row.lot,
        "class": row.cls.value, "base_unit": row.base_unit,
        "sides": {label: {"present": side.present, "quantity": _num(side.quantity), "reported": _num(side.reported),
                          "unit": side.unit}
                  for label, side in zip(labels, row.sides)},
        "difference": _num(row.difference), "explained": _num(row.explained), "unexplained": _num(row.unexplained),
        "within_tolerance": row.within_tolerance, "unit_cost": _num(row.unit_cost),
        "value_at_stake": _num(row.value_at_stake), "missing_on": list(row.missing_on),
        "in_flight": [{"reference": m.reference, "kind": m.kind, "side": m.side, "quantity": _num(m.quantity),
                       "status": m.status} for m in row.in_flight],
        "explanation": row.explanation,
    }


def reconcile_json(rec: Reconciliation) -> dict[str, Any]:
    labels = tuple(side.label for side in rec.sides)
    return {
        "format": FORMAT,
        "created_at": rec.created_at.isoformat(),
        "sides": [{"label": s.label, "kind": s.kind, "connection": s.connection, "snapshot_id": s.snapshot_id,
                   "taken_at": s.taken_at.isoformat(), "rows": s.rows, "reference": i == rec.reference}
                  for i, s in enumerate(rec.sides)],
        "reference": rec.reference_side.label,
        "tolerance": {"absolute": _num(rec.tolerance.absolute), "percent": _num(rec.tolerance.percent),
                      "text": str(rec.tolerance)},
        "granularity": "sku+warehouse+bin+lot" if rec.by_location else "sku+warehouse",
        "warehouses": list(rec.warehouses) if rec.warehouses is not None else None,
        "total_rows": rec.total_rows,
        "counts": {cls.value: n for cls, n in rec.counts.items()},
        "match_rate": rec.match_rate,
        "match_rate_with_in_flight": rec.match_rate_with_in_flight,
        "value_at_stake": _num(rec.value_at_stake),
        "value_at_stake_by_class": {cls.value: _num(v) for cls, v in rec.value_by_class().items()},
        "rows_without_cost": rec.rows_without_cost,
        "timings_s": {k: round(v, 4) for k, v in rec.timings.items()},
        "notes": list(rec.notes),
        "problems": list(rec.problems),
        "drill_down": [_row_json(row, labels) for row in rec.variances],
    }


def reconcile_document(rec: Reconciliation, *, limit: int = DRILL_DOWN_LIMIT,
                       simulators: tuple[str, ...] = ()) -> Document:
    labels = [side.label for side in rec.sides]
    ref = rec.reference_side
    doc = Document(
        title="Stock reconciliation 库存对账",
        subtitle=f"{' vs '.join(labels)} — reference: {ref.label} ({ref.kind})",
        meta=[("created", rec.created_at.strftime("%Y-%m-%d %H:%M:%S UTC")),
              ("compared", "sku + warehouse + bin + lot" if rec.by_location else "sku + warehouse"),
              ("tolerance", str(rec.tolerance)),
              ("warehouses", ", ".join(rec.warehouses) if rec.warehouses is not None else "all")],
        footer="erphub reconcile: quantities are exact decimals in each item's base unit.",
    )
    if simulators:
        doc.banner = (f"Measured against simulators ({', '.join(simulators)}), not production systems: "
                      "the figures show the method, not a real stock position.")
    summary = Table(["measure", "value"], [
        ["账实相符率 match rate", f"{rec.match_rate:.2%} ({rec.matched:,} of {rec.total_rows:,} rows)"],
        ["match rate counting in-flight rows", f"{rec.match_rate_with_in_flight:.2%}"],
        ["value at stake 资金差异", _money(rec.value_at_stake)
         + (f" ({rec.rows_without_cost:,} differing rows without a unit cost)" if rec.rows_without_cost else "")],
    ], id="summary")
    counts = Table(["class", "rows", "value at stake"],
                   [[CLASS_LABELS[cls], f"{rec.counts.get(cls, 0):,}", _money(rec.value_by_class().get(cls))]
                    for cls in CLASS_ORDER], id="counts", numeric_columns=frozenset({1, 2}),
                   row_keys=[cls.value for cls in CLASS_ORDER])
    sides = Table(["side", "kind", "snapshot", "taken at", "rows"],
                  [[s.label + (" (reference)" if i == rec.reference else ""), s.kind, str(s.snapshot_id),
                    s.taken_at.strftime("%Y-%m-%d %H:%M:%S UTC"), f"{s.rows:,}"] for i, s in enumerate(rec.sides)],
                  id="sides", numeric_columns=frozenset({4}))
    doc.sections.append(Section("Summary", [summary, counts, sides], id="summary-section"))

    attention = [row for row in rec.variances if row.cls is not VarianceClass.MATCH]
    tolerated = [row for row in rec.variances if row.cls is VarianceClass.MATCH]
    shown = attention[:limit]
    headers = ["sku", "warehouse", *(["bin", "lot"] if rec.by_location else []), *labels, "unit", "difference",
               "class", "value at stake", "explanation"]
    rows = []
    for row in shown:
        quantities = ["no row" if not side.present else _shown(side.quantity) if side.quantity is not None
                      else f"{_shown(side.reported)} {side.unit or ''}".rstrip() for side in row.sides]
        rows.append([row.sku, row.warehouse, *([row.bin or "", row.lot or ""] if rec.by_location else []),
                     *quantities, row.base_unit or "", _shown(row.difference), CLASS_LABELS[row.cls],
                     _money(row.value_at_stake), row.explanation])
    first_number = 4 if rec.by_location else 2
    numeric = frozenset(range(first_number, first_number + len(labels))) | {
        first_number + len(labels) + 1, first_number + len(labels) + 3}
    blocks: list[Any] = []
    if len(attention) > len(shown):
        blocks.append(Text(f"The {len(shown):,} rows most in need of attention of {len(attention):,}; "
                           "the JSON report holds every row."))
    blocks.append(Table(headers, rows, id="drill-down", numeric_columns=numeric,
                        row_keys=[f"{r.sku}@{r.warehouse}" for r in shown]))
    doc.sections.append(Section("Drill-down per item", blocks, id="drill-down-section"))
    if tolerated:
        doc.sections.append(Section("Agreeing after normalising", [Text(
            f"{len(tolerated):,} rows were not identical but agree: within tolerance "
            f"({sum(r.within_tolerance for r in tolerated):,}), equal in the base unit, or 0 where the other "
            "side has no row. They count as matches.")]))
    notes = [*rec.problems, *rec.notes]
    if notes:
        doc.sections.append(Section("Notes and problems", [Bullets(notes)], id="notes"))
    doc.sections.append(Section("How to read this", [Bullets([
        "Every side is normalised before comparing: codes through the code map, quantities converted to the "
        "item's base unit and quantised to its precision, bins and lots summed per item and warehouse.",
        "In flight: the difference is fully explained by movements in the outbox that have not reached the "
        "lagging system yet (pending, sending, ambiguous, or sent after its snapshot).",
        "Value at stake: |unexplained difference| × unit cost (item standard cost, else the snapshot's unit "
        "cost).",
    ])]))
    return doc


def reconcile_markdown(rec: Reconciliation, *, limit: int = DRILL_DOWN_LIMIT) -> str:
    return render_markdown(reconcile_document(rec, limit=limit))


def write_reconcile_report(rec: Reconciliation, out_dir: str | Path, *, stem: str = "reconcile",
                           limit: int = DRILL_DOWN_LIMIT, simulators: tuple[str, ...] = ()) -> dict[str, Path]:
    """Write ``<stem>.html``, ``<stem>.md`` and ``<stem>.json`` into ``out_dir``; their paths."""
    return write_document(reconcile_document(rec, limit=limit, simulators=simulators), out_dir, stem=stem,
                          json_data=reconcile_json(rec))
