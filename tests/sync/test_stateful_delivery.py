"""RELIABILITY.md §6(i) F19: randomised interleavings of enqueue, faults, worker deaths, operator
retries and deliveries (Hypothesis ``RuleBasedStateMachine``) against the reference simulator.

After every step:
- every committed movement has exactly one outbox row, in exactly one of sent / error queue
  (failed, dead) / in flight (pending, sending, ambiguous): committed == delivered ∪ DLQ ∪ pending;
- no key has more than one document at the simulator, and every row marked sent has its one;
- each row's status agrees with its lease, receipt and error-queue entry (no half-applied
  transition; ``assert_consistent``).

At the end of each example the faults are lifted, everything is drained, and the history checker
must come back clean (lost = 0, duplicated = 0, nothing in the error queue that was posted, and
the simulator's ledger moved by exactly the movements marked sent).

One simulator serves every example (each uses fresh references, so keys never collide); each
example gets a fresh store copied from one migrated template. 50 examples × up to 30 steps.
"""
from __future__ import annotations

import itertools
import shutil
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import event as _event
from hypothesis.errors import InvalidArgument
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test
from sqlalchemy import select

from sync import errorqueue
from sync.connections import Connections
from sync.delivery import deliver_due, resolve_codes
from sync.push import movement_of
from sync.store import ErrorQueue, ErrorStatus, Movement, Outbox, OutboxStatus, Store, utcnow
from sync.store import outbox as ob
from tests.conformance.kit import STANDARD_WORLD, Clock, movement
from tests.sync.conftest import REFERENCE, Systems
from tests.sync.test_delivery_history import IN_FLIGHT, History, drain, fast_policy
from tests.sync.test_fault_matrix import assert_consistent

SKUS = ("TS-001", "SH-001", "BAG-01", "OIL-1")
DLQ = (OutboxStatus.FAILED, OutboxStatus.DEAD)

