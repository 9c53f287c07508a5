"""P6 and P7 (RELIABILITY.md §6(ii)): movements from the outbox to the reference ERP simulator, end to end.

In one run, against one simulator build on loopback:

* ``bare requests``   — ``requests.Session`` (keep-alive): log in once, POST each document body
                        (the very bodies the reference connector's mapping builds), one POST per
                        movement, nothing else. Its req/s gives the baseline time: movements ÷
                        req/s. Measured before every hub pass; the median is used.
* ``P6 …, no faults`` — the movements are first written to the outbox (pages of 500 per
                        transaction, as a pull does; *not* timed: that is P3), then delivered:
                        claim, POST (the reference connector sends the movement's key as
                        ``Idempotency-Key`` and the simulator de-duplicates on it, so one request
                        per movement, as in the baseline; ``find`` only after an ambiguous answer),
                        settle. **P6 time = from every movement in the outbox to every movement
                        delivered** ("outbox → dramatiq → mock"); the enqueue time is printed
                        beside it. Target: ≤ 3× the baseline time. Two delivery paths:
                        ``hub`` — the embedded hub as ``erphub sync run`` runs it (in-process
                        dramatiq broker, worker threads; the relay sends one ``deliver`` message
                        per due row; :meth:`Hub.drain` with its default waits);
                        ``loop`` — ``sync.delivery.deliver_due`` in a loop (claims of 50 rows,
                        following their ordering keys).
* ``P7 …, 20% 503``   — the same with 20% of the document calls answered 503 and the retry
                        policy's waits scaled 1000× down. Target: ≤ 2× the P6 time.

The simulator runs in a child process by default (``--server process``): the vendor is another
system, and an in-process server shares the hub's GIL, so every worker thread's request waits
for the server thread to get the GIL back (a convoy that no real ERP causes). ``--server
thread`` serves it from a thread of this process instead (the bare loop, with one thread, is
barely affected; the hub's worker threads are). Both the baseline and the hub use the same
server either way.

Each pass starts from a fresh simulator and a fresh SQLite store, and ends with a check that every
movement is one document at the simulator (none lost, none twice). The output compares, it does not
assert (STYLE.md "Benchmarks compare").

    python bench/bench_push_e2e.py                  # 10,000 movements (a few minutes)
    python bench/bench_push_e2e.py --movements 2000 --threads 4 --repeat 3
    python bench/bench_push_e2e.py --no-idempotency-header   # find + POST per movement (2 requests)
"""
from __future__ import annotations

import argparse
import logging
import multiprocessing
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


class Erp:
    """The reference ERP the bench talks to: served from a thread here (``sim`` is the simulator)
    or from a child process (``sim`` is None; asked over a pipe)."""

    def __init__(self, url: str, sim: ReferenceErp | None = None, pipe: Any = None) -> None:
        self.url, self.sim, self._pipe = url, sim, pipe

    def _ask(self, *request: Any) -> Any:
        self._pipe.send(request)
        return self._pipe.recv()

    def set_faults(self, plan: dict[str, Any]) -> None:
        if self.sim is not None:
            self.sim.faults.set(plan)
        else:
            self._ask("faults", plan)

    def seed_balances(self, balances: dict[tuple[Any, ...], Any]) -> None:
        if self.sim is not None:
            self.sim.ledger.seed_balances(balances)
        else:
            self._ask("balances", balances)

    def documents_by_key(self) -> Counter[str]:
        return _documents_by_key(self.sim) if self.sim is not None else self._ask("documents")

    def call_statuses(self, path: str) -> Counter[int]:
        """Status → count of the calls to ``path`` the simulator logged."""
        return _call_statuses(self.sim, path) if self.sim is not None else self._ask("calls", path)


def _documents_by_key(sim: ReferenceErp) -> Counter[str]:
    with sim.lock:
        return Counter(d["ext_key"] for d in sim.documents)


def _call_statuses(sim: ReferenceErp, path: str) -> Counter[int]:
    return Counter(c.status for c in sim.calls.list(path=path))


