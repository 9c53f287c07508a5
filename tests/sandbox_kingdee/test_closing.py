"""Stock closing (库存关账, INFERRED, see the sandbox.kingdee docstring): stock bills dated on or before
the closing date cannot be saved, audited or unaudited; MsgCode 11 on FDate."""
from __future__ import annotations

from datetime import date

import pytest

from sandbox.kingdee import KingdeeSimulator
from tests.sandbox_kingdee.conftest import K3, instock


def refusal(status):
    assert (status["IsSuccess"], status["ErrorCode"], status["MsgCode"]) == (False, 500, 11), status
    [error] = status["Errors"]
    assert error["FieldName"] == "FDate"
    return error["Message"]


def test_save_of_a_stock_bill_dated_in_the_closed_period_is_refused_on_fdate(k3: K3, sim):
    # Given stock closed up to 2025-01-15 (the receipt's date)
    sim.seed({"stock_closed_until": "2025-01-15"})
    # When a receipt dated 2025-01-15 is saved, alone or with auto audit, or in a batch
    answer = k3.save("STK_InStock", {"Model": instock(3)})
    auto = k3.save("STK_InStock", {"IsAutoSubmitAndAudit": "true", "Model": instock(3)})
    batch = k3.save("STK_InStock", {"Model": [instock(3), instock(3, FDate="2025-01-16")]}, op="BatchSave")
    # Then each is refused with MsgCode 11 naming FDate and the closing date, and nothing moved
    assert refusal(answer["ResponseStatus"]) == \
        "单据日期“2025-01-15”小于或等于库存组织“总公司”的最近关账日期“2025-01-15”，不允许保存"
    assert (answer["Id"], answer["Number"]) == ("", "")
    assert "不允许保存" in refusal(auto["ResponseStatus"])
    assert batch["ResponseStatus"]["Errors"][0]["DIndex"] == 0 and batch["ResponseStatus"]["MsgCode"] == 11
    assert [e["Number"] for e in batch["ResponseStatus"]["SuccessEntitys"]] == ["CGRK00001"]
    assert sim.ledger.balance("MAT001", "CK001", None, None) == 100
    # a bill dated after the closing date is fine, and a draft is not checked
    assert k3.save("STK_InStock", {"Model": instock(3, FDate="2025-01-16")})["ResponseStatus"]["IsSuccess"]
    assert k3.save("STK_InStock", {"Model": instock(3)}, op="Draft")["ResponseStatus"]["IsSuccess"]


def test_audit_and_unaudit_inside_a_period_closed_later_are_refused(k3: K3, sim):
    # Given a receipt saved and submitted while the period was open
    number = k3.save("STK_InStock", {"Model": instock(4)})["Number"]
    assert k3.op("Submit", "STK_InStock", {"Numbers": [number]})["IsSuccess"]
    # When the period is closed, audit is refused and the bill stays submitted
    sim.seed({"stock_closed_until": "2025-01-31"})
    assert "不允许审核" in refusal(k3.op("Audit", "STK_InStock", {"Numbers": [number]}))
    assert sim.bill("STK_InStock", number)["FDocumentStatus"] == "B"
    # When it is reopened, audited, and closed again: UnAudit is refused and the stock stays posted
    sim.seed({"stock_closed_until": None})
    assert k3.op("Audit", "STK_InStock", {"Numbers": [number]})["IsSuccess"]
    sim.seed({"stock_closed_until": "2025-01-31"})
    assert "不允许反审核" in refusal(k3.op("UnAudit", "STK_InStock", {"Numbers": [number]}))
    assert sim.ledger.balance("MAT001", "CK001", None, None) == 104


def test_base_data_is_not_closed_and_the_setting_comes_from_the_constructor_and_survives_reset():
    sim = KingdeeSimulator(stock_closed_until=date(2024, 1, 31))
    assert sim.stock_closed_until == date(2024, 1, 31)
    sim.seed({"stock_closed_until": "2024-02-29"})
    sim.reset()
    assert sim.stock_closed_until == date(2024, 1, 31)  # reset goes back to the constructed state
    sim.seed({"records": {"BD_UNIT": [{"FNumber": "PCS", "FName": "个"}],
                          "BD_MATERIAL": [{"FNumber": "M1", "FName": "m", "FBaseUnitId": {"FNumber": "PCS"}}]}})
    assert sim.find("BD_MATERIAL", "M1") is not None


@pytest.mark.parametrize("bad", ["31/01/2024", 20240131, "2024-02-30"])
def test_a_bad_closing_date_is_refused(bad):
    with pytest.raises(ValueError, match="stock_closed_until"):
        KingdeeSimulator().seed({"stock_closed_until": bad})
    with pytest.raises(ValueError, match="stock_closed_until"):
        KingdeeSimulator(stock_closed_until=bad)