F19_SETTINGS = settings(max_examples=50, stateful_step_count=30, deadline=None,
                        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def event(what: str) -> None:
    """``hypothesis.event`` (counted in the statistics), and a no-op in the fixed example below."""
    try:
        _event(what)
    except InvalidArgument:
        pass


class World:
    """What the examples share: the running simulator, its settings, a migrated store template."""

    def __init__(self, tmp: Path, sim: Any, url: str, clock: Clock) -> None:
        self.tmp = tmp
        self.sim = sim
        self.clock = clock
        self.settings = {"ref": REFERENCE.settings(url, good_credentials=True, connect_timeout=2.0, read_timeout=5.0)}
        self.template = tmp / "template.db"
        with Store.open(f"sqlite:///{self.template}") as template:
            template.upgrade()
        self.examples = itertools.count(1)


class DeliveryMachine(RuleBasedStateMachine):
    world: World  # set by the test before the run

    def __init__(self) -> None:
        super().__init__()
        w = self.world
        n = next(w.examples)
        path = w.tmp / f"hub-{n}.db"
        shutil.copy(w.template, path)
        self.store = Store.open(f"sqlite:///{path}")
        self.connections = Connections(self.store, w.settings, factory=lambda name, s: REFERENCE.build(s))
        self.systems = Systems(self.connections, {"ref": w.sim}, w.clock, {"ref": REFERENCE})
        w.sim.faults.clear()
        self.history = History(self.store, self.systems)
        self.committed: set[str] = set()
        self.plan: dict[str, Any] = {"seed": n, "errors": [], "drop_after_commit": []}
        self.policy = fast_policy(lease_seconds=30)
        self.deaths = 0

    # -- rules ----------------------------------------------------------------------------------

    @rule(count=st.integers(1, 3), sku=st.sampled_from(SKUS), warehouse=st.sampled_from(("WH01", "WH02")))
    def enqueue(self, count: int, sku: str, warehouse: str) -> None:
        moves = [movement("count_gain", lines=[(sku, "1")], dest=warehouse) for _ in range(count)]
        self.history.enqueue(moves, ["ref"])
        self.committed |= {m.reference for m in moves}

    @rule()
    def enqueue_poison(self) -> None:
        """An issue of a glove from WH01, where there are none unless a restock came first."""
        mv = movement("sales_issue", lines=[("GLV-01", "1")], source="WH01")
        self.history.enqueue([mv], ["ref"])
        self.committed.add(mv.reference)

    @rule()
    def restock(self) -> None:
        """The fix for a poison issue: a glove arrives (through the hub, so the ledger explains it)."""
        mv = movement("count_gain", lines=[("GLV-01", "1")], dest="WH01")
        self.history.enqueue([mv], ["ref"])
        self.committed.add(mv.reference)

    @rule(rate=st.sampled_from((0.2, 0.5)))
    def inject_503(self, rate: float) -> None:
        self.plan["errors"] = [{"status": 503, "rate": rate}]
        self.world.sim.faults.set(self.plan)

    @rule(rate=st.sampled_from((0.2, 0.5)))
    def drop_after_commit(self, rate: float) -> None:
        self.plan["drop_after_commit"] = [{"method": "POST", "path": "/api/documents", "rate": rate}]
        self.world.sim.faults.set(self.plan)

    @rule()
    def heal(self) -> None:
        self.plan["errors"], self.plan["drop_after_commit"] = [], []
        self.world.sim.faults.set(self.plan)

    @rule(pushed=st.booleans())
    def worker_dies(self, pushed: bool) -> None:
        """A worker claims a row and dies, before or after its push reached the vendor."""
        self.deaths += 1
        worker = f"doomed-{self.deaths}"
        with self.store.session(write=True) as session:
            rows = ob.claim(session, worker_id=worker, limit=1, lease_seconds=0.01, now=utcnow())
            claimed = [(r.id, r.target_connection_id, r.idempotency_key, r.movement_id) for r in rows]
        if not claimed or not pushed:
            return
        _, target_id, key, movement_id = claimed[0]
        with self.store.session() as session:
            payload = session.get(Movement, movement_id).payload
            resolved = resolve_codes(session, target_id, movement_of(payload), target="ref")
        try:
            self.connections.connector("ref").push(resolved, key)
            event("a worker died after its push landed")
        except Exception:  # the faults in force may refuse it; the worker dies either way
            pass

    @rule()
    def operator_retry(self) -> None:
        with self.store.session() as session:
            ids = list(session.scalars(select(ErrorQueue.id).where(ErrorQueue.status == ErrorStatus.OPEN)))
            if ids:
                errorqueue.retry(session, ids, by="operator")

    @rule(limit=st.integers(1, 8))
    def deliver(self, limit: int) -> None:
        for result in deliver_due(self.store, self.connections, worker_id="worker", limit=limit, policy=self.policy):
            event(f"delivery outcome: {result.outcome.value}")
            if result.settled_by_find:
                event("settled by find (no resend)")

    @rule()
    def time_passes(self) -> None:
        time.sleep(0.03)  # backoffs are scaled 1000× down: this lets rescheduled rows come due

    # -- invariants ------------------------------------------------------------------------------

    @invariant()
    def every_committed_movement_is_in_exactly_one_place(self) -> None:
        with self.store.session() as session:
            rows = session.execute(select(Movement.reference, Outbox.status, Outbox.idempotency_key)
                                   .join(Outbox, Outbox.movement_id == Movement.id)).all()
        references = [r for r, _, _ in rows]
        assert len(references) == len(set(references)), "a movement with two outbox rows for one target"
        assert set(references) == self.committed
        sent = {r for r, status, _ in rows if status == OutboxStatus.SENT}
        dlq = {r for r, status, _ in rows if status in DLQ}
        pending = {r for r, status, _ in rows if status in IN_FLIGHT}
        assert sent | dlq | pending == self.committed
        assert not (sent & dlq) and not (sent & pending) and not (dlq & pending)
        sim = self.world.sim
        for reference, status, key in rows:
            documents = sim.documents_for(key)
            assert len(documents) <= 1, f"{reference} ({key}) posted twice: {documents}"
            if status == OutboxStatus.SENT:
                assert len(documents) == 1, f"{reference} ({key}) marked sent, no document"

    @invariant()
    def no_half_applied_transition(self) -> None:
        assert_consistent(self.store)

    # -- the end of an example ------------------------------------------------------------------

    def teardown(self) -> None:
        try:
            self.world.sim.faults.clear()
            drain(self.store, self.connections, self.policy, timeout=30)
            self.every_committed_movement_is_in_exactly_one_place()
            assert_consistent(self.store)
            with self.store.session() as session:
                assert not list(session.scalars(select(Outbox.id).where(Outbox.status.in_(IN_FLIGHT))))
            self.history.check().assert_clean()
        finally:
            self.connections.close()
            self.store.close()


def test_f19_random_interleavings_lose_and_duplicate_nothing(tmp_path) -> None:
    clock = Clock()
    sim = REFERENCE.simulator(clock=clock)
    sim.seed({"world": STANDARD_WORLD.to_dict()})
    with sim.serve() as server:
        DeliveryMachine.world = World(tmp_path, sim, server.url, clock)
        try:
            run_state_machine_as_test(DeliveryMachine, settings=F19_SETTINGS)
        finally:
            del DeliveryMachine.world


@pytest.mark.parametrize("pushed", [False, True], ids=["died-before-push", "died-after-push"])
def test_f19_example_worker_death_is_reconciled(tmp_path, pushed) -> None:
    # One fixed interleaving, so the worker-death path runs on every build whatever Hypothesis draws
    clock = Clock()
    sim = REFERENCE.simulator(clock=clock)
    sim.seed({"world": STANDARD_WORLD.to_dict()})
    with sim.serve() as server:
        DeliveryMachine.world = World(tmp_path, sim, server.url, clock)
        try:
            machine = DeliveryMachine()
            try:
                for sku in ("TS-001", "SH-001", "BAG-01"):  # three stock positions: claimed together
                    machine.enqueue(count=1, sku=sku, warehouse="WH01")
                machine.worker_dies(pushed=pushed)
                machine.every_committed_movement_is_in_exactly_one_place()
                machine.no_half_applied_transition()
                time.sleep(0.02)  # the dead worker's lease runs out
                machine.deliver(limit=8)
                machine.every_committed_movement_is_in_exactly_one_place()
                with machine.store.session() as session:
                    assert set(session.scalars(select(Outbox.status))) == {OutboxStatus.SENT}
                posts = sim.calls.list(method="POST", path="/api/documents")
                assert len(posts) == 3  # the dead worker's post was found, not repeated
            finally:
                machine.teardown()
        finally:
            del DeliveryMachine.world
