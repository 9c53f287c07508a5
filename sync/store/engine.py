"""Engines, sessions and the :class:`Store` that owns them (and the schema's migrations).

SQLite (the default, ``sqlite:///erphub.db``) runs in WAL mode with ``synchronous=NORMAL``, a
busy timeout and foreign keys on. PostgreSQL (``postgresql+psycopg://…``) gets a pre-pinged pool.

Durability of a commit
    With WAL + ``synchronous=NORMAL`` a commit is atomic and the database stays consistent, but
    a power loss (not a process crash) can lose the last commits. That is fine for everything
    the hub can re-do (claims, sent marks, receipts, pull pages and checkpoints: a lost state
    transition is re-done, and ``find(key)`` prevents a second document). It is not fine for a
    transaction that *accepts* data from outside: once ``erphub push`` said "accepted" or a
    webhook answered 200, the source will not send it again. Such transactions open
    ``Store.session(durable=True)``: on SQLite the connection runs that one transaction with
    ``synchronous=FULL`` (the WAL is fsynced at its commit) and is set back to ``NORMAL``
    afterwards, also when the transaction fails. On PostgreSQL every commit is durable already
    (``synchronous_commit`` defaults to ``on``), so ``durable`` changes nothing there.
"""
from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event, make_url
from sqlalchemy.engine import URL
from sqlalchemy.orm import Session, sessionmaker

from sync.store.types import json_dumps

DEFAULT_URL = "sqlite:///erphub.db"
#: SQLite ``PRAGMA synchronous`` of every connection, and of a durable session's transaction.
SQLITE_SYNCHRONOUS = "NORMAL"
SQLITE_SYNCHRONOUS_DURABLE = "FULL"
_PRAGMA_SYNCHRONOUS = f"PRAGMA synchronous={SQLITE_SYNCHRONOUS}"
_PRAGMA_SYNCHRONOUS_DURABLE = f"PRAGMA synchronous={SQLITE_SYNCHRONOUS_DURABLE}"
#: How long a SQLite connection waits for another writer before ``database is locked``.
SQLITE_BUSY_TIMEOUT_MS = 30_000
MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"


