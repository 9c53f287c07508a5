"""Mapping golden tests: K3Cloud rows ⇄ canonical records, pure functions only.

Golden files live in ``golden/``; ``KINGDEE_GOLDEN_UPDATE=1`` rewrites the expected ones (review the
diff before committing it).
"""
from __future__ import annotations

import json
import os
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from canonical import Item, Movement, MovementKind, MovementLine, Partner, Warehouse
from connectors.kingdee import mapping as m

GOLDEN = Path(__file__).parent / "golden"
UPDATE = os.environ.get("KINGDEE_GOLDEN_UPDATE") == "1"
CFG = m.MappingConfig(units={"PCS": "Pcs", "KG": "kg"}, material_attribute_fields={"colour": "F_ABC_Colour"})


def load(name: str):
    return json.loads((GOLDEN / name).read_text(encoding="utf-8"))


def rows_of(name: str) -> list[dict]:
    data = load(name)
    return [m.row_dict(data["fields"], row) for row in data["rows"]]


def check_golden(name: str, actual) -> None:
    path = GOLDEN / name
    text = json.dumps(actual, ensure_ascii=False, indent=2, sort_keys=True) + "\n"
    if UPDATE or not path.exists():
        path.write_text(text, encoding="utf-8")
    assert json.loads(text) == json.loads(path.read_text(encoding="utf-8"))


def dump(record) -> dict:
    return record.model_dump(mode="json")


# -- master data -------------------------------------------------------------------------------


def test_materials_map_to_items_matching_golden():
    items = [m.material_to_item(row, CFG) for row in rows_of("bd_material_rows.json")]
    check_golden("items.expected.json", [dump(i) for i in items])
    # zone-less server time read in Asia/Shanghai
    assert items[0].modified_at == datetime(2024, 12, 13, 1, 18, 4, 960000, tzinfo=timezone.utc)
    assert items[0].base_unit == "PCS" and items[0].attributes == {"colour": "白"}
    assert items[1].active is False and items[1].batch_managed is True and items[1].barcode is None


def test_warehouse_and_partners():
    fields = m.stock_fields(CFG)
    wh = m.stock_to_warehouse(m.row_dict(fields, [100001, "WH03", "退货仓", "100", True, "A",
                                                  "2024-03-01T08:00:00"]), CFG)
    assert (wh.code, wh.name, wh.organisation, wh.bin_managed, wh.active) == ("WH03", "退货仓", "100", True, True)
    assert wh.modified_at == datetime(2024, 3, 1, tzinfo=timezone.utc)
    row = m.row_dict(m.PARTNER_FIELDS, ["SUP-01", "上海纺织品有限公司", "A", "2024-03-01T08:00:00"])
    assert m.supplier_to_partner(row, CFG).role.value == "supplier"
    assert m.customer_to_partner(row, CFG).role.value == "customer"


def test_a_material_without_a_number_is_a_mapping_error_naming_the_field():
    row = m.row_dict(m.material_fields(CFG), [1, "", "x", "", "Pcs", False, "A", None, "", ""])
    with pytest.raises(m.MappingError) as failed:
        m.material_to_item(row, CFG)
    assert failed.value.field == "FNumber"


def test_configured_zone_is_used_for_server_times():
    utc_cfg = m.MappingConfig(zone=ZoneInfo("UTC"))
    assert m.parse_server_datetime("2024-12-13T09:18:04.96", utc_cfg.zone) == \
        datetime(2024, 12, 13, 9, 18, 4, 960000, tzinfo=timezone.utc)
    assert m.parse_server_datetime("2024-12-13T09:18:04+08:00", utc_cfg.zone).utcoffset() == timedelta(hours=8)
    assert m.parse_server_datetime("", utc_cfg.zone) is None


# -- balances ------------------------------------------------------------------------------------


def test_inventory_rows_sum_per_material_stock_location_lot_matching_golden():
    as_of = datetime(2025, 1, 15, 2, 0, tzinfo=timezone.utc)
    balances = m.balance_rows_to_balances(rows_of("stk_inventory_rows.json"), CFG, as_of=as_of)
    check_golden("balances.expected.json", [dump(b) for b in balances])
    by_key = {b.natural_key: b for b in balances}
    ts = by_key[("TS-001", "WH01", None, None)]
    assert (ts.on_hand, ts.available, ts.unit) == (Decimal("100"), Decimal("90"), "PCS")
    assert by_key[("RICE-5", "WH01", None, None)].on_hand == Decimal("12.5")
    assert by_key[("CAP-01", "WH03", "A-01-01", "L1")].available is None


