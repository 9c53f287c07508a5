"""Cross-system code mapping: the same item (warehouse, partner...) has another code elsewhere.

Where a translation comes from, in this order (the first that answers wins):

1. **the explicit table**: ``id_map`` rows of that connection and entity. They come from a CSV
   the user imports (``erphub codemap import``) and from pulls, which bind every record they
   read. ``to_external`` answers the row's ``external_code`` (else its ``external_id``);
   ``to_canonical`` looks the code up in ``external_code``, then in ``external_id``;
2. **rules** from the configuration, per connection and entity, e.g.::

       [codemap.sap_prod]
       items = [{ op = "add_prefix", value = "K-" }, { op = "upper" }]

   Rules are written in the canonical → external direction and applied in order;
   ``to_canonical`` undoes them in reverse order and keeps the answer only if applying the rules
   to it gives the external code back (so a lossy rule such as ``upper`` never invents a code);
   it answers None when the rules cannot be undone for that code;
3. **identity**: no row and no rules for that connection and entity → the code is the same.

Rules reach the functions either as ``rules=`` or from :func:`configure` (called once at start-up
with ``settings.codemap``); they are keyed by connection *name*, looked up from the connection id.
"""
from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, RootModel, field_validator
from sqlalchemy import select
from sqlalchemy.orm import Session

from sync.idmap import Binding, IdMapConflict, bind, entity_name
from sync.store import Connection, IdMap

__all__ = [
    "AddPrefix",
    "CodeMapRules",
    "CodeRule",
    "ImportProblem",
    "ImportReport",
    "Lower",
    "RegexReplace",
    "StripPrefix",
    "Upper",
    "ZeroPad",
    "apply_rules",
    "configure",
    "export_csv",
    "import_csv",
    "read_mapping_csv",
    "to_canonical",
    "to_canonicals",
    "to_external",
    "undo_rules",
]

_RULE = ConfigDict(frozen=True, extra="forbid")


class AddPrefix(BaseModel):
    """``TS-001`` → ``K-TS-001``; undone by stripping the prefix."""

    model_config = _RULE
    op: Literal["add_prefix"]
    value: str = Field(min_length=1)

    def forward(self, code: str) -> str:
        return self.value + code

    def backward(self, code: str) -> str | None:
        return code[len(self.value):] if code.startswith(self.value) else None


class StripPrefix(BaseModel):
    """``K-TS-001`` → ``TS-001`` (codes without the prefix pass unchanged); undone by adding it."""

    model_config = _RULE
    op: Literal["strip_prefix"]
    value: str = Field(min_length=1)

    def forward(self, code: str) -> str:
        return code[len(self.value):] if code.startswith(self.value) else code

    def backward(self, code: str) -> str | None:
        return self.value + code


class Upper(BaseModel):
    """Upper-case; undone as is (canonical codes are taken to be upper-case already)."""

    model_config = _RULE
    op: Literal["upper"]

    def forward(self, code: str) -> str:
        return code.upper()

    def backward(self, code: str) -> str | None:
        return code


class Lower(BaseModel):
    model_config = _RULE
    op: Literal["lower"]

    def forward(self, code: str) -> str:
        return code.lower()

    def backward(self, code: str) -> str | None:
        return code


class ZeroPad(BaseModel):
    """``42`` → ``000042`` (``width`` characters, padded on the left with ``fill``); undone by
    removing the fill characters on the left (at least one character stays)."""

    model_config = _RULE
    op: Literal["zero_pad"]
    width: int = Field(ge=1, le=255)
    fill: str = Field("0", min_length=1, max_length=1)

    def forward(self, code: str) -> str:
        return code.rjust(self.width, self.fill)

    def backward(self, code: str) -> str | None:
        return code.lstrip(self.fill) or self.fill


