"""Variance: where two or more balance snapshots disagree, and why (DESIGN.md §6).

>>> result = reconcile_snapshots(store, [kd_snapshot, ref_snapshot], tolerance=Tolerance.parse("1%"))
>>> result.match_rate, result.counts, result.value_at_stake
>>> for row in result.variances: print(row.sku, row.warehouse, row.cls, row.explanation)

How it works (data-diff's rule: normalise before comparing):

1. **load** each snapshot into DuckDB (:func:`compare.snapshots.load_into_duckdb`): codes trimmed,
   units upper-case, quantities exact ``DECIMAL(38,12)``;
2. **align** rows on the canonical key, ``sku + warehouse`` (``by_location`` adds bin and lot),
   summing a side's rows per key (bins, lots); snapshots of systems are already in canonical codes
   (``pull_balances`` translated them), count sheets are translated when read;
3. **full outer join** the sides in DuckDB and fetch only the rows that are not exactly equal
   (same quantity, same unit, present everywhere): a superset of the differences;
4. **classify** those rows in Python with exact ``Decimal`` arithmetic: each side's quantity is
   converted to the item's base unit (the conversions on the store's ``item`` payloads) and
   quantised to that unit's precision (``canonical.quantize``), then compared with the tolerance.

Classes (:class:`VarianceClass`), judged against the **reference** side (the first snapshot, or
the count sheet):

- ``match``: equal after normalising, or within tolerance; a row of 0 on one side and no row on
  the other is a match too (many systems do not report empty positions);
- ``in_flight``: the difference is fully explained by movements not yet in the lagging system:
  outbox rows toward it that are pending, sending or ambiguous, or sent after its snapshot was
  taken (not yet pulled from it). The movements are named (reference, kind, status);
- ``missing``: no row on a side while another side has stock;
- ``quantity_mismatch``: both present, quantities differ beyond tolerance;
- ``unit_mismatch``: a side's unit cannot be converted to the item's base unit (no conversion is
  known), so the quantities cannot be compared.

A difference partly explained by movements in flight keeps its class (missing or mismatch) and
shows the explained part; the rest is the *unexplained* difference. The **match rate**
(账实相符率) is matching rows / all rows; the **value at stake** is Σ |unexplained difference| ×
unit cost over the rows that disagree, the unit cost being the item's ``standard_cost`` or else
the snapshot's ``unit_cost`` (rows with neither are counted as "no cost").
"""
from __future__ import annotations

import re
import time
from collections import defaultdict
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal, InvalidOperation
from enum import StrEnum
from typing import Any

from sqlalchemy import and_, or_, select

from canonical import Movement, UnitCatalog, quantize
from compare.snapshots import SnapshotInfo, load_into_duckdb, snapshot_info
from sync.store import Item, Outbox, OutboxStatus, Store, utcnow
from sync.store import Movement as MovementRow

__all__ = [
    "ItemInfo",
    "InFlight",
    "Reconciliation",
    "Side",
    "SideQuantity",
    "Tolerance",
    "Variance",
    "VarianceClass",
    "item_info",
    "reconcile_snapshots",
]

ZERO = Decimal(0)
#: Outbox statuses whose movement has not (knowingly) reached its target yet.
IN_FLIGHT_STATUSES = (OutboxStatus.PENDING, OutboxStatus.SENDING, OutboxStatus.AMBIGUOUS)


class VarianceClass(StrEnum):
    MATCH = "match"
    IN_FLIGHT = "in_flight"
    MISSING = "missing"
    QUANTITY_MISMATCH = "quantity_mismatch"
    UNIT_MISMATCH = "unit_mismatch"

    @property
    def agrees(self) -> bool:
        return self is VarianceClass.MATCH

    @property
    def is_error(self) -> bool:
        """A difference someone must look at (in flight is not one: it will settle by itself)."""
        return self in (VarianceClass.MISSING, VarianceClass.QUANTITY_MISMATCH, VarianceClass.UNIT_MISMATCH)


# Order in reports: the ones to act on first.
CLASS_ORDER = (VarianceClass.UNIT_MISMATCH, VarianceClass.MISSING, VarianceClass.QUANTITY_MISMATCH,
               VarianceClass.IN_FLIGHT, VarianceClass.MATCH)


