from __future__ import annotations

import threading
import time
from datetime import timedelta

import pytest
from sqlalchemy import select, text

from sync.store import Outbox, OutboxStatus, Store
from sync.store.outbox import (
    LEASE_EXPIRED,
    claim,
    mark_failed,
    mark_sent,
    release,
    requeue,
    reschedule,
    sweep_expired_leases,
)

from .conftest import NOW, add_outbox_rows


def load(store: Store, outbox_id: int) -> Outbox:
    with store.session() as s:
        return s.get_one(Outbox, outbox_id)


def claim_ids(store: Store, worker: str, *, limit: int = 10, lease: float = 60, now=NOW, **kwargs) -> list[int]:
    with store.session() as s:
        return [row.id for row in claim(s, worker_id=worker, limit=limit, lease_seconds=lease, now=now, **kwargs)]


def test_claim_leases_due_rows_oldest_first(store: Store, target: int):
    # Given three due rows and one not due yet
    due = add_outbox_rows(store, target, 3)
    later = add_outbox_rows(store, target, 1, next_attempt_at=NOW + timedelta(minutes=5))
    # When a worker claims two
    with store.session() as s:
        rows = claim(s, worker_id="w1", limit=2, lease_seconds=600, now=NOW)
        # Then it gets the two oldest, leased to it
        assert [row.id for row in rows] == due[:2]
        for row in rows:
            assert row.status == OutboxStatus.SENDING
            assert row.lease_owner == "w1"
            assert row.lease_expires_at == NOW + timedelta(seconds=600)
            assert row.attempts == 1
            assert row.outcome_unknown is False
    # And the next claim gets the third, but not the one that is not due
    assert claim_ids(store, "w2", lease=600) == due[2:]
    assert claim_ids(store, "w2", now=NOW + timedelta(minutes=5)) == later


def test_claim_only_for_the_given_targets(store: Store, target: int):
    from sync.store import Connection

    with store.session() as s:
        other = Connection(name="sap_prod", platform="sap_b1")
        s.add(other)
        s.flush()
        other_id = other.id
    mine = add_outbox_rows(store, target, 2)
    theirs = add_outbox_rows(store, other_id, 2)
    assert claim_ids(store, "w1", target_connection_ids=[other_id]) == theirs
    assert claim_ids(store, "w1", target_connection_ids=[]) == []
    assert claim_ids(store, "w1", target_connection_ids={target, other_id}) == mine


def test_rows_with_the_same_ordering_key_go_one_at_a_time(store: Store, target: int):
    # Given two movements for the same item and warehouse, and one for another
    first, second, other = add_outbox_rows(store, target, 3, ordering_keys=["A-1|WH1", "A-1|WH1", "B-2|WH1"])
    # When a worker claims everything it can
    # Then the second waits for the first
    assert claim_ids(store, "w1") == [first, other]
    assert claim_ids(store, "w1") == []
    # When the first is retried later, the second still waits
    with store.session() as s:
        assert reschedule(
            s, first, worker_id="w1", now=NOW, next_attempt_at=NOW + timedelta(seconds=30),
            error_kind="Transient", error_message="503",
        )
    assert claim_ids(store, "w1", now=NOW + timedelta(seconds=10)) == []
    # When the first is delivered, the second may go
    assert claim_ids(store, "w1", now=NOW + timedelta(seconds=30)) == [first]
    with store.session() as s:
        assert mark_sent(s, first, worker_id="w1", now=NOW, receipt_document_id="1", receipt_document_number="RK1")
    assert claim_ids(store, "w1", now=NOW + timedelta(seconds=30)) == [second]


def test_a_failed_row_does_not_hold_later_rows_back(store: Store, target: int):
    first, second = add_outbox_rows(store, target, 2, ordering_keys=["A-1|WH1", "A-1|WH1"])
    assert claim_ids(store, "w1") == [first]
    with store.session() as s:
        assert mark_failed(s, first, worker_id="w1", now=NOW, error_kind="Rejected", error_message="库存不足")
    assert claim_ids(store, "w1") == [second]
    assert load(store, first).status == OutboxStatus.FAILED
    # And an operator can put it back
    with store.session() as s:
        assert requeue(s, first, now=NOW)
        assert not requeue(s, second, now=NOW)  # sending, not failed
    assert load(store, first).status == OutboxStatus.PENDING


def test_mark_sent_records_the_receipt_and_clears_the_lease(store: Store, target: int):
    [row_id] = add_outbox_rows(store, target, 1)
    claim_ids(store, "w1")
    with store.session() as s:
        assert mark_sent(s, row_id, worker_id="w1", now=NOW, receipt_document_id="1001", receipt_document_number="RK-1")
    row = load(store, row_id)
    assert (row.status, row.receipt_document_id, row.receipt_document_number) == ("sent", "1001", "RK-1")
    assert (row.lease_owner, row.lease_expires_at, row.sent_at) == (None, None, NOW)
    assert claim_ids(store, "w1", now=NOW + timedelta(hours=1)) == []


