"""SapB1Connector.upsert over a pinned Service Layer: the bulk lookup, the $batch of creates, the
PATCH of changed records (If-Match, 412 re-read), per-record errors; and the pure mapping it uses."""
from __future__ import annotations

import json

import pytest
import requests
import responses
from responses import matchers

from canonical import Item, Warehouse
from connectors.base import Entity, Receipt
from connectors.errors import Ambiguous, ConfigError, Rejected, Transient
from connectors.sap_b1 import SapB1Connector, SapB1Settings
from connectors.sap_b1 import mapping as m
from tests.connectors_sap_b1.conftest import BASE, PASSWORD, add_login, cookie, make_client, root

ITEM_SELECT = "ItemCode,ItemName,InventoryUOM,ManageBatchNumbers,ManageSerialNumbers,BarCode,Valid,Frozen,User_Text"
ETAG = 'W/"356A192B7913B04C54574D18C28D46E6395428AB"'
FRESH = 'W/"DA4B9237BACCCDF19C0760CAB7AEC4A8359010B0"'


def connector(version: str = "v2", **overrides) -> SapB1Connector:
    settings = SapB1Settings(url=BASE, company_db="SBODEMOUS", username="manager", password=PASSWORD,
                             odata_version=version, spec_field="User_Text", **overrides)
    c = SapB1Connector(settings, name="sap_test", client=make_client(version))
    c.client.close = lambda: None  # no Logout in the strict mocks
    return c


def sap_item(code: str, name: str, **fields) -> dict:
    return {"@odata.etag": ETAG, "ItemCode": code, "ItemName": name, "InventoryUOM": "PCS",
            "ManageBatchNumbers": "tNO", "ManageSerialNumbers": "tNO", "BarCode": None, "Valid": "tYES",
            "Frozen": "tNO", "User_Text": None, **fields}


def lookup(mocked, version: str, codes: list[str], rows: list[dict], select: str = ITEM_SELECT,
           entity: str = "Items", key: str = "ItemCode") -> None:
    quoted = [c.replace("'", "''") for c in codes]
    expr = " or ".join(f"({key} eq '{c}')" for c in quoted) if len(codes) > 1 else f"{key} eq '{quoted[0]}'"
    mocked.add(responses.GET, f"{root(version)}/{entity}", json={"value": rows}, match=[
        matchers.query_param_matcher({"$filter": expr, "$select": select}),
        matchers.header_matcher({"Prefer": "odata.maxpagesize=20", "Cookie": cookie()})])


def created_part(boundary: str, content_id: int, code: str) -> str:
    return (f"--batchresponse_x\r\nContent-Type: multipart/mixed;boundary={boundary}\r\n\r\n"
            f"--{boundary}\r\nContent-Type: application/http\r\nContent-Transfer-Encoding: binary\r\n"
            f"Content-ID: {content_id}\r\n\r\nHTTP/1.1 204 No Content\r\n"
            f"Location: {root()}/Items('{code}')\r\nPreference-Applied: return-no-content\r\n\r\n\r\n"
            f"--{boundary}--\r\n")


def error_part(code: str, message: str) -> str:
    return ("--batchresponse_x\r\nContent-Type: application/http\r\nContent-Transfer-Encoding: binary\r\n\r\n"
            "HTTP/1.1 400 Bad Request\r\nContent-Type: application/json;odata.metadata=minimal\r\n\r\n"
            + json.dumps({"error": {"code": code, "message": message}}) + "\r\n")


def changeset(boundary: str, content_id: int, version: str, body: dict) -> list[str]:
    return [f"Content-Type: multipart/mixed;boundary={boundary}", "", f"--{boundary}",
            "Content-Type: application/http", "Content-Transfer-Encoding: binary", f"Content-ID: {content_id}", "",
            f"POST /b1s/{version}/Items HTTP/1.1", "Content-Type: application/json", "Prefer: return-no-content", "",
            json.dumps(body, ensure_ascii=False, separators=(",", ":")), f"--{boundary}--"]


