"""The $filter tokenizer and parser on their own: quoting, precedence, dialect rules."""
from __future__ import annotations

from datetime import date

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sandbox.sap_b1_odata import QueryError, parse_filter, parse_key, parse_resource, quote, tokenize


@given(st.text())
def test_quoting_round_trips_any_string(text):
    # Given any string, quoted with '' for each quote
    tokens = tokenize(f"ItemCode eq {quote(text)}", "v2")
    # Then the tokenizer reads back exactly that string as one literal
    assert [t.kind for t in tokens] == ["NAME", "KEYWORD", "STRING", "EOF"]
    assert tokens[2].value == text
    # And a filter on it matches that value and nothing else
    predicate = parse_filter(f"ItemCode eq {quote(text)}", "v1")
    assert predicate({"ItemCode": text}.get)
    assert not predicate({"ItemCode": text + "'"}.get)


@given(st.text(min_size=1))
def test_quoted_keys_round_trip(text):
    assert parse_resource(f"Items({quote(text)})/$count").key == text
    assert parse_key(f"ItemCode={quote(text)}") == {"ItemCode": text}


def test_and_binds_tighter_than_or_and_not_tighter_than_and():
    predicate = parse_filter("A eq 1 or A eq 2 and B eq 3", "v2")
    assert predicate({"A": 1, "B": 0}.get)            # A eq 1 or (A eq 2 and B eq 3)
    assert not predicate({"A": 2, "B": 0}.get)
    predicate = parse_filter("not A eq 1 and B eq 3", "v2")
    assert predicate({"A": 2, "B": 3}.get) and not predicate({"A": 1, "B": 3}.get)
    predicate = parse_filter("not (A eq 1 and B eq 3)", "v2")
    assert predicate({"A": 1, "B": 2}.get)


def test_literals_and_nulls():
    get = {"Qty": 2.5, "Name": None, "Day": date(2024, 5, 1), "Code": "it's"}.get
    assert parse_filter("Qty gt 2 and Qty le 2.5 and Qty ne -1", "v2")(get)
    assert parse_filter("Name eq null and Code ne null", "v2")(get)
    assert not parse_filter("Name gt 'a'", "v2")(get)
    assert parse_filter("Day eq 2024-05-01 and Day gt 2024-04-30T23:00:00Z", "v2")(get)
    assert parse_filter("Day eq datetime'2024-05-01T00:00:00' and Day eq '20240501'", "v1")(get)
    assert parse_filter("Code eq 'it''s' and 'it''s' eq Code and 3 gt Qty", "v2")(get)


def test_a_property_checker_refuses_unknown_names():
    with pytest.raises(QueryError) as refused:
        parse_filter("Nope eq 1", "v2", known={"ItemCode"}.__contains__)
    assert refused.value.code == -1000


@pytest.mark.parametrize("text", ["", "eq 1", "A eq", "(A eq 1", "A eq 1)", "A eq 1 B", "A eq 'x", "A eq #",
                                  "A/B eq 1", "A eq guid'00000000-0000-0000-0000-000000000000'", "length(A) eq 1"])
def test_malformed_filters_raise_query_error(text):
    with pytest.raises(QueryError):
        parse_filter(text, "v2")


@pytest.mark.parametrize(("text", "equals"), [
    ("ItemCode eq 'A'", ("ItemCode", {"A"})),
    ("ItemCode eq 'A' or ItemCode eq 'B'", ("ItemCode", {"A", "B"})),
    ("(ItemCode eq 'A' or ItemCode eq 'B') and ItemName eq 'x'", ("ItemCode", {"A", "B"})),
    ("ItemCode eq 'A' or ItemName eq 'B'", None),   # two fields: no key shortcut
    ("not ItemCode eq 'A'", None),
    ("ItemCode ne 'A'", None),
    ("ItemCode eq 1", None),                        # a number against a string key must still fail later
])
def test_key_equality_hints_never_claim_more_than_the_filter(text, equals):
    # The query skips records outside the hint, so the hint must hold for every match
    hint = getattr(parse_filter(text, "v2"), "equals", None)
    assert (None if hint is None else (hint[0], set(hint[1]))) == equals
