"""P6 and P7 (RELIABILITY.md §6(ii)): movements from the outbox to the reference ERP simulator, end to end.

In one run, against one simulator build on loopback:

* ``bare requests``   — ``requests.Session``: log in once, POST each document body (the very bodies
                        the reference connector's mapping builds), nothing else. Its req/s gives the
                        baseline time: movements ÷ req/s.
* ``P6 …, no faults`` — the movements are written to the outbox (pages of 500 per transaction, as
                        a pull does), then delivered: claim, ``find`` + POST (the reference
                        connector looks a key up before posting it), settle. Wall time = enqueue +
                        delivery. Target: ≤ 3× the baseline time. Two delivery paths:
                        ``hub`` — the embedded hub (in-process dramatiq broker, worker threads; the
                        relay sends one ``deliver`` message per row, each claims its one row);
                        ``loop`` — ``sync.delivery.deliver_due`` in a loop (claims of 50 rows).
* ``P7 …, 20% 503``   — the same with 20% of the document calls answered 503 and the retry
                        policy's waits scaled 1000× down. Target: ≤ 2× the P6 wall time.

Each pass starts from a fresh simulator and a fresh SQLite store, and ends with a check that every
movement is one document at the simulator (none lost, none twice). The output compares, it does not
assert (STYLE.md "Benchmarks compare").

    python bench/bench_push_e2e.py                  # 10,000 movements (a few minutes)
    python bench/bench_push_e2e.py --movements 2000 --threads 4

Note: the simulator finds a key by scanning its documents, so its own cost per lookup grows with
the number of documents already posted; the hub path pays it (one lookup per push), the bare
loop does not. Smaller runs show the hub's own overhead more fairly.
"""
from __future__ import annotations

import argparse
import logging
import shutil
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from canonical import Movement  # noqa: E402
from sandbox.server import SimulatorServer  # noqa: E402
from sync.broker import BrokerConfig  # noqa: E402
from sync.connections import Connections  # noqa: E402
from sync.push import enqueue_many  # noqa: E402
from sync.retry import RetryPolicy  # noqa: E402
from sync.runner import Hub  # noqa: E402
from sync.store import Outbox, OutboxStatus, Store  # noqa: E402
from tests.conformance.kit import STANDARD_WORLD  # noqa: E402
from tests.reference import mapping  # noqa: E402
from tests.reference.connector import ReferenceConnector, ReferenceSettings  # noqa: E402
from tests.reference.simulator import PASSWORD, USER, ReferenceErp  # noqa: E402

# Stock positions of the standard world that count gains may use (20 ordering keys, so 20 rows
# can be in flight at once).
SKUS = ("TS-001", "TS-002", "SH-001", "RICE-5", "SOCK-3", "BAG-01", "OIL-1", "WATER-24", "GLV-01", "CAP-01")
WAREHOUSES = ("WH01", "WH02")
UNITS = {"RICE-5": "KG"}
PAGE = 500


