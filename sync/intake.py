"""Movements from a file: CSV, Excel (.xlsx) or JSON, every bad row reported on its line.

>>> result = read_movements(Path("receipts.csv"), timezone="Asia/Shanghai")
>>> for problem in result.problems:
...     print(problem)            # line 7: quantity: must be greater than zero
>>> result.movements              # the movements with no problem on any of their rows

**Tables** (CSV, the first sheet of a workbook or the one named by ``sheet``): one row per movement
line, a header row naming the columns (case, spaces, ``-`` and ``_`` ignored; Chinese aliases
in :mod:`sync.intake_columns`)::

    reference, kind, document_date, posted_at, counterparty_code, counterparty_name,
    counterparty_role, sku, quantity, unit, from_warehouse, from_bin, to_warehouse, to_bin,
    lot, unit_cost, memo

Required: reference, kind, document_date, sku, quantity, unit. Rows with the same reference form
one movement (lines numbered in file order); see :mod:`sync.intake_table` for the rules.

- CSV is read as UTF-8 (with or without BOM; UTF-16 with a BOM too). Only when the bytes are not
  valid UTF-8 is GB18030 (Chinese Excel's "CSV") tried, and ``IntakeResult.encoding_note`` says
  so. Comma- or tab-separated (chosen from the header line).
- Excel is read with openpyxl in read-only mode, cached formula values. A numeric cell becomes
  the digits of its shortest repr; a float needing more than 15 significant digits (a formula
  artefact such as 0.30000000000000004) is refused, never rounded. Date cells are dates.
- Naive posting times are read in ``timezone``; without one they are problems. How many were
  read that way is in ``IntakeResult.naive_times``, so a caller can say so.

**JSON**: a list of movement objects in canonical shape (``erphub schema Movement``), one object,
or JSON Lines (one object per line). Numbers are read as Decimal. Problems name the physical
line where the object starts (and, in a list, its 0-based index: ``line 12 (item 3): ...``).

Line numbers are the file's physical lines (a CSV record spanning lines is named by its first)
and a worksheet's row numbers. A movement with any bad row is rejected whole; its other rows are
named as rejected with it.
"""
from __future__ import annotations

import codecs
import csv
import io
import json
import zipfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, tzinfo
from decimal import Decimal
from pathlib import Path
from typing import Any, BinaryIO, Literal

from canonical import Movement, RecordInvalid, UnitCatalog, parse, validation_context
from sync.intake_table import NAIVE_TIME_MESSAGE, Table, read_table

__all__ = [
    "DEFAULT_TIMEZONE",
    "FORMATS",
    "IntakeProblem",
    "IntakeResult",
    "Rows",
    "csv_rows",
    "format_of",
    "read_csv",
    "read_json",
    "read_movements",
    "read_rows",
    "read_xlsx",
    "xlsx_rows",
]

DEFAULT_TIMEZONE = "Asia/Shanghai"
Format = Literal["csv", "xlsx", "json"]
FORMATS: dict[str, Format] = {
    ".csv": "csv", ".tsv": "csv", ".txt": "csv",
    ".xlsx": "xlsx", ".xlsm": "xlsx",
    ".json": "json", ".jsonl": "json", ".ndjson": "json",
}  # fmt: skip


@dataclass(frozen=True, slots=True)
class IntakeProblem:
    """One thing wrong in the file: ``line 7: quantity: must be greater than zero``.

    ``line`` is the physical line (CSV, JSON) or row (worksheet); ``item`` the 0-based index of a
    JSON list item; ``field`` a column or canonical field path ("" for the row as a whole);
    ``reference`` the movement the row belongs to, when known.
    """

    line: int
    field: str
    message: str
    reference: str | None = None
    item: int | None = None

    def __str__(self) -> str:
        where = f"line {self.line}" if self.item is None else f"line {self.line} (item {self.item})"
        return f"{where}: {self.field}: {self.message}" if self.field else f"{where}: {self.message}"


