"""The state store's tables (DESIGN.md §5): SQLAlchemy 2.0 declarative models.

Canonical records are stored as a JSON payload plus their natural key and content hash; this
module imports nothing from ``canonical`` or ``connectors``.

Conventions:
- every ``datetime`` column is an aware UTC instant (:class:`~sync.store.types.UTCDateTime`),
  every ``Decimal`` column is exact (:class:`~sync.store.types.ExactDecimal`);
- status-like columns are plain strings guarded by a CHECK constraint; the ``StrEnum`` classes
  below list the allowed values and compare equal to the stored strings;
- constraint and index names come from :data:`NAMING_CONVENTION`, so migrations are deterministic.
"""
from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Date,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from sync.store.types import ExactDecimal, Payload, UTCDateTime, utcnow

NAMING_CONVENTION: dict[str, str] = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# Identifiers and codes from vendor systems; generous, since they cost nothing when short.
KEY = 255
CODE = 100
HASH = 128


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {
        datetime: UTCDateTime(),
        Decimal: ExactDecimal(),
        dict[str, Any]: Payload,
        date: Date(),
    }


# Surrogate primary keys: BIGINT on PostgreSQL, INTEGER (the rowid alias) on SQLite.
Id = BigInteger().with_variant(Integer(), "sqlite")


def _one_of(column: str, values: type[StrEnum]) -> CheckConstraint:
    allowed = ", ".join(f"'{member.value}'" for member in values)
    return CheckConstraint(f"{column} IN ({allowed})", name=column)


class ConnectionStatus(StrEnum):
    ACTIVE = "active"
    PAUSED = "paused"


class SyncMode(StrEnum):
    FULL = "full"
    INCREMENTAL = "incremental"
    PUSH = "push"
    MIGRATE = "migrate"


class RunStatus(StrEnum):
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    INTERRUPTED = "interrupted"


class OutboxStatus(StrEnum):
    PENDING = "pending"  # waiting for next_attempt_at
    SENDING = "sending"  # leased by lease_owner until lease_expires_at
    SENT = "sent"  # receipt recorded
    AMBIGUOUS = "ambiguous"  # outcome unknown: call connector.find(key) before sending again
    FAILED = "failed"  # rejected; an error_queue entry explains it; an operator may requeue
    DEAD = "dead"  # given up for good


class ErrorStatus(StrEnum):
    OPEN = "open"
    RETRYING = "retrying"
    RESOLVED = "resolved"
    DISCARDED = "discarded"


class Connection(Base):
    """A configured system the hub talks to (one vendor tenant/installation)."""

    __tablename__ = "connection"
    __table_args__ = (_one_of("status", ConnectionStatus),)

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    name: Mapped[str] = mapped_column(String(CODE), unique=True)
    platform: Mapped[str] = mapped_column(String(50))
    status: Mapped[str] = mapped_column(String(16), default=ConnectionStatus.ACTIVE)
    paused_reason: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    def __repr__(self) -> str:
        return f"Connection(id={self.id!r}, name={self.name!r}, platform={self.platform!r}, status={self.status!r})"


class IdMap(Base):
    """Canonical id ⇄ external id/code of one entity in one connection; unique both ways."""

    __tablename__ = "id_map"
    __table_args__ = (
        UniqueConstraint("connection_id", "entity", "canonical_id"),
        UniqueConstraint("connection_id", "entity", "external_id"),
        Index("ix_id_map_connection_id_entity_external_code", "connection_id", "entity", "external_code"),
    )

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    connection_id: Mapped[int] = mapped_column(ForeignKey("connection.id", ondelete="CASCADE"))
    entity: Mapped[str] = mapped_column(String(32))
    canonical_id: Mapped[str] = mapped_column(String(KEY))
    external_id: Mapped[str] = mapped_column(String(KEY))
    external_code: Mapped[str | None] = mapped_column(String(KEY))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    connection: Mapped[Connection] = relationship()


class Watermark(Base):
    """The committed pull cursor of one entity in one connection."""

    __tablename__ = "watermark"

    connection_id: Mapped[int] = mapped_column(ForeignKey("connection.id", ondelete="CASCADE"), primary_key=True)
    entity: Mapped[str] = mapped_column(String(32), primary_key=True)
    cursor: Mapped[datetime]
    sync_run_id: Mapped[int | None] = mapped_column(ForeignKey("sync_run.id", ondelete="SET NULL"))
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class SyncRun(Base):
    """One pull/push/migration run: audit log and per-page checkpoint (resume_token)."""

    __tablename__ = "sync_run"
    __table_args__ = (
        _one_of("mode", SyncMode),
        _one_of("status", RunStatus),
        Index("ix_sync_run_connection_id_entity_started_at", "connection_id", "entity", "started_at"),
    )

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    connection_id: Mapped[int] = mapped_column(ForeignKey("connection.id", ondelete="CASCADE"))
    entity: Mapped[str] = mapped_column(String(32))
    mode: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16), default=RunStatus.RUNNING)
    dry_run: Mapped[bool] = mapped_column(Boolean, default=False)
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    finished_at: Mapped[datetime | None]
    since: Mapped[datetime | None]
    resume_token: Mapped[str | None] = mapped_column(Text)
    max_source_modified: Mapped[datetime | None]
    read_count: Mapped[int] = mapped_column(default=0)
    written_count: Mapped[int] = mapped_column(default=0)
    failed_count: Mapped[int] = mapped_column(default=0)
    error: Mapped[str | None] = mapped_column(Text)

    connection: Mapped[Connection] = relationship()


