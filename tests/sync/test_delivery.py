"""Delivery against the Kingdee and reference simulators: happy path, deliver_one, paused
connections, auth failure, missing codes, expired leases."""
from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select

import sync.delivery as delivery
from sync.delivery import Outcome, claim_one, deliver_due, deliver_one, resume_connection, sweep
from sync.store import Connection, ConnectionStatus, ErrorQueue, IdMap, Outbox, OutboxStatus, utcnow
from sync.store import outbox as ob
from tests.conformance.kit import movement
from tests.sync.conftest import KINGDEE, REFERENCE
from tests.sync.test_delivery_history import History, drain, fast_policy, outcomes


def _rows(store):
    with store.session() as s:
        return list(s.scalars(select(Outbox).order_by(Outbox.id)))


def test_happy_path_moves_each_ledger_exactly_once(store, systems) -> None:
    # Given five movements for Kingdee and the reference ERP
    running = systems(kd=KINGDEE, ref=REFERENCE)
    history = History(store, running)
    moves = [movement("purchase_receipt"), movement("sales_issue"), movement("transfer"),
             movement("count_gain"), movement("misc_issue", lines=[("SH-001", "1")])]
    history.enqueue(moves, ["kd", "ref"])
    # When one worker delivers until nothing is due (rows sharing an ordering key go one after
    # the other: the receipt, issue and transfer all take from TS-001@WH01)
    results = drain(store, running.connections, fast_policy())
    # Then every row is sent with its receipt, once, and a further pass has nothing to do
    assert outcomes(results) == {"sent": 10}
    assert all(r.document_id and r.pushed and not r.settled_by_find for r in results)
    assert deliver_due(store, running.connections, worker_id="w1", policy=fast_policy()) == []
    report = history.check()
    report.assert_clean()
    assert report.sent == 10
    assert all(r.status == OutboxStatus.SENT and r.sent_at.tzinfo is not None and r.attempts == 1
               for r in _rows(store))


def test_deliver_one_claims_only_a_due_row(store, systems) -> None:
    running = systems(ref=REFERENCE)
    history = History(store, running)
    history.enqueue([movement("purchase_receipt")], ["ref"])
    row_id = _rows(store)[0].id
    policy = fast_policy()
    # When the row is not due yet, nothing happens
    later = utcnow() - timedelta(minutes=5)
    assert deliver_one(store, running.connections, row_id, worker_id="w1", policy=policy, now=later) is None
    # When it is due, it is delivered; a second message for the same row is a no-op
    result = deliver_one(store, running.connections, row_id, worker_id="w1", policy=policy)
    assert result is not None and result.outcome is Outcome.SENT
    assert deliver_one(store, running.connections, row_id, worker_id="w2", policy=policy) is None
    history.check().assert_clean()


def test_claim_one_keeps_the_order_of_an_ordering_key(store, systems) -> None:
    # Given a receipt into TS-001@WH01 and then a transfer out of it
    running = systems(ref=REFERENCE)
    history = History(store, running)
    history.enqueue([movement("purchase_receipt", lines=[("TS-001", "5")], dest="WH01"),
                     movement("transfer", lines=[("TS-001", "5")], source="WH01", dest="WH02")], ["ref"])
    older, newer = (r.id for r in _rows(store))
    with store.session(write=True) as s:
        # Then the newer row cannot be claimed while the older one is pending
        assert claim_one(s, newer, worker_id="w1", lease_seconds=30, now=utcnow()) is None
        assert claim_one(s, older, worker_id="w1", lease_seconds=30, now=utcnow()) is not None
        assert claim_one(s, older, worker_id="w2", lease_seconds=30, now=utcnow()) is None  # leased


def test_auth_failure_pauses_the_connection_and_rows_wait(store, systems) -> None:
    # Given the reference ERP refuses our credentials from now on
    running = systems(ref=REFERENCE, kd=KINGDEE)
    history = History(store, running)
    history.enqueue([movement("purchase_receipt", lines=[(sku, "1")]) for sku in ("TS-001", "SH-001", "BAG-01")],
                    ["ref", "kd"])
    sim = running.sims["ref"]
    sim.expire_sessions()
    sim.faults.set({"errors": [{"path": "/api/login", "status": 401, "body": {"ok": False, "code": "AUTH",
                                                                           "message": "password expired"}}]})
    # When the worker delivers
    results = deliver_due(store, running.connections, worker_id="w1", policy=fast_policy())
    # Then the reference connection is paused with the reason, its rows are pending again with
    # their attempt not counted, and Kingdee was delivered regardless
    by_target = {t: outcomes(r for r in results if r.target == t) for t in ("ref", "kd")}
    assert by_target == {"ref": {"paused": 1, "released": 2}, "kd": {"sent": 3}}
    with store.session() as s:
        ref = s.scalars(select(Connection).where(Connection.name == "ref")).one()
        assert ref.status == ConnectionStatus.PAUSED and "auth" in ref.paused_reason
        assert "ref-secret-42" not in ref.paused_reason
        waiting = list(s.scalars(select(Outbox).where(Outbox.target_connection_id == ref.id)))
        assert {(r.status, r.attempts) for r in waiting} == {(OutboxStatus.PENDING, 0)}
        assert s.scalar(select(ErrorQueue.id)) is None
    # And nothing is claimed for it while paused
    assert deliver_due(store, running.connections, worker_id="w1", policy=fast_policy()) == []
    # When an operator fixes the password and resumes the connection, the rows go out once
    sim.faults.clear()
    with store.session() as s:
        assert resume_connection(s, "ref")
    assert outcomes(drain(store, running.connections, fast_policy())) == {"sent": 3}
    history.check().assert_clean()