def test_expired_leases_are_swept_and_reclaimed(store: Store, target: int):
    # Given a row claimed by a worker that then died
    [row_id] = add_outbox_rows(store, target, 1)
    assert claim_ids(store, "dead-worker", lease=60) == [row_id]
    # When another worker looks before the lease expires, Then it gets nothing
    assert claim_ids(store, "w2", now=NOW + timedelta(seconds=59)) == []
    with store.session() as s:
        assert sweep_expired_leases(s, NOW + timedelta(seconds=59)) == 0
    # When the sweeper runs after the lease expired
    with store.session() as s:
        assert sweep_expired_leases(s, NOW + timedelta(seconds=61)) == 1
    # Then the row is ambiguous (the dead worker may have sent it) and due
    row = load(store, row_id)
    assert (row.status, row.outcome_unknown, row.lease_owner) == ("ambiguous", True, None)
    assert row.last_error_kind == LEASE_EXPIRED
    # And another worker reclaims it, told to look the document up before sending again
    with store.session() as s:
        [row] = claim(s, worker_id="w2", limit=5, lease_seconds=60, now=NOW + timedelta(seconds=61))
        assert (row.id, row.lease_owner, row.attempts, row.outcome_unknown) == (row_id, "w2", 2, True)


def test_claim_takes_an_expired_lease_even_without_a_sweep(store: Store, target: int):
    [row_id] = add_outbox_rows(store, target, 1)
    claim_ids(store, "dead-worker", lease=60)
    with store.session() as s:
        [row] = claim(s, worker_id="w2", limit=5, lease_seconds=60, now=NOW + timedelta(seconds=60))
        assert (row.id, row.lease_owner, row.outcome_unknown, row.attempts) == (row_id, "w2", True, 2)


def test_a_worker_that_lost_its_lease_cannot_settle_the_row(store: Store, target: int):
    # Given a row whose lease w1 lost to w2
    [row_id] = add_outbox_rows(store, target, 1)
    claim_ids(store, "w1", lease=60)
    later = NOW + timedelta(seconds=120)
    with store.session() as s:
        sweep_expired_leases(s, later)
    assert claim_ids(store, "w2", now=later) == [row_id]
    # When w1 comes back and tries to settle it, Then nothing changes
    with store.session() as s:
        assert not mark_sent(s, row_id, worker_id="w1", now=later, receipt_document_id="X", receipt_document_number="X")
        assert not reschedule(
            s, row_id, worker_id="w1", now=later, next_attempt_at=later, error_kind="Transient", error_message="x"
        )
        assert not mark_failed(s, row_id, worker_id="w1", now=later, error_kind="Rejected", error_message="x")
        assert not release(s, row_id, worker_id="w1", now=later)
    row = load(store, row_id)
    assert (row.status, row.lease_owner, row.receipt_document_id, row.last_error_kind) == (
        "sending",
        "w2",
        None,
        LEASE_EXPIRED,
    )
    # And the owner still can
    with store.session() as s:
        assert mark_sent(s, row_id, worker_id="w2", now=later, receipt_document_id="1", receipt_document_number="RK1")
    assert load(store, row_id).status == OutboxStatus.SENT


def test_settling_updates_rows_already_loaded_in_the_session(store: Store, target: int):
    [row_id] = add_outbox_rows(store, target, 1)
    with store.session() as s:
        [row] = claim(s, worker_id="w1", limit=1, lease_seconds=60, now=NOW)
        assert mark_sent(s, row_id, worker_id="w1", now=NOW, receipt_document_id="9", receipt_document_number="RK9")
        assert (row.status, row.receipt_document_number) == ("sent", "RK9")


def test_reschedule_ambiguous_then_reclaim_asks_for_a_lookup(store: Store, target: int):
    [row_id] = add_outbox_rows(store, target, 1)
    claim_ids(store, "w1")
    retry_at = NOW + timedelta(seconds=15)
    with store.session() as s:
        assert reschedule(
            s, row_id, worker_id="w1", now=NOW, next_attempt_at=retry_at,
            error_kind="Ambiguous", error_message="read timeout after send", ambiguous=True,
        )
    row = load(store, row_id)
    assert (row.status, row.outcome_unknown, row.next_attempt_at, row.last_error_kind) == (
        "ambiguous", True, retry_at, "Ambiguous",
    )
    assert claim_ids(store, "w2", now=retry_at - timedelta(seconds=1)) == []
    with store.session() as s:
        [row] = claim(s, worker_id="w2", limit=1, lease_seconds=60, now=retry_at)
        assert (row.outcome_unknown, row.attempts) == (True, 2)
    # When the lookup found nothing and the resend fails before it left, the outcome is known again
    with store.session() as s:
        assert reschedule(
            s, row_id, worker_id="w2", now=retry_at, next_attempt_at=retry_at,
            error_kind="Transient", error_message="connect refused",
        )
    assert (load(store, row_id).status, load(store, row_id).outcome_unknown) == ("pending", False)


