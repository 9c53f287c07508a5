"""K3Cloud records ⇄ canonical models. Pure functions: no HTTP, no clock, no settings file.

Everything tenant-specific (organisation numbers, bill types, the field that carries our
idempotency key, unit numbers, custom fields, the server's time zone) arrives in a
:class:`MappingConfig`, built by the connector from its Settings.

Query rows arrive as arrays in ``FieldKeys`` order; the field lists below (``*_fields``) are the
single source of those orders, and :func:`row_dict` zips a row back into ``{key: value}``.
Server datetimes are zone-less server-local times (kingdee.md §6): they are read in
``MappingConfig.zone``.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, tzinfo
from decimal import Decimal
from types import MappingProxyType
from typing import Any
from zoneinfo import ZoneInfo

from canonical import Item, Movement, MovementKind, MovementLine, Partner, PartnerRole, StockBalance, Warehouse, \
    to_decimal

__all__ = [
    "BILL_SPECS", "BillSpec", "MappingConfig", "MappingError", "balance_rows_to_balances", "bill_fields",
    "bill_rows_to_movement", "customer_to_partner", "item_to_material", "material_changes", "material_fields",
    "material_lookup_fields", "material_to_item", "movement_to_bill", "parse_server_datetime", "row_dict",
    "stock_changes", "stock_fields", "stock_lookup_fields", "stock_to_warehouse", "supplier_to_partner",
    "update_model", "warehouse_to_stock",
]


class MappingError(ValueError):
    """A vendor record that cannot become a canonical one (or a movement that cannot become a bill)."""

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


DEFAULT_BILL_TYPES: Mapping[str, str] = MappingProxyType({
    "purchase_receipt": "RKD01_SYS",
    "sales_issue": "XSCKD01_SYS",
    "sales_return": "XSTHD01_SYS",
    "purchase_return": "TLD01_SYS",
    "transfer": "ZJDB01_SYS",
    "count_gain": "PY01_SYS",
    "count_loss": "PK01_SYS",
    "misc_receipt": "QTRKD01_SYS",
    "misc_issue": "QTCKD01_SYS",
})


@dataclass(frozen=True)
class MappingConfig:
    """What mapping needs to know about one connection."""

    stock_org: str = "100"
    purchase_org: str = "100"
    sale_org: str = "100"
    zone: tzinfo = field(default_factory=lambda: ZoneInfo("Asia/Shanghai"))
    # kind -> bill type number; scrap falls back to misc_issue's and is told apart by the marker
    bill_types: Mapping[str, str] = field(default_factory=lambda: dict(DEFAULT_BILL_TYPES))
    scrap_bill_type: str | None = None
    key_field: str = "FNote"
    # head field the movement's reference is written to and read back from (None: not written;
    # reading then takes FBillNo). FBillNo needs a numbering rule that allows manual numbers.
    reference_field: str | None = "FBillNo"
    scrap_marker: str = "#scrap"
    scrap_marker_field: str = "FEntryNote"  # entry field of STK_MisDelivery lines marking scrap
    barcode_field: str | None = "FBarCode"
    category_field: str | None = None  # e.g. "FMaterialGroup.FNumber"
    # canonical unit code -> Kingdee unit number (FNumber); unlisted units are sent as they are
    units: Mapping[str, str] = field(default_factory=dict)
    # canonical item attribute name -> BD_MATERIAL field key read into Item.attributes
    material_attribute_fields: Mapping[str, str] = field(default_factory=dict)
    # constant head fields written on every bill (tenant-required custom fields), {"F_ABC_Dept": {"FNumber": "D1"}}
    head_fields: Mapping[str, Any] = field(default_factory=dict)
    source_system: str = "kingdee"

    def bill_type(self, kind: MovementKind) -> str:
        if kind is MovementKind.scrap:
            return self.scrap_bill_type or self.bill_types.get("misc_issue", DEFAULT_BILL_TYPES["misc_issue"])
        return self.bill_types.get(kind.value, DEFAULT_BILL_TYPES[kind.value])

    def kingdee_unit(self, unit: str) -> str:
        return self.units.get(unit, unit)

    def canonical_unit(self, number: str) -> str:
        for code, kd in self.units.items():
            if kd.lower() == number.lower():
                return code
        return number.strip().upper()

    @property
    def writes_reference(self) -> bool:
        return self.reference_field is not None and self.reference_field.lower() != self.key_field.lower()

    @property
    def note_is_taken(self) -> bool:
        """FNote holds the key or the reference, so a memo has nowhere to go."""
        taken = {self.key_field.lower()} | ({self.reference_field.lower()} if self.writes_reference else set())
        return "fnote" in taken  # type: ignore[union-attr]


# ---------------------------------------------------------------------------------------------
# Values


def row_dict(keys: Sequence[str], row: Sequence[Any]) -> dict[str, Any]:
    return dict(zip(keys, row, strict=True))


def _text(value: Any) -> str | None:
    """A base-data number or text: "" / null / 0-as-missing-id → None."""
    if type(value) is str:  # the common case first (read path: every field of every row)
        return value.strip() or None
    if value is None:
        return None
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (int, float)):
        return None if value == 0 else str(value)
    text = str(value).strip()
    return text or None


def _required(row: Mapping[str, Any], key: str) -> str:
    value = _text(row.get(key))
    if value is None:
        raise MappingError(f"{key} is empty", field=key)
    return value


def _flag(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)):
        return value != 0
    return str(value).strip().lower() in ("true", "1", "y", "yes")


def _decimal(row: Mapping[str, Any], key: str) -> Decimal:
    value = row.get(key)
    try:
        return to_decimal(value)
    except (TypeError, ValueError, ArithmeticError) as exc:
        raise MappingError(f"{key} is not a number ({value!r}): {exc}", field=key) from None


def parse_server_datetime(value: Any, zone: tzinfo) -> datetime | None:
    """``2024-12-13T09:18:04.96`` (server-local, no zone) → an aware datetime in ``zone``."""
    text = _text(value)
    if text is None:
        return None
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise MappingError(f"not an ISO datetime: {text!r}") from None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=zone)


def _modified(row: Mapping[str, Any], cfg: MappingConfig) -> datetime | None:
    try:
        return parse_server_datetime(row.get("FModifyDate"), cfg.zone)
    except MappingError as exc:
        raise MappingError(f"FModifyDate: {exc}", field="FModifyDate") from None


# ---------------------------------------------------------------------------------------------
# Master data


def material_fields(cfg: MappingConfig) -> list[str]:
    base = ["FMaterialId", "FNumber", "FName", "FSpecification", "FBaseUnitId.FNumber", "FIsBatchManage",
            "FForbidStatus", "FModifyDate"]
    extra = [cfg.barcode_field, cfg.category_field, *cfg.material_attribute_fields.values()]
    return base + list(dict.fromkeys(k for k in extra if k and k not in base))


def material_to_item(row: Mapping[str, Any], cfg: MappingConfig) -> Item:
    unit = _required(row, "FBaseUnitId.FNumber")
    attributes = {name: text for name, key in cfg.material_attribute_fields.items()
                  if (text := _text(row.get(key))) is not None}
    return Item(
        sku=_required(row, "FNumber"),
        name=_required(row, "FName"),
        spec=_text(row.get("FSpecification")),
        base_unit=cfg.canonical_unit(unit),
        barcode=_text(row.get(cfg.barcode_field)) if cfg.barcode_field else None,
        category=_text(row.get(cfg.category_field)) if cfg.category_field else None,
        batch_managed=_flag(row.get("FIsBatchManage")),
        active=_text(row.get("FForbidStatus")) != "B",
        attributes=attributes,
        modified_at=_modified(row, cfg),
    )


def stock_fields(cfg: MappingConfig) -> list[str]:
    return ["FStockId", "FNumber", "FName", "FUseOrgId.FNumber", "FIsOpenLocation", "FForbidStatus", "FModifyDate"]


def stock_to_warehouse(row: Mapping[str, Any], cfg: MappingConfig) -> Warehouse:
    return Warehouse(
        code=_required(row, "FNumber"),
        name=_required(row, "FName"),
        organisation=_text(row.get("FUseOrgId.FNumber")),
        bin_managed=_flag(row.get("FIsOpenLocation")),
        active=_text(row.get("FForbidStatus")) != "B",
        modified_at=_modified(row, cfg),
    )


# ---------------------------------------------------------------------------------------------
# Master data written (upsert): the inverse of the two readers above
#
# A Save model names base data by number (``{"FNumber": ...}``, kingdee.md §7); a dotted read key
# such as ``FMaterialGroup.FNumber`` is written as ``{"FMaterialGroup": {"FNumber": ...}}``. Empty
# canonical values are written as "" so a re-run compares equal to what the reader maps to None.
# ``FForbidStatus`` (Item/Warehouse ``active``) is not a Save field: the connector forbids or
# enables with an operation, and the ``*_changes`` functions below leave it out.

MATERIAL_PK = "FMaterialId"
STOCK_PK = "FStockId"


def save_key(read_key: str) -> str:
    """The Save model key of a read field key: ``FMaterialGroup.FNumber`` → ``FMaterialGroup``."""
    return read_key.partition(".")[0]


def _put(model: dict[str, Any], read_key: str, value: str | None) -> None:
    head, _, sub = read_key.partition(".")
    model[head] = {sub: value or ""} if sub else (value or "")


def _orgs(cfg: MappingConfig) -> dict[str, Any]:
    return {"FCreateOrgId": {"FNumber": cfg.stock_org}, "FUseOrgId": {"FNumber": cfg.stock_org}}


def item_to_material(item: Item, cfg: MappingConfig) -> dict[str, Any]:
    """The BD_MATERIAL Save ``Model`` of a new material (no FMaterialId: K3Cloud creates one)."""
    model: dict[str, Any] = {
        "FNumber": item.sku,
        "FName": item.name,
        "FSpecification": item.spec or "",
        "FBaseUnitId": {"FNumber": cfg.kingdee_unit(item.base_unit)},
        "FIsBatchManage": bool(item.batch_managed),
    }
    if cfg.barcode_field:
        _put(model, cfg.barcode_field, item.barcode)
    if cfg.category_field:
        _put(model, cfg.category_field, item.category)
    for name, key in cfg.material_attribute_fields.items():
        _put(model, key, _text(item.attributes.get(name)))
    model.update(_orgs(cfg))
    return model


def warehouse_to_stock(warehouse: Warehouse, cfg: MappingConfig) -> dict[str, Any]:
    """The BD_STOCK Save ``Model`` of a new warehouse, in the connection's stock organisation
    (``Warehouse.organisation`` is read from FUseOrgId but never chooses where to write)."""
    return {"FNumber": warehouse.code, "FName": warehouse.name, "FIsOpenLocation": bool(warehouse.bin_managed),
            **_orgs(cfg)}


def material_lookup_fields(cfg: MappingConfig) -> list[str]:
    """FieldKeys of the lookup before writing: what the reader maps, plus the life-cycle status."""
    return [*material_fields(cfg), "FDocumentStatus"]


def stock_lookup_fields(cfg: MappingConfig) -> list[str]:
    return [*stock_fields(cfg), "FDocumentStatus"]


def _same_text(vendor: Any, ours: Any) -> bool:
    return (_text(vendor) or "") == (_text(ours) or "")


def material_changes(item: Item, row: Mapping[str, Any], cfg: MappingConfig) -> list[str]:
    """Save keys of the mapped fields whose values differ between ``item`` and its BD_MATERIAL
    lookup row (``material_lookup_fields`` order zipped by :func:`row_dict`); [] when equal."""
    changed = []
    if not _same_text(row.get("FName"), item.name):
        changed.append("FName")
    if not _same_text(row.get("FSpecification"), item.spec):
        changed.append("FSpecification")
    unit = (_text(row.get("FBaseUnitId.FNumber")) or "").casefold()
    if unit != cfg.kingdee_unit(item.base_unit).casefold():
        changed.append("FBaseUnitId")
    if _flag(row.get("FIsBatchManage")) != bool(item.batch_managed):
        changed.append("FIsBatchManage")
    pairs = [(cfg.barcode_field, item.barcode), (cfg.category_field, item.category)]
    pairs += [(key, item.attributes.get(name)) for name, key in cfg.material_attribute_fields.items()]
    for key, ours in pairs:
        if key and not _same_text(row.get(key), ours) and save_key(key) not in changed:
            changed.append(save_key(key))
    return changed


def stock_changes(warehouse: Warehouse, row: Mapping[str, Any], cfg: MappingConfig) -> list[str]:
    """Save keys of the mapped BD_STOCK fields that differ; [] when equal."""
    changed = []
    if not _same_text(row.get("FName"), warehouse.name):
        changed.append("FName")
    if _flag(row.get("FIsOpenLocation")) != bool(warehouse.bin_managed):
        changed.append("FIsOpenLocation")
    return changed


def update_model(model: Mapping[str, Any], pk: str, record_id: int | str, changed: Sequence[str]) -> dict[str, Any]:
    """The Save ``Model`` that modifies an existing record: its internal id, its number and the
    changed fields only (sent with ``NeedUpDateFields``, so nothing else is touched)."""
    out: dict[str, Any] = {pk: _id_value(record_id), "FNumber": model["FNumber"]}
    for key in changed:
        out[key] = model[key]
    return out


def _id_value(record_id: int | str) -> int | str:
    text = str(record_id)
    return int(text) if text.isdigit() else text


PARTNER_FIELDS = ["FNumber", "FName", "FForbidStatus", "FModifyDate"]


def _partner(row: Mapping[str, Any], cfg: MappingConfig, role: PartnerRole) -> Partner:
    return Partner(code=_required(row, "FNumber"), name=_required(row, "FName"), role=role,
                   modified_at=_modified(row, cfg))


def supplier_to_partner(row: Mapping[str, Any], cfg: MappingConfig) -> Partner:
    return _partner(row, cfg, PartnerRole.supplier)


def customer_to_partner(row: Mapping[str, Any], cfg: MappingConfig) -> Partner:
    return _partner(row, cfg, PartnerRole.customer)


# ---------------------------------------------------------------------------------------------
# Balances (STK_Inventory)

BALANCE_FIELDS = ["FMaterialId.FNumber", "FStockId.FNumber", "FStockLocId.FNumber", "FLot.FNumber",
                  "FBaseUnitId.FNumber", "FBaseQty", "FAVBQty"]
BALANCE_KEY_FIELDS = ("FMaterialId.FNumber", "FStockId.FNumber", "FStockLocId.FNumber", "FLot.FNumber")


def balance_key(row: Mapping[str, Any]) -> tuple[str | None, ...]:
    return tuple(_text(row.get(k)) for k in BALANCE_KEY_FIELDS)


def balance_rows_to_balances(rows: Iterable[Mapping[str, Any]], cfg: MappingConfig, *,
                             as_of: datetime) -> list[StockBalance]:
    """One balance per material/stock/location/lot: ``FBaseQty`` summed (rows differ by stock status,
    owner, keeper...), ``FAVBQty`` summed into ``available``. Rows in any order."""
    sums: dict[tuple[str | None, ...], dict[str, Any]] = {}
    for row in rows:
        key = balance_key(row)
        if key[0] is None or key[1] is None:
            raise MappingError("an STK_Inventory row has no material or stock number", field="FMaterialId.FNumber")
        entry = sums.setdefault(key, {"on_hand": Decimal(0), "available": None,
                                      "unit": _required(row, "FBaseUnitId.FNumber")})
        entry["on_hand"] += _decimal(row, "FBaseQty")
        if row.get("FAVBQty") is not None:
            entry["available"] = (entry["available"] or Decimal(0)) + _decimal(row, "FAVBQty")
    return [
        StockBalance(sku=k[0], warehouse=k[1], bin=k[2], lot=k[3], on_hand=v["on_hand"], available=v["available"],
                     unit=cfg.canonical_unit(v["unit"]), as_of=as_of)
        for k, v in sums.items()
    ]


# ---------------------------------------------------------------------------------------------
# Stock bills


@dataclass(frozen=True)
class BillSpec:
    """Where one movement kind lives in K3Cloud (kingdee.md §9)."""

    form_id: str
    entry: str
    qty: str
    material: str = "FMaterialId"
    unit: str = "FUnitID"
    stock: str = "FStockId"          # the warehouse side the kind uses (transfers: the source)
    loc: str = "FStockLocId"
    lot: str = "FLot"
    partner: str | None = None
    # head organisation fields -> which configured org: "stock", "purchase" or "sale"
    orgs: tuple[tuple[str, str], ...] = (("FStockOrgId", "stock"),)
    head_constants: tuple[tuple[str, Any], ...] = ()
    # transfers only
    dest_stock: str | None = None
    dest_loc: str | None = None
    dest_lot: str | None = None
    dest_material: str | None = None

    def entry_id(self) -> str:
        return f"{self.entry}_FEntryID"

    def entry_seq(self) -> str:
        return f"{self.entry}_FSeq"


BILL_SPECS: Mapping[MovementKind, BillSpec] = MappingProxyType({
    MovementKind.purchase_receipt: BillSpec(
        "STK_InStock", "FInStockEntry", "FRealQty", partner="FSupplierId",
        orgs=(("FStockOrgId", "stock"), ("FPurchaseOrgId", "purchase"))),
    MovementKind.sales_issue: BillSpec(
        "SAL_OUTSTOCK", "FEntity", "FRealQty", material="FMaterialID", stock="FStockID", partner="FCustomerID",
        orgs=(("FSaleOrgId", "sale"), ("FStockOrgId", "stock"))),
    MovementKind.sales_return: BillSpec(
        "SAL_RETURNSTOCK", "FEntity", "FRealQty", partner="FRetcustId",
        orgs=(("FSaleOrgId", "sale"), ("FStockOrgId", "stock"))),
    MovementKind.purchase_return: BillSpec(
        "PUR_MRB", "FPURMRBENTRY", "FRMREALQTY", material="FMATERIALID", partner="FSupplierID",
        orgs=(("FStockOrgId", "stock"), ("FPurchaseOrgId", "purchase"))),
    MovementKind.transfer: BillSpec(
        "STK_TransferDirect", "FBillEntry", "FQty", stock="FSrcStockId", loc="FSrcStockLocId",
        orgs=(("FStockOutOrgId", "stock"), ("FStockOrgId", "stock")),
        head_constants=(("FTransferDirect", "GENERAL"), ("FTransferBizType", "InnerOrgTransfer"),
                        ("FBizType", "NORMAL")),
        dest_stock="FDestStockId", dest_loc="FDestStockLocId", dest_lot="FDestLot", dest_material="FDestMaterialId"),
    MovementKind.count_gain: BillSpec("STK_StockCountGain", "FBillEntry", "FGainQty"),
    MovementKind.count_loss: BillSpec("STK_StockCountLoss", "FBillEntry", "FLossQty"),
    MovementKind.misc_receipt: BillSpec("STK_MISCELLANEOUS", "FEntity", "FQty",
                                        head_constants=(("FStockDirect", "GENERAL"),)),
    MovementKind.misc_issue: BillSpec("STK_MisDelivery", "FEntity", "FQty"),
    MovementKind.scrap: BillSpec("STK_MisDelivery", "FEntity", "FQty"),
})

# One form is read once even when two kinds share it (misc issue and scrap).
READ_FORMS: tuple[tuple[str, MovementKind], ...] = tuple(
    (spec.form_id, kind) for kind, spec in BILL_SPECS.items() if kind is not MovementKind.scrap)


def _ref(number: str | None) -> dict[str, str] | None:
    return None if number is None else {"FNumber": number}


def movement_to_bill(movement: Movement, key: str, cfg: MappingConfig) -> tuple[str, dict[str, Any]]:
    """(form id, Save ``Model``) for ``movement``, carrying ``key`` in the configured key field.

    The key field holds exactly the key (``find`` compares with ``=``, never LIKE); the reference
    goes to ``reference_field`` (the bill number by default) so it reads back unchanged. A scrap
    issue is an STK_MisDelivery bill with the scrap bill type when one is configured, else with
    ``scrap_marker`` in each line's ``scrap_marker_field`` (FEntryNote). The memo goes to ``FNote``
    unless FNote already holds the key or the reference (then it is not written).
    """
    spec = BILL_SPECS[movement.kind]
    orgs = {"stock": cfg.stock_org, "purchase": cfg.purchase_org, "sale": cfg.sale_org}
    model: dict[str, Any] = {
        "FBillTypeID": {"FNumber": cfg.bill_type(movement.kind)},
        "FDate": movement.document_date.isoformat(),
    }
    for name, which in spec.orgs:
        model[name] = {"FNumber": orgs[which]}
    for name, value in spec.head_constants:
        model[name] = value
    for name, value in cfg.head_fields.items():
        model[name] = value
    if spec.partner is not None:
        if movement.counterparty is None:
            raise MappingError(f"a {movement.kind.value} needs a counterparty", field="counterparty")
        model[spec.partner] = {"FNumber": movement.counterparty.code}
    if cfg.writes_reference:
        model[cfg.reference_field] = movement.reference  # type: ignore[index]
    if movement.memo and not cfg.note_is_taken:
        model["FNote"] = movement.memo
    model[cfg.key_field] = key
    scrap_mark = movement.kind is MovementKind.scrap and not cfg.scrap_bill_type

    entries = []
    for line in movement.lines:
        entry: dict[str, Any] = {
            spec.material: {"FNumber": line.sku},
            spec.unit: {"FNumber": cfg.kingdee_unit(line.unit)},
            spec.qty: _number(line.quantity),
        }
        if movement.kind is MovementKind.transfer:
            assert spec.dest_stock and spec.dest_loc and spec.dest_lot and spec.dest_material
            entry[spec.dest_material] = {"FNumber": line.sku}
            entry[spec.stock] = _ref(line.from_warehouse)
            entry[spec.dest_stock] = _ref(line.to_warehouse)
            if line.from_bin:
                entry[spec.loc] = _ref(line.from_bin)
            if line.to_bin:
                entry[spec.dest_loc] = _ref(line.to_bin)
            if line.lot:
                entry[spec.lot] = _ref(line.lot)
                entry[spec.dest_lot] = _ref(line.lot)
        else:
            inbound = movement.kind.direction == "in"
            warehouse = line.to_warehouse if inbound else line.from_warehouse
            bin_code = line.to_bin if inbound else line.from_bin
            entry[spec.stock] = _ref(warehouse)
            if bin_code:
                entry[spec.loc] = _ref(bin_code)
            if line.lot:
                entry[spec.lot] = _ref(line.lot)
            if scrap_mark:
                entry[cfg.scrap_marker_field] = cfg.scrap_marker
        entries.append(entry)
    model[spec.entry] = entries
    return spec.form_id, model


def _number(value: Decimal) -> int | float | str:
    """A quantity as JSON: an int when whole, else the exact decimal text (K3Cloud accepts numeric strings)."""
    if value == value.to_integral_value():
        return int(value)
    return format(value.normalize(), "f")


def bill_fields(spec: BillSpec, cfg: MappingConfig) -> list[str]:
    """The ExecuteBillQuery FieldKeys for reading ``spec``'s bills, one row per entry line."""
    keys = ["FID", "FBillNo", "FDate", "FModifyDate", "FDocumentStatus", "FBillTypeID.FNumber", "FNote"]
    for extra in (cfg.key_field, cfg.reference_field):
        if extra and extra.lower() not in {k.lower() for k in keys}:
            keys.append(extra)
    if spec.partner:
        keys += [f"{spec.partner}.FNumber", f"{spec.partner}.FName"]
    keys += [spec.entry_id(), spec.entry_seq(), f"{spec.material}.FNumber", f"{spec.unit}.FNumber", spec.qty,
             f"{spec.stock}.FNumber", f"{spec.loc}.FNumber", f"{spec.lot}.FNumber"]
    if spec.dest_stock:
        keys += [f"{spec.dest_stock}.FNumber", f"{spec.dest_loc}.FNumber"]
    if spec.form_id == BILL_SPECS[MovementKind.scrap].form_id and not cfg.scrap_bill_type:
        keys.append(cfg.scrap_marker_field)
    return keys


