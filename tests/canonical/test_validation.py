"""Every validation error names the record and the field (DESIGN.md §3)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest
from pydantic import ValidationError

import canonical
from canonical import (
    Item,
    Location,
    Movement,
    MovementLine,
    Partner,
    Problem,
    RecordInvalid,
    StockBalance,
    Unit,
    UnitCatalog,
    parse,
)

from .conftest import line, movement


def problems_of(model, data, **kwargs) -> RecordInvalid:
    with pytest.raises(RecordInvalid) as caught:
        parse(model, data, **kwargs)
    return caught.value


# ---------------------------------------------------------------- quantities


def test_zero_quantity_is_rejected_naming_record_and_line_field():
    # Given a receipt whose only line has quantity zero
    data = movement(lines=[line(quantity="0")])
    # When it is parsed
    err = problems_of(Movement, data)
    # Then the error names the movement and the line's quantity, in our words
    assert err.record == "Movement 'MV-001'"
    assert err.problems == [Problem("lines[0].quantity", "must be greater than zero")]
    assert str(err) == "Movement 'MV-001': lines[0].quantity: must be greater than zero"


def test_negative_quantity_is_rejected_on_the_right_line():
    # Given a second line with a negative quantity
    data = movement(lines=[line(), line(line_no=2, quantity=-3)])
    # When it is parsed
    err = problems_of(Movement, data)
    # Then only that line is blamed
    assert err.problems == [Problem("lines[1].quantity", "must be greater than zero")]


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf"), "NaN", "Infinity", Decimal("NaN")])
def test_nan_and_infinity_are_rejected(bad):
    # Given a vendor that sends NaN or Infinity as a quantity
    data = movement(lines=[line(quantity=bad)])
    # When it is parsed
    err = problems_of(Movement, data)
    # Then the quantity field says it must be finite
    [problem] = err.problems
    assert problem.field == "lines[0].quantity"
    assert problem.message.startswith("must be a finite number")


def test_json_floats_become_exact_decimals():
    # Given a vendor that sends quantities and costs as floats
    data = movement(lines=[line(quantity=2.0, unit="KG", unit_cost=0.1)])
    # When it is parsed
    mv = parse(Movement, data)
    # Then the values are the decimals the vendor meant, not binary approximations
    assert mv.lines[0].quantity == Decimal("2")
    assert mv.lines[0].unit_cost == Decimal("0.1")
    assert isinstance(mv.lines[0].quantity, Decimal)


def test_json_text_numbers_are_read_exactly():
    # Given the record as JSON text
    text = '{"sku": "S", "warehouse": "W", "on_hand": 0.1, "unit": "KG", "as_of": "2024-01-01T00:00:00Z"}'
    # When it is parsed
    balance = parse(StockBalance, text)
    # Then the number did not pass through a float
    assert balance.on_hand == Decimal("0.1")


@pytest.mark.parametrize("bad", ["ten", "1_000", "1,000", True, [1]])
def test_non_numbers_are_rejected(bad):
    err = problems_of(Movement, movement(lines=[line(quantity=bad)]))
    assert [p.field for p in err.problems] == ["lines[0].quantity"]
    assert err.problems[0].message.startswith("must be a number")


# ---------------------------------------------------------------------- units


def test_unknown_unit_is_rejected():
    # Given a line in a unit the catalog does not know
    data = movement(lines=[line(unit="FURLONG")])
    # When it is parsed
    err = problems_of(Movement, data)
    # Then the unit field is named
    assert err.problems == [Problem("lines[0].unit", "unknown unit 'FURLONG'")]


def test_units_come_from_the_catalog_in_the_context():
    # Given a connection whose ERP has a "BAG" unit
    units = UnitCatalog.default().with_units(Unit(code="bag", name="bag", precision=1))
    data = movement(lines=[line(unit="bag", quantity="2.5")])
    # When it is parsed with that catalog
    mv = parse(Movement, data, units=units)
    # Then the unit is known and normalised to upper case
    assert mv.lines[0].unit == "BAG"
    # And without the catalog it is unknown
    assert problems_of(Movement, data).problems[0].field == "lines[0].unit"
    # And plain pydantic validation reads the same context key
    assert Movement.model_validate(data, context={"units": units}) == mv


def test_too_many_decimals_for_the_unit_is_an_error_not_rounded():
    # Given 2.5 pieces and 1.2345 kilograms
    data = movement(lines=[line(quantity="2.5"), line(line_no=2, unit="kg", quantity="1.2345")])
    # When it is parsed
    err = problems_of(Movement, data)
    # Then both lines are reported with the unit's limit
    assert err.problems == [
        Problem("lines[0].quantity", "has 1 decimal place but unit 'PCS' allows none"),
        Problem("lines[1].quantity", "has 4 decimal places but unit 'KG' allows at most 3"),
    ]


def test_trailing_zeros_do_not_count_as_decimals():
    # Given ERPs that pad quantities ("12.0000000000" from K3Cloud)
    mv = parse(Movement, movement(lines=[line(quantity="12.0000000000"), line(line_no=2, quantity=1.0)]))
    # Then whole pieces are accepted and keep their value
    assert [ln.quantity for ln in mv.lines] == [12, 1]


def test_stock_balance_precision_is_checked_too():
    err = problems_of(
        StockBalance,
        {"sku": "S", "warehouse": "W", "bin": "A-01", "on_hand": "1.5", "unit": "PCS", "as_of": "2024-01-01T00:00Z"},
    )
    assert err.record == "StockBalance 'S' (warehouse 'W', bin 'A-01')"
    assert err.problems == [Problem("on_hand", "has 1 decimal place but unit 'PCS' allows none")]


def test_item_conversion_to_unknown_unit_names_its_position():
    err = problems_of(Item, {"sku": "SKU-9", "name": "Bolt", "conversions": [{"unit": "BOX", "factor": 12}, {"unit": "CRATE", "factor": 100}]})
    assert err.record == "Item 'SKU-9'"
    assert err.problems == [Problem("conversions[1].unit", "unknown unit 'CRATE'")]


def test_item_conversion_factor_must_be_positive():
    err = problems_of(Item, {"sku": "SKU-9", "name": "Bolt", "conversions": [{"unit": "BOX", "factor": 0}]})
    assert err.problems == [Problem("conversions[0].factor", "must be greater than zero")]


def test_item_conversions_must_be_distinct_and_not_the_base_unit():
    err = problems_of(
        Item,
        {"sku": "SKU-9", "name": "Bolt", "conversions": [{"unit": "pcs", "factor": 1}, {"unit": "BOX", "factor": 12}, {"unit": "box", "factor": 10}]},
    )
    assert [p.field for p in err.problems] == ["conversions[0].unit", "conversions[2].unit"]


# ---------------------------------------------------------------- warehouses


def test_transfer_to_its_own_warehouse_is_rejected():
    # Given a transfer from WH1 to WH1 without bins
    data = movement(kind="transfer", counterparty=..., lines=[line(from_warehouse="WH1", to_warehouse="WH1")])
    # When it is parsed
    err = problems_of(Movement, data)
    # Then the destination warehouse of that line is blamed
    [problem] = err.problems
    assert problem.field == "lines[0].to_warehouse"
    assert "own warehouse 'WH1'" in problem.message
    assert str(err).startswith("Movement 'MV-001': lines[0].to_warehouse: transfer into its own warehouse")


@pytest.mark.parametrize(("from_bin", "to_bin"), [("A-01-01", None), (None, "A-01-01"), ("A-01-01", "A-01-01")])
def test_same_warehouse_transfer_needs_two_different_bins(from_bin, to_bin):
    data = movement(
        kind="transfer", counterparty=..., lines=[line(from_warehouse="WH1", to_warehouse="WH1", from_bin=from_bin, to_bin=to_bin)]
    )
    assert [p.field for p in problems_of(Movement, data).problems] == ["lines[0].to_warehouse"]


def test_bin_to_bin_move_within_a_warehouse_is_allowed():
    data = movement(
        kind="transfer", counterparty=..., lines=[line(from_warehouse="WH1", to_warehouse="WH1", from_bin="A-01-01", to_bin="B-02-01")]
    )
    assert parse(Movement, data).lines[0].to_bin == "B-02-01"


@pytest.mark.parametrize(
    ("kind", "line_fields", "field", "fragment"),
    [
        ("purchase_receipt", {"to_warehouse": None}, "lines[0].to_warehouse", "needs a to_warehouse"),
        ("purchase_receipt", {"from_warehouse": "WH2"}, "lines[0].from_warehouse", "must not have a from_warehouse"),
        ("count_gain", {"to_warehouse": None}, "lines[0].to_warehouse", "needs a to_warehouse"),
        ("scrap", {"to_warehouse": None}, "lines[0].from_warehouse", "needs a from_warehouse"),
        ("misc_issue", {"from_warehouse": "WH1"}, "lines[0].to_warehouse", "must not have a to_warehouse"),
        ("transfer", {}, "lines[0].from_warehouse", "needs a from_warehouse"),
    ],
)
def test_warehouse_sides_follow_the_kind(kind, line_fields, field, fragment):
    # Given a line whose warehouse sides do not fit its movement's kind
    # (the default counterparty is a supplier, which only purchase kinds need)
    counterparty = movement()["counterparty"] if kind == "purchase_receipt" else ...
    data = movement(kind=kind, counterparty=counterparty, lines=[line(**line_fields)])
    # When it is parsed
    err = problems_of(Movement, data)
    # Then the side that is wrong is named
    assert [p.field for p in err.problems] == [field]
    assert fragment in err.problems[0].message


def test_a_bin_without_its_warehouse_is_rejected():
    err = problems_of(Movement, movement(lines=[line(from_bin="A-01")]))
    assert err.problems == [Problem("lines[0].from_bin", "a from_bin needs a from_warehouse")]


def test_blank_bins_and_lots_mean_none():
    # Given a vendor that sends "" for "no bin" and "no lot"
    mv = parse(Movement, movement(lines=[line(to_bin=" ", lot="")]))
    # Then they are absent, so keys match systems that send null
    assert (mv.lines[0].to_bin, mv.lines[0].lot) == (None, None)


# ------------------------------------------------------------- counterparty


def test_missing_counterparty_is_rejected():
    # Given a sales issue without a customer
    data = movement(kind="sales_issue", counterparty=..., lines=[line(to_warehouse=None, from_warehouse="WH1")])
    # When it is parsed
    err = problems_of(Movement, data)
    # Then the counterparty field is named
    assert err.problems == [Problem("counterparty", "a sales_issue needs a customer")]


def test_counterparty_of_the_wrong_role_is_rejected():
    data = movement(kind="sales_return", counterparty={"code": "SUP-1", "name": "Acme", "role": "supplier"})
    err = problems_of(Movement, data)
    assert err.problems == [Problem("counterparty.role", "partner 'SUP-1' is a supplier; a sales_return needs a customer")]


def test_a_partner_in_both_roles_fits_every_kind():
    both = {"code": "P", "name": "Two-way", "role": "BOTH"}
    assert parse(Movement, movement(kind="purchase_receipt", counterparty=both)).counterparty.role == "both"
    assert parse(Movement, movement(kind="sales_return", counterparty=both)).kind == "sales_return"


def test_kinds_without_a_partner_role_accept_none():
    assert parse(Movement, movement(kind="count_gain", counterparty=...)).counterparty is None


# ----------------------------------------------------------------- datetimes


def test_naive_datetime_is_rejected():
    # Given a posting time with no UTC offset
    data = movement(posted_at="2024-05-01T09:30:00")
    # When it is parsed without an assumed zone
    err = problems_of(Movement, data)
    # Then posted_at is blamed and the message says what to do
    [problem] = err.problems
    assert problem.field == "posted_at"
    assert "timezone-aware" in problem.message and "assume_tz" in problem.message


def test_naive_datetime_is_read_in_the_assumed_zone():
    # Given a vendor that sends Beijing wall-clock times without offset
    data = movement(posted_at="2024-05-01T09:30:00")
    # When it is parsed assuming Asia/Shanghai
    mv = parse(Movement, data, assume_tz="Asia/Shanghai")
    # Then it is that local time, i.e. 01:30 UTC
    assert mv.posted_at == datetime(2024, 5, 1, 1, 30, tzinfo=timezone.utc)
    assert mv.posted_at.tzinfo == ZoneInfo("Asia/Shanghai")


def test_assumed_zone_does_not_override_an_explicit_offset():
    mv = parse(Movement, movement(posted_at="2024-05-01T09:30:00Z"), assume_tz="Asia/Shanghai")
    assert mv.posted_at.utcoffset() == timedelta(0)


def test_unknown_assumed_zone_is_a_configuration_error():
    with pytest.raises(ValueError, match="unknown time zone 'Mars/Olympus'"):
        parse(Movement, movement(), assume_tz="Mars/Olympus")


def test_naive_as_of_on_a_balance_is_rejected():
    err = problems_of(StockBalance, {"sku": "S", "warehouse": "W", "on_hand": 1, "unit": "PCS", "as_of": "2024-01-01 08:00"})
    assert [p.field for p in err.problems] == ["as_of"]


# -------------------------------------------------------------------- codes


@pytest.mark.parametrize(
    ("sku", "fragment"),
    [("   ", "must not be empty"), ("X" * 65, "at most 64 characters"), ("SKU\t1", "U+0009"), ("SKU\u200b1", "U+200B")],
)
def test_bad_codes_are_rejected(sku, fragment):
    err = problems_of(Item, {"sku": sku, "name": "n"})
    assert [p.field for p in err.problems] == ["sku"]
    assert fragment in err.problems[0].message


def test_codes_are_stripped_and_keep_their_case():
    item = parse(Item, {"sku": "  abc-1 ", "name": " Bolt ", "base_unit": " kg"})
    assert (item.sku, item.name, item.base_unit) == ("abc-1", "Bolt", "KG")


# ----------------------------------------------------------- record naming


def test_record_is_named_by_position_when_its_key_is_missing():
    err = problems_of(Movement, movement(reference=...), index=3)
    assert err.record == "Movement #3"
    assert err.problems == [Problem("reference", "is required")]


def test_record_is_unnamed_when_key_and_position_are_missing():
    assert problems_of(Movement, movement(reference="  ")).record == "Movement (unnamed)"


def test_composite_keys_name_every_part():
    err = problems_of(Location, {"warehouse": "WH1", "code": "A-01-01", "name": "x", "colour": "red"})
    assert err.record == "Location 'A-01-01' (warehouse 'WH1')"
    assert err.problems == [Problem("colour", "is not a known field")]


def test_all_problems_are_reported_one_line_each():
    # Given a movement with several independent field problems
    data = movement(document_date="not a date", lines=[line(quantity=0, unit="NOPE")])
    # When it is parsed
    err = problems_of(Movement, data)
    # Then each is its own line, and no pydantic boilerplate leaks through
    lines = str(err).splitlines()
    assert len(lines) == len(err.problems) == 3
    assert all(ln.startswith("Movement 'MV-001': ") for ln in lines)
    assert not any("Value error" in ln or "errors.pydantic.dev" in ln for ln in lines)


def test_direct_construction_uses_the_same_messages():
    # Given code that builds a model directly instead of calling parse
    with pytest.raises(ValidationError) as caught:
        MovementLine(line_no=1, sku="S", quantity=0, unit="PCS")
    # Then the pydantic error carries our message, and problems_from gives our form
    assert canonical.problems_from(caught.value) == [Problem("quantity", "must be greater than zero")]


def test_record_invalid_is_a_value_error_and_pickles():
    import pickle

    err = problems_of(Partner, {"code": "P1", "name": "x", "role": "vendor"})
    assert isinstance(err, ValueError)
    again = pickle.loads(pickle.dumps(err))
    assert (again.record, again.problems) == (err.record, err.problems)
