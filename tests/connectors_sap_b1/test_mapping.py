"""Mapping golden tests, including the recorded real item (``reference/sap_b1/items_get_v2.yaml``)."""
from __future__ import annotations

import json
from datetime import date, datetime, timezone
from decimal import Decimal
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import yaml

from canonical import Item, Movement, MovementKind, RecordInvalid, StockBalance
from connectors.sap_b1 import mapping as m
from connectors.sap_b1.client import _dumps
from tests.connectors_sap_b1.conftest import golden

RECORDED = Path("/work/shared/reference/sap_b1/items_get_v2.yaml")
SHANGHAI = ZoneInfo("Asia/Shanghai")
CFG = m.MappingConfig(timezone=SHANGHAI, warehouse_map={"WH01": "01", "WH02": "02"},
                      series={"InventoryGenEntries": 21})
READ_CFG = m.MappingConfig(timezone=SHANGHAI, warehouse_map={"WH01": "01", "WH02": "02"}, unit_map={"EA": "PCS"})
SUP = {"code": "SUP-01", "name": "上海纺织品有限公司", "role": "supplier"}
CUS = {"code": "CUS-01", "name": "北京体育用品商店", "role": "customer"}


def recorded_item() -> dict:
    cassette = yaml.safe_load(RECORDED.read_text(encoding="utf-8"))
    get = next(i for i in cassette["interactions"] if i["request"]["method"] == "GET")
    return json.loads(get["response"]["body"]["string"])


@pytest.mark.skipif(not RECORDED.exists(), reason="the recorded reference is not mounted here")
def test_the_recorded_real_item_maps() -> None:
    # Given the real v2 reply for item 9990140071261 (build 1000280), stamped 2023-10-26 13:14:45
    row = recorded_item()
    # When it is mapped for a company in Mexico City (the recording's tenant sells queso oaxaca)
    cfg = m.MappingConfig(timezone=ZoneInfo("America/Mexico_City"))
    item = m.item_to_item(row, cfg)
    # Then the fields land where they belong and the stamp is local time, not the fake "Z"
    assert item == Item(sku="9990140071261", name="QUESO OAXACA", base_unit="PCS", category="116",
                        barcode="9990140071261", active=True,
                        modified_at=datetime(2023, 10, 26, 13, 14, 45, tzinfo=ZoneInfo("America/Mexico_City")))
    assert item.modified_at.utcoffset() is not None
    # and its nine warehouse rows hold nothing, so no balances unless zero rows are asked for
    as_of = datetime(2026, 4, 3, 23, 30, tzinfo=timezone.utc)
    assert m.item_to_balances(row, cfg, as_of=as_of) == []
    zero = m.MappingConfig(timezone=cfg.timezone, include_zero_balances=True, warehouse_map={"main": "600"})
    balances = m.item_to_balances(row, zero, as_of=as_of)
    assert [b.warehouse for b in balances] == ["100", "1000", "200", "300", "400", "500", "main", "700", "800", "900"]
    assert {(b.on_hand, b.available, b.unit) for b in balances} == {(Decimal(0), Decimal(0), "PCS")}


def test_balances_are_in_stock_and_in_stock_less_committed() -> None:
    row = {"ItemCode": "RICE-5", "InventoryUOM": "KG", "ItemWarehouseInfoCollection": [
        {"WarehouseCode": "01", "InStock": Decimal("12.5"), "Committed": Decimal("2.25"), "Ordered": Decimal("40")},
        {"WarehouseCode": "03", "InStock": Decimal("0"), "Committed": Decimal("0")},
        {"WarehouseCode": "02", "InStock": Decimal("-1"), "Committed": Decimal("0")},
    ]}
    as_of = datetime(2024, 5, 1, tzinfo=timezone.utc)
    assert m.item_to_balances(row, CFG, as_of=as_of) == [
        StockBalance(sku="RICE-5", warehouse="WH01", on_hand=Decimal("12.5"), available=Decimal("10.25"), unit="KG",
                     as_of=as_of),
        StockBalance(sku="RICE-5", warehouse="WH02", on_hand=Decimal("-1"), available=Decimal("-1"), unit="KG",
                     as_of=as_of),
    ]
    assert [b.warehouse for b in m.item_to_balances(row, CFG, as_of=as_of, warehouse="WH02")] == ["WH02"]


