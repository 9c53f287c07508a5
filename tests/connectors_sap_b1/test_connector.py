"""SapB1Connector over a mocked Service Layer: idempotent push, push_many through $batch
(F15: 3 of 100 failing leaves 97 created), incremental reads, paging tokens, settings."""
from __future__ import annotations

import json
import re
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from urllib.parse import parse_qs, urlsplit

import pytest
import responses
from pydantic import ValidationError

from canonical import Movement, MovementKind
from connectors import registry
from connectors.base import Entity, Receipt
from connectors.errors import Ambiguous, ConfigError, Rejected
from connectors.sap_b1 import SapB1Connector, SapB1Settings
from tests.connectors_sap_b1.conftest import BASE, PASSWORD, add_login, root

SHANGHAI = "Asia/Shanghai"


def settings(**overrides) -> SapB1Settings:
    values = {"url": BASE, "company_db": "SBODEMOUS", "username": "manager", "password": PASSWORD,
              "timezone": SHANGHAI, "connect_timeout": 2, "read_timeout": 7, **overrides}
    return SapB1Settings(**values)


@pytest.fixture
def connector():
    with SapB1Connector(settings(), name="sap_test") as c:
        c.client.close = lambda: None  # no Logout in the strict mocks
        yield c


def receipt_movement(reference: str = "MV-1", kind: str = "misc_receipt") -> Movement:
    k = MovementKind(kind)
    out, inn = k.stock_sign
    return Movement.model_validate({
        "reference": reference, "kind": kind, "document_date": "2024-05-01",
        "counterparty": {"code": "SUP-01", "name": "S", "role": "supplier"} if k.partner_role else None,
        "lines": [{"line_no": 1, "sku": "TS-001", "quantity": "2", "unit": "PCS",
                   "from_warehouse": "WH01" if out else None, "to_warehouse": "WH02" if inn else None}]})


def query_of(call) -> dict[str, list[str]]:
    return parse_qs(urlsplit(call.request.url).query)


# ------------------------------------------------------------------------------------------------
# Settings and registry


def test_registered_and_settings_validated() -> None:
    assert registry.get("sap_b1") is SapB1Connector
    assert "**" in repr(settings().password)
    with pytest.raises(ValidationError):
        settings(timezone="Mars/Olympus")
    with pytest.raises(ValidationError):
        settings(reference_field="Reference2 eq 'x'")
    with pytest.raises(ValidationError):
        settings(series={"Orders": 3})
    with pytest.raises(ValidationError):
        settings(odata_version="v3")
    assert settings(series={"InventoryGenEntries": 21}).series == {"InventoryGenEntries": 21}


def test_di_server_settings_reach_the_soap_login() -> None:
    from connectors.sap_b1.di_server import DiServerClient

    connector = SapB1Connector(settings(transport="di_server", di_database_server="hana01:30015",
                                        di_database_type="dst_HANADB", di_license_server="lic:40000"))
    assert isinstance(connector.client, DiServerClient)
    assert connector.client._login_fields["DatabaseServer"] == "hana01:30015"
    assert connector.client._login_fields["DatabaseType"] == "dst_HANADB"
    assert "AddObject per movement" in " ".join(connector.capabilities.notes)


def test_capabilities() -> None:
    caps = SapB1Connector(settings(batch_size=40)).capabilities
    assert caps.movement_kinds == {k.value for k in MovementKind}
    assert caps.entities == {Entity.ITEMS, Entity.WAREHOUSES, Entity.LOCATIONS, Entity.PARTNERS, Entity.MOVEMENTS}
    assert caps.incremental == {Entity.ITEMS, Entity.PARTNERS, Entity.MOVEMENTS}
    assert caps.max_batch == 40 and caps.posting_calls == 1


# ------------------------------------------------------------------------------------------------
# Push and find


