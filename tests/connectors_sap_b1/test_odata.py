"""The ``$filter`` builder: no value can change the structure of the expression (hypothesis)."""
from __future__ import annotations

import re
from datetime import date, time
from decimal import Decimal
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from hypothesis import given, settings
from hypothesis import strategies as st

from connectors.sap_b1.odata import Expr, FilterBuilder, and_, literal, not_, or_, quote_string

F = FilterBuilder({"ItemCode", "UpdateDate", "Reference2", "DocEntry"})

_TOKEN = re.compile(r"\s*(?:(?P<str>'(?:[^']|'')*')|(?P<lp>\()|(?P<rp>\))|(?P<num>-?\d+(?:\.\d+)?)"
                    r"|(?P<word>[A-Za-z_][A-Za-z0-9_/]*))", re.DOTALL)


def tokens(text: str) -> list[tuple[str, str]]:
    """A strict OData tokenizer (the part of the grammar the builder uses). Fails on anything else."""
    out, pos = [], 0
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        assert match is not None and match.end() > pos, f"cannot tokenise at {pos}: {text[pos:pos + 20]!r}"
        kind = match.lastgroup
        value = match.group(kind)
        if kind == "str":
            value = value[1:-1].replace("''", "'")
        elif kind == "word" and value in ("eq", "ne", "gt", "ge", "lt", "le", "and", "or", "not", "true", "false"):
            kind = "kw"
        out.append((kind, value))
        pos = match.end()
    return out


def shape(toks: list[tuple[str, str]]) -> list[str]:
    """The structure: every token with literal values blanked."""
    return [k if k in ("str", "num") else f"{k}:{v}" for k, v in toks]


any_text = st.text(alphabet=st.characters(codec="utf-8"), max_size=40)


@settings(max_examples=300)
@given(value=any_text)
def test_a_string_value_is_one_literal_whatever_it_contains(value: str) -> None:
    expr = F.eq("ItemCode", value)
    toks = tokens(str(expr))
    # Then the expression is exactly: field, operator, one string literal holding the value
    assert toks == [("word", "ItemCode"), ("kw", "eq"), ("str", value)]


@settings(max_examples=200)
@given(a=any_text, b=any_text, c=any_text)
def test_combined_expressions_keep_their_structure(a: str, b: str, c: str) -> None:
    expr = or_(and_(F.eq("Reference2", a), F.ne("ItemCode", b)), not_(F.ge("ItemCode", c)))
    assert shape(tokens(str(expr))) == shape(tokens(
        "((Reference2 eq 'x') and (ItemCode ne 'x')) or (not (ItemCode ge 'x'))"))
    assert [v for k, v in tokens(str(expr)) if k == "str"] == [a, b, c]


@settings(max_examples=200)
@given(value=any_text)
def test_url_encoding_round_trips_the_expression(value: str) -> None:
    # When requests encodes the filter into the query string
    expr = str(F.eq("Reference2", value))
    url = requests.Request("GET", "https://h/b1s/v2/Items", params={"$filter": expr, "$top": "1"}).prepare().url
    # Then the server decodes exactly our expression and nothing else leaks into other options
    query = parse_qs(urlsplit(url).query, keep_blank_values=True)
    assert query == {"$filter": [expr], "$top": ["1"]}


@given(values=st.lists(any_text, min_size=1, max_size=5))
def test_any_of_is_an_or_of_equalities(values: list[str]) -> None:
    toks = tokens(str(F.any_of("Reference2", values)))
    assert [v for k, v in toks if k == "str"] == values
    assert [v for k, v in toks if k == "kw"] == ["eq", *(["or", "eq"] * (len(values) - 1))]


def test_literals() -> None:
    assert quote_string("O'Brien") == "'O''Brien'"
    assert literal(date(2024, 5, 1)) == "'2024-05-01'"
    assert literal(time(13, 14, 45)) == "'13:14:45'"
    assert literal(Decimal("1.50")) == "1.50" and literal(7) == "7" and literal(True) == "true"
    assert literal(0.1) == "0.1"
    with pytest.raises(TypeError):
        literal(object())
    with pytest.raises(ValueError):
        literal(float("nan"))


def test_field_names_come_from_the_allowlist_only() -> None:
    with pytest.raises(ValueError):
        F.eq("ItemCode eq 'x' or ItemCode", "y")
    with pytest.raises(ValueError):
        F.eq("CardName", "y")
    with pytest.raises(ValueError):
        FilterBuilder({"bad name"})
    with pytest.raises(ValueError):
        F.compare("ItemCode", "eq 1 or", "x")


def test_expressions_are_made_by_the_builder_only() -> None:
    with pytest.raises(TypeError):
        Expr("ItemCode eq 'x'")
    with pytest.raises(TypeError):
        and_("ItemCode eq 'x'")  # type: ignore[arg-type]
    assert and_(F.eq("ItemCode", "a")) == F.eq("ItemCode", "a")
