"""Jiandaoyun records ⇄ canonical models. Pure functions, no I/O (``vendors/jiandaoyun.md`` §3, §12).

The form models of :mod:`connectors.jiandaoyun.settings` are passed in *resolved*: every field
reference replaced by the field's current ``name`` (alias or widget ID), which is the key of
reads and webhooks and is accepted by writes. Reads are plain values; writes are wrapped
``{"value": v}``; a subform is written as a list of rows of wrapped values.

* Quantities and prices are ``Decimal`` from the raw JSON (the client parses with
  ``parse_float=Decimal``); a float or a non-number is a :class:`MappingError`, never rounded.
* Datetimes are UTC (``2018-01-01T10:10:10.000Z``, or epoch milliseconds). A document date is
  written as local midnight of the tenant zone (date-only values) and read back in that zone.
* 业务类型 ↔ kind through ``MovementForm.kinds``; a 出入库单 has one 仓库编码 (inbound kinds: the
  lines' to_warehouse, outbound: their from_warehouse), transfers 调出仓库编码 → 调入仓库编码.
* Bad records raise :class:`MappingError` naming the field; the connector turns it into a
  ``RecordError`` naming the record.
"""
from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, date, datetime, time, tzinfo
from decimal import Decimal, InvalidOperation
from typing import Any

from canonical import (
    Item,
    Movement,
    MovementKind,
    Partner,
    RecordInvalid,
    StockBalance,
    Warehouse,
    parse,
)
from connectors.jiandaoyun.settings import (
    ItemForm,
    LedgerForm,
    MovementForm,
    WarehouseForm,
)

ACTIVE, INACTIVE = "启用", "停用"
YES, NO = "是", "否"


class MappingError(ValueError):
    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


# --- values ------------------------------------------------------------------------------------


def text(row: Mapping[str, Any], key: str | None, *, required: bool = False) -> str | None:
    """A text value, stripped; ``""`` and absent are None (a required one raises)."""
    value = row.get(key) if key else None
    if value is None or value == "":
        if required:
            raise MappingError(f"{key} is empty", field=key)
        return None
    if isinstance(value, (dict, list)):
        raise MappingError(f"{key} is not text: {value!r}", field=key)
    return str(value).strip() or None


def number(row: Mapping[str, Any], key: str | None, *, required: bool = False) -> Decimal | None:
    """A number as ``Decimal``: ints, Decimals and numeric text; never a float."""
    value = row.get(key) if key else None
    if value is None or value == "":
        if required:
            raise MappingError(f"{key} is empty", field=key)
        return None
    if isinstance(value, (bool, float)):
        raise MappingError(f"{key} arrived as {type(value).__name__} {value!r}; parse JSON with "
                           "parse_float=Decimal", field=key)
    try:
        result = Decimal(value) if isinstance(value, (int, Decimal)) else Decimal(str(value).strip())
    except InvalidOperation:
        raise MappingError(f"{key} is not a number: {value!r}", field=key) from None
    if not result.is_finite():
        raise MappingError(f"{key} is not a finite number: {value!r}", field=key)
    return result


def parse_time(value: Any, *, field: str | None = None) -> datetime:
    """UTC datetime from ``…Z`` / offset ISO text (zone-less text is UTC) or epoch milliseconds."""
    if isinstance(value, (int, Decimal)) and not isinstance(value, bool):
        return datetime.fromtimestamp(float(value) / 1000.0, tz=UTC)
    if isinstance(value, str) and value.strip():
        try:
            moment = datetime.fromisoformat(value.strip())
        except ValueError:
            raise MappingError(f"{field or 'time'} is not an ISO datetime: {value!r}", field=field) from None
        return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).astimezone(UTC)
    raise MappingError(f"{field or 'time'} is not a datetime: {value!r}", field=field)


def format_time(moment: datetime) -> str:
    """``YYYY-MM-DDTHH:MM:SS.mmmZ`` (an aware datetime; milliseconds truncated)."""
    if moment.tzinfo is None:
        raise ValueError("a naive datetime cannot be sent; times are UTC")
    utc = moment.astimezone(UTC)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z"


def local_midnight(day: date, zone: tzinfo) -> str:
    return format_time(datetime.combine(day, time(0), tzinfo=zone))


def local_date(moment: datetime, zone: tzinfo) -> date:
    return moment.astimezone(zone).date()


