"""errorqueue.retry, set-based: each entry's outcome and reason as when it went entry by entry."""
from __future__ import annotations

from sqlalchemy import select

from connectors.errors import ContractViolation
from sync import errorqueue
from sync.store import ErrorQueue, ErrorStatus, Outbox, OutboxStatus, utcnow
from tests.sync import test_errorqueue
from tests.sync.test_errorqueue import dead, stock_refusal

connections = test_errorqueue.connections  # the same fixture


def test_two_entries_of_one_row_requeue_it_once_and_the_second_stays_open(store, connections) -> None:
    # Given a dead-lettered row with two open entries (its refusal, and a broker give-up on it)
    [first] = dead(store, connections, [stock_refusal("SH-001", 3)])
    with store.session() as s:
        entry = s.get(ErrorQueue, first)
        second = ErrorQueue(connection_id=entry.connection_id, outbox_id=entry.outbox_id, entity=entry.entity,
                            record_key=entry.record_key, kind="dispatch_failed", message="broker gave up",
                            payload={}, fingerprint="other", first_seen=utcnow(), last_seen=utcnow())
        s.add(second)
        s.flush()
        second_id = second.id
    # When an operator retries both, and an id that does not exist
    with store.session() as s:
        result = errorqueue.retry(s, [first, second_id, 999_999], by="alice")
    # Then the row is re-queued once, by the first entry; the second is put back to open, saying why
    assert result.changed == [first]
    assert result.skipped == [(second_id, "its outbox row is pending, not failed"), (999_999, "no such entry")]
    with store.session() as s:
        statuses = {e.id: (e.status, e.resolved_by) for e in s.scalars(select(ErrorQueue))}
        [row] = s.scalars(select(Outbox)).all()
    assert statuses == {first: (ErrorStatus.RETRYING, "alice"), second_id: (ErrorStatus.OPEN, None)}
    assert (row.status, row.attempts) == (OutboxStatus.PENDING, 0)


def test_many_entries_are_retried_in_chunks(store, connections, monkeypatch) -> None:
    monkeypatch.setattr(errorqueue, "RETRY_CHUNK", 2)
    ids = dead(store, connections, [stock_refusal("SH-001", 3), stock_refusal("TS-001", 4),
                                    ContractViolation("answer had no FID"), stock_refusal("TS-002", 5)])
    with store.session() as s:
        assert errorqueue.retry(s, ids).changed == ids
    with store.session() as s:
        assert {r.status for r in s.scalars(select(Outbox))} == {OutboxStatus.PENDING}


def test_a_sent_row_is_not_requeued(store, connections) -> None:
    # Given an entry whose row was delivered meanwhile (marked sent behind the queue's back)
    [entry_id] = dead(store, connections, [stock_refusal("SH-001", 3)])
    with store.session() as s:
        s.get(Outbox, s.get(ErrorQueue, entry_id).outbox_id).status = OutboxStatus.SENT
    with store.session() as s:
        result = errorqueue.retry(s, [entry_id])
    assert result.changed == [] and result.skipped == [(entry_id, "its outbox row is sent, not failed")]
    with store.session() as s:
        assert s.get(ErrorQueue, entry_id).status == ErrorStatus.OPEN
