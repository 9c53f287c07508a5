"""P2 (RELIABILITY.md §6(ii)): bulk master-data load, the hub's store step against raw ``executemany``.

In one run, each pass on fresh SQLite files with the store's settings (WAL, synchronous=NORMAL,
as ``sync/store/engine.py`` sets them):

* ``executemany``        — the baseline: stdlib ``sqlite3.executemany`` of N item rows with the
                           columns the hub stores (sku, content hash, JSON payload, source
                           connection, source modified time, created/updated times) into a table
                           with the same unique key on ``sku``, in one transaction. Its rows are
                           built (hash and JSON computed) before the clock starts;
* ``pull (load)``        — the hub path: ``sync.pull.pull(..., "items", mode="full")`` on a
                           migrated store, from a connector that yields **pre-built pages of
                           canonical ``Item``s** from memory, so connector, HTTP and mapping time
                           is excluded. What is timed is what the hub does with a page: code-map
                           translation of the keys, ``id_map`` binding, upsert into ``item`` with
                           content-hash change detection (hash and JSON payload computed here),
                           resolving stale dead letters, and the run's checkpoint, one
                           transaction per page;
* ``pull (no change)``   — for orientation: the same N records pulled again (the incremental
                           no-op case: every hash unchanged, every binding already there);
* ``pull (1% changed)``  — for orientation: again, with 1% of the items renamed.

Prints rows/s for each and the ratio load / baseline (target ≥ 0.2). Medians of ``--repeat``
runs. The output compares, it does not assert (STYLE.md "Benchmarks compare").

    python bench/bench_master_load.py --rows 100000             # 1-2 min with 3 repeats
    python bench/bench_master_load.py                           # 1,000,000 rows × 1: about 4 min
    python bench/bench_master_load.py --rows 1000000 --repeat 3 # about 3× that

At 1M rows building the canonical records alone takes about a minute; the process peaks at
about 3 GB of memory.
"""
from __future__ import annotations

import argparse
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from canonical import Item
from connectors.base import Capabilities, ConnectionSettings, Connector, Entity, Page
from sync.connections import Connections
from sync.pull import pull
from sync.store import Store
from sync.store.types import json_dumps

BASE_TIME = datetime(2026, 1, 1, tzinfo=UTC)
BASELINE_DDL = (
    "CREATE TABLE item (id INTEGER PRIMARY KEY, content_hash VARCHAR(128) NOT NULL, payload JSON NOT NULL, "
    "source_connection_id INTEGER, source_modified_at DATETIME, created_at DATETIME NOT NULL, "
    "updated_at DATETIME NOT NULL, sku VARCHAR(255) NOT NULL, CONSTRAINT uq_item_sku UNIQUE (sku))"
)


def make_items(n: int, tag: str = "") -> list[Item]:
    """N realistic items: name, spec, unit, category, barcode, cost, attributes, modified time."""
    units = ("PCS", "BOX", "KG", "M")
    return [Item(sku=f"SKU-{i:07d}", name=f"Item {i}{tag}", spec=f"{i % 50} x {i % 7} mm",
                 base_unit=units[i % 4], category=f"CAT-{i % 40:02d}", barcode=f"69{i:011d}",
                 standard_cost=Decimal(i % 1000) / 100 + Decimal("0.05"),
                 attributes={"size": "SML"[i % 3], "colour": ("red", "blue")[i % 2]},
                 modified_at=BASE_TIME + timedelta(seconds=i))
            for i in range(n)]


def changed(items: list[Item], every: int = 100) -> list[Item]:
    """The same items with every ``every``-th one renamed (and its modified time bumped)."""
    out = list(items)
    for i in range(0, len(out), every):
        out[i] = out[i].replace(name=out[i].name + " (renamed)", modified_at=out[i].modified_at + timedelta(days=1))
    return out


# --- baseline ---------------------------------------------------------------------------------


def baseline_rows(items: Sequence[Item]) -> list[tuple[Any, ...]]:
    now = datetime.now(UTC).isoformat()
    return [(i.sku, i.content_hash(), json_dumps(i.model_dump(mode="json")), 1,
             i.modified_at.isoformat() if i.modified_at else None, now, now) for i in items]


