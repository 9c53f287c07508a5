"""Kingdee read throughput (RELIABILITY.md §6(ii) P5 style; the issue-3 target): the connector's
full read of items against a bare ``requests`` loop fetching the same pages, in the same run.

The simulator is seeded with ``--rows`` materials through its Python seed path (no HTTP) and
served on loopback. Then, ``--repeat`` times each, alternating:

* bare: one ``requests.Session`` POSTs the ExecuteBillQuery pages the connector sends (the same
  FieldKeys, FilterString, OrderString, StartRow/Limit paging, signed the same way; the session
  cookie the server hands out is kept by the Session) and ``json.loads`` each body, nothing more;
* connector: ``KingdeeConnector.read(Entity.ITEMS, page_size=--page-size)``, every page consumed,
  records counted (signing, envelope checks, mapping to canonical ``Item``, validation).

Prints the median rows/s of both and the ratio connector / bare (target ≥ 0.8). The simulator
shares the CPU with both clients, the same for both. Benchmarks compare, they don't assert.

    python bench/bench_kingdee_read.py --rows 50000 --repeat 3 [--profile]
"""
from __future__ import annotations

import argparse
import cProfile
import json
import pstats
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import requests  # noqa: E402

from connectors.base import Entity  # noqa: E402
from connectors.kingdee import KingdeeConnector, KingdeeSettings  # noqa: E402
from connectors.kingdee.client import FORM_SERVICE, SUFFIX, signature_headers  # noqa: E402
from connectors.kingdee.filters import all_of  # noqa: E402
from sandbox.kingdee import KingdeeSimulator  # noqa: E402
from sandbox.kingdee_auth import DEFAULT_ACCT_ID, DEFAULT_APP_ID, DEFAULT_APP_SECRET, DEFAULT_USER  # noqa: E402
from sandbox.world import World, WorldItem, WorldWarehouse  # noqa: E402


def seeded_simulator(rows: int, max_page_size: int) -> KingdeeSimulator:
    sim = KingdeeSimulator(max_page_size=max_page_size)
    items = tuple(WorldItem(f"MAT{i:06d}", f"物料{i}号", unit="PCS", spec=f"M{i % 97}", barcode=f"69{i:011d}",
                            batch_managed=i % 5 == 0) for i in range(rows))
    sim.seed_world(World(items=items, warehouses=(WorldWarehouse("CK001", "主仓"),)))
    return sim


def settings(base: str) -> KingdeeSettings:
    return KingdeeSettings(url=base, acct_id=DEFAULT_ACCT_ID, username=DEFAULT_USER, app_id=DEFAULT_APP_ID,
                           app_secret=DEFAULT_APP_SECRET)


def query_of(connector: KingdeeConnector) -> tuple[list[str], str, str]:
    """FieldKeys, FilterString and OrderString of the connector's full item read."""
    phase = connector._phases(Entity.ITEMS, None)[0]
    return phase.fields, all_of(phase.conditions), phase.order


def bare_read(base: str, fields: list[str], filter_string: str, order: str, page_size: int) -> int:
    """The baseline: POST each page, json.loads the body; no mapping, no envelope checks."""
    url = base + FORM_SERVICE + "ExecuteBillQuery" + SUFFIX
    headers = {"Content-Type": "application/json", "Accept-Charset": "utf-8",
               **signature_headers(url, acct_id=DEFAULT_ACCT_ID, username=DEFAULT_USER, app_id=DEFAULT_APP_ID,
                                   app_secret=DEFAULT_APP_SECRET, lcid=2052, org_num="0",
                                   timestamp=int(time.time()))}
    keys = ",".join(fields)
    total, start = 0, 0
    with requests.Session() as http:
        while True:
            body = {"data": {"FormId": "BD_MATERIAL", "FieldKeys": keys, "FilterString": filter_string,
                             "OrderString": order, "TopRowCount": 0, "StartRow": start, "Limit": page_size}}
            answer = http.post(url, data=json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode(),
                               headers=headers, timeout=(5, 120))
            rows = json.loads(answer.content)
            total += len(rows)
            if len(rows) < page_size:
                return total
            start += len(rows)


def connector_read(base: str, page_size: int) -> int:
    connector = KingdeeConnector(settings(base))
    try:
        return sum(len(page.records) + len(page.errors)
                   for page in connector.read(Entity.ITEMS, page_size=page_size))
    finally:
        connector.close()


def timed(fn: Any, *args: Any) -> tuple[int, float, float]:
    """(result, wall seconds, CPU seconds of this process: client and simulator threads together)."""
    started, cpu = time.perf_counter(), time.process_time()
    count = fn(*args)
    return count, time.perf_counter() - started, time.process_time() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=50_000)
    parser.add_argument("--page-size", type=int, default=2000)
    parser.add_argument("--max-page-size", type=int, default=10_000, help="the simulator's WebAPIMaxQueryLimit")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--profile", action="store_true", help="cProfile one connector read (client side only)")
    args = parser.parse_args()

    started = time.perf_counter()
    sim = seeded_simulator(args.rows, args.max_page_size)
    print(f"seeded {args.rows} materials in {time.perf_counter() - started:.2f} s")
    with sim.serve() as server:
        base = f"{server.url}/k3cloud/"
        probe = KingdeeConnector(settings(base))
        fields, filter_string, order = query_of(probe)
        probe.close()
        # warm up both paths (imports, first session, the simulator's indexes)
        bare_read(base, fields, filter_string, order, args.page_size)
        connector_read(base, args.page_size)
        bare_times, conn_times, bare_cpu, conn_cpu = [], [], [], []
        for _ in range(args.repeat):
            count, seconds, cpu = timed(bare_read, base, fields, filter_string, order, args.page_size)
            assert count == args.rows, f"bare loop read {count} rows, expected {args.rows}"
            bare_times.append(seconds)
            bare_cpu.append(cpu)
            count, seconds, cpu = timed(connector_read, base, args.page_size)
            assert count == args.rows, f"connector read {count} records, expected {args.rows}"
            conn_times.append(seconds)
            conn_cpu.append(cpu)
        if args.profile:
            profiler = cProfile.Profile()
            profiler.enable()
            connector_read(base, args.page_size)
            profiler.disable()
            pstats.Stats(profiler).sort_stats("cumulative").print_stats(30)
    bare, conn = statistics.median(bare_times), statistics.median(conn_times)
    print(f"bare requests loop   {args.rows} rows  {bare:.2f} s   {args.rows / bare:.0f} rows/s")
    print(f"connector.read       {args.rows} rows  {conn:.2f} s   {args.rows / conn:.0f} rows/s")
    print(f"ratio (connector / bare): {bare / conn:.2f}")
    print(f"(medians of {args.repeat}; page size {args.page_size}; runs: bare "
          f"{', '.join(f'{t:.2f}' for t in bare_times)} s, connector {', '.join(f'{t:.2f}' for t in conn_times)} s)")
    # CPU seconds of this process (client + in-process simulator) are less disturbed by other
    # load on a shared box than wall time; the same ratio, measured on CPU.
    print(f"cpu: bare {statistics.median(bare_cpu):.2f} s, connector {statistics.median(conn_cpu):.2f} s, "
          f"ratio {statistics.median(bare_cpu) / statistics.median(conn_cpu):.2f}")


if __name__ == "__main__":
    main()