def test_push_looks_for_the_key_then_creates_once(mocked, connector) -> None:
    add_login(mocked)
    lookup = (f"{root()}/InventoryGenEntries?%24filter=Reference2+eq+%27K1%27"
              "&%24select=DocEntry%2CDocNum%2CDocumentStatus%2CCancelled%2CCancelStatus%2CReference2&%24orderby=DocEntry+asc")
    mocked.add(responses.GET, lookup, json={"value": []}, match=[
        responses.matchers.query_string_matcher(lookup.split("?")[1])])
    mocked.add(responses.POST, f"{root()}/InventoryGenEntries", status=201,
               json={"DocEntry": 31, "DocNum": 1031, "DocumentStatus": "bost_Open", "Reference2": "K1"})
    receipt = connector.push(receipt_movement(), "K1")
    assert receipt == Receipt("K1", "31", "1031", True, "bost_Open")
    sent = json.loads(mocked.calls[2].request.body)
    assert sent["Reference2"] == "K1" and sent["Reference1"] == "MV-1" and sent["JournalMemo"] == "erphub:misc_receipt"
    assert sent["DocumentLines"] == [{"ItemCode": "TS-001", "Quantity": 2, "WarehouseCode": "WH02"}]


def test_push_of_a_key_already_there_creates_nothing(mocked, connector) -> None:
    add_login(mocked)
    mocked.add(responses.GET, re.compile(rf"{re.escape(root())}/InventoryGenEntries\?.*"), json={"value": [
        {"DocEntry": 31, "DocNum": 1031, "DocumentStatus": "bost_Open", "Cancelled": "tNO", "Reference2": "K1"}]})
    receipt = connector.push(receipt_movement(), "K1")
    assert receipt == Receipt("K1", "31", "1031", False, "bost_Open")
    assert [c.request.method for c in mocked.calls] == ["POST", "GET"]


def test_a_cancelled_document_does_not_count(mocked, connector) -> None:
    add_login(mocked)
    mocked.add(responses.GET, re.compile(rf"{re.escape(root())}/PurchaseDeliveryNotes\?.*"), json={"value": [
        {"DocEntry": 2, "DocNum": 2, "Cancelled": "tYES", "CancelStatus": "csYes", "Reference2": "K9"},
        {"DocEntry": 3, "DocNum": 3, "Cancelled": "tNO", "CancelStatus": "csCancellation", "Reference2": "K9"}]})
    for entity in ("DeliveryNotes", "Returns", "PurchaseReturns", "InventoryGenEntries", "InventoryGenExits",
                   "StockTransfers"):
        mocked.add(responses.GET, re.compile(rf"{re.escape(root())}/{entity}\?.*"), json={"value": []})
    assert connector.find("K9") is None


def test_negative_stock_is_rejected_with_the_vendor_code(mocked, connector) -> None:
    add_login(mocked)
    mocked.add(responses.GET, re.compile(rf"{re.escape(root())}/InventoryGenExits\?.*"), json={"value": []})
    mocked.add(responses.POST, f"{root()}/InventoryGenExits", status=400, json={"error": {
        "code": -10, "message": {"lang": "en-us", "value": "Quantity falls into negative inventory  [IGE1.ItemCode][line: 1]"}}})
    with pytest.raises(Rejected) as refused:
        connector.push(receipt_movement(kind="scrap"), "K2")
    assert refused.value.vendor_code == "-10"


def test_a_key_longer_than_reference2_is_a_config_error(connector) -> None:
    with pytest.raises(ConfigError, match="U_HubKey"):
        connector.push(receipt_movement(), "hub:tenant-1:movement-000042")


def test_a_user_field_takes_long_keys(mocked) -> None:
    c = SapB1Connector(settings(reference_field="U_HubKey"))
    add_login(mocked)
    mocked.add(responses.GET, re.compile(rf"{re.escape(root())}/InventoryGenEntries\?.*"), json={"value": []})
    mocked.add(responses.POST, f"{root()}/InventoryGenEntries", status=201, json={"DocEntry": 1, "DocNum": 1})
    c.push(receipt_movement(), "hub:tenant-1:movement-000042")
    assert query_of(mocked.calls[1])["$filter"] == ["U_HubKey eq 'hub:tenant-1:movement-000042'"]
    assert json.loads(mocked.calls[2].request.body)["U_HubKey"] == "hub:tenant-1:movement-000042"


# ------------------------------------------------------------------------------------------------
# push_many through $batch


