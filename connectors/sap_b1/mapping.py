"""SAP Business One records ⇄ the canonical model. Pure functions, no I/O.

The document side produces and reads **plain dicts of SAP field names** (``DocDate``,
``DocumentLines[].ItemCode``…), the shape the Service Layer posts as JSON and the DI Server
carries as BOM XML rows, so a DI transport can reuse every function here unchanged.

Movement kinds and SAP documents (vendors/sap_b1.md §3):

================  ===========================  ===============================================
kind              entity set (object)          back to a kind
================  ===========================  ===============================================
purchase_receipt  PurchaseDeliveryNotes (20)   always
sales_issue       DeliveryNotes (15)           always
transfer          StockTransfers (67)          always
count_gain        InventoryGenEntries (59)     marker ``erphub:count_gain`` in the marker field
misc_receipt      InventoryGenEntries (59)     marker, or no marker (a goods receipt made in SAP)
count_loss        InventoryGenExits (60)       marker ``erphub:count_loss``
scrap             InventoryGenExits (60)       marker ``erphub:scrap``
misc_issue        InventoryGenExits (60)       marker, or no marker (a goods issue made in SAP)
sales_return      Returns (16)                 always
purchase_return   PurchaseReturns (21)         always
================  ===========================  ===============================================

The marker goes in a configurable header field (default ``JournalMemo``, 50 characters in SAP;
a UDF such as ``U_HubKind`` works too). Our idempotency key goes in the configured reference
field (default ``Reference2``; field lengths vary by version, so a UDF is the safer choice,
RELIABILITY §1.4).

Time: ``UpdateDate`` is a date (v2 writes it as midnight ``Z``, which is not a UTC instant) and
``UpdateTime`` a separate ``HH:MM:SS``; both are the company's local time, so
:func:`sap_datetime` joins them in the configured time zone. ``StockTransfers`` have no
``UpdateTime``: their stamp is the start of the day (date granularity).
"""
from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, time, tzinfo
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from canonical import (
    Item,
    Location,
    Movement,
    MovementKind,
    Partner,
    PartnerRole,
    StockBalance,
    UnitCatalog,
    Warehouse,
    parse,
    to_decimal,
)

__all__ = [
    "DOCUMENT_ENTITIES",
    "DOCUMENT_FOR_KIND",
    "MappingConfig",
    "MappingError",
    "Stamp",
    "bin_to_location",
    "document_to_movement",
    "item_changes",
    "item_compared_fields",
    "item_to_balances",
    "item_to_item",
    "item_to_sap",
    "location_changes",
    "location_clash",
    "location_to_sap",
    "movement_to_document",
    "partner_to_partner",
    "sap_datetime",
    "stamp_of",
    "warehouse_changes",
    "warehouse_to_sap",
    "warehouse_to_warehouse",
    "WAREHOUSE_COMPARED_FIELDS",
]

K = MovementKind
DOCUMENT_FOR_KIND: dict[MovementKind, str] = {
    K.purchase_receipt: "PurchaseDeliveryNotes",
    K.sales_issue: "DeliveryNotes",
    K.transfer: "StockTransfers",
    K.count_gain: "InventoryGenEntries",
    K.misc_receipt: "InventoryGenEntries",
    K.count_loss: "InventoryGenExits",
    K.misc_issue: "InventoryGenExits",
    K.scrap: "InventoryGenExits",
    K.sales_return: "Returns",
    K.purchase_return: "PurchaseReturns",
}
# Read order for movements, one entity set after another.
DOCUMENT_ENTITIES: tuple[str, ...] = (
    "PurchaseDeliveryNotes", "DeliveryNotes", "Returns", "PurchaseReturns", "InventoryGenEntries",
    "InventoryGenExits", "StockTransfers",
)
# The kind a document of this entity set is when it carries no marker (made in SAP by a user).
_DEFAULT_KIND: dict[str, MovementKind] = {
    "PurchaseDeliveryNotes": K.purchase_receipt, "DeliveryNotes": K.sales_issue, "Returns": K.sales_return,
    "PurchaseReturns": K.purchase_return, "InventoryGenEntries": K.misc_receipt,
    "InventoryGenExits": K.misc_issue, "StockTransfers": K.transfer,
}
# Kinds that share an entity set with another kind and need a marker to come back as themselves.
MARKED_KINDS = frozenset({K.count_gain, K.misc_receipt, K.count_loss, K.misc_issue, K.scrap})
# Entity sets whose documents name a business partner.
_PARTNER_DOCUMENTS = frozenset({"PurchaseDeliveryNotes", "DeliveryNotes", "Returns", "PurchaseReturns"})
_LINES = {"StockTransfers": "StockTransferLines"}


