"""Pushing single-line goods receipts (InventoryGenEntries) to the SAP B1 Service Layer simulator.

Issue 4 ("Done when") and RELIABILITY.md §6(ii) P5: in one run, against the simulator on loopback,

* ``bare requests loop``   — ``requests.Session``: log in once, POST each JSON body, nothing else;
* ``connector.push``       — one movement at a time: an idempotency lookup (``GET InventoryGenEntries
                             ?$filter=Reference2 eq '<key>'``) and then the POST;
* ``connector.push_many``  — ``$batch`` with one changeset per movement (the connector's batch
                             size), after one lookup per 20 keys;
* ``client.create only``   — the connector's HTTP client POSTing the same body without the lookup
                             (not a supported way to push: it shows what the lookup costs).

The bare loop POSTs the very bodies the connector's mapping builds (same fields, other keys).
Every pass starts from a fresh simulator seeded with the same stock-free master data (items and
one warehouse: goods receipts need nothing else), so no pass pays for the documents another one
left behind. Each pass is timed ``--repeat`` times; the median is reported. The output compares,
it does not assert (STYLE.md "Benchmarks compare").

    python bench/bench_sap_b1_push.py                        # default: 1,000 documents, median of 3 (~30 s)
    python bench/bench_sap_b1_push.py --docs 5000 --repeat 1 # the full run of issue 4 (~1.5 min on 2 cores)
    python bench/bench_sap_b1_push.py --docs 200 --odata-version v1

Note on the one-by-one ratio: ``connector.push`` makes a lookup before each POST, so it sends
two requests per document where the bare loop sends one. That lookup is what makes a resend
after a lost answer safe (RELIABILITY.md §1.4) and it stays. A negative answer from a batched
lookup cannot be reused for later one-by-one pushes: between the lookup and the POST an earlier
attempt whose answer was lost may commit (§6(i) F5), another worker may push the same key, or an
operator may replay it, and only a lookup made just before the POST sees that. The batched
lookup is safe inside ``push_many`` because it is followed at once by the ``$batch`` of those very
keys. Where the engine has many movements for one connection, ``push_many`` is the path that
saves the calls (one lookup per 20 keys, one request per batch).
"""
from __future__ import annotations

import argparse
import gc
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import requests
from pydantic import SecretStr

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from canonical import Movement  # noqa: E402
from connectors.base import Receipt  # noqa: E402
from connectors.sap_b1 import SapB1Connector, SapB1Settings  # noqa: E402
from connectors.sap_b1.client import _dumps  # noqa: E402
from sandbox.sap_b1 import SapB1Simulator  # noqa: E402
from sandbox.server import SimulatorServer  # noqa: E402

USER, PASSWORD, COMPANY = "manager", "secret", "SBODEMOUS"
WAREHOUSE = "WH01"


def new_simulator(items: int) -> SapB1Simulator:
    """Stock-free master data: ``items`` items and one warehouse."""
    sim = SapB1Simulator(users={USER: PASSWORD}, companies=(COMPANY,))
    sim.seed({"world": {
        "items": [{"sku": f"GR{i:05d}", "name": f"Bench item {i}", "unit": "PCS"} for i in range(items)],
        "warehouses": [{"code": WAREHOUSE, "name": "Bench warehouse"}],
    }})
    return sim


def receipts(count: int, items: int, prefix: str) -> list[tuple[Movement, str]]:
    """``count`` single-line goods receipts (misc_receipt → InventoryGenEntries) and their keys
    (11 characters: Reference2 holds no more)."""
    batch = []
    for i in range(count):
        movement = Movement.model_validate({
            "reference": f"BR-{prefix}-{i}", "kind": "misc_receipt", "document_date": "2026-01-05",
            "lines": [{"line_no": 1, "sku": f"GR{i % items:05d}", "quantity": str(1 + i % 7), "unit": "PCS",
                       "to_warehouse": WAREHOUSE}]})
        batch.append((movement, f"{prefix}{i:09d}"[:11]))
    return batch


def settings(url: str, version: str, batch_size: int | None) -> SapB1Settings:
    extra = {"batch_size": batch_size} if batch_size else {}
    return SapB1Settings(url=url, company_db=COMPANY, username=USER, password=SecretStr(PASSWORD),
                         odata_version=version, read_timeout=60, **extra)


# -- the passes: each returns (seconds, documents created) ---------------------------------------


def bare_loop(server: SimulatorServer, version: str, bodies: list[dict]) -> tuple[float, int]:
    root = f"{server.url}/b1s/{version}"
    with requests.Session() as http:
        started = time.perf_counter()
        login = http.post(f"{root}/Login", json={"CompanyDB": COMPANY, "UserName": USER, "Password": PASSWORD},
                          timeout=30)
        login.raise_for_status()
        # The cookies as one explicit header, the jar emptied: what the connector does too, and
        # cheaper than letting requests' cookie jar match and store cookies on every call.
        cookie = "; ".join(f"{name}={value}" for name, value in http.cookies.items())
        http.cookies.clear()
        created = 0
        url = f"{root}/InventoryGenEntries"
        for body in bodies:
            resp = http.post(url, json=body, headers={"Cookie": cookie}, timeout=60)
            if resp.status_code != 201:
                raise SystemExit(f"bare loop: {resp.status_code} {resp.text[:200]}")
            created += 1
        return time.perf_counter() - started, created


