"""Webhook intake: verify, de-duplicate and route what a vendor pushes (RELIABILITY.md §4.3, F16).

:func:`accept` takes one :class:`~connectors.base.WebhookRequest` for a configured connection and
answers a :class:`WebhookOutcome` (HTTP status and a short body):

1. The connection's connector verifies and decodes it (``receive_webhook``: signature over the
   raw body, timestamp freshness). ``WebhookRefused`` → **401**, nothing written, a redacted log
   line and ``erphub_webhooks_refused_total``. A connector without webhooks → 404. A request that
   verifies but cannot be understood (``ContractViolation``) → 400, with the redacted body in the
   error queue, so nothing is lost.
2. One durable transaction takes it in:

   - the delivery is recorded in ``webhook_delivery``, unique per (connection, delivery id). A
     delivery id already there → **200 "duplicate"**, nothing else written; two copies arriving
     together race on the constraint and the loser is a duplicate too;
   - movements are enqueued for the targets of every ``movements`` flow whose source is this
     connection, exactly as those flows' pulls enqueue them (codes translated through the code
     map, :func:`sync.push.enqueue`, idempotent on the movement reference: the same record
     pushed again under a new delivery id is not enqueued twice, and changed content under the
     same reference is a dead letter, as for a pull);
   - items, warehouses, locations and partners are stored exactly as a pull stores them
     (:func:`sync.pull.store_records`: upsert by natural key, ``id_map`` binding), so the
     master-data flows propagate them on their next run;
   - records the connector could not map (``event.errors``) and records that fail on the way go
     to the error queue, as for a pull;
   - ``removed`` keys are recorded on the delivery row and logged; nothing is deleted anywhere.

   Then **200 "ok"**. Anything unexpected rolls the whole transaction back and answers 500, so
   the vendor delivers again later (Jiandaoyun retries 4 times) and nothing is half taken in.

The answer comes as soon as the transaction commits: delivery to the targets stays with the
outbox, the relay and the ``deliver`` actors. :mod:`sync.webhook_server` serves this over HTTP.

Delivery ids are kept for :data:`DELIVERY_RETENTION` (far beyond a vendor's retry window:
Jiandaoyun's five attempts span minutes), then :func:`prune` (run by the lease sweeper) deletes
them. A copy arriving later still cannot enqueue a movement twice: enqueue is idempotent on the
movement's reference.
"""
from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, insert, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from connectors.base import Entity, WebhookEvent, WebhookRequest
from connectors.errors import ConfigError, ContractViolation, WebhookRefused
from connectors.redaction import redact_text
from sync import metrics
from sync.connections import Connections
from sync.flows import MOVEMENTS, FlowLike
from sync.pull import StoredCounts, store_records
from sync.pull_errors import dead_letter
from sync.store import Store, WebhookDelivery

log = logging.getLogger("erphub.sync.webhooks")

__all__ = ["WEBHOOK_ENTITY", "WebhookOutcome", "accept", "movement_targets"]

#: Error-queue entity of a webhook that verified but could not be decoded.
WEBHOOK_ENTITY = "webhook"
#: How much of an undecodable body the error queue keeps.
_RAW_KEPT = 16_384

ACCEPTED = "accepted"
DUPLICATE = "duplicate"
REFUSED = "refused"
INVALID = "invalid"
UNKNOWN = "unknown"
ERROR = "error"


@dataclass(frozen=True)
class WebhookOutcome:
    """The answer to one webhook request, and what it did."""

    status: int
    body: str
    outcome: str
    delivery_id: str | None = None
    records: int = 0   # records the event carried (mapped or not)
    written: int = 0   # movements enqueued or master records written (new or changed)
    failed: int = 0    # records dead-lettered

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300


def movement_targets(flows: Sequence[FlowLike], source: str) -> list[str]:
    """The targets of every ``movements`` flow whose source is ``source``, each once, in flow order."""
    targets: dict[str, None] = {}
    for flow in flows:
        if str(getattr(flow.kind, "value", flow.kind)) == MOVEMENTS and flow.source == source:
            targets.update(dict.fromkeys(flow.targets))
    return list(targets)


def accept(store: Store, connections: Connections, connection_name: str, request: WebhookRequest, *,
           flows: Sequence[FlowLike] = (), now: datetime | None = None) -> WebhookOutcome:
    """Verify, de-duplicate and route one webhook for ``connection_name`` (see the module doc)."""
    if connection_name not in connections.settings:
        log.warning("webhook for unknown connection %r refused", redact_text(connection_name)[:100])
        return _answer(connection_name, WebhookOutcome(404, "unknown connection", UNKNOWN), count=False)
    try:
        event = connections.connector(connection_name).receive_webhook(request)
    except WebhookRefused as exc:
        log.warning("[%s] webhook refused (%d): %s", connection_name, exc.http_status, exc)
        return _answer(connection_name, WebhookOutcome(exc.http_status, "refused", REFUSED))
    except ConfigError as exc:
        log.warning("[%s] webhook not taken: %s", connection_name, exc)
        return _answer(connection_name, WebhookOutcome(404, "this connection does not take webhooks", UNKNOWN))
    except ContractViolation as exc:
        return _answer(connection_name, _undecodable(store, connections, connection_name, request, exc, now))
    except Exception:
        log.exception("[%s] webhook: the connector failed to decode it", connection_name)
        return _answer(connection_name, WebhookOutcome(500, "error", ERROR))
    try:
        outcome = _take_in(store, connections, connection_name, event, flows, now or request.received_at)
    except Exception as exc:  # noqa: BLE001 - whatever it was, the vendor must deliver again: 500
        log.error("[%s] webhook %s not taken in, the vendor will deliver it again: %s", connection_name,
                  redact_text(event.delivery_id)[:100], redact_text(f"{type(exc).__name__}: {exc}"))
        return _answer(connection_name, WebhookOutcome(500, "error", ERROR, delivery_id=event.delivery_id))
    return _answer(connection_name, outcome)