def _new_sim() -> ReferenceErp:
    sim = ReferenceErp()
    sim.seed({"world": STANDARD_WORLD.to_dict()})
    return sim


def _serve_child(pipe: Any) -> None:
    """The child process: serve a fresh simulator and answer the parent's questions until told to stop."""
    logging.basicConfig(level=logging.CRITICAL)
    sim = _new_sim()
    with sim.serve() as server:
        pipe.send(server.url)
        while True:
            request = pipe.recv()
            if request[0] == "stop":
                return
            if request[0] == "faults":
                sim.faults.set(request[1])
                pipe.send(None)
            elif request[0] == "balances":
                sim.ledger.seed_balances(request[1])
                pipe.send(None)
            elif request[0] == "documents":
                pipe.send(_documents_by_key(sim))
            elif request[0] == "calls":
                pipe.send(_call_statuses(sim, request[1]))


#: Where :func:`reference_erp` runs the simulator: "thread" (a thread of this process; ``sim`` is
#: at hand, as other benches use it) unless a script's ``--server`` says "process".
SERVER = {"mode": "thread"}


@contextmanager
def reference_erp(mode: str | None = None) -> Iterator[Erp]:
    """A fresh reference ERP on loopback, seeded with the standard world."""
    if (mode or SERVER["mode"]) == "thread":
        sim = _new_sim()
        with sim.serve() as server:
            yield Erp(server.url, sim=sim)
        return
    context = multiprocessing.get_context("spawn")
    parent, child = context.Pipe()
    process = context.Process(target=_serve_child, args=(child,), daemon=True)
    process.start()
    try:
        yield Erp(parent.recv(), pipe=parent)
    finally:
        parent.send(("stop",))
        process.join(timeout=30)
        if process.is_alive():
            process.kill()


@contextmanager
def hub_store() -> Iterator[Store]:
    folder = Path(tempfile.mkdtemp(prefix="erphub-bench-"))
    try:
        with Store.open(f"sqlite:///{folder / 'hub.db'}") as store:
            store.upgrade()
            yield store
    finally:
        shutil.rmtree(folder, ignore_errors=True)


#: Connection settings every pass uses (``--no-idempotency-header`` turns the header off).
CONNECTOR = {"idempotency_header": True}


def connections_for(store: Store, url: str, **settings: Any) -> Connections:
    config = ReferenceSettings(url=url, user=USER, password=PASSWORD, connect_timeout=2.0, read_timeout=10.0,
                               **{**CONNECTOR, **settings})
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
        """The P6/P7 time: outbox to delivered (the enqueue is not part of it)."""
        return self.deliver


def hub_pass(n: int, *, threads: int, prefix: str, faults: dict[str, Any] | None = None,
             policy: RetryPolicy | None = None, settings: dict[str, Any] | None = None,
             timeout: float = 3600, path: str = "hub") -> HubPass:
    """Enqueue ``n`` count gains, then deliver them to a fresh simulator: through the embedded hub
    (``path="hub"``) or a ``deliver_due`` loop (``path="loop"``)."""
    moves = count_gains(n, prefix)
    with reference_erp() as erp, hub_store() as store:
        if faults:
            erp.set_faults(faults)
        with connections_for(store, erp.url, **(settings or {})) as connections:
            started = time.perf_counter()
            for start in range(0, n, PAGE):
                with store.session() as s:
                    enqueue_many(s, moves[start:start + PAGE], ["ref"], connections=connections)
            enqueued = time.perf_counter()
            if path == "hub":
                with Hub(store, connections, [], BrokerConfig("memory://"), policy=policy or RetryPolicy(),
                         threads=threads, resend_after=5.0) as hub:
                    hub.drain(["ref"], timeout=timeout)
            else:
                deliver_loop(store, connections, policy or RetryPolicy(), timeout=timeout)
            delivered = time.perf_counter()
            return _checked(store, erp, n, enqueued - started, delivered - enqueued)


#: How long a ``deliver_due`` of the loop path follows the ordering keys it delivered (seconds).
LOOP_FOLLOW_SECONDS = 2.0


