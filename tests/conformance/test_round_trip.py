"""Mapping round trip: a pushed movement read back is the movement we pushed."""
from __future__ import annotations

import pytest

from canonical import MovementKind
from connectors.base import Entity
from tests.conformance.kit import drain, fresh_key, movement


def _shape(mv):
    return (mv.kind, mv.reference, tuple(
        (line.sku, line.quantity, line.unit, line.from_warehouse, line.to_warehouse)
        for line in sorted(mv.lines, key=lambda l: l.line_no)))


def test_pushed_movements_read_back_the_same(sim, clock, connector) -> None:
    if Entity.MOVEMENTS not in connector.capabilities.entities:
        pytest.fail("the connector cannot read movements; declare a skip with a reason")
    # Given one movement of every supported kind, pushed
    since = clock.datetime(clock.advance(60))
    pushed = {}
    for kind in sorted(MovementKind(k) for k in connector.capabilities.movement_kinds):
        mv = movement(kind)
        connector.push(mv, fresh_key())
        pushed[mv.reference] = mv
    # When the connector reads movements back
    pages, records = drain(connector.read(Entity.MOVEMENTS))
    assert [e for p in pages for e in p.errors] == []
    back = {m.reference: m for m in records if m.reference in pushed}
    # Then each has the kind, reference and lines (sku, quantity, unit, warehouses) we pushed
    assert sorted(back) == sorted(pushed)
    assert {r: _shape(m) for r, m in back.items()} == {r: _shape(m) for r, m in pushed.items()}
    for reference, mv in pushed.items():
        if mv.counterparty is not None:
            assert back[reference].counterparty is not None, reference
            assert back[reference].counterparty.code == mv.counterparty.code, reference
    # And an incremental read since just before the pushes finds them all
    if Entity.MOVEMENTS in connector.capabilities.incremental:
        _, recent = drain(connector.read(Entity.MOVEMENTS, since=since))
        assert set(pushed) <= {m.reference for m in recent}