@dataclass(frozen=True)
class IntakeResult:
    """What a file held: the good movements, every problem, and how the file was read.

    ``movements`` never holds a movement with a problem on any of its rows. ``lines_read``
    counts data rows (tables) or objects (JSON); ``rejected`` names the rejected movements and
    ``rows_rejected`` counts their rows plus rows that belong to no movement. A table's header
    is the first non-blank row, or the first of the next few that names every required column
    (``skipped_above_header`` counts the title rows above it, which are not data).
    """

    movements: tuple[Movement, ...]
    problems: tuple[IntakeProblem, ...]
    lines_read: int
    format: Format = "csv"
    encoding: str | None = None
    encoding_note: str | None = None
    sheet: str | None = None
    header_line: int | None = None
    skipped_above_header: int = 0
    timezone: str | None = None
    naive_times: int = 0
    rejected: tuple[str, ...] = ()
    rows_rejected: int = 0
    lines: dict[str, tuple[int, ...]] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def accepted(self) -> int:
        return len(self.movements)


@dataclass(frozen=True)
class Rows:
    """The raw rows of a table file, ``(line or row number, cells)``, and how it was read;
    ``problem`` when the file could not be read at all (then ``rows`` is empty)."""

    format: Format
    rows: list[tuple[int, Sequence[object]]]
    encoding: str | None = None
    encoding_note: str | None = None
    sheet: str | None = None
    problem: IntakeProblem | None = None


class _Unreadable(Exception):
    def __init__(self, line: int, message: str) -> None:
        super().__init__(message)
        self.line = line
        self.message = message


def _unreadable(exc: _Unreadable, fmt: Format, **extra: Any) -> IntakeResult:
    return IntakeResult((), (IntakeProblem(exc.line, "", exc.message),), 0, fmt, **extra)


def _zone(timezone: str | tzinfo | None) -> tuple[tzinfo | None, str | None]:
    """The zone and its name; a bad name raises ValueError (a usage error, not a file problem)."""
    if timezone is None:
        return None, None
    zone = validation_context(assume_tz=timezone)["assume_tz"]
    return zone, str(timezone) if isinstance(timezone, str) else str(zone)


def format_of(path: Path) -> Format:
    """The format a file name says; ValueError for others (.xls is named: save it as .xlsx)."""
    suffix = path.suffix.lower()
    if suffix in FORMATS:
        return FORMATS[suffix]
    if suffix == ".xls":
        raise ValueError(f"{path.name}: the old Excel .xls format is not read; save the sheet as .xlsx")
    raise ValueError(f"{path.name}: cannot tell the format from {suffix or 'no extension'!r}; "
                     f"expected one of {', '.join(sorted(FORMATS))}")


def read_movements(
    path: str | Path,
    *,
    format: Format | None = None,  # noqa: A002 - the word users know
    sheet: str | None = None,
    timezone: str | tzinfo | None = DEFAULT_TIMEZONE,
    units: UnitCatalog | None = None,
) -> IntakeResult:
    """Read ``path`` in ``format`` (from its extension when None).

    ``timezone`` is the zone of times written without a UTC offset (None: such times are
    problems). Raises ValueError for an unknown format or zone and OSError when the file cannot
    be opened; problems inside the file are in the result.
    """
    path = Path(path)
    fmt = format or format_of(path)
    if sheet is not None and fmt != "xlsx":
        raise ValueError(f"a sheet name only applies to .xlsx workbooks, not {fmt}")
    if fmt == "xlsx":
        with path.open("rb") as handle:
            return read_xlsx(handle, sheet=sheet, timezone=timezone, units=units)
    data = path.read_bytes()
    if fmt == "json":
        return read_json(data, timezone=timezone, units=units)
    return read_csv(data, timezone=timezone, units=units)


def _result(table: Table, fmt: Format, zone_name: str | None, **extra: Any) -> IntakeResult:
    return IntakeResult(
        movements=tuple(table.movements),
        problems=tuple(IntakeProblem(line, name, message, reference)
                       for line, name, message, reference in table.problems),
        lines_read=table.rows_read,
        format=fmt,
        timezone=zone_name,
        naive_times=table.naive_times,
        rejected=tuple(table.rejected),
        rows_rejected=table.rows_rejected,
        lines=dict(table.lines),
        header_line=table.header_line,
        skipped_above_header=table.skipped_above_header,
        **extra,
    )


