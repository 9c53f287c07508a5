"""Rows of a table (CSV or a worksheet) → movements, with every problem on its line.

One row is one movement line; rows with the same ``reference`` form one movement, its lines
numbered in file order. The header fields (kind, dates, counterparty, memo) must agree across a
movement's rows; a blank header cell on a row means "the same as the other rows" (so sheets
with merged cells and exports that fill the header only on a document's first row both work).

Domain rules come from canonical validation; its problems are moved back onto the row and
column they are about (``lines[2].quantity`` → the third row of that movement, ``quantity``).
A movement with any bad row is rejected whole, and its other rows are named as rejected with it.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import tzinfo
from decimal import Decimal, InvalidOperation
from typing import Any

from canonical import Movement, MovementKind, RecordInvalid, UnitCatalog, parse
from sync.intake_columns import (
    COLUMNS,
    HEADER_FIELDS,
    REQUIRED,
    CellError,
    column_for,
    to_date,
    to_datetime,
    to_kind,
    to_number_text,
    to_role,
    to_text,
)

__all__ = ["NAIVE_TIME_MESSAGE", "Table", "read_table"]

# How many non-blank rows may stand above the header (a title such as "采购入库单导入").
HEADER_SEARCH_ROWS = 10
NAIVE_TIME_MESSAGE = ("has no UTC offset and no time zone was declared; write the offset (e.g. +08:00) "
                      "or declare the zone the times were written in (--timezone)")


@dataclass
class Table:
    """What :func:`read_table` found. ``problems`` are ``(line, field, message, reference)``."""

    movements: list[Movement] = field(default_factory=list)
    lines: dict[str, tuple[int, ...]] = field(default_factory=dict)
    problems: list[tuple[int, str, str, str | None]] = field(default_factory=list)
    rows_read: int = 0
    rows_rejected: int = 0
    rejected: list[str] = field(default_factory=list)
    header_line: int | None = None
    skipped_above_header: int = 0  # non-blank rows above the header (a title), not read as data
    naive_times: int = 0


@dataclass
class _Row:
    line: int
    header: dict[str, Any] = field(default_factory=dict)
    values: dict[str, Any] = field(default_factory=dict)
    problems: dict[str, str] = field(default_factory=dict)  # field → message ("" for the row)

    def problem(self, name: str, message: str) -> None:
        self.problems.setdefault(name, message)


def _column_label(index: int) -> str:
    """Spreadsheet letters for a 0-based column index: 0 → A, 26 → AA."""
    label, n = "", index + 1
    while n:
        n, rem = divmod(n - 1, 26)
        label = chr(65 + rem) + label
    return label


def _is_blank(cells: Sequence[object]) -> bool:
    return all(c is None or (isinstance(c, str) and not c.strip()) for c in cells)


def _map_header(cells: Sequence[object]) -> tuple[dict[int, str], list[tuple[str, str]]]:
    """Column index → canonical column, and the header's problems (field, message)."""
    columns: dict[int, str] = {}
    problems: list[tuple[str, str]] = []
    seen: dict[str, str] = {}
    for index, cell in enumerate(cells):
        try:
            name = to_text(cell)
        except CellError:
            name = str(cell)
        if name is None:
            continue
        column = column_for(name)
        if column is None:
            problems.append((name, f"unknown column in column {_column_label(index)} "
                                   f"(known: {', '.join(COLUMNS)}; Chinese names such as 单号, 数量 also work)"))
        elif column in seen:
            problems.append((name, f"names the same column ({column}) as {seen[column]!r}"))
        else:
            seen[column] = name
            columns[index] = column
    for column in REQUIRED:
        if column not in seen:
            problems.append((column, "required column is missing"))
    return columns, problems


def _find_header(rows: list[tuple[int, Sequence[object]]]) -> int | None:
    """Index in ``rows`` of the header: the first row naming every required column, searched among
    the first few rows; else the first row (whose problems are then reported)."""
    for i, (_, cells) in enumerate(rows[:HEADER_SEARCH_ROWS]):
        names = set()
        for cell in cells:
            try:
                text = to_text(cell)
            except CellError:
                continue
            if text and (column := column_for(text)):
                names.add(column)
        if names.issuperset(REQUIRED):
            return i
    return 0 if rows else None


_CONVERT = {
    "reference": to_text, "kind": to_kind, "document_date": to_date, "posted_at": to_datetime,
    "counterparty_code": to_text, "counterparty_name": to_text, "counterparty_role": to_role, "memo": to_text,
    "quantity": to_number_text, "unit_cost": to_number_text,
}  # fmt: skip