def _answer(connection_name: str, outcome: WebhookOutcome, *, count: bool = True) -> WebhookOutcome:
    if count:
        metrics.webhook(connection_name, outcome.outcome)
    return outcome


def _take_in(store: Store, connections: Connections, name: str, event: WebhookEvent, flows: Sequence[FlowLike],
             now: datetime) -> WebhookOutcome:
    connection_id = connections.id(name)
    delivery = event.delivery_id
    with store.session(write=True, durable=True) as session:
        row_id = _record_delivery(session, connection_id, event, now)
        if row_id is None:
            log.info("[%s] webhook %s: duplicate delivery, already taken in", name, delivery)
            return WebhookOutcome(200, "duplicate", DUPLICATE, delivery_id=delivery)
        counts = _route(session, connections, name, connection_id, event, flows, now)
        session.execute(update(WebhookDelivery).where(WebhookDelivery.id == row_id).values(
            record_count=counts.read, written_count=counts.written, failed_count=counts.failed))
    if event.removed:
        log.info("[%s] webhook %s: %s removed %d %s record(s) at the source (recorded, not applied): %s", name,
                 delivery, event.operation, len(event.removed), event.entity or "", ", ".join(event.removed[:20]))
    log.info("[%s] webhook %s %s %s: %d record(s), %d written, %d to the error queue", name, delivery,
             event.operation, event.entity or "-", counts.read, counts.written, counts.failed)
    return WebhookOutcome(200, "ok", ACCEPTED, delivery_id=delivery, records=counts.read, written=counts.written,
                          failed=counts.failed)


def _record_delivery(session: Session, connection_id: int, event: WebhookEvent, now: datetime) -> int | None:
    """The new ``webhook_delivery`` row's id, or None when this delivery id was taken in already."""
    values = {"connection_id": connection_id, "delivery_id": event.delivery_id, "operation": event.operation[:64],
              "entity": event.entity.value if event.entity else None, "received_at": now,
              "removed": {"keys": list(event.removed)} if event.removed else None,
              "record_count": len(event.records) + len(event.errors), "written_count": 0, "failed_count": 0}
    table = WebhookDelivery.__table__
    dialect = session.get_bind().dialect.name
    if dialect in ("sqlite", "postgresql"):
        from sqlalchemy.dialects import postgresql, sqlite

        insert_ = sqlite.insert if dialect == "sqlite" else postgresql.insert
        # PostgreSQL: a concurrent insert of the same key waits for the other transaction, then
        # does nothing if it committed (a duplicate) or inserts if it rolled back.
        stmt = insert_(table).on_conflict_do_nothing(index_elements=[table.c.connection_id, table.c.delivery_id])
        return session.execute(stmt.returning(table.c.id), values).scalar()
    try:
        with session.begin_nested():
            return session.execute(insert(table).returning(table.c.id), values).scalar()
    except IntegrityError:
        return None


def _route(session: Session, connections: Connections, name: str, connection_id: int, event: WebhookEvent,
           flows: Sequence[FlowLike], now: datetime) -> StoredCounts:
    if event.entity is None:
        for error in event.errors:  # an event about no entity has nothing to store; keep what failed
            dead_letter(session, connection_id=connection_id, entity=WEBHOOK_ENTITY, record_key=error.record_key,
                        field=error.field, message=error.message, raw=error.raw, now=now)
        return StoredCounts(read=len(event.errors), failed=len(event.errors))
    on_movement = None
    if event.entity == Entity.MOVEMENTS:
        targets = movement_targets(flows, name)

        def on_movement(session: Session, movement: Any) -> None:
            if not targets:
                raise ValueError(f"no movements flow takes movements from {name}; configure one, then retry")
            from sync.push import enqueue

            enqueue(session, movement, targets, connections=connections, source_connection=name,
                    source_document=movement.source_document, now=now)

    return store_records(session, connection_id, event.entity, event.records, event.errors, now=now,
                         on_movement=on_movement)


def _undecodable(store: Store, connections: Connections, name: str, request: WebhookRequest,
                 exc: ContractViolation, now: datetime | None) -> WebhookOutcome:
    """A verified request we cannot understand: into the error queue (redacted), answered 400."""
    log.error("[%s] webhook verified but not understood: %s", name, exc)
    raw = {"query": dict(request.query), "body": request.body[:_RAW_KEPT].decode("utf-8", "replace")}
    try:
        connection_id = connections.id(name)
        with store.session(write=True, durable=True) as session:
            dead_letter(session, connection_id=connection_id, entity=WEBHOOK_ENTITY, record_key=exc.record,
                        message=str(exc), raw=raw, kind=exc.kind, vendor_code=exc.vendor_code,
                        now=now or request.received_at)
    except Exception:
        log.exception("[%s] could not record the undecodable webhook in the error queue", name)
        return WebhookOutcome(500, "error", ERROR)
    return WebhookOutcome(400, "not understood", INVALID)


#: How long a delivery id is remembered (see the module doc).
DELIVERY_RETENTION = timedelta(days=7)


def prune(store: Store, now: datetime, *, keep: timedelta = DELIVERY_RETENTION) -> int:
    """Forget delivery ids received before ``now - keep``; how many."""
    with store.session(write=True) as session:
        result = session.execute(delete(WebhookDelivery).where(WebhookDelivery.received_at < now - keep)
                                 .execution_options(synchronize_session=False))
    return int(getattr(result, "rowcount", 0) or 0)