class RegexReplace(BaseModel):
    """``re.sub(pattern, replace, code)``; undone by ``reverse_pattern``/``reverse_replace`` when
    given, else not at all (``to_canonical`` then answers None: give the table instead)."""

    model_config = _RULE
    op: Literal["regex"]
    pattern: str = Field(min_length=1)
    replace: str = ""
    reverse_pattern: str | None = None
    reverse_replace: str | None = None

    @field_validator("pattern", "reverse_pattern")
    @classmethod
    def _compiles(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(f"not a valid regular expression ({exc})") from None
        return value

    def forward(self, code: str) -> str:
        return re.sub(self.pattern, self.replace, code)

    def backward(self, code: str) -> str | None:
        if self.reverse_pattern is None:
            return None
        return re.sub(self.reverse_pattern, self.reverse_replace or "", code)


CodeRule = Annotated[AddPrefix | StripPrefix | Upper | Lower | ZeroPad | RegexReplace, Field(discriminator="op")]
EntityRules = dict[Literal["items", "warehouses", "locations", "partners"], list[CodeRule]]


class CodeMapRules(RootModel[dict[str, EntityRules]]):
    """``{connection name: {entity: [rule, ...]}}``: the ``[codemap]`` section of the configuration."""

    model_config = ConfigDict(frozen=True)
    root: dict[str, EntityRules] = Field(default_factory=dict)

    @staticmethod
    def operations() -> tuple[str, ...]:
        """The ``op`` names a rule may have."""
        return tuple(model.model_fields["op"].annotation.__args__[0]  # type: ignore[union-attr]
                     for model in (AddPrefix, StripPrefix, Upper, Lower, ZeroPad, RegexReplace))

    def rules_for(self, connection: str, entity: str) -> list[Any] | None:
        per_connection = self.root.get(connection)
        if not per_connection:
            return None
        return per_connection.get(entity_name(entity))  # type: ignore[call-overload]


def apply_rules(rules: Iterable[Any], code: str) -> str:
    """Canonical → external through ``rules`` in order."""
    for rule in rules:
        code = rule.forward(code)
    return code


def undo_rules(rules: list[Any], code: str) -> str | None:
    """External → canonical: the rules undone in reverse order, kept only if they lead back."""
    candidate: str | None = code
    for rule in reversed(rules):
        candidate = rule.backward(candidate)
        if candidate is None or not candidate:
            return None
    return candidate if apply_rules(rules, candidate) == code else None


# --- the process-wide rules -------------------------------------------------------------------

_configured = CodeMapRules()


def configure(rules: CodeMapRules | Mapping[str, Any] | None) -> None:
    """Install the configuration's rules for every later call that does not pass ``rules=``."""
    global _configured
    _configured = rules if isinstance(rules, CodeMapRules) else CodeMapRules.model_validate(dict(rules or {}))


def _rules(session: Session, connection_id: int, entity: str, rules: CodeMapRules | None) -> list[Any] | None:
    rules = _configured if rules is None else rules
    if not rules.root:
        return None
    names: dict[int, str | None] = session.info.setdefault("codemap.connection_names", {})
    if connection_id not in names:
        names[connection_id] = session.scalar(select(Connection.name).where(Connection.id == connection_id))
    name = names[connection_id]
    return rules.rules_for(name, entity) if name is not None else None


def to_external(session: Session, connection_id: int, entity: Any, canonical_code: str, *,
                rules: CodeMapRules | None = None) -> str | None:
    """The code ``connection_id`` uses for ``canonical_code``: table, then rules, then identity."""
    entity = entity_name(entity)
    row = session.execute(select(IdMap.external_code, IdMap.external_id).where(
        IdMap.connection_id == connection_id, IdMap.entity == entity, IdMap.canonical_id == canonical_code)).first()
    if row is not None:
        return row.external_code or row.external_id
    chain = _rules(session, connection_id, entity, rules)
    return apply_rules(chain, canonical_code) if chain else canonical_code


def to_externals(session: Session, connection_id: int, entity: Any, canonical_codes: Iterable[str], *,
                 rules: CodeMapRules | None = None) -> dict[str, str | None]:
    """:func:`to_external` for many codes at once, with one query per 500 codes (a delivery
    resolves a whole claimed batch with one query per entity)."""
    entity = entity_name(entity)
    codes = list(dict.fromkeys(canonical_codes))
    out: dict[str, str | None] = {}
    for start in range(0, len(codes), 500):
        chunk = codes[start:start + 500]
        for row in session.execute(select(IdMap.canonical_id, IdMap.external_code, IdMap.external_id).where(
                IdMap.connection_id == connection_id, IdMap.entity == entity, IdMap.canonical_id.in_(chunk))):
            out.setdefault(row.canonical_id, row.external_code or row.external_id)
    missing = [code for code in codes if code not in out]
    if missing:
        chain = _rules(session, connection_id, entity, rules)
        for code in missing:
            out[code] = apply_rules(chain, code) if chain else code
    return out


def to_canonical(session: Session, connection_id: int, entity: Any, external_code: str, *,
                 rules: CodeMapRules | None = None) -> str | None:
    """The canonical code for ``external_code`` of ``connection_id``: table, then rules, then
    identity; None when the rules cannot be undone for this code."""
    return to_canonicals(session, connection_id, entity, [external_code], rules=rules).get(external_code)


def to_canonicals(session: Session, connection_id: int, entity: Any, external_codes: Iterable[str], *,
                  rules: CodeMapRules | None = None) -> dict[str, str | None]:
    """:func:`to_canonical` for a page of codes, with two queries per 500 codes (one per column,
    so each uses its index: one query with ``external_code IN … OR external_id IN …`` made SQLite
    scan every row of the connection and entity)."""
    entity = entity_name(entity)
    codes = sorted(set(external_codes))
    found: dict[str, str] = {}
    for start in range(0, len(codes), 500):
        chunk = codes[start:start + 500]
        by_id: dict[str, str] = {}
        for column, into in ((IdMap.external_code, found), (IdMap.external_id, by_id)):
            for code, canonical in session.execute(select(column, IdMap.canonical_id).where(
                    IdMap.connection_id == connection_id, IdMap.entity == entity, column.in_(chunk))):
                into.setdefault(code, canonical)
        for code, canonical in by_id.items():
            found.setdefault(code, canonical)  # external_code matches win over external_id ones
    chain = _rules(session, connection_id, entity, rules)
    out: dict[str, str | None] = {}
    for code in codes:
        if code in found:
            out[code] = found[code]
        elif chain:
            out[code] = undo_rules(chain, code)
        else:
            out[code] = code
    return out


# --- CSV import and export --------------------------------------------------------------------

COLUMNS = ("canonical_code", "external_code")


@dataclass(frozen=True)
class ImportProblem:
    line: int  # 1-based line of the file (the header is line 1); 0 for the file as a whole
    message: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.message}" if self.line else self.message


