"""Master data: items, warehouses, bin locations, partners."""

from __future__ import annotations

from decimal import ROUND_HALF_EVEN, Context, Decimal, localcontext
from enum import StrEnum
from typing import Any, ClassVar

from pydantic import Field, field_validator, model_validator

from ._fields import (
    Code,
    FrozenMap,
    Name,
    NonNegativeDecimal,
    OptionalCode,
    Text,
    Timestamp,
    normalise_unit_code,
    raise_issues,
    to_decimal,
)
from .base import CanonicalModel
from .errors import UnknownUnitError
from .units import KnownUnitCode, UnitConversion

__all__ = ["Item", "Location", "Partner", "PartnerRole", "Warehouse"]


class Item(CanonicalModel):
    """A stock-keeping item. Quantities are kept in `base_unit`; `conversions`
    say how other units relate to it."""

    sku: Code
    name: Name
    spec: Text = None
    base_unit: KnownUnitCode = "PCS"
    conversions: tuple[UnitConversion, ...] = ()
    category: Text = None
    barcode: OptionalCode = None
    batch_managed: bool = False
    serial_managed: bool = False
    active: bool = True
    standard_cost: NonNegativeDecimal | None = None
    # e.g. {"size": "M", "colour": "red"}; a dict on input, a hashable FrozenMap inside.
    attributes: FrozenMap = Field(default_factory=FrozenMap)
    modified_at: Timestamp | None = None

    _key_fields: ClassVar[tuple[str, ...]] = ("sku",)

    @model_validator(mode="after")
    def _conversions_are_distinct(self) -> Item:
        issues = []
        seen: set[str] = set()
        for i, conv in enumerate(self.conversions):
            if conv.unit == self.base_unit:
                issues.append(
                    (("conversions", i, "unit"), "conversion_is_base_unit",
                     f"{conv.unit!r} is the base unit; it needs no conversion", conv.unit)
                )  # fmt: skip
            elif conv.unit in seen:
                issues.append(
                    (("conversions", i, "unit"), "conversion_duplicate",
                     f"unit {conv.unit!r} is converted more than once", conv.unit)
                )  # fmt: skip
            seen.add(conv.unit)
        raise_issues(type(self).__name__, issues)
        return self

    # -- unit arithmetic ------------------------------------------------------
    # Exact where the maths allows: products are computed with enough digits to
    # be exact, so from_base(to_base(q, u), u) == q. Division (from_base,
    # convert) can be inexact (1 PCS in DOZ); it keeps 50 significant digits and
    # leaves rounding to `canonical.quantize`, never rounding to a unit here.

    def factor(self, unit: str) -> Decimal:
        """Base units in one `unit` (1 for the base unit itself)."""
        code = normalise_unit_code(unit)
        if code == self.base_unit:
            return Decimal(1)
        for conv in self.conversions:
            if conv.unit == code:
                return conv.factor
        raise UnknownUnitError(self.sku, code)

    def to_base(self, qty: Decimal | int | str, unit: str) -> Decimal:
        value, factor = to_decimal(qty), self.factor(unit)
        with _exact_for(value, factor):
            return value * factor

    def from_base(self, qty: Decimal | int | str, unit: str) -> Decimal:
        value, factor = to_decimal(qty), self.factor(unit)
        with _exact_for(value, factor):
            return value / factor

    def convert(self, qty: Decimal | int | str, from_unit: str, to_unit: str) -> Decimal:
        value = to_decimal(qty)
        source, target = self.factor(from_unit), self.factor(to_unit)
        if source == target:
            return value
        with _exact_for(value, source, target):
            return value * source / target


def _exact_for(*numbers: Decimal) -> Any:
    # A product of a and b has at most digits(a) + digits(b) digits; with that
    # much precision multiplication is exact, and so is dividing the product
    # back by b. 50 is the floor for quotients that do not terminate. The
    # context is fresh so a caller's thread context (odd rounding, trapped
    # Inexact) cannot leak in.
    digits = sum(len(n.as_tuple().digits) for n in numbers)
    return localcontext(Context(prec=max(50, digits + 2), rounding=ROUND_HALF_EVEN))


class Warehouse(CanonicalModel):
    code: Code
    name: Name
    organisation: Text = None  # the ERP's stock/inventory organisation, if it has them
    bin_managed: bool = False
    active: bool = True
    modified_at: Timestamp | None = None

    _key_fields: ClassVar[tuple[str, ...]] = ("code",)


class Location(CanonicalModel):
    """A bin inside a warehouse, e.g. ``A-01-01`` (aisle-rack-level)."""

    warehouse: Code
    code: Code
    name: Text = None
    active: bool = True
    modified_at: Timestamp | None = None

    _key_fields: ClassVar[tuple[str, ...]] = ("warehouse", "code")
    _label_fields: ClassVar[tuple[str, ...]] = ("code", "warehouse")


class PartnerRole(StrEnum):
    supplier = "supplier"
    customer = "customer"
    both = "both"

    def can_act_as(self, role: PartnerRole) -> bool:
        """A `both` partner may be the supplier on a receipt and the customer on an issue."""
        return self is role or self is PartnerRole.both


class Partner(CanonicalModel):
    code: Code
    name: Name
    role: PartnerRole
    modified_at: Timestamp | None = None

    _key_fields: ClassVar[tuple[str, ...]] = ("code",)

    @field_validator("role", mode="before")
    @classmethod
    def _role_any_case(cls, value: object) -> object:
        return value.strip().lower() if isinstance(value, str) else value
