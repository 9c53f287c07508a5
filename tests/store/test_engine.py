from __future__ import annotations

from datetime import datetime, timezone

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.exc import IntegrityError

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
