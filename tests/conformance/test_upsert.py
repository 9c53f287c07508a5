"""Writing master data (migrations, master-data flows): create, leave alone, update — by code."""
from __future__ import annotations

import pytest

from canonical import Item, Warehouse
from connectors.base import Entity, Receipt
from connectors.errors import ConfigError, ConnectorError
from tests.conformance.kit import drain, extra, project


def _writable(connector, entity: Entity) -> None:
    if entity not in connector.capabilities.writable:
        with pytest.raises(ConfigError):
            connector.upsert(entity, [])
        pytest.skip(f"{connector.platform} does not write {entity} (capabilities.writable), and says so")


def _read(connector, entity: Entity) -> dict[str, object]:
    return {r.natural_key: r for r in drain(connector.read(entity))[1]}


def test_upsert_creates_leaves_alone_and_updates_items(target, connector) -> None:
    _writable(connector, Entity.ITEMS)
    new = Item(sku="NEW-001", name="新款卫衣 M 黑", spec="M/黑", base_unit="PCS")
    # When a new item is written twice
    first = connector.upsert(Entity.ITEMS, [new])
    again = connector.upsert(Entity.ITEMS, [new])
    # Then it was created once and read back as written, and the second write changed nothing
    assert isinstance(first[0], Receipt) and first[0].created
    assert isinstance(again[0], Receipt) and not again[0].created
    fields = [f for f in extra(target, "item_fields") if f in ("sku", "name", "base_unit")]
    items = _read(connector, Entity.ITEMS)
    assert project(items["NEW-001"], fields) == project(new, fields)
    # When its name changes
    renamed = new.replace(name="新款卫衣 M 黑（加绒）")
    result = connector.upsert(Entity.ITEMS, [renamed])
    # Then the vendor holds the new name, still as one item
    assert isinstance(result[0], Receipt)
    items = _read(connector, Entity.ITEMS)
    assert items["NEW-001"].name == renamed.name
    assert sum(1 for key in items if key == "NEW-001") == 1


def test_upsert_warehouses_and_report_bad_records_one_by_one(target, connector) -> None:
    _writable(connector, Entity.WAREHOUSES)
    good = Warehouse(code="WH-NEW", name="新仓库")
    # When a batch mixes a good warehouse with an item of an unknown unit for the item entity
    results = connector.upsert(Entity.WAREHOUSES, [good])
    assert isinstance(results[0], Receipt)
    assert "WH-NEW" in _read(connector, Entity.WAREHOUSES)
    if Entity.ITEMS in connector.capabilities.writable:
        bad = Item(sku="BAD-UNIT", name="x", base_unit="PAIR")  # a unit the vendor world does not know
        ok = Item(sku="OK-002", name="y", base_unit="PCS")
        mixed = connector.upsert(Entity.ITEMS, [bad, ok])
        # Then each record gets its own result: the good one is written, the bad one is an error
        assert len(mixed) == 2
        assert isinstance(mixed[1], Receipt)
        if isinstance(mixed[0], ConnectorError):
            assert mixed[0].action.value in ("dead_letter", "pause")
        assert "OK-002" in _read(connector, Entity.ITEMS)
