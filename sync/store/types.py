"""Column types that keep quantities exact and datetimes timezone-aware on every backend.

SQLite has no decimal type (``Numeric`` comes back as a binary float) and drops ``tzinfo``;
PostgreSQL keeps both. These decorators hide the difference: Python code always gets a
``Decimal`` and an aware UTC ``datetime``, whichever database is underneath.
"""
from __future__ import annotations

import json
import uuid
from datetime import date, datetime, timezone
from decimal import Decimal
from typing import Any

from sqlalchemy import JSON, DateTime, Dialect, Numeric, String
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.types import TypeDecorator, TypeEngine

# Numeric(38, 12) on PostgreSQL: 26 digits before the point, 12 after.
PRECISION = 38
SCALE = 12
# Text width on SQLite: sign, 38 digits, the point, and room to spare.
SQLITE_TEXT_LENGTH = 64


def utcnow() -> datetime:
    """The current time as an aware UTC datetime (the store's column default)."""
    return datetime.now(timezone.utc)


def normalise_decimal(value: Decimal | int | str) -> Decimal:
    """``value`` as an exact Decimal without trailing zeros or exponent, e.g. ``1.500 -> 1.5``,
    ``1E+2 -> 100``, ``-0 -> 0``.

    Raises ``TypeError`` for floats and bools (already inexact, or a bug), ``ValueError`` for
    NaN/infinity and for values that ``Numeric(38, 12)`` cannot hold without rounding.
    """
    if isinstance(value, bool) or isinstance(value, float):
        raise TypeError(f"quantities must be Decimal, int or str, not {type(value).__name__}: {value!r}")
    if isinstance(value, (int, str)):
        value = Decimal(value)
    if not isinstance(value, Decimal):
        raise TypeError(f"quantities must be Decimal, int or str, not {type(value).__name__}: {value!r}")
    if not value.is_finite():
        raise ValueError(f"quantity must be finite, got {value}")
    sign, digits, exponent = value.as_tuple()
    assert isinstance(exponent, int)
    if not any(digits):
        return Decimal(0)
    numbers = list(digits)
    # Drop trailing fractional zeros; spell out a positive exponent as zeros.
    while exponent < 0 and numbers[-1] == 0:
        numbers.pop()
        exponent += 1
    if exponent > 0:
        numbers.extend([0] * exponent)
        exponent = 0
    while len(numbers) > 1 and numbers[0] == 0:
        numbers.pop(0)
    fraction_digits = -exponent
    integer_digits = max(len(numbers) - fraction_digits, 0)
    if fraction_digits > SCALE:
        raise ValueError(f"quantity {value} has {fraction_digits} decimal places; the store keeps at most {SCALE}")
    if integer_digits > PRECISION - SCALE:
        raise ValueError(f"quantity {value} has {integer_digits} integer digits; the store keeps at most {PRECISION - SCALE}")
    return Decimal((sign, tuple(numbers), exponent))


class ExactDecimal(TypeDecorator[Decimal]):
    """An exact decimal: ``Numeric(38, 12)`` on PostgreSQL, a normalised decimal string on SQLite.

    Values come back as normalised ``Decimal`` on both backends (``Decimal("1.5")``, never
    ``1.500000000000`` or a float). Floats are refused. On SQLite the column holds text, so
    compare and sum quantities in Python, not in SQL.
    """

    impl = Numeric(PRECISION, SCALE, asdecimal=True)
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name == "sqlite":
            return dialect.type_descriptor(String(SQLITE_TEXT_LENGTH))
        return dialect.type_descriptor(Numeric(PRECISION, SCALE, asdecimal=True))

    def process_bind_param(self, value: Any, dialect: Dialect) -> Any:
        if value is None:
            return None
        exact = normalise_decimal(value)
        if dialect.name == "sqlite":
            return format(exact, "f")
        return exact

    def process_result_value(self, value: Any, dialect: Dialect) -> Decimal | None:
        if value is None:
            return None
        if isinstance(value, float):  # never written by us; refuse to guess
            raise TypeError(f"found a float {value!r} in an exact decimal column")
        return normalise_decimal(value if isinstance(value, Decimal) else str(value))

    def process_literal_param(self, value: Any, dialect: Dialect) -> str:
        if value is None:
            return "NULL"
        text = format(normalise_decimal(value), "f")
        return f"'{text}'" if dialect.name == "sqlite" else text

    @property
    def python_type(self) -> type[Decimal]:
        return Decimal


class UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware instant, stored in UTC and always returned as an aware UTC datetime.

    ``timestamptz`` on PostgreSQL; on SQLite a fixed-width UTC text
    (``YYYY-MM-DD HH:MM:SS.ffffff``), so ordering and comparisons in SQL stay correct.
    Naive datetimes are refused (``ValueError``): the store cannot know their zone.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if not isinstance(value, datetime):
            raise TypeError(f"expected an aware datetime, got {type(value).__name__}: {value!r}")
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError(f"naive datetime {value.isoformat()} refused: give it a timezone")
        value = value.astimezone(timezone.utc)
        if dialect.name == "sqlite":
            return value.replace(tzinfo=None)
        return value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=timezone.utc)
        return value.astimezone(timezone.utc)

    @property
    def python_type(self) -> type[datetime]:
        return datetime


#: Payload column: JSONB on PostgreSQL, JSON text elsewhere. ``None`` is SQL NULL, not JSON ``null``.
Payload = JSON(none_as_null=True).with_variant(JSONB(none_as_null=True), "postgresql")


def _json_default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return format(value, "f") if value.is_finite() else str(value)
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    if isinstance(value, uuid.UUID):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable: {value!r}")


def json_dumps(value: Any) -> str:
    """The engine's JSON serialiser: Decimals as exact strings, dates as ISO 8601, UTF-8 kept."""
    return json.dumps(value, default=_json_default, ensure_ascii=False, separators=(",", ":"))
