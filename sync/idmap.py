"""Binding canonical ids to the ids and codes each connection knows a record by (``id_map``).

One row per (connection, entity, canonical id); the table is unique both ways, so a canonical
id has one external id per connection and entity, and an external id one canonical id.

What goes in the columns (the pull engine's convention, DESIGN.md §5):

- ``entity`` is the plural read entity (``items``, ``warehouses``, ``locations``, ``partners``);
  singular spellings (``item``) are accepted everywhere and stored plural;
- ``canonical_id`` is the record's canonical natural key as text (sku, warehouse code, partner
  code, ``warehouse/bin`` for a location), after code mapping (:mod:`sync.codemap`);
- ``external_id`` is the natural key the connection itself reports (its own item number, stock
  code...). Our connectors speak codes, not vendor row ids, so this is what a push must send;
- ``external_code`` is the connection's code for the record (the same text for pulled records;
  the ``external_code`` column of an imported code map). Code lookups read it first.

Every helper works in the caller's transaction and does not commit. ``bind`` is idempotent; a
binding that contradicts an existing one raises :class:`IdMapConflict`; two workers binding the
same pair at the same moment end with one row and no error (the loser's insert fails on the
unique constraint inside a savepoint, and it re-reads).
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import BindParameter, bindparam, insert, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from sqlalchemy.types import NullType, TypeDecorator

from sync.store import IdMap, begin_write, utcnow

__all__ = [
    "ENTITIES",
    "Binding",
    "IdMapConflict",
    "bind",
    "bind_many",
    "bindings",
    "canonical_for",
    "canonicals_for",
    "entity_name",
    "external_for",
    "externals_for",
    "same_on_every_row",
]

ENTITIES = ("items", "warehouses", "locations", "partners", "movements")
_SINGULAR = {name[:-1]: name for name in ENTITIES}
#: Values per ``IN (...)`` list: well below SQLite's and PostgreSQL's parameter limits.
CHUNK = 500
#: How often ``bind`` re-reads after losing an insert race before it gives up.
RACE_ATTEMPTS = 5


def entity_name(entity: Any) -> str:
    """``"items"`` for ``Entity.ITEMS``, ``"items"`` or ``"item"``; anything else is a ValueError."""
    text = str(getattr(entity, "value", entity)).strip().lower()
    text = _SINGULAR.get(text, text)
    if text not in ENTITIES:
        raise ValueError(f"unknown entity {entity!r} (expected one of {', '.join(ENTITIES)})")
    return text


@dataclass(frozen=True)
class Binding:
    canonical_id: str
    external_id: str
    external_code: str | None = None

    @property
    def code(self) -> str:
        """The connection's code: ``external_code`` when set, else ``external_id``."""
        return self.external_code or self.external_id


class IdMapConflict(Exception):
    """A binding contradicts one already stored: the external id belongs to another canonical
    id, or the canonical id is bound to another external id. Retrying will not help; an operator
    (or a code-map import) must settle which is right."""

    def __init__(self, connection_id: int, entity: str, wanted: Binding, existing: Binding) -> None:
        self.connection_id = connection_id
        self.entity = entity
        self.wanted = wanted
        self.existing = existing
        if existing.canonical_id != wanted.canonical_id:
            detail = (f"external id {wanted.external_id!r} is already bound to canonical id "
                      f"{existing.canonical_id!r}")
            self.field = "external_id"
        else:
            detail = (f"canonical id {wanted.canonical_id!r} is already bound to external id "
                      f"{existing.external_id!r}")
            self.field = "canonical_id"
        super().__init__(f"{entity} in connection {connection_id}: cannot bind {wanted.canonical_id!r} to "
                         f"{wanted.external_id!r}: {detail}")


def _binding(row: Any) -> Binding:
    return Binding(row.canonical_id, row.external_id, row.external_code)


def _chunks(values: Sequence[str]) -> Iterator[Sequence[str]]:
    for start in range(0, len(values), CHUNK):
        yield values[start:start + CHUNK]


def _rows_touching(session: Session, connection_id: int, entity: str, canonical_id: str,
                   external_id: str) -> list[IdMap]:
    return list(session.scalars(select(IdMap).where(
        IdMap.connection_id == connection_id, IdMap.entity == entity,
        or_(IdMap.canonical_id == canonical_id, IdMap.external_id == external_id))))


def _agreeing(connection_id: int, entity: str, wanted: Binding, rows: Sequence[Any]) -> Binding | None:
    """The stored binding if ``rows`` (id_map rows or rows of its columns) already hold
    ``wanted``, ignoring the external code; None if they hold nothing; raises IdMapConflict if
    they contradict it."""
    for row in rows:
        if row.canonical_id != wanted.canonical_id or row.external_id != wanted.external_id:
            raise IdMapConflict(connection_id, entity, wanted, _binding(row))
    return _binding(rows[0]) if rows else None


