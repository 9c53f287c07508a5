"""compare.variance: every class of difference, tolerance, units, the in-flight explanation,
proposals applied through the outbox, and two running simulators after a divergence."""
from __future__ import annotations

import json
from decimal import Decimal as D

import pytest
from sqlalchemy import func, select

from compare.proposals import apply, propose, write_movements
from compare.reconcile_report import reconcile_json, reconcile_markdown, write_reconcile_report
from compare.snapshots import snapshot_systems, store_rows
from compare.variance import Tolerance, VarianceClass, reconcile_snapshots
from sync.intake import read_movements
from sync.push import enqueue
from sync.store import Item, Movement, Outbox
from tests.conformance.kit import movement
from tests.sync.conftest import KINGDEE, REFERENCE, store, systems  # noqa: F401 - fixtures
from tests.sync.test_delivery_history import drain, fast_policy

C = VarianceClass


def add_item(store, sku, base="PCS", conversions=(), cost=None):
    payload = {"sku": sku, "name": sku, "base_unit": base,
               "conversions": [{"unit": u, "factor": f} for u, f in conversions]}
    if cost is not None:
        payload["standard_cost"] = cost
    with store.session() as s:
        s.add(Item(sku=sku, content_hash=sku, payload=payload))


def snap(store, label, *rows):
    return store_rows(store, [dict(sku=r[0], warehouse=r[1], on_hand=D(r[2]), unit=r[3] if len(r) > 3 else "PCS",
                                   unit_cost=D(r[4]) if len(r) > 4 else None) for r in rows], source_label=label)


def by_sku(result):
    return {(v.sku, v.warehouse): v for v in result.variances}


def test_each_class_is_found_and_counted(store):
    # Given two snapshots: one row equal, one changed, one only in A, one only in B,
    # one in a unit item B-2 cannot be converted from
    add_item(store, "U-1", conversions=[("BOX", "12")], cost="2")
    a = snap(store, "A", ("EQ", "W1", "5"), ("CH", "W1", "10"), ("ONLY-A", "W1", "3"), ("U-1", "W1", "24"))
    b = snap(store, "B", ("EQ", "W1", "5"), ("CH", "W1", "7"), ("ONLY-B", "W2", "4"), ("U-1", "W1", "2", "CTN"))
    # When they are reconciled
    result = reconcile_snapshots(store, [a, b])
    rows = by_sku(result)
    # Then each row has its class, and the match rate is the share of rows that agree
    assert rows[("CH", "W1")].cls is C.QUANTITY_MISMATCH and rows[("CH", "W1")].difference == -3
    assert rows[("ONLY-A", "W1")].cls is C.MISSING and rows[("ONLY-A", "W1")].missing_on == ("B",)
    assert rows[("ONLY-B", "W2")].cls is C.MISSING and rows[("ONLY-B", "W2")].missing_on == ("A",)
    assert rows[("U-1", "W1")].cls is C.UNIT_MISMATCH
    assert "no conversion" in rows[("U-1", "W1")].explanation
    assert ("EQ", "W1") not in rows  # exactly equal rows are not drilled into
    assert result.total_rows == 5
    assert result.counts == {C.UNIT_MISMATCH: 1, C.MISSING: 2, C.QUANTITY_MISMATCH: 1, C.IN_FLIGHT: 0, C.MATCH: 1}
    assert result.match_rate == pytest.approx(1 / 5)
    assert result.errors == 4


def test_units_are_converted_to_the_base_unit_and_zero_equals_no_row(store):
    # Given item BX-1 kept in PCS with 1 BOX = 12 PCS, and RICE kept in KG with 1 G = 0.001 KG
    add_item(store, "BX-1", conversions=[("BOX", "12")])
    add_item(store, "RICE", base="KG", conversions=[("G", "0.001")])
    a = snap(store, "A", ("BX-1", "W1", "24"), ("RICE", "W1", "1.5", "KG"), ("ZERO", "W1", "0"))
    b = snap(store, "B", ("BX-1", "W1", "2", "BOX"), ("RICE", "W1", "1500", "G"))
    # When reconciled
    result = reconcile_snapshots(store, [a, b])
    # Then everything agrees after normalising
    assert result.counts[C.MATCH] == 3 and result.match_rate == 1.0
    rows = by_sku(result)
    assert rows[("BX-1", "W1")].sides[1].quantity == 24 and rows[("BX-1", "W1")].sides[1].unit == "BOX"
    assert rows[("ZERO", "W1")].explanation == "0 on hand; no row in B"


