"""Peak memory of a migration as the source grows (issue 5: a 200,000-item migration may need
less than 20% more memory than a 50,000-item one; it streams, it does not load everything).

This process serves two reference ERP simulators (the source seeded through Python with
``--small`` / ``--large`` items, their warehouses and a balance per item; the target empty) and
runs each migration — warehouses, items, opening balances, delivery, reconciliation — in a
**child process** with its own SQLite store, so the simulators' own memory is not counted. The
child reports:

* ``peak RSS``: its peak resident set size (``VmHWM``; see :func:`peak_kb` for why not
  ``ru_maxrss``), interpreter and imports included;
* ``baseline``: its resident set size just before the migration starts (imports done, connectors
  built), so ``peak - baseline`` is what the migration itself added.

Printed: both figures per size and the growth ratios large / small (target < 1.2 for the peak).
The simulators used here page through cached sorted keys (the reference simulator re-sorts every
table on every page, which is quadratic at these sizes); their protocol is unchanged.
Benchmarks compare, they don't assert.

    python bench/bench_migrate_memory.py [--small 50000] [--large 200000] [--entities items,warehouses,balances]
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.reference.simulator import PASSWORD, USER, ReferenceErp  # noqa: E402


class PagedReferenceErp(ReferenceErp):
    """The reference ERP with O(page) paging: sorted keys and stock rows cached until they change."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._keys: dict[str, tuple[int, list[str]]] = {}
        self._stock: tuple[int, dict[str, list[dict[str, Any]]]] | None = None

    def list_master(self, request: Any, entity: str) -> Any:
        if request.args.get("modified_since"):
            return super().list_master(request, entity)
        self._session(request)
        table = {"items": self.items, "warehouses": self.warehouses, "partners": self.partners}[entity]
        with self.lock:
            cached = self._keys.get(entity)
            if cached is None or cached[0] != len(table):
                cached = (len(table), sorted(table))
                self._keys[entity] = cached
            return self._slice(request, [table[k] for k in self._window(request, cached[1])], len(cached[1]))

    def stock(self, request: Any) -> Any:
        self._session(request)
        warehouse = request.args.get("warehouse") or ""
        with self.lock:
            version = len(self.documents)
            if self._stock is None or self._stock[0] != version:
                now = self.clock()
                by_warehouse: dict[str, list[dict[str, Any]]] = {"": []}
                for k, q in self.ledger.balances().items():
                    if q != 0:
                        row = {"item": k.sku, "warehouse": k.warehouse, "bin": k.bin, "lot": k.lot, "qty": str(q),
                               "uom": self.items[k.sku]["uom"] if k.sku in self.items else None, "modified": now}
                        by_warehouse[""].append(row)
                        by_warehouse.setdefault(k.warehouse, []).append(row)
                self._stock = (version, by_warehouse)
            rows = self._stock[1].get(warehouse, [])
            return self._slice(request, self._window(request, rows), len(rows))

    @staticmethod
    def _window(request: Any, rows: list[Any]) -> list[Any]:
        offset, limit = int(request.args.get("offset", "0")), min(int(request.args.get("limit", "50")), 100)
        return rows[offset: offset + limit]

    def _slice(self, request: Any, chunk: list[dict[str, Any]], total: int) -> Any:
        from sandbox.jsonio import json_response
        from tests.reference.simulator import stamp

        offset, limit = int(request.args.get("offset", "0")), min(int(request.args.get("limit", "50")), 100)
        more = offset + limit < total
        out = [{**r, "modified": stamp(r["modified"])} for r in chunk]
        return json_response({"ok": True, "rows": out, "next": str(offset + limit) if more else None})


def seeded(items: int, warehouses: int = 8) -> PagedReferenceErp:
    from sandbox.world import World, WorldBalance, WorldItem, WorldWarehouse

    whs = tuple(WorldWarehouse(f"WH{w:02d}", f"仓库 {w}") for w in range(warehouses))
    its = tuple(WorldItem(f"SKU-{n:07d}", f"物料 {n} 号", "KG" if n % 7 == 0 else "PCS", spec=f"S{n % 97}")
                for n in range(items))
    bals = tuple(WorldBalance(i.sku, whs[n % warehouses].code, Decimal(n % 90 + 1)) for n, i in enumerate(its))
    sim = PagedReferenceErp()
    sim.seed_world(World(items=its, warehouses=whs, balances=bals))
    return sim