class MappingError(ValueError):
    """A record that cannot be mapped; ``field`` names the SAP (or canonical) field."""

    def __init__(self, message: str, *, field: str | None = None, dependency: bool = False) -> None:
        super().__init__(message)
        self.field = field
        self.dependency = dependency  # True: a referenced record (bin, warehouse) is not known yet


def default_markers() -> dict[MovementKind, str]:
    return {kind: f"erphub:{kind.value}" for kind in MARKED_KINDS}


@dataclass(frozen=True)
class MappingConfig:
    """How one company's SAP data maps. Built by the connector from its settings."""

    timezone: tzinfo = field(default_factory=lambda: ZoneInfo("UTC"))
    reference_field: str = "Reference2"
    movement_reference_field: str | None = "Reference1"  # the movement's own reference; None: not written
    kind_marker_field: str = "JournalMemo"
    kind_markers: Mapping[MovementKind, str] = field(default_factory=default_markers)
    warehouse_map: Mapping[str, str] = field(default_factory=dict)  # canonical code -> SAP WarehouseCode
    unit_map: Mapping[str, str] = field(default_factory=dict)  # SAP UoM code -> canonical unit code
    default_unit: str = "PCS"  # items without an InventoryUOM
    spec_field: str | None = None  # Items property holding the specification (e.g. User_Text or a UDF)
    series: Mapping[str, int] = field(default_factory=dict)  # entity set -> Series
    send_prices: bool = True  # unit_cost -> UnitPrice on inbound documents
    include_zero_balances: bool = False
    units: UnitCatalog | None = None
    source_system: str = "sap_b1"

    def __post_init__(self) -> None:
        reverse: dict[str, str] = {}
        for ours, theirs in self.warehouse_map.items():
            if theirs in reverse:
                raise ValueError(f"warehouse_map: SAP warehouse {theirs!r} is mapped from both {reverse[theirs]!r} "
                                 f"and {ours!r}")
            reverse[theirs] = ours
        object.__setattr__(self, "_warehouse_back", reverse)
        units_back: dict[str, str] = {}
        for theirs, ours in self.unit_map.items():  # our unit -> SAP UoM code; an identical code wins
            if ours not in units_back or theirs == ours:
                units_back[ours] = theirs
        object.__setattr__(self, "_unit_back", units_back)
        markers: dict[str, MovementKind] = {}
        for kind, text in self.kind_markers.items():
            if not text or text in markers:
                raise ValueError(f"kind_markers: marker {text!r} for {kind} is empty or used twice")
            markers[text] = MovementKind(kind)
        object.__setattr__(self, "_marker_back", markers)

    def sap_warehouse(self, code: str) -> str:
        return self.warehouse_map.get(code, code)

    def our_warehouse(self, code: str) -> str:
        return self._warehouse_back.get(code, code)  # type: ignore[attr-defined]

    def our_unit(self, sap_unit: object) -> str:
        if not isinstance(sap_unit, str) or not sap_unit.strip() or sap_unit.strip().lower() == "manual":
            return self.default_unit
        return self.unit_map.get(sap_unit.strip(), sap_unit.strip())

    def sap_unit(self, unit: str) -> str:
        """Our unit code → the SAP UoM code the unit map reads back as it (itself when unmapped)."""
        return self._unit_back.get(unit, unit)  # type: ignore[attr-defined]

    def kind_from_marker(self, value: object) -> MovementKind | None:
        if not isinstance(value, str):
            return None
        text = value.strip()
        found = self._marker_back.get(text)  # type: ignore[attr-defined]
        if found is not None:
            return found
        for marker, kind in self._marker_back.items():  # type: ignore[attr-defined]
            if text.startswith(marker + " ") or text.startswith(marker + ":"):
                return kind
        return None