# -- bills ---------------------------------------------------------------------------------------


def test_audited_bill_rows_become_one_movement_matching_golden():
    movement = m.bill_rows_to_movement(MovementKind.purchase_receipt, rows_of("stk_instock_rows.json"), CFG)
    check_golden("purchase_receipt.expected.json", dump(movement))
    # lines in entry order, the reference from the bill number, the supplier as counterparty
    assert [l.sku for l in movement.lines] == ["TS-001", "RICE-5"]
    assert movement.reference == "R0000000042" and movement.counterparty.code == "SUP-01"
    assert movement.lines[0].to_bin == "A-01-01" and movement.lines[0].lot == "L20250115"
    assert movement.lines[1].unit == "KG" and movement.lines[1].quantity == Decimal("1.5")
    assert movement.memo is None  # FNote holds the key, not a memo


def test_rows_of_two_bills_are_refused():
    rows = rows_of("stk_instock_rows.json")
    rows[1] = {**rows[1], "FID": 999}
    with pytest.raises(m.MappingError):
        m.bill_rows_to_movement(MovementKind.purchase_receipt, rows, CFG)


def sample(kind: MovementKind, *, lot: str | None = None, bins: bool = False) -> Movement:
    out, into = kind.stock_sign
    role = kind.partner_role
    return Movement(
        reference="R0000000042", kind=kind, document_date=date(2025, 1, 15), memo="来自 erphub",
        counterparty=Partner(code="SUP-01" if role and role.value == "supplier" else "CUS-01", name="伙伴",
                             role=role.value) if role else None,
        lines=(
            MovementLine(line_no=1, sku="TS-001", quantity=Decimal("10"), unit="PCS", lot=lot,
                         from_warehouse="WH01" if out else None, to_warehouse="WH03" if into else None,
                         from_bin="A-01-01" if bins and out else None, to_bin="A-01-02" if bins and into else None),
            MovementLine(line_no=2, sku="RICE-5", quantity=Decimal("1.5"), unit="KG",
                         from_warehouse="WH01" if out else None, to_warehouse="WH02" if into else None),
        ))


@pytest.mark.parametrize("kind", list(MovementKind))
def test_every_kind_maps_to_its_bill_matching_golden(kind):
    form_id, model = m.movement_to_bill(sample(kind, lot="L1", bins=True), "K0000000042", CFG)
    check_golden(f"bill.{kind.value}.expected.json", {"form_id": form_id, "model": model})
    spec = m.BILL_SPECS[kind]
    assert form_id == spec.form_id
    assert model["FNote"] == "K0000000042" and model["FBillNo"] == "R0000000042"
    assert model["FBillTypeID"] == {"FNumber": CFG.bill_type(kind)}
    assert model[spec.entry][1][spec.qty] == "1.5" and model[spec.entry][0][spec.qty] == 10
    assert model[spec.entry][0][spec.unit] == {"FNumber": "Pcs"}


EXPECTED_FORMS = {
    "purchase_receipt": ("STK_InStock", "FInStockEntry", "FRealQty"),
    "sales_issue": ("SAL_OUTSTOCK", "FEntity", "FRealQty"),
    "transfer": ("STK_TransferDirect", "FBillEntry", "FQty"),
    "count_gain": ("STK_StockCountGain", "FBillEntry", "FGainQty"),
    "count_loss": ("STK_StockCountLoss", "FBillEntry", "FLossQty"),
    "sales_return": ("SAL_RETURNSTOCK", "FEntity", "FRealQty"),
    "purchase_return": ("PUR_MRB", "FPURMRBENTRY", "FRMREALQTY"),
    "misc_receipt": ("STK_MISCELLANEOUS", "FEntity", "FQty"),
    "misc_issue": ("STK_MisDelivery", "FEntity", "FQty"),
    "scrap": ("STK_MisDelivery", "FEntity", "FQty"),
}


def test_the_form_table_is_the_documented_one():
    assert {k.value: (s.form_id, s.entry, s.qty) for k, s in m.BILL_SPECS.items()} == EXPECTED_FORMS


