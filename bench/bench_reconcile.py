"""Reconciliation at scale (RELIABILITY.md §6(ii) P4; issue 6): erphub's reconcile of two stored
balance snapshots against a plain full outer join of the same data, loaded the same way, in the
same run.

Setup (not timed): a temporary SQLite store holding two snapshots of ``--rows`` item-warehouse
balances each, written with bulk Core inserts. Side B is side A with 1% of the quantities
changed, 0.5% of the rows missing and 0.5% extra rows; 10% of the items are in KG with three
decimals, the rest in PCS.

Then, ``--repeat`` times each, alternating:

* baseline: both snapshots loaded with ``compare.snapshots.load_into_duckdb`` (the loader erphub
  uses: one plain SELECT per snapshot on the DBAPI cursor, chunks into DuckDB, quantities cast to
  DECIMAL(38,12)), then ``FULL OUTER JOIN … USING (sku, warehouse) WHERE qty IS DISTINCT FROM``
  with the differing rows fetched;
* pandas: the same rows fetched the same way into DataFrames, ``merge(how="outer")`` and a mask
  (exact: the store's decimals are normalised text, so equal text is equal quantity);
* erphub: ``compare.variance.reconcile_snapshots`` (load, aggregate per key, join, classify every
  differing row with exact Decimals, items and outbox looked up); rendering reports is excluded.

Prints the median wall times, the load and engine parts, the ratio erphub / DuckDB baseline
(target ≤ 1.5×) and erphub / pandas, and the peak resident memory (ru_maxrss) after each stage.
Benchmarks compare, they don't assert.

    python bench/bench_reconcile.py --rows 1000000 --repeat 3
"""
from __future__ import annotations

import argparse
import random
import resource
import statistics
import sys
import tempfile
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sqlalchemy import insert  # noqa: E402

from compare.snapshots import load_into_duckdb  # noqa: E402
from compare.variance import reconcile_snapshots  # noqa: E402
from sync.store import BalanceSnapshot, BalanceSnapshotRow, Store, utcnow  # noqa: E402