@dataclass(frozen=True)
class Tolerance:
    """How far apart two quantities may be and still agree: ``absolute`` base units and/or
    ``percent`` of the reference quantity. A difference within *either* tolerance given agrees."""

    absolute: Decimal = ZERO
    percent: Decimal = ZERO

    def __post_init__(self) -> None:
        if self.absolute < 0 or self.percent < 0:
            raise ValueError("a tolerance cannot be negative")

    @classmethod
    def parse(cls, text: str | None) -> Tolerance:
        """``"0.5"`` (absolute), ``"1%"`` (percent), or both: ``"0.5,1%"``. ValueError otherwise."""
        if text is None or not text.strip():
            return cls()
        absolute, percent = ZERO, ZERO
        for part in re.split(r"[,\s]+", text.strip()):
            if not part:
                continue
            is_percent = part.endswith("%")
            number = part[:-1] if is_percent else part
            try:
                value = Decimal(number)
            except InvalidOperation:
                raise ValueError(f"tolerance {part!r} is not a number (write 0.5 for units, 1% for percent, "
                                 "or both: 0.5,1%)") from None
            if not value.is_finite() or value < 0:
                raise ValueError(f"tolerance {part!r} must be a number ≥ 0")
            if is_percent:
                percent = value
            else:
                absolute = value
        return cls(absolute, percent)

    def allows(self, difference: Decimal, reference: Decimal) -> bool:
        gap = abs(difference)
        if gap == 0:
            return True
        return gap <= self.absolute or gap * 100 <= self.percent * abs(reference)

    def __str__(self) -> str:
        parts = []
        if self.absolute:
            parts.append(f"±{_text(self.absolute)}")
        if self.percent:
            parts.append(f"±{_text(self.percent)}%")
        return " or ".join(parts) if parts else "exact"


@dataclass(frozen=True)
class Side:
    """One compared snapshot: a system (``connection``) or a count sheet."""

    label: str
    snapshot_id: int
    taken_at: datetime
    rows: int
    connection: str | None = None

    @property
    def kind(self) -> str:
        return "system" if self.connection else "count sheet"


@dataclass(frozen=True)
class SideQuantity:
    """What one side says for one key: in the base unit (``quantity``) and as reported."""

    quantity: Decimal | None  # None: no row, or a unit that cannot be converted
    reported: Decimal | None
    unit: str | None  # the reported unit ("BOX+PCS" when a side mixes units on one key)
    present: bool = True


@dataclass(frozen=True)
class InFlight:
    """A movement not yet in ``side``'s snapshot, and what it does to this key there (base unit)."""

    reference: str
    kind: str
    side: str
    quantity: Decimal
    status: str


