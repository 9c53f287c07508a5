"""P3 (RELIABILITY.md §6(ii)): writing movements to the outbox, one business transaction each.

The store runs SQLite in WAL mode at ``synchronous=NORMAL``, but a transaction that *accepts*
movements from outside commits at ``synchronous=FULL`` (``Store.session(durable=True)``,
``sync.push.accept``: an acknowledged movement must survive a power loss). So the run measures
both settings; for each, on fresh SQLite files, in one process:

* ``single-row commits``       — the baseline: stdlib ``sqlite3`` with the same PRAGMAs (WAL and
                                 that ``synchronous``), one INSERT of a movement-sized row
                                 (reference, kind, date, JSON payload, hash, time) and a COMMIT;
* ``sync.push.accept``         — the hub path: one movement and its outbox row (one target) per
                                 transaction through the intake entry point (idempotency on the
                                 reference, key derivation, ordering key), committed; durable at
                                 FULL, ``durable=False`` for the NORMAL orientation figure;
* ``session + enqueue``        — the same through ``Store.session(durable=…)`` and ``enqueue``
                                 (what a caller holding a session does), for orientation;
* ``enqueue_many ×100``        — 100 movements per transaction (a pull page / a file), for orientation;
* ``schema floor``             — stdlib ``sqlite3`` writing the same two rows (values worked out
                                 beforehand) into the hub's own tables and indexes: what the schema
                                 costs before any hub code runs (each commit writes ~9 pages to the
                                 WAL where the baseline writes ~2), for orientation.

Prints movements/s for each and the ratios hub / baseline. The P3 gate is the FULL ratio of
``accept`` (target ≥ 0.5); NORMAL is for orientation. Medians of ``--repeat`` runs (the order of
the paths rotates between runs). The output compares, it does not assert (STYLE.md "Benchmarks
compare").

    python bench/bench_outbox_enqueue.py                  # 2,000 transactions × 5
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
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_push_e2e import count_gains  # noqa: E402
import canonical  # noqa: E402
from connectors.base import ConnectionSettings  # noqa: E402
from sync.connections import Connections, ensure_connection  # noqa: E402
from sync.push import accept, enqueue, enqueue_many, idempotency_key, ordering_key, payload_of  # noqa: E402
from sync.store import Store  # noqa: E402

SETTINGS = {"FULL": True, "NORMAL": False}  # synchronous level → durable
PATHS = ("base", "accept", "session", "pages", "floor")


def baseline(folder: Path, movements: list[canonical.Movement], durable: bool) -> float:
    synchronous = "FULL" if durable else "NORMAL"
    rows = [(m.reference, m.kind.value, m.document_date.isoformat(), json.dumps(payload_of(m)),
             canonical.content_hash(m)) for m in movements]
    conn = sqlite3.connect(folder / "baseline.db", isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(f"PRAGMA synchronous={synchronous}")
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


def schema_floor(folder: Path, movements: list[canonical.Movement], durable: bool) -> float:
    """Orientation: stdlib ``sqlite3`` writing the hub's two rows (movement + outbox, all values
    worked out beforehand) into the hub's own tables and indexes, same PRAGMAs; no hub code."""
    store = Store.open(f"sqlite:///{folder / 'floor.db'}")
    try:
        store.upgrade()
        with store.session() as s:
            target = ensure_connection(s, "erp", "reference")
    finally:
        store.close()
    stamp = "2026-01-05 09:00:00.000000"
    rows = [((m.reference, m.kind.value, m.document_date.isoformat(), m.model_dump_json(exclude_none=True),
              canonical.content_hash(m), stamp), (idempotency_key(m.reference, "erp"), ordering_key(m)))
            for m in movements]
    conn = sqlite3.connect(folder / "floor.db", isolation_level=None)
    conn.execute(f"PRAGMA synchronous={'FULL' if durable else 'NORMAL'}")
    conn.execute("PRAGMA foreign_keys=ON")
    started = time.perf_counter()
    for movement, (key, order) in rows:
        conn.execute("BEGIN IMMEDIATE")
        movement_id = conn.execute("INSERT INTO movement (reference, kind, document_date, payload, content_hash, "
                                   "created_at) VALUES (?, ?, ?, ?, ?, ?)", movement).lastrowid
        conn.execute("INSERT INTO outbox (movement_id, target_connection_id, idempotency_key, ordering_key, status, "
                     "outcome_unknown, attempts, next_attempt_at, created_at, updated_at) "
                     "VALUES (?, ?, ?, ?, 'pending', 0, 0, ?, ?, ?)", (movement_id, target, key, order, stamp, stamp, stamp))
        conn.execute("COMMIT")
    elapsed = time.perf_counter() - started
    conn.close()
    return len(rows) / elapsed


