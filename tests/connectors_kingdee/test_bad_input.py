"""Bad input end to end: KingdeeConnector ↔ sandbox.kingdee over loopback.

Each refusal must arrive as the right error class with the vendor's MsgCode and message, naming
our record (``ConnectorError.record``: movement kind and reference, or the form and StartRow of a
page) and the field (message and ``details["fields"]``); malformed or reshaped answers become
Transient / Ambiguous / ContractViolation, never a silent success.
"""
from __future__ import annotations

from datetime import date
from decimal import Decimal

import pytest

from canonical import Movement, MovementKind, MovementLine, Partner
from connectors.base import Entity
from connectors.errors import Action, Ambiguous, ConfigError, ContractViolation, Rejected, Transient
from sandbox.faults import ErrorFault, FaultPlan
from tests.connectors_kingdee.live import connect, kd, sim, url  # noqa: F401 - fixtures




def receipt(reference: str = "R-1", *, sku: str = "MAT001", warehouse: str = "CK001", qty: str = "3",
            day: date = date(2025, 1, 15)) -> Movement:
    return Movement(reference=reference, kind=MovementKind.purchase_receipt, document_date=day,
                    counterparty=Partner(code="VEN001", name="供应商一", role="supplier"),
                    lines=(MovementLine(line_no=1, sku=sku, quantity=Decimal(qty), unit="PCS",
                                        to_warehouse=warehouse),))


def issue(reference: str = "S-1", *, qty: str = "999") -> Movement:
    return Movement(reference=reference, kind=MovementKind.sales_issue, document_date=date(2025, 1, 16),
                    counterparty=Partner(code="CUS001", name="客户一", role="customer"),
                    lines=(MovementLine(line_no=1, sku="MAT001", quantity=Decimal(qty), unit="PCS",
                                        from_warehouse="CK001"),))


def fault(sim, operation: str, body: str, status: int = 200) -> None:
    sim.faults.set(FaultPlan(errors=(ErrorFault(operation=operation, status=status, body=body, max_count=1),)))


# ------------------------------------------------------------------------------------------------
# Business refusals: Rejected with the vendor's code, message, record and field


@pytest.mark.parametrize("movement,field,vendor_text", [
    (receipt("R-1", sku="NOPE-9"), "FMaterialId", "的编码“NOPE-9”在物料中不存在"),
    (receipt("R-2", warehouse="CK404"), "FStockId", "的编码“CK404”在仓库中不存在"),
])
def test_an_unknown_material_or_warehouse_is_rejected_naming_record_and_field(sim, kd, movement, field,
                                                                                vendor_text):
    # When a receipt names a material or warehouse K3Cloud does not know
    with pytest.raises(Rejected) as refused:
        kd.push(movement, key=f"key-{movement.reference}")
    # Then it is Rejected with MsgCode 11 and the vendor's message, naming the movement and field
    error = refused.value
    assert (error.vendor_code, error.action) == ("11", Action.DEAD_LETTER)
    assert error.record == f"purchase_receipt {movement.reference}"
    assert vendor_text in error.message and f"{field}: " in error.message
    assert f"STK_InStock {movement.reference}" in error.message  # the bill (its number is the reference)
    assert error.details["fields"] == [field]
    assert str(error).startswith(f"purchase_receipt {movement.reference}: [11] ")
    # and no bill was created
    assert sim.documents_for(movement.reference) == []


@pytest.mark.parametrize("auto_audit", [False, True])
def test_a_receipt_dated_in_a_closed_stock_period_is_rejected_on_fdate(sim, url, auto_audit):
    # Given the stock period closed up to 2025-01-31
    sim.seed({"stock_closed_until": "2025-01-31"})
    kd = connect(url, auto_submit_audit=auto_audit)
    # When a receipt dated 2025-01-15 is pushed
    with pytest.raises(Rejected) as refused:
        kd.push(receipt("R-closed"), key="key-closed")
    # Then it is Rejected (MsgCode 11) on FDate with the vendor's message, and nothing was saved
    error = refused.value
    assert error.vendor_code == "11" and error.record == "purchase_receipt R-closed"
    assert "FDate: 单据日期“2025-01-15”小于或等于库存组织“总公司”的最近关账日期“2025-01-31”，不允许保存" in error.message
    assert error.details["fields"] == ["FDate"]
    assert sim.documents_for("R-closed") == []
    # and a receipt dated after the closing date goes through
    assert kd.push(receipt("R-open", day=date(2025, 2, 1)), key="key-open").posted
    kd.close()


@pytest.mark.parametrize("auto_audit", [False, True])
def test_negative_stock_is_rejected_naming_the_quantity_field_and_leaves_no_bill(sim, url, auto_audit):
    kd = connect(url, auto_submit_audit=auto_audit)
    # When an issue asks for more than the 100 on hand
    with pytest.raises(Rejected) as refused:
        kd.push(issue("S-1", qty="999"), key="key-S-1")
    # Then it is Rejected with MsgCode 11, the vendor's shortage text, the record and the quantity field
    error = refused.value
    assert error.vendor_code == "11" and error.record == "sales_issue S-1"
    assert "库存不足：物料MAT001 仓库CK001 即时库存100 需要999" in error.message
    assert "field FEntity.FRealQty" in error.message and error.details["fields"] == ["FEntity.FRealQty"]
    assert ("kingdee Save SAL_OUTSTOCK S-1" if auto_audit else "kingdee Audit SAL_OUTSTOCK S-1") in error.message
    # stock is untouched, and the unaudited bill was withdrawn and deleted so a retry starts clean
    assert sim.ledger.balance("MAT001", "CK001", None, None) == 100
    assert sim.documents_for("S-1") == []
    if not auto_audit:
        assert error.details["bill"]["number"] == "S-1" and error.details["bill_left"].startswith("deleted")
    kd.close()


