"""Alembic environment for the state store.

Programmatic use (``Store.upgrade()``) hands over an open connection in
``config.attributes["connection"]``. From the command line (``alembic -c sync/alembic.ini …``)
the URL is ``-x url=…``, else ``$ERPHUB_DATABASE_URL``, else ``sqlalchemy.url``, else
``sqlite:///erphub.db``.
"""
from __future__ import annotations

import os
from logging.config import fileConfig
from typing import Any

from alembic import context
from alembic.autogenerate.api import AutogenContext

from sync.store.engine import DEFAULT_URL, make_engine
from sync.store.models import Base
from sync.store.types import ExactDecimal, UTCDateTime

config = context.config
if config.config_file_name is not None and config.attributes.get("connection") is None:
    fileConfig(config.config_file_name, disable_existing_loggers=False)
target_metadata = Base.metadata

# Any constant will do; it only has to be the same for every erphub process.
PG_MIGRATION_LOCK = 0x6572_7068_7562  # "erphub"


def render_item(type_: str, obj: Any, autogen_context: AutogenContext) -> str | bool:
    """Render the store's column types as plain SQLAlchemy types, so revisions never import the
    application (a migration must keep meaning what it meant when it was written)."""
    if type_ == "type" and isinstance(obj, ExactDecimal):
        return "sa.Numeric(precision=38, scale=12).with_variant(sa.String(length=64), 'sqlite')"
    if type_ == "type" and isinstance(obj, UTCDateTime):
        return "sa.DateTime(timezone=True)"
    return False


def _configure(**kwargs: Any) -> None:
    context.configure(
        target_metadata=target_metadata,
        render_as_batch=True,
        render_item=render_item,
        compare_type=True,
        **kwargs,
    )


def _url() -> str:
    return (
        context.get_x_argument(as_dictionary=True).get("url")
        or os.environ.get("ERPHUB_DATABASE_URL")
        or config.get_main_option("sqlalchemy.url")
        or DEFAULT_URL
    )


def run_migrations_offline() -> None:
    _configure(url=_url(), literal_binds=True, dialect_opts={"paramstyle": "named"})
    with context.begin_transaction():
        context.run_migrations()


def _run(connection: Any) -> None:
    _configure(connection=connection)
    with context.begin_transaction():
        if connection.dialect.name == "postgresql":
            connection.exec_driver_sql(f"SELECT pg_advisory_xact_lock({PG_MIGRATION_LOCK})")
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    engine = make_engine(_url())
    try:
        with engine.connect() as connection:
            _run(connection)
            connection.commit()
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