def _movement(kind: MovementKind) -> Movement:
    out, inn = kind.stock_sign
    lines = [{"line_no": 1, "sku": "TS-001", "quantity": "2", "unit": "PCS", "unit_cost": "12.50"},
             {"line_no": 2, "sku": "RICE-5", "quantity": "1.5", "unit": "KG", "lot": "L2024-05"}]
    for line in lines:
        if out:
            line["from_warehouse"] = "WH01"
        if inn:
            line["to_warehouse"] = "WH02"
    partner = None if kind.partner_role is None else SUP if kind.partner_role.value == "supplier" else CUS
    return Movement.model_validate({"reference": f"MV-{kind.value}", "kind": kind, "document_date": "2024-05-01",
                                    "lines": lines, "counterparty": partner, "memo": "from the hub"})


@pytest.mark.parametrize("kind", list(MovementKind))
def test_every_kind_maps_to_its_document(kind: MovementKind) -> None:
    expected = golden("movement_documents.json")[kind.value]
    entity, body = m.movement_to_document(_movement(kind), f"K-{kind.value[:6]}", CFG)
    assert entity == expected["entity"] == m.DOCUMENT_FOR_KIND[kind]
    assert json.loads(_dumps(body)) == expected["body"]


@pytest.mark.parametrize("name", list(golden("sap_documents.json")))
def test_documents_map_back_to_movements(name: str) -> None:
    doc = golden("sap_documents.json")[name]
    expected = Movement.model_validate(golden("sap_movements.json")[name])
    units = {"TS-001": "PCS", "RICE-5": "KG"}.get
    assert m.document_to_movement(name.split("_")[0], doc, READ_CFG, item_units=units) == expected


@pytest.mark.parametrize("kind", list(MovementKind))
def test_every_kind_round_trips_through_its_document(kind: MovementKind) -> None:
    # Given a movement mapped to its document, as SAP would store and return it
    original = _movement(kind)
    entity, body = m.movement_to_document(original, "K1", CFG)
    lines_field = "StockTransferLines" if entity == "StockTransfers" else "DocumentLines"
    stored = json.loads(_dumps({**body, "DocEntry": 9, "DocNum": 109, "UpdateDate": "2024-05-01T00:00:00Z",
                                "UpdateTime": "10:00:00", "CardName": (original.counterparty.name
                                                                        if original.counterparty else None),
                                lines_field: [{**line, "LineNum": i, "UoMCode": "Manual"}
                                              for i, line in enumerate(body[lines_field])]}))
    # When it is read back
    back = m.document_to_movement(entity, stored, CFG, item_units={"TS-001": "PCS", "RICE-5": "KG"}.get)
    # Then kind, reference, counterparty and lines are what was pushed (prices only come back on inbound kinds)
    assert (back.kind, back.reference, back.counterparty, back.memo) == (
        original.kind, original.reference, original.counterparty, original.memo)
    expect = [line.replace(unit_cost=line.unit_cost if kind.direction == "in" else None) for line in original.lines]
    assert list(back.lines) == expect


def test_kind_markers_tell_shared_documents_apart() -> None:
    assert m.document_kind("InventoryGenEntries", {"JournalMemo": "erphub:count_gain"}, CFG) is MovementKind.count_gain
    assert m.document_kind("InventoryGenEntries", {"JournalMemo": "Goods Receipt"}, CFG) is MovementKind.misc_receipt
    assert m.document_kind("InventoryGenExits", {"JournalMemo": "erphub:count_loss"}, CFG) is MovementKind.count_loss
    # a marker of a kind that does not live in this entity set is ignored
    assert m.document_kind("InventoryGenExits", {"JournalMemo": "erphub:count_gain"}, CFG) is MovementKind.misc_issue
    udf = m.MappingConfig(kind_marker_field="U_HubKind", kind_markers={MovementKind.scrap: "SCRAP"})
    assert m.document_kind("InventoryGenExits", {"U_HubKind": "SCRAP"}, udf) is MovementKind.scrap