@dataclass(frozen=True)
class Variance:
    """One item-warehouse row that was not exactly equal everywhere: the drill-down line.

    ``labels`` names the sides (shared by every row); ``worst`` is the side whose difference
    from the ``reference`` side is shown. ``explanation`` is written from these facts on demand.
    """

    sku: str
    warehouse: str
    bin: str | None
    lot: str | None
    cls: VarianceClass
    base_unit: str | None
    sides: tuple[SideQuantity, ...]
    difference: Decimal | None  # the largest side − reference, base unit
    explained: Decimal = ZERO  # the part of ``difference`` movements in flight explain
    unit_cost: Decimal | None = None
    value_at_stake: Decimal | None = None
    in_flight: tuple[InFlight, ...] = ()
    missing_on: tuple[str, ...] = ()
    within_tolerance: bool = False
    labels: tuple[str, ...] = ()
    reference: int = 0
    worst: int = 1
    tolerance: str = "exact"
    unit_problems: tuple[str, ...] = ()
    item_known: bool = True

    @property
    def unexplained(self) -> Decimal | None:
        return None if self.difference is None else self.difference - self.explained

    @property
    def explanation(self) -> str:
        unit = f" {self.base_unit}" if self.base_unit else ""
        listing = "; ".join(f"{m.reference} ({m.kind}, {m.status}, {_signed(m.quantity)} in {m.side})"
                            for m in self.in_flight)
        cls = self.cls
        if cls is VarianceClass.UNIT_MISMATCH:
            what = (f"item {self.sku} (base unit {self.base_unit}) has no conversion for it" if self.item_known
                    else f"item {self.sku} is not in the store and the sides use different units")
            return f"{'; '.join(self.unit_problems)}: {what}"
        if cls is VarianceClass.MATCH:
            if self.within_tolerance:
                return f"within tolerance {self.tolerance} (difference {_signed(self.difference or ZERO)}{unit})"
            if self.missing_on:
                return f"0 on hand; no row in {', '.join(self.missing_on)}"
            return "equal after converting to the base unit"
        difference = self.difference or ZERO
        if cls is VarianceClass.IN_FLIGHT:
            return f"{_signed(difference)}{unit} explained by movements in flight: {listing}"
        if cls is VarianceClass.MISSING:
            holders = [f"{label} {_text(side.quantity)}" for label, side in zip(self.labels, self.sides)
                       if side.present]
            why = f"no row in {', '.join(self.missing_on)} ({', '.join(holders)}{unit})"
        else:
            worst, ref = self.sides[self.worst], self.sides[self.reference]
            why = (f"{self.labels[self.worst]} {_text(worst.quantity)} vs {self.labels[self.reference]} "
                   f"{_text(ref.quantity)}{unit}: {_signed(difference)}")
        if self.in_flight and self.explained:
            why += (f"; {_signed(self.explained)} explained by movements in flight ({listing}), "
                    f"{_signed(difference - self.explained)} unexplained")
        return why


@dataclass
class Reconciliation:
    """The plain result every renderer consumes (``compare.reconcile_report``)."""

    sides: tuple[Side, ...]
    reference: int
    tolerance: Tolerance
    by_location: bool
    warehouses: tuple[str, ...] | None
    total_rows: int
    counts: dict[VarianceClass, int]
    variances: list[Variance]
    value_at_stake: Decimal
    rows_without_cost: int
    created_at: datetime = field(default_factory=utcnow)
    timings: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # count sheet rows left out (with --partial)

    @property
    def reference_side(self) -> Side:
        return self.sides[self.reference]

    @property
    def matched(self) -> int:
        return self.counts.get(VarianceClass.MATCH, 0)

    @property
    def match_rate(self) -> float:
        """账实相符率: share of item-warehouse rows that agree (1.0 for nothing to compare)."""
        return self.matched / self.total_rows if self.total_rows else 1.0

    @property
    def match_rate_with_in_flight(self) -> float:
        agreed = self.matched + self.counts.get(VarianceClass.IN_FLIGHT, 0)
        return agreed / self.total_rows if self.total_rows else 1.0

    @property
    def errors(self) -> int:
        return sum(n for cls, n in self.counts.items() if cls.is_error)

    def value_by_class(self) -> dict[VarianceClass, Decimal]:
        out: dict[VarianceClass, Decimal] = defaultdict(Decimal)
        for row in self.variances:
            if row.value_at_stake:
                out[row.cls] += row.value_at_stake
        return dict(out)


# --- items -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ItemInfo:
    """What the engine needs of an item: its base unit, conversions (1 unit = factor base units)
    and standard cost."""

    sku: str
    base_unit: str
    factors: Mapping[str, Decimal]
    standard_cost: Decimal | None = None

    def factor(self, unit: str) -> Decimal | None:
        return Decimal(1) if unit == self.base_unit else self.factors.get(unit)


def item_info(store: Store, skus: Collection[str]) -> dict[str, ItemInfo]:
    """The stored items among ``skus`` (canonical codes), read from their payloads."""
    out: dict[str, ItemInfo] = {}
    wanted = sorted(set(skus))
    with store.session() as session:
        for start in range(0, len(wanted), 500):
            for sku, payload in session.execute(select(Item.sku, Item.payload)
                                                .where(Item.sku.in_(wanted[start:start + 500]))):
                out[sku] = _item_from_payload(sku, payload or {})
    return out


