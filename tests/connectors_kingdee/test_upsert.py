"""KingdeeConnector.upsert end to end against sandbox.kingdee over loopback.

Items become BD_MATERIAL, warehouses BD_STOCK. Calls are counted on the simulator's call log:
a re-run of unchanged records sends one lookup and no write; a changed record goes through
UnAudit → BatchSave (NeedUpDateFields) → Submit → Audit; every created record is audited, so a bill
can reference it at once.
"""
from __future__ import annotations

from datetime import date
from decimal import Decimal

import pytest

from canonical import Item, Movement, MovementKind, MovementLine, Partner, Warehouse
from connectors.base import Entity, Receipt
from connectors.errors import Action, Ambiguous, ConfigError, Rejected
from sandbox.faults import DropAfterCommit, ErrorFault, FaultPlan
from sandbox.kingdee import _problem
from tests.connectors_kingdee.live import connect, kd, sim, url  # noqa: F401 - fixtures

WRITES = ("BatchSave", "Save", "Submit", "Audit", "UnAudit", "CancelAssign", "ExecuteOperation", "Delete")




def ops(sim) -> list[str]:
    return [c.operation for c in sim.calls.list()]


def writes(sim) -> list[str]:
    return [op for op in ops(sim) if op in WRITES]


def item(sku: str = "NEW-001", **kw) -> Item:
    values = {"name": "新款卫衣 M 黑", "spec": "M/黑", "base_unit": "PCS", "barcode": "6900000000011"}
    return Item(sku=sku, **{**values, **kw})


def test_capabilities_declare_items_and_warehouses_writable_in_batches(kd):
    caps = kd.capabilities
    assert caps.writable == frozenset({Entity.ITEMS, Entity.WAREHOUSES})
    assert caps.max_batch == 100
    with pytest.raises(ConfigError):
        kd.upsert(Entity.PARTNERS, [])


def test_a_new_item_is_saved_submitted_and_audited_then_a_rerun_sends_no_write(sim, kd):
    # When a new item is written
    first = kd.upsert(Entity.ITEMS, [item()])
    # Then one lookup, one BatchSave, one Submit and one Audit went out, and the material is audited
    assert ops(sim) == ["ExecuteBillQuery", "BatchSave", "Submit", "Audit"]
    assert isinstance(first[0], Receipt) and first[0].created and first[0].status == "C"
    material = sim.find("BD_MATERIAL", "NEW-001")
    assert (material["FName"], material["FSpecification"], material["FBarCode"]) == ("新款卫衣 M 黑", "M/黑",
                                                                                      "6900000000011")
    assert (material["FDocumentStatus"], material["FForbidStatus"]) == ("C", "A")
    assert first[0].document_id == str(material["FMATERIALID"]) and first[0].document_number == "NEW-001"
    # When the same item is written again
    sim.calls.clear()
    again = kd.upsert(Entity.ITEMS, [item()])
    # Then only the lookup went out
    assert ops(sim) == ["ExecuteBillQuery"]
    assert isinstance(again[0], Receipt) and not again[0].created
    assert again[0].document_id == first[0].document_id


def test_a_created_material_and_warehouse_can_be_used_by_a_bill_at_once(sim, kd):
    # Given a new item and a new warehouse written through upsert
    assert isinstance(kd.upsert(Entity.ITEMS, [item("NEW-002")])[0], Receipt)
    assert isinstance(kd.upsert(Entity.WAREHOUSES, [Warehouse(code="WH-NEW", name="新仓库")])[0], Receipt)
    # When a purchase receipt references both (the server refuses unaudited base data)
    movement = Movement(reference="R-NEW", kind=MovementKind.purchase_receipt, document_date=date(2025, 1, 15),
                        counterparty=Partner(code="VEN001", name="供应商一", role="supplier"),
                        lines=(MovementLine(line_no=1, sku="NEW-002", quantity=Decimal("4"), unit="PCS",
                                            to_warehouse="WH-NEW"),))
    receipt = kd.push(movement, "mv-new-1")
    # Then the bill is audited
    assert receipt.status == "C"


def test_a_changed_name_unaudits_saves_only_the_changed_field_and_audits_again(sim, kd):
    # Given an audited material with a barcode the item does not change
    kd.upsert(Entity.ITEMS, [item()])
    before = dict(sim.find("BD_MATERIAL", "NEW-001"))
    sim.calls.clear()
    # When its name changes
    result = kd.upsert(Entity.ITEMS, [item(name="新款卫衣 M 黑（加绒）")])
    # Then the life cycle for modifying audited base data was followed, on the same material
    assert ops(sim) == ["ExecuteBillQuery", "UnAudit", "BatchSave", "Submit", "Audit"]
    assert isinstance(result[0], Receipt) and not result[0].created
    after = sim.find("BD_MATERIAL", "NEW-001")
    assert after["FMATERIALID"] == before["FMATERIALID"]
    assert (after["FName"], after["FBarCode"], after["FDocumentStatus"]) == ("新款卫衣 M 黑（加绒）", "6900000000011", "C")
    # And reading it back gives the new name
    items = {i.sku: i for page in kd.read(Entity.ITEMS) for i in page.records}
    assert items["NEW-001"].name == "新款卫衣 M 黑（加绒）"


