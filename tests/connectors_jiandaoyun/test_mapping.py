"""Pure mapping of Jiandaoyun records ⇄ canonical models (resolved field names = the reference app's)."""
from __future__ import annotations

import json
from datetime import UTC, date, datetime
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from canonical import Item, Movement, MovementKind, Partner, Warehouse
from connectors.jiandaoyun import mapping as m
from connectors.jiandaoyun.client import encode
from connectors.jiandaoyun.settings import (
    DEFAULT_KINDS,
    ItemForm,
    MovementForm,
    WarehouseForm,
)

SHANGHAI = ZoneInfo("Asia/Shanghai")
# resolved names as widget/list gives them for the simulator's reference app
ITEMS = ItemForm(sku="item_code", name="item_name", spec="spec", unit="unit", category="category",
                 barcode="barcode", batch_managed="batch_managed", status="status")
WAREHOUSES = WarehouseForm(code="_widget_1669106585401", name="_widget_1669106585402",
                           bin_managed="_widget_1669106585404", status="_widget_1669106585405")
MOVEMENTS = MovementForm(**{name: f"_w_{name}" for name in MovementForm.model_fields
                            if name not in ("entry_id", "kinds")})


def as_read(data: dict) -> dict:
    """What a read returns for a written ``data``: values unwrapped, subform rows too."""
    out = {}
    for key, wrapped in data.items():
        value = wrapped["value"]
        if isinstance(value, list) and value and isinstance(value[0], dict):
            value = [{k: v["value"] for k, v in row.items()} for row in value]
        out[key] = value
    return out


def through_json(record: dict) -> dict:
    """The record as it arrives over the wire: encoded exactly, parsed with parse_float=Decimal."""
    return json.loads(encode(record), parse_float=Decimal)


def test_item_round_trip_and_flags() -> None:
    item = Item(sku="TS-001", name="运动T恤", spec="M 白色", base_unit="PCS", category="服装", barcode="690",
                batch_managed=True, active=False)
    row = {**as_read(m.wrap(m.item_values(item, ITEMS))), "_id": "x" * 24, "updateTime": "2026-01-01T00:00:00.000Z"}
    back = m.item_from_record(row, ITEMS)
    assert back.replace(modified_at=None) == item
    assert back.modified_at == datetime(2026, 1, 1, tzinfo=UTC)
    assert row["batch_managed"] == "是" and row["status"] == "停用"


def test_warehouse_round_trip() -> None:
    warehouse = Warehouse(code="WH03", name="退货仓", bin_managed=True)
    back = m.warehouse_from_record(as_read(m.wrap(m.warehouse_values(warehouse, WAREHOUSES))), WAREHOUSES)
    assert back == warehouse


@pytest.mark.parametrize(("row", "field"), [
    ({"item_name": "x", "unit": "PCS"}, "item_code"),
    ({"item_code": "A", "item_name": "x", "unit": "PCS", "batch_managed": "maybe"}, "batch_managed"),
    ({"item_code": "A", "item_name": "x", "unit": "PCS", "updateTime": "yesterday"}, "updateTime"),
])
def test_bad_items_name_the_field(row, field) -> None:
    with pytest.raises(m.MappingError) as failed:
        m.item_from_record(row, ITEMS)
    assert failed.value.field == field and field in str(failed.value)


def _movement(kind: MovementKind, qty: Decimal = Decimal("1.5")) -> Movement:
    out_sign, in_sign = kind.stock_sign
    role = kind.partner_role
    partner = Partner(code="SUP-01", name="上海纺织", role=role) if role else None
    return Movement(reference="R1", kind=kind, document_date=date(2024, 3, 1), counterparty=partner, lines=[
        {"line_no": 1, "sku": "RICE-5", "quantity": qty, "unit": "KG", "from_warehouse": "WH01" if out_sign else None,
         "to_warehouse": "WH02" if in_sign else None, "lot": "L1", "unit_cost": Decimal("3.25")}])


@pytest.mark.parametrize("kind", list(MovementKind))
def test_every_kind_round_trips(kind) -> None:
    movement = _movement(kind)
    data = m.movement_to_data(movement, "K123", MOVEMENTS, SHANGHAI)
    row = through_json({**as_read(data), "_id": "a" * 24})
    back = m.movement_from_record(row, MOVEMENTS, SHANGHAI)
    assert back.kind is kind and back.reference == "R1" and back.document_date == date(2024, 3, 1)
    assert back.lines == movement.lines
    if movement.counterparty:
        assert back.counterparty == movement.counterparty
    assert m.key_of(row, MOVEMENTS) == "K123"


