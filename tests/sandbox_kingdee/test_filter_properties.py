"""FilterString quoting and LIKE escapes, as properties over arbitrary text (hypothesis), over HTTP."""
from __future__ import annotations

from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sandbox.kingdee import KingdeeSimulator
from sandbox.world import World, WorldItem
from tests.sandbox_kingdee.conftest import K3

# Names the server could hold: any printable text, quotes, brackets, wildcards, CJK, no NUL.
NAMES = st.text(st.characters(blacklist_categories=("Cs", "Cc")) | st.sampled_from("'%_[]^-"), min_size=1, max_size=20)


def quote(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def like_literal(text: str) -> str:
    """SQL Server LIKE: bracket the special characters (as a client must)."""
    return "".join(f"[{ch}]" if ch in "[%_" else ch for ch in text)


@pytest.fixture(scope="module")
def served() -> Iterator[tuple[KingdeeSimulator, K3]]:
    sim = KingdeeSimulator()
    with sim.serve() as srv:
        yield sim, K3(srv.url)


def _names(k3: K3, filter_string: str) -> list[str]:
    rows = k3.query({"FormId": "BD_MATERIAL", "FieldKeys": "FName", "FilterString": filter_string})
    assert isinstance(rows, list) and all(isinstance(r, list) for r in rows), rows
    return [r[0] for r in rows]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=NAMES, other=NAMES)
def test_quoted_strings_round_trip(served, name, other):
    sim, k3 = served
    sim.reset()
    sim.seed_world(World(items=(WorldItem("A", name), WorldItem("B", other))))
    found = _names(k3, f"FName = {quote(name)}")
    # Then the record is found; another matches only if equal under the case/pad-insensitive collation
    same = other.rstrip(" ").casefold() == name.rstrip(" ").casefold()
    assert sorted(found) == sorted([name] + ([other] if same else []))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(prefix=NAMES, rest=st.text(max_size=5))
def test_like_with_escaped_literals_matches_the_prefix_only(served, prefix, rest):
    sim, k3 = served
    sim.reset()
    sim.seed_world(World(items=(WorldItem("A", prefix + rest), WorldItem("B", "~" + prefix))))
    found = _names(k3, f"FName like {quote(like_literal(prefix) + '%')}")
    assert prefix + rest in found
    assert ("~" + prefix) not in found


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=NAMES)
def test_in_lists_and_not_equal_quote_the_same_way(served, name):
    sim, k3 = served
    sim.reset()
    sim.seed_world(World(items=(WorldItem("A", name),)))
    assert _names(k3, f"FName in ({quote(name)}, 'zz')") == [name]
    assert _names(k3, f"FName <> {quote(name)}") == []


@pytest.mark.parametrize("pattern, value, matches", [
    ("100[%]", "100%", True), ("100[%]", "1000", False), ("a[_]b", "a_b", True), ("a[_]b", "axb", False),
    ("[[]x]", "[x]", True), ("[a-c]1", "b1", True), ("[a-c]1", "d1", False), ("[^a]1", "b1", True),
    ("a!%b", "a%b", False), ("%", "x", True), ("_", "xy", False), ("A%", "abc", True), ("a]", "a]", True),
])
def test_like_bracket_semantics(served, pattern, value, matches):
    sim, k3 = served
    sim.reset()
    sim.seed_world(World(items=(WorldItem("A", value),)))
    assert (_names(k3, f"FName like {quote(pattern)}") == [value]) == matches


def test_like_escape_clause(served):
    sim, k3 = served
    sim.reset()
    sim.seed_world(World(items=(WorldItem("A", "a%b"), WorldItem("B", "axb"))))
    assert _names(k3, "FName like 'a!%b' escape '!'") == ["a%b"]
