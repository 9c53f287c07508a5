"""Writes, the Z/A/B/C/D life cycle and stock effects, over HTTP (doc §7, §8, §12.7-9)."""
from __future__ import annotations

from decimal import Decimal

import pytest
import requests

from sandbox.faults import DropAfterCommit, FaultPlan
from sandbox.kingdee import KingdeeSimulator
from sandbox.world import World, WorldItem, WorldWarehouse
from tests.sandbox_kingdee.conftest import K3, instock, outstock


def ok(status) -> bool:
    return status["IsSuccess"] is True and status["Errors"] == [] and status["MsgCode"] == 0


def stock(sim, sku="MAT001", wh="CK001", bin=None, lot=None) -> Decimal:
    return sim.ledger.balance(sku, wh, bin, lot)


# --- Save --------------------------------------------------------------------------------------

def test_save_assigns_ids_numbers_and_entry_ids_and_answers_the_documented_json(k3: K3, sim):
    result = k3.save("STK_InStock", {"NeedReturnFields": ["FBillNo", "FInStockEntry.FEntryID", "FSupplierId.FNumber",
                                                          "FDocumentStatus"], "Model": instock(10)})
    assert result == {
        "ResponseStatus": {"IsSuccess": True, "Errors": [], "SuccessEntitys": [{"Id": result["Id"], "Number": "CGRK00001",
                                                                                 "DIndex": 0}],
                           "SuccessMessages": [], "MsgCode": 0},
        "Id": result["Id"], "Number": "CGRK00001",
        "NeedReturnData": [{"FBillNo": "CGRK00001", "FSupplierId.FNumber": "VEN001", "FDocumentStatus": "A",
                            "FInStockEntry": [{"FEntryID": sim.bill("STK_InStock", "CGRK00001")["FInStockEntry"][0]["FEntryID"]}]}],
    }
    assert isinstance(result["Id"], int)
    second = k3.save("STK_InStock", {"Model": instock(1)})
    assert second["Number"] == "CGRK00002" and second["Id"] == result["Id"] + 1
    assert second["NeedReturnData"] == [{}]
    assert k3.save("SAL_OUTSTOCK", {"Model": outstock(1)})["Number"].startswith("XSCKD")
    assert stock(sim) == 100  # Save never moves stock


def test_a_given_bill_number_is_kept_and_must_be_unique(k3: K3):
    assert k3.save("STK_InStock", {"Model": instock(1, FBillNo="MY-1")})["Number"] == "MY-1"
    again = k3.save("STK_InStock", {"Model": instock(1, FBillNo="MY-1")})
    status = again["ResponseStatus"]
    assert (status["IsSuccess"], status["ErrorCode"], status["MsgCode"]) == (False, 500, 11)
    assert status["Errors"][0]["FieldName"] == "FBillNo" and (again["Id"], again["Number"]) == ("", "")
    assert again["NeedReturnData"] == [{}]


@pytest.mark.parametrize("change, field", [
    ({"FSupplierId": {"FNumber": "NOPE"}}, "FSupplierId"),
    ({"FStockOrgId": {"FNumber": "999"}}, "FStockOrgId"),
    ({"FBillTypeID": {"FNumber": "XX01_SYS"}}, "FBillTypeID"),
    ({"FSupplierId": None}, "FSupplierId"),
])
def test_unknown_or_missing_head_references_fail_naming_the_field(k3: K3, change, field):
    model = {**instock(1), **change}
    status = k3.save("STK_InStock", {"Model": model})["ResponseStatus"]
    assert status["MsgCode"] == 11 and field in [e["FieldName"] for e in status["Errors"]]


@pytest.mark.parametrize("line, field", [
    ({"FMaterialId": {"FNumber": "NOPE"}}, "FMaterialId"),
    ({"FStockId": {"FNumber": "NOPE"}}, "FStockId"),
    ({"FRealQty": 0}, "FRealQty"),
    ({"FRealQty": "abc"}, "FRealQty"),
    ({"FMaterialId": {"FNumber": "LOT001"}}, "FLot"),          # batch-managed without a lot
    ({"FStockId": {"FNumber": "CK003"}}, "FStockLocId"),       # warehouse with locations, none given
    ({"FStockId": {"FNumber": "CK003"}, "FStockLocId": {"FNumber": "Z-99"}}, "FStockLocId"),
])
def test_bad_lines_fail_with_msgcode_11(k3: K3, line, field):
    model = instock(1)
    model["FInStockEntry"][0].update(line)
    status = k3.save("STK_InStock", {"Model": model})["ResponseStatus"]
    assert status["MsgCode"] == 11 and field in [e["FieldName"] for e in status["Errors"]], status