@dataclass
class ImportReport:
    rows: int = 0           # data rows read
    added: int = 0          # new bindings written
    unchanged: int = 0      # bindings that were already there
    problems: list[ImportProblem] = field(default_factory=list)
    written: bool = False   # False when problems stopped the import (no --partial)

    @property
    def ok(self) -> bool:
        return not self.problems


@dataclass(frozen=True)
class _Row:
    line: int
    canonical: str
    external: str


def read_mapping_csv(source: str | Path | io.TextIOBase) -> tuple[list[_Row], list[ImportProblem]]:
    """Rows of a code-map CSV (columns ``canonical_code``, ``external_code``; UTF-8, BOM allowed)
    and the problems of the rows that are unusable, each with its line number."""
    if isinstance(source, (str, Path)):
        try:
            text = Path(source).read_text(encoding="utf-8-sig")
        except UnicodeDecodeError as exc:
            return [], [ImportProblem(0, f"{source}: not UTF-8 text (byte {exc.start})")]
        except OSError as exc:
            return [], [ImportProblem(0, f"{source}: cannot read ({exc.strerror or type(exc).__name__})")]
    else:
        text = source.read()
        text = text.removeprefix("\ufeff")
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader)
    except StopIteration:
        return [], [ImportProblem(0, "the file is empty (expected a header: canonical_code,external_code)")]
    names = [h.strip().lower() for h in header]
    missing = [c for c in COLUMNS if c not in names]
    if missing:
        return [], [ImportProblem(1, f"missing column(s) {', '.join(missing)} (header is {','.join(header)!s})")]
    ci, ei = names.index("canonical_code"), names.index("external_code")
    rows: list[_Row] = []
    problems: list[ImportProblem] = []
    try:
        for values in reader:
            line = reader.line_num
            if not any(v.strip() for v in values):
                continue  # blank line
            if len(values) != len(names):
                problems.append(ImportProblem(line, f"expected {len(names)} values, found {len(values)}"))
                continue
            canonical, external = values[ci].strip(), values[ei].strip()
            empty = [name for name, value in (("canonical_code", canonical), ("external_code", external)) if not value]
            if empty:
                problems.append(ImportProblem(line, f"{' and '.join(empty)} is empty"))
                continue
            too_long = [name for name, value in (("canonical_code", canonical), ("external_code", external))
                        if len(value) > 255]
            if too_long:
                problems.append(ImportProblem(line, f"{too_long[0]} is longer than 255 characters"))
                continue
            rows.append(_Row(line, canonical, external))
    except csv.Error as exc:
        problems.append(ImportProblem(reader.line_num, f"not valid CSV ({exc})"))
    return rows, problems


