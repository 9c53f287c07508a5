"""KingdeeConnector.upsert on the wire: every request pinned (path, signed headers, exact body)."""
from __future__ import annotations

import pytest
import requests
import responses

from canonical import Item, Warehouse
from connectors.base import Entity, Receipt
from connectors.errors import Ambiguous, Rejected
from connectors.kingdee import KingdeeConnector, KingdeeSettings
from tests.connectors_kingdee.test_client import ACCT, APP_ID, APP_SECRET, FORM, SITE, TS, USER, compact, ok_status, \
    pin, signed_headers, url

MATERIAL_KEYS = ("FMaterialId,FNumber,FName,FSpecification,FBaseUnitId.FNumber,FIsBatchManage,FForbidStatus,"
                 "FModifyDate,FBarCode,FDocumentStatus")
ORGS = {"FCreateOrgId": {"FNumber": "100"}, "FUseOrgId": {"FNumber": "100"}}


@pytest.fixture
def mocked():
    with responses.RequestsMock(assert_all_requests_are_fired=True) as rsps:
        yield rsps


def connector(**kw) -> KingdeeConnector:
    settings = KingdeeSettings(url=SITE, acct_id=ACCT, username=USER, app_id=APP_ID, app_secret=APP_SECRET, **kw)
    return KingdeeConnector(settings, clock=lambda: TS + 0.7)


def expect(mocked, op: str, body, reply):
    path = f"/k3cloud/{FORM}{op}.common.kdsvc"
    return pin(mocked, FORM + op, body, signed_headers(path, body_len=len(compact(body))), json=reply)


def lookup(mocked, numbers: str, rows, *, form="BD_MATERIAL", keys=MATERIAL_KEYS, pk="FMaterialId"):
    body = {"data": {"FormId": form, "FieldKeys": keys,
                     "FilterString": f"(FNumber in ({numbers})) and (FUseOrgId.FNumber = '100')",
                     "OrderString": f"{pk} ASC", "TopRowCount": 0, "StartRow": 0, "Limit": 2000}}
    return expect(mocked, "ExecuteBillQuery", body, rows)


def status(successes=(), errors=(), code=0):
    if errors:
        return {"ErrorCode": 500, "IsSuccess": False, "Errors": list(errors), "SuccessEntitys": list(successes),
                "SuccessMessages": [], "MsgCode": code}
    return ok_status(SuccessEntitys=list(successes))


def ops_body(form, ids):
    return {"formid": form, "data": {"Ids": ids}}


def material_model(sku, name, unit="PCS", spec="", barcode=""):
    return {"FNumber": sku, "FName": name, "FSpecification": spec, "FBaseUnitId": {"FNumber": unit},
            "FIsBatchManage": False, "FBarCode": barcode, **ORGS}


def test_a_new_item_is_looked_up_batch_saved_submitted_and_audited(mocked):
    kd = connector()
    lookup(mocked, "'NEW-1'", [])
    expect(mocked, "BatchSave", {"formid": "BD_MATERIAL", "data": {"Model": [material_model("NEW-1", "卫衣", spec="M")]}},
           {"Result": {"ResponseStatus": status([{"Id": 100501, "Number": "NEW-1", "DIndex": 0}]),
                       "NeedReturnData": [{}]}})
    expect(mocked, "Submit", ops_body("BD_MATERIAL", "100501"),
           {"Result": {"ResponseStatus": status([{"Id": 100501, "Number": "NEW-1", "DIndex": 0}])}})
    expect(mocked, "Audit", ops_body("BD_MATERIAL", "100501"),
           {"Result": {"ResponseStatus": status([{"Id": 100501, "Number": "NEW-1", "DIndex": 0}])}})
    result = kd.upsert(Entity.ITEMS, [Item(sku="NEW-1", name="卫衣", spec="M", base_unit="PCS")])
    assert result == [Receipt(key="NEW-1", document_id="100501", document_number="NEW-1", created=True, status="C")]


