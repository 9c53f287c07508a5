"""ExecuteBillQuery / BillQuery semantics over HTTP (doc §5, §6, §12.4-6, §12.10)."""
from __future__ import annotations

from decimal import Decimal

import pytest

from sandbox.kingdee import KingdeeSimulator
from sandbox.world import World, WorldItem
from tests.sandbox_kingdee.conftest import K3, instock


def status_of(answer):
    return answer[0][0]["Result"]["ResponseStatus"]


@pytest.fixture
def bills(k3: K3):
    """Two audited receipts, the second with two lines, plus one saved (A) receipt."""
    first = k3.save("STK_InStock", {"Model": instock(10, FNote="ref-1"), "IsAutoSubmitAndAudit": True})
    model = instock(4, FNote="ref-2", FDate="2025-02-01 08:30:00")
    model["FInStockEntry"].append({"FMaterialId": {"FNumber": "MAT002"}, "FRealQty": "2.5",
                                   "FStockId": {"FNumber": "CK002"}})
    second = k3.save("STK_InStock", {"Model": model, "IsAutoSubmitAndAudit": "true"})
    third = k3.save("STK_InStock", {"Model": instock(1, FDate="2025-03-01")})
    return [first["Number"], second["Number"], third["Number"]]


def test_field_keys_order_dotted_keys_and_internal_ids(k3: K3, sim):
    rows = k3.query({"FormId": "BD_MATERIAL", "FieldKeys": "FName, FMATERIALID,FNumber ,FBaseUnitId,fbaseunitid.fnumber,"
                                                          "FIsBatchManage,FSpecification",
                     "OrderString": "FNumber"})
    material = sim.bill("BD_MATERIAL", "LOT001")
    assert rows[0] == ["胶水", material["FMATERIALID"], "LOT001", material["FBaseUnitId"], "KG", True, ""]
    assert rows[1][2:] == ["MAT001", rows[1][3], "PCS", False, "M3"]
    assert isinstance(rows[0][1], int) and isinstance(rows[0][3], int)


def test_bill_query_keys_objects_as_sent(k3: K3):
    rows = k3.bill_query({"FormId": "STK_Inventory", "FieldKeys": "FmaterialID.Fnumber,FBaseQty, FAVBQty",
                          "FilterString": "FStockId.FNumber = 'CK001' and FLot.FNumber is null", "OrderString": "FBaseQty desc"})
    assert rows == [{"FmaterialID.Fnumber": "MAT001", "FBaseQty": 100.0, "FAVBQty": 100.0},
                    {"FmaterialID.Fnumber": "MAT002", "FBaseQty": 5.0, "FAVBQty": 5.0}]


def test_one_row_per_entry_line_with_head_values_repeated(k3: K3, bills):
    rows = k3.query({"FormId": "STK_InStock", "FieldKeys": "FBillNo,FNote,FInStockEntry_FSeq,FMaterialId.FNumber,"
                                                           "FRealQty,FBaseUnitQty,FStockId.FNumber,FDocumentStatus",
                     "FilterString": f"FBillNo = '{bills[1]}'"})
    assert rows == [[bills[1], "ref-2", 1, "MAT001", 4.0, 4.0, "CK001", "C"],
                    [bills[1], "ref-2", 2, "MAT002", 2.5, 2.5, "CK002", "C"]]
    entry_ids = k3.query({"FormId": "STK_InStock", "FieldKeys": "FInStockEntry_FEntryId", "FilterString": f"FBillNo = '{bills[1]}'"})
    assert len({r[0] for r in entry_ids}) == 2 and all(isinstance(r[0], int) for r in entry_ids)


def test_head_only_keys_give_one_row_per_bill(k3: K3, bills):
    assert k3.query({"FormId": "STK_InStock", "FieldKeys": "FBillNo", "OrderString": "FID"}) == [[b] for b in bills]
    # an entry field in the filter brings the lines back
    rows = k3.query({"FormId": "STK_InStock", "FieldKeys": "FBillNo", "FilterString": "FRealQty > 0", "OrderString": "FID"})
    assert [r[0] for r in rows] == [bills[0], bills[1], bills[1], bills[2]]