def test_update_date_and_time_are_company_local() -> None:
    assert m.sap_datetime("2022-04-29T00:00:00Z", "19:32:42", SHANGHAI) == datetime(2022, 4, 29, 19, 32, 42,
                                                                                  tzinfo=SHANGHAI)
    assert m.sap_datetime("20220429", "1932", SHANGHAI) == datetime(2022, 4, 29, 19, 32, tzinfo=SHANGHAI)
    assert m.sap_datetime("2022-04-29", None, SHANGHAI) == datetime(2022, 4, 29, tzinfo=SHANGHAI)
    assert m.sap_datetime(None, "10:00:00", SHANGHAI) is None
    assert m.stamp_of({"UpdateDate": "2022-04-29"}, CFG) == m.Stamp(datetime(2022, 4, 29, tzinfo=SHANGHAI), False)
    with pytest.raises(m.MappingError):
        m.sap_date("29/04/2022")
    assert m.sap_date("2024-05-01T00:00:00Z") == date(2024, 5, 1)


def test_master_data() -> None:
    assert m.warehouse_to_warehouse({"WarehouseCode": "01", "WarehouseName": "主仓库", "EnableBinLocations": "tYES",
                                     "Inactive": "tNO"}, CFG).model_dump(exclude_defaults=True) == {
        "code": "WH01", "name": "主仓库", "bin_managed": True}
    assert m.bin_to_location({"AbsEntry": 3, "BinCode": "03-A-01-01", "Warehouse": "03", "Inactive": "tYES"},
                             CFG).model_dump(exclude_defaults=True) == {"warehouse": "03", "code": "03-A-01-01",
                                                                        "active": False}
    partner = m.partner_to_partner({"CardCode": "C1", "CardName": "Acme", "CardType": "C",
                                    "UpdateDate": "2024-01-02", "UpdateTime": "03:04:05"}, CFG)
    assert (partner.role.value, partner.modified_at) == ("customer", datetime(2024, 1, 2, 3, 4, 5, tzinfo=SHANGHAI))
    with pytest.raises(m.MappingError):
        m.partner_to_partner({"CardCode": "L1", "CardName": "Lead", "CardType": "cLid"}, CFG)


def test_bad_records_name_the_field() -> None:
    with pytest.raises(m.MappingError) as missing:
        m.item_to_item({"ItemCode": "X"}, CFG)
    assert missing.value.field == "ItemName"
    with pytest.raises(RecordInvalid) as unit:
        m.item_to_item({"ItemCode": "X", "ItemName": "x", "InventoryUOM": "KILO"}, CFG)
    assert "base_unit" in str(unit.value)
    assert m.item_to_item({"ItemCode": "X", "ItemName": "x", "InventoryUOM": "KILO"},
                          m.MappingConfig(unit_map={"KILO": "KG"})).base_unit == "KG"


def test_bins_need_their_abs_entry() -> None:
    mv = Movement.model_validate({"reference": "R", "kind": "misc_receipt", "document_date": "2024-05-01", "lines": [
        {"line_no": 1, "sku": "CAP-01", "quantity": "1", "unit": "PCS", "to_warehouse": "WH03", "to_bin": "A-01-01"}]})
    with pytest.raises(m.MappingError) as unknown:
        m.movement_to_document(mv, "K", CFG)
    assert unknown.value.dependency
    _, body = m.movement_to_document(mv, "K", CFG, bins=lambda wh, code: {("WH03", "A-01-01"): 7}.get((wh, code)))
    assert body["DocumentLines"][0]["DocumentLinesBinAllocations"][0]["BinAbsEntry"] == 7
    back = m.document_to_movement("InventoryGenEntries", {**json.loads(_dumps(body)), "DocEntry": 1}, CFG,
                                  bin_names={7: "A-01-01"}.get)
    assert back.lines[0].to_bin == "A-01-01"