def _settle(session: Session, connection_id: int, entity: str, wanted: Binding,
            rows: list[IdMap]) -> Binding | None:
    """The stored binding if ``rows`` already hold ``wanted`` (updating a new external code),
    None if they hold nothing; raises IdMapConflict if they contradict it."""
    if _agreeing(connection_id, entity, wanted, rows) is None:
        return None
    row = rows[0]
    if wanted.external_code is not None and row.external_code != wanted.external_code:
        row.external_code = wanted.external_code
        session.flush()
    return _binding(row)


def bind(session: Session, connection_id: int, entity: Any, canonical_id: str, external_id: str,
         external_code: str | None = None) -> Binding:
    """Bind ``canonical_id`` ⇄ ``external_id`` (and its ``external_code``) and return the binding.

    Idempotent: binding an existing pair again changes nothing (a new, non-None external code
    replaces the stored one). Raises :class:`IdMapConflict` if either side is bound to something
    else. A concurrent insert of the same pair is absorbed: the insert runs in a savepoint, and
    on a unique-constraint failure the row is read again (up to ``RACE_ATTEMPTS`` times).
    """
    entity = entity_name(entity)
    wanted = Binding(_text("canonical_id", canonical_id), _text("external_id", external_id),
                     None if external_code is None else _text("external_code", external_code))
    begin_write(session)  # SQLite: take the write lock now, so the read below is current
    for _ in range(RACE_ATTEMPTS):
        found = _settle(session, connection_id, entity, wanted,
                        _rows_touching(session, connection_id, entity, wanted.canonical_id, wanted.external_id))
        if found is not None:
            return found
        try:
            with session.begin_nested():
                session.add(IdMap(connection_id=connection_id, entity=entity, canonical_id=wanted.canonical_id,
                                  external_id=wanted.external_id, external_code=wanted.external_code))
            return wanted
        except IntegrityError:
            continue  # someone else inserted first: read again and settle against their row
    raise RuntimeError(f"id_map: could not bind {wanted.canonical_id!r} ⇄ {wanted.external_id!r} after "
                       f"{RACE_ATTEMPTS} attempts (rows keep appearing and disappearing)")


def bind_many(session: Session, connection_id: int, entity: Any,
              wanted: Iterable[Binding | tuple[str, str] | tuple[str, str, str | None]]
              ) -> tuple[list[Binding], list[IdMapConflict]]:
    """Bind a page of pairs: ``(bound, conflicts)``.

    Reads what is stored for the whole page in one query per side and ``CHUNK`` values (columns
    only, no ORM objects), inserts the new pairs with one Core ``INSERT`` executemany in a
    savepoint, and falls back to :func:`bind` one by one if that insert loses a race. A new
    external code for a stored pair is written through the ORM (so rows already loaded in the
    session see it). Conflicts are returned, not raised, so the caller can dead-letter those
    records and keep the rest.
    """
    entity = entity_name(entity)
    pairs = [w if isinstance(w, Binding) else Binding(*w) for w in wanted]
    if not pairs:
        return [], []
    begin_write(session)
    stored_by_canonical = _load(session, connection_id, entity, IdMap.canonical_id, [p.canonical_id for p in pairs])
    stored_by_external = _load(session, connection_id, entity, IdMap.external_id, [p.external_id for p in pairs])
    bound: list[Binding] = []
    conflicts: list[IdMapConflict] = []
    new: dict[str, Binding] = {}
    new_external: dict[str, Binding] = {}
    recode: dict[int, str] = {}  # id_map row id -> its new external code
    for pair in pairs:
        by_canonical = stored_by_canonical.get(pair.canonical_id)
        by_external = stored_by_external.get(pair.external_id)
        rows = [r for r in (by_canonical, by_external) if r is not None]
        if len(rows) == 2 and rows[0].id == rows[1].id:
            rows.pop()
        try:
            settled = _agreeing(connection_id, entity, pair, rows)
        except IdMapConflict as exc:
            conflicts.append(exc)
            continue
        if settled is not None:
            if pair.external_code is not None and settled.external_code != pair.external_code:
                recode[rows[0].id] = pair.external_code
                settled = Binding(settled.canonical_id, settled.external_id, pair.external_code)
            bound.append(settled)
            continue
        # two new pairs in the same page may contradict each other, too
        other = new.get(pair.canonical_id) or new_external.get(pair.external_id)
        if other is not None and other != pair:
            conflicts.append(IdMapConflict(connection_id, entity, pair, other))
            continue
        new[pair.canonical_id] = new_external[pair.external_id] = pair
        bound.append(pair)
    if recode:
        _recode(session, recode)
    if new:
        table = IdMap.__table__
        stamp, now = same_on_every_row(session, table.c.created_at, utcnow())
        try:
            with session.begin_nested():
                session.execute(insert(table).values(created_at=stamp, updated_at=stamp), [
                    {"connection_id": connection_id, "entity": entity, "canonical_id": p.canonical_id,
                     "external_id": p.external_id, "external_code": p.external_code, stamp.key: now}
                    for p in new.values()])
        except IntegrityError:  # a concurrent writer bound some of them: settle each one
            retry = set(new.values())
            bound = [b for b in bound if b not in retry]
            for pair in new.values():
                try:
                    bound.append(bind(session, connection_id, entity, pair.canonical_id, pair.external_id,
                                      pair.external_code))
                except IdMapConflict as exc:
                    conflicts.append(exc)
    return bound, conflicts


