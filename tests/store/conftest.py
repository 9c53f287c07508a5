"""Stores for the state-store tests: a SQLite file per test, and on PostgreSQL a schema of its
own per test (created here, dropped afterwards), so parallel runs and other suites never meet."""
from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import date, datetime, timezone

import pytest
from sqlalchemy import create_engine, make_url
from sqlalchemy.engine import URL

from sync.store import Connection, Movement, Outbox, Store

NOW = datetime(2026, 1, 5, 9, 0, tzinfo=timezone.utc)


@pytest.fixture
def sqlite_url(tmp_path) -> str:
    return f"sqlite:///{tmp_path / 'store.db'}"


@pytest.fixture
def pg_schema_url(postgres_url: str) -> Iterator[URL]:
    schema = f"test_store_{uuid.uuid4().hex[:12]}"
    admin = create_engine(postgres_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            connection.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
        yield make_url(postgres_url).update_query_dict({"options": f"-csearch_path={schema}"})
    finally:
        with admin.connect() as connection:
            connection.exec_driver_sql(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        admin.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def empty_store(request: pytest.FixtureRequest, sqlite_url: str) -> Iterator[Store]:
    """A store on an empty database (no tables yet), once per backend."""
    url = sqlite_url if request.param == "sqlite" else request.getfixturevalue("pg_schema_url")
    store = Store.open(url)
    try:
        yield store
    finally:
        store.close()


@pytest.fixture
def store(empty_store: Store) -> Store:
    """A store migrated to the newest schema, once per backend."""
    empty_store.upgrade()
    return empty_store


@pytest.fixture
def target(store: Store) -> int:
    """The id of a connection that outbox rows are delivered to."""
    with store.session() as s:
        connection = Connection(name="kingdee_prod", platform="kingdee")
        s.add(connection)
        s.flush()
        return connection.id


def add_outbox_rows(
    store: Store,
    target_id: int,
    count: int,
    *,
    ordering_keys: list[str | None] | None = None,
    next_attempt_at: datetime = NOW,
    prefix: str | None = None,
) -> list[int]:
    """``count`` movements, each with one due outbox row for ``target_id``; returns the outbox ids
    in creation order."""
    prefix = prefix or uuid.uuid4().hex[:8]
    keys = ordering_keys or [None] * count
    with store.session() as s:
        rows = []
        for i in range(count):
            movement = Movement(
                reference=f"{prefix}-{i}",
                kind="transfer",
                document_date=date(2026, 1, 5),
                payload={"reference": f"{prefix}-{i}", "lines": []},
                content_hash=f"hash-{prefix}-{i}",
            )
            row = Outbox(
                movement=movement,
                target_connection_id=target_id,
                idempotency_key=f"hub:{prefix}-{i}:{target_id}",
                ordering_key=keys[i],
                next_attempt_at=next_attempt_at,
                created_at=NOW,
            )
            s.add(row)
            rows.append(row)
        s.flush()
        return [row.id for row in rows]