def test_quotes_in_codes_are_doubled_in_the_lookup(mocked):
    kd = connector()
    lookup(mocked, "'O''BRIEN','A-1'", [["100001", "O'BRIEN", "x", "", "PCS", False, "A", "2025-01-01T00:00:00", "",
                                          "C"],
                                         ["100002", "A-1", "y", "", "PCS", False, "A", "2025-01-01T00:00:00", "", "C"]])
    results = kd.upsert(Entity.ITEMS, [Item(sku="O'BRIEN", name="x"), Item(sku="A-1", name="y")])
    assert [r.created for r in results] == [False, False]


def test_a_changed_audited_material_is_unaudited_saved_with_need_update_fields_and_audited(mocked):
    kd = connector()
    lookup(mocked, "'M-1'", [[100007, "M-1", "旧名", "", "PCS", False, "A", "2025-01-01T00:00:00", "", "C"]])
    one = {"Result": {"ResponseStatus": status([{"Id": 100007, "Number": "M-1", "DIndex": 0}])}}
    expect(mocked, "UnAudit", ops_body("BD_MATERIAL", "100007"), one)
    expect(mocked, "BatchSave", {"formid": "BD_MATERIAL", "data": {
        "Model": [{"FMaterialId": 100007, "FNumber": "M-1", "FName": "新名"}], "NeedUpDateFields": ["FName"]}}, one)
    expect(mocked, "Submit", ops_body("BD_MATERIAL", "100007"), one)
    expect(mocked, "Audit", ops_body("BD_MATERIAL", "100007"), one)
    result = kd.upsert(Entity.ITEMS, [Item(sku="M-1", name="新名")])
    assert result[0] == Receipt(key="M-1", document_id="100007", document_number="M-1", created=False, status="C")


def test_batchsave_errors_map_back_by_dindex_and_only_the_saved_are_submitted(mocked):
    kd = connector()
    lookup(mocked, "'BAD','OK'", [])
    expect(mocked, "BatchSave", {"formid": "BD_MATERIAL", "data": {"Model": [
        material_model("BAD", "a", unit="BOX"), material_model("OK", "b")]}},
        {"Result": {"ResponseStatus": status(
            [{"Id": 100010, "Number": "OK", "DIndex": 1}],
            [{"FieldName": "FBaseUnitId", "Message": "字段“基本单位”(FBaseUnitId)的编码“BOX”在计量单位中不存在",
              "DIndex": 0}], code=11), "NeedReturnData": [{}]}})
    expect(mocked, "Submit", ops_body("BD_MATERIAL", "100010"),
           {"Result": {"ResponseStatus": status([{"Id": 100010, "Number": "OK", "DIndex": 0}])}})
    expect(mocked, "Audit", ops_body("BD_MATERIAL", "100010"),
           {"Result": {"ResponseStatus": status([{"Id": 100010, "Number": "OK", "DIndex": 0}])}})
    bad, ok = kd.upsert(Entity.ITEMS, [Item(sku="BAD", name="a", base_unit="BOX"), Item(sku="OK", name="b")])
    assert isinstance(ok, Receipt) and ok.document_id == "100010"
    assert isinstance(bad, Rejected) and bad.vendor_code == "11" and bad.record == "Item 'BAD'"
    assert bad.details["fields"] == ["FBaseUnitId"] and "nothing was written" in bad.details["left"]


def test_models_the_answer_does_not_name_are_looked_up_and_sent_once_more_only_if_absent(mocked):
    kd = connector()
    lookup(mocked, "'BAD','OK'", [])
    # a server that refuses the whole batch because of model 0 and says nothing of model 1
    expect(mocked, "BatchSave", {"formid": "BD_MATERIAL", "data": {"Model": [
        material_model("BAD", "a", unit="BOX"), material_model("OK", "b")]}},
        {"Result": {"ResponseStatus": status([], [{"FieldName": "FBaseUnitId", "Message": "BOX 不存在", "DIndex": 0}],
                                             code=11)}})
    lookup(mocked, "'OK'", [])
    expect(mocked, "BatchSave", {"formid": "BD_MATERIAL", "data": {"Model": [material_model("OK", "b")]}},
           {"Result": {"ResponseStatus": status([{"Id": 100011, "Number": "OK", "DIndex": 0}])}})
    one = {"Result": {"ResponseStatus": status([{"Id": 100011, "Number": "OK", "DIndex": 0}])}}
    expect(mocked, "Submit", ops_body("BD_MATERIAL", "100011"), one)
    expect(mocked, "Audit", ops_body("BD_MATERIAL", "100011"), one)
    bad, ok = kd.upsert(Entity.ITEMS, [Item(sku="BAD", name="a", base_unit="BOX"), Item(sku="OK", name="b")])
    assert isinstance(bad, Rejected) and isinstance(ok, Receipt) and ok.created