def _status_kb(field: str) -> int | None:
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def rss_kb() -> int:
    """Current resident set size (kB), from /proc; the peak when /proc is not there."""
    return _status_kb("VmRSS") or resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def peak_kb() -> int:
    """Peak resident set size (kB) of this process image: ``VmHWM``. Not ``ru_maxrss``: Linux
    carries that over ``execve`` from the forked copy of the parent, which here holds the
    simulators' data and grows with the source (a 200k-item parent made a child "peak" at 300 MiB)."""
    return _status_kb("VmHWM") or resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def child(args: argparse.Namespace) -> None:
    """Run one migration against the served simulators; print JSON figures."""
    from pydantic import SecretStr

    from sync.connections import Connections
    from sync.migrate import MigrateOptions, migrate
    from sync.retry import RetryPolicy
    from sync.store import Store
    from tests.reference.connector import ReferenceConnector, ReferenceSettings

    settings = {name: ReferenceSettings(url=url, user=USER, password=SecretStr(PASSWORD), read_timeout=60.0)
                for name, url in (("src", args.source_url), ("dst", args.target_url))}
    with Store.open(f"sqlite:///{args.db}") as store:
        store.upgrade()
        with Connections(store, settings, factory=lambda n, s: ReferenceConnector(s, name=n)) as connections:
            for name in settings:
                connections.connector(name).check()
                connections.id(name)
            baseline = rss_kb()
            started = time.perf_counter()
            result = migrate(store, connections, MigrateOptions(source="src", target="dst",
                                                                entities=tuple(args.entities.split(","))),
                             policy=RetryPolicy(scale=0.01, lease_seconds=60))
            seconds = time.perf_counter() - started
    print(json.dumps({"baseline_kb": baseline, "maxrss_kb": peak_kb(),
                      "seconds": seconds, "ok": result.ok, "items": result.phases["items"].read
                      if "items" in result.phases else 0}))


def measure(items: int, entities: str) -> dict[str, Any]:
    source, target = seeded(items), PagedReferenceErp()
    with source.serve() as src, target.serve() as dst, tempfile.TemporaryDirectory() as tmp:
        command = [sys.executable, __file__, "--child", "--source-url", src.url, "--target-url", dst.url,
                   "--db", str(Path(tmp) / "hub.db"), "--entities", entities]
        done = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "PYTHONHASHSEED": "0"})
        if done.returncode != 0:
            raise SystemExit(f"the {items}-item migration failed:\n{done.stdout}\n{done.stderr}")
        figures = json.loads(done.stdout.strip().splitlines()[-1])
    figures["n"] = items
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--small", type=int, default=50_000)
    parser.add_argument("--large", type=int, default=200_000)
    parser.add_argument("--entities", default="warehouses,items,balances")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--source-url", help=argparse.SUPPRESS)
    parser.add_argument("--target-url", help=argparse.SUPPRESS)
    parser.add_argument("--db", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    rows = [measure(n, args.entities) for n in (args.small, args.large)]
    for r in rows:
        added = r["maxrss_kb"] - r["baseline_kb"]
        print(f"migrate {r['n']:>8,} items  {r['seconds']:7.1f} s  {r['n'] / r['seconds']:7,.0f} items/s  "
              f"peak RSS {r['maxrss_kb'] / 1024:7.1f} MiB  (baseline {r['baseline_kb'] / 1024:6.1f} MiB, "
              f"migration added {added / 1024:6.1f} MiB)  reconciled: {'match' if r['ok'] else 'DIFFERENT'}")
    small, large = rows
    print(f"growth of peak RSS ({large['n']:,} / {small['n']:,} items): "
          f"{large['maxrss_kb'] / small['maxrss_kb']:.3f} (target < 1.2)")
    added_small = max(small["maxrss_kb"] - small["baseline_kb"], 1)
    print(f"growth of the memory the migration added: {(large['maxrss_kb'] - large['baseline_kb']) / added_small:.3f} "
          f"(for a {large['n'] / small['n']:.0f}x larger source)")


if __name__ == "__main__":
    main()