def test_missing_code_defers_until_it_is_mapped(store, systems, monkeypatch) -> None:
    # Given the target has no code for SH-001 yet
    running = systems(ref=REFERENCE)
    history = History(store, running)
    mapped: dict[str, str] = {}
    monkeypatch.setattr(delivery, "to_externals",
                        lambda s, cid, entity, codes: {code: None if code == "SH-001" and not mapped else code
                                                       for code in codes})
    history.enqueue([movement("purchase_receipt", lines=[("SH-001", "3")])], ["ref"])
    # When delivered, the row is deferred (nothing sent) and says what is missing
    [result] = deliver_due(store, running.connections, worker_id="w1", policy=fast_policy())
    assert result.outcome is Outcome.DEFERRED and not result.pushed
    assert result.error_kind == "dependency_missing" and "item 'SH-001'" in result.error
    assert result.next_attempt_at > utcnow() - timedelta(seconds=1)
    # When the pull maps it, the next attempt delivers it
    mapped["SH-001"] = "SH-001"
    assert outcomes(drain(store, running.connections, fast_policy(defer_initial=1.0))) == {"sent": 1}
    history.check().assert_clean()


def test_codes_are_translated_for_the_target_through_the_code_map(store, systems) -> None:
    # Given the code map says the reference ERP knows warehouse WH02 as WH01
    running = systems(ref=REFERENCE)
    with store.session() as s:
        s.add(IdMap(connection_id=running.connections.id("ref"), entity="warehouses", canonical_id="WH02",
                    external_id="WH01", external_code="WH01"))
    history = History(store, running)
    mv = movement("purchase_receipt", lines=[("TS-001", "4")], dest="WH02")
    history.enqueue([mv], ["ref"])
    # When it is delivered
    drain(store, running.connections, fast_policy())
    # Then the document names the target's warehouse
    [document] = running.sims["ref"].documents
    assert document["lines"][0]["to_wh"] == "WH01"


def test_a_worker_dies_mid_delivery_and_the_sweeper_settles_it_with_find(store, systems) -> None:
    # Given a worker that claimed a row, pushed it, and died before recording the receipt
    running = systems(kd=KINGDEE)
    history = History(store, running)
    mv = movement("purchase_receipt")
    history.enqueue([mv], ["kd"])
    start = utcnow()
    with store.session(write=True) as s:
        [row] = ob.claim(s, worker_id="dead", limit=1, lease_seconds=1, now=start)
        key = row.idempotency_key
    running.connections.connector("kd").push(mv, key)
    # When its lease expires and the sweeper runs
    assert sweep(store, start + timedelta(seconds=2)) == 1
    # Then the next worker finds the document and marks it sent without sending again
    [result] = deliver_due(store, running.connections, worker_id="w2", policy=fast_policy(),
                           now=start + timedelta(seconds=3))
    assert result.outcome is Outcome.SENT and result.settled_by_find and not result.pushed
    assert len(running.sims["kd"].documents_for(key)) == 1
    history.check().assert_clean()


def test_codes_of_a_claimed_batch_are_looked_up_once_per_entity(store, systems) -> None:
    # Given a mapped warehouse and ten movements of several lines each
    from sqlalchemy import event

    running = systems(ref=REFERENCE)
    conn = running.connections.id("ref")
    with store.session() as s:
        s.add(IdMap(connection_id=conn, entity="warehouses", canonical_id="WH02", external_id="WH01",
                    external_code="WH01"))
    moves = [movement("purchase_receipt", lines=[("TS-001", "1"), ("TS-002", "2"), ("SH-001", "3")], dest="WH02")
             for _ in range(10)]
    statements: list[str] = []
    listener = lambda *args: statements.append(args[2])  # noqa: E731
    with store.session() as s:
        event.listen(store.engine, "before_cursor_execute", listener)
        try:
            known = delivery.lookup_codes(s, conn, moves)
            resolved = [delivery.resolve_codes(s, conn, m, target="ref", known=known) for m in moves]
        finally:
            event.remove(store.engine, "before_cursor_execute", listener)
    # Then one query per entity named (items, warehouses, partners), not one per line and code
    assert len([q for q in statements if "id_map" in q]) <= 3
    assert all(line.to_warehouse == "WH01" for m in resolved for line in m.lines)
    assert [line.sku for line in resolved[0].lines] == ["TS-001", "TS-002", "SH-001"]


def test_receipts_of_a_claimed_batch_are_recorded_in_one_transaction(store, systems) -> None:
    # Given five due rows for the reference ERP
    from sqlalchemy import event

    running = systems(ref=REFERENCE)
    history = History(store, running)
    history.enqueue([movement("purchase_receipt", lines=[(sku, "1")])
                     for sku in ("TS-001", "TS-002", "SH-001", "RICE-5", "SOCK-3")], ["ref"])
    commits: list[int] = []
    listener = lambda *args: commits.append(1)  # noqa: E731
    event.listen(store.engine, "commit", listener)
    try:
        results = deliver_due(store, running.connections, worker_id="w1", policy=fast_policy())
    finally:
        event.remove(store.engine, "commit", listener)
    # Then all are sent, each with its receipt, and the receipts took one commit, not five
    assert [r.outcome for r in results] == [Outcome.SENT] * 5 and all(r.document_number for r in results)
    assert len(commits) <= 5  # read sessions, the claim, the receipts; one commit per receipt made it 9
    with store.session() as s:
        assert {r.status for r in s.scalars(select(Outbox))} == {OutboxStatus.SENT}
    history.check().assert_clean()
