"""upsert of Items and Warehouses against the SAP B1 simulator over loopback: the Service Layer on
v1 and v2 ($batch creates, PATCH updates) and the DI Server over SOAP (AddObject / UpdateObject).
Writes are counted from the simulator's call log."""
from __future__ import annotations

import pytest
from pydantic import SecretStr

from canonical import Item, Warehouse
from connectors.base import Entity, Receipt
from connectors.errors import Rejected
from connectors.sap_b1 import SapB1Connector, SapB1Settings
from sandbox.sap_b1 import SapB1Simulator
from tests.conformance.kit import STANDARD_WORLD, Clock

WRITES = {"service_layer": (("POST", "$batch"), ("PATCH", "Items.PATCH"), ("PATCH", "Warehouses.PATCH"),
                            ("POST", "Items.POST"), ("POST", "Warehouses.POST")),
          "di_server": (("POST", "DI.AddObject"), ("POST", "DI.UpdateObject"))}


@pytest.fixture(params=[("v1", "service_layer"), ("v2", "service_layer"), ("v2", "di_server")],
                ids=["v1", "v2", "di"])
def env(request):
    version, transport = request.param
    sim = SapB1Simulator(users={"manager": "secret"}, companies=("SBODEMOUS",), timezone="Asia/Shanghai",
                         clock=Clock())
    sim.seed_world(STANDARD_WORLD)
    with sim.serve() as server:
        settings = SapB1Settings(url=server.url, company_db="SBODEMOUS", username="manager",
                                 password=SecretStr("secret"), odata_version=version, timezone="Asia/Shanghai",
                                 spec_field="User_Text", transport=transport, batch_size=3, read_timeout=10)
        with SapB1Connector(settings) as connector:
            yield sim, connector, transport


def writes(sim, transport: str) -> int:
    return sum(sim.calls.count(method=method, operation=op) for method, op in WRITES[transport])


NEW_ITEMS = [
    Item(sku="NEW-001", name="新款卫衣 M 黑", spec="M/黑", base_unit="PCS", barcode="6900000000011"),
    Item(sku="NEW-002", name="新款卫衣 L 黑", spec="L/黑", base_unit="PCS", batch_managed=True),
    Item(sku="NEW-'03%", name="Quote and percent", base_unit="KG"),
    Item(sku="NEW-004", name="停用款", active=False),
]


def test_create_then_rerun_writes_nothing_then_a_rename_patches_one(env) -> None:
    sim, connector, transport = env
    # Given four new items and one the company already has, unchanged
    existing = Item(sku="TS-001", name="运动T恤", spec="M 白色", base_unit="PCS", barcode="6901234567001")
    records = [*NEW_ITEMS, existing]
    # When they are upserted
    first = connector.upsert(Entity.ITEMS, records)
    # Then the four are created as inventory items, read back as written, and TS-001 is left alone
    assert [(r.key, r.created, r.status) for r in first] == [
        ("NEW-001", True, "created"), ("NEW-002", True, "created"), ("NEW-'03%", True, "created"),
        ("NEW-004", True, "created"), ("TS-001", False, "unchanged")]
    stored = sim.company.render("Items", "NEW-001")
    assert (stored["ItemName"], stored["InventoryUOM"], stored["User_Text"], stored["BarCode"],
            stored["InventoryItem"]) == ("新款卫衣 M 黑", "PCS", "M/黑", "6900000000011", "tYES")
    assert sim.company.render("Items", "NEW-002")["ManageBatchNumbers"] == "tYES"
    read = {i.sku: i for page in connector.read(Entity.ITEMS) for i in page.records}
    for item in records:
        assert read[item.sku].model_dump(include={"sku", "name", "spec", "base_unit", "barcode", "batch_managed",
                                                  "active"}) == \
            item.model_dump(include={"sku", "name", "spec", "base_unit", "barcode", "batch_managed", "active"})
    # and a new item has a warehouse row for every warehouse
    assert {r["WarehouseCode"] for r in stored["ItemWarehouseInfoCollection"]} == {"WH01", "WH02", "WH03"}

    # When the same records are upserted again
    before = writes(sim, transport)
    again = connector.upsert(Entity.ITEMS, records)
    # Then nothing is written and every receipt says so
    assert writes(sim, transport) == before
    assert [(r.created, r.status) for r in again] == [(False, "unchanged")] * 5

    # When one name changes
    renamed = NEW_ITEMS[0].replace(name="新款卫衣 M 黑（加绒）")
    result = connector.upsert(Entity.ITEMS, [renamed, *NEW_ITEMS[1:]])
    # Then exactly one write changed it, still one item
    assert writes(sim, transport) == before + 1
    assert [r.status for r in result] == ["updated", "unchanged", "unchanged", "unchanged"]
    assert sim.company.render("Items", "NEW-001")["ItemName"] == renamed.name
    assert sim.company.keys("Items").count("NEW-001") == 1


