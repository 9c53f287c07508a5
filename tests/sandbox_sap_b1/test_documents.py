"""Documents, stock and the status-code contract, over real HTTP."""
from __future__ import annotations

from decimal import Decimal

import pytest
import requests

from sandbox.faults import DropAfterCommit, ErrorFault, FaultPlan
from tests.sandbox_sap_b1.conftest import error_of


def issue(lines, **header):
    return {**header, "DocumentLines": lines}


def test_post_answers_201_with_entity_location_and_etag(sim, connect, dialect):
    http, root = connect(dialect)
    answer = http.post(f"{root}/InventoryGenEntries", json=issue(
        [{"ItemCode": "A010", "Quantity": 2.5, "WarehouseCode": "02", "UnitPrice": 10.0}],
        Comments="echo", Reference2="mv-1"), timeout=5)
    assert answer.status_code == 201, answer.text
    doc = answer.json()
    assert answer.headers["Location"] == f"{root}/InventoryGenEntries({doc['DocEntry']})"
    assert isinstance(doc["DocEntry"], int) and isinstance(doc["DocNum"], int)
    [line] = doc["DocumentLines"]
    assert (line["LineNum"], line["ItemCode"], line["Quantity"], line["WarehouseCode"]) == (0, "A010", 2.5, "02")
    assert doc["DocObjectCode"] == "oInventoryGenEntry" and doc["Reference2"] == "mv-1"
    if dialect == "v2":
        assert answer.headers["ETag"] == doc["@odata.etag"]
        assert doc["@odata.context"].endswith("$metadata#InventoryGenEntries/$entity")
        assert doc["UpdateDate"] == "2026-01-01T00:00:00Z" and doc["DocDate"] == "2026-01-01T00:00:00Z"
    else:
        assert doc["odata.metadata"].endswith("$metadata#InventoryGenEntries/@Element")
        assert doc["UpdateDate"] == "2026-01-01" and "ETag" not in answer.headers
    assert doc["UpdateTime"] == "12:00:00" and doc["CreationDate"] == doc["UpdateDate"]
    assert sim.ledger.balance("A010", "02") == Decimal("2.5")
    assert sim.documents_for("mv-1") == [str(doc["DocNum"])]


def test_return_no_content_gives_204_with_location(connect):
    http, root = connect("v2")
    answer = http.post(f"{root}/InventoryGenEntries", json=issue([{"ItemCode": "A010", "Quantity": 1}]),
                       headers={"Prefer": "return-no-content"}, timeout=5)
    assert (answer.status_code, answer.content) == (204, b"")
    assert answer.headers["Preference-Applied"] == "return-no-content"
    assert answer.headers["Location"].endswith("/InventoryGenEntries(1)")


def test_negative_stock_rejects_the_whole_document_and_posts_nothing(sim, connect, dialect):
    http, root = connect(dialect)
    before = sim.ledger.balances()
    # Given a goods issue whose first line is covered and whose second is not
    answer = http.post(f"{root}/InventoryGenExits", json=issue([
        {"ItemCode": "A000", "Quantity": 4, "WarehouseCode": "01"},
        {"ItemCode": "A001", "Quantity": 6, "WarehouseCode": "01"}], Reference2="mv-neg"), timeout=5)
    # Then it is refused whole with the vendor's text, and nothing moved or was numbered
    assert answer.status_code == 400
    assert error_of(answer, dialect) == ("-10", "Quantity falls into negative inventory  [IGE1.ItemCode][line: 2]")
    assert sim.ledger.balances() == before and sim.ledger.history()[1:] == ()
    assert sim.documents_for("mv-neg") == []
    ok = http.post(f"{root}/InventoryGenExits", json=issue([{"ItemCode": "A000", "Quantity": 4}]), timeout=5)
    assert (ok.json()["DocEntry"], ok.json()["DocNum"]) == (1, 1)


def test_negative_stock_allowed_by_company_setting(sim, connect):
    sim.seed({"allow_negative": True})
    http, root = connect("v2")
    answer = http.post(f"{root}/InventoryGenExits", json=issue([{"ItemCode": "A005", "Quantity": 3,
                                                                 "WarehouseCode": "02"}]), timeout=5)
    assert answer.status_code == 201 and sim.ledger.balance("A005", "02") == Decimal(-3)


