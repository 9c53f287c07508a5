"""P9 (RELIABILITY.md §6(ii)): an operator replays dead letters once their cause is fixed.

In one run, against the reference ERP simulator on loopback:

* ``P6 per-item rate``  — the baseline: ``--items`` count gains written to the outbox and delivered
                          (as in ``bench_push_e2e.py``), items ÷ (enqueue + delivery time): the
                          step that makes the rows due is in both rates (enqueue here, the
                          error queue's retry in the replay);
* ``replay``            — ``--items`` sales issues refused by the simulator (negative stock) sit in
                          the error queue; stock is then put on the simulator (the fix), and
                          ``sync.errorqueue.retry`` re-queues every entry in one transaction and the
                          same delivery path delivers them: items ÷ (retry + delivery time).

Both spread over the same 20 stock positions (20 ordering keys). Prints both rates and the ratio
replay / P6 (target ≥ 0.8), then the delivery parts alone (replay delivery vs P6's outbox →
delivered), for the embedded hub and/or a ``deliver_due`` loop, and checks that
every replayed item is one document at the simulator. The output compares, it does not assert
(STYLE.md "Benchmarks compare").

The simulator runs in a child process by default, as in ``bench_push_e2e.py`` (``--server``).

    python bench/bench_replay.py                    # 1,000 dead letters
    python bench/bench_replay.py --items 300 --path loop
"""
from __future__ import annotations

import argparse
import logging
import sys
import time
from decimal import Decimal
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_push_e2e import (SERVER, SKUS, WAREHOUSES, _checked, connections_for, deliver_loop,  # noqa: E402
                            hub_pass, hub_store, reference_erp)
from sqlalchemy import select  # noqa: E402

from sync import errorqueue  # noqa: E402
from sync.broker import BrokerConfig  # noqa: E402
from sync.push import enqueue_many  # noqa: E402
from sync.retry import RetryPolicy  # noqa: E402
from sync.runner import Hub  # noqa: E402
from sync.store import ErrorQueue, ErrorStatus  # noqa: E402
from tests.conformance.kit import movement  # noqa: E402

TOO_MANY = "1000000"


def refused_issues(n: int, prefix: str):
    return [movement("sales_issue", reference=f"{prefix}-{i:06d}",
                     lines=[(SKUS[i % len(SKUS)], TOO_MANY)], source=WAREHOUSES[(i // len(SKUS)) % len(WAREHOUSES)])
            for i in range(n)]


def deliver(store, connections, path: str, threads: int) -> None:
    if path == "hub":
        with Hub(store, connections, [], BrokerConfig("memory://"), policy=RetryPolicy(), threads=threads,
                 resend_after=5.0) as hub:
            hub.drain(["ref"], timeout=3600)
    else:
        deliver_loop(store, connections, RetryPolicy(), timeout=3600)


def replay_pass(n: int, path: str, threads: int) -> tuple[float, float, object]:
    with reference_erp() as erp, hub_store() as store:
        with connections_for(store, erp.url) as connections:
            with store.session() as s:
                enqueue_many(s, refused_issues(n, f"P9{path}"), ["ref"], connections=connections)
            deliver(store, connections, path, threads)
            with store.session() as s:
                ids = list(s.scalars(select(ErrorQueue.id).where(ErrorQueue.status == ErrorStatus.OPEN)))
            if len(ids) != n:
                raise RuntimeError(f"expected {n} dead letters, found {len(ids)}")
            # the fix: plenty of stock on every position
            erp.seed_balances({(sku, wh, None, None): Decimal(10) ** 12 for sku in SKUS for wh in WAREHOUSES})
            started = time.perf_counter()
            with store.session() as s:
                errorqueue.retry(s, ids, by="bench")
            retried = time.perf_counter()
            deliver(store, connections, path, threads)
            done = time.perf_counter()
            check = _checked(store, erp, n, retried - started, done - retried)
    return retried - started, done - retried, check


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--items", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--path", choices=("hub", "loop", "both"), default="both")
    parser.add_argument("--server", choices=("process", "thread"), default="process",
                        help="where the simulator runs (see bench_push_e2e.py)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.CRITICAL)
    SERVER["mode"] = args.server
    n = args.items
    for path in (("hub", "loop") if args.path == "both" else (args.path,)):
        p6 = hub_pass(n, threads=args.threads, prefix=f"P9base{path}", path=path)
        p6_time = p6.enqueue + p6.deliver
        p6_rate = n / p6_time
        retry, delivery, check = replay_pass(n, path, args.threads)
        rate = n / (retry + delivery)
        print(f"{path}: P6 per-item rate      {n:>6} items {p6_time:7.2f} s {p6_rate:8.1f} /s  "
              f"(enqueue {p6.enqueue:.2f} s + deliver {p6.deliver:.2f} s)")
        print(f"{path}: replay (retry+deliver) {n:>6} items {retry + delivery:7.2f} s {rate:8.1f} /s  "
              f"(retry {retry:.2f} s + deliver {delivery:.2f} s; sent {check.sent}, lost {check.lost}, "
              f"dup {check.duplicated})")
        print(f"{path}: ratio (replay / P6): {rate / p6_rate:.2f}   target ≥ 0.8   "
              f"(delivery alone: {p6.deliver / delivery:.2f})")


if __name__ == "__main__":
    main()