def test_a_lost_batchsave_answer_is_ambiguous_for_each_record_and_not_resent(mocked):
    kd = connector()
    lookup(mocked, "'L-1','L-2'", [])
    mocked.add(responses.POST, url(FORM + "BatchSave"), body=requests.ConnectionError("connection reset"))
    results = kd.upsert(Entity.ITEMS, [Item(sku="L-1", name="a"), Item(sku="L-2", name="b")])
    assert [type(r) for r in results] == [Ambiguous, Ambiguous]
    assert [r.record for r in results] == ["Item 'L-1'", "Item 'L-2'"]
    assert len([c for c in mocked.calls if "BatchSave" in c.request.url]) == 1


def test_a_refused_submit_of_one_record_leaves_the_other_going(mocked):
    kd = connector()
    lookup(mocked, "'A','B'", [])
    expect(mocked, "BatchSave", {"formid": "BD_MATERIAL", "data": {"Model": [material_model("A", "a"),
                                                                              material_model("B", "b")]}},
           {"Result": {"ResponseStatus": status([{"Id": 1, "Number": "A", "DIndex": 0},
                                                 {"Id": 2, "Number": "B", "DIndex": 1}])}})
    expect(mocked, "Submit", ops_body("BD_MATERIAL", "1,2"),
           {"Result": {"ResponseStatus": status([{"Id": 2, "Number": "B", "DIndex": 1}],
                                                [{"FieldName": None, "Message": "工作流未配置", "DIndex": 0}],
                                                code=12)}})
    expect(mocked, "Audit", ops_body("BD_MATERIAL", "2"),
           {"Result": {"ResponseStatus": status([{"Id": 2, "Number": "B", "DIndex": 0}])}})
    a, b = kd.upsert(Entity.ITEMS, [Item(sku="A", name="a"), Item(sku="B", name="b")])
    assert isinstance(b, Receipt) and b.status == "C"
    assert isinstance(a, Rejected) and a.vendor_code == "12" and "Submit" in a.message
    assert a.details["id"] == "1" and "status A" in a.details["left"]


def test_a_new_warehouse_is_written_with_its_location_flag_and_organisation(mocked):
    kd = connector()
    keys = "FStockId,FNumber,FName,FUseOrgId.FNumber,FIsOpenLocation,FForbidStatus,FModifyDate,FDocumentStatus"
    lookup(mocked, "'WH-1'", [], form="BD_STOCK", keys=keys, pk="FStockId")
    one = {"Result": {"ResponseStatus": status([{"Id": 9, "Number": "WH-1", "DIndex": 0}])}}
    expect(mocked, "BatchSave", {"formid": "BD_STOCK", "data": {"Model": [
        {"FNumber": "WH-1", "FName": "一号仓", "FIsOpenLocation": True, **ORGS}]}}, one)
    expect(mocked, "Submit", ops_body("BD_STOCK", "9"), one)
    expect(mocked, "Audit", ops_body("BD_STOCK", "9"), one)
    expect(mocked, "ExcuteOperation", {"formid": "BD_STOCK", "opNumber": "Forbid", "data": {"Ids": "9"}}, one)
    result = kd.upsert(Entity.WAREHOUSES, [Warehouse(code="WH-1", name="一号仓", bin_managed=True, active=False)])
    assert isinstance(result[0], Receipt) and result[0].created