@pytest.mark.parametrize(("line", "code", "message"), [
    ({"ItemCode": "NOPE", "Quantity": 1}, "-2028", "No matching records found (ODBC -2028)  [IGN1.ItemCode][line: 1]"),
    ({"ItemCode": "A000", "Quantity": 1, "WarehouseCode": "ZZ"}, "-2028",
     "No matching records found (ODBC -2028)  [IGN1.WhsCode][line: 1]"),
    ({"Quantity": 1}, "-10", "Item number is missing; specify an item number  [IGN1.ItemCode][line: 1]"),
    ({"ItemCode": "A000", "Quantity": 0}, "-10", "Enter a quantity greater than zero  [IGN1.Quantity][line: 1]"),
    ({"ItemCode": "A000", "Quantity": 1, "Bogus": 1}, "-1000", "Property 'Bogus' of 'DocumentLine' is invalid"),
])
def test_bad_lines_are_refused_with_the_vendor_codes(sim, connect, line, code, message):
    http, root = connect("v2")
    answer = http.post(f"{root}/InventoryGenEntries", json=issue([line]), timeout=5)
    assert answer.status_code == 400 and error_of(answer, "v2") == (code, message)
    assert len(sim.ledger.history()) == 1   # the opening balances only


def test_marketing_documents_need_a_partner_of_the_right_kind(sim, connect):
    http, root = connect("v1")
    lines = [{"ItemCode": "A000", "Quantity": 1, "WarehouseCode": "01"}]
    wrong = http.post(f"{root}/PurchaseDeliveryNotes", json=issue(lines, CardCode="C100"), timeout=5)
    assert error_of(wrong, "v1") == ("-10", "Invalid BP code  [OPDN.CardCode] , 'C100'")
    grpo = http.post(f"{root}/PurchaseDeliveryNotes", json=issue(lines, CardCode="S100", NumAtCard="PO-9"), timeout=5)
    assert grpo.status_code == 201 and grpo.json()["DocumentStatus"] == "bost_Open"
    delivery = http.post(f"{root}/DeliveryNotes", json=issue(lines, CardCode="C100"), timeout=5)
    returned = http.post(f"{root}/Returns", json=issue(lines, CardCode="C100"), timeout=5)
    back = http.post(f"{root}/PurchaseReturns", json=issue(lines, CardCode="S100"), timeout=5)
    assert [a.status_code for a in (delivery, returned, back)] == [201, 201, 201]
    assert sim.ledger.balance("A000", "01") == Decimal(10)   # +1 -1 +1 -1


def test_stock_transfers_move_between_warehouses_and_have_no_update_time(sim, connect):
    http, root = connect("v2")
    answer = http.post(f"{root}/StockTransfers", json={
        "FromWarehouse": "01", "ToWarehouse": "02", "Comments": "move",
        "StockTransferLines": [{"ItemCode": "A000", "Quantity": 4},
                               {"ItemCode": "A001", "Quantity": 1, "FromWarehouseCode": "01", "WarehouseCode": "02"}]},
        timeout=5)
    assert answer.status_code == 201, answer.text
    doc = answer.json()
    assert [(l["LineNum"], l["FromWarehouseCode"], l["WarehouseCode"]) for l in doc["StockTransferLines"]] == [
        (0, "01", "02"), (1, "01", "02")]
    assert "UpdateDate" in doc and "UpdateTime" not in doc and "CreationDate" in doc
    assert (sim.ledger.balance("A000", "01"), sim.ledger.balance("A000", "02")) == (Decimal(6), Decimal(4))
    short = http.post(f"{root}/StockTransfers", json={"FromWarehouse": "02", "ToWarehouse": "01",
                      "StockTransferLines": [{"ItemCode": "A000", "Quantity": 5}]}, timeout=5)
    assert error_of(short, "v2") == ("-10", "Quantity falls into negative inventory  [WTR1.ItemCode][line: 1]")


def test_item_warehouse_info_follows_the_ledger(sim, connect):
    http, root = connect("v2")
    http.post(f"{root}/InventoryGenExits", json=issue([{"ItemCode": "A000", "Quantity": 3, "WarehouseCode": "01"}]),
              timeout=5)
    item = http.get(f"{root}/Items('A000')", timeout=5).json()
    stock = {row["WarehouseCode"]: row["InStock"] for row in item["ItemWarehouseInfoCollection"]}
    assert stock == {"01": 7.0, "02": 0.0, "BW": 0.0} and item["QuantityOnStock"] == 7.0
    assert {"Committed", "Ordered"} <= set(item["ItemWarehouseInfoCollection"][0])