def _item_from_payload(sku: str, payload: Mapping[str, Any]) -> ItemInfo:
    base = str(payload.get("base_unit") or "PCS").strip().upper()
    factors: dict[str, Decimal] = {}
    for conv in payload.get("conversions") or ():
        try:
            factors[str(conv["unit"]).strip().upper()] = Decimal(str(conv["factor"]))
        except (KeyError, TypeError, InvalidOperation):
            continue
    cost = payload.get("standard_cost")
    try:
        standard_cost = Decimal(str(cost)) if cost is not None else None
    except InvalidOperation:
        standard_cost = None
    return ItemInfo(sku, base, factors, standard_cost)


# --- the engine --------------------------------------------------------------------------------


def reconcile_snapshots(
    store: Store,
    snapshot_ids: Sequence[int],
    *,
    tolerance: Tolerance | None = None,
    warehouses: Collection[str] | None = None,
    by_location: bool = False,
    reference: int = 0,
    in_flight: bool = True,
    units: UnitCatalog | None = None,
    threads: int | None = None,
) -> Reconciliation:
    """Compare stored snapshots (two or more) and classify every difference; see the module doc.

    ``reference`` is the index of the side the others are judged against; ``warehouses`` limits
    the comparison; ``in_flight=False`` skips the outbox explanation.
    """
    import duckdb

    if len(snapshot_ids) < 2:
        raise ValueError("a reconciliation needs at least two snapshots")
    if not 0 <= reference < len(snapshot_ids):
        raise ValueError(f"reference must index one of the {len(snapshot_ids)} snapshots")
    tolerance = tolerance or Tolerance()
    catalog = units or UnitCatalog.default()
    infos = snapshot_info(store, snapshot_ids)
    timings: dict[str, float] = {}
    started = time.perf_counter()
    duck = duckdb.connect()
    try:
        if threads:
            duck.execute(f"SET threads = {int(threads)}")
        for i, info in enumerate(infos):
            load_into_duckdb(store, info.id, duck, f"raw{i}", warehouses=warehouses)
        timings["load"] = time.perf_counter() - started
        mark = time.perf_counter()
        keys = ("sku", "warehouse", "bin", "lot") if by_location else ("sku", "warehouse")
        n_ref, rows, mixed = _differing_rows(duck, len(infos), keys, reference)
        timings["align"] = time.perf_counter() - mark
        mark = time.perf_counter()
        sides = tuple(Side(info.label, info.id, info.taken_at, info.row_count, info.connection) for info in infos)
        mixed_rows = _mixed_rows(duck, mixed, keys) if mixed else {}
    finally:
        duck.close()
    result = _classify(store, sides, infos, rows, mixed_rows, n_ref, keys, reference=reference,
                       tolerance=tolerance, catalog=catalog, explain=in_flight)
    result.warehouses = tuple(sorted(warehouses)) if warehouses is not None else None
    timings["classify"] = time.perf_counter() - mark
    timings["total"] = time.perf_counter() - started
    result.timings = timings
    return result


def _differing_rows(duck: Any, n: int, keys: tuple[str, ...], reference: int
                    ) -> tuple[int, list[tuple[Any, ...]], dict[int, set[tuple[str, ...]]]]:
    """Aggregate each side per key, full-outer-join them, and fetch the rows that are not exactly
    equal everywhere. Returns the reference side's key count, the rows (keys, then per side:
    present, quantity, unit, mixed, unit cost) and the keys whose units are mixed per side."""
    key_list = ", ".join(keys)
    for i in range(n):
        duck.execute(f"CREATE OR REPLACE TEMP TABLE agg{i} AS SELECT {key_list}, TRUE AS p{i}, SUM(qty) AS q{i}, "
                     f"min(unit) AS u{i}, min(unit) <> max(unit) AS m{i}, max(unit_cost) AS c{i} "
                     f"FROM raw{i} GROUP BY {key_list}")
    joined = "agg0" + "".join(f" FULL OUTER JOIN agg{i} USING ({key_list})" for i in range(1, n))
    equal = " AND ".join(
        [f"p{i}" for i in range(n)] + [f"NOT m{i}" for i in range(n)]
        + [f"q{i} = q{reference}" for i in range(n) if i != reference]
        + [f"u{i} = u{reference}" for i in range(n) if i != reference])
    per_side = ", ".join(f"p{i}, q{i}, u{i}, m{i}, c{i}" for i in range(n))
    rows = duck.execute(f"SELECT {key_list}, {per_side} FROM {joined} WHERE NOT coalesce({equal}, FALSE)").fetchall()
    n_ref = int(duck.execute(f"SELECT count(*) FROM agg{reference}").fetchone()[0])
    width = len(keys)
    mixed: dict[int, set[tuple[str, ...]]] = defaultdict(set)
    for row in rows:
        for i in range(n):
            if row[width + 5 * i + 3]:
                mixed[i].add(tuple(row[:width]))
    return n_ref, rows, mixed