def test_forbidden_material_cannot_be_used(k3: K3):
    assert ok(k3.call("ExcuteOperation", {"formid": "BD_MATERIAL", "opNumber": "Forbid",
                                          "data": {"Numbers": ["MAT001"]}})["Result"]["ResponseStatus"])
    status = k3.save("STK_InStock", {"Model": instock(1)})["ResponseStatus"]
    assert status["MsgCode"] == 11 and "已禁用" in status["Errors"][0]["Message"]
    rows = k3.query({"FormId": "BD_MATERIAL", "FieldKeys": "FNumber", "FilterString": "FForbidStatus = 'B'"})
    assert rows == [["MAT001"]]


def test_update_with_need_update_fields_and_is_delete_entry(k3: K3, sim):
    model = instock(1, FNote="first")
    model["FInStockEntry"].append({"FMaterialId": {"FNumber": "MAT002"}, "FRealQty": 2, "FStockId": {"FNumber": "CK001"}})
    saved = k3.save("STK_InStock", {"Model": model})
    bill = sim.bill("STK_InStock", saved["Number"])
    first, second = (row["FEntryID"] for row in bill["FInStockEntry"])
    # Partial update: only FNote and the first row's quantity; the second row survives (IsDeleteEntry false)
    k3.save("STK_InStock", {"NeedUpDateFields": ["FNote", "FInStockEntry", "FRealQty"], "IsDeleteEntry": "false",
                            "Model": {"FID": saved["Id"], "FNote": "second", "FDate": "2030-01-01",
                                      "FInStockEntry": [{"FEntryID": first, "FRealQty": 7, "FStockId": {"FNumber": "CK002"}}]}})
    bill = sim.bill("STK_InStock", saved["Number"])
    assert bill["FNote"] == "second" and bill["FDate"].year == 2025
    assert [(r["FEntryID"], r["FRealQty"], r["FBaseUnitQty"]) for r in bill["FInStockEntry"]] == [
        (first, 7, 7), (second, 2, 2)]
    assert sim.bill("STK_InStock", saved["Number"])["FInStockEntry"][0]["FStockId"] == bill["FInStockEntry"][1]["FStockId"]
    # Full update with IsDeleteEntry (default true): rows not sent are deleted, rows without FEntryID added
    k3.save("STK_InStock", {"Model": {"FID": saved["Id"], "FInStockEntry": [
        {"FEntryID": second, "FRealQty": 3},
        {"FMaterialId": {"FNumber": "MAT001"}, "FRealQty": 4, "FStockId": {"FNumber": "CK002"}}]}})
    rows = sim.bill("STK_InStock", saved["Number"])["FInStockEntry"]
    assert [r["FEntryID"] for r in rows][0] == second and first not in [r["FEntryID"] for r in rows]
    assert [(r["FSeq"], r["FRealQty"]) for r in rows] == [(1, 3), (2, 4)] and rows[1]["FEntryID"] > second


def test_draft_then_save(k3: K3, sim):
    draft = k3.save("STK_InStock", {"Model": {"FNote": "draft", "FSupplierId": {"FNumber": "NOPE"}}}, op="Draft")
    assert ok(draft["ResponseStatus"]) and draft["Number"] == ""
    rows = k3.query({"FormId": "STK_InStock", "FieldKeys": "FID,FBillNo,FDocumentStatus"})
    assert rows == [[draft["Id"], "", "Z"]]
    assert not ok(k3.op("Submit", "STK_InStock", {"Ids": draft["Id"]}))  # Z cannot be submitted
    saved = k3.save("STK_InStock", {"Model": {**instock(2), "FID": draft["Id"]}})
    assert ok(saved["ResponseStatus"]) and saved["Id"] == draft["Id"] and saved["Number"] == "CGRK00001"
    assert sim.bill("STK_InStock", "CGRK00001")["FDocumentStatus"] == "A"