# ---------------------------------------------------------------------------------------------
# Values


_TIME = re.compile(r"^(\d{1,2}):?(\d{2})(?::?(\d{2}))?")


def sap_date(value: object, *, field_name: str = "date") -> date:
    """``2024-05-01``, ``2024-05-01T00:00:00Z`` (v2) or ``20240501`` → a date."""
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    if not isinstance(value, str) or not value.strip():
        raise MappingError(f"{field_name} is missing or not a date ({value!r})", field=field_name)
    text = value.strip()
    try:
        if re.match(r"^\d{8}$", text):
            return date(int(text[:4]), int(text[4:6]), int(text[6:]))
        return date.fromisoformat(text[:10])
    except ValueError:
        raise MappingError(f"{field_name} {value!r} is not a date", field=field_name) from None


def sap_time(value: object, *, field_name: str = "time") -> time | None:
    """``13:14:45``, ``13:14``, ``1314`` or ``131445`` → a time; None when absent."""
    if value is None or value == "":
        return None
    if isinstance(value, time):
        return value
    if isinstance(value, int) and not isinstance(value, bool):  # DocTime as HHMM
        value = f"{value:04d}"
    if not isinstance(value, str):
        raise MappingError(f"{field_name} {value!r} is not a time", field=field_name)
    match = _TIME.match(value.strip())
    if match is None:
        raise MappingError(f"{field_name} {value!r} is not a time", field=field_name)
    try:
        return time(int(match.group(1)), int(match.group(2)), int(match.group(3) or 0))
    except ValueError:
        raise MappingError(f"{field_name} {value!r} is not a time", field=field_name) from None


def sap_datetime(day: object, clock: object, tz: tzinfo) -> datetime | None:
    """``UpdateDate`` + ``UpdateTime`` as an aware datetime in the company's zone (None if no date)."""
    if day is None or day == "":
        return None
    d = sap_date(day, field_name="UpdateDate")
    t = sap_time(clock, field_name="UpdateTime") or time(0, 0)
    return datetime.combine(d, t).replace(tzinfo=tz)


@dataclass(frozen=True)
class Stamp:
    """A record's modification stamp; ``exact`` is False when only the date is known."""

    at: datetime | None
    exact: bool


def stamp_of(row: Mapping[str, Any], cfg: MappingConfig) -> Stamp:
    day = row.get("UpdateDate")
    if not day:
        return Stamp(None, False)
    clock = row.get("UpdateTime")
    return Stamp(sap_datetime(day, clock, cfg.timezone), bool(clock))


def _yes(value: object) -> bool:
    return value in ("tYES", "Y", True, "yes", "YES")


def _text(row: Mapping[str, Any], name: str) -> str | None:
    value = row.get(name)
    if value is None:
        return None
    text = str(value).strip()
    return text or None


def _required(row: Mapping[str, Any], name: str, what: str) -> str:
    value = _text(row, name)
    if value is None:
        raise MappingError(f"{what} has no {name}", field=name)
    return value


def _number(row: Mapping[str, Any], name: str, *, default: Decimal | None = None) -> Decimal:
    value = row.get(name)
    if value is None:
        if default is not None:
            return default
        raise MappingError(f"{name} is missing", field=name)
    try:
        return to_decimal(value)
    except (TypeError, ValueError) as exc:
        raise MappingError(f"{name}: {exc}", field=name) from None


# ---------------------------------------------------------------------------------------------
# Master data


def item_unit(row: Mapping[str, Any], cfg: MappingConfig) -> str:
    return cfg.our_unit(row.get("InventoryUOM"))