# ------------------------------------------------------------------------------------ text


def _line_of(data: bytes, offset: int) -> int:
    return data.count(b"\n", 0, offset) + 1


def decode(data: bytes) -> tuple[str, str, str | None]:
    """``(text, encoding, note)``: UTF-8 (BOM optional), UTF-16 with a BOM, else GB18030 when the
    bytes are not UTF-8; the note says why GB18030 was used. Raises _Unreadable."""
    if data.startswith(codecs.BOM_UTF8):
        try:
            return data[3:].decode("utf-8"), "utf-8-sig", None
        except UnicodeDecodeError as exc:
            raise _Unreadable(_line_of(data, exc.start + 3),
                              f"starts with a UTF-8 byte order mark but is not UTF-8 "
                              f"(byte 0x{data[exc.start + 3]:02x})") from None
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        try:
            return data.decode("utf-16"), "utf-16", None
        except UnicodeDecodeError:
            raise _Unreadable(1, "starts with a UTF-16 byte order mark but is not UTF-16") from None
    try:
        return data.decode("utf-8"), "utf-8", None
    except UnicodeDecodeError as exc:
        where = f"line {_line_of(data, exc.start)}, byte 0x{data[exc.start]:02x}"
    try:
        text = data.decode("gb18030")
    except UnicodeDecodeError as exc:
        raise _Unreadable(_line_of(data, exc.start), f"is neither UTF-8 ({where}) nor GB18030 text "
                                                     f"(byte 0x{data[exc.start]:02x}); save it as UTF-8") from None
    return text, "gb18030", f"not valid UTF-8 ({where}); read as GB18030"


# ------------------------------------------------------------------------------------- CSV


def _csv_rows(text: str) -> Iterator[tuple[int, list[str]]]:
    first = next((line for line in text.splitlines() if line.strip()), "")
    delimiter = "\t" if first.count("\t") > first.count(",") else ","
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True)
    start = 1
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            raise _Unreadable(start, f"is not well-formed CSV ({exc})") from None
        yield start, row
        start = reader.line_num + 1


def read_csv(
    data: bytes,
    *,
    timezone: str | tzinfo | None = DEFAULT_TIMEZONE,
    units: UnitCatalog | None = None,
) -> IntakeResult:
    """Movements from the bytes of a CSV (or tab-separated) file."""
    zone, zone_name = _zone(timezone)
    raw = csv_rows(data)
    if raw.problem is not None:
        return IntakeResult((), (raw.problem,), 0, "csv", encoding=raw.encoding, encoding_note=raw.encoding_note,
                            timezone=zone_name)
    table = read_table(raw.rows, zone=zone, units=units)
    return _result(table, "csv", zone_name, encoding=raw.encoding, encoding_note=raw.encoding_note)


def csv_rows(data: bytes) -> Rows:
    """The ``(line, cells)`` rows of a CSV (or tab-separated) file, decoded as :func:`decode` says;
    an unreadable file is ``Rows.problem``. Shared with other table readers (count sheets)."""
    try:
        text, encoding, note = decode(data)
    except _Unreadable as exc:
        return Rows("csv", [], problem=IntakeProblem(exc.line, "", exc.message))
    try:
        rows: list[tuple[int, Sequence[object]]] = list(_csv_rows(text))
    except _Unreadable as exc:
        return Rows("csv", [], encoding, note, problem=IntakeProblem(exc.line, "", exc.message))
    return Rows("csv", rows, encoding, note)


# ------------------------------------------------------------------------------------ XLSX


