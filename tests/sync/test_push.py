"""enqueue: a movement and its outbox rows in one transaction, fixed idempotency keys, ordering keys."""
from __future__ import annotations

import re

import pytest
from sqlalchemy import func, select

from canonical import MovementKind
from connectors.base import ConnectionSettings
from connectors.errors import ConfigError
from sync.connections import Connections
from sync.push import (
    KEY_LENGTH,
    MovementConflict,
    enqueue,
    enqueue_many,
    idempotency_key,
    movement_of,
    ordering_key,
    payload_of,
)
from sync.store import Movement, Outbox, OutboxStatus, Store
from tests.conformance.kit import movement


@pytest.fixture
def connections(store: Store) -> Connections:
    return Connections(store, {"kd": ConnectionSettings(platform="kingdee", url="http://127.0.0.1:9"),
                               "sap": ConnectionSettings(platform="sap_b1", url="http://127.0.0.1:9")})


def _counts(store: Store) -> tuple[int, int]:
    with store.session() as s:
        return s.scalar(select(func.count()).select_from(Movement)), s.scalar(select(func.count()).select_from(Outbox))


def test_enqueue_writes_the_movement_and_one_row_per_target(store, connections) -> None:
    # Given a purchase receipt for two targets
    mv = movement("purchase_receipt")
    # When it is enqueued
    with store.session() as s:
        movement_id = enqueue(s, mv, ["kd", "sap"], connections=connections, source_connection="kd",
                              source_document="CGRK0001")
    # Then the movement and two pending rows are stored, each with its own fixed key
    with store.session() as s:
        stored = s.get(Movement, movement_id)
        rows = list(s.scalars(select(Outbox).where(Outbox.movement_id == movement_id).order_by(Outbox.id)))
        assert stored.reference == mv.reference and stored.source_document == "CGRK0001"
        assert movement_of(stored.payload) == mv
        assert [r.status for r in rows] == [OutboxStatus.PENDING] * 2
        assert [r.idempotency_key for r in rows] == [idempotency_key(mv.reference, "kd"),
                                                     idempotency_key(mv.reference, "sap")]
        assert all(r.next_attempt_at.tzinfo is not None for r in rows)


def test_an_identical_movement_enqueued_twice_is_a_no_op(store, connections) -> None:
    mv = movement("sales_issue")
    with store.session() as s:
        first = enqueue(s, mv, ["kd"], connections=connections)
    with store.session() as s:
        again = enqueue(s, mv.model_copy(), ["kd"], connections=connections)
    assert again == first and _counts(store) == (1, 1)


def test_re_enqueue_with_a_new_target_adds_only_that_row(store, connections) -> None:
    mv = movement("sales_issue")
    with store.session() as s:
        first = enqueue(s, mv, ["kd"], connections=connections)
    with store.session() as s:
        assert enqueue(s, mv, ["kd", "sap"], connections=connections) == first
    assert _counts(store) == (1, 2)


def test_same_reference_different_content_is_refused_naming_the_record(store, connections) -> None:
    mv = movement("purchase_receipt", lines=[("TS-001", "2")])
    with store.session() as s:
        enqueue(s, mv, ["kd"], connections=connections)
    changed = movement("purchase_receipt", reference=mv.reference, lines=[("TS-001", "3")])
    with pytest.raises(MovementConflict, match=re.escape(mv.reference)):
        with store.session() as s:
            enqueue(s, changed, ["kd"], connections=connections, source_document="CGRK0042")
    assert _counts(store) == (1, 1)


def test_our_own_delivery_read_back_from_its_target_is_not_a_new_movement(store, connections) -> None:
    # Given a receipt pulled from Kingdee and queued for SAP B1
    mv = movement("purchase_receipt", lines=[("TS-001", "2")])
    with store.session() as s:
        first = enqueue(s, mv, ["sap"], connections=connections, source_connection="kd", source_document="CGRK0001")
    # When SAP B1's documents are pulled for a SAP B1 → Kingdee flow, and that document comes back
    # with less than we sent (SAP kept no memo)
    echoed = mv.model_copy(update={"memo": None}) if mv.memo else mv.model_copy(update={"memo": "changed in SAP"})
    with store.session() as s:
        again = enqueue(s, echoed, ["kd"], connections=connections, source_connection="sap", source_document="OIGN-7")
    # Then it is recognised as our own write: no conflict, nothing queued back to Kingdee
    assert again == first and _counts(store) == (1, 1)