def item_to_item(row: Mapping[str, Any], cfg: MappingConfig) -> Item:
    """An ``Items`` record → Item. Inactive when not ``Valid`` or ``Frozen``."""
    sku = _required(row, "ItemCode", "item")
    name = _text(row, "ItemName") or _text(row, "ForeignName")
    if name is None:
        raise MappingError(f"item {sku!r} has no ItemName", field="ItemName")
    group = row.get("ItemsGroupCode")
    cost = row.get("AvgStdPrice")
    standard_cost = None
    if cost is not None:
        value = _number(row, "AvgStdPrice")
        standard_cost = value if value > 0 else None
    data = {
        "sku": sku,
        "name": name,
        "spec": _text(row, cfg.spec_field) if cfg.spec_field else None,
        "base_unit": item_unit(row, cfg),
        "category": str(group) if group is not None and group != -1 else None,
        "barcode": _text(row, "BarCode"),
        "batch_managed": _yes(row.get("ManageBatchNumbers")),
        "serial_managed": _yes(row.get("ManageSerialNumbers")),
        "active": _item_active(row),
        "standard_cost": standard_cost,
        "modified_at": stamp_of(row, cfg).at,
    }
    return parse(Item, data, units=cfg.units)


def _item_active(row: Mapping[str, Any]) -> bool:
    return row.get("Valid", "tYES") not in ("tNO", "N") and not _yes(row.get("Frozen"))


def item_to_balances(row: Mapping[str, Any], cfg: MappingConfig, *, as_of: datetime,
                     warehouse: str | None = None) -> list[StockBalance]:
    """``Items.ItemWarehouseInfoCollection`` → one StockBalance per warehouse:
    on_hand = InStock, available = InStock − Committed. Rows with nothing in stock and nothing
    committed are left out unless ``include_zero_balances``; ``warehouse`` (our code) keeps one."""
    sku = _required(row, "ItemCode", "item")
    unit = item_unit(row, cfg)
    rows = row.get("ItemWarehouseInfoCollection")
    if rows is None:
        return []
    if not isinstance(rows, list):
        raise MappingError(f"item {sku!r}: ItemWarehouseInfoCollection is not a list",
                           field="ItemWarehouseInfoCollection")
    balances = []
    for i, info in enumerate(rows):
        if not isinstance(info, Mapping):
            raise MappingError(f"item {sku!r}: ItemWarehouseInfoCollection[{i}] is not an object",
                               field=f"ItemWarehouseInfoCollection[{i}]")
        code = _required(info, "WarehouseCode", f"item {sku!r} warehouse row {i}")
        ours = cfg.our_warehouse(code)
        if warehouse is not None and ours != warehouse:
            continue
        in_stock = _number(info, "InStock", default=Decimal(0))
        committed = _number(info, "Committed", default=Decimal(0))
        if in_stock == 0 and committed == 0 and not cfg.include_zero_balances:
            continue
        balances.append(parse(StockBalance, {
            "sku": sku, "warehouse": ours, "on_hand": in_stock, "available": in_stock - committed,
            "unit": unit, "as_of": as_of,
        }, units=cfg.units))
    return balances


def warehouse_to_warehouse(row: Mapping[str, Any], cfg: MappingConfig) -> Warehouse:
    code = _required(row, "WarehouseCode", "warehouse")
    return parse(Warehouse, {
        "code": cfg.our_warehouse(code),
        "name": _text(row, "WarehouseName") or code,
        "bin_managed": _yes(row.get("EnableBinLocations")),
        "active": not _yes(row.get("Inactive")),
        "modified_at": stamp_of(row, cfg).at,
    }, units=cfg.units)


# ---------------------------------------------------------------------------------------------
# Master data → SAP (upsert): the inverse of the reads above, field by field
#
# Only what the read mapping gives back is written and compared, so a record read from SAP and
# written again changes nothing. Not written: ``category`` (SAP holds a numeric ItemsGroupCode, our
# category is a name), ``standard_cost`` (AvgStdPrice is a valuation result, not master data),
# ``conversions`` (UoM groups), ``attributes`` and the warehouse's ``organisation``. ``InventoryItem``
# is ``tYES`` when an item is created (canonical items keep stock) and never changed afterwards:
# whether an existing SAP item keeps stock is that company's decision.


def _flag(value: bool) -> str:
    return "tYES" if value else "tNO"