def test_a_batch_with_an_unknown_unit_rejects_that_record_and_writes_the_others(sim, kd):
    batch = [item("OK-1"), item("BAD-UNIT", base_unit="BOX"), item("OK-2")]
    # When one record names a unit K3Cloud does not know
    results = kd.upsert(Entity.ITEMS, batch)
    # Then it alone is rejected, naming the record and FBaseUnitId, and nothing of it was written
    assert isinstance(results[0], Receipt) and isinstance(results[2], Receipt)
    bad = results[1]
    assert isinstance(bad, Rejected) and bad.action is Action.DEAD_LETTER and bad.vendor_code == "11"
    assert "Item 'BAD-UNIT'" in str(bad) and "FBaseUnitId" in bad.message
    assert bad.details["fields"] == ["FBaseUnitId"] and bad.record == "Item 'BAD-UNIT'"
    assert sim.find("BD_MATERIAL", "BAD-UNIT") is None
    # And the good ones were submitted and audited together (one call each)
    assert ops(sim) == ["ExecuteBillQuery", "BatchSave", "Submit", "Audit"]
    assert sim.find("BD_MATERIAL", "OK-1")["FDocumentStatus"] == sim.find("BD_MATERIAL", "OK-2")["FDocumentStatus"] \
        == "C"


def test_units_go_through_the_unit_map(sim, url):
    # Given a connection that maps the canonical unit PAIR to the Kingdee unit PCS
    kd = connect(url, units={"PAIR": "PCS"})
    result = kd.upsert(Entity.ITEMS, [item("SHOE-1", base_unit="PAIR")])
    assert isinstance(result[0], Receipt)
    unit = sim.records["bd_unit"][sim.find("BD_MATERIAL", "SHOE-1")["FBaseUnitId"]]
    assert unit["FNumber"] == "PCS"
    # And a re-run compares in Kingdee's units: nothing is written
    sim.calls.clear()
    assert not kd.upsert(Entity.ITEMS, [item("SHOE-1", base_unit="PAIR")])[0].created
    assert writes(sim) == []


def test_a_refused_audit_of_one_new_material_does_not_hide_the_others(sim, kd):
    # Given the server refuses the Audit of the first of two new materials (a per-record error)
    original = sim._apply_status

    def refuse_first(form, op, record, allow_negative, dindex):
        if op == "Audit" and record.get("FNumber") == "AUD-1":
            return _problem(11, "物料“AUD-1”审核失败：缺少必录项", "FErpClsID", dindex)
        return original(form, op, record, allow_negative, dindex)
    sim._apply_status = refuse_first
    # When both are written
    results = kd.upsert(Entity.ITEMS, [item("AUD-1"), item("AUD-2")])
    # Then the second is a receipt, the first a rejection naming it, the field, and where it was left
    assert isinstance(results[1], Receipt) and results[1].status == "C"
    bad = results[0]
    assert isinstance(bad, Rejected) and bad.record == "Item 'AUD-1'" and "FErpClsID" in bad.message
    assert "Audit" in bad.message and "status B" in bad.details["left"]
    assert sim.find("BD_MATERIAL", "AUD-1")["FDocumentStatus"] == "B"
    # When the server accepts again, a re-run finishes the first one's life cycle without saving again
    sim._apply_status = original
    sim.calls.clear()
    again = kd.upsert(Entity.ITEMS, [item("AUD-1"), item("AUD-2")])
    assert all(isinstance(r, Receipt) for r in again)
    assert ops(sim) == ["ExecuteBillQuery", "Audit"]
    assert sim.find("BD_MATERIAL", "AUD-1")["FDocumentStatus"] == "C"


def test_a_lost_batchsave_answer_is_ambiguous_and_a_rerun_finishes_without_saving_twice(sim, kd):
    # Given the BatchSave answer is lost after the server committed it
    sim.faults.set(FaultPlan(drop_after_commit=(DropAfterCommit(operation="BatchSave", max_count=1),)))
    results = kd.upsert(Entity.ITEMS, [item("LOST-1"), item("LOST-2")])
    # Then both are Ambiguous, and nothing was sent again
    assert all(isinstance(r, Ambiguous) for r in results)
    assert results[0].record == "Item 'LOST-1'" and results[0].action is Action.RECONCILE
    assert ops(sim).count("BatchSave") == 1 and "Submit" not in ops(sim)
    # When the batch is run again
    sim.calls.clear()
    again = kd.upsert(Entity.ITEMS, [item("LOST-1"), item("LOST-2")])
    # Then the lookup finds them saved (A) and only Submit and Audit follow
    assert ops(sim) == ["ExecuteBillQuery", "Submit", "Audit"]
    assert all(isinstance(r, Receipt) and not r.created for r in again)


