"""The embedded mode end to end: in-process broker and worker threads, SQLite, the Kingdee and
reference simulators over loopback (``systems``)."""
from __future__ import annotations

import random
import time
from dataclasses import dataclass, field
from datetime import timedelta

from sqlalchemy import select

from sync.broker import BrokerConfig
from sync.push import enqueue
from sync.retry import RetryPolicy
from sync.runner import Hub
from sync.store import ErrorQueue, Outbox, OutboxStatus
from tests.conformance.kit import expected_change, ledger_change, ledger_snapshot, movement
from tests.sync.conftest import KINGDEE, REFERENCE

FAST = RetryPolicy(scale=0.001, reconcile_delay=0.05, lease_seconds=30)


@dataclass(frozen=True)
class Flow:  # what erphub.config.Flow provides
    name: str
    kind: str
    source: str
    targets: list[str] = field(default_factory=list)
    entities: list[str] = field(default_factory=list)
    every: timedelta = timedelta(minutes=5)


def _transfers(count: int, prefix: str):
    # WH01 → WH02, one piece of TS-001 each: the standard world has 100 in WH01
    return [movement("transfer", reference=f"{prefix}-{n:03d}", lines=[("TS-001", "1")]) for n in range(count)]


def _assert_delivered_once(store, sim, movements) -> None:
    with store.session() as s:
        rows = s.scalars(select(Outbox)).all()
    assert {r.status for r in rows} == {OutboxStatus.SENT}
    for row in rows:
        assert len(sim.documents_for(row.idempotency_key)) == 1, row


def test_enqueued_movements_are_delivered_exactly_once(store, systems):
    # Given 30 transfers in the outbox for the Kingdee simulator
    running = systems(kd=KINGDEE)
    sim = running.sims["kd"]
    before = ledger_snapshot(sim)
    moves = _transfers(30, "EMB")
    with store.session() as s:
        for m in moves:
            enqueue(s, m, ["kd"], connections=running.connections)
    # When the embedded hub drains the outbox (relay twice as fast as anything settles)
    with Hub(store, running.connections, [], BrokerConfig("memory://"), policy=FAST, threads=4,
             resend_after=0.2) as hub:
        hub.drain(["kd"], timeout=60)
    # Then each is one document at the simulator and the ledger moved by exactly the movements
    _assert_delivered_once(store, sim, moves)
    assert ledger_change(before, ledger_snapshot(sim)) == expected_change(*moves)


def test_once_runs_a_movements_flow_and_a_master_data_flow(store, systems):
    # Given movements posted in the reference ERP (the source) and a flow ref → kd
    running = systems(kd=KINGDEE, ref=REFERENCE)
    source = running.connections.connector("ref")
    moves = _transfers(5, "SRC")
    for m in moves:
        source.push(m, key=f"SRCKEY{m.reference[-3:]}")
    kd_before = ledger_snapshot(running.sims["kd"])
    flows = [Flow("movements", "movements", "ref", ["kd"], ["movements"]),
             Flow("master", "master_data", "kd", ["ref"], ["items", "warehouses", "locations", "partners"])]
    # When every flow runs once
    with Hub(store, running.connections, flows, BrokerConfig("memory://"), policy=FAST, threads=2) as hub:
        summaries = {s.name: s for s in hub.once(timeout=60)}
        # and once more: nothing new is read, enqueued or sent
        again = {s.name: s for s in hub.once(timeout=60)}
    # Then the movements were read, enqueued and delivered once; master data was pulled
    mv = summaries["movements"]
    assert mv.ok, mv.errors
    assert (mv.read, mv.enqueued, mv.delivered, mv.failed, mv.dead) == (5, 5, 5, 0, 0)
    assert summaries["master"].ok and summaries["master"].read >= 12  # the world's items at least
    assert (again["movements"].enqueued, again["movements"].delivered) == (0, 0)
    assert ledger_change(kd_before, ledger_snapshot(running.sims["kd"])) == expected_change(*moves)
    _assert_delivered_once(store, running.sims["kd"], moves)


def test_a_failing_pull_is_reported_and_other_flows_go_on(store, systems):
    running = systems(ref=REFERENCE, kd=KINGDEE)
    running.sims["ref"].faults.set({"errors": [{"status": 503}]})  # the source is down
    flows = [Flow("broken", "movements", "ref", ["kd"], ["movements"]),
             Flow("snapshot", "balances", "kd", [], ["balances"])]
    with Hub(store, running.connections, flows, BrokerConfig("memory://"), policy=FAST) as hub:
        summaries = {s.name: s for s in hub.once(timeout=30)}
    assert not summaries["broken"].ok and "movements" in summaries["broken"].errors[0]
    assert summaries["snapshot"].ok and summaries["snapshot"].read > 0