def bill_rows(kind: MovementKind, model: dict, *, fid: int = 1, number: str = "X1") -> list[dict]:
    """What ExecuteBillQuery returns for a saved ``model``: one row per entry line, base data by number."""
    spec = m.BILL_SPECS[kind]
    rows = []
    for seq, entry in enumerate(model[spec.entry], start=1):
        row = {"FID": fid, "FBillNo": model.get("FBillNo", number), "FDate": model["FDate"] + "T00:00:00",
               "FModifyDate": "2025-01-15T10:00:00", "FDocumentStatus": "C",
               "FBillTypeID.FNumber": model["FBillTypeID"]["FNumber"], "FNote": model.get("FNote", ""),
               spec.entry_id(): 1000 + seq, spec.entry_seq(): seq}
        if spec.partner:
            row[f"{spec.partner}.FNumber"] = model[spec.partner]["FNumber"]
            row[f"{spec.partner}.FName"] = "伙伴"
        for key in (spec.material, spec.unit, spec.stock, spec.loc, spec.lot, spec.dest_stock, spec.dest_loc):
            if key:
                row[f"{key}.FNumber"] = (entry.get(key) or {}).get("FNumber", "")
        row[spec.qty] = float(entry[spec.qty])
        row[CFG.scrap_marker_field] = entry.get(CFG.scrap_marker_field, "")
        rows.append(row)
    return rows


@pytest.mark.parametrize("kind", list(MovementKind))
def test_every_kind_round_trips_through_its_bill(kind):
    # Given a movement mapped to a bill
    original = sample(kind, bins=True)
    _, model = m.movement_to_bill(original, "K1", CFG)
    # When the audited bill is read back
    back = m.bill_rows_to_movement(kind if kind is not MovementKind.scrap else MovementKind.misc_issue,
                                   bill_rows(kind, model), CFG)
    # Then kind, reference, date, counterparty and lines are the movement's
    assert back.kind is kind
    assert (back.reference, back.document_date) == (original.reference, original.document_date)
    assert [l.model_dump() for l in back.lines] == [l.model_dump() for l in original.lines]
    assert (back.counterparty.code if back.counterparty else None) == \
        (original.counterparty.code if original.counterparty else None)


def test_scrap_with_its_own_bill_type_and_memo_when_the_key_lives_elsewhere():
    cfg = m.MappingConfig(scrap_bill_type="QTCKD_BS", key_field="F_HUB_Key", reference_field=None)
    form_id, model = m.movement_to_bill(sample(MovementKind.scrap), "K1", cfg)
    assert form_id == "STK_MisDelivery" and model["FBillTypeID"] == {"FNumber": "QTCKD_BS"}
    assert model["F_HUB_Key"] == "K1" and model["FNote"] == "来自 erphub" and "FBillNo" not in model
    assert all("FEntryNote" not in e for e in model["FEntity"])
    rows = bill_rows(MovementKind.scrap, model, number="QTCK00009")
    back = m.bill_rows_to_movement(MovementKind.misc_issue, rows, cfg)
    assert back.kind is MovementKind.scrap and back.reference == "QTCK00009" and back.memo == "来自 erphub"


def test_head_fields_and_orgs_come_from_the_config():
    cfg = m.MappingConfig(stock_org="200", purchase_org="210", sale_org="220", head_fields={"F_ABC_Dept": {"FNumber": "D1"}})
    _, model = m.movement_to_bill(sample(MovementKind.purchase_receipt), "K1", cfg)
    assert model["FStockOrgId"] == {"FNumber": "200"} and model["FPurchaseOrgId"] == {"FNumber": "210"}
    assert model["F_ABC_Dept"] == {"FNumber": "D1"}
    _, issue = m.movement_to_bill(sample(MovementKind.sales_issue), "K1", cfg)
    assert issue["FSaleOrgId"] == {"FNumber": "220"} and issue["FCustomerID"] == {"FNumber": "CUS-01"}


# -- master data written (upsert) ----------------------------------------------------------------

WRITE_CFG = m.MappingConfig(stock_org="200", units={"PCS": "Pcs"}, category_field="FMaterialGroup.FNumber",
                            material_attribute_fields={"colour": "F_ABC_Colour"})
HOODIE = Item(sku="TS-009", name="连帽卫衣", spec="L 黑", base_unit="PCS", barcode="6901234567009", category="服装",
              batch_managed=True, attributes={"colour": "black"})