def test_tolerance_absolute_and_percent(store):
    a = snap(store, "A", ("P", "W1", "100"), ("Q", "W1", "10"), ("R", "W1", "10"))
    b = snap(store, "B", ("P", "W1", "101"), ("Q", "W1", "10.5"), ("R", "W1", "12"))
    # Exact: three mismatches
    assert reconcile_snapshots(store, [a, b]).counts[C.QUANTITY_MISMATCH] == 3
    # ±1%: P agrees (1 of 100); ±0.5 units: Q agrees; both: P and Q agree, R does not
    assert by_sku(reconcile_snapshots(store, [a, b], tolerance=Tolerance.parse("1%")))[("P", "W1")].cls is C.MATCH
    both = reconcile_snapshots(store, [a, b], tolerance=Tolerance.parse("0.5,1%"))
    assert both.counts[C.MATCH] == 2 and both.counts[C.QUANTITY_MISMATCH] == 1
    assert by_sku(both)[("Q", "W1")].within_tolerance
    assert "within tolerance" in by_sku(both)[("Q", "W1")].explanation
    with pytest.raises(ValueError, match="not a number"):
        Tolerance.parse("abc")


def test_value_at_stake_uses_standard_cost_then_snapshot_cost(store):
    add_item(store, "COSTED", cost="2.5")
    a = snap(store, "A", ("COSTED", "W1", "10"), ("SNAPCOST", "W1", "10", "PCS", "4"), ("NOCOST", "W1", "1"))
    b = snap(store, "B", ("COSTED", "W1", "6"), ("SNAPCOST", "W1", "7"), ("NOCOST", "W1", "2"))
    result = reconcile_snapshots(store, [a, b])
    assert result.value_at_stake == D("4") * D("2.5") + D("3") * D("4")
    assert result.rows_without_cost == 1


def test_markdown_and_json_reports(store, tmp_path):
    add_item(store, "TS-1", cost="10")
    a = snap(store, "kd", ("TS-1", "WH01", "100"), ("TS-2", "WH01", "5"))
    b = snap(store, "ref", ("TS-1", "WH01", "95"), ("TS-2", "WH01", "5"))
    result = reconcile_snapshots(store, [a, b])
    md = reconcile_markdown(result)
    assert "账实相符率 match rate | 50.00% (1 of 2 rows)" in md
    assert "| TS-1 | WH01 | 100 | 95 | PCS | -5 | quantity mismatch | 50.00 |" in md
    data = reconcile_json(result)
    json.dumps(data)  # serialisable
    assert data["counts"]["quantity_mismatch"] == 1 and data["value_at_stake"] == "50"
    assert data["drill_down"][0]["sides"]["ref"]["quantity"] == "95"
    written = write_reconcile_report(result, tmp_path / "out")
    assert {p.name for p in written.values()} == {"reconcile.html", "reconcile.md", "reconcile.json"}
    assert "TS-1" in written["html"].read_text(encoding="utf-8")


def test_two_simulators_after_a_transfer_like_divergence(store, systems):
    # Given Kingdee and the reference ERP seeded with the same world
    running = systems(kd=KINGDEE, ref=REFERENCE)
    first = reconcile_snapshots(store, snapshot_systems(store, running.connections, ["kd", "ref"]))
    assert first.errors == 0 and first.match_rate == 1.0 and first.total_rows > 5
    # When a transfer of 5 TS-001 from WH01 to WH02 is posted in Kingdee only
    running.connections.connector("kd").push(
        movement("transfer", reference="TR-ONLY-KD", lines=[("TS-001", "5")], source="WH01", dest="WH02"),
        key="TR-ONLY-KD")
    result = reconcile_snapshots(store, snapshot_systems(store, running.connections, ["kd", "ref"]))
    # Then exactly the two positions it touched differ, by -5 and +5 against Kingdee (the reference)
    rows = {(v.sku, v.warehouse): v for v in result.variances if v.cls is not C.MATCH}
    assert set(rows) == {("TS-001", "WH01"), ("TS-001", "WH02")}
    assert rows[("TS-001", "WH01")].difference == 5 and rows[("TS-001", "WH02")].difference == -5
    assert all(v.cls is C.QUANTITY_MISMATCH for v in rows.values())