def test_release_hands_the_row_back_without_counting_the_attempt(store: Store, target: int):
    [row_id] = add_outbox_rows(store, target, 1)
    claim_ids(store, "w1")
    with store.session() as s:
        assert release(s, row_id, worker_id="w1", now=NOW, next_attempt_at=NOW + timedelta(seconds=5))
    row = load(store, row_id)
    assert (row.status, row.attempts, row.lease_owner, row.next_attempt_at) == (
        "pending", 0, None, NOW + timedelta(seconds=5),
    )


def test_claim_validates_its_arguments(store: Store):
    with store.session() as s:
        with pytest.raises(ValueError):
            claim(s, worker_id="w", limit=0, lease_seconds=60, now=NOW)
        with pytest.raises(ValueError):
            claim(s, worker_id="w", limit=1, lease_seconds=0, now=NOW)


def run_claimers(store: Store, workers: list[str], *, batch: int) -> dict[str, list[int]]:
    """Each worker, in its own thread and sessions, claims batches until nothing is left."""
    claimed: dict[str, list[int]] = {worker: [] for worker in workers}
    errors: list[BaseException] = []
    start = threading.Barrier(len(workers))

    def work(worker: str) -> None:
        try:
            start.wait(timeout=10)
            while True:
                with store.session() as s:
                    ids = [row.id for row in claim(s, worker_id=worker, limit=batch, lease_seconds=600, now=NOW)]
                if not ids:
                    return
                claimed[worker].extend(ids)
                time.sleep(0.005)  # deliver, then come back for more
        except BaseException as error:  # pragma: no cover - reported below
            errors.append(error)

    threads = [threading.Thread(target=work, args=(worker,), name=f"claimer-{worker}") for worker in workers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not any(thread.is_alive() for thread in threads), "a claimer is stuck"
    assert not errors, errors
    return claimed


@pytest.mark.timeout(120)
def test_concurrent_claimers_never_take_the_same_row(store: Store, target: int):
    shares = {"w1": 0, "w2": 0}
    for round_number in range(3):
        # Given many due rows
        ids = add_outbox_rows(store, target, 150, prefix=f"round{round_number}")
        # When two workers claim small batches at the same time until nothing is left
        claimed = run_claimers(store, ["w1", "w2"], batch=3)
        # Then no row was claimed twice, and together they claimed every row
        w1, w2 = claimed["w1"], claimed["w2"]
        assert len(w1) == len(set(w1)) and len(w2) == len(set(w2))
        assert not set(w1) & set(w2)
        assert sorted(w1 + w2) == ids
        shares["w1"] += len(w1)
        shares["w2"] += len(w2)
    # And both really ran at the same time (SQLite is not fair between waiting writers, so a
    # single round may go to one worker; over all rounds both get a share)
    assert shares["w1"] and shares["w2"], shares
    # And every row is leased to exactly the worker that claimed it, once
    with store.session() as s:
        rows = s.scalars(select(Outbox)).all()
        assert all(row.status == "sending" and row.attempts == 1 for row in rows)


@pytest.mark.postgres
def test_postgres_claimers_skip_rows_locked_by_an_open_claim(pg_schema_url):
    # Given a PostgreSQL store with four due rows
    store = Store.open(pg_schema_url)
    try:
        store.upgrade()
        from sync.store import Connection

        with store.session() as s:
            connection = Connection(name="k", platform="kingdee")
            s.add(connection)
            s.flush()
            target_id = connection.id
        ids = add_outbox_rows(store, target_id, 4)
        # When w1 has claimed two rows but not committed yet
        with store.session() as first:
            mine = [row.id for row in claim(first, worker_id="w1", limit=2, lease_seconds=60, now=NOW)]
            # Then w2 neither waits for w1 nor takes its rows: it gets the other two at once
            with store.session() as second:
                second.execute(text("SET LOCAL lock_timeout = '2s'"))
                theirs = [row.id for row in claim(second, worker_id="w2", limit=4, lease_seconds=60, now=NOW)]
        assert mine == ids[:2]
        assert theirs == ids[2:]
    finally:
        store.close()
