"""Stock movements: the documents that change stock, and their lines."""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from enum import StrEnum
from typing import Any, ClassVar, Literal, NamedTuple

from pydantic import Field, ValidationInfo, field_validator, model_validator
from pydantic_core import PydanticCustomError

from ._fields import Code, NonNegativeDecimal, OptionalCode, PositiveQuantity, Text, Timestamp, raise_issues
from ._precision import precision_issue
from .base import CanonicalModel
from .master import Partner, PartnerRole
from .units import KnownUnitCode

__all__ = ["Movement", "MovementKind", "MovementLine", "StockDelta", "StockSign"]


class StockSign(NamedTuple):
    """How a kind changes stock on each side of a line: -1, 0 (side unused) or +1."""

    from_warehouse: int
    to_warehouse: int


class MovementKind(StrEnum):
    purchase_receipt = "purchase_receipt"  # 采购入库
    sales_issue = "sales_issue"  # 销售出库
    transfer = "transfer"  # 调拨
    count_gain = "count_gain"  # 盘盈
    count_loss = "count_loss"  # 盘亏
    sales_return = "sales_return"  # 销售退货 (stock comes back in)
    purchase_return = "purchase_return"  # 采购退货 (stock goes back out)
    misc_receipt = "misc_receipt"  # 其他入库
    misc_issue = "misc_issue"  # 其他出库
    scrap = "scrap"  # 报损

    # The rules of a kind never change, so they are looked up in tables built
    # once below rather than recomputed (validation reads them for every line).

    @property
    def direction(self) -> Literal["in", "out", "transfer"]:
        return _DIRECTION[self]

    @property
    def partner_role(self) -> PartnerRole | None:
        """The role the counterparty must be able to play, or None if none is needed."""
        return _PARTNER_ROLE.get(self)

    @property
    def stock_sign(self) -> StockSign:
        """Inbound (0, +1), outbound (-1, 0), transfer (-1, +1)."""
        return _STOCK_SIGN[self]


_INBOUND = frozenset(
    {MovementKind.purchase_receipt, MovementKind.count_gain, MovementKind.sales_return, MovementKind.misc_receipt}
)
_PARTNER_ROLE = {
    MovementKind.purchase_receipt: PartnerRole.supplier,
    MovementKind.purchase_return: PartnerRole.supplier,
    MovementKind.sales_issue: PartnerRole.customer,
    MovementKind.sales_return: PartnerRole.customer,
}
_DIRECTION: dict[MovementKind, Literal["in", "out", "transfer"]] = {
    kind: "transfer" if kind is MovementKind.transfer else "in" if kind in _INBOUND else "out" for kind in MovementKind
}
_SIGN_OF_DIRECTION = {"in": StockSign(0, 1), "out": StockSign(-1, 0), "transfer": StockSign(-1, 1)}
_STOCK_SIGN = {kind: _SIGN_OF_DIRECTION[direction] for kind, direction in _DIRECTION.items()}
# Which warehouse sides a line of each kind needs: (from, to).
_NEEDS_SIDES = {kind: (sign.from_warehouse != 0, sign.to_warehouse != 0) for kind, sign in _STOCK_SIGN.items()}


class StockDelta(NamedTuple):
    """A signed change to one stock position, as a movement line implies it."""

    sku: str
    warehouse: str
    bin: str | None
    lot: str | None
    quantity: Decimal
    unit: str


class MovementLine(CanonicalModel):
    """One sku on a movement. Which warehouse sides are required depends on the
    movement's kind, so that rule lives on Movement; rules that hold for every
    kind live here."""

    line_no: int = Field(ge=1)
    sku: Code
    quantity: PositiveQuantity  # always > 0; the kind gives the sign
    unit: KnownUnitCode
    from_warehouse: OptionalCode = None
    from_bin: OptionalCode = None
    to_warehouse: OptionalCode = None
    to_bin: OptionalCode = None
    lot: OptionalCode = None
    unit_cost: NonNegativeDecimal | None = None

    _key_fields: ClassVar[tuple[str, ...]] = ("line_no",)
    _label_fields: ClassVar[tuple[str, ...]] = ("line_no", "sku")

    @model_validator(mode="after")
    def _consistent(self, info: ValidationInfo) -> MovementLine:
        issue = precision_issue(("quantity",), self.quantity, self.unit, info.context)
        if issue is None and (self.from_bin is None or self.from_warehouse is not None) and (
            self.to_bin is None or self.to_warehouse is not None
        ):
            return self  # the usual case: nothing to report
        issues = [issue] if issue else []
        for side in ("from", "to"):
            if getattr(self, f"{side}_bin") is not None and getattr(self, f"{side}_warehouse") is None:
                issues.append(
                    ((f"{side}_bin",), "bin_without_warehouse",
                     f"a {side}_bin needs a {side}_warehouse", getattr(self, f"{side}_bin"))
                )  # fmt: skip
        raise_issues(type(self).__name__, issues)
        return self