def _read_row(line: int, cells: Sequence[object], columns: dict[int, str]) -> _Row:
    row = _Row(line)
    for index, cell in enumerate(cells):
        column = columns.get(index)
        if column is None:
            if not _is_blank([cell]):
                row.problem("", f"column {_column_label(index)} has a value ({cell!s:.40}) but no header")
            continue
        if _is_blank([cell]):
            continue
        try:
            value = _CONVERT.get(column, to_text)(cell)
        except CellError as exc:
            row.problem(column, str(exc))
            continue
        if value is None:
            continue
        (row.header if column in HEADER_FIELDS else row.values)[column] = value
    if "reference" not in row.header and "reference" not in row.problems:
        row.problem("reference", "is required (rows with the same reference form one movement)")
    return row


def _shown(value: object) -> str:
    if isinstance(value, MovementKind):
        return repr(value.value)
    if hasattr(value, "isoformat"):
        return repr(value.isoformat())
    return repr(str(value))


@dataclass
class _Group:
    reference: str
    rows: list[_Row]
    header: dict[str, Any] = field(default_factory=dict)
    header_line: dict[str, int] = field(default_factory=dict)
    extra: list[tuple[int, str, str]] = field(default_factory=list)  # problems found building the movement

    def first_line(self) -> int:
        return self.rows[0].line


def _agree(group: _Group) -> None:
    """Each header field takes its value from the first row giving one; a later row giving another
    value is a problem on that row naming both lines."""
    for row in group.rows:
        for name, value in row.header.items():
            if name not in group.header:
                group.header[name] = value
                group.header_line[name] = row.line
            elif value != group.header[name]:
                row.problem(name, f"{_shown(value)} disagrees with line {group.header_line[name]} "
                                  f"({_shown(group.header[name])}) for reference {group.reference!r}")


def _place_sideless(group: _Group) -> None:
    """Move ``warehouse``/``bin`` to the side the movement's kind uses."""
    kind = group.header.get("kind")
    for row in group.rows:
        for name in ("warehouse", "bin"):
            if name not in row.values:
                continue
            value = row.values.pop(name)
            if not isinstance(kind, MovementKind):
                continue  # the kind is missing or bad, and reported
            if kind.direction == "transfer":
                row.problem(name, f"a transfer needs from_{name} and to_{name} columns, not {name}")
                continue
            target = f"{'to' if kind.direction == 'in' else 'from'}_{name}"
            if target in row.values and row.values[target] != value:
                row.problem(name, f"{value!r} disagrees with {target} {row.values[target]!r} on the same row")
                continue
            row.values[target] = value


def _number_key(text: str | None) -> object:
    if text is None:
        return None
    try:
        return Decimal(text).normalize()
    except (InvalidOperation, ValueError):
        return text


def _duplicates(group: _Group) -> None:
    first: dict[tuple[object, ...], int] = {}
    for row in group.rows:
        v = row.values
        key = (v.get("sku"), _number_key(v.get("quantity")), (v.get("unit") or "").upper(), v.get("from_warehouse"),
               v.get("from_bin"), v.get("to_warehouse"), v.get("to_bin"), v.get("lot"), _number_key(v.get("unit_cost")))
        if key in first:
            row.problem("", f"duplicate of line {first[key]} in reference {group.reference!r} (same sku, quantity, "
                            "unit, warehouses, bins, lot and cost); give each line once")
        else:
            first[key] = row.line


def _movement_data(group: _Group, zone: tzinfo | None) -> tuple[dict[str, Any], int]:
    """The canonical input for a group (fields with problems left out) and its count of naive times."""
    header = {k: v for k, v in group.header.items()
              if not any(k in row.problems for row in group.rows)}
    data: dict[str, Any] = {"reference": group.reference}
    kind = header.get("kind")
    if isinstance(kind, MovementKind):
        data["kind"] = kind.value
    for name in ("document_date", "memo"):
        if name in header:
            data[name] = header[name]
    naive = 0
    posted = header.get("posted_at")
    if posted is not None:
        if posted.tzinfo is None or posted.utcoffset() is None:
            if zone is None:
                group.extra.append((group.header_line["posted_at"], "posted_at",
                                    f"{posted.isoformat(sep=' ')} {NAIVE_TIME_MESSAGE}"))
                posted = None
            else:
                posted = posted.replace(tzinfo=zone)
                naive = 1
        if posted is not None:
            data["posted_at"] = posted
    data["counterparty"] = _counterparty(group, header, kind)
    lines = []
    for i, row in enumerate(group.rows, start=1):
        line = {"line_no": i}
        line.update({k: v for k, v in row.values.items() if k not in row.problems})
        lines.append(line)
    data["lines"] = lines
    return data, naive