class Movement(Base):
    """A stock movement (canonical ``Movement`` as JSON), written with its outbox rows."""

    __tablename__ = "movement"
    # No index on the source columns: nothing looks movements up by them, and each index is one
    # more page written by every enqueue (RELIABILITY P3). Migration 0003 dropped the one 0001 made.

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    reference: Mapped[str] = mapped_column(String(KEY), unique=True)
    kind: Mapped[str] = mapped_column(String(32))
    document_date: Mapped[date]
    payload: Mapped[dict[str, Any]]
    content_hash: Mapped[str] = mapped_column(String(HASH))
    source_connection_id: Mapped[int | None] = mapped_column(ForeignKey("connection.id"))
    source_document: Mapped[str | None] = mapped_column(String(KEY))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    outbox: Mapped[list[Outbox]] = relationship(back_populates="movement")


class Outbox(Base):
    """One delivery of one movement to one target connection (see ``sync.store.outbox``)."""

    __tablename__ = "outbox"
    __table_args__ = (
        _one_of("status", OutboxStatus),
        UniqueConstraint("movement_id", "target_connection_id"),
        Index("ix_outbox_status_next_attempt_at", "status", "next_attempt_at"),
        # Serves claim's "is an older row with my ordering key still in flight?" check by seeking
        # straight to the in-flight statuses, however many sent rows the key has accumulated.
        Index(
            "ix_outbox_ordering_key_target_connection_id_status", "ordering_key", "target_connection_id", "status"
        ),
    )

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    movement_id: Mapped[int] = mapped_column(ForeignKey("movement.id"))
    target_connection_id: Mapped[int] = mapped_column(ForeignKey("connection.id"))
    idempotency_key: Mapped[str] = mapped_column(String(KEY), unique=True)
    ordering_key: Mapped[str | None] = mapped_column(String(KEY))
    status: Mapped[str] = mapped_column(String(16), default=OutboxStatus.PENDING)
    # True when an earlier attempt may have reached the vendor (ambiguous answer, or a lease
    # that expired mid-send): the deliverer must call connector.find(key) before pushing.
    outcome_unknown: Mapped[bool] = mapped_column(Boolean, default=False)
    attempts: Mapped[int] = mapped_column(default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(default=utcnow)
    lease_owner: Mapped[str | None] = mapped_column(String(CODE))
    lease_expires_at: Mapped[datetime | None]
    receipt_document_id: Mapped[str | None] = mapped_column(String(KEY))
    receipt_document_number: Mapped[str | None] = mapped_column(String(KEY))
    last_error_kind: Mapped[str | None] = mapped_column(String(64))
    last_error_message: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    sent_at: Mapped[datetime | None]

    movement: Mapped[Movement] = relationship(back_populates="outbox")
    target_connection: Mapped[Connection] = relationship()

    def __repr__(self) -> str:
        return (
            f"Outbox(id={self.id!r}, key={self.idempotency_key!r}, status={self.status!r}, "
            f"attempts={self.attempts!r}, lease_owner={self.lease_owner!r})"
        )


class ErrorQueue(Base):
    """The operator-facing dead letter: what failed, why, and what became of it.

    ``payload`` must already be redacted by the caller. ``fingerprint`` groups repeats of the
    same failure; ``attempts`` counts how many times it happened (1 for a new entry).
    """

    __tablename__ = "error_queue"
    __table_args__ = (
        _one_of("status", ErrorStatus),
        Index("ix_error_queue_connection_id_status", "connection_id", "status"),
    )

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    connection_id: Mapped[int] = mapped_column(ForeignKey("connection.id"))
    outbox_id: Mapped[int | None] = mapped_column(ForeignKey("outbox.id", ondelete="SET NULL"))
    movement_id: Mapped[int | None] = mapped_column(ForeignKey("movement.id", ondelete="SET NULL"))
    entity: Mapped[str] = mapped_column(String(32))
    record_key: Mapped[str | None] = mapped_column(String(KEY))
    kind: Mapped[str] = mapped_column(String(64))
    vendor_code: Mapped[str | None] = mapped_column(String(64))
    message: Mapped[str] = mapped_column(Text)
    payload: Mapped[dict[str, Any] | None]
    fingerprint: Mapped[str] = mapped_column(String(HASH), index=True)
    status: Mapped[str] = mapped_column(String(16), default=ErrorStatus.OPEN)
    attempts: Mapped[int] = mapped_column(default=1)
    first_seen: Mapped[datetime] = mapped_column(default=utcnow)
    last_seen: Mapped[datetime] = mapped_column(default=utcnow)
    note: Mapped[str | None] = mapped_column(Text)
    resolved_at: Mapped[datetime | None]
    resolved_by: Mapped[str | None] = mapped_column(String(CODE))

    connection: Mapped[Connection] = relationship()


class _CanonicalRecord:
    """Columns shared by the canonical master-data tables."""

    id: Mapped[int] = mapped_column(Id, primary_key=True, sort_order=-1)
    content_hash: Mapped[str] = mapped_column(String(HASH))
    payload: Mapped[dict[str, Any]]
    source_connection_id: Mapped[int | None] = mapped_column(ForeignKey("connection.id"))
    source_modified_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class Item(_CanonicalRecord, Base):
    __tablename__ = "item"

    sku: Mapped[str] = mapped_column(String(KEY), unique=True)


class Warehouse(_CanonicalRecord, Base):
    __tablename__ = "warehouse"

    code: Mapped[str] = mapped_column(String(CODE), unique=True)


class Location(_CanonicalRecord, Base):
    __tablename__ = "location"
    __table_args__ = (UniqueConstraint("warehouse_code", "bin_code"),)

    warehouse_code: Mapped[str] = mapped_column(String(CODE))
    bin_code: Mapped[str] = mapped_column(String(CODE))


class Partner(_CanonicalRecord, Base):
    __tablename__ = "partner"

    code: Mapped[str] = mapped_column(String(CODE), unique=True)


class BalanceSnapshot(Base):
    """Stock balances as one system (or a count sheet, ``source_label``) saw them at ``taken_at``."""

    __tablename__ = "balance_snapshot"
    __table_args__ = (
        CheckConstraint("connection_id IS NOT NULL OR source_label IS NOT NULL", name="has_source"),
        Index("ix_balance_snapshot_connection_id_taken_at", "connection_id", "taken_at"),
    )

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    connection_id: Mapped[int | None] = mapped_column(ForeignKey("connection.id"))
    source_label: Mapped[str | None] = mapped_column(String(KEY))
    taken_at: Mapped[datetime]
    row_count: Mapped[int] = mapped_column(default=0)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    rows: Mapped[list[BalanceSnapshotRow]] = relationship(
        back_populates="snapshot", cascade="all, delete-orphan", passive_deletes=True
    )


class BalanceSnapshotRow(Base):
    __tablename__ = "balance_snapshot_row"
    __table_args__ = (
        Index("ix_balance_snapshot_row_snapshot_id_sku_warehouse", "snapshot_id", "sku", "warehouse"),
    )

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    snapshot_id: Mapped[int] = mapped_column(ForeignKey("balance_snapshot.id", ondelete="CASCADE"))
    sku: Mapped[str] = mapped_column(String(KEY))
    warehouse: Mapped[str] = mapped_column(String(CODE))
    bin: Mapped[str | None] = mapped_column(String(CODE))
    lot: Mapped[str | None] = mapped_column(String(CODE))
    on_hand: Mapped[Decimal]
    available: Mapped[Decimal | None]
    unit: Mapped[str] = mapped_column(String(32))
    unit_cost: Mapped[Decimal | None]

    snapshot: Mapped[BalanceSnapshot] = relationship(back_populates="rows")


class WebhookDelivery(Base):
    """A webhook delivery the hub accepted, once per vendor delivery id (RELIABILITY.md §4.3, F16).

    The row is written in the transaction that routes the delivery's records, so a delivery id
    that is here has been fully taken in, and a second delivery with the same id is answered as a
    duplicate without writing anything. ``removed`` keeps the natural keys a ``data_remove``-like
    event named (``{"keys": [...]}``): recorded, never applied to the targets.
    """

    __tablename__ = "webhook_delivery"
    __table_args__ = (
        UniqueConstraint("connection_id", "delivery_id"),
        Index("ix_webhook_delivery_received_at", "received_at"),
    )

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    connection_id: Mapped[int] = mapped_column(ForeignKey("connection.id", ondelete="CASCADE"))
    delivery_id: Mapped[str] = mapped_column(String(KEY))
    operation: Mapped[str] = mapped_column(String(64))
    entity: Mapped[str | None] = mapped_column(String(32))
    received_at: Mapped[datetime] = mapped_column(default=utcnow)
    record_count: Mapped[int] = mapped_column(default=0)
    written_count: Mapped[int] = mapped_column(default=0)
    failed_count: Mapped[int] = mapped_column(default=0)
    removed: Mapped[dict[str, Any] | None]

    connection: Mapped[Connection] = relationship()