class BatchServer:
    """A $batch endpoint that posts changesets in order and stops at the first refused one."""

    def __init__(self, refuse: set[str]) -> None:
        self.refuse = refuse
        self.created: list[str] = []
        self.batches = 0

    def __call__(self, request):
        self.batches += 1
        body = request.body.decode()
        assert request.headers["Content-Type"] == f"multipart/mixed;boundary={body.split(chr(13))[0][2:]}"
        keys = [json.loads(line)["Reference2"] for line in body.split("\r\n") if line.startswith("{")]
        assert body.count("Content-ID: ") == len(keys) and body.count("multipart/mixed;boundary=changeset_") == len(keys)
        parts = []
        for key in keys:
            if key in self.refuse:
                parts.append("--br\r\nContent-Type: application/http\r\n\r\nHTTP/1.1 400 Bad Request\r\n"
                             "Content-Type: application/json\r\n\r\n" + json.dumps({"error": {
                                 "code": "-10", "message": f"Quantity falls into negative inventory ({key})"}}) + "\r\n")
                break
            self.created.append(key)
            entry = len(self.created)
            parts.append(f"--br\r\nContent-Type: multipart/mixed;boundary=cs{entry}\r\n\r\n--cs{entry}\r\n"
                         "Content-Type: application/http\r\nContent-ID: 1\r\n\r\nHTTP/1.1 201 Created\r\n"
                         "Content-Type: application/json\r\n\r\n"
                         + json.dumps({"DocEntry": entry, "DocNum": 500 + entry, "Reference2": key})
                         + f"\r\n--cs{entry}--\r\n")
        return 200, {"Content-Type": "multipart/mixed;boundary=br"}, "".join(parts) + "--br--\r\n"


def test_push_many_three_of_a_hundred_failing_leaves_97_created(mocked) -> None:
    # Given 100 goods receipts, three of which the company refuses
    c = SapB1Connector(settings(batch_size=50))
    keys = [f"K{i:03d}" for i in range(100)]
    refused = {"K010", "K050", "K077"}
    server = BatchServer(refused)
    add_login(mocked)
    mocked.add(responses.GET, re.compile(rf"{re.escape(root())}/InventoryGenEntries\?.*"), json={"value": []})
    mocked.add_callback(responses.POST, f"{root()}/$batch", callback=server)
    # When they are pushed in one call
    results = c.push_many([(receipt_movement(f"MV-{k}"), k) for k in keys])
    # Then there is one result per movement, in order: 97 receipts and 3 rejections with the vendor code
    assert len(results) == 100
    assert [k for k, r in zip(keys, results) if isinstance(r, Rejected)] == sorted(refused)
    assert all(r.vendor_code == "-10" for r in results if isinstance(r, Rejected))
    receipts = [r for r in results if isinstance(r, Receipt)]
    assert len(receipts) == 97 and all(r.created for r in receipts)
    assert [r.key for r in receipts] == [k for k in keys if k not in refused]
    # and each document was created exactly once, nothing resent after it succeeded
    assert sorted(server.created) == sorted(set(keys) - refused) and len(server.created) == 97
    assert len({r.document_id for r in receipts}) == 97
    lookups = [cl for cl in mocked.calls if cl.request.method == "GET"]
    assert len(lookups) == 5  # one "or" lookup per 20 keys, all before anything is sent
    assert server.batches == 4  # after each stop, the changesets not executed lead the next batch of 50


def test_push_many_skips_keys_already_there(mocked) -> None:
    c = SapB1Connector(settings())
    server = BatchServer(set())
    add_login(mocked)
    mocked.add(responses.GET, re.compile(rf"{re.escape(root())}/InventoryGenEntries\?.*"), json={"value": [
        {"DocEntry": 9, "DocNum": 99, "Cancelled": "tNO", "Reference2": "KB"}]})
    mocked.add_callback(responses.POST, f"{root()}/$batch", callback=server)
    results = c.push_many([(receipt_movement("MV-A"), "KA"), (receipt_movement("MV-B"), "KB")])
    assert results[1] == Receipt("KB", "9", "99", False, None)
    assert isinstance(results[0], Receipt) and results[0].created and server.created == ["KA"]