def test_values_are_local_iso_datetimes_and_floats(k3: K3, bills):
    rows = k3.query({"FormId": "STK_InStock", "FieldKeys": "FDate,FModifyDate,FApproveDate,FStockFlag",
                     "FilterString": f"FBillNo = '{bills[1]}'"})
    date, modified, approved, flag = rows[0]
    assert date == "2025-02-01T08:30:00" and flag is True
    for stamp in (modified, approved):
        assert "T" in stamp and "+" not in stamp and not stamp.endswith("Z")
        assert len(stamp) in (19, 21, 22, 23)  # variable fraction, trailing zeros trimmed


def test_timezone_is_configurable():
    sim = KingdeeSimulator(timezone="UTC", clock=lambda: 1735689600.5)  # 2025-01-01T00:00:00.5Z
    sim.seed_world(World(items=(WorldItem("X", "x"),)))
    with sim.serve() as srv:
        rows = K3(srv.url).query({"FormId": "BD_MATERIAL", "FieldKeys": "FModifyDate"})
    assert rows == [["2025-01-01T00:00:00.5"]]
    shanghai = KingdeeSimulator(clock=lambda: 1735689600.25)
    shanghai.seed_world(World(items=(WorldItem("X", "x"),)))
    with shanghai.serve() as srv:
        assert K3(srv.url).query({"FormId": "BD_MATERIAL", "FieldKeys": "FModifyDate"}) == [["2025-01-01T08:00:00.25"]]


@pytest.mark.parametrize("filter_string, expected", [
    ("FNumber = 'MAT001'", ["MAT001"]),
    ("fnumber = 'mat001'", ["MAT001"]),                       # case-insensitive collation
    ("FNumber <> 'MAT001'", ["LOT001", "MAT002"]),
    ("FNumber != 'MAT001'", ["LOT001", "MAT002"]),
    ("FNumber like 'MAT%'", ["MAT001", "MAT002"]),
    ("FNumber like 'MAT00_'", ["MAT001", "MAT002"]),
    ("FNumber like '[LM]AT%'", ["MAT001", "MAT002"]),
    ("FNumber like '%[^2]'", ["LOT001", "MAT001"]),
    ("FNumber not like 'MAT%'", ["LOT001"]),
    ("FNumber in ('MAT001', 'LOT001')", ["LOT001", "MAT001"]),
    ("FNumber not in ('MAT001')", ["LOT001", "MAT002"]),
    ("not FNumber = 'MAT001'", ["LOT001", "MAT002"]),
    ("FNumber = 'MAT001' or (FName = '螺母' and FForbidStatus = 'A')", ["MAT001", "MAT002"]),
    ("FIsBatchManage = 1", ["LOT001"]),
    ("FIsBatchManage = '0' and FBaseUnitId.FNumber = 'PCS'", ["MAT001", "MAT002"]),
    ("FMATERIALID >= 100002", ["MAT002", "LOT001"]),
    ("FCreateDate > '2000-01-01' and FCreateDate <= '2999-12-31 23:59:59'", ["LOT001", "MAT001", "MAT002"]),
    ("FNumber between 'LOT001' and 'MAT001'", ["LOT001", "MAT001"]),
    ("FSpecification is not null and FSpecification <> ''", ["MAT001"]),
    ("FSpecification is null", []),
    ("", ["LOT001", "MAT001", "MAT002"]),
])
def test_filter_string(k3: K3, filter_string, expected):
    rows = k3.query({"FormId": "BD_MATERIAL", "FieldKeys": "FNumber", "FilterString": filter_string})
    assert sorted(r[0] for r in rows) == sorted(expected)


