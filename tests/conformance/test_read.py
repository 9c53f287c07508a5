"""Full reads and paging: the seeded world comes back exactly; pages chain and resume."""
from __future__ import annotations

from decimal import Decimal

import pytest

from connectors.base import Entity
from tests.conformance.kit import (
    STANDARD_WORLD,
    drain,
    expected_items,
    expected_partners,
    expected_warehouses,
    extra,
    ledger_snapshot,
    on_hand_by_sku_warehouse,
    project,
    unit_of,
)

SMALL_PAGE = 5


def _entities(connector):
    cases = [(Entity.ITEMS, expected_items(), "item_fields"),
             (Entity.WAREHOUSES, expected_warehouses(), "warehouse_fields")]
    if Entity.PARTNERS in connector.capabilities.entities:
        cases.append((Entity.PARTNERS, expected_partners(), "partner_fields"))
    return cases


def test_full_read_returns_exactly_the_seeded_world(target, connector) -> None:
    for entity, expected, fields_key in _entities(connector):
        # When every record of the entity is read
        pages, records = drain(connector.read(entity))
        # Then it is the seeded world, mapped to canonical, once each, without mapping errors
        assert [e for p in pages for e in p.errors] == [], entity
        keys = [r.natural_key for r in records]
        assert sorted(keys) == sorted(expected), entity
        assert len(keys) == len(set(keys)), f"{entity}: duplicates"
        fields = extra(target, fields_key)
        got = {r.natural_key: project(r, fields) for r in records}
        assert got == {k: project(v, fields) for k, v in expected.items()}, entity
        assert pages[-1].resume is None


def test_read_balances_equals_the_true_ledger(sim, connector) -> None:
    # When every balance is read
    pages, balances = drain(connector.read_balances())
    # Then on hand per sku and warehouse is the simulator's true stock
    assert [e for p in pages for e in p.errors] == []
    got = on_hand_by_sku_warehouse((b.sku, b.warehouse, b.on_hand) for b in balances)
    truth = on_hand_by_sku_warehouse((k[0], k[1], q) for k, q in ledger_snapshot(sim).items())
    assert got == truth
    # in each item's base unit, stamped with a timezone-aware time
    assert {(b.sku, b.unit) for b in balances} <= {(i.sku, i.unit) for i in STANDARD_WORLD.items}
    assert all(b.as_of.tzinfo is not None for b in balances)
    assert got[("RICE-5", "WH01")] == Decimal("12.5") and unit_of("RICE-5") == "KG"


def _check_paging(read, size: int, total: int) -> None:
    # When a read pages at ``size``
    pages, records = drain(read(resume=None))
    # Then every page honours the size, only the last page has no resume token, nothing repeats
    assert len(records) == total
    assert len(pages) >= 2, "the paging test needs more than one page"
    assert all(len(p.records) <= size for p in pages), [len(p.records) for p in pages]
    assert all(p.resume is not None for p in pages[:-1])
    assert pages[-1].resume is None
    # And restarting from any page's token yields exactly the rest: no gap, no duplicate
    for index, page in enumerate(pages[:-1]):
        before = [r for p in pages[: index + 1] for r in p.records]
        rest_pages, rest = drain(read(resume=page.resume))
        assert before + rest == records, f"resuming after page {index + 1}"
        assert rest_pages[-1].resume is None


def test_paging_and_resume(connector) -> None:
    size = min(SMALL_PAGE, connector.capabilities.max_page_size)
    items = len(STANDARD_WORLD.items)
    _check_paging(lambda resume: connector.read(Entity.ITEMS, resume=resume, page_size=size), size, items)


def test_balance_paging_and_resume(sim, connector) -> None:
    size = min(SMALL_PAGE, connector.capabilities.max_page_size)
    _, everything = drain(connector.read_balances())
    _check_paging(lambda resume: connector.read_balances(resume=resume, page_size=size), size, len(everything))


@pytest.mark.parametrize("size", [1, 3])
def test_odd_page_sizes_lose_nothing(connector, size) -> None:
    pages, records = drain(connector.read(Entity.ITEMS, page_size=size))
    assert sorted(r.sku for r in records) == sorted(i.sku for i in STANDARD_WORLD.items)
    assert all(len(p.records) <= size for p in pages)