def _timed(folder: Path, name: str, run: Callable[[Store, Connections], int]) -> float:
    store = Store.open(f"sqlite:///{folder / name}")
    try:
        store.upgrade()
        settings = {"erp": ConnectionSettings(platform="reference", url="http://127.0.0.1:9")}
        connections = Connections(store, settings, factory=lambda n, s: None)  # type: ignore[arg-type,return-value]
        connections.id("erp")
        started = time.perf_counter()
        count = run(store, connections)
        return count / (time.perf_counter() - started)
    finally:
        store.close()


def hub_accept(folder: Path, movements: list[canonical.Movement], durable: bool) -> float:
    def run(store: Store, connections: Connections) -> int:
        for m in movements:
            accept(store, [m], ["erp"], connections=connections, durable=durable)
        return len(movements)

    return _timed(folder, "hub-accept.db", run)


def hub_session(folder: Path, movements: list[canonical.Movement], durable: bool) -> float:
    def run(store: Store, connections: Connections) -> int:
        for m in movements:
            with store.session(durable=durable) as s:
                enqueue(s, m, ["erp"], connections=connections)
        return len(movements)

    return _timed(folder, "hub-session.db", run)


def hub_pages(folder: Path, movements: list[canonical.Movement], durable: bool, page: int = 100) -> float:
    def run(store: Store, connections: Connections) -> int:
        for start in range(0, len(movements), page):
            with store.session(durable=durable) as s:
                enqueue_many(s, movements[start:start + page], ["erp"], connections=connections)
        return len(movements)

    return _timed(folder, "hub-pages.db", run)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--movements", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    n = args.movements
    results: dict[tuple[str, str], list[float]] = {(s, p): [] for s in SETTINGS for p in PATHS}
    for run in range(args.repeat):
        for level, durable in SETTINGS.items():
            movements = count_gains(n, f"P3-{level}-{run}")
            folder = Path(tempfile.mkdtemp(prefix="erphub-p3-"))
            measure = {"base": baseline, "accept": hub_accept, "session": hub_session, "pages": hub_pages,
                       "floor": schema_floor}
            order = PATHS[run % len(PATHS):] + PATHS[:run % len(PATHS)]
            try:
                for path in order:
                    results[(level, path)].append(measure[path](folder, movements, durable))
            finally:
                shutil.rmtree(folder, ignore_errors=True)
    for level in SETTINGS:
        base, hub, session, pages, floor = (statistics.median(results[(level, p)]) for p in PATHS)
        gate = "P3 gate, target ≥ 0.5" if level == "FULL" else "orientation"
        print(f"WAL+{level}: single-row commits (sqlite3)         {n:>7} txns  {base:9.0f} /s")
        print(f"WAL+{level}: sync.push.accept, 1 movement per txn {n:>7} txns  {hub:9.0f} /s")
        print(f"WAL+{level}: session + enqueue, 1 per txn         {n:>7} txns  {session:9.0f} /s")
        print(f"WAL+{level}: enqueue_many, 100 per txn            {n:>7} mvts  {pages:9.0f} /s")
        print(f"WAL+{level}: schema floor (sqlite3, hub's 2 rows) {n:>7} txns  {floor:9.0f} /s")
        print(f"WAL+{level}: ratio accept / single-row commits: {hub / base:.3f}   ({gate}); "
              f"session+enqueue {session / base:.3f}; enqueue_many x100 {pages / base:.3f}; "
              f"schema floor {floor / base:.3f} (accept / floor {hub / floor:.3f})")

if __name__ == "__main__":
    main()