def test_run_keeps_the_schedule_and_stops_when_told(store, systems):
    running = systems(kd=KINGDEE, ref=REFERENCE)
    source = running.connections.connector("ref")
    moves = _transfers(3, "RUN")
    for m in moves:
        source.push(m, key=f"RUNKEY{m.reference[-3:]}")
    flows = [Flow("movements", "movements", "ref", ["kd"], ["movements"], every=timedelta(seconds=1))]
    seen = []
    with Hub(store, running.connections, flows, BrokerConfig("memory://"), policy=FAST) as hub:
        summaries = hub.run(for_seconds=3, tick=0.1, on_progress=seen.append)
    assert seen and summaries[0].delivered == 3
    _assert_delivered_once(store, running.sims["kd"], moves)


def test_two_systems_feeding_each_other_post_every_document_once(store, systems):
    # Given movements flows both ways between the reference ERP and Kingdee, with new documents
    # posted in each
    running = systems(kd=KINGDEE, ref=REFERENCE)
    from_ref, from_kd = _transfers(4, "REF"), _transfers(3, "KDS")
    for m in from_ref:
        running.connections.connector("ref").push(m, key=f"REFKEY{m.reference[-3:]}")
    for m in from_kd:
        running.connections.connector("kd").push(m, key=f"KDSKEY{m.reference[-3:]}")
    ref_before, kd_before = ledger_snapshot(running.sims["ref"]), ledger_snapshot(running.sims["kd"])
    flows = [Flow("ref-to-kd", "movements", "ref", ["kd"], ["movements"]),
             Flow("kd-to-ref", "movements", "kd", ["ref"], ["movements"])]
    # When both flows run three times (each run reads back what the other delivered)
    with Hub(store, running.connections, flows, BrokerConfig("memory://"), policy=FAST, threads=2) as hub:
        runs = [{s.name: s for s in hub.once(timeout=60)} for _ in range(3)]
    # Then each movement reached the other system once, nothing came back to where it started, and
    # reading our own deliveries back (with less content than we sent) raised no false conflict
    assert all(s.ok for run in runs for s in run.values()), runs
    assert sum(run["ref-to-kd"].delivered for run in runs) == len(from_ref)
    assert sum(run["kd-to-ref"].delivered for run in runs) == len(from_kd)
    assert ledger_change(kd_before, ledger_snapshot(running.sims["kd"])) == expected_change(*from_ref)
    assert ledger_change(ref_before, ledger_snapshot(running.sims["ref"])) == expected_change(*from_kd)
    with store.session() as s:
        rows = s.scalars(select(Outbox)).all()
        errors = s.scalars(select(ErrorQueue)).all()
    assert len(rows) == len(from_ref) + len(from_kd) and {r.status for r in rows} == {OutboxStatus.SENT}
    assert errors == []


def test_run_backs_off_while_the_relay_fails_and_resumes_when_it_recovers(store, systems):
    # Given a relay that cannot reach its broker for its first seven ticks, and a seeded policy
    running = systems(kd=KINGDEE, ref=REFERENCE)
    flows = [Flow("movements", "movements", "ref", ["kd"], ["movements"], every=timedelta(hours=1))]
    seeded = dict(scale=0.001, relay_max_backoff=300.0)
    twin = RetryPolicy(**seeded, rng=random.Random(5))  # draws the same waits as the hub's policy
    expected = [twin.relay_backoff(n, 0.01) for n in range(1, 7)]
    assert sum(expected) > 0.3  # much longer than ticking on (six 10 ms ticks)
    with Hub(store, running.connections, flows, BrokerConfig("memory://"),
             policy=RetryPolicy(**seeded, rng=random.Random(5)), threads=1) as hub:
        calls: list[float] = []
        real_tick = hub.actors.relay_engine.tick

        def broken_then_fixed(targets, **kwargs):
            calls.append(time.monotonic())
            if len(calls) <= 7:
                raise ConnectionError("broker unreachable")
            return real_tick(targets, **kwargs)

        hub.actors.relay_engine.tick = broken_then_fixed
        # When the hub runs with a 10 ms tick
        hub.run(for_seconds=3.0, tick=0.01)
    # Then each failed tick waited out its backoff before the next try, and once the broker was
    # back the relay ticked on (many more ticks after the seventh)
    gaps = [b - a for a, b in zip(calls[:7], calls[1:7])]
    assert all(gap >= wait - 0.005 for gap, wait in zip(gaps, expected)), (gaps, expected)
    assert len(calls) > 12
