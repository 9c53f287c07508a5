"""The fast paths in canonical validation decide exactly as the slow code they replaced.

Each reference below is the pre-optimisation implementation, kept here verbatim
so the faster one can be checked against it.
"""

from __future__ import annotations

import sys
import unicodedata
from decimal import Decimal

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from canonical import Item, Movement, MovementKind, MovementLine, Problem, decimal_places, parse, problems_from
from canonical._fields import _first_invisible

from .conftest import line, movement


def slow_first_invisible(text: str) -> tuple[int, str] | None:
    for pos, char in enumerate(text):
        if unicodedata.category(char) in ("Cc", "Cf", "Cs"):
            return pos, char
    return None


def slow_decimal_places(value: Decimal) -> int:
    if value.is_zero():
        return 0
    _, digits, exponent = value.as_tuple()
    trailing_zeros = len(digits) - len("".join(map(str, digits)).rstrip("0"))
    return max(0, -(exponent + trailing_zeros))  # type: ignore[operator]


# ------------------------------------------------------- invisible characters


def test_every_control_or_format_character_is_non_printable():
    # The fast path skips the per-character scan for str.isprintable() strings.
    # That is exact only if no Cc or Cf character counts as printable; check
    # every code point of the Unicode database this Python ships.
    printable_but_rejected = [
        f"U+{cp:04X}"
        for cp in range(sys.maxunicode + 1)
        if unicodedata.category(chr(cp)) in ("Cc", "Cf", "Cs") and chr(cp).isprintable()
    ]
    assert printable_but_rejected == []


# Characters from every general category, including the ones that are
# non-printable but allowed in codes (Zs such as U+3000, Co, Cn, Zl, Zp) and lone surrogates (Cs, rejected).
_SAMPLE_CHARS = st.one_of(
    st.characters(codec=None),
    st.sampled_from("\t\n\x00\x1f\x7f\x85\xad\u200b\u200e\u2028\u2029\u3000\ue000\ufeff\U000e0001\ud800\u0378 aZ-客"),
)


@settings(max_examples=1000)
@given(st.text(_SAMPLE_CHARS, max_size=40))
@example("SKU\u200b1")
@example("\u3000WH1")  # ideographic space: non-printable, yet allowed
def test_first_invisible_matches_the_per_character_scan(text):
    assert _first_invisible(text) == slow_first_invisible(text)


@pytest.mark.parametrize("char", ["\x00", "\t", "\x7f", "\x9f", "\xad", "\u200b", "\u200e", "\u2066", "\ufeff", "\U000e0001"])
def test_control_and_format_characters_are_still_rejected_in_codes(char):
    err = pytest.raises(Exception, parse, Item, {"sku": f"A{char}B", "name": "n"}).value
    assert err.problems == [
        Problem("sku", f"must not contain control or invisible characters (U+{ord(char):04X} at position 1)")
    ]


@pytest.mark.parametrize("char", ["\u3000", "\ue000", "\u2028", "\u0378"])
def test_other_non_printable_characters_are_still_allowed_in_codes(char):
    assert parse(Item, {"sku": f"A{char}B", "name": "n"}).sku == f"A{char}B"


# ------------------------------------------------------------------ decimals


@settings(max_examples=1000)
@given(
    st.one_of(
        st.decimals(allow_nan=False, allow_infinity=False),
        st.decimals(places=25, allow_nan=False, allow_infinity=False),
        st.integers(-(10**40), 10**40).map(Decimal),
        st.builds(lambda i, e: Decimal(i).scaleb(e), st.integers(-(10**35), 10**35), st.integers(-40, 40)),
    )
)
@example(Decimal("1" * 40 + ".5"))  # longer than the default context precision
@example(Decimal("1" * 40 + ".000"))
@example(Decimal("-0.000"))
@example(Decimal("2E+1"))
@example(Decimal("12.0000000000"))
def test_decimal_places_matches_the_digit_count(value):
    assert decimal_places(value) == slow_decimal_places(value)


# ------------------------------------------------------------ merged validators


def test_blank_optional_code_given_as_bytes_still_goes_through_code_rules():
    # The one-call path for OptionalCode handles str; other inputs keep the old
    # order (blank check on the raw value, then str coercion, then Code rules),
    # so blank bytes are an empty code, not an absent one.
    with pytest.raises(ValidationError) as caught:
        MovementLine(line_no=1, sku="S", quantity=1, unit="PCS", to_warehouse="W", lot=b"  ")
    assert problems_from(caught.value) == [Problem("lot", "must not be empty")]


def test_quantity_checks_keep_their_order_and_codes():
    # Given four lines, each wrong in one way
    # Then each is reported on its own field, with the code it always had
    err = pytest.raises(Exception, parse, Movement, movement(lines=[
        line(quantity="x"), line(line_no=2, quantity="-1"), line(line_no=3, quantity="0.5"), line(line_no=4, unit_cost="-1"),
    ])).value  # fmt: skip
    assert [(p.field, p.code) for p in err.problems] == [
        ("lines[0].quantity", "decimal_invalid"),
        ("lines[1].quantity", "quantity_not_positive"),
        ("lines[2].quantity", "quantity_too_precise"),
        ("lines[3].unit_cost", "decimal_negative"),
    ]


def test_kind_rule_tables_match_the_kind_definitions():
    # stock_sign is now a table lookup; it must still follow from direction
    for kind in MovementKind:
        inbound, outbound = kind.direction in ("in", "transfer"), kind.direction in ("out", "transfer")
        assert tuple(kind.stock_sign) == (-1 if outbound else 0, 1 if inbound else 0)


def test_a_lone_surrogate_in_a_code_is_rejected_before_it_can_break_hashing():
    from canonical import RecordInvalid, Warehouse, parse

    with pytest.raises(RecordInvalid) as err:
        parse(Warehouse, {"code": "WH\ud800", "name": "x"})
    assert err.value.problems[0].field == "code"
