from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect

from sync.store import Base, Store, alembic_config

TABLES = {
    "connection",
    "id_map",
    "watermark",
    "sync_run",
    "movement",
    "outbox",
    "error_queue",
    "webhook_delivery",
    "item",
    "warehouse",
    "location",
    "partner",
    "balance_snapshot",
    "balance_snapshot_row",
}


def tables(store: Store) -> set[str]:
    return set(inspect(store.engine).get_table_names())


def head() -> str:
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def test_models_declare_every_table_of_the_design():
    assert set(Base.metadata.tables) == TABLES


def test_upgrade_downgrade_upgrade_from_empty(empty_store: Store):
    # Given an empty database
    assert tables(empty_store) == set()
    assert empty_store.current_revision() is None

    # When it is upgraded to head, Then every table is there
    empty_store.upgrade()
    assert TABLES <= tables(empty_store)
    assert empty_store.current_revision() == head()

    # When it is downgraded to base, Then only Alembic's bookkeeping is left
    empty_store.downgrade("base")
    assert tables(empty_store) - {"alembic_version"} == set()
    assert empty_store.current_revision() is None

    # When it is upgraded again, Then every table is back
    empty_store.upgrade()
    assert TABLES <= tables(empty_store)
    assert empty_store.current_revision() == head()


def test_upgrade_twice_is_a_no_op(store: Store):
    # Given a store at head, When upgraded again, Then nothing changes and nothing fails
    store.upgrade()
    assert store.current_revision() == head()
    assert TABLES <= tables(store)


def test_migrations_match_the_models(store: Store):
    # Given a database built only by the migrations
    # When Alembic compares it with the models' metadata
    with store.engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        differences = compare_metadata(context, Base.metadata)
    # Then there is nothing left to migrate
    assert differences == []


def test_constraint_names_follow_the_naming_convention(store: Store):
    inspector = inspect(store.engine)
    unique = {c["name"] for c in inspector.get_unique_constraints("id_map")}
    assert unique == {"uq_id_map_connection_id_entity_canonical_id", "uq_id_map_connection_id_entity_external_id"}
    assert {i["name"] for i in inspector.get_indexes("outbox")} >= {
        "ix_outbox_status_next_attempt_at",
        "ix_outbox_ordering_key_target_connection_id_status",
    }
    assert inspector.get_pk_constraint("outbox")["name"] in {"pk_outbox", None}  # SQLite does not keep PK names