def item_compared_fields(cfg: MappingConfig) -> tuple[str, ...]:
    """The Items properties :func:`item_changes` reads (``$select`` of the lookup)."""
    fields = ("ItemCode", "ItemName", "InventoryUOM", "ManageBatchNumbers", "ManageSerialNumbers", "BarCode",
              "Valid", "Frozen")
    return (*fields, cfg.spec_field) if cfg.spec_field else fields


def _item_values(item: Item, cfg: MappingConfig) -> dict[str, Any]:
    values: dict[str, Any] = {
        "ItemName": item.name,
        "InventoryUOM": cfg.sap_unit(item.base_unit),
        "ManageBatchNumbers": _flag(item.batch_managed),
        "ManageSerialNumbers": _flag(item.serial_managed),
        "BarCode": item.barcode,
    }
    if cfg.spec_field:
        values[cfg.spec_field] = item.spec
    return values


def _active_values(active: bool) -> dict[str, str]:
    return {"Valid": "tYES", "Frozen": "tNO"} if active else {"Valid": "tNO", "Frozen": "tYES"}


def item_to_sap(item: Item, cfg: MappingConfig) -> dict[str, Any]:
    """The ``Items`` body that creates ``item`` (empty optional fields left out)."""
    body: dict[str, Any] = {"ItemCode": item.sku, **_item_values(item, cfg), **_active_values(item.active),
                            "InventoryItem": "tYES"}
    return {name: value for name, value in body.items() if value is not None}


def item_changes(item: Item, row: Mapping[str, Any], cfg: MappingConfig) -> dict[str, Any]:
    """The PATCH body that makes the SAP item ``row`` read back as ``item``; empty when it already does.

    Each field is compared the way the read mapping reads it: the unit through the unit map (an
    item without InventoryUOM reads as the default unit), flags by meaning (``tYES``/``Y``), texts
    stripped, active as Valid and not Frozen. A field to clear is sent as null."""
    wanted = _item_values(item, cfg)
    changes: dict[str, Any] = {}
    if _text(row, "ItemName") != item.name:
        changes["ItemName"] = wanted["ItemName"]
    if item_unit(row, cfg) != item.base_unit:
        changes["InventoryUOM"] = wanted["InventoryUOM"]
    for name, value in (("ManageBatchNumbers", item.batch_managed), ("ManageSerialNumbers", item.serial_managed)):
        if _yes(row.get(name)) != value:
            changes[name] = wanted[name]
    if _text(row, "BarCode") != item.barcode:
        changes["BarCode"] = item.barcode
    if cfg.spec_field and _text(row, cfg.spec_field) != item.spec:
        changes[cfg.spec_field] = item.spec
    if _item_active(row) != item.active:
        changes.update(_active_values(item.active))
    return changes


WAREHOUSE_COMPARED_FIELDS = ("WarehouseCode", "WarehouseName", "EnableBinLocations", "Inactive")


def warehouse_to_sap(warehouse: Warehouse, cfg: MappingConfig) -> dict[str, Any]:
    """The ``Warehouses`` body that creates ``warehouse`` (its code through the warehouse map)."""
    return {"WarehouseCode": cfg.sap_warehouse(warehouse.code), "WarehouseName": warehouse.name,
            "EnableBinLocations": _flag(warehouse.bin_managed), "Inactive": _flag(not warehouse.active)}


def warehouse_changes(warehouse: Warehouse, row: Mapping[str, Any], cfg: MappingConfig) -> dict[str, Any]:
    """The PATCH body that makes the SAP warehouse ``row`` read back as ``warehouse``; empty when equal."""
    changes: dict[str, Any] = {}
    if (_text(row, "WarehouseName") or _text(row, "WarehouseCode")) != warehouse.name:
        changes["WarehouseName"] = warehouse.name
    if _yes(row.get("EnableBinLocations")) != warehouse.bin_managed:
        changes["EnableBinLocations"] = _flag(warehouse.bin_managed)
    if (not _yes(row.get("Inactive"))) != warehouse.active:
        changes["Inactive"] = _flag(not warehouse.active)
    return changes


