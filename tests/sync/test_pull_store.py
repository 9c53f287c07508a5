"""id_map binding and one pull on both backends: SQLite, and PostgreSQL in a schema of its own."""
from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from sqlalchemy import create_engine, func, make_url, select

from canonical import Item as Item_
from canonical import Location as Location_
from sync import codemap, idmap
from sync import pull as pull_module
from sync.connections import ensure_connection
from sync.idmap import IdMapConflict
from sync.pull import pull, pull_balances, store_records
from sync.store import (
    BalanceSnapshotRow,
    ErrorQueue,
    IdMap,
    Item,
    Location,
    Store,
    Watermark,
)
from tests.sync.conftest import KINGDEE


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def store(request: pytest.FixtureRequest, tmp_path) -> Iterator[Store]:
    """Overrides the package's SQLite-only store (the ``systems`` fixture uses it too)."""
    if request.param == "sqlite":
        with Store.open(f"sqlite:///{tmp_path / 'hub.db'}") as store:
            store.upgrade()
            yield store
        return
    postgres_url = request.getfixturevalue("postgres_url")
    schema = f"test_pull_{uuid.uuid4().hex[:12]}"
    admin = create_engine(postgres_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            connection.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
        url = make_url(postgres_url).update_query_dict({"options": f"-csearch_path={schema}"})
        with Store.open(url) as store:
            store.upgrade()
            yield store
    finally:
        with admin.connect() as connection:
            connection.exec_driver_sql(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        admin.dispose()


@pytest.fixture
def conn(store: Store) -> int:
    with store.session() as s:
        return ensure_connection(s, "kd", "kingdee")


def test_two_workers_binding_the_same_pair_at_once_leave_one_row(store, conn):
    # Given two workers that both bind TS-001 ⇄ 100 at the same moment, each holding its
    # transaction open a little after the insert so the other one runs into it
    barrier = threading.Barrier(2)
    results, errors = [], []

    def worker() -> None:
        try:
            with store.session() as s:
                barrier.wait()
                results.append(idmap.bind(s, conn, "items", "TS-001", "100", "TS-001"))
                time.sleep(0.2)
        except BaseException as exc:  # noqa: BLE001 - the test reports it
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    # Then neither failed, both got the binding, and the table holds one row
    assert errors == []
    assert len(results) == 2 and len(set(results)) == 1
    with store.session() as s:
        assert s.scalar(select(func.count()).select_from(IdMap)) == 1


def test_a_lost_insert_race_is_settled_by_reading_again(store, conn, monkeypatch):
    # Given a worker whose first look finds nothing, while another has already bound the pair
    with store.session() as s:
        idmap.bind(s, conn, "items", "TS-001", "100")
    real = idmap._rows_touching
    looks = []

    def stale_then_real(*args):
        looks.append(args)
        return [] if len(looks) == 1 else real(*args)

    monkeypatch.setattr(idmap, "_rows_touching", stale_then_real)
    # When it binds the same pair: its insert fails on the unique constraint inside a savepoint
    with store.session() as s:
        binding = idmap.bind(s, conn, "items", "TS-001", "100")
        # Then it re-reads and returns the stored binding, and its transaction is still usable
        assert binding.external_id == "100" and len(looks) == 2
        assert idmap.external_for(s, conn, "items", "TS-001") == "100"
    # And a contradicting binding after a lost race is a conflict, not a crash
    looks.clear()
    with store.session() as s, pytest.raises(IdMapConflict, match="already bound to canonical id 'TS-001'"):
        idmap.bind(s, conn, "items", "TS-002", "100")


def test_bind_is_idempotent_and_refuses_conflicts_both_ways(store, conn):
    with store.session() as s:
        first = idmap.bind(s, conn, "item", "TS-001", "100")
        assert idmap.bind(s, conn, "items", "TS-001", "100", "M-001") == idmap.Binding("TS-001", "100", "M-001")
        assert first.external_id == "100"
        with pytest.raises(IdMapConflict) as other_external:
            idmap.bind(s, conn, "items", "TS-001", "101")
        assert other_external.value.field == "canonical_id"
        with pytest.raises(IdMapConflict) as other_canonical:
            idmap.bind(s, conn, "items", "TS-002", "100")
        assert other_canonical.value.field == "external_id"
    with store.session() as s:
        bound, conflicts = idmap.bind_many(s, conn, "items", [("TS-001", "100"), ("TS-002", "102"),
                                                             ("TS-003", "100"), ("TS-004", "104"),
                                                             ("TS-004", "105")])
        assert [b.canonical_id for b in bound] == ["TS-001", "TS-002", "TS-004"]
        assert [c.wanted.canonical_id for c in conflicts] == ["TS-003", "TS-004"]
        assert idmap.canonicals_for(s, conn, "items", ["100", "102", "999"]) == {"100": "TS-001", "102": "TS-002"}
        assert idmap.externals_for(s, conn, "items", ["TS-004"]) == {"TS-004": "104"}


def test_pull_and_balances_on_this_backend(systems, store):
    # Given a Kingdee simulator
    sys_ = systems(kd=KINGDEE)
    conn_id = sys_.connections.id("kd")
    # When items are pulled in pages of five, twice
    first = pull(store, sys_.connections, "kd", "items", mode="full", page_size=5, now=sys_.clock.datetime())
    second = pull(store, sys_.connections, "kd", "items", page_size=5, now=sys_.clock.datetime())
    # Then the items are stored once, the second run writes nothing, and the watermark is set
    assert first.written == 12 and second.written == 0 and second.unchanged == 12
    with store.session() as s:
        assert s.scalar(select(func.count()).select_from(Item)) == 12
        assert s.get(Watermark, (conn_id, "items")).cursor == sys_.clock.datetime()
    # And a balance snapshot is written in bulk
    snapshot_id = pull_balances(store, sys_.connections, "kd", page_size=4)
    with store.session() as s:
        rows = s.scalar(select(func.count()).select_from(BalanceSnapshotRow)
                        .where(BalanceSnapshotRow.snapshot_id == snapshot_id))
        assert rows == 11


# --- the store step in bulk (store_records): chunks, races, external codes ----------------------


def _item(sku: str, name: str, **fields) -> Item_:
    return Item_(sku=sku, name=name, **fields)


def test_a_chunk_of_new_changed_unchanged_and_conflicting_records(store, conn, monkeypatch):
    # Given two stored items (A, B), and the canonical sku C already bound to another code
    monkeypatch.setattr(pull_module, "UPSERT_CHUNK", 2)  # so the batch spans several chunks
    with store.session() as s:
        first = store_records(s, conn, "items", [_item("A", "Alpha"), _item("B", "Beta")])
        idmap.bind(s, conn, "items", "C", "X-C", "X-C")
    assert (first.written, first.unchanged, first.failed) == (2, 0, 0)
    with store.session() as s:
        stored_b = s.scalar(select(Item).where(Item.sku == "B"))
        b_created, b_hash = stored_b.created_at, stored_b.content_hash
    # When a batch holds A unchanged (only its modified time moved), B renamed, C (conflicting)
    # and two new items
    batch = [_item("A", "Alpha", modified_at=datetime(2026, 1, 2, tzinfo=UTC)), _item("B", "Beta 2"),
             _item("C", "Gamma"), _item("D", "Delta", standard_cost=Decimal("1.50")), _item("E", "Epsilon")]
    with store.session() as s:
        counts = store_records(s, conn, "items", batch)
    # Then B, D and E are written, A is left alone, and C is a dead letter naming record and field
    assert (counts.read, counts.written, counts.unchanged, counts.failed) == (5, 3, 1, 1)
    with store.session() as s:
        rows = {i.sku: i for i in s.scalars(select(Item))}
        assert sorted(rows) == ["A", "B", "D", "E"]
        assert rows["B"].payload["name"] == "Beta 2" and rows["B"].content_hash != b_hash
        assert rows["B"].created_at == b_created and rows["B"].updated_at > b_created
        assert rows["D"].payload["standard_cost"] == "1.50" and rows["D"].source_connection_id == conn
        assert rows["A"].payload.get("modified_at") is None  # unchanged content: the old row is kept
        assert idmap.canonicals_for(s, conn, "items", ["D", "E", "X-C", "C"]) == {"D": "D", "E": "E", "X-C": "C"}
        entry = s.scalar(select(ErrorQueue).where(ErrorQueue.record_key == "C"))
        assert entry.payload["field"] == "canonical_id" and "already bound to external id 'X-C'" in entry.message
        assert entry.payload["raw"]["name"] == "Gamma"


def test_a_key_inserted_by_another_writer_meanwhile_is_read_again(store, conn, monkeypatch):
    # Given a stored item whose first look misses it (another connection inserted it meanwhile)
    with store.session() as s:
        store_records(s, conn, "items", [_item("A", "Alpha")])
    real = pull_module._existing
    looks = []

    def stale_then_real(*args):
        looks.append(args)
        return {} if len(looks) == 1 else real(*args)

    monkeypatch.setattr(pull_module, "_existing", stale_then_real)
    # When a batch with that item (changed) and a new one is stored
    with store.session() as s:
        counts = store_records(s, conn, "items", [_item("A", "Alpha 2"), _item("B", "Beta")])
    # Then the failed insert is rolled back to its savepoint, the chunk read again and written once
    assert len(looks) == 2 and (counts.written, counts.unchanged, counts.failed) == (2, 0, 0)
    with store.session() as s:
        assert sorted((i.sku, i.payload["name"]) for i in s.scalars(select(Item))) == [("A", "Alpha 2"),
                                                                                        ("B", "Beta")]


def test_bind_many_settles_a_lost_insert_race_pair_by_pair(store, conn, monkeypatch):
    # Given pairs already bound by another worker, which this worker's first read does not see
    with store.session() as s:
        idmap.bind(s, conn, "items", "TS-001", "100")
        idmap.bind(s, conn, "items", "TS-002", "102")
    real = idmap._load
    calls = []

    def stale_then_real(*args):
        calls.append(args)
        return {} if len(calls) <= 2 else real(*args)

    monkeypatch.setattr(idmap, "_load", stale_then_real)
    # When it binds them (one of them contradicting the stored pair) with a new one
    with store.session() as s:
        bound, conflicts = idmap.bind_many(s, conn, "items", [("TS-001", "100"), ("TS-009", "102"),
                                                             ("TS-003", "103")])
        # Then the bulk insert fails inside its savepoint and every pair is settled one by one
        assert sorted(b.canonical_id for b in bound) == ["TS-001", "TS-003"]
        assert [(c.wanted.canonical_id, c.field) for c in conflicts] == [("TS-009", "external_id")]
    with store.session() as s:
        assert s.scalar(select(func.count()).select_from(IdMap)) == 3


def test_bind_many_gives_a_stored_pair_its_new_external_code(store, conn):
    # Given a stored pair with an external code, its row loaded in the session
    with store.session() as s:
        idmap.bind(s, conn, "items", "TS-001", "100", "OLD")
        row = s.scalar(select(IdMap).where(IdMap.canonical_id == "TS-001"))
        # When the page binds the same pair with a new code (and one without a code)
        bound, conflicts = idmap.bind_many(s, conn, "items", [("TS-001", "100", "NEW"), ("TS-002", "102")])
        # Then the binding, the loaded row and the table all carry the new code
        assert conflicts == [] and bound[0] == idmap.Binding("TS-001", "100", "NEW")
        assert row.external_code == "NEW"
    with store.session() as s:
        assert [(b.canonical_id, b.external_code) for b in idmap.bindings(s, conn, "items")] == [
            ("TS-001", "NEW"), ("TS-002", None)]


def test_to_canonicals_prefers_an_external_code_over_an_external_id(store, conn):
    # Given one row found by its external code and another whose external id is the same text
    with store.session() as s:
        idmap.bind(s, conn, "items", "BY-CODE", "900", "X-1")
        idmap.bind(s, conn, "items", "BY-ID", "X-1", "Z-9")
        # Then the code-map lookup answers the external code's row, and each row by its own keys
        assert codemap.to_canonicals(s, conn, "items", ["X-1", "900", "Z-9", "unknown"]) == {
            "X-1": "BY-CODE", "900": "BY-CODE", "Z-9": "BY-ID", "unknown": "unknown"}


def test_bulk_timestamps_are_stored_exactly_as_an_orm_write_stores_them(store, conn, monkeypatch):
    # Given a clock on a whole second (SQLite keeps timestamps as fixed-width text, microseconds too)
    stamp = datetime(2026, 1, 1, 5, tzinfo=UTC)
    monkeypatch.setattr(idmap, "utcnow", lambda: stamp)
    # When one pair is bound in bulk and another row is added through the ORM with the same times
    with store.session() as s:
        idmap.bind_many(s, conn, "items", [("TS-001", "100")])
        s.add(IdMap(connection_id=conn, entity="items", canonical_id="TS-002", external_id="102",
                    created_at=stamp, updated_at=stamp))
    # Then both rows hold the same stored values, which read back as the aware instant
    with store.session() as s:
        raw = s.connection().exec_driver_sql("SELECT created_at, updated_at FROM id_map ORDER BY canonical_id").all()
        assert len(raw) == 2 and raw[0] == raw[1]
        assert s.scalar(select(IdMap.created_at).where(IdMap.canonical_id == "TS-001")) == stamp


def test_locations_are_matched_on_both_key_columns(store, conn):
    # Given bins A of W1 and B of W2
    with store.session() as s:
        store_records(s, conn, "locations", [Location_(warehouse="W1", code="A"), Location_(warehouse="W2", code="B")])
    # When a batch crosses them: W1/A unchanged, W2/B renamed, W1/B and W2/A new
    batch = [Location_(warehouse="W1", code="A"), Location_(warehouse="W2", code="B", name="Bin B"),
             Location_(warehouse="W1", code="B"), Location_(warehouse="W2", code="A")]
    with store.session() as s:
        counts = store_records(s, conn, "locations", batch)
    # Then each bin is matched on warehouse and bin together, never on a neighbour sharing one of them
    assert (counts.written, counts.unchanged, counts.failed) == (3, 1, 0)
    with store.session() as s:
        rows = {(r.warehouse_code, r.bin_code): r.payload.get("name") for r in s.scalars(select(Location))}
        assert rows == {("W1", "A"): None, ("W1", "B"): None, ("W2", "A"): None, ("W2", "B"): "Bin B"}
        assert idmap.canonical_for(s, conn, "locations", "W2/A") == "W2/A"