def test_item_to_material_matches_golden():
    check_golden("bd_material_save_model.expected.json", m.item_to_material(HOODIE, WRITE_CFG))


def test_warehouse_to_stock_is_the_inverse_of_the_reader():
    model = m.warehouse_to_stock(Warehouse(code="WH03", name="退货仓", bin_managed=True), WRITE_CFG)
    assert model == {"FNumber": "WH03", "FName": "退货仓", "FIsOpenLocation": True,
                     "FCreateOrgId": {"FNumber": "200"}, "FUseOrgId": {"FNumber": "200"}}
    row = m.row_dict(m.stock_lookup_fields(WRITE_CFG), [7, "WH03", "退货仓", "200", True, "A", None, "C"])
    assert m.stock_changes(Warehouse(code="WH03", name="退货仓", bin_managed=True), row, WRITE_CFG) == []
    assert m.stock_changes(Warehouse(code="WH03", name="退货仓 2"), row, WRITE_CFG) == ["FName", "FIsOpenLocation"]


def _material_row(**override):
    values = {"FMaterialId": 100001, "FNumber": "TS-009", "FName": "连帽卫衣", "FSpecification": "L 黑",
              "FBaseUnitId.FNumber": "Pcs", "FIsBatchManage": True, "FForbidStatus": "A",
              "FModifyDate": "2025-01-01T00:00:00", "FBarCode": "6901234567009", "FMaterialGroup.FNumber": "服装",
              "F_ABC_Colour": "black", "FDocumentStatus": "C", **override}
    fields = m.material_lookup_fields(WRITE_CFG)
    return m.row_dict(fields, [values[k] for k in fields])


def test_a_material_read_back_as_written_has_no_changes_and_maps_to_the_same_item():
    row = _material_row()
    assert m.material_changes(HOODIE, row, WRITE_CFG) == []
    read = m.material_to_item(row, WRITE_CFG)
    assert (read.sku, read.name, read.spec, read.base_unit, read.barcode, read.category, read.batch_managed,
            dict(read.attributes)) == ("TS-009", "连帽卫衣", "L 黑", "PCS", "6901234567009", "服装", True,
                                       {"colour": "black"})


@pytest.mark.parametrize("override,changed", [
    ({"FName": "旧名"}, ["FName"]),
    ({"FSpecification": ""}, ["FSpecification"]),
    ({"FBaseUnitId.FNumber": "kg"}, ["FBaseUnitId"]),
    ({"FBaseUnitId.FNumber": "PCS"}, []),  # unit numbers compare case-insensitively
    ({"FIsBatchManage": False}, ["FIsBatchManage"]),
    ({"FBarCode": ""}, ["FBarCode"]),
    ({"FMaterialGroup.FNumber": "鞋类"}, ["FMaterialGroup"]),
    ({"F_ABC_Colour": "red"}, ["F_ABC_Colour"]),
    ({"FForbidStatus": "B", "FDocumentStatus": "A", "FModifyDate": None}, []),  # state, not content
])
def test_material_changes_name_the_save_keys_of_the_fields_that_differ(override, changed):
    assert m.material_changes(HOODIE, _material_row(**override), WRITE_CFG) == changed


def test_empty_canonical_values_compare_equal_to_empty_vendor_values():
    plain = Item(sku="TS-010", name="袜子", base_unit="PCS")
    row = _material_row(FNumber="TS-010", FName="袜子", FSpecification="", FIsBatchManage=False, FBarCode=None,
                        **{"FMaterialGroup.FNumber": "", "F_ABC_Colour": ""})
    assert m.material_changes(plain, row, WRITE_CFG) == []
    model = m.item_to_material(plain, WRITE_CFG)
    assert (model["FSpecification"], model["FBarCode"], model["FMaterialGroup"], model["F_ABC_Colour"]) == (
        "", "", {"FNumber": ""}, "")


def test_update_model_carries_the_id_the_number_and_the_changed_fields_only():
    model = m.item_to_material(HOODIE, WRITE_CFG)
    assert m.update_model(model, m.MATERIAL_PK, "100001", ["FName", "FMaterialGroup"]) == {
        "FMaterialId": 100001, "FNumber": "TS-009", "FName": "连帽卫衣", "FMaterialGroup": {"FNumber": "服装"}}
