"""History + checker for delivery tests (RELIABILITY.md §3, §6(i)), and tests of the checker.

A :class:`History` remembers every movement a test enqueued and the simulators' ledgers before
delivery; :meth:`History.check` then reads the truth from each simulator: the documents carrying
each outbox row's idempotency key (``sim.documents_for(key)``) and the stock ledger. It reports

- ``lost``: rows marked sent whose key has no document, or rows never settled;
- ``duplicated``: keys carried by more than one document;
- ``leaked``: rows in the error queue (failed/dead) whose key still has a posted document;
- ``ledger``: whether each simulator's stock moved exactly by the movements marked sent.

:func:`drain` runs ``deliver_due`` until nothing is left to do (waiting for rescheduled rows).
"""
from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import func, select

import canonical
from sync.delivery import DeliveryResult, Outcome, deliver_due
from sync.push import enqueue_many, movement_of
from sync.retry import RetryPolicy
from sync.store import Connection, Movement, Outbox, OutboxStatus, Store, utcnow
from tests.conformance.kit import ledger_change, ledger_snapshot

IN_FLIGHT = (OutboxStatus.PENDING, OutboxStatus.SENDING, OutboxStatus.AMBIGUOUS)


def fast_policy(**overrides: Any) -> RetryPolicy:
    """The production policy scaled down 1000×: 15 ms first durable backoff, 30 ms reconcile delay."""
    return RetryPolicy(**{"scale": 0.001, **overrides})


def drain(store: Store, connections: Any, policy: RetryPolicy, *, worker_id: str = "w1", timeout: float = 60.0,
          limit: int = 50, targets: Iterable[str] | None = None) -> list[DeliveryResult]:
    """``deliver_due`` until no row of the (active) targets is pending, sending or ambiguous."""
    results: list[DeliveryResult] = []
    deadline = time.monotonic() + timeout
    targets = list(targets) if targets is not None else None
    while True:
        batch = deliver_due(store, connections, worker_id=worker_id, limit=limit, policy=policy, targets=targets)
        results.extend(batch)
        if batch:
            continue
        with store.session() as s:
            query = select(func.count(), func.min(Outbox.next_attempt_at)).join(
                Connection, Connection.id == Outbox.target_connection_id).where(
                Outbox.status.in_(IN_FLIGHT), Connection.status == "active")
            if targets is not None:
                query = query.where(Connection.name.in_(targets))
            remaining, next_due = s.execute(query).one()
        if not remaining:
            return results
        if time.monotonic() > deadline:
            raise AssertionError(f"{remaining} rows still in flight after {timeout} s")
        wait = (next_due - utcnow()).total_seconds() if next_due is not None else 0.01
        time.sleep(min(max(wait, 0.002), 0.25))


@dataclass
class Report:
    lost: list[str] = field(default_factory=list)
    duplicated: list[str] = field(default_factory=list)
    leaked: list[str] = field(default_factory=list)
    ledger: dict[str, dict[Any, Decimal]] = field(default_factory=dict)  # target -> unexplained change
    sent: int = 0
    failed: int = 0

    def assert_clean(self) -> None:
        assert self.lost == [], f"lost: {self.lost[:10]}"
        assert self.duplicated == [], f"duplicated: {self.duplicated[:10]}"
        assert self.leaked == [], f"in the error queue but posted: {self.leaked[:10]}"
        assert all(not diff for diff in self.ledger.values()), f"ledger differs from the sent movements: {self.ledger}"


class History:
    """Intents (what was enqueued) against effects (what each simulator holds)."""

    def __init__(self, store: Store, systems: Any) -> None:
        self.store = store
        self.systems = systems
        self.before = {name: ledger_snapshot(sim) for name, sim in systems.sims.items()}

    def enqueue(self, movements: Sequence[canonical.Movement], targets: Sequence[str]) -> list[int]:
        with self.store.session() as s:
            return enqueue_many(s, movements, targets, connections=self.systems.connections)

    def check(self, *, settled: bool = True) -> Report:
        report = Report()
        expected: dict[str, dict[Any, Decimal]] = defaultdict(lambda: defaultdict(Decimal))
        with self.store.session() as s:
            rows = s.execute(select(Outbox, Movement.payload, Connection.name)
                             .join(Movement, Movement.id == Outbox.movement_id)
                             .join(Connection, Connection.id == Outbox.target_connection_id)).all()
        for row, payload, target in rows:
            sim = self.systems.sims[target]
            documents = sim.documents_for(row.idempotency_key)
            label = f"{payload['reference']}→{target} ({row.idempotency_key}, {row.status})"
            if len(documents) > 1:
                report.duplicated.append(f"{label}: {documents}")
            if row.status == OutboxStatus.SENT:
                report.sent += 1
                if not documents:
                    report.lost.append(f"{label}: marked sent, no document")
                elif row.receipt_document_number and row.receipt_document_number not in documents:
                    report.lost.append(f"{label}: receipt {row.receipt_document_number} not in {documents}")
                for d in movement_of(payload).stock_deltas():
                    expected[target][(d.sku, d.warehouse, d.bin, d.lot)] += d.quantity
            elif row.status in (OutboxStatus.FAILED, OutboxStatus.DEAD):
                report.failed += 1
                if documents:
                    report.leaked.append(f"{label}: {documents}")
            elif settled:
                report.lost.append(f"{label}: never settled")
        for name, sim in self.systems.sims.items():
            change = ledger_change(self.before[name], ledger_snapshot(sim))
            want = {k: v for k, v in expected[name].items() if v != 0}
            keys = set(change) | set(want)
            diff = {k: change.get(k, Decimal(0)) - want.get(k, Decimal(0)) for k in keys}
            report.ledger[name] = {k: v for k, v in diff.items() if v != 0}
        return report


def outcomes(results: Iterable[DeliveryResult]) -> dict[str, int]:
    counts: dict[str, int] = defaultdict(int)
    for r in results:
        counts[r.outcome.value] += 1
    return dict(counts)


# -- the checker checks ----------------------------------------------------------------------------


def test_checker_sees_a_duplicate_and_a_lost_row(store, systems) -> None:
    from tests.conformance.kit import movement
    from tests.sync.conftest import REFERENCE

    running = systems(ref=REFERENCE)
    history = History(store, running)
    # Given two movements, one delivered by the hub
    first, second = movement("purchase_receipt"), movement("purchase_receipt")
    history.enqueue([first, second], ["ref"])
    drain(store, running.connections, fast_policy())
    assert history.check().lost == []
    # When someone posts the first one again behind the hub's back, and the second row is
    # marked sent although its document is gone
    with store.session() as s:
        keys = dict(s.execute(select(Movement.reference, Outbox.idempotency_key)
                              .join(Outbox, Outbox.movement_id == Movement.id)).all())
    connector = running.connections.connector("ref")
    connector._create(first, keys[first.reference])  # the reference connector's raw create
    sim = running.sims["ref"]
    with sim.lock:
        for document in sim.documents:
            if document["ext_key"] == keys[second.reference]:
                document["ext_key"] = "gone"
    # Then the checker reports both
    report = history.check()
    assert len(report.duplicated) == 1 and first.reference in report.duplicated[0]
    assert len(report.lost) == 1 and second.reference in report.lost[0]
    assert report.ledger["ref"]  # the extra posting shows in the ledger too
    with pytest.raises(AssertionError):
        report.assert_clean()
    assert Outcome.SENT == "sent"