def modified(row: Mapping[str, Any]) -> datetime | None:
    value = row.get("updateTime")
    return parse_time(value, field="updateTime") if value else None


def wrap(values: Mapping[str | None, Any]) -> dict[str, Any]:
    """``{name: {"value": v}}``, leaving out fields the tenant does not have (name None)."""
    return {key: {"value": value} for key, value in values.items() if key}


def _valid(model: type, data: Mapping[str, Any]) -> Any:
    try:
        return parse(model, data)
    except RecordInvalid as exc:
        problem = exc.problems[0] if exc.problems else None
        raise MappingError("; ".join(str(p) for p in exc.problems) or str(exc),
                           field=problem.field if problem else None) from None


# --- items and warehouses ---------------------------------------------------------------------------


def _flag(row: Mapping[str, Any], key: str | None, yes: str, no: str, default: bool) -> bool:
    value = text(row, key)
    if value is None:
        return default
    if value not in (yes, no):
        raise MappingError(f"{key} is {value!r}, expected {yes} or {no}", field=key)
    return value == yes


def item_from_record(row: Mapping[str, Any], f: ItemForm) -> Item:
    return _valid(Item, {
        "sku": text(row, f.sku, required=True), "name": text(row, f.name, required=True),
        "spec": text(row, f.spec), "base_unit": text(row, f.unit, required=True),
        "category": text(row, f.category), "barcode": text(row, f.barcode),
        "batch_managed": _flag(row, f.batch_managed, YES, NO, False),
        "active": _flag(row, f.status, ACTIVE, INACTIVE, True), "modified_at": modified(row)})


def item_values(item: Item, f: ItemForm) -> dict[str | None, Any]:
    """What an item writes, by field name (optional fields the tenant lacks are None keys)."""
    return {f.sku: item.sku, f.name: item.name, f.spec: item.spec or "", f.unit: item.base_unit,
            f.category: item.category or "", f.barcode: item.barcode or "",
            f.batch_managed: YES if item.batch_managed else NO, f.status: ACTIVE if item.active else INACTIVE}


def warehouse_from_record(row: Mapping[str, Any], f: WarehouseForm) -> Warehouse:
    return _valid(Warehouse, {
        "code": text(row, f.code, required=True), "name": text(row, f.name, required=True),
        "bin_managed": _flag(row, f.bin_managed, YES, NO, False),
        "active": _flag(row, f.status, ACTIVE, INACTIVE, True), "modified_at": modified(row)})


def warehouse_values(warehouse: Warehouse, f: WarehouseForm) -> dict[str | None, Any]:
    return {f.code: warehouse.code, f.name: warehouse.name, f.bin_managed: YES if warehouse.bin_managed else NO,
            f.status: ACTIVE if warehouse.active else INACTIVE}


def changes(values: Mapping[str | None, Any], row: Mapping[str, Any]) -> dict[str, Any]:
    """The wrapped fields whose value differs from the record's (blank and absent are equal)."""
    def same(a: Any, b: Any) -> bool:
        return (a in (None, "")) and (b in (None, "")) or a == b
    return wrap({key: value for key, value in values.items() if key and not same(value, row.get(key))})


# --- movements --------------------------------------------------------------------------------------


def kind_value(kind: MovementKind, f: MovementForm) -> str:
    """The 业务类型 written for ``kind``: the first value mapped to it."""
    for value, mapped in f.kinds.items():
        if mapped == kind:
            return value
    raise MappingError(f"no 业务类型 is mapped to {kind.value}", field=f.kind)


def writable_kinds(f: MovementForm) -> frozenset[str]:
    return frozenset(kind.value for kind in f.kinds.values())


