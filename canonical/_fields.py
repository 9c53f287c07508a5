"""Field types shared by every canonical model (internal; not re-exported).

Each type does its own cleaning and raises `PydanticCustomError` with our own
wording, so the same message reaches a caller whether they construct a model
directly or go through `canonical.parse`.
"""

from __future__ import annotations

import math
import unicodedata
from collections.abc import Iterator, Mapping
from datetime import datetime, tzinfo
from decimal import Decimal, InvalidOperation
from functools import lru_cache
from typing import Annotated, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    AfterValidator,
    BeforeValidator,
    GetCoreSchemaHandler,
    ValidationInfo,
    ValidatorFunctionWrapHandler,
    WithJsonSchema,
    WrapValidator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError, ValidationError, core_schema

CODE_MAX_LENGTH = 64

# Generous bounds that no real quantity, cost or factor reaches. They exist so a
# hostile or corrupt value such as "1e999999" cannot make hashing or arithmetic
# allocate megabytes of digits.
_MAX_ADJUSTED_EXPONENT = 17  # |value| < 1e18
_MAX_DECIMAL_PLACES = 20


# --------------------------------------------------------------------- errors

Loc = tuple[str | int, ...]


def raise_issues(title: str, issues: list[tuple[Loc, str, str, Any]]) -> None:
    """Raise every (loc, code, message, input) at once with its own field path.

    Model validators see the whole record but pydantic would file a plain
    ValueError under the record itself; building the ValidationError here keeps
    each domain error on the field it is about (``lines[0].to_warehouse``) and
    pydantic nests the location correctly when the model is inside another one.
    """
    if issues:
        raise ValidationError.from_exception_data(
            title,
            [
                InitErrorDetails(type=PydanticCustomError(code, message), loc=loc, input=value)
                for loc, code, message, value in issues
            ],
        )


# ------------------------------------------------------------------- decimals


def to_decimal(value: object) -> Decimal:
    """Coerce a vendor value to a finite Decimal, or raise ValueError/TypeError.

    Floats go through ``str()`` (the shortest repr) because vendors send JSON
    floats: 0.1 must become Decimal("0.1"), not 0.1000000000000000055511151231257827.
    Booleans are refused although they are ints: a True quantity is a mapping bug.
    """
    # str first: it is what JSON input brings, and no type is both a str and a
    # number, so the order of these tests does not change the outcome.
    if isinstance(value, str):
        try:
            # Decimal() accepts "1_000"; in vendor data that is garbage, not a thousand.
            if "_" in value:
                raise InvalidOperation
            result = Decimal(value.strip())
        except InvalidOperation:
            raise ValueError(f"must be a number (got {value!r})") from None
    elif isinstance(value, bool):
        raise TypeError("must be a number, not a boolean")
    elif isinstance(value, Decimal):
        result = value
    elif isinstance(value, int):
        result = Decimal(value)
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"must be a finite number (got {value!r})")
        result = Decimal(str(value))
    else:
        raise TypeError(f"must be a number (got {type(value).__name__})")
    if not result.is_finite():
        raise ValueError(f"must be a finite number (got {value!s})")
    return result


def decimal_places(value: Decimal) -> int:
    """Decimal places that carry information: 1.500 has 1, 2.000 and 2E+1 have 0."""
    if value.is_zero():
        return 0
    # Fast path for whole numbers, the usual quantity. to_integral_value() keeps
    # every digit (it is not limited by the context precision) and == is exact.
    if value.is_finite() and value == value.to_integral_value():
        return 0
    # Count from the digits rather than normalize(), which would round a value
    # longer than the context precision.
    _, digits, exponent = value.as_tuple()
    trailing_zeros = len(digits) - len(bytes(digits).rstrip(b"\0"))
    return max(0, -(exponent + trailing_zeros))  # type: ignore[operator]