def connector_push(server: SimulatorServer, version: str, batch: list[tuple[Movement, str]],
                   batch_size: int | None, tenths: list[tuple[float, float]]) -> tuple[float, int]:
    """Also records the rate over the first and the last tenth of the documents in ``tenths``:
    the lookup scans the entity set, so it costs more as documents accumulate."""
    tenth = max(1, len(batch) // 10)
    marks: list[float] = []
    with SapB1Connector(settings(server.url, version, batch_size)) as connector:
        started = time.perf_counter()
        created = 0
        for movement, key in batch:
            created += connector.push(movement, key).created
            marks.append(time.perf_counter())
        elapsed = time.perf_counter() - started
    first = tenth / (marks[tenth - 1] - started)
    last = tenth / (marks[-1] - marks[-tenth - 1]) if len(marks) > tenth else first
    tenths.append((first, last))
    return elapsed, created


def connector_push_many(server: SimulatorServer, version: str, batch: list[tuple[Movement, str]],
                        batch_size: int | None) -> tuple[float, int]:
    with SapB1Connector(settings(server.url, version, batch_size)) as connector:
        started = time.perf_counter()
        results = connector.push_many(batch)
        elapsed = time.perf_counter() - started
    failed = [r for r in results if not isinstance(r, Receipt)]
    if failed:
        raise SystemExit(f"push_many: {len(failed)} failed, first: {failed[0]}")
    return elapsed, sum(1 for r in results if isinstance(r, Receipt) and r.created)


def client_create_only(server: SimulatorServer, version: str, batch: list[tuple[Movement, str]],
                       batch_size: int | None) -> tuple[float, int]:
    with SapB1Connector(settings(server.url, version, batch_size)) as connector:
        documents = [connector._document(movement, key) for movement, key in batch]
        started = time.perf_counter()
        created = sum(1 for entity, body in documents if connector.client.create(entity, body).get("DocEntry"))
        return time.perf_counter() - started, created


def timed_once(label: str, run: Callable[[SimulatorServer], tuple[float, int]], *, items: int, docs: int) -> float:
    """Seconds of one pass on a fresh simulator; checks that every document landed, once."""
    sim = new_simulator(items)
    with sim.serve() as server:
        gc.collect()
        seconds, created = run(server)
    stored = len(sim.company.keys("InventoryGenEntries"))
    if created != docs or stored != docs:
        raise SystemExit(f"{label}: created {created}, simulator holds {stored}, expected {docs}")
    return seconds


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--docs", type=int, default=1000, help="goods receipts per pass (issue 4: 5000)")
    parser.add_argument("--items", type=int, default=500, help="items seeded in the simulator")
    parser.add_argument("--repeat", type=int, default=3, help="runs per pass; the median is reported")
    parser.add_argument("--odata-version", choices=("v1", "v2"), default="v2")
    parser.add_argument("--batch-size", type=int, default=None,
                        help="movements per $batch (default: the connector's setting)")
    parser.add_argument("--no-create-only", action="store_true", help="skip the client.create-only pass")
    args = parser.parse_args(argv)
    if args.docs < 1 or args.items < 1 or args.repeat < 1:
        parser.error("--docs, --items and --repeat must be at least 1")
    version, docs = args.odata_version, args.docs
    batch_size = args.batch_size or settings("http://x", version, None).batch_size

    one_by_one = receipts(docs, args.items, "P")
    batched = receipts(docs, args.items, "B")
    create_only = receipts(docs, args.items, "C")
    # The bare loop sends what the mapping builds, with its own keys, as plain JSON values.
    probe = SapB1Connector(settings("http://127.0.0.1:9", version, batch_size))
    bodies = [json.loads(_dumps(probe._document(movement, key)[1]))
              for movement, key in receipts(docs, args.items, "R")]
    probe.client.http.close()

    tenths: list[tuple[float, float]] = []
    passes: list[tuple[str, Callable[[SimulatorServer], tuple[float, int]]]] = [
        ("bare requests loop", lambda s: bare_loop(s, version, bodies)),
        ("connector.push", lambda s: connector_push(s, version, one_by_one, batch_size, tenths)),
        (f"connector.push_many ($batch of {batch_size})",
         lambda s: connector_push_many(s, version, batched, batch_size)),
    ]
    if not args.no_create_only:
        passes.append(("client.create only (no lookup)",
                       lambda s: client_create_only(s, version, create_only, batch_size)))
    times: dict[str, list[float]] = {label: [] for label, _ in passes}
    for _ in range(args.repeat):  # interleaved, so machine noise spreads over every pass
        for label, run in passes:
            times[label].append(timed_once(label, run, items=args.items, docs=docs))
    rows = [(label, statistics.median(times[label])) for label, _ in passes]

    print(f"$ python bench/bench_sap_b1_push.py --docs {docs}  (/b1s/{version}, simulator on loopback, "
          f"median of {args.repeat})")
    width = max(len(label) for label, _ in rows)
    rate = {}
    for label, seconds in rows:
        rate[label] = docs / seconds
        print(f"{label:<{width}}  {docs} docs  {seconds:6.2f} s  {rate[label]:8.0f} docs/s")
    bare, push, many = (rate[rows[0][0]], rate[rows[1][0]], rate[rows[2][0]])
    print(f"speed-up of batching (push_many / push): {many / push:.2f}")
    print(f"ratio (connector.push / bare): {push / bare:.2f}   "
          "(push sends 2 requests per document: the idempotency lookup, then the POST)")
    first, last = (statistics.median(t[0] for t in tenths), statistics.median(t[1] for t in tenths))
    print(f"  connector.push, first / last tenth of the documents: {first:.0f} / {last:.0f} docs/s   (the lookup "
          "filters on Reference2, which has no index: its cost grows with the documents in the entity set)")
    print(f"ratio (connector.push_many / bare): {many / bare:.2f}")
    if not args.no_create_only:
        create = rate[rows[3][0]]
        print(f"ratio (client.create only / bare): {create / bare:.2f}   (the connector's HTTP path without the "
              "lookup; not a way to push)")


if __name__ == "__main__":
    main()