def count_gains(n: int, prefix: str) -> list[Movement]:
    """``n`` single-line count gains spread over the 20 positions."""
    out = []
    for i in range(n):
        sku = SKUS[i % len(SKUS)]
        warehouse = WAREHOUSES[(i // len(SKUS)) % len(WAREHOUSES)]
        out.append(Movement.model_validate({
            "reference": f"{prefix}-{i:06d}", "kind": "count_gain", "document_date": "2024-03-01",
            "lines": [{"line_no": 1, "sku": sku, "quantity": "1", "unit": _unit(sku), "to_warehouse": warehouse}]}))
    return out


def _unit(sku: str) -> str:
    from tests.conformance.kit import unit_of

    return unit_of(sku)


@dataclass
class Erp:
    sim: ReferenceErp
    server: SimulatorServer

    @property
    def url(self) -> str:
        return self.server.url

    def documents_by_key(self) -> Counter[str]:
        with self.sim.lock:
            return Counter(d["ext_key"] for d in self.sim.documents)


@contextmanager
def reference_erp() -> Iterator[Erp]:
    sim = ReferenceErp()
    sim.seed({"world": STANDARD_WORLD.to_dict()})
    with sim.serve() as server:
        yield Erp(sim, server)


@contextmanager
def hub_store() -> Iterator[Store]:
    folder = Path(tempfile.mkdtemp(prefix="erphub-bench-"))
    try:
        with Store.open(f"sqlite:///{folder / 'hub.db'}") as store:
            store.upgrade()
            yield store
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def connections_for(store: Store, url: str, **settings: Any) -> Connections:
    config = ReferenceSettings(url=url, user=USER, password=PASSWORD, connect_timeout=2.0, read_timeout=10.0,
                               **settings)
    return Connections(store, {"ref": config}, factory=lambda name, s: ReferenceConnector(s, name=name))


def bare_rate(n: int) -> float:
    """req/s of a bare ``requests.Session`` POSTing ``n`` documents to a fresh simulator."""
    bodies = [mapping.movement_to_document(m, f"B{i:010d}") for i, m in enumerate(count_gains(n, "BARE"))]
    with reference_erp() as erp, requests.Session() as session:
        token = session.post(f"{erp.url}/api/login", json={"user": USER, "password": PASSWORD}, timeout=10).json()
        session.headers["X-Session"] = token["session"]
        url = f"{erp.url}/api/documents"
        started = time.perf_counter()
        for body in bodies:
            resp = session.post(url, json=body, timeout=10)
            resp.raise_for_status()
        elapsed = time.perf_counter() - started
    return n / elapsed


@dataclass
class HubPass:
    movements: int
    enqueue: float
    deliver: float
    sent: int
    lost: int
    duplicated: int
    calls: Counter[int]  # status -> count of document calls at the simulator

    @property
    def wall(self) -> float:
        return self.enqueue + self.deliver


def hub_pass(n: int, *, threads: int, prefix: str, faults: dict[str, Any] | None = None,
             policy: RetryPolicy | None = None, settings: dict[str, Any] | None = None,
             timeout: float = 3600, path: str = "hub") -> HubPass:
    """Enqueue ``n`` count gains and deliver them to a fresh simulator: through the embedded hub
    (``path="hub"``) or a ``deliver_due`` loop (``path="loop"``)."""
    moves = count_gains(n, prefix)
    with reference_erp() as erp, hub_store() as store:
        if faults:
            erp.sim.faults.set(faults)
        with connections_for(store, erp.url, **(settings or {})) as connections:
            started = time.perf_counter()
            for start in range(0, n, PAGE):
                with store.session() as s:
                    enqueue_many(s, moves[start:start + PAGE], ["ref"], connections=connections)
            enqueued = time.perf_counter()
            if path == "hub":
                with Hub(store, connections, [], BrokerConfig("memory://"), policy=policy or RetryPolicy(),
                         threads=threads, resend_after=5.0) as hub:
                    hub.drain(["ref"], timeout=timeout, poll=0.02)
            else:
                deliver_loop(store, connections, policy or RetryPolicy(), timeout=timeout)
            delivered = time.perf_counter()
            return _checked(store, erp, n, enqueued - started, delivered - enqueued)


def deliver_loop(store: Store, connections: Connections, policy: RetryPolicy, *, timeout: float) -> None:
    """``deliver_due`` (claims of 50) until no row is in flight; waits for rescheduled rows."""
    from sqlalchemy import func, select

    from sync.delivery import deliver_due

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if deliver_due(store, connections, worker_id="bench", limit=50, policy=policy):
            continue
        with store.session() as s:
            left = s.scalar(select(func.count()).select_from(Outbox).where(
                Outbox.status.in_((OutboxStatus.PENDING, OutboxStatus.SENDING, OutboxStatus.AMBIGUOUS))))
        if not left:
            return
        time.sleep(0.005)
    raise TimeoutError(f"deliveries still in flight after {timeout} s")


def _checked(store: Store, erp: Erp, n: int, enqueue: float, deliver: float) -> HubPass:
    from sqlalchemy import select

    with store.session() as s:
        rows = s.execute(select(Outbox.idempotency_key, Outbox.status)).all()
    documents = erp.documents_by_key()
    sent = sum(1 for _, status in rows if status == OutboxStatus.SENT)
    lost = sum(1 for key, status in rows if status == OutboxStatus.SENT and documents[key] == 0)
    lost += n - len(rows)
    duplicated = sum(1 for key, _ in rows if documents[key] > 1)
    calls = Counter(c.status for c in erp.sim.calls.list(path="/api/documents"))
    return HubPass(n, enqueue, deliver, sent, lost, duplicated, calls)


def line(label: str, n: int, seconds: float, extra: str = "") -> None:
    print(f"{label:<28} {n:>7} movements {seconds:8.2f} s {n / seconds:9.0f} /s  {extra}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--movements", type=int, default=10_000)
    parser.add_argument("--threads", type=int, default=4, help="embedded worker threads")
    parser.add_argument("--bare", type=int, default=None, help="requests for the bare baseline (default: movements, at most 3000)")
    parser.add_argument("--repeat", type=int, default=1, help="bare baseline runs (median)")
    parser.add_argument("--skip-p7", action="store_true")
    parser.add_argument("--path", choices=("hub", "loop", "both"), default="both",
                        help="delivery path: embedded hub, deliver_due loop, or both")
    args = parser.parse_args()
    logging.basicConfig(level=logging.CRITICAL)
    n = args.movements

    bare_n = args.bare or min(n, 3000)
    rates = sorted(bare_rate(bare_n) for _ in range(args.repeat))
    rate = rates[len(rates) // 2]
    baseline = n / rate
    print(f"{'bare requests.Session':<28} {bare_n:>7} requests  {bare_n / rate:8.2f} s {rate:9.0f} /s")
    print(f"{'baseline time for ' + str(n):<28} {n:>7} movements {baseline:8.2f} s")

    paths = ("hub", "loop") if args.path == "both" else (args.path,)
    faults = {"seed": 7, "errors": [{"path": "/api/documents", "status": 503, "rate": 0.2}]}
    for path in paths:
        p6 = hub_pass(n, threads=args.threads, prefix=f"P6{path}", path=path)
        line(f"P6 {path}, no faults", n, p6.wall,
             f"enqueue {p6.enqueue:.2f} s + deliver {p6.deliver:.2f} s; sent {p6.sent}, lost {p6.lost}, "
             f"dup {p6.duplicated}")
        print(f"ratio P6 {path} (wall / baseline): {p6.wall / baseline:.2f}   target ≤ 3")
        if args.skip_p7:
            continue
        p7 = hub_pass(n, threads=args.threads, prefix=f"P7{path}", faults=faults, policy=RetryPolicy(scale=0.001),
                      path=path)
        line(f"P7 {path}, 20% 503", n, p7.wall,
             f"enqueue {p7.enqueue:.2f} s + deliver {p7.deliver:.2f} s; sent {p7.sent}, lost {p7.lost}, "
             f"dup {p7.duplicated}; {p7.calls.get(503, 0)} calls answered 503")
        print(f"ratio P7 {path} (P7 wall / P6 wall): {p7.wall / p6.wall:.2f}   target ≤ 2")

if __name__ == "__main__":
    main()