NEW = Item(sku="NEW-1", name="新款卫衣", spec="M/黑", base_unit="PCS", barcode="690001")
NEW_BODY = {"ItemCode": "NEW-1", "ItemName": "新款卫衣", "InventoryUOM": "PCS", "ManageBatchNumbers": "tNO",
            "ManageSerialNumbers": "tNO", "BarCode": "690001", "User_Text": "M/黑", "Valid": "tYES", "Frozen": "tNO",
            "InventoryItem": "tYES"}


# ------------------------------------------------------------------------------------------------
# The three requests


def test_lookup_then_one_batch_of_creates_then_patch_of_the_changed(mocked) -> None:
    # Given one new item, one the company has with another name, one it has unchanged
    add_login(mocked)
    lookup(mocked, "v2", ["NEW-1", "TS-001", "TS-002"],
           [sap_item("TS-001", "old name"), sap_item("TS-002", "运动T恤 长袖")])
    body = "\r\n".join(["--batch_1", *changeset("changeset_2", 1, "v2", NEW_BODY), "--batch_1--", ""])
    mocked.add(responses.POST, f"{root()}/$batch", status=200,
               body=created_part("changesetresponse_a", 1, "NEW-1") + "--batchresponse_x--\r\n",
               content_type="multipart/mixed;boundary=batchresponse_x",
               match=[matchers.header_matcher({"Content-Type": "multipart/mixed;boundary=batch_1",
                                               "Cookie": cookie()})])
    mocked.add(responses.PATCH, f"{root()}/Items('TS-001')", status=204, match=[
        matchers.header_matcher({"If-Match": ETAG, "Content-Type": "application/json", "Cookie": cookie()}),
        matchers.body_matcher('{"ItemName":"运动T恤"}')])
    # When they are upserted
    results = connector().upsert(Entity.ITEMS, [NEW, Item(sku="TS-001", name="运动T恤"),
                                                Item(sku="TS-002", name="运动T恤 长袖")])
    # Then: created, updated, unchanged, in input order
    assert results == [Receipt("NEW-1", "NEW-1", "NEW-1", True, "created"),
                       Receipt("TS-001", "TS-001", "TS-001", False, "updated"),
                       Receipt("TS-002", "TS-002", "TS-002", False, "unchanged")]
    assert mocked.calls[2].request.body.decode() == body


def test_v1_patches_without_if_match(mocked) -> None:
    add_login(mocked, version="v1")
    row = {k: v for k, v in sap_item("TS-001", "old").items() if k != "@odata.etag"}
    lookup(mocked, "v1", ["TS-001"], [row])
    mocked.add(responses.PATCH, f"{root('v1')}/Items('TS-001')", status=204,
               match=[matchers.body_matcher('{"ItemName":"new","User_Text":"L"}')])
    result = connector("v1").upsert(Entity.ITEMS, [Item(sku="TS-001", name="new", spec="L")])
    assert result[0].status == "updated"
    assert "If-Match" not in mocked.calls[2].request.headers


def test_a_key_with_a_quote_and_a_percent_is_quoted_then_encoded(mocked) -> None:
    add_login(mocked)
    lookup(mocked, "v2", ["OB'50%-X"], [sap_item("OB'50%-X", "old")])
    mocked.add(responses.PATCH, f"{root()}/Items('OB''50%25-X')", status=204)
    assert connector().upsert(Entity.ITEMS, [Item(sku="OB'50%-X", name="new")])[0].status == "updated"
    assert mocked.calls[2].request.url == f"{root()}/Items('OB''50%25-X')"


def test_codes_are_looked_up_twenty_at_a_time(mocked) -> None:
    add_login(mocked)
    codes = [f"C{i:02d}" for i in range(25)]
    lookup(mocked, "v2", codes[:20], [sap_item(c, c) for c in codes[:20]])
    lookup(mocked, "v2", codes[20:], [sap_item(c, c) for c in codes[20:]])
    results = connector().upsert(Entity.ITEMS, [Item(sku=c, name=c) for c in codes])
    assert [r.status for r in results] == ["unchanged"] * 25