def deliver_loop(store: Store, connections: Connections, policy: RetryPolicy, *, timeout: float) -> None:
    """``deliver_due`` (claims of 50, following their keys) until no row is in flight; waits
    for rescheduled rows."""
    from sqlalchemy import func, select

    from sync.delivery import deliver_due

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if deliver_due(store, connections, worker_id="bench", limit=50, policy=policy,
                       follow_seconds=LOOP_FOLLOW_SECONDS):
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
    return HubPass(n, enqueue, deliver, sent, lost, duplicated, erp.call_statuses("/api/documents"))


def line(label: str, n: int, seconds: float, extra: str = "") -> None:
    print(f"{label:<28} {n:>7} movements {seconds:8.2f} s {n / seconds:9.0f} /s  {extra}")


def median(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[len(ordered) // 2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--movements", type=int, default=10_000)
    parser.add_argument("--threads", type=int, default=4, help="embedded worker threads (erphub sync run's default)")
    parser.add_argument("--bare", type=int, default=None, help="requests per bare baseline run (default: movements, at most 3000)")
    parser.add_argument("--repeat", type=int, default=1, help="P6 passes per path (median); a bare run precedes each")
    parser.add_argument("--skip-p7", action="store_true")
    parser.add_argument("--path", choices=("hub", "loop", "both"), default="both",
                        help="delivery path: embedded hub, deliver_due loop, or both")
    parser.add_argument("--server", choices=("process", "thread"), default="process",
                        help="where the simulator runs (see the module doc)")
    parser.add_argument("--no-idempotency-header", action="store_true",
                        help="the connector looks each key up before its POST (two requests per movement)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.CRITICAL)
    SERVER["mode"] = args.server
    CONNECTOR["idempotency_header"] = not args.no_idempotency_header
    n = args.movements
    bare_n = args.bare or min(n, 3000)
    print(f"simulator in a {args.server}; {args.threads} worker threads; push = "
          f"{'one POST with Idempotency-Key' if CONNECTOR['idempotency_header'] else 'find + POST'}")

    rates: list[float] = []

    def bare() -> float:
        rates.append(bare_rate(bare_n))
        rate = median(rates)
        return n / rate

    paths = ("hub", "loop") if args.path == "both" else (args.path,)
    faults = {"seed": 7, "errors": [{"path": "/api/documents", "status": 503, "rate": 0.2}]}
    for path in paths:
        passes = []
        for _ in range(args.repeat):
            bare()
            passes.append(hub_pass(n, threads=args.threads, prefix=f"P6{path}", path=path))
        p6 = sorted(passes, key=lambda p: p.wall)[len(passes) // 2]
        baseline = bare()
        print(f"{'bare requests.Session':<28} {bare_n:>7} requests  {bare_n / median(rates):8.2f} s "
              f"{median(rates):9.0f} /s  (median of {len(rates)} runs so far)")
        print(f"{'baseline time for ' + str(n):<28} {n:>7} movements {baseline:8.2f} s")
        line(f"P6 {path}, no faults", n, p6.wall,
             f"outbox → delivered (median of {len(passes)}: "
             f"{', '.join(f'{p.wall:.2f}' for p in passes)} s); enqueue before it {p6.enqueue:.2f} s; "
             f"sent {p6.sent}, lost {p6.lost}, dup {p6.duplicated}; {sum(p6.calls.values())} document calls")
        print(f"ratio P6 {path} (time / baseline): {p6.wall / baseline:.2f}   target ≤ 3")
        if args.skip_p7:
            continue
        p7 = hub_pass(n, threads=args.threads, prefix=f"P7{path}", faults=faults, policy=RetryPolicy(scale=0.001),
                      path=path)
        line(f"P7 {path}, 20% 503", n, p7.wall,
             f"outbox → delivered; enqueue before it {p7.enqueue:.2f} s; sent {p7.sent}, lost {p7.lost}, "
             f"dup {p7.duplicated}; {p7.calls.get(503, 0)} of {sum(p7.calls.values())} document calls answered 503")
        print(f"ratio P7 {path} (P7 time / P6 time): {p7.wall / p6.wall:.2f}   target ≤ 2")


if __name__ == "__main__":
    main()