def test_a_movement_is_never_queued_back_to_the_system_it_came_from(store, connections) -> None:
    # Given a movement that came from Kingdee, queued for SAP B1
    mv = movement("sales_issue")
    with store.session() as s:
        first = enqueue(s, mv, ["sap"], connections=connections, source_connection="kd")
    # When the same movement is enqueued again from elsewhere (a file) for both systems
    with store.session() as s:
        assert enqueue(s, mv, ["kd", "sap"], connections=connections) == first
    # Then Kingdee, where it came from, gets no row
    with store.session() as s:
        targets = list(s.scalars(select(Outbox.target_connection_id)))
    assert targets == [connections.id("sap")]


def test_enqueue_many_is_all_or_nothing(store, connections) -> None:
    # Given a batch whose third movement conflicts with one already stored
    stored = movement("purchase_receipt")
    with store.session() as s:
        enqueue(s, stored, ["kd"], connections=connections)
    batch = [movement("purchase_receipt"), movement("sales_issue"),
             movement("purchase_receipt", reference=stored.reference, lines=[("SH-001", "1")])]
    # When it is enqueued in one transaction
    with pytest.raises(MovementConflict):
        with store.session() as s:
            enqueue_many(s, batch, ["kd", "sap"], connections=connections)
    # Then nothing of it was kept
    assert _counts(store) == (1, 1)


def test_unknown_target_is_a_config_error_and_writes_nothing(store, connections) -> None:
    with pytest.raises(ConfigError, match="configured: kd, sap"):
        with store.session() as s:
            enqueue(s, movement("purchase_receipt"), ["kd", "u8"], connections=connections)
    assert _counts(store) == (0, 0)


def test_targets_may_be_connection_ids(store, connections) -> None:
    sap = connections.id("sap")
    with store.session() as s:
        movement_id = enqueue(s, movement("purchase_receipt"), [sap], connections=connections)
    with store.session() as s:
        assert s.scalar(select(Outbox.target_connection_id).where(Outbox.movement_id == movement_id)) == sap


def test_keys_are_short_deterministic_and_distinct() -> None:
    key = idempotency_key("PO-2024-0001", "kd")
    # fits SAP B1's Reference2; upper-case Crockford base32 only
    assert len(key) == KEY_LENGTH and re.fullmatch(r"H[0-9A-HJKMNP-TV-Z]{10}", key)
    assert idempotency_key("PO-2024-0001", "kd") == key
    assert idempotency_key("PO-2024-0001", "sap") != key
    assert idempotency_key("PO-2024-0001", "kd", 2) != key
    assert len({idempotency_key(f"R{i}", "kd") for i in range(20_000)}) == 20_000


def test_a_key_collision_takes_the_next_candidate(store, connections, monkeypatch) -> None:
    # Given a key scheme that collides for every first candidate
    import sync.push as push

    real = push.idempotency_key
    monkeypatch.setattr(push, "idempotency_key", lambda ref, target, n=1: "HCOLLIDE000" if n == 1 else real(ref, target, n))
    first, second = movement("purchase_receipt"), movement("purchase_receipt")
    with store.session() as s:
        enqueue_many(s, [first, second], ["kd"], connections=connections)
    with store.session() as s:
        keys = list(s.scalars(select(Outbox.idempotency_key).order_by(Outbox.id)))
    assert keys == ["HCOLLIDE000", real(second.reference, "kd", 2)]


def test_ordering_key_is_the_position_whose_stock_goes_down_first() -> None:
    receipt = movement("purchase_receipt", lines=[("TS-001", "5")], dest="WH01")
    transfer = movement("transfer", lines=[("TS-001", "5")], source="WH01", dest="WH02")
    issue = movement(MovementKind.sales_issue, lines=[("SH-001", "1"), ("TS-001", "1")], source="WH01")
    assert ordering_key(receipt) == ordering_key(transfer) == "TS-001@WH01"
    assert ordering_key(issue) == "SH-001@WH01"