def test_dates_compare_as_datetimes(k3: K3, bills):
    rows = k3.query({"FormId": "STK_InStock", "FieldKeys": "FBillNo", "FilterString": "FDate >= '2025-02-01'"})
    assert [r[0] for r in rows] == bills[1:]
    rows = k3.query({"FormId": "STK_InStock", "FieldKeys": "FBillNo", "FilterString": "FDate > '2025-02-01 08:30'"})
    assert [r[0] for r in rows] == bills[2:]
    rows = k3.query({"FormId": "STK_InStock", "FieldKeys": "FBillNo", "FilterString": "FDate = '2025/01/15'"})
    assert [r[0] for r in rows] == bills[:1]


@pytest.mark.parametrize("filter_string", [
    "FNumber = ", "FNumber = 'x", "FNumber == 'x'", "(FNumber = 'x'", "FNumber = 'x')", "FNumber 'x'",
    "FNumber = 'x' and", "to_char(FModifyDate,'yyyy') = '2025'", "FNumber = 'x'; drop table t", "FNumber in ()",
    "FCreateDate > 'yesterday'", "FMATERIALID > 'abc'",
])
def test_invalid_filters_are_msgcode_4_get_real_express(k3: K3, filter_string):
    status = status_of(k3.query({"FormId": "BD_MATERIAL", "FieldKeys": "FNumber", "FilterString": filter_string}))
    assert status["MsgCode"] == 4 and status["Errors"][0]["Message"].startswith("GetRealExpress error")


@pytest.mark.parametrize("data", [
    {"FieldKeys": "FNumber,FNoSuchField"}, {"FieldKeys": "FNumber", "FilterString": "FNope = 1"},
    {"FieldKeys": "FNumber", "OrderString": "FNope"}, {"FieldKeys": "FBaseUnitId.FNope"},
    {"FieldKeys": "FName.FNumber"},
])
def test_unknown_fields_are_msgcode_9(k3: K3, data):
    status = status_of(k3.query({"FormId": "BD_MATERIAL", **data}))
    assert status["MsgCode"] == 9 and status["IsSuccess"] is False and status["ErrorCode"] == 500


def test_bare_entry_id_is_not_a_simple_field(k3: K3):
    assert status_of(k3.query({"FormId": "STK_InStock", "FieldKeys": "FEntryID"}))["MsgCode"] == 9


@pytest.mark.parametrize("field_keys", ["", " , ", None])
def test_empty_field_keys_are_msgcode_8(k3: K3, field_keys):
    data = {"FormId": "BD_MATERIAL"} | ({} if field_keys is None else {"FieldKeys": field_keys})
    assert status_of(k3.query(data))["MsgCode"] == 8
    assert k3.bill_query(data)["Result"]["ResponseStatus"]["MsgCode"] == 8  # BillQuery: bare


def test_unknown_form_is_msgcode_4(k3: K3):
    status = status_of(k3.query({"FormId": "NOPE", "FieldKeys": "FNumber"}))
    assert status["MsgCode"] == 4 and "业务对象不存在" in status["Errors"][0]["Message"]


def test_order_string_multiple_keys(k3: K3, bills):
    rows = k3.query({"FormId": "STK_InStock", "FieldKeys": "FBillNo,FMaterialId.FNumber",
                     "OrderString": "FMaterialId.FNumber DESC, FBillNo asc"})
    assert rows == [[bills[1], "MAT002"], [bills[0], "MAT001"], [bills[1], "MAT001"], [bills[2], "MAT001"]]
    assert status_of(k3.query({"FormId": "STK_InStock", "FieldKeys": "FBillNo", "OrderString": "FBillNo DOWN"}))["MsgCode"] == 4


def test_filter_array_form(k3: K3):
    rows = k3.query({"FormId": "BD_MATERIAL", "FieldKeys": "FNumber", "FilterString": [
        {"Left": "(", "FieldName": "FNumber", "Compare": "67", "Value": "MAT001", "Right": "", "Logic": 1},
        {"Left": "", "FieldName": "FNumber", "Compare": "=", "Value": "LOT001", "Right": ")", "Logic": "OR"}]})
    assert sorted(r[0] for r in rows) == ["LOT001", "MAT001"]


