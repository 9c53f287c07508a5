"""Units of measure, the catalog that says which exist, and quantisation."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from decimal import ROUND_HALF_EVEN, Context, Decimal, localcontext
from functools import cache
from types import MappingProxyType
from typing import Annotated, Any, ClassVar

from pydantic import AfterValidator, Field, ValidationInfo
from pydantic_core import PydanticCustomError

from ._fields import (
    CODE_JSON_SCHEMA,
    PositiveDecimal,
    Text,
    UnitCode,
    clean_unit_code,
    normalise_unit_code,
    to_decimal,
)
from .base import CanonicalModel

__all__ = ["KnownUnitCode", "Unit", "UnitCatalog", "UnitConversion", "catalog_from_context", "quantize"]

MAX_PRECISION = 6


class Unit(CanonicalModel):
    """A unit of measure. `precision` is the most decimal places a quantity in it may have."""

    code: UnitCode
    name: Text = None
    precision: int = Field(default=0, ge=0, le=MAX_PRECISION)

    _key_fields: ClassVar[tuple[str, ...]] = ("code",)


class UnitCatalog(Mapping[str, Unit]):
    """Immutable code → Unit mapping; lookups ignore case and surrounding spaces.

    Passed to validation as context ``{"units": catalog}`` so each connection can
    declare the units (and precisions) its ERP uses.
    """

    __slots__ = ("_units",)

    def __init__(self, units: Iterable[Unit] | Mapping[str, Unit] = ()) -> None:
        found: dict[str, Unit] = {}
        for unit in units.values() if isinstance(units, Mapping) else units:
            if not isinstance(unit, Unit):
                raise TypeError(f"UnitCatalog holds Unit objects, not {type(unit).__name__}")
            found[unit.code] = unit
        self._units = MappingProxyType(found)

    @classmethod
    def default(cls) -> UnitCatalog:
        """Common units: counted ones whole, measured ones to 3 decimals."""
        return _default_catalog()

    def __getitem__(self, code: str) -> Unit:
        return self._units[normalise_unit_code(code)]

    def __contains__(self, code: object) -> bool:
        return isinstance(code, str) and normalise_unit_code(code) in self._units

    def __iter__(self) -> Iterator[str]:
        return iter(self._units)

    def __len__(self) -> int:
        return len(self._units)

    def get(self, code: str, default: Unit | None = None) -> Unit | None:  # type: ignore[override]
        return self._units.get(normalise_unit_code(code), default) if isinstance(code, str) else default

    def with_units(self, *units: Unit) -> UnitCatalog:
        """A new catalog with these units added (replacing any with the same code)."""
        return UnitCatalog([*self._units.values(), *units])

    def __hash__(self) -> int:
        return hash(frozenset(self._units.items()))

    def __repr__(self) -> str:
        return f"UnitCatalog({', '.join(self._units)})"


@cache
def _default_catalog() -> UnitCatalog:
    counted = {
        "PCS": "piece", "EA": "each", "SET": "set", "PAIR": "pair",
        "BOX": "box", "CTN": "carton", "PACK": "pack", "DOZ": "dozen",
    }  # fmt: skip
    measured = {
        "KG": "kilogram", "G": "gram", "T": "tonne", "L": "litre", "ML": "millilitre",
        "M": "metre", "CM": "centimetre", "M2": "square metre", "M3": "cubic metre",
    }  # fmt: skip
    return UnitCatalog(
        [Unit(code=c, name=n, precision=0) for c, n in counted.items()]
        + [Unit(code=c, name=n, precision=3) for c, n in measured.items()]
    )


def catalog_from_context(context: Any) -> UnitCatalog:
    """The catalog in the validation context, or the default one."""
    # Exact-type checks first: this runs for every unit field and line, and the
    # context is nearly always a plain dict holding a UnitCatalog.
    if context.__class__ is dict or isinstance(context, Mapping):
        units = context.get("units")
    else:
        units = None
    if units is None:
        return UnitCatalog.default()
    if units.__class__ is UnitCatalog or isinstance(units, UnitCatalog):
        return units
    return UnitCatalog(units)


def _known_unit(code: str, info: ValidationInfo) -> str:
    if code not in catalog_from_context(info.context):
        raise PydanticCustomError("unit_unknown", f"unknown unit {code!r}")
    return code


def _clean_known_unit(value: str, info: ValidationInfo) -> str:
    # UnitCode's cleaning then _known_unit, in one call.
    return _known_unit(clean_unit_code(value), info)


# A unit code that must exist in the catalog in force.
KnownUnitCode = Annotated[str, AfterValidator(_clean_known_unit), CODE_JSON_SCHEMA]


class UnitConversion(CanonicalModel):
    """1 `unit` = `factor` base units of the item it belongs to (1 BOX = 12 PCS)."""

    unit: KnownUnitCode
    factor: PositiveDecimal

    _key_fields: ClassVar[tuple[str, ...]] = ("unit",)


def quantize(qty: Decimal | int | str, unit: Unit, rounding: str = ROUND_HALF_EVEN) -> Decimal:
    """Round `qty` to the unit's precision. The one place rounding is allowed:
    validation never rounds, callers decide when a computed quantity is final."""
    value = to_decimal(qty)
    # Enough digits for the integer part plus the decimals, so quantize() never
    # fails with InvalidOperation on a large value; a fresh context so the
    # caller's thread context cannot change the outcome.
    with localcontext(Context(prec=max(28, value.adjusted() + unit.precision + 2))):
        return value.quantize(Decimal(1).scaleb(-unit.precision), rounding=rounding)