def import_csv(session: Session, connection_id: int, entity: Any, source: str | Path | io.TextIOBase, *,
               partial: bool = False) -> ImportReport:
    """Import a code map into ``id_map`` (canonical id = ``canonical_code``, external id and code
    = ``external_code``).

    Every unusable row is reported with its line number: empty or missing values, a row that
    repeats an earlier one (duplicate), two rows that map one side to different codes, and rows
    that contradict bindings already stored (conflicts). Without ``partial`` any problem stops the
    import and nothing is written; with it the good rows are written and the bad ones reported.
    Works in the caller's transaction; the caller commits.
    """
    entity = entity_name(entity)
    report = ImportReport()
    rows, problems = read_mapping_csv(source)
    report.rows = len(rows) + sum(1 for p in problems if p.line > 1)
    by_canonical: dict[str, _Row] = {}
    by_external: dict[str, _Row] = {}
    good: list[_Row] = []
    for row in rows:
        first_c, first_e = by_canonical.get(row.canonical), by_external.get(row.external)
        if first_c is not None and first_c.external == row.external:
            problems.append(ImportProblem(row.line, f"duplicate of line {first_c.line} "
                                                    f"({row.canonical} → {row.external})"))
            continue
        if first_c is not None:
            problems.append(ImportProblem(row.line, f"canonical_code {row.canonical!r} is mapped to "
                                                    f"{first_c.external!r} on line {first_c.line} and to "
                                                    f"{row.external!r} here"))
            continue
        if first_e is not None:
            problems.append(ImportProblem(row.line, f"external_code {row.external!r} is mapped from "
                                                    f"{first_e.canonical!r} on line {first_e.line} and from "
                                                    f"{row.canonical!r} here"))
            continue
        by_canonical[row.canonical] = by_external[row.external] = row
        good.append(row)
    # conflicts with what is stored: check everything before writing anything
    stored_c = {r.canonical_id: r for r in _stored(session, connection_id, entity, IdMap.canonical_id,
                                                   [r.canonical for r in good])}
    stored_e = {r.external_id: r for r in _stored(session, connection_id, entity, IdMap.external_id,
                                                  [r.external for r in good])}
    writable: list[_Row] = []
    for row in good:
        stored = [r for r in (stored_c.get(row.canonical), stored_e.get(row.external)) if r is not None]
        clash = next((r for r in stored if (r.canonical_id, r.external_id) != (row.canonical, row.external)), None)
        if clash is not None:
            problems.append(ImportProblem(row.line, f"conflicts with the stored mapping {clash.canonical_id!r} → "
                                                    f"{clash.external_id!r}"))
        elif stored:
            report.unchanged += 1
        else:
            writable.append(row)
    report.problems = sorted(problems, key=lambda p: p.line)
    if report.problems and not partial:
        return report
    for row in writable:
        try:
            bind(session, connection_id, entity, row.canonical, row.external, row.external)
            report.added += 1
        except IdMapConflict as exc:  # bound by someone else since we looked
            report.problems.append(ImportProblem(row.line, str(exc)))
    report.problems.sort(key=lambda p: p.line)
    report.written = True
    return report


def _stored(session: Session, connection_id: int, entity: str, column: Any, values: list[str]) -> list[IdMap]:
    out: list[IdMap] = []
    values = sorted(set(values))
    for start in range(0, len(values), 500):
        out.extend(session.scalars(select(IdMap).where(IdMap.connection_id == connection_id, IdMap.entity == entity,
                                                       column.in_(values[start:start + 500]))))
    return out


def export_csv(session: Session, connection_id: int, entity: Any, out: io.TextIOBase) -> int:
    """Write the table of one connection and entity as a CSV :func:`import_csv` reads; returns rows."""
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(COLUMNS)
    count = 0
    for row in session.scalars(select(IdMap).where(IdMap.connection_id == connection_id,
                                                   IdMap.entity == entity_name(entity)).order_by(IdMap.canonical_id)):
        writer.writerow([row.canonical_id, Binding(row.canonical_id, row.external_id, row.external_code).code])
        count += 1
    return count
