"""P3 (RELIABILITY.md §6(ii)): writing movements to the outbox, one business transaction each.

In one run, each pass on a fresh SQLite file with the store's settings (WAL, synchronous=NORMAL):

* ``single-row commits``  — the baseline: stdlib ``sqlite3``, one INSERT of a movement-sized row
                            (reference, kind, date, JSON payload, hash, time) and a COMMIT per row;
* ``sync.push.enqueue``   — the hub path: per transaction one movement and its outbox row (one
                            target), through ``Store.session()`` and ``enqueue`` (idempotency on the
                            reference, key derivation, ordering key), committed;
* ``enqueue_many ×100``   — for orientation: 100 movements per transaction (a pull page).

Prints movements/s for each and the ratio hub / baseline (target ≥ 0.5). Medians of ``--repeat``
runs. The output compares, it does not assert (STYLE.md "Benchmarks compare").

    python bench/bench_outbox_enqueue.py                  # 2,000 transactions × 3
    python bench/bench_outbox_enqueue.py --movements 10000 --repeat 5
"""
from __future__ import annotations

import argparse
import json
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_push_e2e import count_gains  # noqa: E402
import canonical  # noqa: E402
from connectors.base import ConnectionSettings  # noqa: E402
from sync.connections import Connections  # noqa: E402
from sync.push import enqueue, enqueue_many, payload_of  # noqa: E402
from sync.store import Store  # noqa: E402


def baseline(folder: Path, movements: list[canonical.Movement]) -> float:
    rows = [(m.reference, m.kind.value, m.document_date.isoformat(), json.dumps(payload_of(m)),
             canonical.content_hash(m)) for m in movements]
    conn = sqlite3.connect(folder / "baseline.db", isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("CREATE TABLE movement (id INTEGER PRIMARY KEY, reference TEXT UNIQUE, kind TEXT, "
                 "document_date TEXT, payload TEXT, content_hash TEXT, created_at REAL)")
    started = time.perf_counter()
    for row in rows:
        conn.execute("BEGIN")
        conn.execute("INSERT INTO movement (reference, kind, document_date, payload, content_hash, created_at) "
                     "VALUES (?, ?, ?, ?, ?, ?)", (*row, time.time()))
        conn.execute("COMMIT")
    elapsed = time.perf_counter() - started
    conn.close()
    return len(rows) / elapsed


def _store(folder: Path, name: str) -> tuple[Store, Connections]:
    store = Store.open(f"sqlite:///{folder / name}")
    store.upgrade()
    settings = {"erp": ConnectionSettings(platform="reference", url="http://127.0.0.1:9")}
    return store, Connections(store, settings, factory=lambda n, s: None)  # type: ignore[arg-type,return-value]


def hub_single(folder: Path, movements: list[canonical.Movement]) -> float:
    store, connections = _store(folder, "hub.db")
    try:
        connections.id("erp")
        started = time.perf_counter()
        for m in movements:
            with store.session() as s:
                enqueue(s, m, ["erp"], connections=connections)
        return len(movements) / (time.perf_counter() - started)
    finally:
        store.close()


def hub_pages(folder: Path, movements: list[canonical.Movement], page: int = 100) -> float:
    store, connections = _store(folder, "hub-pages.db")
    try:
        connections.id("erp")
        started = time.perf_counter()
        for start in range(0, len(movements), page):
            with store.session() as s:
                enqueue_many(s, movements[start:start + page], ["erp"], connections=connections)
        return len(movements) / (time.perf_counter() - started)
    finally:
        store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--movements", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    n = args.movements
    results: dict[str, list[float]] = {"base": [], "hub": [], "pages": []}
    for run in range(args.repeat):
        movements = count_gains(n, f"P3-{run}")
        folder = Path(tempfile.mkdtemp(prefix="erphub-p3-"))
        try:
            results["base"].append(baseline(folder, movements))
            results["hub"].append(hub_single(folder, movements))
            results["pages"].append(hub_pages(folder, movements))
        finally:
            shutil.rmtree(folder, ignore_errors=True)
    base, hub, pages = (statistics.median(results[k]) for k in ("base", "hub", "pages"))
    print(f"single-row commits (sqlite3, WAL+NORMAL)  {n:>7} txns  {base:9.0f} /s")
    print(f"sync.push.enqueue, 1 movement per txn     {n:>7} txns  {hub:9.0f} /s")
    print(f"enqueue_many, 100 movements per txn       {n:>7} mvts  {pages:9.0f} /s")
    print(f"ratio (enqueue / single-row commits): {hub / base:.3f}   target ≥ 0.5")
    print(f"ratio (enqueue_many x100 / single-row commits): {pages / base:.3f}")


if __name__ == "__main__":
    main()
