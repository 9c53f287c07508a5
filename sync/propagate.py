"""Master data flows to the targets: what a pull changed in the store is upserted into each target.

A master-data flow pulls items and warehouses from its source into the store; this module then
writes every record changed since the last propagation to each target through the shared
:class:`sync.master_writer.MasterWriter` (``connector.upsert`` in batches under the retry policy,
idempotent by code: an equal record is left alone), translating codes through the code map. The cursor per (target, entity, source) lives in the ``watermark`` table
under the entity name ``prop:<entity>:<source id>``; it advances past a batch only once every
record of the batch is written or dead-lettered, so a crash re-sends at most one batch, which
upsert absorbs. A record the target refuses goes to the error queue (kind ``rejected``, or
``dependency`` when it waits for another record) and the flow goes on; a batch refused as a whole
is tried record by record, so it cannot hold the cursor back for ever; an error that stops the
target (auth, configuration, transient after retries, an answer lost three times) leaves the
cursor where it was for the next run.
"""
from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import select

import canonical
from connectors.base import Entity, Receipt
from connectors.errors import ConnectorError
from sync import codemap
from sync.connections import Connections
from sync.master_writer import MasterWriter, record_refusal, record_written
from sync.pull_errors import dead_letter
from sync.retry import RetryPolicy
from sync.store import Item, Store, Warehouse, Watermark

log = logging.getLogger("erphub.sync.propagate")

# entity -> (store table, canonical model, natural-key column, code field of the model)
_TABLES: dict[Entity, tuple[Any, type[canonical.CanonicalModel], Any, str]] = {
    Entity.ITEMS: (Item, canonical.Item, Item.sku, "sku"),
    Entity.WAREHOUSES: (Warehouse, canonical.Warehouse, Warehouse.code, "code"),
}


@dataclass
class PropagationResult:
    target: str
    entity: str
    created: int = 0     # new in the target
    existing: int = 0    # already there: updated where it differed, else left alone
    rejected: int = 0    # refused, now in the error queue
    stopped: str | None = None  # why the target was left for the next run, if it was
    keys: list[str] = field(default_factory=list)


def propagate(store: Store, connections: Connections, source: str, targets: Sequence[str], entity: Entity | str, *,
              policy: RetryPolicy | None = None, batch: int | None = None) -> list[PropagationResult]:
    """Upsert into each target the ``entity`` records the store changed since the last time."""
    entity = Entity(str(getattr(entity, "value", entity)))
    if entity not in _TABLES:
        return []
    policy = policy or RetryPolicy()
    results = []
    for target in targets:
        connector = connections.connector(target)
        if entity not in connector.capabilities.writable:
            log.info("%s cannot write %s; master data for it stays in the store", target, entity)
            continue
        results.append(_to_target(store, connections, source, target, entity, policy,
                                  batch or max(1, connector.capabilities.max_batch)))
    return results


def _to_target(store: Store, connections: Connections, source: str, target: str, entity: Entity,
               policy: RetryPolicy, batch: int) -> PropagationResult:
    table, model, key_column, code_field = _TABLES[entity]
    source_id, target_id = connections.id(source), connections.id(target)
    cursor_name = f"prop:{entity.value}:{source_id}"
    result = PropagationResult(target, entity.value)
    writer = MasterWriter(connections.connector(target), entity, policy=policy, batch=batch,
                          what=f"upsert {entity.value} into {target}")
    while True:
        with store.session() as session:
            mark = session.get(Watermark, (target_id, cursor_name))
            query = select(table).where(table.source_connection_id == source_id)
            if mark is not None:
                query = query.where(table.updated_at > mark.cursor)
            rows = list(session.scalars(query.order_by(table.updated_at, table.id).limit(batch)))
            if not rows:
                return result
            # A page of a pull shares one timestamp: take the whole group of the last one, so the
            # cursor never stops in the middle of rows stamped alike.
            last = rows[-1].updated_at
            seen = {row.id for row in rows}
            rows += [row for row in session.scalars(select(table).where(
                table.source_connection_id == source_id, table.updated_at == last).order_by(table.id))
                if row.id not in seen]
            prepared = [_prepare(session, row, model, code_field, target_id, entity) for row in rows]
        for start in range(0, len(prepared), batch):
            stopped = _send(store, writer, prepared[start:start + batch], entity, target_id, key_column, result)
            if stopped:
                result.stopped = stopped
                log.warning("propagating %s to %s stopped: %s", entity.value, target, stopped)
                return result
        with store.session() as session:
            _advance(session, target_id, cursor_name, last)


def _send(store: Store, writer: MasterWriter, prepared: list[tuple[Any, Any]], entity: Entity, target_id: int,
          key_column: Any, result: PropagationResult) -> str | None:
    """Upsert one chunk through the shared writer and record each record's outcome; the reason to
    stop, if any (nothing of the chunk is recorded then: the cursor stays and it is sent again)."""
    to_send = [(row, record) for row, record in prepared if not isinstance(record, str)]
    try:
        answers = [a for _, batch in writer.write([record for _, record in to_send]) for a in batch]
    except ConnectorError as exc:
        return f"{exc.kind}: {exc}"
    with store.session() as session:
        for row, problem in prepared:
            if isinstance(problem, str):
                result.rejected += 1
                dead_letter(session, connection_id=target_id, entity=entity.value,
                            record_key=getattr(row, key_column.key), message=problem, raw=row.payload)
        written = []
        for (row, _record), answer in zip(to_send, answers, strict=True):
            key = getattr(row, key_column.key)
            if isinstance(answer, Receipt):
                if answer.created:
                    result.created += 1
                else:
                    result.existing += 1
                written.append(key)
            else:
                result.rejected += 1
                record_refusal(session, connection_id=target_id, entity=entity.value, record_key=key, error=answer,
                               raw=row.payload)
        result.keys.extend(written)
        record_written(session, connection_ids=[target_id], entity=entity.value, record_keys=written, by="propagate")
    return None


def _prepare(session: Any, row: Any, model: type[canonical.CanonicalModel], code_field: str, target_id: int,
             entity: Entity) -> tuple[Any, Any]:
    """The canonical record with the target's code, or a message saying why it cannot go."""
    try:
        record = canonical.parse(model, row.payload)
    except canonical.RecordInvalid as exc:
        return row, str(exc)
    code = getattr(record, code_field)
    external = codemap.to_external(session, target_id, entity.value, code)
    if external is None:
        return row, f"{code}: no code in the target for it (code map)"
    return row, (record if external == code else record.replace(**{code_field: external}))


def _advance(session: Any, target_id: int, name: str, cursor: datetime) -> None:
    mark = session.get(Watermark, (target_id, name))
    if mark is None:
        session.add(Watermark(connection_id=target_id, entity=name, cursor=cursor))
    elif cursor > mark.cursor:
        mark.cursor = cursor
