"""drop the unused movement source index

``ix_movement_source_connection_id_source_document`` served no query (movements are looked up
by reference and through their outbox rows) but cost every enqueue one more B-tree page in the
write-ahead log (one of the eight B-trees an accepted movement and its outbox row touched).

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-26 10:30:00
"""
from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.drop_index("ix_movement_source_connection_id_source_document", table_name="movement")


def downgrade() -> None:
    op.create_index("ix_movement_source_connection_id_source_document", "movement",
                    ["source_connection_id", "source_document"])