def bin_to_location(row: Mapping[str, Any], cfg: MappingConfig) -> Location:
    code = _required(row, "BinCode", "bin location")
    warehouse = _required(row, "Warehouse", f"bin {code!r}")
    return parse(Location, {
        "warehouse": cfg.our_warehouse(warehouse),
        "code": code,
        "name": _text(row, "Description"),
        "active": not _yes(row.get("Inactive")),
    }, units=cfg.units)


BIN_COMPARED_FIELDS = ("AbsEntry", "BinCode", "Warehouse", "Description", "Inactive")


def location_to_sap(location: Location, cfg: MappingConfig) -> dict[str, Any]:
    """The ``BinLocations`` body that creates ``location`` in its warehouse (through the warehouse
    map); the bin code is ours as it is, as :func:`bin_to_location` reads it back."""
    body = {"Warehouse": cfg.sap_warehouse(location.warehouse), "BinCode": location.code,
            "Inactive": _flag(not location.active)}
    if location.name is not None:
        body["Description"] = location.name
    return body


def location_changes(location: Location, row: Mapping[str, Any], cfg: MappingConfig) -> dict[str, Any]:
    """The PATCH body that makes the SAP bin ``row`` read back as ``location``; empty when equal."""
    changes: dict[str, Any] = {}
    if _text(row, "Description") != location.name:
        changes["Description"] = location.name
    if (not _yes(row.get("Inactive"))) != location.active:
        changes["Inactive"] = _flag(not location.active)
    return changes


def location_clash(location: Location, row: Mapping[str, Any], cfg: MappingConfig) -> MappingError | None:
    """A bin code is unique in the whole company: the same code in another warehouse is a clash."""
    warehouse = cfg.sap_warehouse(location.warehouse)
    if str(row.get("Warehouse")) != warehouse:
        return MappingError(f"bin code {location.code!r} already belongs to warehouse {row.get('Warehouse')!r}, not "
                            f"{warehouse!r} (bin codes are unique in the company)", field="OBIN.BinCode")
    return None


_ROLES = {"cSupplier": PartnerRole.supplier, "S": PartnerRole.supplier,
          "cCustomer": PartnerRole.customer, "C": PartnerRole.customer}


def partner_role(card_type: object) -> PartnerRole | None:
    """``cSupplier``/``S`` and ``cCustomer``/``C``; leads (``cLid``/``L``) are None."""
    return _ROLES.get(card_type) if isinstance(card_type, str) else None


def partner_to_partner(row: Mapping[str, Any], cfg: MappingConfig) -> Partner:
    code = _required(row, "CardCode", "business partner")
    role = partner_role(row.get("CardType"))
    if role is None:
        raise MappingError(f"business partner {code!r} has CardType {row.get('CardType')!r}, neither customer nor "
                           "supplier", field="CardType")
    return parse(Partner, {
        "code": code, "name": _text(row, "CardName") or code, "role": role,
        "modified_at": stamp_of(row, cfg).at,
    }, units=cfg.units)


# ---------------------------------------------------------------------------------------------
# Movements → documents

BinLookup = Callable[[str, str], int | None]  # (SAP warehouse, bin code) -> BinAbsEntry


