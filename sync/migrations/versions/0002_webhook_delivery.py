"""webhook delivery

The ``webhook_delivery`` table: one row per vendor delivery id the hub accepted, unique per
connection (replay protection for pushed webhooks, RELIABILITY.md §4.3 and F16).

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26 09:50:00

Column types are spelled out here, as in 0001, so this revision keeps its meaning.
"""
from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def ID() -> sa.types.TypeEngine:
    return sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def TIMESTAMP() -> sa.types.TypeEngine:
    return sa.DateTime(timezone=True)


def PAYLOAD() -> sa.types.TypeEngine:
    return sa.JSON(none_as_null=True).with_variant(postgresql.JSONB(none_as_null=True), "postgresql")


def upgrade() -> None:
    op.create_table(
        "webhook_delivery",
        sa.Column("id", ID(), nullable=False),
        sa.Column("connection_id", ID(), nullable=False),
        sa.Column("delivery_id", sa.String(length=255), nullable=False),
        sa.Column("operation", sa.String(length=64), nullable=False),
        sa.Column("entity", sa.String(length=32), nullable=True),
        sa.Column("received_at", TIMESTAMP(), nullable=False),
        sa.Column("record_count", sa.Integer(), nullable=False),
        sa.Column("written_count", sa.Integer(), nullable=False),
        sa.Column("failed_count", sa.Integer(), nullable=False),
        sa.Column("removed", PAYLOAD(), nullable=True),
        sa.ForeignKeyConstraint(["connection_id"], ["connection.id"],
                                name=op.f("fk_webhook_delivery_connection_id_connection"), ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_webhook_delivery")),
        sa.UniqueConstraint("connection_id", "delivery_id", name=op.f("uq_webhook_delivery_connection_id_delivery_id")),
    )
    op.create_index("ix_webhook_delivery_received_at", "webhook_delivery", ["received_at"])


def downgrade() -> None:
    op.drop_table("webhook_delivery")  # its index and constraints go with it