def test_bin_warehouses_need_allocations_or_use_the_default_bin(sim, connect):
    http, root = connect("v2")
    to_default = http.post(f"{root}/InventoryGenEntries", json=issue([
        {"ItemCode": "A003", "Quantity": 2, "WarehouseCode": "BW"}]), timeout=5)
    assert to_default.status_code == 201 and sim.ledger.balance("A003", "BW", "BW-A1") == 2
    allocated = http.post(f"{root}/InventoryGenExits", json=issue([
        {"ItemCode": "A002", "Quantity": 3, "WarehouseCode": "BW",
         "DocumentLinesBinAllocations": [{"BinAbsEntry": 2, "Quantity": 3}]}]), timeout=5)
    assert allocated.status_code == 201 and sim.ledger.balance("A002", "BW", "BW-A2") == 4
    partial = http.post(f"{root}/InventoryGenExits", json=issue([
        {"ItemCode": "A002", "Quantity": 3, "WarehouseCode": "BW",
         "DocumentLinesBinAllocations": [{"BinAbsEntry": 2, "Quantity": 1}]}]), timeout=5)
    assert error_of(partial, "v2")[1].startswith("1470000341 - Fully allocate item 'A002' to bin locations")


def test_batch_items_need_batch_numbers(sim, connect):
    http, root = connect("v2")
    missing = http.post(f"{root}/InventoryGenExits", json=issue([{"ItemCode": "LOT-1", "Quantity": 1}]), timeout=5)
    assert missing.status_code == 400 and error_of(missing, "v2")[0] == "-10"
    ok = http.post(f"{root}/InventoryGenExits", json=issue([{"ItemCode": "LOT-1", "Quantity": 2, "WarehouseCode": "01",
                   "BatchNumbers": [{"BatchNumber": "L1", "Quantity": 2}]}]), timeout=5)
    assert ok.status_code == 201 and sim.ledger.balance("LOT-1", "01", lot="L1") == 4
    other_lot = http.post(f"{root}/InventoryGenExits", json=issue([{"ItemCode": "LOT-1", "Quantity": 1,
                          "WarehouseCode": "01", "BatchNumbers": [{"BatchNumber": "L2", "Quantity": 1}]}]), timeout=5)
    assert error_of(other_lot, "v2")[1].startswith("Quantity falls into negative inventory")


def test_patch_changes_header_fields_only_and_checks_if_match(sim, connect, clock):
    http, root = connect("v2")
    doc = http.post(f"{root}/InventoryGenEntries", json=issue([{"ItemCode": "A010", "Quantity": 1}]), timeout=5).json()
    url = f"{root}/InventoryGenEntries({doc['DocEntry']})"
    clock.advance(20 * 60)
    answer = http.patch(url, json={"Comments": "edited", "DocTotal": 999}, headers={"If-Match": doc["@odata.etag"]},
                        timeout=5)
    assert (answer.status_code, answer.content) == (204, b"")
    after = http.get(url, timeout=5)
    assert after.json()["Comments"] == "edited" and after.json()["DocTotal"] == 0.0
    assert after.json()["UpdateTime"] == "12:20:00" and after.headers["ETag"] != doc["@odata.etag"]
    stale = http.patch(url, json={"Comments": "again"}, headers={"If-Match": doc["@odata.etag"]}, timeout=5)
    assert stale.status_code == 412 and error_of(stale, "v2")[0] == "-2039"
    lines = http.patch(url, json={"DocumentLines": [{"LineNum": 0, "Quantity": 5}]}, timeout=5)
    assert lines.status_code == 400 and sim.ledger.balance("A010", "01") == 1