def test_batch_save_partial_failure_per_model(k3: K3, sim):
    models = [instock(1, FNote="a"), {**instock(1), "FSupplierId": {"FNumber": "NOPE"}}, instock(2, FNote="c")]
    result = k3.save("STK_InStock", {"Model": models, "NeedReturnFields": ["FNote"]}, op="BatchSave")
    status = result["ResponseStatus"]
    assert (status["IsSuccess"], status["ErrorCode"], status["MsgCode"]) == (False, 500, 11)
    assert [e["DIndex"] for e in status["Errors"]] == [1] and status["Errors"][0]["FieldName"] == "FSupplierId"
    assert [(s["Number"], s["DIndex"]) for s in status["SuccessEntitys"]] == [("CGRK00001", 0), ("CGRK00002", 2)]
    assert result["NeedReturnData"] == [{"FNote": "a"}, {"FNote": "c"}]
    assert sim.documents_for("a") == ["CGRK00001"] and sim.documents_for("c") == ["CGRK00002"]
    every = k3.save("STK_InStock", {"Model": [instock(1), instock(1)]}, op="BatchSave")
    assert ok(every["ResponseStatus"]) and len(every["ResponseStatus"]["SuccessEntitys"]) == 2


def test_async_batch_save(k3: K3):
    answer = k3.call("BatchSave", {"formid": "STK_InStock", "data": {"Model": [instock(1)]},
                                   "beginmethod": "BeginQueryImpl", "querymethod": "QueryAsyncResult"})
    assert answer["Status"] == 2 and ok(answer["Result"]["Result"]["ResponseStatus"])
    polled = k3.call("QueryAsyncResult", {"queryInfo": f'{{"TaskId": "{answer["TaskId"]}", "Cancelled": false}}'})
    assert polled["Result"] == answer["Result"]


def test_view_by_number_and_id(k3: K3):
    saved = k3.save("STK_InStock", {"Model": instock(3, FNote="viewed")})
    for data in ({"Number": saved["Number"]}, {"Id": saved["Id"]}, {"Id": str(saved["Id"]), "Number": "ignored"}):
        view = k3.call("View", {"formid": "STK_InStock", "data": data})["Result"]
        assert ok(view["ResponseStatus"])
        bill = view["Result"]
        assert (bill["Id"], bill["BillNo"], bill["DocumentStatus"], bill["Note"]) == (saved["Id"], saved["Number"], "A", "viewed")
        assert bill["SupplierId"]["Number"] == "VEN001" and bill["InStockEntry"][0]["RealQty"] == 3.0
        assert bill["InStockEntry"][0]["MaterialId"]["Number"] == "MAT001" and bill["Date"] == "2025-01-15T00:00:00"
    missing = k3.call("View", {"formid": "STK_InStock", "data": {"Number": "NOPE"}})["Result"]
    assert missing["ResponseStatus"]["IsSuccess"] is False and missing["Result"] is None
    material = k3.call("View", {"formid": "BD_MATERIAL", "data": {"Number": "MAT001"}})["Result"]["Result"]
    assert material["Number"] == "MAT001" and material["BaseUnitId"]["Number"] == "PCS"


# --- life cycle --------------------------------------------------------------------------------