def _counterparty(group: _Group, header: dict[str, Any], kind: object) -> dict[str, Any] | None:
    code, name, role = (header.get(f"counterparty_{k}") for k in ("code", "name", "role"))
    given = [k for k in ("code", "name", "role") if f"counterparty_{k}" in group.header]
    if not given:
        return None
    at = min(group.header_line[f"counterparty_{k}"] for k in given)
    if "code" not in given:
        group.extra.append((at, "counterparty_code", "is required when a counterparty name or role is given"))
        return None
    if "name" not in given:
        group.extra.append((at, "counterparty_name", f"is required with counterparty_code {code!r}"))
        return None
    if role is None and "role" not in given and isinstance(kind, MovementKind):
        role = kind.partner_role
        if role is None:
            group.extra.append((at, "counterparty_role",
                                f"is required: a {kind.value} does not say whether {code!r} is a supplier "
                                "or a customer"))
            return None
    if code is None or name is None or role is None:
        return None  # a bad cell, already reported; canonical would only repeat it
    return {"code": code, "name": name, "role": role.value}


_COUNTERPARTY_FIELDS = {"counterparty": "counterparty_code", "counterparty.code": "counterparty_code",
                        "counterparty.name": "counterparty_name", "counterparty.role": "counterparty_role"}


def _canonical_problems(group: _Group, exc: RecordInvalid) -> list[tuple[int, str, str]]:
    """Canonical validation problems placed on the row and column they are about."""
    found = []
    for problem in exc.problems:
        path, message = problem.field, problem.message
        if problem.code == "datetime_naive":
            message = NAIVE_TIME_MESSAGE
        if path.startswith("lines["):
            index_text, _, rest = path[len("lines["):].partition("]")
            row = group.rows[int(index_text)]
            name = rest.lstrip(".")
            if name in row.problems or (name == "" and "" in row.problems):
                continue  # the cell itself was already reported
            found.append((row.line, name, message))
            continue
        name = _COUNTERPARTY_FIELDS.get(path, path)
        if name.startswith("counterparty.") or name == "lines":
            name = name.replace(".", "_")
        if any(name in row.problems for row in group.rows) or any(name == f for _, f, _ in group.extra):
            continue
        line = group.header_line.get(name, group.first_line())
        found.append((line, name, message))
    return found


def read_table(
    rows: Iterable[tuple[int, Sequence[object]]],
    *,
    zone: tzinfo | None,
    units: UnitCatalog | None = None,
) -> Table:
    """Movements from ``(line number, cells)`` rows, the first non-blank one (or the first naming
    every required column among the first few) being the header."""
    table = Table()
    present = [(line, cells) for line, cells in rows if not _is_blank(cells)]
    header_index = _find_header(present)
    if header_index is None:
        table.problems.append((1, "", "the file is empty (expected a header row naming the columns)", None))
        return table
    header_line, header_cells = present[header_index]
    table.header_line = header_line
    table.skipped_above_header = header_index
    data_rows = present[header_index + 1:]
    table.rows_read = len(data_rows)
    columns, header_problems = _map_header(header_cells)
    if header_problems:
        for name, message in header_problems:
            table.problems.append((header_line, name, message, None))
        table.rows_rejected = len(data_rows)
        return table
    if not data_rows:
        table.problems.append((header_line, "", "no movement rows below the header", None))
        return table

    groups: dict[str, _Group] = {}
    orphans: list[_Row] = []
    for line, cells in data_rows:
        row = _read_row(line, cells, columns)
        reference = row.header.get("reference")
        if reference is None:
            orphans.append(row)
        else:
            groups.setdefault(reference, _Group(reference, [])).rows.append(row)
    for row in orphans:
        for name, message in row.problems.items():
            table.problems.append((row.line, name, message, None))
    table.rows_rejected += len(orphans)

    for group in groups.values():
        _agree(group)
        _place_sideless(group)
        _duplicates(group)
        data, naive = _movement_data(group, zone)
        problems = [(row.line, name, message) for row in group.rows for name, message in row.problems.items()]
        problems += group.extra
        movement = None
        try:
            movement = parse(Movement, data, units=units, assume_tz=zone)
        except RecordInvalid as exc:
            problems += _canonical_problems(group, exc)
        if problems or movement is None:
            table.rejected.append(group.reference)
            table.rows_rejected += len(group.rows)
            bad_lines = {line for line, _, _ in problems}
            first_bad = min(bad_lines) if bad_lines else group.first_line()
            for row in group.rows:
                if row.line not in bad_lines:
                    problems.append((row.line, "", f"rejected with movement {group.reference!r} "
                                                   f"(see line {first_bad})"))
            table.problems += [(line, name, message, group.reference) for line, name, message in problems]
            continue
        table.movements.append(movement)
        table.lines[group.reference] = tuple(row.line for row in group.rows)
        table.naive_times += naive
    table.problems.sort(key=lambda p: p[0])
    return table