def test_delete_on_a_document_is_not_supported_and_cancel_reverses(sim, connect, dialect):
    http, root = connect(dialect)
    doc = http.post(f"{root}/InventoryGenEntries", json=issue([{"ItemCode": "A010", "Quantity": 3}],
                    Reference2="mv-c"), timeout=5).json()
    url = f"{root}/InventoryGenEntries({doc['DocEntry']})"
    refused = http.delete(url, timeout=5)
    assert refused.status_code == 400
    assert error_of(refused, dialect) == ("-5006", "The requested action is not supported for this object.")
    assert http.post(f"{url}/Cancel", timeout=5).status_code == 204
    assert sim.ledger.balance("A010", "01") == 0 and sim.documents_for("mv-c") == []
    again = http.post(f"{url}/Cancel", timeout=5)
    assert error_of(again, dialect) == ("-5002", "Document is already cancelled")
    assert http.get(url, timeout=5).json()["Cancelled"] == "tYES"


def test_cancel_is_refused_when_the_stock_has_gone(sim, connect):
    http, root = connect("v2")
    receipt = http.post(f"{root}/InventoryGenEntries", json=issue([{"ItemCode": "A011", "Quantity": 3}]), timeout=5)
    http.post(f"{root}/InventoryGenExits", json=issue([{"ItemCode": "A011", "Quantity": 2}]), timeout=5)
    answer = http.post(f"{root}/InventoryGenEntries({receipt.json()['DocEntry']})/Cancel", timeout=5)
    assert answer.status_code == 400 and "negative inventory" in error_of(answer, "v2")[1]
    assert sim.ledger.balance("A011", "01") == 1


def test_unknown_document_key_is_404(connect):
    http, root = connect("v1")
    answer = http.get(f"{root}/InventoryGenExits(99)", timeout=5)
    assert answer.status_code == 404 and error_of(answer, "v1") == ("-2028", "No matching records found (ODBC -2028)")
    assert http.post(f"{root}/InventoryGenExits(99)/Cancel", timeout=5).status_code == 404


def test_counting_records_and_posting_sets_stock(sim, connect):
    http, root = connect("v2")
    count = http.post(f"{root}/InventoryCountings", json={"InventoryCountingLines": [
        {"ItemCode": "A000", "WarehouseCode": "01", "CountedQuantity": 8}]}, timeout=5)
    assert count.status_code == 201, count.text
    line = count.json()["InventoryCountingLines"][0]
    assert (line["LineNumber"], line["InWarehouseQuantity"], line["Variance"]) == (1, 10.0, -2.0)
    assert "UpdateDate" not in count.json() and count.json()["CountDate"] == "2026-01-01T00:00:00Z"
    assert sim.ledger.balance("A000", "01") == 10
    posting = http.post(f"{root}/InventoryPostings", json={"InventoryPostingLines": [
        {"ItemCode": "A000", "WarehouseCode": "01", "CountedQuantity": 8}]}, timeout=5)
    assert posting.status_code == 201, posting.text
    assert posting.json()["DocumentEntry"] == 1 and "UpdateDate" not in posting.json()
    assert sim.ledger.balance("A000", "01") == 8


def test_series_numbering_and_user_fields(sim, connect):
    sim.seed({"series": {"InventoryGenEntries": [{"Series": 21, "NextNumber": 500, "Default": True},
                                                 {"Series": 22, "NextNumber": 9000}]},
              "company": {"user_fields": {"Documents": ["U_ErpHubKey"]}, "reference_fields": ["U_ErpHubKey"]}})
    http, root = connect("v2")
    first = http.post(f"{root}/InventoryGenEntries", json=issue([{"ItemCode": "A000", "Quantity": 1}],
                      U_ErpHubKey="k-1"), timeout=5).json()
    second = http.post(f"{root}/InventoryGenEntries", json=issue([{"ItemCode": "A000", "Quantity": 1}],
                       Series=22), timeout=5).json()
    assert [(d["DocEntry"], d["DocNum"], d["Series"]) for d in (first, second)] == [(1, 500, 21), (2, 9000, 22)]
    assert first["U_ErpHubKey"] == "k-1" and sim.documents_for("k-1") == ["500"]
    undeclared = http.post(f"{root}/InventoryGenEntries", json=issue([{"ItemCode": "A000", "Quantity": 1}],
                           U_Other="x"), timeout=5)
    assert error_of(undeclared, "v2") == ("-1000", "Property 'U_Other' of 'Document' is invalid")