def test_warehouses_are_looked_up_by_their_mapped_code(mocked) -> None:
    add_login(mocked)
    lookup(mocked, "v2", ["01"], [{"WarehouseCode": "01", "WarehouseName": "主仓库", "EnableBinLocations": "tNO",
                                   "Inactive": "tNO"}],
           select="WarehouseCode,WarehouseName,EnableBinLocations,Inactive", entity="Warehouses",
           key="WarehouseCode")
    result = connector(warehouse_map={"WH01": "01"}).upsert(Entity.WAREHOUSES, [Warehouse(code="WH01", name="主仓库")])
    assert result == [Receipt("WH01", "01", "01", False, "unchanged")]


# ------------------------------------------------------------------------------------------------
# 412 and errors


def test_a_412_rereads_once_and_patches_with_the_fresh_etag(mocked) -> None:
    add_login(mocked)
    lookup(mocked, "v2", ["TS-001"], [sap_item("TS-001", "old")])
    conflict = {"error": {"code": "-2039", "message": "Another user or another operation modified data"}}
    mocked.add(responses.PATCH, f"{root()}/Items('TS-001')", status=412, json=conflict,
               match=[matchers.header_matcher({"If-Match": ETAG})])
    mocked.add(responses.GET, f"{root()}/Items('TS-001')", json=sap_item("TS-001", "old", **{"@odata.etag": FRESH}),
               match=[matchers.query_string_matcher("")])
    mocked.add(responses.PATCH, f"{root()}/Items('TS-001')", status=204,
               match=[matchers.header_matcher({"If-Match": FRESH}), matchers.body_matcher('{"ItemName":"new"}')])
    result = connector().upsert(Entity.ITEMS, [Item(sku="TS-001", name="new")])
    assert result[0].status == "updated"


def test_a_second_412_is_transient_and_a_reread_that_matches_writes_nothing(mocked) -> None:
    add_login(mocked)
    lookup(mocked, "v2", ["A", "B"], [sap_item("A", "old"), sap_item("B", "old")])
    conflict = {"error": {"code": "-2039", "message": "Another user or another operation modified data"}}
    mocked.add(responses.PATCH, f"{root()}/Items('A')", status=412, json=conflict)
    mocked.add(responses.GET, f"{root()}/Items('A')", json=sap_item("A", "still old", **{"@odata.etag": FRESH}))
    mocked.add(responses.PATCH, f"{root()}/Items('A')", status=412, json=conflict)
    mocked.add(responses.PATCH, f"{root()}/Items('B')", status=412, json=conflict)
    mocked.add(responses.GET, f"{root()}/Items('B')", json=sap_item("B", "new", **{"@odata.etag": FRESH}))
    results = connector().upsert(Entity.ITEMS, [Item(sku="A", name="new"), Item(sku="B", name="new")])
    assert isinstance(results[0], Transient) and results[0].vendor_code == "-2039"
    assert "Item 'A'" in str(results[0])
    assert results[1] == Receipt("B", "B", "B", False, "unchanged")


def test_a_refused_create_names_record_and_field_and_the_rest_go_in_the_next_batch(mocked) -> None:
    add_login(mocked)
    items = [Item(sku=s, name=s) for s in ("N1", "N2", "N3")]
    lookup(mocked, "v2", ["N1", "N2", "N3"], [])
    refusal = "CServiceData::SetPropertyValueString failed; Value too long in property 'ItemName' of 'Item'"
    mocked.add(responses.POST, f"{root()}/$batch", status=200,
               body=created_part("a", 1, "N1") + error_part("-5002", refusal) + "--batchresponse_x--\r\n",
               content_type="multipart/mixed;boundary=batchresponse_x")
    mocked.add(responses.POST, f"{root()}/$batch", status=200,
               body=created_part("b", 1, "N3") + "--batchresponse_x--\r\n",
               content_type="multipart/mixed;boundary=batchresponse_x")
    results = connector().upsert(Entity.ITEMS, items)
    assert isinstance(results[1], Rejected) and results[1].vendor_code == "-5002"
    assert "Item 'N2' (ItemName): " in str(results[1]) and "Value too long" in str(results[1])
    assert results[1].details["field"] == "ItemName" and results[1].record == "N2"
    assert [r.status for r in (results[0], results[2])] == ["created", "created"]
    second = mocked.calls[3].request.body.decode()
    assert second.count("Content-ID:") == 1 and '"ItemCode":"N3"' in second


