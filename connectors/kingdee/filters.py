"""K3Cloud ``FilterString`` built safely (RELIABILITY.md §4.4, kingdee.md §6).

A FilterString is a SQL WHERE fragment the server translates to SQL, so a value spliced into it
unquoted could change the query: a SKU ``A' or '1'='1`` would read every bill. This module is the
only place that renders one, and it renders:

* field keys only from an allowlist the caller passes (and only of the plain ``FKey`` /
  ``FKey.FSub`` shape), never operator-supplied text;
* string values as ``'...'`` literals with every ``'`` doubled;
* ``LIKE`` patterns with the SQL Server wildcards ``[``, ``%`` and ``_`` escaped by brackets,
  so only the ``%`` the builder adds is a wildcard (prefer ``eq``: exact matches need no LIKE);
* datetimes as ``'YYYY-MM-DD HH:MM:SS'`` in the server's own zone (the server stores zone-less
  local times), dates as ``'YYYY-MM-DD'``, numbers as plain decimals; booleans are refused
  (K3Cloud stores them as ``'0'``/``'1'`` strings on some fields and bits on others: say which).

Strings containing control characters (NUL, line breaks...) are refused rather than quoted: no
key, SKU or code of ours contains one, and some SQL layers treat NUL as a terminator.
"""
from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable
from datetime import date, datetime, tzinfo
from decimal import Decimal
from typing import Union

__all__ = ["Condition", "FilterBuilder", "FilterError", "like_escape", "literal", "render_value"]

_FIELD_KEY = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,63}(\.[A-Za-z][A-Za-z0-9_]{0,63})?$")
_OPERATORS = frozenset({"=", "<>", ">", ">=", "<", "<="})

Value = Union[str, int, Decimal, date, datetime]


class FilterError(ValueError):
    """A filter the builder refuses to render (unknown field, bad value)."""


def _check_text(value: str) -> str:
    for pos, char in enumerate(value):
        if unicodedata.category(char) in ("Cc", "Cf", "Cs"):
            raise FilterError(f"filter value contains a control character (U+{ord(char):04X} at {pos})")
    return value


def literal(value: str) -> str:
    """A SQL string literal: ``O'Brien`` → ``'O''Brien'``."""
    if not isinstance(value, str):
        raise FilterError(f"literal() takes a str, not {type(value).__name__}")
    return "'" + _check_text(value).replace("'", "''") + "'"


def like_escape(value: str) -> str:
    """``value`` with SQL Server LIKE wildcards made literal: ``[`` → ``[[]``, ``%`` → ``[%]``, ``_`` → ``[_]``."""
    out = []
    for char in value:
        out.append(f"[{char}]" if char in "[%_" else char)
    return "".join(out)


def render_value(value: Value, *, zone: tzinfo | None = None) -> str:
    """Any supported value as FilterString text."""
    if isinstance(value, bool):
        raise FilterError("booleans are not rendered: compare with the field's own code ('A', '1', ...)")
    if isinstance(value, str):
        return literal(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, Decimal):
        if not value.is_finite():
            raise FilterError(f"not a finite number: {value}")
        return format(value, "f")
    if isinstance(value, datetime):
        if value.tzinfo is not None:
            if zone is None:
                raise FilterError("an aware datetime needs the server's zone to be rendered")
            value = value.astimezone(zone).replace(tzinfo=None)
        return "'" + value.strftime("%Y-%m-%d %H:%M:%S") + "'"
    if isinstance(value, date):
        return "'" + value.isoformat() + "'"
    raise FilterError(f"cannot render a {type(value).__name__} in a filter")


class Condition:
    """A rendered, safe FilterString fragment. Combine with ``&`` and ``|``."""

    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text

    def __and__(self, other: Condition) -> Condition:
        return Condition(f"({self.text}) and ({other.text})")

    def __or__(self, other: Condition) -> Condition:
        return Condition(f"({self.text}) or ({other.text})")

    def __str__(self) -> str:
        return self.text

    def __repr__(self) -> str:
        return f"Condition({self.text!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Condition) and other.text == self.text

    def __hash__(self) -> int:
        return hash(self.text)


class FilterBuilder:
    """Renders conditions over an allowlist of field keys (matched case-insensitively, as K3Cloud does)."""

    def __init__(self, allowed: Iterable[str], *, zone: tzinfo | None = None) -> None:
        self._allowed: dict[str, str] = {}
        for key in allowed:
            if not _FIELD_KEY.match(key):
                raise FilterError(f"{key!r} is not a field key")
            self._allowed[key.lower()] = key
        self.zone = zone

    def field(self, key: str) -> str:
        if not isinstance(key, str) or key.lower() not in self._allowed:
            raise FilterError(f"field {key!r} is not allowed in filters here")
        return self._allowed[key.lower()]

    def compare(self, key: str, op: str, value: Value) -> Condition:
        if op not in _OPERATORS:
            raise FilterError(f"operator {op!r} is not allowed")
        return Condition(f"{self.field(key)} {op} {render_value(value, zone=self.zone)}")

    def eq(self, key: str, value: Value) -> Condition:
        return self.compare(key, "=", value)

    def ge(self, key: str, value: Value) -> Condition:
        return self.compare(key, ">=", value)

    def is_in(self, key: str, values: Iterable[Value]) -> Condition:
        rendered = [render_value(v, zone=self.zone) for v in values]
        if not rendered:
            raise FilterError(f"an empty IN list for {key!r} matches nothing; do not send the query")
        return Condition(f"{self.field(key)} in ({','.join(rendered)})")

    def starts_with(self, key: str, prefix: str) -> Condition:
        if not isinstance(prefix, str):
            raise FilterError("starts_with takes a str")
        return Condition(f"{self.field(key)} like {literal(like_escape(prefix) + '%')}")


def all_of(conditions: Iterable[Condition | None]) -> str:
    """The FilterString for every non-None condition joined by ``and`` ("" when none)."""
    parts = [c for c in conditions if c is not None]
    if not parts:
        return ""
    if len(parts) == 1:
        return parts[0].text
    return " and ".join(f"({c.text})" for c in parts)