# --- paging -----------------------------------------------------------------------------------

@pytest.fixture
def many(sim: KingdeeSimulator):
    sim.seed_world(World(items=tuple(WorldItem(f"P{i:03d}", f"n{i}") for i in range(25))))
    return [f"P{i:03d}" for i in range(25)]


def page(k3: K3, **paging):
    rows = k3.query({"FormId": "BD_MATERIAL", "FieldKeys": "FNumber", "FilterString": "FNumber like 'P%'",
                     "OrderString": "FNumber", **paging})
    return [r[0] for r in rows]


def test_paging_rule(k3: K3, many):
    assert page(k3, StartRow=0, Limit=10) == many[:10]
    assert page(k3, StartRow=20, Limit=10) == many[20:]
    assert page(k3, StartRow=30, Limit=10) == []
    assert page(k3) == many
    assert page(k3, TopRowCount=5) == many[:5]
    assert page(k3, TopRowCount=0, StartRow=10, Limit=0) == many[10:]


def test_the_top_row_count_trap(k3: K3, many):
    # TopRowCount caps the total before the StartRow window: page 2 of size 10 comes back empty
    assert page(k3, TopRowCount=10, StartRow=10, Limit=10) == []
    assert page(k3, TopRowCount=15, StartRow=10, Limit=10) == many[10:15]
    assert page(k3, TopRowCount=20, StartRow=10, Limit=10) == many[10:20]


@pytest.mark.parametrize("maximum", [2000, 10000, 7])
def test_limit_is_capped_by_the_configured_maximum(maximum):
    sim = KingdeeSimulator(max_page_size=maximum)
    sim.seed_world(World(items=tuple(WorldItem(f"P{i:05d}", "n") for i in range(min(maximum + 5, 2010)))))
    with sim.serve() as srv:
        k3 = K3(srv.url)
        expected = min(maximum, 2010)
        assert len(page(k3, Limit=maximum + 100)) == expected
        assert len(page(k3, Limit=0)) == expected
        assert len(page(k3)) == expected


def test_bad_paging_numbers_are_parameter_errors(k3: K3):
    assert status_of(k3.query({"FormId": "BD_MATERIAL", "FieldKeys": "FNumber", "StartRow": -1}))["MsgCode"] == 8
    assert status_of(k3.query({"FormId": "BD_MATERIAL", "FieldKeys": "FNumber", "Limit": "ten"}))["MsgCode"] == 8


def test_inventory_rows_follow_the_ledger(k3: K3, sim):
    sim.ledger.seed_balances({("MAT001", "CK003", "A-01", None): Decimal("3")})
    rows = k3.bill_query({"FormId": "STK_Inventory", "FilterString": "FStockId.FNumber = 'CK003'",
                          "FieldKeys": "FID,FMaterialId.FNumber,FStockLocId.FNumber,FStockLocId,FStockOrgId.FNumber,"
                                       "FBaseUnitId.FNumber,FQty,FBaseLockQty,FStockStatusId.FNumber,FOwnerTypeId"})
    assert len(rows) == 1
    row = rows[0]
    assert row["FMaterialId.FNumber"] == "MAT001" and row["FStockLocId.FNumber"] == "A-01"
    assert isinstance(row["FStockLocId"], int) and row["FStockLocId"] > 0 and isinstance(row["FID"], str)
    assert (row["FStockOrgId.FNumber"], row["FBaseUnitId.FNumber"], row["FQty"], row["FBaseLockQty"]) == ("100", "PCS", 3.0, 0.0)
    assert (row["FStockStatusId.FNumber"], row["FOwnerTypeId"]) == ("KCZT01_SYS", "BD_OwnerOrg")