def test_the_status_machine(k3: K3, sim):
    number = k3.save("STK_InStock", {"Model": instock(5)})["Number"]

    def status():
        return k3.query({"FormId": "STK_InStock", "FieldKeys": "FDocumentStatus", "FilterString": f"FBillNo='{number}'"})[0][0]

    def refused(op, code=12):
        answer = k3.op(op, "STK_InStock", {"Numbers": [number]})
        assert answer["IsSuccess"] is False and answer["MsgCode"] == code and answer["Errors"][0]["DIndex"] == 0, answer
    assert status() == "A"
    refused("Audit")
    refused("UnAudit")
    refused("CancelAssign")
    assert ok(k3.op("Submit", "STK_InStock", {"Numbers": [number]})) and status() == "B"
    refused("Submit")
    refused("Delete")
    assert k3.save("STK_InStock", {"Model": {"FID": sim.bill("STK_InStock", number)["FID"], "FNote": "x"}})[
        "ResponseStatus"]["MsgCode"] == 12
    assert ok(k3.op("CancelAssign", "STK_InStock", {"Numbers": number})) and status() == "D"
    assert ok(k3.op("Submit", "STK_InStock", {"Numbers": [number]})) and status() == "B"
    assert ok(k3.op("Audit", "STK_InStock", {"Numbers": [number]})) and status() == "C"
    assert stock(sim) == 105
    refused("Delete")
    refused("Audit")
    assert ok(k3.op("UnAudit", "STK_InStock", {"Numbers": [number]})) and status() == "D"
    assert stock(sim) == 100
    assert ok(k3.op("Delete", "STK_InStock", {"Numbers": [number]}))
    assert k3.query({"FormId": "STK_InStock", "FieldKeys": "FBillNo"}) == []


def test_ids_take_priority_and_every_id_is_processed_and_reported(k3: K3, sim):
    ids = [k3.save("STK_InStock", {"Model": instock(1)})["Id"] for _ in range(3)]
    k3.op("Submit", "STK_InStock", {"Ids": ids[1]})  # an int
    answer = k3.op("Submit", "STK_InStock", {"Ids": f"{ids[0]},{ids[1]}, {ids[2]},999999", "Numbers": ["CGRK00001"]})
    assert answer["IsSuccess"] is False and answer["ErrorCode"] == 500
    assert [(s["Id"], s["DIndex"]) for s in answer["SuccessEntitys"]] == [(ids[0], 0), (ids[2], 2)]
    assert sorted(e["DIndex"] for e in answer["Errors"]) == [1, 3]
    audited = k3.op("Audit", "STK_InStock", {"Ids": [str(i) for i in ids]})
    assert ok(audited) and [s["Number"] for s in audited["SuccessEntitys"]] == ["CGRK00001", "CGRK00002", "CGRK00003"]
    assert stock(sim) == 103
    assert k3.op("Audit", "STK_InStock", {})["MsgCode"] == 5


def test_modify_date_is_stamped_from_the_clock_on_every_write():
    now = [1736900000.0]  # 2025-01-15T08:13:20+08:00
    sim = KingdeeSimulator(clock=lambda: now[0])
    sim.seed_world(World(items=(WorldItem("MAT001", "x"),), warehouses=(WorldWarehouse("CK001", "w"),)))
    sim.seed({"world": {"partners": [{"code": "VEN001", "name": "v", "role": "supplier"}]}})
    with sim.serve() as srv:
        k3 = K3(srv.url)

        def modified():
            return k3.query({"FormId": "STK_InStock", "FieldKeys": "FModifyDate"})[0][0]
        number = k3.save("STK_InStock", {"Model": instock(1)})["Number"]
        assert modified() == "2025-01-15T08:13:20"
        for op, at in (("Submit", 1.25), ("Audit", 2.5), ("UnAudit", 3.125)):
            now[0] += at
            k3.op(op, "STK_InStock", {"Numbers": [number]})
        assert modified() == "2025-01-15T08:13:26.875"
        now[0] += 60
        k3.call("ExcuteOperation", {"formid": "BD_MATERIAL", "opNumber": "Forbid", "data": {"Numbers": ["MAT001"]}})
        assert k3.query({"FormId": "BD_MATERIAL", "FieldKeys": "FModifyDate,FForbidStatus"}) == [["2025-01-15T08:14:26.875", "B"]]


def test_forbid_enable_and_unknown_operations(k3: K3):
    def run(op_number, form="BD_STOCK", numbers=("CK002",)):
        return k3.call("ExcuteOperation", {"formid": form, "opNumber": op_number, "data": {"Numbers": list(numbers)}})[
            "Result"]["ResponseStatus"]
    assert ok(run("Forbid")) and run("Forbid")["MsgCode"] == 12
    assert ok(run("Enable"))
    assert run("Explode")["MsgCode"] == 4
    assert run("Forbid", form="STK_InStock")["MsgCode"] == 4


