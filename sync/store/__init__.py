"""The state store (DESIGN.md §5): SQLAlchemy models, engine/session setup, Alembic migrations.

>>> from sync.store import Store, Connection
>>> store = Store.open("sqlite:///erphub.db")
>>> store.upgrade()
>>> with store.session() as s:
...     s.add(Connection(name="kingdee_prod", platform="kingdee"))

Outbox leasing lives in :mod:`sync.store.outbox`.
"""
from sync.store.engine import DEFAULT_URL, Store, alembic_config, begin_write, make_engine, session_factory
from sync.store.models import (
    NAMING_CONVENTION,
    BalanceSnapshot,
    BalanceSnapshotRow,
    Base,
    Connection,
    ConnectionStatus,
    ErrorQueue,
    ErrorStatus,
    IdMap,
    Item,
    Location,
    Movement,
    Outbox,
    OutboxStatus,
    Partner,
    RunStatus,
    SyncMode,
    SyncRun,
    Warehouse,
    Watermark,
    WebhookDelivery,
)
from sync.store.types import ExactDecimal, UTCDateTime, normalise_decimal, utcnow

__all__ = [
    "DEFAULT_URL",
    "NAMING_CONVENTION",
    "BalanceSnapshot",
    "BalanceSnapshotRow",
    "Base",
    "Connection",
    "ConnectionStatus",
    "ErrorQueue",
    "ErrorStatus",
    "ExactDecimal",
    "IdMap",
    "Item",
    "Location",
    "Movement",
    "Outbox",
    "OutboxStatus",
    "Partner",
    "RunStatus",
    "Store",
    "SyncMode",
    "SyncRun",
    "UTCDateTime",
    "Warehouse",
    "Watermark",
    "WebhookDelivery",
    "alembic_config",
    "begin_write",
    "make_engine",
    "normalise_decimal",
    "session_factory",
    "utcnow",
]