def same_on_every_row(session: Session, column: Any, value: Any) -> tuple[BindParameter[Any], Any]:
    """``(parameter, driver value)`` for a value that is the same on every row of a bulk
    ``INSERT``/``UPDATE`` executemany (``created_at`` = now...): the column type's bind
    processing runs once here instead of once per row (on SQLite, formatting two timestamps per
    row cost about as much as the rest of a bulk id_map insert). Put the parameter in
    ``.values()`` and the driver value under ``parameter.key`` in every row."""
    dialect = session.get_bind().dialect
    processor = column.type.dialect_impl(dialect).bind_processor(dialect)
    return (bindparam(f"{column.key}__same", type_=_DriverValue()),
            processor(value) if processor is not None else value)


class _DriverValue(TypeDecorator[Any]):
    """A parameter already in the form the driver takes: no processing, no cast."""

    impl = NullType
    cache_ok = True


def _recode(session: Session, codes: dict[int, str]) -> None:
    """Give stored rows (by id) a new external code, through the session's objects."""
    ids = sorted(codes)
    for start in range(0, len(ids), CHUNK):
        for row in session.scalars(select(IdMap).where(IdMap.id.in_(ids[start:start + CHUNK]))):
            row.external_code = codes[row.id]
    session.flush()


def _load(session: Session, connection_id: int, entity: str, column: Any, values: Iterable[str]) -> dict[str, Any]:
    """``{value: row}`` of the stored rows whose ``column`` is one of ``values``; each row has
    ``id``, ``canonical_id``, ``external_id`` and ``external_code``."""
    keys = sorted(set(values))
    out: dict[str, Any] = {}
    for chunk in _chunks(keys):
        for row in session.execute(select(IdMap.id, IdMap.canonical_id, IdMap.external_id, IdMap.external_code)
                                   .where(IdMap.connection_id == connection_id, IdMap.entity == entity,
                                          column.in_(chunk))):
            out[getattr(row, column.key)] = row
    return out


def external_for(session: Session, connection_id: int, entity: Any, canonical_id: str) -> str | None:
    """The external id ``connection_id`` knows ``canonical_id`` by, or None when unbound."""
    return session.scalar(select(IdMap.external_id).where(
        IdMap.connection_id == connection_id, IdMap.entity == entity_name(entity), IdMap.canonical_id == canonical_id))


def canonical_for(session: Session, connection_id: int, entity: Any, external_id: str) -> str | None:
    """The canonical id bound to ``external_id`` in ``connection_id``, or None when unbound."""
    return session.scalar(select(IdMap.canonical_id).where(
        IdMap.connection_id == connection_id, IdMap.entity == entity_name(entity), IdMap.external_id == external_id))


def externals_for(session: Session, connection_id: int, entity: Any, canonical_ids: Iterable[str]) -> dict[str, str]:
    """``{canonical id: external id}`` for those of ``canonical_ids`` that are bound (one query per 500)."""
    rows = _load(session, connection_id, entity_name(entity), IdMap.canonical_id, canonical_ids)
    return {key: row.external_id for key, row in rows.items()}


def canonicals_for(session: Session, connection_id: int, entity: Any, external_ids: Iterable[str]) -> dict[str, str]:
    """``{external id: canonical id}`` for those of ``external_ids`` that are bound."""
    rows = _load(session, connection_id, entity_name(entity), IdMap.external_id, external_ids)
    return {key: row.canonical_id for key, row in rows.items()}


def bindings(session: Session, connection_id: int, entity: Any) -> list[Binding]:
    """Every binding of one entity in one connection, by canonical id."""
    rows = session.scalars(select(IdMap).where(IdMap.connection_id == connection_id,
                                               IdMap.entity == entity_name(entity)).order_by(IdMap.canonical_id))
    return [_binding(row) for row in rows]


def _text(name: str, value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{name} must be non-empty text, got {value!r}")
    if len(value) > 255:
        raise ValueError(f"{name} is {len(value)} characters; id_map keeps at most 255")
    return value