# --- stock -------------------------------------------------------------------------------------

def inventory(k3: K3, sku: str = "MAT001", wh: str = "CK001") -> float:
    rows = k3.query({"FormId": "STK_Inventory", "FieldKeys": "FBaseQty",
                     "FilterString": f"FMaterialId.FNumber = '{sku}' and FStockId.FNumber = '{wh}'"})
    return sum(r[0] for r in rows)


def test_audit_posts_and_unaudit_reverses(k3: K3, sim):
    number = k3.save("SAL_OUTSTOCK", {"Model": outstock(30)})["Number"]
    k3.op("Submit", "SAL_OUTSTOCK", {"Numbers": [number]})
    assert ok(k3.op("Audit", "SAL_OUTSTOCK", {"Numbers": [number]}))
    assert stock(sim) == 70 and inventory(k3) == 70.0
    assert k3.query({"FormId": "SAL_OUTSTOCK", "FieldKeys": "FStockFlag"}) == [[True]]
    assert [p.document_ref for p in sim.ledger.history()] == [number]
    assert ok(k3.op("UnAudit", "SAL_OUTSTOCK", {"Numbers": [number]}))
    assert stock(sim) == 100 and inventory(k3) == 100.0
    assert k3.query({"FormId": "SAL_OUTSTOCK", "FieldKeys": "FStockFlag"}) == [[False]]


def test_negative_stock_is_refused_and_the_bill_stays_submitted(k3: K3, sim):
    model = outstock(150)
    model["FEntity"].append({"FMaterialID": {"FNumber": "MAT002"}, "FRealQty": 6, "FStockID": {"FNumber": "CK001"}})
    number = k3.save("SAL_OUTSTOCK", {"Model": model})["Number"]
    k3.op("Submit", "SAL_OUTSTOCK", {"Numbers": [number]})
    answer = k3.op("Audit", "SAL_OUTSTOCK", {"Numbers": [number]})
    assert answer["IsSuccess"] is False and answer["MsgCode"] == 11
    message = answer["Errors"][0]["Message"]
    assert "MAT001" in message and "MAT002" in message and "CK001" in message
    assert k3.query({"FormId": "SAL_OUTSTOCK", "FieldKeys": "FDocumentStatus"}) == [["B"]]
    assert stock(sim) == 100 and sim.ledger.history() == ()
    # With the interaction flag the audit goes through
    assert ok(k3.op("Audit", "SAL_OUTSTOCK", {"Numbers": [number], "InterationFlags": "STK_InvCheckResult",
                                              "IgnoreInterationFlag": True}))
    assert stock(sim) == -50 and stock(sim, "MAT002") == -1 and inventory(k3) == -50.0


def test_auto_submit_and_audit_is_one_transaction(k3: K3, sim):
    refused = k3.save("SAL_OUTSTOCK", {"Model": outstock(1000), "IsAutoSubmitAndAudit": "true"})
    assert refused["ResponseStatus"]["MsgCode"] == 11 and refused["Id"] == ""
    assert k3.query({"FormId": "SAL_OUTSTOCK", "FieldKeys": "FBillNo"}) == []
    passed = k3.save("SAL_OUTSTOCK", {"Model": outstock(1000), "IsAutoSubmitAndAudit": "true",
                                      "InterationFlags": "STK_InvCheckResult"})
    assert ok(passed["ResponseStatus"]) and stock(sim) == -900
    assert sim.bill("SAL_OUTSTOCK", passed["Number"])["FDocumentStatus"] == "C"


def test_unaudit_that_would_go_negative_is_refused(k3: K3, sim):
    receipt = k3.save("STK_InStock", {"Model": instock(10, material="MAT002"), "IsAutoSubmitAndAudit": True})["Number"]
    k3.save("SAL_OUTSTOCK", {"Model": outstock(15, material="MAT002"), "IsAutoSubmitAndAudit": True})
    answer = k3.op("UnAudit", "STK_InStock", {"Numbers": [receipt]})
    assert answer["MsgCode"] == 11 and stock(sim, "MAT002") == 0
    assert sim.bill("STK_InStock", receipt)["FDocumentStatus"] == "C"


