"""A small, safe builder for OData ``$filter`` expressions (RELIABILITY.md §4.4).

Rules it enforces, so no value can change the structure of an expression:

* field names come from an allowlist given to :class:`FilterBuilder` (and must look like an
  identifier), never from data;
* values are rendered as literals only: strings are wrapped in ``'…'`` with every ``'`` doubled,
  numbers as plain decimal text, dates as ``'YYYY-MM-DD'``, booleans as ``true``/``false``;
* an :class:`Expr` can only be made by the builder and combined with :func:`and_`, :func:`or_`
  and :func:`not_`, which parenthesise their operands.

The expression is *not* URL-encoded here: it goes into ``params={"$filter": str(expr)}`` and
``requests`` encodes it once, as a whole (``'`` → ``%27``, space → ``+``).

    >>> f = FilterBuilder({"ItemCode", "UpdateDate"})
    >>> str(and_(f.ge("UpdateDate", date(2024, 5, 1)), f.eq("ItemCode", "O'Brien")))
    "(UpdateDate ge '2024-05-01') and (ItemCode eq 'O''Brien')"
"""
from __future__ import annotations

import math
import re
from collections.abc import Iterable
from datetime import date, datetime, time
from decimal import Decimal
from enum import Enum

__all__ = ["Expr", "FilterBuilder", "and_", "literal", "not_", "or_", "quote_string"]

FIELD_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,99}(?:/[A-Za-z_][A-Za-z0-9_]{0,99})?$")
_OPERATORS = ("eq", "ne", "gt", "ge", "lt", "le")


def quote_string(value: str) -> str:
    """An OData string literal: ``O'Brien`` → ``'O''Brien'``. Nothing else needs escaping inside
    the quotes; URL-encoding happens later, once, for the whole query string."""
    if not isinstance(value, str):
        raise TypeError(f"expected a string, not {type(value).__name__}")
    return "'" + value.replace("'", "''") + "'"


def literal(value: object) -> str:
    """The OData literal for a Python value (str, bool, int, Decimal, finite float, date, time, Enum)."""
    if isinstance(value, Enum):
        value = value.value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return quote_string(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, Decimal):
        if not value.is_finite():
            raise ValueError(f"not a finite number: {value}")
        return format(value, "f")
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"not a finite number: {value}")
        return format(Decimal(repr(value)), "f")
    if isinstance(value, datetime):
        # The Service Layer ignores the time part of a date literal (guide §3.7.4): say so by
        # refusing it instead of silently losing the time.
        raise TypeError("a datetime has no OData literal here; filter on the date and compare the time yourself")
    if isinstance(value, date):
        return quote_string(value.isoformat())
    if isinstance(value, time):
        return quote_string(value.strftime("%H:%M:%S"))
    raise TypeError(f"no OData literal for {type(value).__name__}")


class Expr:
    """A finished boolean expression. Only the builder and the combinators make these."""

    __slots__ = ("_text",)

    def __init__(self, text: str, *, _token: object = None) -> None:
        if _token is not _BUILDER:
            raise TypeError("build expressions with FilterBuilder, and_, or_ and not_")
        self._text = text

    def __str__(self) -> str:
        return self._text

    def __repr__(self) -> str:
        return f"Expr({self._text!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Expr) and other._text == self._text

    def __hash__(self) -> int:
        return hash(self._text)


_BUILDER = object()


def _make(text: str) -> Expr:
    return Expr(text, _token=_BUILDER)


class FilterBuilder:
    """Comparisons on allowlisted field names."""

    def __init__(self, fields: Iterable[str]) -> None:
        allowed = frozenset(fields)
        for name in allowed:
            if not FIELD_RE.match(name):
                raise ValueError(f"{name!r} is not a valid OData property name")
        self.fields = allowed

    def _field(self, name: str) -> str:
        if name not in self.fields:
            raise ValueError(f"field {name!r} is not allowed in a filter here (allowed: {', '.join(sorted(self.fields))})")
        return name

    def compare(self, field: str, op: str, value: object) -> Expr:
        if op not in _OPERATORS:
            raise ValueError(f"unknown operator {op!r}")
        return _make(f"{self._field(field)} {op} {literal(value)}")

    def eq(self, field: str, value: object) -> Expr:
        return self.compare(field, "eq", value)

    def ne(self, field: str, value: object) -> Expr:
        return self.compare(field, "ne", value)

    def gt(self, field: str, value: object) -> Expr:
        return self.compare(field, "gt", value)

    def ge(self, field: str, value: object) -> Expr:
        return self.compare(field, "ge", value)

    def lt(self, field: str, value: object) -> Expr:
        return self.compare(field, "lt", value)

    def le(self, field: str, value: object) -> Expr:
        return self.compare(field, "le", value)

    def any_of(self, field: str, values: Iterable[object]) -> Expr:
        """``field eq v1 or field eq v2 …`` (the Service Layer has no ``in``)."""
        parts = [self.eq(field, v) for v in values]
        if not parts:
            raise ValueError("any_of needs at least one value")
        return or_(*parts)


def _combine(op: str, exprs: tuple[Expr, ...]) -> Expr:
    if not exprs:
        raise ValueError(f"{op} needs at least one expression")
    for e in exprs:
        if not isinstance(e, Expr):
            raise TypeError(f"{op} combines Expr objects, not {type(e).__name__}")
    if len(exprs) == 1:
        return exprs[0]
    return _make(f" {op} ".join(f"({e})" for e in exprs))


def and_(*exprs: Expr) -> Expr:
    return _combine("and", exprs)


def or_(*exprs: Expr) -> Expr:
    return _combine("or", exprs)


def not_(expr: Expr) -> Expr:
    if not isinstance(expr, Expr):
        raise TypeError(f"not_ takes an Expr, not {type(expr).__name__}")
    return _make(f"not ({expr})")