def movement_to_document(movement: Movement, key: str, cfg: MappingConfig, *,
                         bins: BinLookup | None = None) -> tuple[str, dict[str, Any]]:
    """The entity set and body that create ``movement`` in SAP with ``key`` in the reference field.

    Quantities stay Decimal (the transport serialises them). Line warehouses go through the
    warehouse map; bins need ``bins`` to resolve a bin code to its ``BinAbsEntry``.
    """
    kind = movement.kind
    entity = DOCUMENT_FOR_KIND[kind]
    doc: dict[str, Any] = {"DocDate": movement.document_date.isoformat()}
    if entity == "StockTransfers":
        doc["DueDate"] = movement.document_date.isoformat()
    else:
        doc["DocDueDate"] = movement.document_date.isoformat()
    if entity in cfg.series:
        doc["Series"] = cfg.series[entity]
    doc[cfg.reference_field] = key
    if cfg.movement_reference_field:
        doc[cfg.movement_reference_field] = movement.reference
    if kind in MARKED_KINDS and kind in cfg.kind_markers:
        doc[cfg.kind_marker_field] = cfg.kind_markers[kind]
    if movement.memo:
        doc["Comments"] = movement.memo[:254]
    if entity in _PARTNER_DOCUMENTS:
        if movement.counterparty is None:
            raise MappingError(f"a {kind.value} needs a business partner", field="counterparty")
        doc["CardCode"] = movement.counterparty.code

    lines: list[dict[str, Any]] = []
    if entity == "StockTransfers":
        first = movement.lines[0]
        doc["FromWarehouse"] = cfg.sap_warehouse(first.from_warehouse or "")
        doc["ToWarehouse"] = cfg.sap_warehouse(first.to_warehouse or "")
    inbound = kind.direction == "in"
    for index, line in enumerate(movement.lines):
        out: dict[str, Any] = {"ItemCode": line.sku, "Quantity": line.quantity}
        if entity == "StockTransfers":
            source = cfg.sap_warehouse(line.from_warehouse or "")
            target = cfg.sap_warehouse(line.to_warehouse or "")
            out["FromWarehouseCode"] = source
            out["WarehouseCode"] = target
            allocations = []
            for side, wh, bin_code in (("batFromWarehouse", source, line.from_bin), ("batToWarehouse", target,
                                                                                     line.to_bin)):
                if bin_code:
                    allocations.append({"BinAbsEntry": _bin_entry(bins, wh, bin_code, index),
                                        "Quantity": line.quantity, "BinActionType": side,
                                        "SerialAndBatchNumbersBaseLine": 0 if line.lot else -1})
            if allocations:
                out["StockTransferLinesBinAllocations"] = allocations
        else:
            wh_code = line.to_warehouse if inbound else line.from_warehouse
            bin_code = line.to_bin if inbound else line.from_bin
            sap_wh = cfg.sap_warehouse(wh_code or "")
            out["WarehouseCode"] = sap_wh
            if inbound and cfg.send_prices and line.unit_cost is not None:
                out["UnitPrice"] = line.unit_cost
            if bin_code:
                out["DocumentLinesBinAllocations"] = [{
                    "BinAbsEntry": _bin_entry(bins, sap_wh, bin_code, index), "Quantity": line.quantity,
                    "AllowNegativeQuantity": "tNO", "SerialAndBatchNumbersBaseLine": 0 if line.lot else -1,
                    "BaseLineNumber": index,
                }]
        if line.lot:
            out["BatchNumbers"] = [{"BatchNumber": line.lot, "Quantity": line.quantity}]
        lines.append(out)
    doc[_LINES.get(entity, "DocumentLines")] = lines
    return entity, doc


def _bin_entry(bins: BinLookup | None, warehouse: str, code: str, index: int) -> int:
    entry = bins(warehouse, code) if bins is not None else None
    if entry is None:
        raise MappingError(f"line {index + 1}: bin {code!r} in warehouse {warehouse!r} is not known in SAP",
                           field=f"lines[{index}]", dependency=True)
    return entry


# ---------------------------------------------------------------------------------------------
# Documents → movements

UnitLookup = Callable[[str], str | None]  # ItemCode -> canonical unit
BinName = Callable[[int], str | None]  # BinAbsEntry -> bin code


def document_kind(entity: str, doc: Mapping[str, Any], cfg: MappingConfig) -> MovementKind:
    """The kind of a document: fixed by its entity set, or read from the marker where two or
    three kinds share one (count gain vs misc receipt; count loss vs scrap vs misc issue)."""
    if entity not in _DEFAULT_KIND:
        raise MappingError(f"{entity} is not a stock document this connector reads", field="entity")
    default = _DEFAULT_KIND[entity]
    marked = cfg.kind_from_marker(doc.get(cfg.kind_marker_field))
    if marked is not None and DOCUMENT_FOR_KIND[marked] == entity:
        return marked
    return default