def test_push_many_lost_batch_answer_is_ambiguous_for_each(mocked) -> None:
    import requests
    c = SapB1Connector(settings())
    add_login(mocked)
    mocked.add(responses.GET, re.compile(rf"{re.escape(root())}/InventoryGenEntries\?.*"), json={"value": []})
    mocked.add(responses.POST, f"{root()}/$batch", body=requests.exceptions.ReadTimeout("timed out"))
    results = c.push_many([(receipt_movement("MV-A"), "KA"), (receipt_movement("MV-B"), "KB")])
    assert all(isinstance(r, Ambiguous) for r in results)


# ------------------------------------------------------------------------------------------------
# Reads


def item(code: str, day: str, at: str | None) -> dict:
    return {"ItemCode": code, "ItemName": f"item {code}", "InventoryUOM": "PCS", "UpdateDate": day + "T00:00:00Z",
            "UpdateTime": at, "Valid": "tYES", "Frozen": "tNO"}


def test_incremental_read_filters_by_date_on_the_server_and_by_time_here(mocked, connector) -> None:
    # Given since = 2024-05-01 10:00:00 in Shanghai (02:00 UTC)
    since = datetime(2024, 5, 1, 2, 0, tzinfo=timezone.utc)
    add_login(mocked)
    mocked.add(responses.GET, re.compile(rf"{re.escape(root())}/Items\?.*"), json={"value": [
        item("A", "2024-05-01", "09:59:59"), item("B", "2024-05-01", "10:00:00"), item("C", "2024-05-02", "01:00:00")]})
    pages = list(connector.read(Entity.ITEMS, since=since, page_size=50))
    # Then the server was asked for the local date, the earlier record of that day is dropped here,
    # the one exactly at since is kept, and max_modified is the highest stamp
    assert query_of(mocked.calls[1])["$filter"] == ["UpdateDate ge '2024-05-01'"]
    assert mocked.calls[1].request.headers["Prefer"] == "odata.maxpagesize=50"
    assert [r.sku for p in pages for r in p.records] == ["B", "C"]
    assert pages[-1].max_modified == datetime(2024, 5, 2, 1, 0, tzinfo=timezone(timedelta(hours=8)))
    assert pages[-1].resume is None


def test_pages_never_exceed_the_size_and_tokens_resume_exactly(mocked, connector) -> None:
    # Given a server that ignores the page size and sends 5 rows, then 2 more behind a nextLink
    add_login(mocked)
    first = [item(c, "2024-05-01", "10:00:00") for c in "ABCDE"]
    mocked.add(responses.GET, re.compile(rf"{re.escape(root())}/Items\?(?!.*skip).*"),
               json={"value": first, "@odata.nextLink": "Items?$skip=5"})
    mocked.add(responses.GET, re.compile(rf"{re.escape(root())}/Items\?.*%24skip=5.*"),
               json={"value": [item(c, "2024-05-01", "10:00:00") for c in "FG"]})
    pages = list(connector.read(Entity.ITEMS, page_size=2))
    assert [[r.sku for r in p.records] for p in pages] == [["A", "B"], ["C", "D"], ["E"], ["F", "G"]]
    assert [p.resume is None for p in pages] == [False, False, False, True]
    rest = list(connector.read(Entity.ITEMS, resume=pages[1].resume))
    assert [[r.sku for r in p.records] for p in rest] == [["E"], ["F", "G"]]
    assert query_of(mocked.calls[-2]).get("$skip") is None and query_of(mocked.calls[-1])["$skip"] == ["5"]


def test_a_record_that_does_not_map_goes_to_page_errors(mocked, connector) -> None:
    add_login(mocked)
    mocked.add(responses.GET, re.compile(rf"{re.escape(root())}/Items\?.*"), json={"value": [
        item("A", "2024-05-01", "10:00:00"), {**item("B", "2024-05-01", "10:00:00"), "InventoryUOM": "KILO"},
        {**item("C", "2024-05-01", "10:00:00"), "ItemName": None}]})
    [page] = list(connector.read(Entity.ITEMS))
    assert [r.sku for r in page.records] == ["A"]
    assert [(e.record_key, e.field) for e in page.errors] == [("B", "base_unit"), ("C", "ItemName")]