def xlsx_rows(source: str | Path | BinaryIO, *, sheet: str | None = None) -> Rows:
    """The ``(row number, cells)`` rows of an .xlsx worksheet (the first, or the one named ``sheet``),
    cached formula values; an unreadable workbook is ``Rows.problem``. Shared with count sheets."""
    from openpyxl import load_workbook
    from openpyxl.utils.exceptions import InvalidFileException

    try:
        workbook = load_workbook(source, read_only=True, data_only=True)
    except (InvalidFileException, zipfile.BadZipFile, KeyError, ValueError) as exc:
        return Rows("xlsx", [], problem=IntakeProblem(1, "", f"is not a readable .xlsx workbook ({exc})"))
    try:
        titles = [ws.title for ws in workbook.worksheets]  # chartsheets hold no rows
        if sheet is None:
            if not workbook.worksheets:
                return Rows("xlsx", [], problem=IntakeProblem(1, "", "the workbook has no worksheet"))
            worksheet = workbook.worksheets[0]
        elif sheet in titles:
            worksheet = workbook[sheet]
        else:
            known = ", ".join(map(repr, titles))
            return Rows("xlsx", [], sheet=sheet, problem=IntakeProblem(
                1, "", f"the workbook has no worksheet named {sheet!r} (sheets: {known})"))
        # Exporters often write a wrong <dimension>; read every row that is there.
        worksheet.reset_dimensions()
        rows: list[tuple[int, Sequence[object]]] = [
            (number, values) for number, values in enumerate(worksheet.iter_rows(min_row=1, values_only=True), start=1)]
        return Rows("xlsx", rows, sheet=worksheet.title)
    finally:
        workbook.close()


def read_rows(path: str | Path, *, sheet: str | None = None) -> Rows:
    """The rows of a CSV or .xlsx file (format from the extension; ValueError for others, and for a
    sheet name on a CSV). OSError when the file cannot be opened."""
    path = Path(path)
    fmt = format_of(path)
    if fmt == "json":
        raise ValueError(f"{path.name}: expected a table (.csv or .xlsx), not JSON")
    if sheet is not None and fmt != "xlsx":
        raise ValueError(f"a sheet name only applies to .xlsx workbooks, not {fmt}")
    if fmt == "xlsx":
        with path.open("rb") as handle:
            return xlsx_rows(handle, sheet=sheet)
    return csv_rows(path.read_bytes())


def read_xlsx(
    source: str | Path | BinaryIO,
    *,
    sheet: str | None = None,
    timezone: str | tzinfo | None = DEFAULT_TIMEZONE,
    units: UnitCatalog | None = None,
) -> IntakeResult:
    """Movements from an .xlsx workbook: the first sheet, or the one named ``sheet``."""
    zone, zone_name = _zone(timezone)
    raw = xlsx_rows(source, sheet=sheet)
    if raw.problem is not None:
        return IntakeResult((), (raw.problem,), 0, "xlsx", sheet=raw.sheet, timezone=zone_name)
    rows, title = raw.rows, raw.sheet
    table = read_table(rows, zone=zone, units=units)
    return _result(table, "xlsx", zone_name, sheet=title)


# ------------------------------------------------------------------------------------ JSON


def _items_with_lines(text: str) -> list[tuple[int, int | None, Any]]:
    """``(line, index, value)`` per item: a list's items (their starting lines), a lone object, or
    the objects of JSON Lines. Raises _Unreadable for text that is none of these."""
    decoder = json.JSONDecoder(parse_float=Decimal)
    stripped = text.lstrip()
    if not stripped:
        raise _Unreadable(1, "the file is empty (expected a JSON list of movements or JSON Lines)")
    try:
        whole = json.loads(text, parse_float=Decimal)
    except json.JSONDecodeError as exc:
        if not stripped.startswith("{") or exc.msg != "Extra data":
            raise _Unreadable(exc.lineno, f"is not valid JSON ({exc.msg}, column {exc.colno})") from None
        return _json_lines(text, decoder)
    if isinstance(whole, dict):
        return [(text.count("\n", 0, len(text) - len(stripped)) + 1, None, whole)]
    if not isinstance(whole, list):
        raise _Unreadable(1, f"holds a JSON {type(whole).__name__}; expected a list of movement objects")
    items, pos = [], text.index("[") + 1
    for index in range(len(whole)):
        while text[pos] in " \t\r\n,":
            pos += 1
        value, end = decoder.raw_decode(text, pos)
        items.append((text.count("\n", 0, pos) + 1, index, value))
        pos = end
    return items


