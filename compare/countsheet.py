"""Physical count sheets (盘点表): CSV or Excel, every bad row reported on its line.

Columns (header names fold case, spaces, ``-`` and ``_``; Chinese names work too)::

    sku (物料编码), warehouse (仓库), bin (库位)?, lot (批号)?, counted (实盘数量, 盘点数量, 数量), unit (单位)?

The file is read with :mod:`sync.intake`'s table readers (UTF-8/GB18030 CSV, the first or named
worksheet of an .xlsx), so line numbers are the file's physical lines or worksheet rows. Codes are
canonical codes, or, with ``codes_of=CONNECTION``, that connection's codes translated through the
code map (``sync.codemap``). Problems, each with its line:

- a required cell is empty (sku, warehouse, counted quantity);
- an unknown item (not in the store's items nor in the snapshots being compared) or warehouse;
- a counted quantity that is not a number, is negative, or has more decimals than its unit allows;
- a bad unit: unknown to the unit catalog, or one the item has no conversion for;
- a duplicate row: the same sku, warehouse, bin and lot as an earlier line (both lines named).

No row is dropped silently: a row is either in ``rows`` or named in ``problems``.
"""
from __future__ import annotations

import re
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from sqlalchemy import select

from canonical import UnitCatalog, quantize
from compare.variance import ItemInfo, item_info
from sync import codemap
from sync.intake import IntakeProblem, Rows, read_rows
from sync.intake_columns import CellError, to_number_text, to_text
from sync.store import Store, Warehouse

__all__ = ["COLUMNS", "CountRow", "CountSheet", "read_count_sheet"]

COLUMNS = ("sku", "warehouse", "bin", "lot", "counted", "unit")
REQUIRED = ("sku", "warehouse", "counted")
ALIASES: dict[str, tuple[str, ...]] = {
    "sku": ("item", "item_code", "material", "material_code", "物料编码", "物料代码", "商品编码", "存货编码", "编码"),
    "warehouse": ("warehouse_code", "wh", "仓库", "仓库编码", "仓库代码"),
    "bin": ("location", "库位", "仓位", "货位"),
    "lot": ("batch", "lot_no", "batch_no", "批号", "批次"),
    "counted": ("counted_quantity", "count", "quantity", "qty", "on_hand", "实盘数量", "盘点数量", "实存数量",
                "实盘数", "数量"),
    "unit": ("uom", "单位", "计量单位"),
}
HEADER_SEARCH_ROWS = 10
_FOLD = re.compile(r"[\s_\-]+")


def _fold(name: str) -> str:
    return _FOLD.sub("", name.strip().casefold())


_BY_FOLDED = {_fold(name): column for column in COLUMNS for name in (column, *ALIASES[column])}


@dataclass(frozen=True)
class CountRow:
    line: int
    sku: str
    warehouse: str
    bin: str | None
    lot: str | None
    counted: Decimal
    unit: str


@dataclass
class CountSheet:
    """What a count sheet held: its good rows, every problem, and how it was read."""

    path: Path
    rows: list[CountRow] = field(default_factory=list)
    problems: list[IntakeProblem] = field(default_factory=list)
    lines_read: int = 0
    format: str = "csv"
    sheet: str | None = None
    encoding_note: str | None = None
    outside_scope: int = 0  # rows of warehouses outside --warehouse (counted, not compared)

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def warehouses(self) -> set[str]:
        return {row.warehouse for row in self.rows}

    def balance_rows(self) -> list[dict[str, Any]]:
        """The rows as snapshot rows (``compare.snapshots.store_rows``)."""
        return [{"sku": r.sku, "warehouse": r.warehouse, "bin": r.bin, "lot": r.lot, "on_hand": r.counted,
                 "unit": r.unit} for r in self.rows]


