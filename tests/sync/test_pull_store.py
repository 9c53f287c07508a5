"""id_map binding and one pull on both backends: SQLite, and PostgreSQL in a schema of its own."""
from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator

import pytest
from sqlalchemy import create_engine, func, make_url, select

from sync import idmap
from sync.connections import ensure_connection
from sync.idmap import IdMapConflict
from sync.pull import pull, pull_balances
from sync.store import BalanceSnapshotRow, IdMap, Item, Store, Watermark
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