def test_a_batch_with_one_bad_record_writes_the_others(env) -> None:
    sim, connector, transport = env
    # Given five new items, the second with a name longer than OITM holds (batch_size 3: two batches)
    items = [Item(sku=f"BAT-{i}", name=("x" * 201) if i == 2 else f"Item {i}") for i in range(1, 6)]
    # When they are upserted
    results = connector.upsert(Entity.ITEMS, items)
    # Then the bad one is refused by name and field, and the four others are created once each
    bad = results[1]
    assert isinstance(bad, Rejected) and bad.vendor_code == "-5002"
    assert str(bad).count("Item 'BAT-2'") >= 1 and bad.details["field"] in ("ItemName", "OITM.ItemName")
    assert bad.record == "BAT-2"
    assert [r.key for r in results if isinstance(r, Receipt) and r.created] == ["BAT-1", "BAT-3", "BAT-4", "BAT-5"]
    assert [k for k in sim.company.keys("Items") if k.startswith("BAT-")] == ["BAT-1", "BAT-3", "BAT-4", "BAT-5"]


def test_warehouses_create_update_and_new_warehouse_rows_on_items(env) -> None:
    sim, connector, transport = env
    # Given a new warehouse, an existing one with a new name, and one whose code SAP cannot hold
    results = connector.upsert(Entity.WAREHOUSES, [
        Warehouse(code="WH-NEW", name="新仓库", bin_managed=True), Warehouse(code="WH02", name="门店仓 2"),
        Warehouse(code="WH-TOO-LONG", name="x")])
    assert [(r.created, r.status) for r in results[:2]] == [(True, "created"), (False, "updated")]
    assert isinstance(results[2], Rejected) and "Warehouse 'WH-TOO-LONG'" in str(results[2])
    assert sim.company.render("Warehouses", "WH-NEW")["EnableBinLocations"] == "tYES"
    assert sim.company.render("Warehouses", "WH02")["WarehouseName"] == "门店仓 2"
    # Then every item, old or new, has a stock row for the new warehouse
    rows = sim.company.render("Items", "TS-001")["ItemWarehouseInfoCollection"]
    assert [r["WarehouseCode"] for r in rows] == ["WH01", "WH02", "WH03", "WH-NEW"]
    balances = {(b.sku, b.warehouse) for p in connector.read_balances(warehouse="WH01") for b in p.records}
    assert ("TS-001", "WH01") in balances
    # And running it again writes nothing
    before = writes(sim, transport)
    again = connector.upsert(Entity.WAREHOUSES, [Warehouse(code="WH-NEW", name="新仓库", bin_managed=True)])
    assert again[0].status == "unchanged" and writes(sim, transport) == before


def test_an_item_changed_by_someone_else_since_its_lookup_is_reread_once(env) -> None:
    sim, connector, transport = env
    # Given an item changed twice in SAP (its DataVersion moved on: the $select lookup's ETag is stale)
    connector.upsert(Entity.ITEMS, [NEW_ITEMS[0]])
    sim.company.update("Items", "NEW-001", {"ForeignName": "edited in SAP"})
    # When the hub renames it
    result = connector.upsert(Entity.ITEMS, [NEW_ITEMS[0].replace(name="改名")])
    # Then the rename lands, with one 412 on v2 (re-read by key, PATCH again), blind elsewhere
    assert result[0].status == "updated"
    assert sim.company.render("Items", "NEW-001")["ItemName"] == "改名"
    conflicts = sim.calls.count(method="PATCH", operation="Items.PATCH", status=412)
    assert conflicts == (1 if connector.settings.odata_version == "v2" and transport == "service_layer" else 0)