def test_transfer_moves_from_source_to_destination_bins(k3: K3, sim):
    model = {"FStockOutOrgId": {"FNumber": "100"}, "FStockOrgId": {"FNumber": "100"}, "FBillEntry": [
        {"FMaterialId": {"FNumber": "MAT001"}, "FQty": 40, "FSrcStockId": {"FNumber": "CK001"},
         "FDestStockId": {"FNumber": "CK003"}, "FDestStockLocId": {"FSTOCKLOCID__FF100001": {"FNumber": "A-02"}}}]}
    saved = k3.save("STK_TransferDirect", {"Model": model, "IsAutoSubmitAndAudit": True})
    assert ok(saved["ResponseStatus"]) and saved["Number"].startswith("ZJDB")
    assert stock(sim) == 60 and stock(sim, wh="CK003", bin="A-02") == 40
    rows = k3.query({"FormId": "STK_TransferDirect", "FieldKeys": "FBillEntry_FEntryID,FSrcStockId.FNumber,"
                                                                  "FDestStockId.FNumber,FDestStockLocId.FNumber,FBaseQty"})
    assert rows[0][1:] == ["CK001", "CK003", "A-02", 40.0]


def test_lots_follow_the_lines(k3: K3, sim):
    model = instock(3, material="LOT001")
    model["FInStockEntry"][0]["FLot"] = {"FNumber": "L2"}
    k3.save("STK_InStock", {"Model": model, "IsAutoSubmitAndAudit": True})
    assert stock(sim, "LOT001", lot="L2") == 3 and stock(sim, "LOT001", lot="L1") == 7
    rows = k3.query({"FormId": "STK_Inventory", "FieldKeys": "FLot.FNumber,FBaseQty",
                     "FilterString": "FMaterialId.FNumber = 'LOT001'", "OrderString": "FLot.FNumber"})
    assert rows == [["L1", 7.0], ["L2", 3.0]]


@pytest.mark.parametrize("form, entry, qty_key, sign, head", [
    ("STK_MISCELLANEOUS", "FEntity", "FQty", +1, {}),
    ("STK_MISCELLANEOUS", "FEntity", "FQty", -1, {"FStockDirect": "RETURN"}),
    ("STK_MisDelivery", "FEntity", "FQty", -1, {}),
    ("STK_StockCountGain", "FBillEntry", "FGainQty", +1, {}),
    ("STK_StockCountLoss", "FBillEntry", "FLossQty", -1, {}),
    ("SAL_RETURNSTOCK", "FEntity", "FRealQty", +1, {"FRetcustId": {"FNumber": "CUS001"}}),
    ("PUR_MRB", "FPURMRBENTRY", "FRMREALQTY", -1, {"FSupplierID": {"FNumber": "VEN001"}}),
])
def test_every_stock_form_moves_its_quantity(k3: K3, sim, form, entry, qty_key, sign, head):
    model = {"FStockOrgId": {"FNumber": "100"}, **head,
             entry: [{"FMaterialId": {"FNumber": "MAT001"}, qty_key: 4, "FStockId": {"FNumber": "CK001"}}]}
    saved = k3.save(form, {"Model": model, "IsAutoSubmitAndAudit": "true"})
    assert ok(saved["ResponseStatus"]), saved
    assert stock(sim) == 100 + sign * 4
    keys = k3.query({"FormId": form, "FieldKeys": f"{entry}_FEntryID,{entry}_FSeq,FBillTypeID.FNumber"})
    assert keys[0][1] == 1 and keys[0][2].endswith("_SYS")


# --- harness hooks -----------------------------------------------------------------------------

def test_documents_for_by_bill_number_or_remark(k3: K3, sim):
    first = k3.save("STK_InStock", {"Model": instock(1, FNote="mv-42")})["Number"]
    second = k3.save("STK_InStock", {"Model": instock(1, FBillNo="mv-43")})["Number"]
    k3.save("SAL_OUTSTOCK", {"Model": outstock(1, FNote="mv-42")})
    assert sim.documents_for("mv-42") == [first, "XSCKD00001"] and sim.documents_for("mv-43") == [second]
    k3.op("Delete", "STK_InStock", {"Numbers": [first]})
    k3.call("ExcuteOperation", {"formid": "SAL_OUTSTOCK", "opNumber": "Cancel", "data": {"Numbers": ["XSCKD00001"]}})
    assert sim.documents_for("mv-42") == []
    answer = requests.get(f"{k3.base}/_admin/documents", params={"reference": "mv-43"}, timeout=5).json()
    assert answer == {"documents": ["mv-43"]}