CHUNK = 50_000


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def build(store: Store, rows: int, seed: int = 7) -> tuple[int, int, dict[str, int]]:
    """Two snapshots; their ids and how many rows of each kind of difference were made."""
    rng = random.Random(seed)
    table = BalanceSnapshotRow.__table__
    with store.engine.begin() as conn:
        ids = []
        for label in ("system-a", "system-b"):
            result = conn.execute(insert(BalanceSnapshot.__table__).values(
                source_label=label, taken_at=utcnow(), row_count=0))
            ids.append(result.inserted_primary_key[0])
    a_id, b_id = ids
    made = {"changed": 0, "missing": 0, "extra": 0}

    def quantity(i: int) -> tuple[str, str]:  # the same on both sides: a function of the row
        if i % 10 == 0:
            return f"{(i * 7919) % 100_000 / 1000:.3f}", "KG"
        return str((i * 104_729) % 5_001), "PCS"

    def rows_of(snapshot_id: int, side: str):
        for i in range(rows):
            qty, unit = quantity(i)
            sku, warehouse = f"SKU{i // 3:07d}", f"WH{i % 3:02d}"
            if side == "b":
                roll = rng.random()
                if roll < 0.005:
                    made["missing"] += 1
                    continue
                if roll < 0.015:
                    made["changed"] += 1
                    qty = str(Decimal(qty) + rng.choice((-3, -1, 1, 2, 5)))
            yield {"snapshot_id": snapshot_id, "sku": sku, "warehouse": warehouse, "bin": None, "lot": None,
                   "on_hand": Decimal(qty), "available": None, "unit": unit, "unit_cost": None}
        if side == "b":
            for j in range(rows // 200):  # 0.5% extra
                made["extra"] += 1
                yield {"snapshot_id": snapshot_id, "sku": f"NEW{j:07d}", "warehouse": "WH09", "bin": None,
                       "lot": None, "on_hand": Decimal(rng.randint(1, 50)), "available": None, "unit": "PCS",
                       "unit_cost": None}

    for snapshot_id, side in ((a_id, "a"), (b_id, "b")):
        count = 0
        with store.engine.begin() as conn:
            batch: list[dict[str, Any]] = []
            for row in rows_of(snapshot_id, side):
                batch.append(row)
                if len(batch) == CHUNK:
                    conn.execute(insert(table), batch)
                    count += len(batch)
                    batch = []
            if batch:
                conn.execute(insert(table), batch)
                count += len(batch)
            conn.execute(BalanceSnapshot.__table__.update().where(BalanceSnapshot.id == snapshot_id)
                         .values(row_count=count))
    return a_id, b_id, made


def baseline_duckdb(store: Store, a: int, b: int, threads: int) -> dict[str, float]:
    import duckdb

    started = time.perf_counter()
    duck = duckdb.connect()
    duck.execute(f"SET threads = {threads}")
    load_into_duckdb(store, a, duck, "raw0")
    load_into_duckdb(store, b, duck, "raw1")
    loaded = time.perf_counter()
    diffs = duck.execute("SELECT sku, warehouse, l.qty, r.qty FROM raw0 l FULL OUTER JOIN raw1 r "
                         "USING (sku, warehouse) WHERE l.qty IS DISTINCT FROM r.qty").fetchall()
    done = time.perf_counter()
    duck.close()
    return {"load": loaded - started, "engine": done - loaded, "total": done - started, "diffs": len(diffs)}


def baseline_pandas(store: Store, a: int, b: int) -> dict[str, float]:
    import pandas as pd

    started = time.perf_counter()
    frames = []
    for snapshot_id in (a, b):
        raw = store.engine.raw_connection()
        try:
            cursor = raw.cursor()
            cursor.execute("SELECT sku, warehouse, on_hand, unit FROM balance_snapshot_row "
                           f"WHERE snapshot_id = {int(snapshot_id)}")
            columns = list(zip(*cursor.fetchall()))
        finally:
            raw.close()
        frames.append(pd.DataFrame(dict(zip(("sku", "warehouse", "qty", "unit"), columns))))
    loaded = time.perf_counter()
    merged = frames[0].merge(frames[1], on=["sku", "warehouse"], how="outer", suffixes=("_a", "_b"))
    diffs = merged[merged["qty_a"].ne(merged["qty_b"])]
    done = time.perf_counter()
    return {"load": loaded - started, "engine": done - loaded, "total": done - started, "diffs": len(diffs)}


def erphub(store: Store, a: int, b: int, threads: int) -> dict[str, float]:
    result = reconcile_snapshots(store, [a, b], threads=threads)
    t = result.timings
    return {"load": t["load"], "engine": t["align"] + t["classify"], "total": t["total"],
            "diffs": len(result.variances), "result": result}  # type: ignore[dict-item]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="item-warehouse balances per snapshot")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2, help="DuckDB threads (both paths)")
    parser.add_argument("--store", help="SQLite file to build (default: a temporary one)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(args.store) if args.store else Path(tmp) / "bench.db"
        print(f"building two snapshots of {args.rows:,} rows in {path} ...", flush=True)
        started = time.perf_counter()
        with Store.open(f"sqlite:///{path}") as store:
            store.upgrade()
            a, b, made = build(store, args.rows)
            print(f"  built in {time.perf_counter() - started:.1f} s: {made['changed']:,} changed, "
                  f"{made['missing']:,} missing, {made['extra']:,} extra; peak RSS {peak_mb():.0f} MB", flush=True)
            runs: dict[str, list[dict[str, Any]]] = {"duckdb": [], "pandas": [], "erphub": []}
            memory: dict[str, float] = {"after setup": peak_mb()}
            for n in range(args.repeat):
                runs["duckdb"].append(baseline_duckdb(store, a, b, args.threads))
                memory["after DuckDB baseline"] = peak_mb()
                runs["pandas"].append(baseline_pandas(store, a, b))
                memory["after pandas baseline"] = peak_mb()
                runs["erphub"].append(erphub(store, a, b, args.threads))
                memory["after erphub reconcile"] = peak_mb()
                print(f"  run {n + 1}: duckdb {runs['duckdb'][-1]['total']:.2f} s, pandas "
                      f"{runs['pandas'][-1]['total']:.2f} s, erphub {runs['erphub'][-1]['total']:.2f} s", flush=True)

    def med(name: str, part: str) -> float:
        return statistics.median(r[part] for r in runs[name])

    result = runs["erphub"][-1]["result"]
    print()
    print(f"{'path':<34}{'load s':>9}{'engine s':>10}{'total s':>9}{'diff rows':>11}")
    labels = {"duckdb": "DuckDB full outer join (baseline)", "pandas": "pandas merge(outer) + mask",
              "erphub": "erphub reconcile_snapshots"}
    for name in ("duckdb", "pandas", "erphub"):
        print(f"{labels[name]:<34}{med(name, 'load'):>9.2f}{med(name, 'engine'):>10.2f}{med(name, 'total'):>9.2f}"
              f"{runs[name][-1]['diffs']:>11,}")
    print()
    print(f"ratio erphub / DuckDB baseline, total:  {med('erphub', 'total') / med('duckdb', 'total'):.2f}  "
          "(target ≤ 1.5)")
    print(f"ratio erphub / DuckDB baseline, engine: {med('erphub', 'engine') / med('duckdb', 'engine'):.2f}  "
          "(after the same load: aggregate + join + classify vs join only)")
    print(f"ratio erphub / pandas, total:           {med('erphub', 'total') / med('pandas', 'total'):.2f}")
    print(f"erphub classes: {', '.join(f'{k.value} {v:,}' for k, v in result.counts.items())}; "
          f"match rate {result.match_rate:.4%}")
    print("peak resident memory (ru_maxrss, whole process, monotonic): "
          + "; ".join(f"{k} {v:,.0f} MB" for k, v in memory.items()))


if __name__ == "__main__":
    main()