def baseline(folder: Path, rows: list[tuple[Any, ...]]) -> float:
    conn = sqlite3.connect(folder / "baseline.db", isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute(BASELINE_DDL)
        started = time.perf_counter()
        conn.execute("BEGIN")
        conn.executemany("INSERT INTO item (sku, content_hash, payload, source_connection_id, source_modified_at, "
                         "created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?)", rows)
        conn.execute("COMMIT")
        return len(rows) / (time.perf_counter() - started)
    finally:
        conn.close()


# --- hub path ---------------------------------------------------------------------------------


class _Memory(Connector):
    """A connector that yields pre-built pages of items from memory (no HTTP, no mapping)."""

    platform = "memory"
    items: Sequence[Item] = ()

    @property
    def capabilities(self) -> Capabilities:
        return Capabilities(entities=frozenset({Entity.ITEMS}), movement_kinds=frozenset(),
                            max_page_size=1_000_000)

    def check(self) -> Any:  # pragma: no cover - not used
        raise NotImplementedError

    def read(self, entity: Entity, *, since: datetime | None = None, resume: str | None = None,
             page_size: int | None = None) -> Iterator[Page[Item]]:
        size = page_size or 1000
        items = self.items
        for start in range(int(resume or 0), len(items), size):
            end = min(start + size, len(items))
            chunk = tuple(items[start:end])
            yield Page(chunk, resume=str(end) if end < len(items) else None,
                       max_modified=max((i.modified_at for i in chunk if i.modified_at), default=None))

    def read_balances(self, **_: Any) -> Iterator[Page[Any]]:  # pragma: no cover - not used
        raise NotImplementedError

    def push(self, movement: Any, key: str) -> Any:  # pragma: no cover - not used
        raise NotImplementedError

    def find(self, key: str) -> Any:  # pragma: no cover - not used
        raise NotImplementedError


def hub(folder: Path, loads: Sequence[tuple[str, list[Item]]], page: int) -> dict[str, float]:
    """Pull each of ``loads`` in turn into one fresh store; rows/s per load."""
    store = Store.open(f"sqlite:///{folder / 'hub.db'}")
    store.upgrade()
    connector = _Memory(ConnectionSettings(platform="memory", url="http://127.0.0.1:9"), name="erp")
    connections = Connections(store, {"erp": connector.settings}, factory=lambda name, settings: connector)
    out: dict[str, float] = {}
    try:
        for label, items in loads:
            connector.items = items
            started = time.perf_counter()
            result = pull(store, connections, "erp", "items", mode="full", page_size=page)
            elapsed = time.perf_counter() - started
            if result.read != len(items) or result.failed:
                raise SystemExit(f"{label}: read {result.read} of {len(items)}, {result.failed} failed")
            out[label] = len(items) / elapsed
            out[label + " written"] = result.written
        return out
    finally:
        connections.close()
        store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=None, help="default: 3, or 1 at 500,000 rows and more")
    parser.add_argument("--page", type=int, default=1000, help="records per connector page (one transaction each)")
    args = parser.parse_args()
    n = args.rows
    repeat = args.repeat or (1 if n >= 500_000 else 3)
    started = time.perf_counter()
    items = make_items(n)
    renamed = changed(items)
    rows = baseline_rows(items)
    print(f"built {n} items in {time.perf_counter() - started:.1f} s; page {args.page}, {repeat} run(s)",
          flush=True)
    results: dict[str, list[float]] = {}
    loads = [("load", items), ("no change", items), ("1% changed", renamed)]
    for _ in range(repeat):
        folder = Path(tempfile.mkdtemp(prefix="erphub-p2-"))
        try:
            results.setdefault("base", []).append(baseline(folder, rows))
            for label, value in hub(folder, loads, args.page).items():
                results.setdefault(label, []).append(value)
        finally:
            shutil.rmtree(folder, ignore_errors=True)
    med = {label: statistics.median(values) for label, values in results.items()}
    print(f"executemany (sqlite3, WAL+NORMAL, 1 txn)   {n:>8} rows  {med['base']:9.0f} rows/s")
    for label in ("load", "no change", "1% changed"):
        print(f"pull items, {label:<12} (page {args.page:>5})  {n:>8} rows  {med[label]:9.0f} rows/s"
              f"  ({med[label + ' written']:.0f} written)")
    print(f"ratio (pull load / executemany): {med['load'] / med['base']:.3f}   target ≥ 0.2")
    print(f"ratio (pull no change / executemany): {med['no change'] / med['base']:.3f}")
    print(f"ratio (pull 1% changed / executemany): {med['1% changed'] / med['base']:.3f}")


if __name__ == "__main__":
    main()