def test_a_movement_in_the_outbox_explains_the_difference_until_delivered(store, systems):
    # Given a receipt posted in Kingdee and enqueued toward the reference ERP, not delivered yet
    running = systems(kd=KINGDEE, ref=REFERENCE)
    receipt = movement("purchase_receipt", reference="PO-IN-FLIGHT", lines=[("TS-001", "7")], dest="WH02")
    running.connections.connector("kd").push(receipt, key="PO-IN-FLIGHT")
    with store.session(write=True) as s:
        enqueue(s, receipt, ["ref"], connections=running.connections, source_connection="kd")
    # When reconciled
    result = reconcile_snapshots(store, snapshot_systems(store, running.connections, ["kd", "ref"]))
    # Then the difference is in flight, naming the movement, and is not an error
    row = next(v for v in result.variances if (v.sku, v.warehouse) == ("TS-001", "WH02"))
    assert row.cls is C.IN_FLIGHT and result.errors == 0
    assert [(m.reference, m.kind, m.side, m.quantity) for m in row.in_flight] == [
        ("PO-IN-FLIGHT", "purchase_receipt", "ref", 7)]
    assert "PO-IN-FLIGHT (purchase_receipt, pending" in row.explanation
    assert result.match_rate < 1.0 and result.match_rate_with_in_flight == 1.0
    # When it is delivered and both systems are read again, it matches
    drain(store, running.connections, fast_policy())
    after = reconcile_snapshots(store, snapshot_systems(store, running.connections, ["kd", "ref"]))
    assert after.errors == 0 and after.counts[C.IN_FLIGHT] == 0 and after.match_rate == 1.0


def test_a_partly_explained_difference_stays_a_mismatch_showing_the_explained_part(store, systems):
    running = systems(kd=KINGDEE, ref=REFERENCE)
    receipt = movement("purchase_receipt", reference="PO-PART", lines=[("TS-001", "7")], dest="WH02")
    running.connections.connector("kd").push(receipt, key="PO-PART")
    running.connections.connector("kd").push(
        movement("purchase_receipt", reference="PO-UNKNOWN", lines=[("TS-001", "2")], dest="WH02"), key="PO-UNKNOWN")
    with store.session(write=True) as s:
        enqueue(s, receipt, ["ref"], connections=running.connections)
    result = reconcile_snapshots(store, snapshot_systems(store, running.connections, ["kd", "ref"]))
    row = next(v for v in result.variances if (v.sku, v.warehouse) == ("TS-001", "WH02"))
    assert row.cls is C.QUANTITY_MISMATCH
    assert row.difference == -9 and row.explained == -7 and row.unexplained == -2
    assert "-7 explained by movements in flight (PO-PART" in row.explanation


def test_propose_then_apply_twice_enqueues_once(store, systems, tmp_path):
    # Given the reference ERP lost 3 TS-001 in WH01 that Kingdee (the reference side) still has
    running = systems(kd=KINGDEE, ref=REFERENCE)
    running.connections.connector("ref").push(
        movement("scrap", reference="SCRAP-REF", lines=[("TS-001", "3")], source="WH01"), key="SCRAP-REF")
    result = reconcile_snapshots(store, snapshot_systems(store, running.connections, ["kd", "ref"]))
    # When the closing adjustments are proposed for ref
    proposed = propose(result, "ref")
    # Then one count gain of 3 into WH01, written as a file erphub push reads back
    assert [(m.kind.value, m.lines[0].sku, m.lines[0].to_warehouse, m.lines[0].quantity) for m in proposed] == [
        ("count_gain", "TS-001", "WH01", 3)]
    assert propose(result, "ref") == proposed  # deterministic
    for name in ("p.json", "p.csv"):
        back = read_movements(write_movements(tmp_path / name, proposed))
        assert back.ok and [m.reference for m in back.movements] == [m.reference for m in proposed]
    # When applied twice
    assert apply(store, running.connections, proposed, "ref").new == 1
    assert apply(store, running.connections, proposed, "ref").new == 0
    with store.session() as s:
        assert s.scalar(select(func.count()).select_from(Movement)) == 1
        assert s.scalar(select(func.count()).select_from(Outbox)) == 1
    # Then, reconciled again before delivery it is in flight; after delivery it matches
    again = reconcile_snapshots(store, snapshot_systems(store, running.connections, ["kd", "ref"]))
    assert again.counts[C.IN_FLIGHT] == 1 and propose(again, "ref") == []
    drain(store, running.connections, fast_policy())
    final = reconcile_snapshots(store, snapshot_systems(store, running.connections, ["kd", "ref"]))
    assert final.errors == 0 and final.match_rate == 1.0


def test_propose_refuses_the_reference_and_count_sheets(store):
    a = snap(store, "sheet", ("X", "W1", "1"))
    b = snap(store, "other", ("X", "W1", "2"))
    result = reconcile_snapshots(store, [a, b])
    with pytest.raises(ValueError, match="reference side"):
        propose(result, "sheet")
    with pytest.raises(ValueError, match="count sheet"):
        propose(result, "other")