def test_sap_table_field_is_kept_from_the_message(mocked) -> None:
    add_login(mocked)
    lookup(mocked, "v2", ["N1"], [])
    mocked.add(responses.POST, f"{root()}/$batch", status=200,
               body=error_part("-10", "Invalid unit of measure  [OITM.InvntryUom]") + "--batchresponse_x--\r\n",
               content_type="multipart/mixed;boundary=batchresponse_x")
    result = connector().upsert(Entity.ITEMS, [Item(sku="N1", name="n")])[0]
    assert isinstance(result, Rejected) and result.details["field"] == "OITM.InvntryUom"
    assert "Item 'N1' (OITM.InvntryUom)" in str(result)


def test_a_lost_batch_answer_is_ambiguous_for_its_records_and_a_rerun_looks_first(mocked) -> None:
    add_login(mocked)
    lookup(mocked, "v2", ["N1", "N2"], [])
    mocked.add(responses.POST, f"{root()}/$batch", body=requests.exceptions.ReadTimeout("timed out"))
    results = connector().upsert(Entity.ITEMS, [Item(sku="N1", name="a"), Item(sku="N2", name="b")])
    assert all(isinstance(r, Ambiguous) for r in results)
    assert "Item 'N1'" in str(results[0]) and "again is safe" in str(results[0])


def test_a_lookup_failure_raises_before_anything_is_written(mocked) -> None:
    add_login(mocked)
    mocked.add(responses.GET, f"{root()}/Items", status=503, body="busy")
    with pytest.raises(Transient):
        connector(read_timeout=1).upsert(Entity.ITEMS, [Item(sku="N1", name="a")])
    assert all(c.request.method in ("GET", "POST") and "$batch" not in c.request.url for c in mocked.calls)


def test_the_same_code_twice_in_one_call_is_refused_once() -> None:
    # no HTTP at all: a duplicate is refused before the lookup; the lookup of N1 is mocked away
    c = connector()
    c._lookup = lambda writer, codes: {"N1": sap_item("N1", "a")}
    results = c.upsert(Entity.ITEMS, [Item(sku="N1", name="a"), Item(sku="N1", name="b")])
    assert results[0].status == "unchanged" and isinstance(results[1], Rejected)


def test_writable_entities_and_the_rest_refused() -> None:
    caps = connector().capabilities
    assert caps.writable == {Entity.ITEMS, Entity.WAREHOUSES, Entity.LOCATIONS}
    assert any("If-Match" in note for note in caps.notes)
    with pytest.raises(ConfigError):
        connector().upsert(Entity.PARTNERS, [])


# ------------------------------------------------------------------------------------------------
# Mapping: the inverse of the read


CFG = m.MappingConfig(unit_map={"Pcs": "PCS", "PC": "PCS", "KG": "KG"}, spec_field="User_Text")


def test_item_to_sap_maps_units_back_and_leaves_empty_fields_out() -> None:
    body = m.item_to_sap(Item(sku="A", name="a", base_unit="PCS", active=False, serial_managed=True), CFG)
    assert body == {"ItemCode": "A", "ItemName": "a", "InventoryUOM": "Pcs", "ManageBatchNumbers": "tNO",
                    "ManageSerialNumbers": "tYES", "Valid": "tNO", "Frozen": "tYES", "InventoryItem": "tYES"}


