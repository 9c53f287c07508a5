"""FilterString quoting: no value can change the query (RELIABILITY.md §4.4)."""
from __future__ import annotations

import re
from datetime import date, datetime, timezone
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from connectors.kingdee.filters import FilterBuilder, FilterError, all_of, like_escape, literal

SHANGHAI = ZoneInfo("Asia/Shanghai")
FB = FilterBuilder(["FNumber", "FNote", "FModifyDate", "FUseOrgId.FNumber", "FID"], zone=SHANGHAI)

# Text without control characters (those are refused, see below)
safe_text = st.text(st.characters(blacklist_categories=("Cc", "Cf", "Cs")), max_size=40)


def tokens(sql: str) -> list[tuple[str, str]]:
    """A small SQL tokenizer: identifiers, operators, and '...' strings with '' as an escaped quote."""
    out, i = [], 0
    while i < len(sql):
        ch = sql[i]
        if ch.isspace():
            i += 1
        elif ch == "'":
            j, value = i + 1, []
            while True:
                if j >= len(sql):
                    raise AssertionError(f"unterminated string in {sql!r}")
                if sql[j] == "'":
                    if j + 1 < len(sql) and sql[j + 1] == "'":
                        value.append("'")
                        j += 2
                        continue
                    break
                value.append(sql[j])
                j += 1
            out.append(("str", "".join(value)))
            i = j + 1
        elif ch in "()=<>,":
            j = i + 1
            while j < len(sql) and sql[j] in "=<>":
                j += 1
            out.append(("op", sql[i:j]))
            i = j
        else:
            m = re.match(r"[A-Za-z0-9_.\-]+", sql[i:])
            assert m, f"unexpected {ch!r} in {sql!r}"
            out.append(("word", m.group(0)))
            i += len(m.group(0))
    return out


@given(safe_text)
def test_an_equality_is_one_field_one_operator_one_string_whatever_the_value(value):
    # Given any value, even one written to break out of the literal
    # When it is compared for equality
    rendered = FB.eq("FNumber", value).text
    # Then the filter is exactly: field, =, one string literal that reads back as the value
    assert tokens(rendered) == [("word", "FNumber"), ("op", "="), ("str", value)]


@given(safe_text, safe_text)
def test_a_conjunction_keeps_its_shape(a, b):
    rendered = all_of([FB.eq("FNumber", a), FB.eq("FNote", b)])
    assert tokens(rendered) == [("op", "("), ("word", "FNumber"), ("op", "="), ("str", a), ("op", ")"),
                                ("word", "and"),
                                ("op", "("), ("word", "FNote"), ("op", "="), ("str", b), ("op", ")")]


def like_regex(pattern: str) -> re.Pattern[str]:
    """SQL Server LIKE semantics for %, _ and [x] classes."""
    out, i = [], 0
    while i < len(pattern):
        ch = pattern[i]
        if ch == "%":
            out.append(".*")
        elif ch == "_":
            out.append(".")
        elif ch == "[":
            end = pattern.index("]", i + 2)
            out.append("[" + re.escape(pattern[i + 1:end]) + "]")
            i = end
        else:
            out.append(re.escape(ch))
        i += 1
    return re.compile("".join(out), re.DOTALL)


@settings(max_examples=300)
@given(safe_text, safe_text)
def test_a_prefix_match_matches_exactly_the_values_starting_with_the_prefix(prefix, other):
    # Given a prefix that may contain LIKE wildcards [ % _
    rendered = FB.starts_with("FNumber", prefix).text
    kinds = tokens(rendered)
    assert kinds[:2] == [("word", "FNumber"), ("word", "like")] and len(kinds) == 3
    pattern = like_regex(kinds[2][1])
    # Then the pattern matches the prefix itself and anything after it, and nothing else
    assert pattern.fullmatch(prefix)
    assert pattern.fullmatch(prefix + other)
    assert bool(pattern.fullmatch(other)) == other.startswith(prefix)


def test_quotes_and_wildcards_are_escaped_sql_server_style():
    assert literal("O'Brien") == "'O''Brien'"
    assert like_escape("OB'50%-X_[1]") == "OB'50[%]-X[_][[]1]"
    assert FB.eq("FNumber", "OB'50%-X").text == "FNumber = 'OB''50%-X'"
    assert FB.starts_with("FNumber", "50%").text == "FNumber like '50[%]%'"


def test_only_allowlisted_fields_and_operators():
    with pytest.raises(FilterError):
        FB.eq("FNumber = '1' or FName", "x")
    with pytest.raises(FilterError):
        FB.eq("FSecret", "x")
    with pytest.raises(FilterError):
        FB.compare("FNumber", "like", "x")
    with pytest.raises(FilterError):
        FilterBuilder(["FNumber;drop"])
    assert FB.eq("fnumber", "A").text == "FNumber = 'A'"  # matched ignoring case, rendered as allowed


def test_control_characters_and_booleans_are_refused():
    for bad in ("a\x00b", "a\nb", "a\u200fb"):
        with pytest.raises(FilterError):
            FB.eq("FNumber", bad)
    with pytest.raises(FilterError):
        FB.eq("FID", True)


def test_values_render_in_the_servers_zone():
    # An aware UTC instant is rendered as Shanghai wall-clock time, to the second
    since = datetime(2024, 3, 1, 0, 0, 0, 500000, tzinfo=timezone.utc)
    assert FB.ge("FModifyDate", since).text == "FModifyDate >= '2024-03-01 08:00:00'"
    assert FB.eq("FModifyDate", date(2024, 3, 1)).text == "FModifyDate = '2024-03-01'"
    assert FB.eq("FID", 100001).text == "FID = 100001"
    assert FB.eq("FID", Decimal("1.50")).text == "FID = 1.50"
    assert FB.is_in("FNumber", ["a", "b'"]).text == "FNumber in ('a','b''')"
    with pytest.raises(FilterError):
        FB.is_in("FNumber", [])
    with pytest.raises(FilterError):
        FilterBuilder(["FModifyDate"]).ge("FModifyDate", since)  # an aware time needs the zone