def _mixed_rows(duck: Any, mixed: dict[int, set[tuple[str, ...]]], keys: tuple[str, ...]
                ) -> dict[tuple[int, tuple[str, ...]], list[tuple[Decimal, str]]]:
    """The raw (quantity, unit) rows of keys a side reports in more than one unit."""
    out: dict[tuple[int, tuple[str, ...]], list[tuple[Decimal, str]]] = defaultdict(list)
    key_list = ", ".join(keys)
    for side, wanted in mixed.items():
        duck.execute(f"CREATE OR REPLACE TEMP TABLE mixed_keys ({', '.join(f'{k} VARCHAR' for k in keys)})")
        duck.executemany(f"INSERT INTO mixed_keys VALUES ({', '.join('?' for _ in keys)})", [list(k) for k in wanted])
        for row in duck.execute(f"SELECT {key_list}, qty, unit FROM raw{side} JOIN mixed_keys USING ({key_list})"
                                ).fetchall():
            out[(side, tuple(row[:len(keys)]))].append((row[-2], row[-1]))
    return out


# --- in flight ---------------------------------------------------------------------------------


def _in_flight(store: Store, sides: Sequence[Side], infos: Sequence[SnapshotInfo], wanted: set[tuple[str, ...]],
               by_location: bool, items: Mapping[str, ItemInfo], catalog: UnitCatalog, notes: list[str]
               ) -> dict[tuple[int, tuple[str, ...]], list[InFlight]]:
    """Movements not yet in each system's snapshot, per (side, key) among ``wanted``."""
    from sync.store import Connection

    by_connection: dict[str, list[int]] = defaultdict(list)
    for i, side in enumerate(sides):
        if side.connection:
            by_connection[side.connection].append(i)
    if not by_connection or not wanted:
        return {}
    earliest = min(infos[i].taken_at for indices in by_connection.values() for i in indices)
    out: dict[tuple[int, tuple[str, ...]], list[InFlight]] = defaultdict(list)
    parsed: dict[int, Movement | None] = {}
    skipped = 0
    with store.session() as session:
        ids = dict(session.execute(select(Connection.name, Connection.id)
                                   .where(Connection.name.in_(list(by_connection)))).all())
        if not ids:
            return {}
        query = (select(Outbox.target_connection_id, Outbox.status, Outbox.sent_at, MovementRow.id,
                        MovementRow.payload)
                 .join(MovementRow, MovementRow.id == Outbox.movement_id)
                 .where(Outbox.target_connection_id.in_(list(ids.values())),
                        or_(Outbox.status.in_([s.value for s in IN_FLIGHT_STATUSES]),
                            and_(Outbox.status == OutboxStatus.SENT, Outbox.sent_at > earliest)))
                 .order_by(Outbox.id))
        names = {v: k for k, v in ids.items()}
        for target_id, status, sent_at, movement_id, payload in session.execute(query):
            if movement_id not in parsed:
                try:
                    parsed[movement_id] = Movement.model_validate(payload, context={"units": catalog})
                except ValueError:
                    parsed[movement_id] = None
                    skipped += 1
            movement = parsed[movement_id]
            if movement is None:
                continue
            for i in by_connection[names[target_id]]:
                if status == OutboxStatus.SENT and sent_at is not None and sent_at <= infos[i].taken_at:
                    continue  # delivered before this snapshot was taken: already in it
                shown = status if status != OutboxStatus.SENT else "sent after the snapshot"
                for delta in movement.stock_deltas():
                    key = ((delta.sku, delta.warehouse, delta.bin or "", delta.lot or "") if by_location
                           else (delta.sku, delta.warehouse))
                    if key not in wanted:
                        continue
                    item = items.get(delta.sku)
                    unit = delta.unit.upper()
                    quantity = _to_base(delta.quantity, unit, item, catalog, unit)
                    if quantity is None:
                        notes.append(f"movement {movement.reference}: {delta.unit} of {delta.sku} cannot be "
                                     "converted to its base unit; left out of the in-flight explanation")
                        continue
                    out[(i, key)].append(InFlight(movement.reference, movement.kind.value, sides[i].label,
                                                  quantity, str(shown)))
    if skipped:
        notes.append(f"{skipped} movement(s) in the outbox could not be read and were not used to explain "
                     "differences")
    return out