class Movement(CanonicalModel):
    """A stock document. `reference` is our stable id for it: the idempotency
    key material every push and `find` is built on."""

    reference: Code
    kind: MovementKind
    document_date: date
    lines: tuple[MovementLine, ...] = Field(json_schema_extra={"minItems": 1})
    counterparty: Partner | None = None
    posted_at: Timestamp | None = None
    source_system: Text = None
    source_document: Text = None
    memo: Text = None
    # When the source system last changed the document (for incremental reads);
    # volatile, so not part of the content hash.
    modified_at: Timestamp | None = None

    _key_fields: ClassVar[tuple[str, ...]] = ("reference",)

    @field_validator("kind", mode="before")
    @classmethod
    def _kind_any_case(cls, value: object) -> object:
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator("lines")
    @classmethod
    def _has_lines(cls, lines: tuple[MovementLine, ...]) -> tuple[MovementLine, ...]:
        if not lines:
            raise PydanticCustomError("lines_empty", "must have at least one line")
        return lines

    @model_validator(mode="after")
    def _rules_of_kind(self) -> Movement:
        if self._follows_rules_of_kind():
            return self  # the usual case: nothing to report, no messages to build
        issues: list[Any] = []
        first_seen: dict[int, int] = {}
        for i, line in enumerate(self.lines):
            if line.line_no in first_seen:
                issues.append(
                    (("lines", i, "line_no"), "line_no_duplicate",
                     f"line number {line.line_no} is already used by lines[{first_seen[line.line_no]}]", line.line_no)
                )  # fmt: skip
            first_seen.setdefault(line.line_no, i)
            issues.extend(self._warehouse_issues(i, line))
        issues.extend(self._counterparty_issues())
        raise_issues(type(self).__name__, issues)
        return self

    def _follows_rules_of_kind(self) -> bool:
        """True when _rules_of_kind has nothing to report: a quick yes/no over the
        same rules, so the issue lists and messages are only built for bad records."""
        kind = self.kind
        needs_from, needs_to = _NEEDS_SIDES[kind]
        lines = self.lines
        if len(lines) > 1 and len({line.line_no for line in lines}) != len(lines):
            return False
        for line in lines:
            if (line.from_warehouse is None) is needs_from or (line.to_warehouse is None) is needs_to:
                return False
            if (
                kind is MovementKind.transfer
                and line.from_warehouse is not None
                and line.from_warehouse == line.to_warehouse
                and (line.from_bin is None or line.to_bin is None or line.from_bin == line.to_bin)
            ):
                return False
        role = _PARTNER_ROLE.get(kind)
        if role is None:
            return True
        party = self.counterparty
        return party is not None and party.role.can_act_as(role)

    def _warehouse_issues(self, i: int, line: MovementLine) -> list[Any]:
        kind = self.kind
        needs_from, needs_to = _NEEDS_SIDES[kind]
        issues: list[Any] = []
        for side, needed in (("from", needs_from), ("to", needs_to)):
            value = getattr(line, f"{side}_warehouse")
            if needed and value is None:
                issues.append(
                    (("lines", i, f"{side}_warehouse"), "warehouse_missing",
                     f"a {kind.value} line needs a {side}_warehouse", None)
                )  # fmt: skip
            elif not needed and value is not None:
                issues.append(
                    (("lines", i, f"{side}_warehouse"), "warehouse_unexpected",
                     f"a {kind.value} line must not have a {side}_warehouse (it moves stock {kind.direction})", value)
                )  # fmt: skip
        if (
            kind is MovementKind.transfer
            and line.from_warehouse is not None
            and line.from_warehouse == line.to_warehouse
            and (line.from_bin is None or line.to_bin is None or line.from_bin == line.to_bin)
        ):
            issues.append(
                (("lines", i, "to_warehouse"), "transfer_to_same_place",
                 f"transfer into its own warehouse {line.to_warehouse!r}; "
                 "only a bin-to-bin move with two different bins may stay in one warehouse", line.to_warehouse)
            )  # fmt: skip
        return issues

    def _counterparty_issues(self) -> list[Any]:
        role = self.kind.partner_role
        if role is None:
            return []  # a counterparty is optional information for these kinds
        party = self.counterparty
        if party is None:
            return [(("counterparty",), "counterparty_missing", f"a {self.kind.value} needs a {role.value}", None)]
        if not party.role.can_act_as(role):
            return [
                (("counterparty", "role"), "counterparty_role",
                 f"partner {party.code!r} is a {party.role.value}; a {self.kind.value} needs a {role.value}",
                 party.role.value)
            ]  # fmt: skip
        return []

    def stock_deltas(self) -> tuple[StockDelta, ...]:
        """The signed stock changes this movement implies, one per warehouse side
        per line, in line order (transfer lines give an out then an in)."""
        out_sign, in_sign = self.kind.stock_sign
        deltas = []
        for line in self.lines:
            if out_sign and line.from_warehouse is not None:
                deltas.append(
                    StockDelta(line.sku, line.from_warehouse, line.from_bin, line.lot, -line.quantity, line.unit)
                )
            if in_sign and line.to_warehouse is not None:
                deltas.append(StockDelta(line.sku, line.to_warehouse, line.to_bin, line.lot, line.quantity, line.unit))
        return tuple(deltas)