def test_bin_locations_create_rerun_update_and_documents_find_them(env) -> None:
    from datetime import date
    from decimal import Decimal

    from canonical import Location, Movement, MovementKind, MovementLine

    sim, connector, transport = env
    # Given a bin-managed warehouse, and a document needing its bin read before the bin exists
    connector.upsert(Entity.WAREHOUSES, [Warehouse(code="WH-BIN", name="货架仓", bin_managed=True)])
    assert connector._load_bins() == {} or ("WH-BIN", "K-01-01") not in connector._load_bins()
    bins = [Location(warehouse="WH-BIN", code="K-01-01", name="一号货架"), Location(warehouse="WH-BIN", code="K-01-02")]
    # When two bins are upserted
    first = connector.upsert(Entity.LOCATIONS, bins)
    # Then they are created, and read back as written
    assert [(r.created, r.status, r.document_id) for r in first] == [(True, "created", "K-01-01"),
                                                                    (True, "created", "K-01-02")]
    read = {loc.natural_key: loc for page in connector.read(Entity.LOCATIONS) for loc in page.records}
    assert read[("WH-BIN", "K-01-01")].name == "一号货架" and read[("WH-BIN", "K-01-02")].active
    # and running it again writes nothing
    before = writes(sim, transport)
    assert [r.status for r in connector.upsert(Entity.LOCATIONS, bins)] == ["unchanged", "unchanged"]
    assert writes(sim, transport) == before
    # When a description changes and a bin is made inactive, they are updated by AbsEntry
    changed = [bins[0].replace(name="一号货架（新）"), bins[1].replace(active=False)]
    assert [r.status for r in connector.upsert(Entity.LOCATIONS, changed)] == ["updated", "updated"]
    read = {loc.natural_key: loc for page in connector.read(Entity.LOCATIONS) for loc in page.records}
    assert read[("WH-BIN", "K-01-01")].name == "一号货架（新）" and not read[("WH-BIN", "K-01-02")].active
    # And a document into the new bin resolves it (the connector forgot its cache of bin codes)
    receipt = connector.push(Movement(reference="BIN-1", kind=MovementKind.misc_receipt, document_date=date.today(),
                                      lines=(MovementLine(line_no=1, sku="TS-001", quantity=Decimal(2), unit="PCS",
                                                          to_warehouse="WH-BIN", to_bin="K-01-01"),)), key="bin-key-1")
    assert receipt.created


def test_a_bin_is_refused_by_name_in_a_warehouse_without_bins_or_with_a_code_another_warehouse_holds(env) -> None:
    from canonical import Location

    sim, connector, transport = env
    connector.upsert(Entity.WAREHOUSES, [Warehouse(code="WH-B1", name="货架仓 1", bin_managed=True),
                                         Warehouse(code="WH-B2", name="货架仓 2", bin_managed=True)])
    connector.upsert(Entity.LOCATIONS, [Location(warehouse="WH-B1", code="Z-01")])
    results = connector.upsert(Entity.LOCATIONS, [Location(warehouse="WH01", code="Y-01"),
                                                  Location(warehouse="WH-B2", code="Z-01"),
                                                  Location(warehouse="WH-B2", code="Z-02")])
    # a warehouse without bin locations: SAP refuses the one record
    assert isinstance(results[0], Rejected) and "Bin location 'Y-01'" in str(results[0])
    # the same code in another warehouse: refused before anything is sent, naming the field
    assert isinstance(results[1], Rejected) and results[1].details["field"] == "OBIN.BinCode"
    assert "WH-B1" in str(results[1])
    # the third is created all the same
    assert isinstance(results[2], Receipt) and results[2].created
    assert Entity.LOCATIONS in connector.capabilities.writable
