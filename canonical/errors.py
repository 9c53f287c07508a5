"""Errors raised by the canonical model.

`RecordInvalid` is what callers (mapping, migration dry runs, the error queue)
see: one record, named the way an operator would search for it, and a flat list
of problems with dotted field paths. It is a ValueError so that code which only
knows "bad input" can still catch it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

__all__ = ["Problem", "RecordInvalid", "UnknownUnitError"]


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong with a record.

    `field` is a dotted path such as ``lines[0].quantity`` ("" for the record as
    a whole). `code` is a stable machine-readable type (e.g. ``quantity_not_positive``)
    for fingerprinting in the error queue; it is left out of equality so tests and
    callers can compare on what a human reads.
    """

    field: str
    message: str
    code: str = field(default="", compare=False)

    def __str__(self) -> str:
        return f"{self.field}: {self.message}" if self.field else self.message


class RecordInvalid(ValueError):
    """A record failed validation. `str()` gives one line per problem."""

    def __init__(self, record: str, problems: Iterable[Problem]) -> None:
        self.record = record
        self.problems: list[Problem] = list(problems)
        super().__init__(str(self))

    def __str__(self) -> str:
        if not self.problems:
            return f"{self.record}: invalid"
        return "\n".join(f"{self.record}: {p}" for p in self.problems)

    def __reduce__(self):  # keep it picklable across worker processes
        return (type(self), (self.record, self.problems))


class UnknownUnitError(ValueError):
    """An item was asked to convert a unit it has no conversion for.

    Raised by `Item.to_base/from_base/convert`; this is a programming or mapping
    error at the call site, not a validation failure of the item itself.
    """

    def __init__(self, sku: str, unit: str) -> None:
        self.sku = sku
        self.unit = unit
        super().__init__(
            f"Item {sku!r}: unit {unit!r} is neither its base unit nor one of its conversions"
        )

    def __reduce__(self):
        return (type(self), (self.sku, self.unit))