def _json_lines(text: str, decoder: json.JSONDecoder) -> list[tuple[int, int | None, Any]]:
    items = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            items.append((number, None, decoder.decode(line)))
        except json.JSONDecodeError as exc:
            # a bad line is that item's problem; the other lines are still read
            items.append((number, None, _BadJson(f"is not valid JSON ({exc.msg}, column {exc.colno})")))
    return items


@dataclass(frozen=True)
class _BadJson:
    message: str


def _reference_of(value: object) -> str | None:
    reference = value.get("reference") if isinstance(value, dict) else None
    return reference.strip() if isinstance(reference, str) and reference.strip() else None


def _naive(value: object) -> bool:
    if not isinstance(value, str):
        return False
    try:
        return datetime.fromisoformat(value.strip()).tzinfo is None
    except ValueError:
        return False


def read_json(
    data: bytes,
    *,
    timezone: str | tzinfo | None = DEFAULT_TIMEZONE,
    units: UnitCatalog | None = None,
) -> IntakeResult:
    """Movements from a JSON list of canonical movement objects, one object, or JSON Lines."""
    zone, zone_name = _zone(timezone)
    try:
        text, encoding, note = decode(data)
        items = _items_with_lines(text)
    except _Unreadable as exc:
        return _unreadable(exc, "json", timezone=zone_name)
    problems: list[IntakeProblem] = []
    parsed: list[tuple[int, int | None, Movement, int]] = []
    bad: set[int] = set()  # positions in items
    if not items:
        problems.append(IntakeProblem(1, "", "holds no movements"))
    for position, (line, index, value) in enumerate(items):
        if isinstance(value, _BadJson) or not isinstance(value, dict):
            message = value.message if isinstance(value, _BadJson) else (
                f"is a JSON {type(value).__name__}; expected a movement object")
            problems.append(IntakeProblem(line, "", message, None, index))
            bad.add(position)
            continue
        try:
            movement = parse(Movement, value, units=units, assume_tz=zone)
        except RecordInvalid as exc:
            reference = _reference_of(value)
            for p in exc.problems:
                message = NAIVE_TIME_MESSAGE if p.code == "datetime_naive" else p.message
                problems.append(IntakeProblem(line, p.field, message, reference, index))
            bad.add(position)
            continue
        naive = sum(_naive(value.get(name)) for name in ("posted_at", "modified_at"))
        parsed.append((position, index, movement, naive))

    first_seen: dict[str, int] = {}
    for position, (line, index, value) in enumerate(items):
        reference = _reference_of(value)
        if reference is None:
            continue
        if reference in first_seen:
            earlier = first_seen[reference]
            problems.append(IntakeProblem(line, "reference", f"{reference!r} is also used on line "
                                          f"{items[earlier][0]}; each movement must appear once", reference, index))
            if earlier not in bad:
                e_line, e_index, _ = items[earlier]
                problems.append(IntakeProblem(e_line, "reference", f"{reference!r} is used again on line {line}; "
                                              "each movement must appear once", reference, e_index))
            bad.update((position, earlier))
        else:
            first_seen[reference] = position

    movements = [m for position, _, m, _ in parsed if position not in bad]
    rejected = tuple(dict.fromkeys(
        r for position, (_, _, v) in enumerate(items) if position in bad and (r := _reference_of(v)) is not None
    ))
    problems.sort(key=lambda p: (p.line, p.item or 0))
    return IntakeResult(
        movements=tuple(movements),
        problems=tuple(problems),
        lines_read=len(items),
        format="json",
        encoding=encoding,
        encoding_note=note,
        timezone=zone_name,
        naive_times=sum(n for position, _, _, n in parsed if position not in bad),
        rejected=rejected,
        rows_rejected=len(bad),
        lines={m.reference: (items[position][0],) for position, _, m, _ in parsed if position not in bad},
    )
