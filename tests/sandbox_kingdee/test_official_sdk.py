"""The official Python SDK (PyPI kingdee-cdp-webapi-sdk 8.2.0), unmodified, against the simulator (doc §11).

If the SDK works here, the simulator verifies its real signatures, hands out the cookies it
expects and answers in the shapes it parses.
"""
from __future__ import annotations

import json

import pytest

from tests.sandbox_kingdee.conftest import ACCT, APP_ID, APP_SECRET, USER

sdk_main = pytest.importorskip("k3cloud_webapi_sdk.main", reason="kingdee-cdp-webapi-sdk is not installed "
                               "(pip install kingdee-cdp-webapi-sdk==8.2.0, the `test` extra)")


@pytest.fixture
def sdk(server):
    url = f"{server.url}/k3cloud/"
    client = sdk_main.K3CloudApiSdk(url, timeout=10)
    client.InitConfig(ACCT, USER, APP_ID, APP_SECRET, url, lcid=2052, org_num=0)
    return client


def test_the_doc_sample_query(sdk):
    rows = json.loads(sdk.ExecuteBillQuery({"FormId": "STK_Inventory", "FieldKeys": "FMaterialId.FNumber,FStockId.FNumber,FBaseQty",
                                            "FilterString": "FBaseQty > 0", "OrderString": "FMaterialId.FNumber",
                                            "StartRow": 0, "Limit": 2000}))
    assert rows == [["LOT001", "CK001", 7.0], ["MAT001", "CK001", 100.0], ["MAT002", "CK001", 5.0]]


def test_a_receipt_life_cycle_and_base_data_operation(sdk, sim):
    saved = json.loads(sdk.Save("STK_InStock", {"NeedReturnFields": ["FBillNo"], "IsDeleteEntry": "true", "Model": {
        "FBillTypeID": {"FNumber": "RKD01_SYS"}, "FDate": "2025-01-15", "FStockOrgId": {"FNumber": "100"},
        "FPurchaseOrgId": {"FNumber": "100"}, "FSupplierId": {"FNumber": "VEN001"}, "FNote": "供应商送货",
        "FInStockEntry": [{"FMaterialId": {"FNumber": "LOT001"}, "FUnitID": {"FNumber": "KG"}, "FRealQty": 10,
                           "FStockId": {"FNumber": "CK001"}, "FLot": {"FNumber": "L20250115"}}]}}))
    assert saved["Result"]["ResponseStatus"]["IsSuccess"] is True
    number, fid = saved["Result"]["Number"], saved["Result"]["Id"]
    submitted = json.loads(sdk.Submit("STK_InStock", {"Numbers": [number]}))
    audited = json.loads(sdk.Audit("STK_InStock", {"Ids": str(fid)}))
    assert submitted["Result"]["ResponseStatus"]["IsSuccess"] and audited["Result"]["ResponseStatus"]["IsSuccess"]
    assert sim.ledger.balance("LOT001", "CK001", None, "L20250115") == 10
    view = json.loads(sdk.View("STK_InStock", {"Number": number}))["Result"]["Result"]
    assert view["Note"] == "供应商送货" and view["DocumentStatus"] == "C"
    forbid = json.loads(sdk.ExcuteOperation("BD_MATERIAL", "Forbid", {"Numbers": ["MAT002"]}))
    assert forbid["Result"]["ResponseStatus"]["IsSuccess"] is True
    unaudit = json.loads(sdk.UnAudit("STK_InStock", {"Numbers": [number]}))
    assert unaudit["Result"]["ResponseStatus"]["IsSuccess"] and sim.ledger.balance("LOT001", "CK001", None, "L20250115") == 0
    assert len(sim.sessions) == 1  # the first signed call got a session; the SDK sent it back ever after


def test_the_sdk_reuses_its_session_after_expiry(sdk, sim):
    sdk.BillQuery({"FormId": "BD_STOCK", "FieldKeys": "FNumber"})
    sdk.BillQuery({"FormId": "BD_STOCK", "FieldKeys": "FNumber"})
    assert len(sim.sessions) == 1
    sim.expire_sessions()
    rows = json.loads(sdk.BillQuery({"FormId": "BD_STOCK", "FieldKeys": "FNumber", "OrderString": "FNumber"}))
    assert [r["FNumber"] for r in rows] == ["CK001", "CK002", "CK003"]
    sdk.BillQuery({"FormId": "BD_STOCK", "FieldKeys": "FNumber"})
    assert len(sim.sessions) == 1  # silently re-issued once, then reused


def test_async_batch_save(sdk):
    result = json.loads(sdk.BatchSaveQuery("BD_Customer", {"Model": [{"FNumber": "C9", "FName": "物料一"}]}))
    assert result["Result"]["ResponseStatus"]["SuccessEntitys"][0]["Number"] == "C9"


def test_a_wrong_account_id_raises(server):
    url = f"{server.url}/k3cloud/"
    client = sdk_main.K3CloudApiSdk(url, timeout=10)
    client.InitConfig("not-an-acct", USER, APP_ID, APP_SECRET, url)
    with pytest.raises(RuntimeError, match="Fail to verify thirty passport"):
        client.ExecuteBillQuery({"FormId": "BD_STOCK", "FieldKeys": "FNumber"})


def test_a_response_error_raises(sdk, sim):
    from sandbox.faults import ErrorFault, FaultPlan
    sim.faults.set(FaultPlan(errors=[ErrorFault(status=200, operation="View")]))
    with pytest.raises(RuntimeError, match="response_error"):
        sdk.View("BD_MATERIAL", {"Number": "MAT001"})