def test_touch_restamps_master_data(sim, connect, server, clock):
    http, root = connect("v1")
    requests.post(f"{server.url}/_admin/touch", json={"entity": "items", "key": "A007", "at": clock.now + 86400 + 61},
                  timeout=5)
    item = http.get(f"{root}/Items('A007')", timeout=5).json()
    assert (item["UpdateDate"], item["UpdateTime"], item["CreateDate"]) == ("2026-01-02", "12:01:01", "2026-01-01")
    assert item["DataVersion"] == 2
    changed = http.get(f"{root}/Items", params={"$filter": "UpdateDate ge '2026-01-02'", "$select": "ItemCode"},
                       timeout=5).json()
    assert [r["ItemCode"] for r in changed["value"]] == ["A007"]
    sim.touch("partners", "S100")
    sim.touch("warehouses", "01")   # no stamps on Warehouses: only its ETag changes
    assert "UpdateDate" not in http.get(f"{root}/Warehouses('01')", timeout=5).json()


def test_master_data_writes(sim, connect):
    http, root = connect("v2")
    created = http.post(f"{root}/Items", json={"ItemCode": "NEW-1", "ItemName": "New", "InventoryUOM": "KG"}, timeout=5)
    assert created.status_code == 201 and created.headers["Location"].endswith("/Items('NEW-1')")
    assert created.json()["ItemWarehouseInfoCollection"][0]["InStock"] == 0.0
    duplicate = http.post(f"{root}/Items", json={"ItemCode": "NEW-1"}, timeout=5)
    assert error_of(duplicate, "v2")[0] == "-2035"
    partner = http.post(f"{root}/BusinessPartners", json={"CardCode": "S100", "CardType": "S"}, timeout=5)
    assert error_of(partner, "v2")[1].startswith("1320000140 - Business partner code 'S100' already assigned")
    assert http.patch(f"{root}/Items('NEW-1')", json={"ItemName": "Renamed"}, timeout=5).status_code == 204
    assert http.get(f"{root}/Items('NEW-1')", timeout=5).json()["ItemName"] == "Renamed"
    assert http.delete(f"{root}/Items('NEW-1')", timeout=5).status_code == 204
    assert http.delete(f"{root}/Items('A000')", timeout=5).status_code == 400   # has stock


def test_a_dropped_answer_still_commits(sim, connect):
    http, root = connect("v2")
    sim.faults.set(FaultPlan(drop_after_commit=[DropAfterCommit(operation="InventoryGenEntries.POST")]))
    with pytest.raises(requests.ConnectionError):
        http.post(f"{root}/InventoryGenEntries", json=issue([{"ItemCode": "A020", "Quantity": 1}], Reference2="lost"),
                  timeout=5)
    assert sim.documents_for("lost") == ["1"] and sim.ledger.balance("A020", "01") == 1


def test_injected_errors_use_the_sap_envelope(sim, connect):
    http, root = connect("v1")
    sim.faults.set(FaultPlan(errors=[ErrorFault(status=503, operation="Items.GET", retry_after=3)]))
    answer = http.get(f"{root}/Items", timeout=5)
    assert answer.status_code == 503 and answer.headers["Retry-After"] == "3"
    assert error_of(answer, "v1")[0] == "-1"


def test_method_override_put_and_bad_options(connect):
    http, root = connect("v2")
    override = http.post(f"{root}/Items('A000')", json={"ItemName": "via override"},
                         headers={"X-HTTP-Method-Override": "PATCH"}, timeout=5)
    assert override.status_code == 204
    assert http.get(f"{root}/Items('A000')?$select=ItemName", timeout=5).json()["ItemName"] == "via override"
    assert http.get(f"{root}/Items?$top=abc", timeout=5).status_code == 400
    assert http.get(f"{root}/NoSuchSet", timeout=5).status_code == 404


def test_reset_forgets_documents_settings_and_sessions(sim, connect, server):
    http, root = connect("v1")
    sim.seed({"service_layer": {"page_size": 5}, "company": {"reference_fields": ["Comments"]}})
    http.post(f"{root}/InventoryGenEntries", json=issue([{"ItemCode": "A000", "Quantity": 1}], Comments="r"), timeout=5)
    assert sim.documents_for("r") == ["1"]
    requests.post(f"{server.url}/_admin/reset", timeout=5)
    assert sim.documents_for("r") == [] and sim.config.page_size == 20
    assert sim.company.config.reference_fields == ("Reference2",)
    assert http.get(f"{root}/Items", timeout=5).status_code == 401