def bill_kind(spec_kind: MovementKind, rows: Sequence[Mapping[str, Any]], cfg: MappingConfig) -> MovementKind:
    """Scrap and misc issue share STK_MisDelivery: scrap is its bill type, or the marker on its lines."""
    if spec_kind is not MovementKind.misc_issue:
        return spec_kind
    if cfg.scrap_bill_type:
        return MovementKind.scrap if _text(rows[0].get("FBillTypeID.FNumber")) == cfg.scrap_bill_type else spec_kind
    if any(_text(r.get(cfg.scrap_marker_field)) == cfg.scrap_marker for r in rows):
        return MovementKind.scrap
    return spec_kind


def bill_reference(head: Mapping[str, Any], cfg: MappingConfig) -> str:
    """The movement reference of a bill: the reference field when set and filled, else the bill number."""
    if cfg.writes_reference:
        value = _text(head.get(cfg.reference_field))  # type: ignore[arg-type]
        if value is not None:
            return value
    return _required(head, "FBillNo")


def bill_rows_to_movement(kind: MovementKind, rows: Sequence[Mapping[str, Any]], cfg: MappingConfig) -> Movement:
    """One audited bill (its query rows, one per entry line, all with the same FID) → a Movement."""
    if not rows:
        raise MappingError("a bill without rows")
    spec = BILL_SPECS[kind]
    head = rows[0]
    fids = {str(r.get("FID")) for r in rows}
    if len(fids) != 1:
        raise MappingError(f"rows of several bills grouped together: FID {sorted(fids)}", field="FID")
    kind = bill_kind(kind, rows, cfg)
    number = _required(head, "FBillNo")
    reference = bill_reference(head, cfg)
    doc_date = parse_server_datetime(head.get("FDate"), cfg.zone)
    if doc_date is None:
        raise MappingError("FDate is empty", field="FDate")
    counterparty = None
    if spec.partner:
        code = _text(head.get(f"{spec.partner}.FNumber"))
        if code is not None:
            role = kind.partner_role or PartnerRole.both
            counterparty = Partner(code=code, name=_text(head.get(f"{spec.partner}.FName")) or code, role=role)
    memo = None if cfg.note_is_taken else _text(head.get("FNote"))
    lines = []
    ordered = sorted(rows, key=lambda r: (_seq(r.get(spec.entry_seq())), str(r.get(spec.entry_id()))))
    for index, row in enumerate(ordered, start=1):
        seq = _seq(row.get(spec.entry_seq()))
        line_no = seq if seq > 0 else index
        warehouse = _text(row.get(f"{spec.stock}.FNumber"))
        bin_code = _text(row.get(f"{spec.loc}.FNumber"))
        values: dict[str, Any] = {
            "line_no": line_no,
            "sku": _required(row, f"{spec.material}.FNumber"),
            "quantity": _decimal(row, spec.qty),
            "unit": cfg.canonical_unit(_required(row, f"{spec.unit}.FNumber")),
            "lot": _text(row.get(f"{spec.lot}.FNumber")),
        }
        if kind is MovementKind.transfer:
            values.update(from_warehouse=warehouse, from_bin=bin_code,
                          to_warehouse=_text(row.get(f"{spec.dest_stock}.FNumber")),
                          to_bin=_text(row.get(f"{spec.dest_loc}.FNumber")))
        elif kind.direction == "in":
            values.update(to_warehouse=warehouse, to_bin=bin_code)
        else:
            values.update(from_warehouse=warehouse, from_bin=bin_code)
        lines.append(MovementLine(**values))
    modified = _modified(head, cfg)
    return Movement(
        reference=reference,
        kind=kind,
        document_date=doc_date.date() if isinstance(doc_date, datetime) else doc_date,
        lines=tuple(lines),
        counterparty=counterparty,
        source_system=cfg.source_system,
        source_document=number,
        memo=memo,
        modified_at=modified,
    )


def _seq(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0


def document_date_of(value: date) -> str:
    return value.isoformat()
