"""Stock balances: what a system says is on hand at a point in time."""

from __future__ import annotations

from typing import ClassVar

from pydantic import ValidationInfo, model_validator

from ._fields import Code, DecimalValue, NonNegativeDecimal, OptionalCode, Timestamp, raise_issues
from ._precision import precision_issue
from .base import CanonicalModel
from .units import KnownUnitCode

__all__ = ["StockBalance"]


class StockBalance(CanonicalModel):
    """On-hand (and optionally available) quantity of one sku in one place.

    Quantities may be negative: several ERPs allow negative stock and a
    reconciliation must see it, not reject it.
    """

    sku: Code
    warehouse: Code
    bin: OptionalCode = None
    lot: OptionalCode = None
    on_hand: DecimalValue
    available: DecimalValue | None = None
    unit: KnownUnitCode
    as_of: Timestamp
    unit_cost: NonNegativeDecimal | None = None

    _key_fields: ClassVar[tuple[str, ...]] = ("sku", "warehouse", "bin", "lot")

    @model_validator(mode="after")
    def _fits_unit(self, info: ValidationInfo) -> StockBalance:
        issues = [
            issue
            for field in ("on_hand", "available")
            if (issue := precision_issue((field,), getattr(self, field), self.unit, info.context))
        ]
        raise_issues(type(self).__name__, issues)
        return self