@pytest.mark.parametrize("row", [
    {"ItemCode": "A", "ItemName": "a", "InventoryUOM": "PC", "ManageBatchNumbers": "tNO", "Valid": "tYES"},
    {"ItemCode": "A", "ItemName": " a ", "InventoryUOM": None, "ManageBatchNumbers": "N", "Frozen": "tNO"},
    {"ItemCode": "A", "ItemName": "a", "InventoryUOM": "Manual", "Valid": "tYES", "Frozen": "tNO", "BarCode": ""},
    {"ItemCode": "A", "ItemName": "a", "InventoryUOM": "KG", "Valid": "tNO", "User_Text": "M", "BarCode": "1"},
    {"ItemCode": "A", "ItemName": "a", "Frozen": "tYES", "ManageBatchNumbers": "tYES", "ManageSerialNumbers": "Y"},
])
def test_an_item_read_from_sap_needs_no_change(row) -> None:
    assert m.item_changes(m.item_to_item(row, CFG), row, CFG) == {}


def test_item_changes_only_what_differs() -> None:
    row = {"ItemCode": "A", "ItemName": "a", "InventoryUOM": "Pcs", "Valid": "tYES", "Frozen": "tYES",
           "BarCode": "1", "User_Text": "M"}
    item = Item(sku="A", name="b", base_unit="KG", spec=None, barcode="1")
    assert m.item_changes(item, row, CFG) == {"ItemName": "b", "InventoryUOM": "KG", "User_Text": None,
                                              "Valid": "tYES", "Frozen": "tNO"}


def test_warehouse_mapping_is_the_inverse_of_the_read() -> None:
    cfg = m.MappingConfig(warehouse_map={"WH01": "01"})
    wh = Warehouse(code="WH01", name="主仓库", bin_managed=True)
    body = m.warehouse_to_sap(wh, cfg)
    assert body == {"WarehouseCode": "01", "WarehouseName": "主仓库", "EnableBinLocations": "tYES",
                    "Inactive": "tNO"}
    assert m.warehouse_to_warehouse(body, cfg).model_dump(include={"code", "name", "bin_managed", "active"}) == \
        wh.model_dump(include={"code", "name", "bin_managed", "active"})
    assert m.warehouse_changes(wh, body, cfg) == {}
    assert m.warehouse_changes(wh.replace(active=False), body, cfg) == {"Inactive": "tYES"}


def test_a_bin_is_looked_up_by_bin_code_and_patched_by_its_abs_entry(mocked) -> None:
    from canonical import Location

    # Given a bin SAP has under AbsEntry 7, with another description
    add_login(mocked)
    lookup(mocked, "v2", ["A-01"], [{"AbsEntry": 7, "BinCode": "A-01", "Warehouse": "01", "Description": "old",
                                     "Inactive": "tNO"}],
           select="BinCode,AbsEntry,Warehouse,Description,Inactive", entity="BinLocations", key="BinCode")
    mocked.add(responses.PATCH, f"{root()}/BinLocations(7)", status=204,
               match=[matchers.body_matcher('{"Description":"一号货架"}')])
    # When the hub upserts it (warehouse WH01 is SAP's 01)
    result = connector(warehouse_map={"WH01": "01"}).upsert(
        Entity.LOCATIONS, [Location(warehouse="WH01", code="A-01", name="一号货架")])
    # Then the PATCH names the bin by its numeric key
    assert result[0].status == "updated" and result[0].document_id == "A-01"
    assert mocked.calls[2].request.url == f"{root()}/BinLocations(7)"


def test_bin_mapping_writes_what_the_read_gives_back() -> None:
    from canonical import Location

    cfg = m.MappingConfig(warehouse_map={"WH01": "01"})
    loc = Location(warehouse="WH01", code="A-01", name="货架", active=False)
    body = m.location_to_sap(loc, cfg)
    assert body == {"Warehouse": "01", "BinCode": "A-01", "Description": "货架", "Inactive": "tYES"}
    assert m.bin_to_location(body, cfg) == loc
    assert m.location_changes(loc, body, cfg) == {}
    assert m.location_clash(loc, {**body, "Warehouse": "02"}, cfg).field == "OBIN.BinCode"