def test_payload_round_trips_with_the_same_hash() -> None:
    from canonical import content_hash

    mv = movement("sales_issue")
    assert content_hash(movement_of(payload_of(mv))) == content_hash(mv)


def test_accept_enqueues_in_a_durable_transaction_of_its_own(store, connections, monkeypatch) -> None:
    # Given a spy on the synchronous level of the connection the rows are written on
    from sync import push

    levels: list[int] = []
    real = push._write

    def spy(writer, *args, **kwargs):
        levels.append(writer.cursor.execute("PRAGMA synchronous").fetchone()[0])
        return real(writer, *args, **kwargs)

    monkeypatch.setattr(push, "_write", spy)
    # When movements from outside are accepted, by name and by connection id
    ids = push.accept(store, [movement("purchase_receipt"), movement("sales_issue")], ["kd"], connections=connections)
    again = push.accept(store, [movement("count_gain")], [connections.id("sap")], connections=connections)
    # Then each batch was written at synchronous=FULL (2) and committed, one outbox row each
    assert levels == [2, 2]
    assert len(ids) == 2 and len(again) == 1 and _counts(store) == (3, 3)
    with store.session() as s:
        assert s.connection().exec_driver_sql("PRAGMA synchronous").scalar() == 1


def _awkward_movements() -> list:
    from datetime import datetime, timedelta, timezone

    from canonical import Movement as CanonicalMovement

    plain = [movement(kind) for kind in ("purchase_receipt", "sales_issue", "transfer", "count_gain")]
    odd = movement("purchase_receipt", lines=[("RICE-5", "12345678901234.125")]).model_dump()
    odd.update(memo='中文 "quoted" \\ back/slash \n\t\x01 \u2028 é',
               posted_at=datetime(2024, 3, 1, 9, 30, 0, 123456, tzinfo=timezone(timedelta(hours=8))))
    return [*plain, CanonicalMovement.model_validate(odd)]


def _raw_rows(store: Store) -> dict[str, list[tuple]]:
    with store.engine.connect() as connection:
        return {table: connection.exec_driver_sql(f"SELECT * FROM {table} ORDER BY id").fetchall()
                for table in ("movement", "outbox")}


def test_the_sqlite_driver_path_stores_exactly_what_the_core_statements_store(tmp_path, monkeypatch) -> None:
    # Given two fresh stores, one written through the driver inserts and one through the Core writer
    from datetime import UTC, datetime

    from sync import push

    now = datetime(2026, 1, 5, 9, 0, 0, 250000, tzinfo=UTC)
    rows = {}
    batch = _awkward_movements()
    for path in ("driver", "core"):
        with Store.open(f"sqlite:///{tmp_path / path}.db") as store:
            store.upgrade()
            connections = Connections(store, {"kd": ConnectionSettings(platform="kingdee", url="http://127.0.0.1:9")})
            # When the same movements are enqueued (the driver side: in a session, and accepted) at the same time
            if path == "core":
                monkeypatch.setattr(push, "_writer", lambda s: push._Writer(s.connection(), s.begin_nested))
            with store.session() as s:
                enqueue_many(s, batch[:3], ["kd"], connections=connections, source_connection="kd",
                             source_documents=["D1", None, "D3"], now=now)
            if path == "core":
                with store.session() as s:
                    enqueue_many(s, batch[3:], ["kd"], connections=connections, now=now)
            else:
                push.accept(store, batch[3:], ["kd"], connections=connections, now=now)
            rows[path] = _raw_rows(store)
    # Then every column of every row is the same value of the same type
    assert rows["driver"] == rows["core"]
    assert [[type(v) for v in row] for row in rows["driver"]["outbox"]] == \
        [[type(v) for v in row] for row in rows["core"]["outbox"]]
    assert len(rows["driver"]["movement"]) == 5 and len(rows["driver"]["outbox"]) == 5


def test_the_stored_payload_is_the_engine_serialiser_text_and_reads_back_equal(store, connections) -> None:
    from sync.store.types import json_dumps

    batch = _awkward_movements()
    with store.session() as s:
        ids = enqueue_many(s, batch, ["kd"], connections=connections)
    with store.engine.connect() as connection:
        texts = [connection.exec_driver_sql("SELECT payload FROM movement WHERE id = ?", (i,)).scalar() for i in ids]
    assert texts == [json_dumps(payload_of(m)) for m in batch]
    with store.session() as s:
        assert [movement_of(s.get(Movement, i).payload) for i in ids] == batch