def _header(rows: Sequence[tuple[int, Sequence[object]]]) -> tuple[int, dict[int, str], list[IntakeProblem]]:
    """Index of the header row, column index → column, and the header's problems."""
    def mapped(cells: Sequence[object]) -> dict[int, str]:
        out = {}
        for index, cell in enumerate(cells):
            try:
                text = to_text(cell)
            except CellError:
                continue
            if text and (column := _BY_FOLDED.get(_fold(text))):
                out[index] = column
        return out

    chosen = 0
    for i, (_, cells) in enumerate(rows[:HEADER_SEARCH_ROWS]):
        if set(mapped(cells).values()).issuperset(REQUIRED):
            chosen = i
            break
    line, cells = rows[chosen]
    columns: dict[int, str] = {}
    problems: list[IntakeProblem] = []
    seen: dict[str, int] = {}
    for index, cell in enumerate(cells):
        try:
            text = to_text(cell)
        except CellError:
            text = str(cell)
        if not text:
            continue
        column = _BY_FOLDED.get(_fold(text))
        if column is None:
            problems.append(IntakeProblem(line, text, f"unknown column (known: {', '.join(COLUMNS)}; "
                                                      "Chinese names such as 物料编码, 仓库, 实盘数量 also work)"))
        elif column in seen:
            problems.append(IntakeProblem(line, text, f"names the same column ({column}) as an earlier header"))
        else:
            seen[column] = index
            columns[index] = column
    for column in REQUIRED:
        if column not in seen:
            problems.append(IntakeProblem(line, column, "required column is missing"))
    return chosen, columns, problems


def _blank(cells: Sequence[object]) -> bool:
    return all(c is None or (isinstance(c, str) and not c.strip()) for c in cells)


