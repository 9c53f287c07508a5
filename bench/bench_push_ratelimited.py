"""P8 (RELIABILITY.md §6(ii)): pushing to a simulator that enforces N requests per second.

The reference ERP simulator gets a ``RateLimit`` rule (sandbox/faults.py): at most N document POSTs
in any 1-second window, then 429 + Retry-After. The connection's ``rate_limit_per_second`` is set to
N, so the engine's limiter (:mod:`sync.ratelimit`, a GCRA token bucket taken before each delivery)
keeps to it. The embedded hub (in-process broker, worker threads) delivers the movements.

Printed, from the simulator's own call log: the achieved rate of accepted POSTs (first to last
accepted) against N (target ≥ 0.9), and the share of POSTs refused with 429 (target ≤ 1%). The
output compares, it does not assert (STYLE.md "Benchmarks compare").

    python bench/bench_push_ratelimited.py                       # N = 20/s (Jiandaoyun data/create), 300 movements
    python bench/bench_push_ratelimited.py --rate 50 --movements 1000 --threads 8
    python bench/bench_push_ratelimited.py --headroom 0.95     # configure 5% under the vendor's limit

Rows refused with 429 are retried (Retry-After honoured, the engine's own backoffs scaled by
``--scale``) until every movement is sent; the wall time includes those waits.
"""
from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_push_e2e import count_gains, connections_for, hub_store, reference_erp, _checked  # noqa: E402
from sync.broker import BrokerConfig  # noqa: E402
from sync.push import enqueue_many  # noqa: E402
from sync.retry import RetryPolicy  # noqa: E402
from sync.runner import Hub  # noqa: E402


def _unsent(store) -> int:
    from sqlalchemy import func, select

    from sync.store import Outbox, OutboxStatus

    with store.session() as s:
        return int(s.scalar(select(func.count()).select_from(Outbox).where(Outbox.status != OutboxStatus.SENT)) or 0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rate", type=float, default=20.0, help="N: requests/s the simulator accepts")
    parser.add_argument("--movements", type=int, default=300)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--headroom", type=float, default=1.0,
                        help="rate_limit_per_second = N x this (default 1.0: exactly N)")
    parser.add_argument("--scale", type=float, default=0.01,
                        help="RetryPolicy.scale for the engine's own backoffs (never a Retry-After)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.CRITICAL)
    n, rate = args.movements, args.rate

    moves = count_gains(n, "P8")
    with reference_erp() as erp, hub_store() as store:
        erp.sim.faults.set({"rate_limits": [{"method": "POST", "path": "/api/documents", "limit": int(rate),
                                             "period": 1.0}]})
        configured = rate * args.headroom
        with connections_for(store, erp.url, rate_limit_per_second=configured) as connections:
            with store.session() as s:
                enqueue_many(s, moves, ["ref"], connections=connections)
            started = time.perf_counter()
            with Hub(store, connections, [], BrokerConfig("memory://"), policy=RetryPolicy(scale=args.scale),
                     threads=args.threads, resend_after=5.0) as hub:
                # drain() also returns when only future retries remain: go on until all are sent
                while True:
                    hub.drain(["ref"], timeout=3600, poll=0.05)
                    if _unsent(store) == 0:
                        break
                    time.sleep(0.05)
            elapsed = time.perf_counter() - started
            check = _checked(store, erp, n, 0.0, elapsed)
        posts = erp.sim.calls.list(method="POST", path="/api/documents")
    accepted = sorted(c.started for c in posts if c.status == 200)
    refused = sum(1 for c in posts if c.status == 429)
    achieved = (len(accepted) - 1) / (accepted[-1] - accepted[0]) if len(accepted) > 1 else 0.0
    print(f"simulator limit N            {rate:8.1f} POSTs/s (sliding 1 s window); "
          f"connection rate_limit_per_second {configured:.2f}; {args.threads} worker threads")
    print(f"engine delivered             {n:>8} movements in {elapsed:.2f} s ({n / elapsed:.1f}/s wall, "
          f"sent {check.sent}, lost {check.lost}, dup {check.duplicated})")
    print(f"accepted POSTs               {len(accepted):>8}  achieved {achieved:.2f}/s")
    print(f"refused with 429             {refused:>8}  of {len(posts)} POSTs ({100 * refused / max(1, len(posts)):.2f}%)"
          "   target ≤ 1%")
    print(f"ratio (achieved / N): {achieved / rate:.3f}   target ≥ 0.9")


if __name__ == "__main__":
    main()
