"""The scratch space of one migration process: a temporary SQLite file, never the store.

A migration streams: nothing it reads is kept in memory beyond one page. What it must remember
across pages (the problems found, the source items a dry run has validated, the bins already
taken from the balances, the code sets and balances a reconciliation compares) goes into this file and is read back in order, so memory
stays flat however large the source. The file is deleted when the workspace closes.

Quantities are kept as exact decimal text and summed in Python (never as SQLite REAL); keys are
compared with SQLite's BINARY collation, which orders UTF-8 text as Python orders ``str``, so a
merge of two ``ORDER BY`` streams lines up in Python.
"""
from __future__ import annotations

import os
import sqlite3
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

__all__ = ["Problem", "Workspace"]

_SCHEMA = """
CREATE TABLE problem (seq INTEGER PRIMARY KEY, phase TEXT, entity TEXT, record TEXT, position INTEGER,
                      field TEXT, message TEXT, vendor_code TEXT, severity TEXT);
CREATE TABLE src_item (code TEXT PRIMARY KEY, unit TEXT, ok INTEGER);
CREATE TABLE tgt_item (code TEXT PRIMARY KEY, unit TEXT);
CREATE INDEX ix_tgt_item_unit ON tgt_item (unit);
CREATE TABLE code_set (side TEXT, entity TEXT, code TEXT, PRIMARY KEY (side, entity, code));
CREATE TABLE balance (side TEXT, sku TEXT, warehouse TEXT, qty TEXT);
"""
_CHUNK = 500


@dataclass(frozen=True)
class Problem:
    """One record that fails (``severity`` error) or deserves a look (warning).

    ``position`` is the record's 1-based place in its phase's stream (the n-th item read from
    the source), so a report line can be found again in the source; ``record`` is its key
    (sku, warehouse code, ``sku@warehouse`` for a balance, ``*`` for the phase as a whole)."""

    phase: str
    entity: str
    record: str
    message: str
    field: str | None = None
    position: int | None = None
    vendor_code: str | None = None
    severity: str = "error"