def read_count_sheet(
    path: str | Path,
    *,
    store: Store,
    connections: Any = None,
    codes_of: str | None = None,
    sheet: str | None = None,
    known_skus: Collection[str] = (),
    known_warehouses: Collection[str] = (),
    warehouses: Collection[str] | None = None,
    units: UnitCatalog | None = None,
) -> CountSheet:
    """Read and check a count sheet; see the module doc. ``known_skus``/``known_warehouses`` add to
    the store's items and warehouses (e.g. the codes in the snapshots compared with the sheet);
    ``warehouses`` limits the rows kept (others are counted in ``outside_scope``). ValueError for
    an unsupported file type, OSError when it cannot be opened."""
    path = Path(path)
    catalog = units or UnitCatalog.default()
    raw: Rows = read_rows(path, sheet=sheet)
    result = CountSheet(path, format=raw.format, sheet=raw.sheet, encoding_note=raw.encoding_note)
    if raw.problem is not None:
        result.problems.append(raw.problem)
        return result
    present = [(line, cells) for line, cells in raw.rows if not _blank(cells)]
    if not present:
        result.problems.append(IntakeProblem(1, "", "the file is empty (expected a header row naming the columns)"))
        return result
    index, columns, header_problems = _header(present)
    data = present[index + 1:]
    result.lines_read = len(data)
    if header_problems:
        result.problems.extend(header_problems)
        return result
    if not data:
        result.problems.append(IntakeProblem(present[index][0], "", "no count rows below the header"))
        return result

    cells_by_line: list[tuple[int, dict[str, Any], list[IntakeProblem]]] = []
    for line, cells in data:
        values: dict[str, Any] = {}
        problems: list[IntakeProblem] = []
        for position, cell in enumerate(cells):
            column = columns.get(position)
            if column is None:
                if not _blank([cell]):
                    problems.append(IntakeProblem(line, "", f"a value ({cell!s:.40}) in a column without a header"))
                continue
            try:
                value = to_number_text(cell) if column == "counted" else to_text(cell)
            except CellError as exc:
                problems.append(IntakeProblem(line, column, str(exc)))
                continue
            if value is not None:
                values[column] = value
        for column in REQUIRED:
            if column not in values and not any(p.field == column for p in problems):
                problems.append(IntakeProblem(line, column, "is required"))
        cells_by_line.append((line, values, problems))

    # codes: canonical, or a connection's codes through the code map
    skus = {v["sku"] for _, v, _ in cells_by_line if "sku" in v}
    whs = {v["warehouse"] for _, v, _ in cells_by_line if "warehouse" in v}
    sku_map: dict[str, str | None] = {s: s for s in skus}
    wh_map: dict[str, str | None] = {w: w for w in whs}
    if codes_of is not None:
        if connections is None:
            raise ValueError("codes_of needs the configured connections")
        connection_id = connections.id(codes_of)
        with store.session() as session:
            sku_map = codemap.to_canonicals(session, connection_id, "items", skus)
            wh_map = codemap.to_canonicals(session, connection_id, "warehouses", whs)
    items: dict[str, ItemInfo] = item_info(store, {c for c in sku_map.values() if c})
    known_sku_set = set(items) | set(known_skus)
    with store.session() as session:
        stored_whs = set(session.scalars(select(Warehouse.code)))
    known_wh_set = stored_whs | set(known_warehouses)

    first: dict[tuple[str, str, str | None, str | None], int] = {}
    for line, values, problems in cells_by_line:
        sku_code = values.get("sku")
        sku = sku_map.get(sku_code) if sku_code else None
        wh_code = values.get("warehouse")
        warehouse = wh_map.get(wh_code) if wh_code else None
        if sku_code and sku is None:
            problems.append(IntakeProblem(line, "sku", f"{sku_code!r}: the code map of {codes_of} has no canonical "
                                                       "code for it"))
        elif sku and sku not in known_sku_set:
            problems.append(IntakeProblem(line, "sku", f"unknown item {sku!r}" + (
                f" (code {sku_code!r} of {codes_of})" if sku != sku_code else "")))
        if wh_code and warehouse is None:
            problems.append(IntakeProblem(line, "warehouse", f"{wh_code!r}: the code map of {codes_of} has no "
                                                             "canonical code for it"))
        elif warehouse and known_wh_set and warehouse not in known_wh_set:
            problems.append(IntakeProblem(line, "warehouse", f"unknown warehouse {warehouse!r}"))
        item = items.get(sku) if sku else None
        unit = (values.get("unit") or "").upper() or (item.base_unit if item is not None else None)
        if values.get("unit") and unit not in catalog:
            problems.append(IntakeProblem(line, "unit", f"unknown unit {values['unit']!r}"))
        elif unit and item is not None and item.factor(unit) is None:
            problems.append(IntakeProblem(line, "unit", f"item {sku!r} is kept in {item.base_unit} and has no "
                                                        f"conversion for {unit}"))
        elif unit is None and sku in known_sku_set:
            problems.append(IntakeProblem(line, "unit", f"is required: item {sku!r} is not in the store, so its "
                                                        "unit is not known"))
        counted: Decimal | None = None
        text = values.get("counted")
        if text is not None:
            try:
                counted = Decimal(text.replace(",", "")) if isinstance(text, str) else Decimal(text)
                if not counted.is_finite():
                    raise InvalidOperation
            except InvalidOperation:
                counted = None
                problems.append(IntakeProblem(line, "counted", f"{text!r} is not a number"))
            else:
                precision = catalog.get(unit) if unit else None
                if counted < 0:
                    problems.append(IntakeProblem(line, "counted", f"{text} is negative; a count is 0 or more"))
                elif precision is not None and counted != quantize(counted, precision):
                    problems.append(IntakeProblem(line, "counted", f"{text} has more decimals than {unit} allows "
                                                                   f"({precision.precision})"))
        bin_code, lot = values.get("bin"), values.get("lot")
        if sku and warehouse:
            key = (sku, warehouse, bin_code, lot)
            if key in first:
                where = " ".join(filter(None, (sku, "in", warehouse, bin_code and f"bin {bin_code}",
                                               lot and f"lot {lot}")))
                problems.append(IntakeProblem(line, "", f"duplicate row: {where} is already counted on line "
                                                        f"{first[key]}; count each place once"))
            else:
                first[key] = line
        if problems:
            result.problems.extend(problems)
            continue
        assert sku and warehouse and unit and counted is not None
        if warehouses is not None and warehouse not in warehouses:
            result.outside_scope += 1
            continue
        result.rows.append(CountRow(line, sku, warehouse, bin_code, lot, counted, unit))
    result.problems.sort(key=lambda p: p.line)
    return result