def test_accept_keeps_enqueue_behaviour(store, connections) -> None:
    from sync.push import accept

    # Given a movement accepted once for one target
    mv = movement("purchase_receipt")
    (first,) = accept(store, [mv], ["kd"], connections=connections, source_documents=["D1"])
    # When it is accepted again with a second target, then with other content, then with an unknown target
    assert accept(store, [mv.model_copy()], ["kd", "sap"], connections=connections) == [first]
    changed = movement("purchase_receipt", reference=mv.reference, lines=[("TS-001", "9")])
    with pytest.raises(MovementConflict, match=re.escape(mv.reference)):
        accept(store, [changed], ["kd"], connections=connections)
    with pytest.raises(ConfigError, match="configured: kd, sap"):
        accept(store, [movement("sales_issue")], ["kd", "u8"], connections=connections)
    with pytest.raises(ValueError, match="appears twice"):
        accept(store, [mv, mv], ["kd"], connections=connections)
    # Then one movement is stored, with one row per target and the fixed keys
    assert _counts(store) == (1, 2)
    with store.session() as s:
        stored = s.get(Movement, first)
        assert stored.source_document == "D1" and stored.source_connection_id is None
        assert sorted(s.scalars(select(Outbox.idempotency_key))) == sorted(
            [idempotency_key(mv.reference, "kd"), idempotency_key(mv.reference, "sap")])


def test_an_engine_with_another_json_serialiser_stores_payloads_through_it(tmp_path) -> None:
    import json

    def spaced(value):
        return json.dumps(value, sort_keys=True)

    with Store.open(f"sqlite:///{tmp_path / 'other.db'}", json_serializer=spaced) as store:
        store.upgrade()
        connections = Connections(store, {"kd": ConnectionSettings(platform="kingdee", url="http://127.0.0.1:9")})
        mv = movement("sales_issue")
        with store.session() as s:
            movement_id = enqueue(s, mv, ["kd"], connections=connections)
        with store.engine.connect() as connection:
            text = connection.exec_driver_sql("SELECT payload FROM movement WHERE id = ?", (movement_id,)).scalar()
        assert text == spaced(payload_of(mv))


def test_the_core_writer_handles_taken_references_and_keys_too(store, connections, monkeypatch) -> None:
    # Given the Core writer (PostgreSQL's) on this store, and a key scheme whose first candidates collide
    from sync import push

    monkeypatch.setattr(push, "_writer", lambda s: push._Writer(s.connection(), s.begin_nested))
    real = push.idempotency_key
    monkeypatch.setattr(push, "idempotency_key", lambda ref, target, n=1: "HCOLLIDE000" if n == 1 else real(ref, target, n))
    first, second = movement("purchase_receipt"), movement("purchase_receipt")
    # When two movements are enqueued, one again with a new target, and one with other content
    with store.session() as s:
        ids = enqueue_many(s, [first, second], ["kd"], connections=connections)
    with store.session() as s:
        assert enqueue(s, first, ["kd", "sap"], connections=connections) == ids[0]
    changed = movement("purchase_receipt", reference=first.reference, lines=[("TS-001", "7")])
    with pytest.raises(MovementConflict), store.session() as s:
        enqueue(s, changed, ["kd"], connections=connections)
    # Then the keys took the next candidates and each movement has one row per target
    with store.session() as s:
        keys = list(s.scalars(select(Outbox.idempotency_key).order_by(Outbox.id)))
    assert keys == ["HCOLLIDE000", real(second.reference, "kd", 2), real(first.reference, "sap", 2)]
    assert _counts(store) == (2, 3)


def test_keys_stay_the_keys_already_stored() -> None:
    # Keys are persisted and sent to ERPs: the derivation may be made faster, never different
    assert idempotency_key("PO-2024-0001", "kd") == "HPBNAYMVXRN"
    assert idempotency_key("PO-2024-0001", "kd", 2) == "HNX45AE8Q1G"
    assert idempotency_key("入库-7", "sap_b1") == "H7HDN53E4YY"