def _decimal_field(value: object) -> Decimal:
    try:
        result = to_decimal(value)
    except (TypeError, ValueError) as exc:
        raise PydanticCustomError("decimal_invalid", str(exc)) from None
    # Bounds apply to stored values only; arithmetic helpers (to_base,
    # quantize) take any finite Decimal, including 50-digit quotients.
    if not result.is_zero():
        if result.adjusted() > _MAX_ADJUSTED_EXPONENT:
            raise PydanticCustomError("decimal_too_large", "is too large (must be below 1e18)")
        # A whole number has no decimal places; skip the call for it.
        if result != result.to_integral_value() and decimal_places(result) > _MAX_DECIMAL_PLACES:
            raise PydanticCustomError(
                "decimal_too_precise", f"has more than {_MAX_DECIMAL_PLACES} decimal places"
            )
    return result


def _non_negative_decimal_field(value: object) -> Decimal:
    # One call instead of a before and an after validator: same checks, same order.
    result = _decimal_field(value)
    if result < 0:
        raise PydanticCustomError("decimal_negative", "must not be negative")
    return result


def _positive_decimal_field(value: object) -> Decimal:
    result = _decimal_field(value)
    if result <= 0:
        raise PydanticCustomError("decimal_not_positive", "must be greater than zero")
    return result


def _positive_quantity_field(value: object) -> Decimal:
    # A reversal is a return kind or a count loss, never a negative line:
    # every vendor we target rejects negative quantities on these documents.
    result = _decimal_field(value)
    if result <= 0:
        raise PydanticCustomError("quantity_not_positive", "must be greater than zero")
    return result


# Any finite decimal (balances may be negative where the ERP allows it).
DecimalValue = Annotated[Decimal, BeforeValidator(_decimal_field)]
NonNegativeDecimal = Annotated[Decimal, BeforeValidator(_non_negative_decimal_field)]
PositiveDecimal = Annotated[Decimal, BeforeValidator(_positive_decimal_field)]
# A movement line's quantity: always > 0, the movement's kind gives the sign.
PositiveQuantity = Annotated[Decimal, BeforeValidator(_positive_quantity_field)]


# ---------------------------------------------------------------------- codes


def _first_invisible(text: str) -> tuple[int, str] | None:
    # Cc are control characters, Cf invisible format characters (zero-width
    # space, BOM, bidi marks); pasted from spreadsheets, they make two codes
    # that look identical compare different. Cs (a lone surrogate, from a
    # mis-decoded file) cannot even be encoded to UTF-8 for hashing or storage.
    #
    # Fast path: str.isprintable() is False for every Cc and Cf character
    # (Python's "Other" and "Separator" categories, from the same Unicode
    # database as unicodedata), so a printable string has none and needs no
    # per-character look-up. Only the rare string with some non-printable
    # character (Cc, Cf, but also e.g. U+3000 or private use) is walked.
    if text.isprintable():
        return None
    for pos, char in enumerate(text):
        if unicodedata.category(char) in ("Cc", "Cf", "Cs"):
            return pos, char
    return None


def _clean_code(value: str) -> str:
    value = value.strip()
    if not value:
        raise PydanticCustomError("code_empty", "must not be empty")
    if len(value) > CODE_MAX_LENGTH:
        raise PydanticCustomError(
            "code_too_long", f"must be at most {CODE_MAX_LENGTH} characters (got {len(value)})"
        )
    if not value.isprintable() and (found := _first_invisible(value)):
        pos, char = found
        raise PydanticCustomError(
            "code_control_character",
            f"must not contain control or invisible characters (U+{ord(char):04X} at position {pos})",
        )
    return value


def clean_unit_code(value: str) -> str:
    # _clean_code then str.upper, in one call.
    return _clean_code(value).upper()


def _optional_code(value: object, handler: ValidatorFunctionWrapHandler) -> object:
    # OptionalCode in one Python call for the usual input, an exact str: what
    # _blank_to_none followed by Code would do to it. Anything else (None,
    # bytes, wrong types) takes the general path with pydantic's own errors.
    if value.__class__ is str:
        value = value.strip()  # type: ignore[attr-defined]
        return _clean_code(value) if value else None
    return handler(_blank_to_none(value))


def _blank_to_none(value: object) -> object:
    # Vendors send "" (or spaces) for "no bin"/"no lot"; treating that as None
    # keeps natural keys and content hashes equal across systems.
    if isinstance(value, str) and not value.strip():
        return None
    return value


def _strip_text(value: str | None) -> str | None:
    return None if value is None else value.strip()


