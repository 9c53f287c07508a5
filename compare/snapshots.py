"""Balance snapshots for reconciliation: what they are, storing one, loading one for the engine.

A snapshot (``balance_snapshot`` and its rows) is what one system, or one physical count sheet
(``source_label``), said was on hand at ``taken_at``. Systems' snapshots are taken with
:func:`sync.pull.pull_balances` (codes already translated to canonical ones); count sheets are
stored here with :func:`store_rows`.

Loading is built for a million rows per side (RELIABILITY.md P4): the rows are read with one
plain SELECT on the store's DBAPI cursor (no ORM, no per-value type processing: on SQLite the
exact decimals are normalised text already, on PostgreSQL they are cast to text in SQL), in
chunks, into a DuckDB table whose quantities are ``DECIMAL(38,12)``: exact, never floats.
"""
from __future__ import annotations

import gc
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import insert, select, update

from sync.store import BalanceSnapshot, BalanceSnapshotRow, Connection, Store, utcnow

__all__ = ["LOAD_CHUNK", "SnapshotInfo", "load_into_duckdb", "snapshot_info", "snapshot_systems", "store_rows"]

#: Rows fetched from the store per round trip while loading.
LOAD_CHUNK = 250_000
#: Rows per INSERT executemany when storing (RELIABILITY §5.2(b): Core, in chunks).
STORE_CHUNK = 5_000
_COLUMNS = ("sku", "warehouse", "bin", "lot", "on_hand", "unit", "unit_cost")


@dataclass(frozen=True)
class SnapshotInfo:
    """One stored snapshot: ``label`` is the connection name, or the count sheet's source label."""

    id: int
    label: str
    connection: str | None
    taken_at: datetime
    row_count: int

    @property
    def is_count(self) -> bool:
        return self.connection is None


def snapshot_info(store: Store, snapshot_ids: Sequence[int]) -> list[SnapshotInfo]:
    """The snapshots in the order asked; ValueError naming an id that does not exist."""
    with store.session() as session:
        rows = {row.id: row for row in session.execute(
            select(BalanceSnapshot.id, BalanceSnapshot.source_label, BalanceSnapshot.taken_at,
                   BalanceSnapshot.row_count, Connection.name)
            .outerjoin(Connection, Connection.id == BalanceSnapshot.connection_id)
            .where(BalanceSnapshot.id.in_(list(snapshot_ids))))}
    out = []
    for snapshot_id in snapshot_ids:
        row = rows.get(snapshot_id)
        if row is None:
            raise ValueError(f"balance snapshot {snapshot_id} does not exist")
        label = row.name or row.source_label or f"snapshot {snapshot_id}"
        out.append(SnapshotInfo(row.id, label, row.name, row.taken_at, row.row_count))
    return out


def snapshot_systems(store: Store, connections: Any, names: Sequence[str], *, warehouse: str | None = None,
                     rules: Any = None, page_size: int | None = None) -> list[int]:
    """A fresh balance snapshot of each named connection (``sync.pull.pull_balances``, codes
    translated to canonical ones), in order; their ids."""
    from sync.pull import pull_balances

    return [pull_balances(store, connections, name, warehouse=warehouse, rules=rules, page_size=page_size)
            for name in names]


def store_rows(store: Store, rows: Iterable[Mapping[str, Any]], *, source_label: str,
               taken_at: datetime | None = None, connection_id: int | None = None) -> int:
    """Store ``rows`` (sku, warehouse, bin, lot, on_hand, unit, unit_cost; Decimal quantities) as a
    new snapshot named ``source_label``; its id. One transaction, bulk Core inserts."""
    table = BalanceSnapshotRow.__table__
    with store.session(write=True) as session:
        snapshot = BalanceSnapshot(connection_id=connection_id, source_label=source_label,
                                   taken_at=taken_at or utcnow(), row_count=0)
        session.add(snapshot)
        session.flush()
        snapshot_id = snapshot.id
        total = 0
        chunk: list[dict[str, Any]] = []
        for row in rows:
            chunk.append({"snapshot_id": snapshot_id, "sku": row["sku"], "warehouse": row["warehouse"],
                          "bin": row.get("bin"), "lot": row.get("lot"), "on_hand": row["on_hand"],
                          "available": row.get("available"), "unit": row["unit"],
                          "unit_cost": row.get("unit_cost")})
            if len(chunk) >= STORE_CHUNK:
                session.execute(insert(table), chunk)
                total += len(chunk)
                chunk = []
        if chunk:
            session.execute(insert(table), chunk)
            total += len(chunk)
        session.execute(update(BalanceSnapshot).where(BalanceSnapshot.id == snapshot_id).values(row_count=total))
    return snapshot_id


def _select_sql(store: Store, snapshot_id: int) -> str:
    """The plain SELECT of one snapshot's rows, decimals as text on every backend."""
    table = BalanceSnapshotRow.__table__.name
    if store.dialect == "sqlite":
        columns = ", ".join(_COLUMNS)  # ExactDecimal is normalised text there already
    else:
        columns = ", ".join(f"CAST({c} AS TEXT)" if c in ("on_hand", "unit_cost") else c for c in _COLUMNS)
    return f"SELECT {columns} FROM {table} WHERE snapshot_id = {int(snapshot_id)}"


def load_into_duckdb(store: Store, snapshot_id: int, duck: Any, table: str, *,
                     warehouses: Collection[str] | None = None, chunk: int = LOAD_CHUNK) -> int:
    """Load one snapshot into DuckDB table ``table`` (created here), normalised: codes trimmed,
    blank bin/lot as ``''``, units upper-case, quantities and costs ``DECIMAL(38,12)``. Only
    ``warehouses`` when given. How many rows were loaded."""
    import numpy as np

    duck.execute(f"CREATE OR REPLACE TEMP TABLE {table} (sku VARCHAR, warehouse VARCHAR, bin VARCHAR, "
                 "lot VARCHAR, qty DECIMAL(38,12), unit VARCHAR, unit_cost DECIMAL(38,12))")
    where = ""
    if warehouses is not None:
        duck.execute(f"CREATE OR REPLACE TEMP TABLE {table}_wh (warehouse VARCHAR)")
        duck.executemany(f"INSERT INTO {table}_wh VALUES (?)", [[w] for w in sorted(set(warehouses))])
        where = f" WHERE trim(warehouse) IN (SELECT warehouse FROM {table}_wh)"
    raw = store.engine.raw_connection()
    # A million row tuples would set off the cyclic garbage collector again and again (it
    # scanned them all each time, doubling the load); none of them can be part of a cycle.
    collecting = gc.isenabled()
    gc.disable()
    try:
        cursor = raw.cursor()
        try:
            cursor.execute(_select_sql(store, snapshot_id))
            while True:
                rows = cursor.fetchmany(chunk)
                if not rows:
                    break
                columns = list(zip(*rows))
                frame = {name: np.array(values, dtype=object) for name, values in zip(_COLUMNS, columns)}
                duck.register("_erphub_chunk", frame)
                duck.execute(
                    f"INSERT INTO {table} SELECT trim(sku), trim(warehouse), coalesce(trim(bin), ''), "
                    "coalesce(trim(lot), ''), CAST(on_hand AS DECIMAL(38,12)), upper(trim(unit)), "
                    f"CAST(unit_cost AS DECIMAL(38,12)) FROM _erphub_chunk{where}")
                duck.unregister("_erphub_chunk")
        finally:
            cursor.close()
    finally:
        raw.close()
        if collecting:
            gc.enable()
    return int(duck.execute(f"SELECT count(*) FROM {table}").fetchone()[0])