def test_movements_read_every_document_set_with_item_units(mocked, connector) -> None:
    add_login(mocked)
    doc = {"DocEntry": 1, "DocNum": 1, "DocDate": "2024-05-01T00:00:00Z", "Reference1": "MV-9", "Reference2": "K9",
           "JournalMemo": "erphub:count_gain", "UpdateDate": "2024-05-01T00:00:00Z", "UpdateTime": "10:00:00",
           "DocumentLines": [{"LineNum": 0, "ItemCode": "RICE-5", "Quantity": 1.5, "WarehouseCode": "WH02",
                              "UoMCode": "Manual"}]}
    for entity in ("PurchaseDeliveryNotes", "DeliveryNotes", "Returns", "PurchaseReturns"):
        mocked.add(responses.GET, re.compile(rf"{re.escape(root())}/{entity}\?.*"), json={"value": []})
    mocked.add(responses.GET, re.compile(rf"{re.escape(root())}/InventoryGenEntries\?.*"), json={"value": [doc]})
    mocked.add(responses.GET, re.compile(rf"{re.escape(root())}/Items\?.*"), json={"value": [
        {"ItemCode": "RICE-5", "InventoryUOM": "KG"}]})
    for entity in ("InventoryGenExits", "StockTransfers"):
        mocked.add(responses.GET, re.compile(rf"{re.escape(root())}/{entity}\?.*"), json={"value": []})
    pages = list(connector.read(Entity.MOVEMENTS))
    [mv] = [r for p in pages for r in p.records]
    assert (mv.reference, mv.kind, mv.lines[0].unit, mv.lines[0].quantity) == (
        "MV-9", MovementKind.count_gain, "KG", Decimal("1.5"))
    assert pages[-1].resume is None and all(p.resume for p in pages[:-1])
    items_call = next(c for c in mocked.calls if "/Items?" in c.request.url)
    assert query_of(items_call)["$filter"] == ["ItemCode eq 'RICE-5'"]


def test_balances_snapshot_time_survives_resume(mocked, connector) -> None:
    add_login(mocked)
    rows = [{"ItemCode": c, "InventoryUOM": "PCS", "ItemWarehouseInfoCollection": [
        {"WarehouseCode": "01", "InStock": 1.0, "Committed": 0.0}, {"WarehouseCode": "02", "InStock": 2.0,
                                                                   "Committed": 1.0}]} for c in "AB"]
    mocked.add(responses.GET, re.compile(rf"{re.escape(root())}/Items\?.*"), json={"value": rows})
    pages = list(connector.read_balances(page_size=3))
    assert [len(p.records) for p in pages] == [3, 1]
    [rest] = list(connector.read_balances(resume=pages[0].resume))
    assert rest.records == pages[1].records
    assert query_of(mocked.calls[1])["$select"] == ["ItemCode,InventoryUOM,ItemWarehouseInfoCollection"]


def test_check_reads_one_warehouse(mocked, connector) -> None:
    add_login(mocked)
    mocked.add(responses.GET, f"{root()}/Warehouses?%24select=WarehouseCode&%24top=1", json={"value": []})
    result = connector.check()
    assert result.ok and result.server_version == "1000280"


def test_settings_load_from_the_hub_configuration(tmp_path) -> None:
    from erphub import config

    path = tmp_path / "erphub.toml"
    path.write_text('[connections.sap_prod]\nplatform = "sap_b1"\nurl = "https://b1.example.com:50000"\n'
                    'company_db = "SBODEMOUS"\nusername = "manager"\npassword = { env = "SAP_PW" }\n'
                    'odata_version = "v1"\ntimezone = "Asia/Shanghai"\nseries = { InventoryGenEntries = 21 }\n'
                    'transport = "dcom"\n', encoding="utf-8")
    with pytest.raises(config.ConfigInvalid) as bad:
        config.load(path, env={"SAP_PW": "pw-from-env"})
    assert bad.value.problems == [("connections.sap_prod.transport", "expected 'service_layer' or 'di_server'")]
    path.write_text(path.read_text().replace('transport = "dcom"\n', ""), encoding="utf-8")
    loaded = config.load(path, env={"SAP_PW": "pw-from-env"}).connections["sap_prod"]
    assert isinstance(loaded, SapB1Settings) and loaded.password.get_secret_value() == "pw-from-env"
    assert (loaded.odata_version, loaded.timezone, loaded.reference_field) == ("v1", SHANGHAI, "Reference2")
