"""Incremental reads: ``since`` is inclusive, stamps are the vendor's, the future is empty."""
from __future__ import annotations

from datetime import timedelta

from connectors.base import Entity
from tests.conformance.kit import QUOTED_SKU, drain


def _touched(sim, clock):
    """Items touched after the seed: TS-001 and the quoted sku exactly at the watermark, SH-001 just before."""
    clock.advance(3600)
    watermark = clock()
    sim.touch("items", "SH-001", watermark - 1)
    sim.touch("items", "TS-001", watermark)
    sim.touch("items", QUOTED_SKU, watermark)
    clock.advance(60)
    return clock.datetime(watermark)


def test_incremental_includes_the_record_at_the_watermark(sim, clock, connector) -> None:
    assert Entity.ITEMS in connector.capabilities.incremental, "items are not declared incremental"
    # Given two items modified exactly at the watermark and one a second before it
    watermark = _touched(sim, clock)
    # When the connector reads what changed since the watermark
    pages, records = drain(connector.read(Entity.ITEMS, since=watermark))
    # Then it gets the two at the watermark and nothing older
    assert sorted(r.sku for r in records) == sorted(["TS-001", QUOTED_SKU])
    # and the pages report the watermark as the highest stamp, timezone-aware
    stamps = [p.max_modified for p in pages if p.max_modified is not None]
    assert stamps and all(s.tzinfo is not None and s.utcoffset() is not None for s in stamps)
    assert max(stamps) == watermark
    # And a second earlier brings the older touch back too
    _, earlier = drain(connector.read(Entity.ITEMS, since=watermark - timedelta(seconds=1)))
    assert sorted(r.sku for r in earlier) == sorted(["TS-001", QUOTED_SKU, "SH-001"])


def test_max_modified_is_the_highest_stamp_of_a_full_read(sim, clock, connector) -> None:
    watermark = _touched(sim, clock)
    pages, records = drain(connector.read(Entity.ITEMS, page_size=min(5, connector.capabilities.max_page_size)))
    assert len(records) == 12
    stamps = [p.max_modified for p in pages if p.max_modified is not None]
    assert all(s.tzinfo is not None and s.utcoffset() is not None for s in stamps)
    assert max(stamps) == watermark
    for page in pages:  # a page's max_modified covers every record on it that carries a stamp
        for record in page.records:
            if record.modified_at is not None:
                assert page.max_modified is not None and record.modified_at <= page.max_modified


def test_a_watermark_in_the_future_returns_nothing(sim, clock, connector) -> None:
    _touched(sim, clock)
    future = clock.datetime() + timedelta(days=1)
    for entity in sorted(connector.capabilities.incremental & {Entity.ITEMS, Entity.WAREHOUSES, Entity.PARTNERS}):
        pages, records = drain(connector.read(entity, since=future))
        assert records == [], entity
        assert pages == [] or pages[-1].resume is None