def test_remark_field_is_configurable():
    sim = KingdeeSimulator(remark_field="FBillNo")
    assert sim.documents_for("x") == []


def test_touch_sets_the_modify_date(k3: K3, sim):
    sim.touch("items", "MAT002", 1735689600)  # 2025-01-01T08:00:00+08:00
    sim.touch("partners", "VEN001", 1735689601)
    assert k3.query({"FormId": "BD_MATERIAL", "FieldKeys": "FNumber", "FilterString": "FModifyDate < '2025-01-02'"}) == [["MAT002"]]
    assert k3.query({"FormId": "BD_Supplier", "FieldKeys": "FModifyDate"}) == [["2025-01-01T08:00:01"]]
    sim.touch("warehouses", "CK002")
    with pytest.raises(ValueError):
        sim.touch("items", "NOPE")


def test_seed_world_shapes(k3: K3):
    stocks = k3.bill_query({"FormId": "BD_STOCK", "FieldKeys": "FNumber,FName,FIsOpenLocation", "OrderString": "FNumber"})
    assert stocks[2] == {"FNumber": "CK003", "FName": "货架仓", "FIsOpenLocation": True}
    assert k3.query({"FormId": "BD_Customer", "FieldKeys": "FNumber,FName,FForbidStatus,FDocumentStatus"}) == [
        ["CUS001", "客户一", "A", "C"]]


def test_seed_native_records_over_the_admin_route(k3: K3, sim):
    seed = {"records": {
        "BD_MATERIAL": [{"FNumber": "RAW1", "FName": "原料", "FBaseUnitId": {"FNumber": "PCS"}, "FModifyDate": "2024-05-01 10:00:00"}],
        "STK_InStock": [{"FBillNo": "OLD-1", "FDocumentStatus": "C", "FSupplierId": {"FNumber": "VEN001"},
                         "FInStockEntry": [{"FMaterialId": {"FNumber": "RAW1"}, "FRealQty": 2.5, "FStockId": {"FNumber": "CK002"}}]}],
    }}
    assert requests.post(f"{k3.base}/_admin/seed", json=seed, timeout=5).json() == {"seeded": True}
    assert k3.query({"FormId": "BD_MATERIAL", "FieldKeys": "FModifyDate", "FilterString": "FNumber = 'RAW1'"}) == [["2024-05-01T10:00:00"]]
    assert stock(sim, "RAW1", "CK002") == Decimal("2.5")
    assert ok(k3.op("UnAudit", "STK_InStock", {"Numbers": ["OLD-1"]})) and stock(sim, "RAW1", "CK002") == 0
    bad = requests.post(f"{k3.base}/_admin/seed", json={"records": {"STK_InStock": [{"FSupplierId": {"FNumber": "X"},
                                                                                     "FInStockEntry": []}]}}, timeout=5)
    assert bad.status_code == 400


def test_a_dropped_answer_after_commit(k3: K3, sim):
    sim.faults.set(FaultPlan(drop_after_commit=[DropAfterCommit(operation="Save")]))
    with pytest.raises(requests.ConnectionError):
        k3.raw("Save", {"formid": "STK_InStock", "data": {"Model": instock(1, FNote="lost")}})
    assert sim.documents_for("lost") == ["CGRK00001"]
    assert [c.fault for c in sim.calls.list(operation="Save")] == ["dropped"]


def test_reset_forgets_everything(k3: K3, sim):
    k3.save("STK_InStock", {"Model": instock(1)})
    requests.post(f"{k3.base}/_admin/reset", timeout=5)
    assert k3.query({"FormId": "STK_InStock", "FieldKeys": "FBillNo"}) == []
    assert k3.query({"FormId": "BD_MATERIAL", "FieldKeys": "FNumber"}) == []