def _clean_name(value: str) -> str:
    value = value.strip()
    if not value:
        raise PydanticCustomError("name_empty", "must not be empty")
    return value


CODE_JSON_SCHEMA = WithJsonSchema({"type": "string", "minLength": 1, "maxLength": CODE_MAX_LENGTH})

# An identifier: sku, warehouse code, bin, lot, reference. Case is kept (vendors
# differ on case sensitivity, so we do not guess).
Code = Annotated[str, AfterValidator(_clean_code), CODE_JSON_SCHEMA]
OptionalCode = Annotated[Code | None, WrapValidator(_optional_code)]
# A required human-readable name: stripped, not empty, otherwise free text.
Name = Annotated[str, AfterValidator(_clean_name)]
# Optional free text: stripped; blank means absent.
Text = Annotated[str | None, BeforeValidator(_blank_to_none), AfterValidator(_strip_text)]
# Unit codes are the one code we normalise: "kg", "Kg " and "KG" are one unit.
UnitCode = Annotated[str, AfterValidator(clean_unit_code), CODE_JSON_SCHEMA]


def normalise_unit_code(code: str) -> str:
    """The same normalisation as UnitCode, for method arguments."""
    if not isinstance(code, str):
        raise TypeError(f"unit code must be a str, not {type(code).__name__}")
    return code.strip().upper()


# ------------------------------------------------------------------ datetimes


@lru_cache(maxsize=64)
def _zone(name: str) -> ZoneInfo:
    return ZoneInfo(name)


def resolve_zone(value: str | tzinfo) -> tzinfo:
    """Turn an assume_tz setting into a tzinfo, or raise ValueError."""
    if isinstance(value, tzinfo):
        return value
    try:
        return _zone(str(value).strip())
    except (ZoneInfoNotFoundError, ValueError, TypeError):
        raise ValueError(f"unknown time zone {value!r}") from None


def _ensure_aware(value: datetime, info: ValidationInfo) -> datetime:
    if value.tzinfo is not None and value.utcoffset() is not None:
        return value
    assumed = (info.context or {}).get("assume_tz") if isinstance(info.context, Mapping) else None
    if assumed is None:
        raise PydanticCustomError(
            "datetime_naive",
            f"must be timezone-aware (got {value.isoformat()} with no UTC offset); "
            "pass assume_tz to read local times in a known zone",
        )
    try:
        zone = resolve_zone(assumed)
    except ValueError as exc:
        raise PydanticCustomError("time_zone_unknown", f"cannot apply assume_tz: {exc}") from None
    return value.replace(tzinfo=zone)


# The brief's AwareDatetime, plus the assume_tz escape hatch for vendors that
# only send local wall-clock times.
Timestamp = Annotated[datetime, AfterValidator(_ensure_aware)]


# ------------------------------------------------------------- frozen mapping


class FrozenMap(Mapping[str, str]):
    """An immutable, hashable str→str mapping (item attributes such as size, colour).

    Frozen models hash their field values, so a plain dict would make the model
    unhashable (and mutable through the back door). Compares equal to a dict
    with the same items.
    """

    __slots__ = ("_data", "_hash")

    def __init__(self, data: Mapping[str, str] | None = None, /) -> None:
        self._data: dict[str, str] = dict(data or {})
        self._hash: int | None = None

    def __getitem__(self, key: str) -> str:
        return self._data[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __hash__(self) -> int:
        if self._hash is None:
            self._hash = hash(frozenset(self._data.items()))
        return self._hash

    def __repr__(self) -> str:
        return f"FrozenMap({self._data!r})"

    def __reduce__(self):
        return (type(self), (self._data,))

    @classmethod
    def __get_pydantic_core_schema__(cls, source: Any, handler: GetCoreSchemaHandler) -> core_schema.CoreSchema:
        def build(raw: dict[str, str]) -> FrozenMap:
            cleaned: dict[str, str] = {}
            for key, val in raw.items():
                key = key.strip()
                if not key:
                    raise PydanticCustomError("attribute_key_empty", "attribute names must not be empty")
                cleaned[key] = val.strip()
            return cls(cleaned)

        return core_schema.no_info_after_validator_function(
            build,
            handler.generate_schema(dict[str, str]),
            serialization=core_schema.plain_serializer_function_ser_schema(dict),
        )
