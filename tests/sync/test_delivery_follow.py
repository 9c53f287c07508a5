"""Following ordering keys: the next row of a delivered key is leased with the receipts, in
order, and a long run of rows renews its leases so none is sent after its lease ran out."""
from __future__ import annotations

import time
from datetime import timedelta

from sqlalchemy import event, select

from sync.delivery import Outcome, deliver_due, deliver_from
from sync.store import Outbox, OutboxStatus, utcnow
from sync.store import outbox as ob
from tests.conformance.kit import movement
from tests.reference.connector import ReferenceConnector
from tests.sync.conftest import REFERENCE
from tests.sync.test_delivery import _rows
from tests.sync.test_delivery_history import History, fast_policy


def _receipts(per_key: int, skus=("TS-001", "TS-002")) -> list:
    """``per_key`` receipts into WH01 for each sku, interleaved: one ordering key per sku."""
    return [movement("purchase_receipt", reference=f"F-{sku}-{n}", lines=[(sku, str(n + 1))], dest="WH01")
            for n in range(per_key) for sku in skus]


def test_following_delivers_each_key_in_order_with_one_settle_per_round(store, systems) -> None:
    # Given three receipts for each of two ordering keys
    running = systems(ref=REFERENCE)
    history = History(store, running)
    history.enqueue(_receipts(3), ["ref"])
    commits: list[int] = []
    listener = lambda *args: commits.append(1)  # noqa: E731
    # When one claim delivers and follows its keys
    event.listen(store.engine, "commit", listener)
    try:
        results = deliver_due(store, running.connections, worker_id="w1", policy=fast_policy(), follow_seconds=60)
    finally:
        event.remove(store.engine, "commit", listener)
    # Then all six went out in this one call, each key's rows in outbox order
    assert [r.outcome for r in results] == [Outcome.SENT] * 6
    rows = _rows(store)
    assert {r.status for r in rows} == {OutboxStatus.SENT}
    for key in {r.ordering_key for r in rows}:
        numbers = [int(r.receipt_document_id) for r in rows if r.ordering_key == key]
        assert numbers == sorted(numbers), (key, numbers)
    # and three rounds took three settle transactions (each leasing the next rows), not one per row
    assert len(commits) <= 3 + 4  # settles + claim + read sessions; one per row and claim made it 12+
    history.check().assert_clean()


def test_without_following_a_claim_delivers_only_the_heads(store, systems) -> None:
    running = systems(ref=REFERENCE)
    History(store, running).enqueue(_receipts(3), ["ref"])
    results = deliver_due(store, running.connections, worker_id="w1", policy=fast_policy())
    assert [r.outcome for r in results] == [Outcome.SENT] * 2


def test_claim_heads_leases_only_the_oldest_due_row_of_each_key(store, systems) -> None:
    # Given three rows for each of two keys, the first row of the second key not due yet
    running = systems(ref=REFERENCE)
    History(store, running).enqueue(_receipts(3), ["ref"])
    rows = _rows(store)
    target = rows[0].target_connection_id
    first, second = rows[0], rows[1]
    with store.session() as s:
        s.get(Outbox, second.id).next_attempt_at = utcnow() + timedelta(hours=1)
    keys = [(target, first.ordering_key), (target, second.ordering_key)]
    with store.session(write=True) as s:
        # When the heads of both keys are claimed
        leased = ob.claim_heads(s, keys, worker_id="w1", lease_seconds=30, now=utcnow())
        # Then only the first key's oldest row is leased: the second key's head is not due, and
        # its later rows stay held back behind it
        assert leased == [first.id]
        # and claiming again leases nothing: that head is now sending under a live lease
        assert ob.claim_heads(s, keys, worker_id="w2", lease_seconds=30, now=utcnow()) == []
    row = _rows(store)[0]
    assert (row.status, row.lease_owner, row.attempts) == (OutboxStatus.SENDING, "w1", 1)


def test_a_long_run_renews_its_leases_so_nothing_goes_out_after_its_lease(store, systems, monkeypatch) -> None:
    # Given six due rows claimed at once, a lease of 0.6 s and pushes of 0.15 s each (0.9 s in all)
    running = systems(ref=REFERENCE)
    history = History(store, running)
    history.enqueue(_receipts(1, ("TS-001", "TS-002", "SH-001", "RICE-5", "SOCK-3", "BAG-01")), ["ref"])
    seen: list[tuple[str, str | None, bool]] = []
    real_push = ReferenceConnector.push

    def slow_push(self, mv, key):
        with store.session() as s:
            row = s.scalars(select(Outbox).where(Outbox.idempotency_key == key)).one()
            seen.append((key, row.lease_owner, row.lease_expires_at > utcnow()))
        time.sleep(0.15)
        return real_push(self, mv, key)

    monkeypatch.setattr(ReferenceConnector, "push", slow_push)
    # When one worker delivers them one after another
    results = deliver_due(store, running.connections, worker_id="w1", policy=fast_policy(lease_seconds=0.6))
    # Then each push started while this worker held a live lease on its row
    assert [r.outcome for r in results] == [Outcome.SENT] * 6
    assert len(seen) == 6 and all(owner == "w1" and live for _, owner, live in seen), seen
    history.check().assert_clean()


def test_deliver_from_returns_its_own_row_first_and_nothing_when_not_claimable(store, systems) -> None:
    running = systems(ref=REFERENCE)
    History(store, running).enqueue(_receipts(2), ["ref"])
    rows = _rows(store)
    # the second row of a key is held back: nothing to do
    assert deliver_from(store, running.connections, rows[2].id, worker_id="w1", policy=fast_policy()) == []
    results = deliver_from(store, running.connections, rows[1].id, worker_id="w1", policy=fast_policy(), also=5,
                           follow_seconds=60)
    assert results[0].outbox_id == rows[1].id
    assert sorted(r.outbox_id for r in results) == [r.id for r in rows]