def test_a_document_date_is_local_midnight_in_utc() -> None:
    data = m.movement_to_data(_movement(MovementKind.purchase_receipt), "K", MOVEMENTS, SHANGHAI)
    assert data["_w_date"] == {"value": "2024-02-29T16:00:00.000Z"}
    assert data["_w_kind"] == {"value": "采购入库"} and data["_w_warehouse"] == {"value": "WH02"}


def test_transfers_use_the_two_warehouse_fields() -> None:
    data = m.movement_to_data(_movement(MovementKind.transfer), "K", MOVEMENTS, SHANGHAI)
    assert (data["_w_from_warehouse"], data["_w_to_warehouse"]) == ({"value": "WH01"}, {"value": "WH02"})
    assert "_w_warehouse" not in data


@given(st.decimals(min_value=Decimal("0.001"), max_value=Decimal("99999999.999"), places=3))
def test_quantities_travel_exactly(qty) -> None:
    movement = _movement(MovementKind.purchase_receipt, qty)
    row = through_json(as_read(m.movement_to_data(movement, "K", MOVEMENTS, SHANGHAI)))
    back = m.movement_from_record(row, MOVEMENTS, SHANGHAI)
    assert back.lines[0].quantity == qty and isinstance(back.lines[0].quantity, Decimal)


def test_a_float_quantity_is_refused_not_rounded() -> None:
    row = as_read(m.movement_to_data(_movement(MovementKind.purchase_receipt), "K", MOVEMENTS, SHANGHAI))
    row["_w_lines"][0]["_w_line_qty"] = 1.5
    with pytest.raises(m.MappingError) as failed:
        m.movement_from_record(row, MOVEMENTS, SHANGHAI)
    assert "_w_line_qty" in str(failed.value) and "parse_float" in str(failed.value)


@pytest.mark.parametrize(("change", "field"), [
    ({"_w_kind": "借出"}, "_w_kind"),
    ({"_w_warehouse": ""}, "_w_warehouse"),
    ({"_w_lines": []}, "_w_lines"),
])
def test_bad_movements_name_the_field(change, field) -> None:
    row = {**as_read(m.movement_to_data(_movement(MovementKind.purchase_receipt), "K", MOVEMENTS, SHANGHAI)), **change}
    with pytest.raises(m.MappingError) as failed:
        m.movement_from_record(row, MOVEMENTS, SHANGHAI)
    assert failed.value.field == field


def test_read_only_kinds_map_to_canonical_ones() -> None:
    assert DEFAULT_KINDS["期初"] is MovementKind.misc_receipt and DEFAULT_KINDS["生产领料"] is MovementKind.misc_issue
    assert m.kind_value(MovementKind.misc_receipt, MOVEMENTS) == "其他入库"


def test_changes_lists_only_differing_fields() -> None:
    item = Item(sku="A", name="新名", base_unit="PCS")
    row = as_read(m.wrap(m.item_values(Item(sku="A", name="旧名", base_unit="PCS"), ITEMS)))
    assert m.changes(m.item_values(item, ITEMS), row) == {"item_name": {"value": "新名"}}
    assert m.changes(m.item_values(item, ITEMS), {**row, "item_name": "新名", "spec": None}) == {}


def test_times() -> None:
    assert m.parse_time("2018-01-01T10:10:10.000Z") == datetime(2018, 1, 1, 10, 10, 10, tzinfo=UTC)
    assert m.parse_time(1654876800000) == datetime(2022, 6, 10, 16, 0, tzinfo=UTC)
    assert m.format_time(datetime(2024, 3, 1, 8, 0, 0, 123456, tzinfo=SHANGHAI)) == "2024-03-01T00:00:00.123Z"


def test_encode_sends_decimals_as_exact_numbers() -> None:
    body = encode({"q": Decimal("0.1"), "big": Decimal("12345678901234567.891"), "t": "数量", "n": [Decimal("1E+2")]})
    assert body == '{"q":0.1,"big":12345678901234567.891,"t":"数量","n":[100]}'.encode()
