"""Alembic migrations of the state store (run them with ``Store.upgrade()``)."""