def test_an_unknown_field_key_on_a_read_is_a_config_error_naming_the_field(sim, url):
    kd = connect(url, barcode_field="F_NOPE_Barcode")
    with pytest.raises(ConfigError) as failed:
        list(kd.read(Entity.ITEMS))
    assert failed.value.vendor_code == "9" and "F_NOPE_Barcode" in failed.value.message
    assert failed.value.details["fields"] == ["F_NOPE_Barcode"]
    kd.close()


# ------------------------------------------------------------------------------------------------
# Malformed answers


@pytest.mark.parametrize("body,error", [
    ("<html><body>502 Bad Gateway</body></html>", ContractViolation),   # not JSON at all
    ("response_error:Object reference not set to an instance of an object.", Transient),  # server crash
    ('[["MAT001","螺丝","M3","PCS",false,"A","2025-01-01T00:00:00"],["MAT0', Transient),  # cut off
])
def test_a_malformed_read_answer(sim, kd, body, error):
    fault(sim, "ExecuteBillQuery", body)
    with pytest.raises(error) as failed:
        list(kd.read(Entity.ITEMS))
    assert type(failed.value) is error
    assert "ExecuteBillQuery" in failed.value.message
    if error is ContractViolation:
        assert "not valid JSON" in failed.value.message and "502 Bad Gateway" in failed.value.message
    # the next read is fine
    assert len([i for p in kd.read(Entity.ITEMS) for i in p.records]) == 3


@pytest.mark.parametrize("operation,body", [
    ("Save", "<html>gateway timeout</html>"),
    ("Save", '{"Result": {"ResponseStatus": {"IsSuccess": true, "Errors": [], "SuccessEnti'),
    ("Audit", "response_error:System.TimeoutException: 执行超时已过期"),
])
def test_a_malformed_write_answer_is_ambiguous_naming_the_record_and_find_reconciles(sim, kd, operation, body):
    fault(sim, operation, body)
    with pytest.raises(Ambiguous) as lost:
        kd.push(receipt("R-amb"), key="key-amb")
    assert lost.value.record == "purchase_receipt R-amb" and lost.value.action is Action.RECONCILE
    assert operation in lost.value.message
    # the engine then asks find(): the fault refused the Save before it ran; the Audit fault hit a
    # submitted bill, which find reports unposted, and a push with the same key resumes it
    found = kd.find("key-amb")
    if operation == "Save":
        assert found is None
    else:
        assert (found.document_number, found.status, found.posted) == ("R-amb", "B", False)
    again = kd.push(receipt("R-amb"), key="key-amb")
    assert again.posted and sim.documents_for("R-amb") == ["R-amb"]


# ------------------------------------------------------------------------------------------------
# Changed response shapes: ContractViolation, never a silent success


@pytest.mark.parametrize("operation,body,said", [
    ("Save", '{"Result": {"Id": 100001, "Number": "R-1"}}', "no Result.ResponseStatus"),
    ("Save", '{"ResponseStatus": null, "Id": 100001}', "no Result.ResponseStatus"),
    ("Submit", '{"Result": {"ResponseStatus": {"Errors": [], "MsgCode": 0}}}', "no boolean IsSuccess"),
    ("Audit", '{"Result": {"ResponseStatus": {"IsSuccess": "maybe"}}}', "no boolean IsSuccess"),
    ("Audit", '{"Result": {"ResponseStatus": {"IsSuccess": true, "Errors": {}}}}', "are not lists"),
])
def test_a_write_answer_of_another_shape_is_a_contract_violation_naming_the_record(sim, kd, operation, body, said):
    fault(sim, operation, body)
    with pytest.raises(ContractViolation) as changed:
        kd.push(receipt("R-shape"), key="key-shape")
    assert changed.value.record == "purchase_receipt R-shape"
    assert said in changed.value.message and operation in changed.value.message
    assert "STK_InStock" in changed.value.message


@pytest.mark.parametrize("body,said", [
    ('{"Result": [["MAT001"]]}', "expected an array of rows, got dict"),
    ('[{"FNumber": "MAT001"}]', "is not an array of"),
    ('[["MAT001", "螺丝"]]', "is not an array of"),
    ('[[100001, "MAT001", "螺丝", "M3", "PCS", false, "A", "2025-01-01T00:00:00", "", "extra"]]', "is not an array of"),
])
def test_a_query_answer_of_another_shape_is_a_contract_violation_naming_form_and_row(sim, kd, body, said):
    fault(sim, "ExecuteBillQuery", body)
    with pytest.raises(ContractViolation) as changed:
        list(kd.read(Entity.ITEMS))
    assert said in changed.value.message and "BD_MATERIAL" in changed.value.message
    assert changed.value.record == "BD_MATERIAL StartRow 0"
    if "is not an array of" in said:
        assert "FMaterialId,FNumber,FName" in changed.value.message


def test_a_query_failure_wrapped_once_instead_of_twice_is_still_translated(sim, kd):
    status = ('{"ErrorCode": 500, "IsSuccess": false, "Errors": [{"FieldName": "FModifyDate", "Message": '
              '"字段不存在", "DIndex": 0}], "SuccessEntitys": [], "SuccessMessages": [], "MsgCode": 9}')
    fault(sim, "ExecuteBillQuery", '[{"Result": {"ResponseStatus": ' + status + '}}]')
    with pytest.raises(ConfigError) as failed:
        list(kd.read(Entity.ITEMS))
    assert failed.value.vendor_code == "9" and "FModifyDate: 字段不存在" in failed.value.message
