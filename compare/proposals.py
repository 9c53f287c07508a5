"""Count adjustments that would close a reconciliation's gaps (盘盈 / 盘亏), proposed, never sent
by default.

:func:`propose` turns every row that disagrees (missing or quantity mismatch; not in flight, not
a unit mismatch) into a ``count_gain`` or ``count_loss`` movement for one **target** side, so its
stock would match the **reference** side (the count sheet, or the first system). Only the part of
a gap that movements in flight do not already explain is proposed. References are deterministic
(a hash of the two snapshots compared, the target and the position), so writing the proposal
twice gives the same file and applying it twice enqueues nothing new (``sync.push`` treats a known
reference with the same content as a no-op).

:func:`write_movements` writes them as a file ``erphub push`` reads (JSON list, JSON Lines or CSV);
:func:`apply` enqueues them for the target through the outbox.
"""
from __future__ import annotations

import csv
import hashlib
import io
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any

from canonical import Movement, MovementKind
from compare.variance import Reconciliation, VarianceClass
from sync.push import enqueue_many, payload_of

__all__ = ["ApplyResult", "apply", "propose", "write_movements"]

REFERENCE_PREFIX = "RC-"


def _reference(rec: Reconciliation, target: int, sku: str, warehouse: str, bin_: str | None, lot: str | None,
               kind: str, quantity: Decimal) -> str:
    material = "\x1f".join([str(rec.reference_side.snapshot_id), str(rec.sides[target].snapshot_id),
                            rec.sides[target].label, sku, warehouse, bin_ or "", lot or "", kind,
                            format(quantity.normalize(), "f")])
    return REFERENCE_PREFIX + hashlib.sha256(material.encode("utf-8")).hexdigest()[:20].upper()


def propose(rec: Reconciliation, target: str | None = None, *, on: date | None = None) -> list[Movement]:
    """The count gains/losses that would bring ``target`` (a side label; default: the only system
    that is not the reference) to the reference side's quantities. ValueError when the target is
    the reference, a count sheet, unknown, or ambiguous."""
    index = _target_index(rec, target)
    on = on or rec.reference_side.taken_at.date()
    ref = rec.reference
    memo_base = f"erphub reconcile: {rec.sides[index].label} → {rec.reference_side.label}"
    movements = []
    for row in rec.variances:
        if row.cls not in (VarianceClass.MISSING, VarianceClass.QUANTITY_MISMATCH) or row.base_unit is None:
            continue
        theirs, ours = row.sides[index], row.sides[ref]
        target_q = theirs.quantity if theirs.present and theirs.quantity is not None else Decimal(0)
        ref_q = ours.quantity if ours.present and ours.quantity is not None else Decimal(0)
        pending_target = sum((m.quantity for m in row.in_flight if m.side == rec.sides[index].label), Decimal(0))
        pending_ref = sum((m.quantity for m in row.in_flight if m.side == rec.reference_side.label), Decimal(0))
        gap = (ref_q + pending_ref) - (target_q + pending_target)
        if gap == 0 or rec.tolerance.allows(gap, ref_q + pending_ref):
            continue
        kind = MovementKind.count_gain if gap > 0 else MovementKind.count_loss
        quantity = abs(gap).normalize()
        if quantity == quantity.to_integral_value():
            quantity = quantity.quantize(Decimal(1))
        line: dict[str, Any] = {"line_no": 1, "sku": row.sku, "quantity": quantity, "unit": row.base_unit,
                                "lot": row.lot}
        side = "to" if kind is MovementKind.count_gain else "from"
        line[f"{side}_warehouse"] = row.warehouse
        line[f"{side}_bin"] = row.bin
        movements.append(Movement(
            reference=_reference(rec, index, row.sku, row.warehouse, row.bin, row.lot, kind.value, quantity),
            kind=kind, document_date=on, lines=[line],
            memo=f"{memo_base} ({row.cls.value}, {'+' if gap > 0 else ''}{format(gap.normalize(), 'f')} "
                 f"{row.base_unit})"))
    return movements


def _target_index(rec: Reconciliation, target: str | None) -> int:
    systems = [i for i, side in enumerate(rec.sides) if i != rec.reference and side.connection]
    if target is None:
        if len(systems) != 1:
            names = ", ".join(rec.sides[i].label for i in systems) or "none"
            raise ValueError(f"name the system to adjust (--to); candidates: {names}")
        return systems[0]
    for i, side in enumerate(rec.sides):
        if side.label == target:
            if i == rec.reference:
                raise ValueError(f"{target} is the reference side; adjust one of the others toward it")
            if not side.connection:
                raise ValueError(f"{target} is a count sheet; only systems can be adjusted")
            return i
    raise ValueError(f"{target!r} is not one of the compared sides ({', '.join(s.label for s in rec.sides)})")


CSV_COLUMNS = ("reference", "kind", "document_date", "sku", "quantity", "unit", "from_warehouse", "from_bin",
               "to_warehouse", "to_bin", "lot", "memo")


def write_movements(path: str | Path, movements: Sequence[Movement]) -> Path:
    """Write ``movements`` for ``erphub push``: ``.json`` (a list), ``.jsonl`` or ``.csv``."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".csv":
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(CSV_COLUMNS)
        for m in movements:
            for line in m.lines:
                data = line.model_dump(mode="json")
                writer.writerow([m.reference, m.kind.value, m.document_date.isoformat(), data["sku"],
                                 data["quantity"], data["unit"], data.get("from_warehouse") or "",
                                 data.get("from_bin") or "", data.get("to_warehouse") or "",
                                 data.get("to_bin") or "", data.get("lot") or "", m.memo or ""])
        path.write_text(buffer.getvalue(), encoding="utf-8")
    elif suffix in (".jsonl", ".ndjson"):
        path.write_text("".join(json.dumps(payload_of(m), ensure_ascii=False) + "\n" for m in movements),
                        encoding="utf-8")
    elif suffix == ".json":
        path.write_text(json.dumps([payload_of(m) for m in movements], ensure_ascii=False, indent=2) + "\n",
                        encoding="utf-8")
    else:
        raise ValueError(f"{path.name}: write proposals as .json, .jsonl or .csv")
    return path


@dataclass(frozen=True)
class ApplyResult:
    movements: int
    new: int  # movements not stored before (the rest were already enqueued: a no-op)
    target: str


def apply(store: Any, connections: Any, movements: Sequence[Movement], target: str) -> ApplyResult:
    """Enqueue ``movements`` for ``target`` through the outbox (one durable transaction: an
    operator's accepted corrections exist nowhere else until they are delivered)."""
    from sqlalchemy import select

    from sync.store import Movement as MovementRow

    if not movements:
        return ApplyResult(0, 0, target)
    references = [m.reference for m in movements]
    with store.session(write=True, durable=True) as session:
        known = set(session.scalars(select(MovementRow.reference).where(MovementRow.reference.in_(references))))
        enqueue_many(session, movements, [target], connections=connections)
    return ApplyResult(len(movements), len(set(references) - known), target)
