"""Pure functions: reference ERP rows ⇄ canonical records. No HTTP here."""
from __future__ import annotations

from collections.abc import Mapping
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from canonical import Item, Movement, MovementKind, Partner, StockBalance, Warehouse

KIND_TO_TYPE: dict[MovementKind, str] = {
    MovementKind.purchase_receipt: "GRN",
    MovementKind.purchase_return: "PRT",
    MovementKind.sales_issue: "DN",
    MovementKind.sales_return: "SRT",
    MovementKind.transfer: "TRF",
    MovementKind.count_gain: "CNT+",
    MovementKind.count_loss: "CNT-",
    MovementKind.misc_receipt: "MRC",
    MovementKind.misc_issue: "MIS",
    MovementKind.scrap: "SCR",
}
TYPE_TO_KIND = {v: k for k, v in KIND_TO_TYPE.items()}

Row = Mapping[str, Any]


def modified(row: Row) -> datetime:
    return datetime.fromisoformat(str(row["modified"]))


def item(row: Row) -> Item:
    return Item(sku=row["code"], name=row["name"], base_unit=row["uom"], spec=row.get("spec"),
                barcode=row.get("barcode"), category=row.get("group"), batch_managed=bool(row.get("lot_control")),
                modified_at=modified(row))


def warehouse(row: Row) -> Warehouse:
    return Warehouse(code=row["code"], name=row["name"], bin_managed=bool(row.get("bins")),
                     modified_at=modified(row))


def item_to_row(i: Item) -> dict[str, Any]:
    return {"code": i.sku, "name": i.name, "uom": i.base_unit, "spec": i.spec, "barcode": i.barcode,
            "group": i.category, "lot_control": i.batch_managed}


def warehouse_to_row(w: Warehouse) -> dict[str, Any]:
    # the reference ERP keeps a warehouse's bins as a list; a canonical Warehouse only says whether
    # it is bin-managed, so bins are created by the vendor's own UI, never by us
    return {"code": w.code, "name": w.name, "bins": []}


def partner(row: Row) -> Partner:
    return Partner(code=row["code"], name=row["name"], role=row["role"], modified_at=modified(row))


def balance(row: Row) -> StockBalance:
    return StockBalance(sku=row["item"], warehouse=row["warehouse"], bin=row.get("bin"), lot=row.get("lot"),
                        on_hand=Decimal(str(row["qty"])), unit=row["uom"], as_of=modified(row))


def movement_to_document(m: Movement, key: str) -> dict[str, Any]:
    return {
        "type": KIND_TO_TYPE[m.kind], "ext_key": key, "reference": m.reference,
        "date": m.document_date.isoformat(), "partner": m.counterparty.code if m.counterparty else None,
        "memo": m.memo,
        "lines": [{"line": line.line_no, "item": line.sku, "qty": format(line.quantity, "f"), "uom": line.unit,
                   "from_wh": line.from_warehouse, "to_wh": line.to_warehouse} for line in m.lines],
    }


def document_to_movement(row: Row) -> Movement:
    party = row.get("partner")
    return Movement(
        reference=row.get("reference") or row["number"], kind=TYPE_TO_KIND[row["type"]],
        document_date=date.fromisoformat(row["date"]),
        counterparty=Partner(code=party["code"], name=party["name"], role=party["role"]) if party else None,
        lines=[{"line_no": line["line"], "sku": line["item"], "quantity": Decimal(str(line["qty"])),
                "unit": line["uom"], "from_warehouse": line.get("from_wh"), "to_warehouse": line.get("to_wh")}
               for line in row["lines"]],
        source_system="reference", source_document=row["number"], memo=row.get("memo"), modified_at=modified(row),
    )