def movement_to_data(movement: Movement, key: str, f: MovementForm, zone: tzinfo) -> dict[str, Any]:
    out_sign, in_sign = movement.kind.stock_sign
    head: dict[str | None, Any] = {
        f.kind: kind_value(movement.kind, f), f.date: local_midnight(movement.document_date, zone),
        f.reference: movement.reference, f.key: key, f.memo: movement.memo or None}
    sources = {line.from_warehouse for line in movement.lines}
    targets = {line.to_warehouse for line in movement.lines}
    if out_sign and len(sources) > 1 or in_sign and len(targets) > 1:
        raise MappingError("the lines use several warehouses; a 出入库单 has one per side", field="lines")
    if out_sign and in_sign:
        head[f.from_warehouse], head[f.to_warehouse] = sources.pop(), targets.pop()
    else:
        head[f.warehouse] = sources.pop() if out_sign else targets.pop()
    if movement.counterparty is not None:
        head[f.partner_code], head[f.partner_name] = movement.counterparty.code, movement.counterparty.name
    rows = []
    for line in sorted(movement.lines, key=lambda l: l.line_no):
        rows.append(wrap({f.line_sku: line.sku, f.line_qty: line.quantity, f.line_unit: line.unit,
                          f.line_cost: line.unit_cost, f.line_lot: line.lot, f.line_from_bin: line.from_bin,
                          f.line_to_bin: line.to_bin}))
    data = wrap({k: v for k, v in head.items() if v is not None})
    data[f.lines] = {"value": rows}
    return data


def movement_from_record(row: Mapping[str, Any], f: MovementForm, zone: tzinfo, *,
                         source_system: str | None = None) -> Movement:
    kind_text = text(row, f.kind, required=True)
    kind = f.kinds.get(kind_text or "")
    if kind is None:
        raise MappingError(f"{f.kind} {kind_text!r} is not mapped to a movement kind", field=f.kind)
    when = row.get(f.date) or row.get("createTime")
    if not when:
        raise MappingError(f"{f.date} is empty", field=f.date)
    day = local_date(parse_time(when, field=f.date), zone)
    out_sign, in_sign = kind.stock_sign
    if out_sign and in_sign:
        source = text(row, f.from_warehouse, required=True)
        target = text(row, f.to_warehouse, required=True)
    else:
        code = text(row, f.warehouse, required=True)
        source, target = (code, None) if out_sign else (None, code)
    rows = row.get(f.lines) or []
    if not isinstance(rows, list) or not rows:
        raise MappingError(f"{f.lines} has no rows", field=f.lines)
    lines = []
    for number_, line in enumerate(rows, start=1):
        if not isinstance(line, Mapping):
            raise MappingError(f"{f.lines}[{number_ - 1}] is not a row", field=f.lines)
        try:
            lines.append({"line_no": number_, "sku": text(line, f.line_sku, required=True),
                          "quantity": number(line, f.line_qty, required=True),
                          "unit": text(line, f.line_unit, required=True), "from_warehouse": source,
                          "to_warehouse": target, "lot": text(line, f.line_lot),
                          "from_bin": text(line, f.line_from_bin) if source else None,
                          "to_bin": text(line, f.line_to_bin) if target else None,
                          "unit_cost": number(line, f.line_cost)})
        except MappingError as exc:
            raise MappingError(f"{f.lines}[{number_ - 1}].{exc}", field=f"{f.lines}.{exc.field}") from None
    counterparty = None
    partner_code = text(row, f.partner_code)
    if partner_code:
        role = kind.partner_role.value if kind.partner_role else "both"
        counterparty = Partner(code=partner_code, name=text(row, f.partner_name) or partner_code, role=role)
    reference = text(row, f.reference) or text(row, f.number) or str(row.get("_id") or "")
    return _valid(Movement, {"reference": reference, "kind": kind, "document_date": day, "lines": lines,
                             "counterparty": counterparty, "memo": text(row, f.memo), "source_system": source_system,
                             "source_document": text(row, f.number) or row.get("_id"), "modified_at": modified(row)})


def movement_label(row: Mapping[str, Any], f: MovementForm) -> str:
    """How an operator finds the record: its reference, number or data id."""
    return str(text(row, f.reference) or text(row, f.number) or row.get("_id") or "?")


def key_of(row: Mapping[str, Any], f: MovementForm) -> str | None:
    return text(row, f.key)


# --- balances ---------------------------------------------------------------------------------------


def balance_from_ledger(row: Mapping[str, Any], f: LedgerForm, as_of: datetime,
                        units: Mapping[str, str]) -> StockBalance:
    sku = text(row, f.sku, required=True)
    unit = text(row, f.unit) or units.get(sku or "")
    if unit is None:
        raise MappingError(f"no unit for {sku}: the ledger row has none and the item is unknown", field=f.unit)
    return _valid(StockBalance, {
        "sku": sku, "warehouse": text(row, f.warehouse, required=True), "bin": text(row, f.bin),
        "lot": text(row, f.lot), "on_hand": number(row, f.qty) or Decimal(0), "unit": unit, "as_of": as_of})
