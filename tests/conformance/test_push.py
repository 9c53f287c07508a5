"""Pushes: the ledger moves by exactly the movement, once per key; refusals carry the vendor code."""
from __future__ import annotations

from decimal import Decimal

import pytest

from canonical import MovementKind
from connectors.errors import Action, Rejected
from tests.conformance.kit import (
    expected_change,
    extra,
    fresh_key,
    ledger_change,
    ledger_snapshot,
    movement,
    outbound_kind,
)


def some_kind(connector) -> MovementKind:
    """The kind tests push when any will do: a purchase receipt if supported."""
    kinds = sorted(MovementKind(k) for k in connector.capabilities.movement_kinds)
    assert kinds, "the connector declares no movement kinds"
    return MovementKind.purchase_receipt if MovementKind.purchase_receipt in kinds else kinds[0]


def _named(receipt, documents) -> bool:
    return len(documents) == 1 and documents[0] in {receipt.document_number, receipt.document_id}


def test_push_moves_the_ledger_by_exactly_the_movement(sim, connector) -> None:
    kinds = sorted(MovementKind(k) for k in connector.capabilities.movement_kinds)
    assert kinds, "the connector declares no movement kinds"
    problems = []
    for kind in kinds:
        # Given a valid movement of this kind built from the world
        mv, key = movement(kind), fresh_key()
        before = ledger_snapshot(sim)
        # When it is pushed
        receipt = connector.push(mv, key)
        # Then the true ledger changed by exactly its stock deltas, and one document carries the key
        moved = ledger_change(before, ledger_snapshot(sim))
        if moved != expected_change(mv):
            problems.append(f"{kind}: ledger moved {moved}, expected {expected_change(mv)}")
        if receipt.key != key or not receipt.document_id or not receipt.created:
            problems.append(f"{kind}: receipt {receipt}")
        documents = sim.documents_for(key)
        if not _named(receipt, documents):
            problems.append(f"{kind}: documents for the key {documents}, receipt {receipt}")
    assert problems == []


def test_repeated_key_creates_nothing_new(sim, connector) -> None:
    # Given a movement (a purchase receipt when supported) already pushed once
    mv, key = movement(some_kind(connector)), fresh_key()
    before = ledger_snapshot(sim)
    first = connector.push(mv, key)
    # When the same movement is pushed again with the same key (the first answer was lost)
    again = connector.push(mv, key)
    # Then both receipts name the same document, the second says it found it, and stock moved once
    assert again.document_id == first.document_id
    assert again.document_number == first.document_number
    assert again.created is False
    assert _named(first, sim.documents_for(key)), sim.documents_for(key)
    assert ledger_change(before, ledger_snapshot(sim)) == expected_change(mv)


def test_find_returns_the_receipt_or_none(sim, connector) -> None:
    key = fresh_key()
    assert connector.find(key) is None
    receipt = connector.push(movement(some_kind(connector)), key)
    found = connector.find(key)
    assert found is not None and found.key == key
    assert (found.document_id, found.document_number) == (receipt.document_id, receipt.document_number)
    assert connector.find(fresh_key()) is None


def test_more_than_on_hand_is_rejected_with_the_vendor_code(target, sim, connector) -> None:
    kind = outbound_kind(connector.capabilities.movement_kinds)
    if kind is None:
        pytest.fail("no outbound movement kind to test negative stock with; declare a skip with a reason")
    # Given an issue of more TS-001 than WH01 holds
    on_hand = sim.ledger.total("TS-001", "WH01")
    mv, key = movement(kind, lines=[("TS-001", str(on_hand + 1000))]), fresh_key()
    before = ledger_snapshot(sim)
    # When it is pushed
    with pytest.raises(Rejected) as refused:
        connector.push(mv, key)
    # Then the refusal carries the vendor's code and dead-letters this record only
    assert isinstance(refused.value.vendor_code, str) and refused.value.vendor_code.strip()
    assert refused.value.action is Action.DEAD_LETTER
    code = extra(target, "rejected_vendor_code")
    if code is not None:
        assert refused.value.vendor_code == code
    # and nothing moved, nothing half-posted remains
    assert ledger_change(before, ledger_snapshot(sim)) == {}
    documents = sim.documents_for(key)
    if extra(target, "rejection_leaves_drafts"):
        assert len(documents) <= 1, documents
    else:
        assert documents == []
        assert connector.find(key) is None
    assert sim.ledger.total("TS-001", "WH01") == on_hand and on_hand > Decimal(0)
