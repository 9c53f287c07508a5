from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timezone

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.exc import IntegrityError, OperationalError

from sync.store import Connection, IdMap, Store, Watermark


def test_sqlite_connections_use_wal_normal_sync_busy_timeout_and_foreign_keys(sqlite_url: str):
    store = Store.open(sqlite_url)
    try:
        with store.engine.connect() as connection:
            assert connection.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert connection.exec_driver_sql("PRAGMA synchronous").scalar() == 1  # NORMAL
            assert connection.exec_driver_sql("PRAGMA busy_timeout").scalar() >= 1000
            assert connection.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
    finally:
        store.close()


def test_foreign_keys_are_enforced(store: Store):
    # When an id_map row names a connection that does not exist, Then the database refuses it
    with pytest.raises(IntegrityError):
        with store.session() as s:
            s.add(IdMap(connection_id=999_999, entity="item", canonical_id="A-1", external_id="100"))


def test_session_commits_on_success_and_rolls_back_on_error(store: Store):
    # Given one committed connection
    with store.session() as s:
        s.add(Connection(name="jdy", platform="jiandaoyun"))
    # When a later block fails after adding another
    with pytest.raises(RuntimeError):
        with store.session() as s:
            s.add(Connection(name="lost", platform="kingdee"))
            s.flush()
            raise RuntimeError("boom")
    # Then only the first one is stored
    with store.session() as s:
        assert s.scalars(select(Connection.name)).all() == ["jdy"]


def test_write_session_starts_a_write_transaction(store: Store):
    with store.session(write=True) as s:
        s.add(Connection(name="w", platform="kingdee"))
    with store.session() as s:
        assert s.scalar(select(func.count()).select_from(Connection)) == 1
        assert s.execute(text("SELECT 1")).scalar() == 1


def test_watermark_keeps_an_aware_cursor(store: Store):
    cursor = datetime(2026, 1, 5, 8, 59, 59, 500000, tzinfo=timezone.utc)
    with store.session() as s:
        connection = Connection(name="k3", platform="kingdee")
        s.add(connection)
        s.flush()
        s.add(Watermark(connection_id=connection.id, entity="item", cursor=cursor))
        connection_id = connection.id
    with store.session() as s:
        assert s.get_one(Watermark, (connection_id, "item")).cursor == cursor



@pytest.fixture
def sqlite_store(sqlite_url: str) -> Iterator[Store]:
    with Store.open(sqlite_url) as store:
        store.upgrade()
        yield store


def _synchronous(dbapi_connection) -> int:
    return dbapi_connection.execute("PRAGMA synchronous").fetchone()[0]


def test_durable_session_commits_with_synchronous_full_and_restores_normal(sqlite_store: Store):
    # When a durable session writes
    with sqlite_store.session(durable=True, write=True) as s:
        driver = s.connection().connection.dbapi_connection
        during = s.connection().exec_driver_sql("PRAGMA synchronous").scalar()
        s.add(Connection(name="webhook", platform="jiandaoyun"))
    # Then its transaction ran at FULL (2), the same connection is back at NORMAL (1), and the row is stored
    assert during == 2
    assert _synchronous(driver) == 1
    with sqlite_store.session() as s:
        assert s.connection().exec_driver_sql("PRAGMA synchronous").scalar() == 1
        assert s.scalars(select(Connection.name)).all() == ["webhook"]


def test_durable_session_restores_normal_when_the_transaction_fails(sqlite_store: Store):
    with sqlite_store.session() as s:
        s.add(Connection(name="taken", platform="kingdee"))
    # When the block raises, and when the commit itself fails (a duplicate name)
    drivers = []
    with pytest.raises(RuntimeError), sqlite_store.session(durable=True) as s:
        drivers.append(s.connection().connection.dbapi_connection)
        s.add(Connection(name="lost", platform="kingdee"))
        s.flush()
        raise RuntimeError("boom")
    with pytest.raises(IntegrityError), sqlite_store.session(durable=True) as s:
        drivers.append(s.connection().connection.dbapi_connection)
        assert s.connection().exec_driver_sql("PRAGMA synchronous").scalar() == 2
        s.add(Connection(name="taken", platform="sap_b1"))
    # Then nothing was written, and each connection is back at NORMAL with no transaction open
    for driver in drivers:
        assert _synchronous(driver) == 1
        assert not driver.in_transaction
    with sqlite_store.session() as s:
        assert s.scalars(select(Connection.name)).all() == ["taken"]


def test_sqlite_refuses_to_change_synchronous_inside_a_transaction(sqlite_store: Store):
    # Why the durable session sets the PRAGMA before its transaction begins
    with sqlite_store.session(write=True) as s, pytest.raises(OperationalError, match="inside a transaction"):
        s.connection().exec_driver_sql("PRAGMA synchronous=FULL")


def test_durable_session_is_an_ordinary_session_elsewhere(store: Store):
    # On PostgreSQL every commit is durable already; the option only has to work the same
    with store.session(durable=True, write=True) as s:
        s.add(Connection(name="d", platform="kingdee"))
    with store.session() as s:
        assert s.scalars(select(Connection.name)).all() == ["d"]


@pytest.mark.parametrize("durable", [False, True])
def test_driver_transaction_commits_on_success_and_rolls_back_on_error(sqlite_store: Store, durable: bool):
    # Given a driver transaction that inserts a connection, and one that fails after inserting another
    sql = "INSERT INTO connection (name, platform, status, created_at, updated_at) VALUES (?, 'kingdee', 'active', " \
          "'2026-01-05 09:00:00.000000', '2026-01-05 09:00:00.000000')"
    with sqlite_store.driver_transaction(durable=durable) as driver:
        assert driver.in_transaction and _synchronous(driver) == (2 if durable else 1)
        driver.execute(sql, ("kept",))
    with pytest.raises(RuntimeError), sqlite_store.driver_transaction(durable=durable) as driver:
        driver.execute(sql, ("lost",))
        raise RuntimeError("boom")
    # Then only the first is stored and no transaction is left open; a durable one keeps its own
    # connection at FULL out of the pool, so every pooled connection is at NORMAL
    assert _synchronous(driver) == (2 if durable else 1) and not driver.in_transaction
    pooled = sqlite_store.engine.raw_connection()
    try:
        assert pooled.driver_connection is not driver or not durable
        assert _synchronous(pooled.driver_connection) == 1
    finally:
        pooled.close()
    with sqlite_store.session() as s:
        assert s.scalars(select(Connection.name)).all() == ["kept"]


def test_durable_driver_transactions_share_one_connection_until_it_fails_or_the_store_closes(sqlite_url: str):
    import sqlite3

    with Store.open(sqlite_url) as store:
        store.upgrade()
        with store.driver_transaction(durable=True) as first:
            pass
        with store.driver_transaction(durable=True) as again:
            assert again is first and _synchronous(again) == 2
        # a database error may leave it unusable: the next durable transaction opens another
        with pytest.raises(sqlite3.OperationalError), store.driver_transaction(durable=True) as broken:
            broken.execute("SELECT * FROM no_such_table")
        with store.driver_transaction(durable=True) as fresh:
            assert fresh is not first and _synchronous(fresh) == 2
    # closing the store closed it
    with pytest.raises(sqlite3.ProgrammingError):
        fresh.execute("SELECT 1")