# --- classification ----------------------------------------------------------------------------


def _to_base(quantity: Decimal, unit: str, item: ItemInfo | None, catalog: UnitCatalog,
             base_unit: str | None = None) -> Decimal | None:
    """``quantity`` in the item's base unit, quantised to its precision; None when not convertible."""
    base = item.base_unit if item is not None else base_unit
    if base is None:
        return None  # an unknown item whose sides use different units: nothing to convert to
    if unit == base:
        return quantity
    factor = item.factor(unit) if item is not None else None
    if factor is None:
        return None
    converted = quantity * factor
    precision = catalog.get(base)
    return quantize(converted, precision) if precision is not None else converted


def _text(value: Decimal | None) -> str:
    """A quantity as plain digits without trailing zeros (``5.000000000000`` → ``5``)."""
    if value is None:
        return "—"
    if not value:
        return "0"
    return format(value.normalize(), "f")


def _signed(value: Decimal) -> str:
    return ("+" if value > 0 else "") + _text(value)


def _classify(store: Store, sides: tuple[Side, ...], infos: Sequence[SnapshotInfo], rows: list[tuple[Any, ...]],
              mixed_rows: Mapping[tuple[int, tuple[str, ...]], list[tuple[Decimal, str]]], n_ref: int,
              keys: tuple[str, ...], *, reference: int, tolerance: Tolerance, catalog: UnitCatalog,
              explain: bool) -> Reconciliation:
    n = len(sides)
    width = len(keys)
    by_location = width == 4
    items = item_info(store, {row[0] for row in rows}) if rows else {}
    notes: list[str] = []
    flights: dict[tuple[int, tuple[str, ...]], list[InFlight]] = {}
    if explain and rows and any(side.connection for side in sides):
        wanted = {tuple(row[:width]) for row in rows}
        flights = _in_flight(store, sides, infos, wanted, by_location, items, catalog, notes)
    missing_ref = 0
    counts: dict[VarianceClass, int] = defaultdict(int)
    variances: list[Variance] = []
    total_value = ZERO
    no_cost = 0
    labels = tuple(side.label for side in sides)
    no_moves: list[tuple[InFlight, ...]] = [()] * n
    no_pending = [ZERO] * n
    tolerance_text = str(tolerance)
    for row in rows:
        key = tuple(row[:width])
        sku = key[0]
        item = items.get(sku)
        if not row[width + 5 * reference]:
            missing_ref += 1
        reported: list[SideQuantity] = []
        base_unit = item.base_unit if item is not None else None
        if base_unit is None:
            used = {row[width + 5 * i + 2] for i in range(n) if row[width + 5 * i] and not row[width + 5 * i + 3]}
            base_unit = used.pop() if len(used) == 1 else None
        bad_units: list[str] = []
        costs: list[Decimal | None] = []
        values: list[Decimal | None] = []
        for i in range(n):
            at = width + 5 * i
            present, qty, unit, is_mixed, cost = row[at:at + 5]
            costs.append(cost)
            if not present:
                reported.append(SideQuantity(None, None, None, present=False))
                values.append(None)
                continue
            if is_mixed:
                parts = mixed_rows.get((i, key), [])
                total: Decimal | None = ZERO
                for part_qty, part_unit in parts:
                    converted = _to_base(part_qty, part_unit, item, catalog, base_unit)
                    if converted is None or base_unit is None:
                        total = None
                        bad_units.append(f"{sides[i].label} reports {part_unit}")
                        break
                    total += converted  # type: ignore[operator]
                shown_unit = "+".join(sorted({u for _, u in parts}))
                reported.append(SideQuantity(total, qty, shown_unit))
                values.append(total)
                continue
            converted = _to_base(qty, unit, item, catalog, base_unit)
            if converted is None:
                bad_units.append(f"{sides[i].label} reports {unit}")
            reported.append(SideQuantity(converted, qty, unit))
            values.append(converted)
        cost = item.standard_cost if item is not None and item.standard_cost is not None else (
            costs[reference] if costs[reference] is not None else next((c for c in costs if c is not None), None))
        loc = (key[2] or None, key[3] or None) if by_location else (None, None)
        missing_on = tuple(sides[i].label for i in range(n) if not reported[i].present)

        common = {"labels": labels, "reference": reference, "tolerance": tolerance_text, "missing_on": missing_on,
                  "unit_cost": cost, "item_known": item is not None}
        if bad_units:
            variances.append(Variance(sku, key[1], *loc, VarianceClass.UNIT_MISMATCH, base_unit, tuple(reported),
                                      None, unit_problems=tuple(bad_units), **common))
            counts[VarianceClass.UNIT_MISMATCH] += 1
            continue

        q = [v if v is not None else ZERO for v in values]
        ref_q = q[reference]
        diffs = [q[i] - ref_q for i in range(n)]
        if all(tolerance.allows(d, ref_q) for d in diffs):
            exact = all(d == 0 for d in diffs)
            variances.append(Variance(sku, key[1], *loc, VarianceClass.MATCH, base_unit, tuple(reported),
                                      max(diffs, key=abs), value_at_stake=ZERO, within_tolerance=not exact,
                                      **common))
            counts[VarianceClass.MATCH] += 1
            continue

        if flights:
            moving = [flights.get((i, key), ()) for i in range(n)]
            pending = [sum((m.quantity for m in group), ZERO) for group in moving]
        else:
            moving, pending = no_moves, no_pending
        after_ref = ref_q + pending[reference]
        after = [q[i] + pending[i] - after_ref for i in range(n)]
        worst = max((i for i in range(n) if i != reference), key=lambda i: (abs(after[i]), abs(diffs[i])))
        difference = diffs[worst]
        explained = difference - after[worst]
        named = tuple(m for group in moving for m in group)
        if named and all(tolerance.allows(a, after_ref) for a in after):
            variances.append(Variance(sku, key[1], *loc, VarianceClass.IN_FLIGHT, base_unit, tuple(reported),
                                      difference, explained=difference, value_at_stake=ZERO, in_flight=named,
                                      worst=worst, **common))
            counts[VarianceClass.IN_FLIGHT] += 1
            continue

        cls = VarianceClass.MISSING if missing_on else VarianceClass.QUANTITY_MISMATCH
        value = abs(after[worst]) * cost if cost is not None else None
        if value is None:
            no_cost += 1
        else:
            total_value += value
        variances.append(Variance(sku, key[1], *loc, cls, base_unit, tuple(reported), difference,
                                  explained=explained if named else ZERO, value_at_stake=value, in_flight=named,
                                  worst=worst, **common))
        counts[cls] += 1

    total_rows = n_ref + missing_ref
    differing = sum(counts.values())
    counts[VarianceClass.MATCH] += total_rows - differing
    order = {cls: i for i, cls in enumerate(CLASS_ORDER)}
    variances.sort(key=lambda v: (order[v.cls], -(v.value_at_stake or ZERO), v.sku, v.warehouse,
                                  v.bin or "", v.lot or ""))
    return Reconciliation(
        sides=sides, reference=reference, tolerance=tolerance, by_location=by_location, warehouses=None,
        total_rows=total_rows, counts={cls: counts.get(cls, 0) for cls in CLASS_ORDER}, variances=variances,
        value_at_stake=total_value, rows_without_cost=no_cost, notes=notes)

