"""The "too many decimals for the unit" rule, shared by lines and balances."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from ._fields import Loc, decimal_places
from .units import catalog_from_context


def precision_issue(loc: Loc, value: Decimal | None, unit_code: str, context: Any) -> tuple[Loc, str, str, Any] | None:
    """An issue if `value` has more decimals than its unit allows, else None.

    Never rounds: a quantity that does not fit its unit means the mapping or the
    source data is wrong, and silently rounding would hide a stock difference.
    """
    if value is None:
        return None
    unit = catalog_from_context(context).get(unit_code)
    if unit is None:  # an unknown unit is already reported on the unit field
        return None
    places = decimal_places(value)
    if places <= unit.precision:
        return None
    allowed = "none" if unit.precision == 0 else f"at most {unit.precision}"
    return (
        loc,
        "quantity_too_precise",
        f"has {places} decimal place{'' if places == 1 else 's'} but unit {unit.code!r} allows {allowed}",
        value,
    )
