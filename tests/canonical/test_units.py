"""Units, conversion and quantisation, mostly as properties over many Decimals."""

from __future__ import annotations

from decimal import ROUND_DOWN, ROUND_HALF_UP, Context, Decimal, localcontext

import pytest
from hypothesis import given
from hypothesis import strategies as st

from canonical import Item, Unit, UnitCatalog, UnitConversion, UnknownUnitError, decimal_places, quantize

# Factors as ERPs store them: positive, up to 10 decimals (1 G = 0.001 KG, 1 CTN = 48 PCS).
factors = st.decimals(min_value=Decimal("0.0000000001"), max_value=Decimal("1000000"), places=10)
# Quantities of any sign and size a stock document or ledger holds.
quantities = st.decimals(min_value=Decimal("-1e12"), max_value=Decimal("1e12"), places=6, allow_nan=False)
precisions = st.integers(min_value=0, max_value=6)


def item_with(factor: Decimal, unit: str = "BOX") -> Item:
    return Item(sku="SKU-1", name="Bolt", conversions=(UnitConversion(unit=unit, factor=factor),))


@given(quantity=quantities, factor=factors)
def test_from_base_undoes_to_base(quantity, factor):
    # Given an item with a conversion of any factor
    item = item_with(factor)
    # When a quantity goes to the base unit and back
    back = item.from_base(item.to_base(quantity, "BOX"), "BOX")
    # Then it is exactly the quantity we started with
    assert back == quantity


@given(quantity=quantities, factor=factors)
def test_round_trip_is_exact_even_under_a_tiny_thread_context(quantity, factor):
    # Given a caller whose decimal context only keeps 5 digits
    item = item_with(factor)
    with localcontext() as ctx:
        ctx.prec = 5
        # When converting
        back = item.from_base(item.to_base(quantity, "BOX"), "BOX")
    # Then the conversion used its own wide context
    assert back == quantity


@given(quantity=quantities, box=factors, pack=factors)
def test_convert_goes_through_the_base_unit(quantity, box, pack):
    item = Item(
        sku="S", name="n", conversions=(UnitConversion(unit="BOX", factor=box), UnitConversion(unit="PACK", factor=pack))
    )
    assert item.convert(quantity, "BOX", "PCS") == item.to_base(quantity, "BOX")
    assert item.convert(quantity, "PCS", "PCS") == quantity
    in_pack = item.convert(quantity, "BOX", "PACK")
    with localcontext(Context(prec=100)):  # the test's own arithmetic must be exact too
        in_base = quantity * box
        # the quotient may be inexact, but no further off than 50 significant digits allow
        assert abs(item.to_base(in_pack, "PACK") - in_base) <= abs(in_base) * Decimal("1e-45")


def test_conversions_accept_any_case_and_text_quantities():
    item = item_with(Decimal("12"))
    assert item.to_base("2", " box ") == Decimal("24")
    assert item.from_base(6, "BOX") == Decimal("0.5")
    assert item.to_base(Decimal("3.5"), "pcs") == Decimal("3.5")


def test_unknown_unit_names_the_item_and_the_unit():
    # Given an item that only knows PCS and BOX
    item = item_with(Decimal("12"))
    # When asked to convert kilograms
    with pytest.raises(UnknownUnitError) as caught:
        item.to_base(1, "kg")
    # Then the error says which item and which unit
    assert caught.value.sku == "SKU-1" and caught.value.unit == "KG"
    assert "Item 'SKU-1'" in str(caught.value) and "'KG'" in str(caught.value)
    assert isinstance(caught.value, ValueError)


@given(quantity=quantities, precision=precisions)
def test_quantize_never_exceeds_precision_and_is_idempotent(quantity, precision):
    # Given a unit of any allowed precision
    unit = Unit(code="U", precision=precision)
    # When a quantity is quantised
    once = quantize(quantity, unit)
    # Then it fits the unit, a second pass changes nothing, and it moved by at most half a step
    assert decimal_places(once) <= precision
    assert quantize(once, unit) == once
    assert abs(once - quantity) <= Decimal(1).scaleb(-precision) / 2


@given(quantity=st.decimals(min_value=Decimal("-1e15"), max_value=Decimal("1e15"), places=12), precision=precisions)
def test_quantize_accepts_more_digits_than_the_default_context(quantity, precision):
    assert decimal_places(quantize(quantity, Unit(code="U", precision=precision))) <= precision


def test_quantize_rounds_half_even_unless_told_otherwise():
    pcs = Unit(code="PCS")
    assert [quantize(q, pcs) for q in ("0.5", "1.5", "2.5")] == [0, 2, 2]
    assert quantize("2.5", pcs, rounding=ROUND_HALF_UP) == 3
    assert quantize("1.2349", Unit(code="KG", precision=3), rounding=ROUND_DOWN) == Decimal("1.234")


def test_default_catalog_has_counted_and_measured_units():
    units = UnitCatalog.default()
    assert {code for code in units if units[code].precision == 0} >= {"PCS", "EA", "SET", "PAIR", "BOX", "CTN", "PACK", "DOZ"}
    assert {code for code in units if units[code].precision == 3} >= {"KG", "G", "T", "L", "ML", "M", "CM", "M2", "M3"}
    assert "kg" in units and units.get(" pcs ").code == "PCS" and units.get("NOPE") is None
    assert 42 not in units


def test_catalog_with_units_is_a_new_catalog():
    # Given the default catalog
    base = UnitCatalog.default()
    # When a unit is added and one replaced
    wider = base.with_units(Unit(code="bag"), Unit(code="PCS", precision=2))
    # Then the new catalog has them, and the default is untouched
    assert "BAG" in wider and wider["PCS"].precision == 2
    assert "BAG" not in base and base["PCS"].precision == 0
    assert UnitCatalog.default() is base


def test_unit_precision_is_bounded():
    with pytest.raises(ValueError):
        Unit(code="X", precision=7)