class Workspace:
    def __init__(self, directory: str | Path | None = None) -> None:
        fd, name = tempfile.mkstemp(prefix="erphub-migrate-", suffix=".sqlite", dir=directory)
        os.close(fd)
        self.path = Path(name)
        self.db = sqlite3.connect(self.path, isolation_level=None)
        self.db.executescript("PRAGMA journal_mode=OFF; PRAGMA synchronous=OFF; PRAGMA temp_store=FILE;"
                              "PRAGMA cache_size=-4096;" + _SCHEMA)
        self.errors = 0
        self.warnings = 0

    # -- problems -----------------------------------------------------------------------------

    def add(self, problem: Problem) -> None:
        self.db.execute(
            "INSERT INTO problem (phase, entity, record, position, field, message, vendor_code, severity) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (problem.phase, problem.entity, problem.record, problem.position, problem.field, problem.message,
             problem.vendor_code, problem.severity))
        if problem.severity == "error":
            self.errors += 1
        else:
            self.warnings += 1

    def problems(self) -> Iterator[Problem]:
        cursor = self.db.execute("SELECT phase, entity, record, message, field, position, vendor_code, severity "
                                 "FROM problem ORDER BY seq")
        for row in cursor:
            yield Problem(*row)

    # -- item index (dry run) ------------------------------------------------------------------

    def add_items(self, side: str, rows: Iterable[tuple[str, str, bool]]) -> None:
        """``side`` src: (canonical sku, unit, valid); tgt: (canonical sku, unit, True)."""
        if side == "src":
            self.db.executemany("INSERT OR REPLACE INTO src_item VALUES (?, ?, ?)",
                                ((code, unit, int(ok)) for code, unit, ok in rows))
        else:
            self.db.executemany("INSERT OR REPLACE INTO tgt_item VALUES (?, ?)", ((c, u) for c, u, _ in rows))

    def items(self, side: str, codes: Iterable[str]) -> dict[str, tuple[str, bool]]:
        """code → (unit, valid) for the codes of ``codes`` known on ``side``."""
        out: dict[str, tuple[str, bool]] = {}
        codes = list(dict.fromkeys(codes))
        for start in range(0, len(codes), _CHUNK):
            chunk = codes[start:start + _CHUNK]
            marks = ",".join("?" * len(chunk))
            if side == "src":
                query = f"SELECT code, unit, ok FROM src_item WHERE code IN ({marks})"
            else:
                query = f"SELECT code, unit, 1 FROM tgt_item WHERE code IN ({marks})"
            for code, unit, ok in self.db.execute(query, chunk):
                out[code] = (unit, bool(ok))
        return out

    def target_items(self) -> int:
        return int(self.db.execute("SELECT count(*) FROM tgt_item").fetchone()[0])

    def target_uses_unit(self, unit: str) -> bool:
        return self.db.execute("SELECT 1 FROM tgt_item WHERE unit = ? LIMIT 1", (unit,)).fetchone() is not None

    # -- reconciliation ------------------------------------------------------------------------

    def first_seen(self, entity: str, codes: Iterable[str]) -> list[str]:
        """The codes of ``codes`` this workspace has not seen before under ``entity``, in order;
        they are remembered now (bins named again and again by balances are written once)."""
        fresh = []
        for code in dict.fromkeys(codes):
            if self.db.execute("INSERT OR IGNORE INTO code_set VALUES ('seen', ?, ?)", (entity, code)).rowcount:
                fresh.append(code)
        return fresh

    def add_codes(self, side: str, entity: str, codes: Iterable[str]) -> None:
        self.db.executemany("INSERT OR IGNORE INTO code_set VALUES (?, ?, ?)", ((side, entity, c) for c in codes))

    def compare_codes(self, entity: str, examples: int = 20) -> tuple[int, int, int, list[str], list[str]]:
        """(matched, missing in target, extra in target, some missing, some extra)."""
        def count(sql: str) -> int:
            return int(self.db.execute(sql, (entity, entity)).fetchone()[0])

        matched = count("SELECT count(*) FROM code_set s JOIN code_set t ON t.side = 'tgt' AND t.entity = ? "
                        "AND t.code = s.code WHERE s.side = 'src' AND s.entity = ?")
        missing_sql = ("FROM code_set s WHERE s.side = '{a}' AND s.entity = ? AND NOT EXISTS (SELECT 1 FROM code_set t "
                       "WHERE t.side = '{b}' AND t.entity = ? AND t.code = s.code)")
        missing = count("SELECT count(*) " + missing_sql.format(a="src", b="tgt"))
        extra = count("SELECT count(*) " + missing_sql.format(a="tgt", b="src"))
        some_missing = [r[0] for r in self.db.execute(
            "SELECT s.code " + missing_sql.format(a="src", b="tgt") + f" ORDER BY s.code LIMIT {int(examples)}",
            (entity, entity))]
        some_extra = [r[0] for r in self.db.execute(
            "SELECT s.code " + missing_sql.format(a="tgt", b="src") + f" ORDER BY s.code LIMIT {int(examples)}",
            (entity, entity))]
        return matched, missing, extra, some_missing, some_extra

    def add_balances(self, side: str, rows: Iterable[tuple[str, str, Decimal]]) -> None:
        self.db.executemany("INSERT INTO balance VALUES (?, ?, ?, ?)",
                            ((side, sku, wh, format(qty, "f")) for sku, wh, qty in rows))

    def balance_pairs(self) -> Iterator[tuple[str, str, Decimal | None, Decimal | None]]:
        """(sku, warehouse, source on-hand, target on-hand) for every position either side holds
        (bins and lots summed; a position summing to zero counts as absent), in key order."""
        self.db.execute("CREATE INDEX IF NOT EXISTS ix_balance ON balance (side, sku, warehouse)")
        src, tgt = self._grouped("src"), self._grouped("tgt")
        a, b = next(src, None), next(tgt, None)
        while a is not None or b is not None:
            if b is None or (a is not None and a[0] < b[0]):
                assert a is not None
                yield a[0][0], a[0][1], a[1], None
                a = next(src, None)
            elif a is None or b[0] < a[0]:
                yield b[0][0], b[0][1], None, b[1]
                b = next(tgt, None)
            else:
                yield a[0][0], a[0][1], a[1], b[1]
                a, b = next(src, None), next(tgt, None)

    def _grouped(self, side: str) -> Iterator[tuple[tuple[str, str], Decimal]]:
        cursor = self.db.cursor()
        cursor.execute("SELECT sku, warehouse, qty FROM balance WHERE side = ? ORDER BY sku, warehouse", (side,))
        key: tuple[str, str] | None = None
        total = Decimal(0)
        for sku, warehouse, qty in cursor:
            if (sku, warehouse) != key:
                if key is not None and total != 0:
                    yield key, total
                key, total = (sku, warehouse), Decimal(0)
            total += Decimal(qty)
        if key is not None and total != 0:
            yield key, total

    # -- life cycle ----------------------------------------------------------------------------

    def close(self) -> None:
        self.db.close()
        self.path.unlink(missing_ok=True)

    def __enter__(self) -> Workspace:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