def document_reference(entity: str, doc: Mapping[str, Any], cfg: MappingConfig) -> str:
    """The movement reference we wrote, else our key, else ``<entity>-<DocEntry>`` (a document
    made in SAP). A ``Reference1`` equal to the DocNum is SAP's own filling, not ours."""
    if cfg.movement_reference_field:
        ref = _text(doc, cfg.movement_reference_field)
        if ref and not (cfg.movement_reference_field == "Reference1" and ref == str(doc.get("DocNum"))):
            return ref
    ref = _text(doc, cfg.reference_field)
    if ref:
        return ref
    return f"{entity}-{_required(doc, 'DocEntry', entity)}"


def document_to_movement(entity: str, doc: Mapping[str, Any], cfg: MappingConfig, *,
                         item_units: UnitLookup | None = None, bin_names: BinName | None = None) -> Movement:
    """A stock document → Movement (SAP as the origin system)."""
    kind = document_kind(entity, doc, cfg)
    doc_entry = _required(doc, "DocEntry", entity)
    what = f"{entity}({doc_entry})"
    lines_field = _LINES.get(entity, "DocumentLines")
    rows = doc.get(lines_field)
    if not isinstance(rows, list) or not rows:
        raise MappingError(f"{what} has no {lines_field}", field=lines_field)
    inbound = kind.direction == "in"
    lines = []
    for index, row in enumerate(rows):
        if not isinstance(row, Mapping):
            raise MappingError(f"{what}: {lines_field}[{index}] is not an object", field=f"{lines_field}[{index}]")
        sku = _required(row, "ItemCode", f"{what} line {index + 1}")
        unit = None
        uom = row.get("UoMCode")
        if isinstance(uom, str) and uom.strip() and uom.strip().lower() != "manual":
            unit = cfg.our_unit(uom)
        if unit is None and item_units is not None:
            unit = item_units(sku)
        line: dict[str, Any] = {
            "line_no": int(row.get("LineNum", index)) + 1 if isinstance(row.get("LineNum"), int) else index + 1,
            "sku": sku,
            "quantity": _number(row, "Quantity"),
            "unit": unit or cfg.default_unit,
        }
        if entity == "StockTransfers":
            source = _text(row, "FromWarehouseCode") or _text(doc, "FromWarehouse")
            target = _text(row, "WarehouseCode") or _text(doc, "ToWarehouse")
            line["from_warehouse"] = cfg.our_warehouse(source) if source else None
            line["to_warehouse"] = cfg.our_warehouse(target) if target else None
            for alloc in row.get("StockTransferLinesBinAllocations") or ():
                side = "from_bin" if alloc.get("BinActionType") == "batFromWarehouse" else "to_bin"
                if bin_names is not None and alloc.get("BinAbsEntry") is not None:
                    line[side] = bin_names(int(alloc["BinAbsEntry"]))
        else:
            wh = _text(row, "WarehouseCode")
            side = "to" if inbound else "from"
            line[f"{side}_warehouse"] = cfg.our_warehouse(wh) if wh else None
            allocations = row.get("DocumentLinesBinAllocations") or ()
            if allocations and bin_names is not None and allocations[0].get("BinAbsEntry") is not None:
                line[f"{side}_bin"] = bin_names(int(allocations[0]["BinAbsEntry"]))
            if inbound and row.get("UnitPrice") is not None:
                price = _number(row, "UnitPrice")
                line["unit_cost"] = price if price > 0 else None
        batches = row.get("BatchNumbers") or ()
        if batches and isinstance(batches[0], Mapping):
            line["lot"] = _text(batches[0], "BatchNumber")
        lines.append(line)

    counterparty = None
    card = _text(doc, "CardCode")
    role = kind.partner_role
    if card and role is not None:
        counterparty = {"code": card, "name": _text(doc, "CardName") or card, "role": role}
    memo = _text(doc, "Comments")
    modified = stamp_of(doc, cfg).at
    data = {
        "reference": document_reference(entity, doc, cfg),
        "kind": kind,
        "document_date": sap_date(doc.get("DocDate"), field_name="DocDate"),
        "lines": lines,
        "counterparty": counterparty,
        "source_system": cfg.source_system,
        "source_document": f"{entity}({doc_entry})" + (f" #{doc['DocNum']}" if doc.get("DocNum") is not None else ""),
        "memo": memo,
        "modified_at": modified,
    }
    return parse(Movement, data, units=cfg.units)