def make_engine(url: str | URL = DEFAULT_URL, **kwargs: Any) -> Engine:
    """An engine for ``url`` with the store's settings; ``kwargs`` override them."""
    url = make_url(url)
    options: dict[str, Any] = {"json_serializer": json_dumps}
    if url.get_backend_name() == "sqlite":
        options["connect_args"] = {"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000, "check_same_thread": False}
    elif url.get_backend_name() == "postgresql":
        options.update(pool_pre_ping=True, pool_size=5, max_overflow=10, pool_recycle=1800)
        options["connect_args"] = {"connect_timeout": 10, "application_name": "erphub"}
    options.update(kwargs)
    engine = create_engine(url, **options)
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", _configure_sqlite)
    return engine


def _configure_sqlite(dbapi_connection: Any, _connection_record: Any) -> None:
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(_PRAGMA_SYNCHRONOUS)
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA foreign_keys=ON")
    finally:
        cursor.close()


def session_factory(engine: Engine) -> sessionmaker[Session]:
    """Sessions bound to ``engine``; objects stay readable after commit (``expire_on_commit=False``)."""
    return sessionmaker(bind=engine, expire_on_commit=False)


def begin_write(session: Session) -> None:
    """Make the session's transaction a write transaction now.

    On SQLite this takes the database write lock up front (``BEGIN IMMEDIATE``, waiting up to
    the busy timeout), so a read-then-write unit of work such as claiming outbox rows sees the
    latest data and cannot fail half-way with ``database is locked``. If the transaction has
    already written, it already holds the lock and nothing happens. On PostgreSQL nothing
    happens: row locks do that job there. (The ``BEGIN IMMEDIATE`` goes to the driver
    connection directly, inside the transaction SQLAlchemy has begun: it is on every write
    path, and the driver call costs a fraction of a Core execution.)
    """
    connection = session.connection()
    if connection.dialect.name != "sqlite":
        return
    dbapi_connection = connection.connection.dbapi_connection
    assert dbapi_connection is not None
    if not dbapi_connection.in_transaction:
        dbapi_connection.execute("BEGIN IMMEDIATE")


@contextmanager
def _synchronous_full(dbapi_connection: Any, discard: Callable[[], None]) -> Iterator[None]:
    """``synchronous=FULL`` on a SQLite driver connection for the block, ``NORMAL`` after it.

    The PRAGMA is set while no transaction is open (SQLite refuses it inside one); the block
    begins and ends its own. If setting it back fails, ``discard`` drops the connection rather
    than let it return to the pool still at ``FULL``.
    """
    dbapi_connection.execute(_PRAGMA_SYNCHRONOUS_DURABLE)
    try:
        yield
    finally:
        try:
            if dbapi_connection.in_transaction:  # never expected: the block has ended it
                dbapi_connection.rollback()
            dbapi_connection.execute(_PRAGMA_SYNCHRONOUS)
        except BaseException:
            discard()
            raise


@contextmanager
def _immediate(driver: Any) -> Iterator[Any]:
    """``BEGIN IMMEDIATE`` on a driver connection; commit when the block ends, roll back if it raises."""
    driver.execute("BEGIN IMMEDIATE")
    try:
        yield driver
        driver.commit()
    except BaseException:
        driver.rollback()
        raise


class Store:
    """The state store: an engine, its sessions, and its schema migrations.

    >>> store = Store.open("sqlite:///erphub.db")
    >>> store.upgrade()
    >>> with store.session() as s:
    ...     s.add(Connection(name="kingdee_prod", platform="kingdee"))
    """

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._sessions = session_factory(engine)
        # driver_transaction(durable=True) on SQLite: one connection kept at synchronous=FULL,
        # used by one transaction at a time (SQLite has one writer anyway)
        self._durable_lock = threading.Lock()
        self._durable_pooled: Any = None

    @classmethod
    def open(cls, url: str | URL = DEFAULT_URL, **engine_kwargs: Any) -> Store:
        return cls(make_engine(url, **engine_kwargs))

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @contextmanager
    def session(self, *, write: bool = False, durable: bool = False) -> Iterator[Session]:
        """A session that commits when the block ends and rolls back if it raises.

        ``write=True`` starts with :func:`begin_write` (SQLite: ``BEGIN IMMEDIATE``).
        ``durable=True`` is for transactions that accept data from outside (movements from a
        file, the Python API or a webhook): its commit survives a power loss. On SQLite the
        session runs on one connection set to ``synchronous=FULL`` before the transaction
        begins (SQLite refuses to change it inside one) and back to ``NORMAL`` after it ends,
        committed or not; on PostgreSQL it is an ordinary session (see the module doc).
        """
        if durable and self.engine.dialect.name == "sqlite":
            with self._durable_connection() as connection, \
                    self._session(self._sessions(bind=connection), write=write) as session:
                yield session
            return
        with self._session(self._sessions(), write=write) as session:
            yield session

    @staticmethod
    @contextmanager
    def _session(session: Session, *, write: bool) -> Iterator[Session]:
        try:
            if write:
                begin_write(session)
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise
        finally:
            session.close()

    @contextmanager
    def driver_transaction(self, *, durable: bool = False) -> Iterator[Any]:
        """SQLite only: a pooled driver (``sqlite3``) connection inside ``BEGIN IMMEDIATE`` for
        the block, committed when it ends and rolled back if it raises; ``durable`` as in
        :meth:`session`.

        For hot paths that run statements prepared once straight on the driver
        (``sync.push.accept``): no ORM session, no Core connection, so none of their per
        transaction cost.
        """
        if self.engine.dialect.name != "sqlite":
            raise ValueError(f"driver transactions are for SQLite, not {self.engine.dialect.name}")
        if durable:
            with self._durable_lock:
                pooled = self._durable_driver()
                try:
                    with _immediate(pooled.driver_connection) as driver:
                        yield driver
                except sqlite3.DatabaseError:  # the connection may be unusable: open a new one next time
                    self._durable_pooled = None
                    pooled.invalidate()
                    raise
            return
        pooled = self.engine.raw_connection()
        try:
            with _immediate(pooled.driver_connection) as driver:
                yield driver
        finally:
            pooled.close()

    def _durable_driver(self) -> Any:
        """The pooled connection kept out of the pool at ``synchronous=FULL`` for durable driver
        transactions: setting the PRAGMA once instead of twice per transaction, and no pool
        checkout, are a fifth of an accepted movement's cost besides its fsync (bench P3)."""
        if self._durable_pooled is None:
            pooled = self.engine.raw_connection()
            pooled.driver_connection.execute(_PRAGMA_SYNCHRONOUS_DURABLE)
            self._durable_pooled = pooled
        return self._durable_pooled

    @contextmanager
    def _durable_connection(self) -> Iterator[Connection]:
        """A pooled SQLite connection at ``synchronous=FULL`` for the block, ``NORMAL`` after it."""
        with self.engine.connect() as connection:
            dbapi_connection = connection.connection.dbapi_connection
            assert dbapi_connection is not None
            with _synchronous_full(dbapi_connection, connection.invalidate):
                yield connection

    def upgrade(self, revision: str = "head") -> None:
        """Migrate the schema up to ``revision`` (default: the newest)."""
        from alembic import command

        self._migrate(lambda config: command.upgrade(config, revision))

    def downgrade(self, revision: str) -> None:
        """Migrate the schema down to ``revision`` (``"base"`` drops every table)."""
        from alembic import command

        self._migrate(lambda config: command.downgrade(config, revision))

    def current_revision(self) -> str | None:
        """The schema revision the database is at, or None for an empty database."""
        from alembic.runtime.migration import MigrationContext

        with self.engine.connect() as connection:
            return MigrationContext.configure(connection).get_current_revision()

    def close(self) -> None:
        with self._durable_lock:
            if self._durable_pooled is not None:
                self._durable_pooled.invalidate()  # closes it; never back to the pool at FULL
                self._durable_pooled = None
        self.engine.dispose()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def _migrate(self, run: Any) -> None:
        """Run an Alembic command in one transaction on one connection.

        SQLite: foreign keys are switched off for the duration (table rebuilds in batch mode
        would otherwise cascade deletes), the whole migration runs inside ``BEGIN IMMEDIATE``,
        and ``PRAGMA foreign_key_check`` must come back clean before it commits.
        PostgreSQL: DDL is transactional; env.py serialises concurrent upgrades with an
        advisory lock.
        """
        config = alembic_config()
        with self.engine.connect() as connection:
            sqlite = connection.dialect.name == "sqlite"
            if sqlite:
                connection.exec_driver_sql("PRAGMA foreign_keys=OFF")
                connection.exec_driver_sql("BEGIN IMMEDIATE")
            try:
                config.attributes["connection"] = connection
                run(config)
                if sqlite:
                    problems = connection.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
                    if problems:
                        raise RuntimeError(f"migration would break foreign keys: {problems[:10]}")
                connection.commit()
            except BaseException:
                connection.rollback()
                raise
            finally:
                if sqlite:
                    connection.exec_driver_sql("PRAGMA foreign_keys=ON")
                    connection.commit()


def alembic_config(url: str | URL | None = None) -> Any:
    """An Alembic ``Config`` for the migrations shipped in ``sync/migrations`` (no ini file needed)."""
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    if url is not None:
        config.set_main_option("sqlalchemy.url", make_url(url).render_as_string(hide_password=False).replace("%", "%%"))
    return config