def test_a_failed_lookup_writes_nothing_and_every_record_gets_the_error(sim, kd):
    sim.faults.set(FaultPlan(errors=(ErrorFault(operation="ExecuteBillQuery", status=503, max_count=10),)))
    results = kd.upsert(Entity.ITEMS, [item("X-1"), item("X-2")])
    assert [r.record for r in results] == ["Item 'X-1'", "Item 'X-2'"]
    assert all(r.retryable for r in results)
    assert writes(sim) == []


def test_records_are_written_in_batches_of_master_batch_size(sim, url):
    kd = connect(url, master_batch_size=2)
    assert kd.capabilities.max_batch == 2
    results = kd.upsert(Entity.ITEMS, [item(f"B-{n}") for n in range(5)])
    assert all(isinstance(r, Receipt) and r.created for r in results)
    assert ops(sim).count("ExecuteBillQuery") == 3 and ops(sim).count("BatchSave") == 3
    assert [r.key for r in results] == [f"B-{n}" for n in range(5)]


def test_a_code_twice_in_one_upsert_is_refused_the_second_time(sim, kd):
    results = kd.upsert(Entity.ITEMS, [item("DUP-1"), item("dup-1", name="other")])
    assert isinstance(results[0], Receipt)
    assert isinstance(results[1], Rejected) and "position 0" in results[1].message


def test_active_false_forbids_and_active_true_enables_again(sim, kd):
    # When an inactive item is written
    result = kd.upsert(Entity.ITEMS, [item("OLD-1", active=False)])
    # Then it is created, audited and forbidden
    assert isinstance(result[0], Receipt)
    assert ops(sim)[-1] == "ExecuteOperation"
    material = sim.find("BD_MATERIAL", "OLD-1")
    assert (material["FDocumentStatus"], material["FForbidStatus"]) == ("C", "B")
    # And a re-run writes nothing
    sim.calls.clear()
    kd.upsert(Entity.ITEMS, [item("OLD-1", active=False)])
    assert writes(sim) == []
    # When it becomes active again, it is enabled (no Save: its content did not change)
    kd.upsert(Entity.ITEMS, [item("OLD-1")])
    assert writes(sim) == ["ExecuteOperation"]
    assert sim.find("BD_MATERIAL", "OLD-1")["FForbidStatus"] == "A"


def test_a_material_left_unaudited_by_someone_is_submitted_and_audited_without_a_save(sim, kd):
    sim.seed({"records": {"BD_MATERIAL": [{"FNumber": "HALF-1", "FName": "半成品", "FSpecification": "",
                                           "FBaseUnitId": {"FNumber": "PCS"}, "FDocumentStatus": "A"}]}})
    result = kd.upsert(Entity.ITEMS, [Item(sku="HALF-1", name="半成品", base_unit="PCS")])
    assert isinstance(result[0], Receipt) and not result[0].created
    assert ops(sim) == ["ExecuteBillQuery", "Submit", "Audit"]
    assert sim.find("BD_MATERIAL", "HALF-1")["FDocumentStatus"] == "C"


def test_warehouses_are_created_updated_and_left_alone(sim, kd):
    # When a new warehouse is written, then again unchanged, then with locations enabled
    created = kd.upsert(Entity.WAREHOUSES, [Warehouse(code="WH-9", name="九号仓")])
    sim.calls.clear()
    same = kd.upsert(Entity.WAREHOUSES, [Warehouse(code="WH-9", name="九号仓")])
    assert ops(sim) == ["ExecuteBillQuery"]
    sim.calls.clear()
    changed = kd.upsert(Entity.WAREHOUSES, [Warehouse(code="WH-9", name="九号仓", bin_managed=True)])
    # Then it was created once, left alone, then modified in place
    assert created[0].created and not same[0].created and not changed[0].created
    assert ops(sim) == ["ExecuteBillQuery", "UnAudit", "BatchSave", "Submit", "Audit"]
    stock = sim.find("BD_STOCK", "WH-9")
    assert (stock["FIsOpenLocation"], stock["FDocumentStatus"], stock["FStockId"]) == (
        True, "C", int(created[0].document_id))


def test_an_existing_world_item_with_the_same_content_is_left_alone(sim, kd):
    # WORLD's MAT001 as the reader maps it: the same content, so nothing is written
    current = {i.sku: i for page in kd.read(Entity.ITEMS) for i in page.records}["MAT001"]
    sim.calls.clear()
    result = kd.upsert(Entity.ITEMS, [current])
    assert isinstance(result[0], Receipt) and not result[0].created
    assert writes(sim) == []
