"""Columns of a movement file and how one cell becomes a value (used by :mod:`sync.intake`).

Header names are matched after folding case, spaces, ``-`` and ``_`` (``Document Date``,
``document_date`` and ``DOCUMENT-DATE`` are one column), and a few Chinese names from common
Kingdee/U8 exports are accepted as aliases (单号, 类型, 日期, 物料编码, 数量, 单位, 仓库, ...).

Cells arrive as text (CSV) or as typed values (Excel: int, float, datetime). Converters here
return the cleaned value or raise :class:`CellError` with the message an operator reads; they
never guess: an ambiguous date such as ``05/01/2024`` is refused, not read one way or the other.
"""
from __future__ import annotations

import math
import re
from collections.abc import Mapping
from datetime import date, datetime, time
from decimal import Decimal

from canonical import MovementKind, PartnerRole

__all__ = [
    "ALIASES",
    "COLUMNS",
    "HEADER_FIELDS",
    "LINE_FIELDS",
    "REQUIRED",
    "CellError",
    "column_for",
    "to_date",
    "to_datetime",
    "to_kind",
    "to_number_text",
    "to_role",
    "to_text",
]


class CellError(ValueError):
    """A cell that cannot become the value its column needs; ``str()`` is the message."""


# Fields shared by every row of one movement (they must agree across its rows).
HEADER_FIELDS = ("reference", "kind", "document_date", "posted_at", "counterparty_code", "counterparty_name",
                 "counterparty_role", "memo")
# Fields of one movement line.
LINE_FIELDS = ("sku", "quantity", "unit", "from_warehouse", "from_bin", "to_warehouse", "to_bin", "lot",
               "unit_cost")
# ``warehouse``/``bin``: one column for files whose kinds all use one side (receipts or issues);
# the value goes to the side the row's kind moves stock on. A transfer needs the from/to columns.
SIDELESS = ("warehouse", "bin")
COLUMNS = HEADER_FIELDS + LINE_FIELDS + SIDELESS
REQUIRED = ("reference", "kind", "document_date", "sku", "quantity", "unit")

ALIASES: Mapping[str, tuple[str, ...]] = {
    "reference": ("ref", "document_no", "document_number", "bill_no", "单号", "单据号", "单据编号"),
    "kind": ("type", "movement_kind", "类型", "单据类型", "业务类型"),
    "document_date": ("date", "日期", "单据日期", "业务日期"),
    "posted_at": ("posted", "posting_time", "过账时间", "记账时间"),
    "counterparty_code": ("partner_code", "往来单位编码", "往来单位代码"),
    "counterparty_name": ("partner_name", "往来单位", "往来单位名称"),
    "counterparty_role": ("partner_role", "往来单位类型", "往来单位角色"),
    "memo": ("note", "remark", "remarks", "备注", "摘要"),
    "sku": ("item", "item_code", "material", "material_code", "物料编码", "物料代码", "商品编码", "存货编码"),
    "quantity": ("qty", "数量"),
    "unit": ("uom", "单位", "计量单位"),
    "from_warehouse": ("调出仓库", "发货仓库"),
    "from_bin": ("调出库位", "调出仓位", "发货库位"),
    "to_warehouse": ("调入仓库", "收货仓库"),
    "to_bin": ("调入库位", "调入仓位", "收货库位"),
    "lot": ("batch", "lot_no", "batch_no", "批号", "批次"),
    "unit_cost": ("cost", "成本单价", "单位成本"),
    "warehouse": ("仓库",),
    "bin": ("库位", "仓位"),
}

_FOLD = re.compile(r"[\s_\-]+")


def _fold(name: str) -> str:
    return _FOLD.sub("", name.strip().casefold())


_BY_FOLDED: dict[str, str] = {}
for _column in COLUMNS:
    for _name in (_column, *ALIASES.get(_column, ())):
        _BY_FOLDED[_fold(_name)] = _column


def column_for(header: str) -> str | None:
    """The canonical column a header names (``"数量"`` → ``"quantity"``), or None."""
    return _BY_FOLDED.get(_fold(header))


# ------------------------------------------------------------------------------ kinds, roles

_KIND_ALIASES: dict[str, MovementKind] = {
    "采购入库": MovementKind.purchase_receipt,
    "销售出库": MovementKind.sales_issue,
    "调拨": MovementKind.transfer,
    "直接调拨": MovementKind.transfer,
    "盘盈": MovementKind.count_gain,
    "盘亏": MovementKind.count_loss,
    "销售退货": MovementKind.sales_return,
    "采购退货": MovementKind.purchase_return,
    "采购退料": MovementKind.purchase_return,
    "其他入库": MovementKind.misc_receipt,
    "其他出库": MovementKind.misc_issue,
    "报损": MovementKind.scrap,
    "报废": MovementKind.scrap,
}
_KINDS = {_fold(kind.value): kind for kind in MovementKind} | {_fold(k): v for k, v in _KIND_ALIASES.items()}
_ROLES = {_fold(role.value): role for role in PartnerRole} | {
    "供应商": PartnerRole.supplier, "客户": PartnerRole.customer, "客户及供应商": PartnerRole.both,
}  # fmt: skip


def to_kind(value: object) -> MovementKind:
    text = to_text(value)
    kind = _KINDS.get(_fold(text)) if text else None
    if kind is None:
        known = ", ".join(k.value for k in MovementKind)
        raise CellError(f"unknown kind {text!r} (expected one of {known}, or 采购入库, 销售出库, 调拨, ...)")
    return kind


def to_role(value: object) -> PartnerRole:
    text = to_text(value)
    role = _ROLES.get(_fold(text)) if text else None
    if role is None:
        raise CellError(f"unknown role {text!r} (expected supplier, customer or both)")
    return role


# ------------------------------------------------------------------------------ text, numbers


def to_text(value: object) -> str | None:
    """A code or free-text cell: stripped text, None when blank.

    Excel keeps a code such as ``1001`` as a number; it comes back as ``"1001"``, not ``"1001.0"``.
    """
    if value is None:
        return None
    if isinstance(value, bool):
        raise CellError(f"is a boolean ({value}), not text")
    if isinstance(value, float):
        if value.is_integer():
            return str(int(value))
        return repr(value)
    if isinstance(value, datetime | date | time):
        raise CellError(f"is a date or time ({value.isoformat()}), not text; format the cell as text")
    text = str(value).strip()
    return text or None


# Excel stores doubles and shows at most 15 significant digits. A float whose shortest repr needs
# more is a binary artefact of a formula (=0.1+0.2 gives 0.30000000000000004); rounding it here
# would hide a difference, so the cell is refused and the operator rounds it in the sheet.
_EXCEL_DIGITS = 15


def to_number_text(value: object) -> str | None:
    """A quantity or cost cell as the exact text canonical validation parses into a Decimal.

    Text is passed through (canonical validation reports non-numbers); an Excel int becomes its
    digits; an Excel float its shortest repr when that has at most 15 significant digits.
    """
    if value is None:
        return None
    if isinstance(value, bool):
        raise CellError(f"must be a number, not a boolean ({value})")
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise CellError(f"must be a finite number (got {value!r})")
        text = repr(value)
        digits = Decimal(text).as_tuple().digits
        significant = len(bytes(digits).lstrip(b"\0").rstrip(b"\0")) if any(digits) else 0
        if significant > _EXCEL_DIGITS:
            raise CellError(f"is {text} in the sheet, a floating-point artefact (more than {_EXCEL_DIGITS} "
                            "significant digits); round it in the sheet, e.g. =ROUND(...,3), or type the value")
        return text
    if isinstance(value, datetime | date | time):
        raise CellError(f"must be a number, not a date ({value.isoformat()})")
    text = str(value).strip()
    return text or None


# ------------------------------------------------------------------------------ dates, times

_DATE_FORMS = (
    re.compile(r"^(\d{4})-(\d{1,2})-(\d{1,2})$"),
    re.compile(r"^(\d{4})/(\d{1,2})/(\d{1,2})$"),
    re.compile(r"^(\d{4})\.(\d{1,2})\.(\d{1,2})$"),
    re.compile(r"^(\d{4})年(\d{1,2})月(\d{1,2})日$"),
    re.compile(r"^(\d{4})(\d{2})(\d{2})$"),
)
_DATE_HINT = "write it as 2024-05-01 (also 2024/5/1, 2024.5.1, 2024年5月1日 or 20240501)"


def _date_from_text(text: str) -> date | None:
    for form in _DATE_FORMS:
        if match := form.match(text):
            year, month, day = (int(g) for g in match.groups())
            try:
                return date(year, month, day)
            except ValueError as exc:
                raise CellError(f"{text!r} is not a date ({exc})") from None
    return None


def to_date(value: object) -> date | None:
    """A document date: an Excel date cell or year-first text; day-first or month-first refused."""
    if value is None:
        return None
    if isinstance(value, datetime):
        if value.time() != time(0):
            raise CellError(f"{value.isoformat(sep=' ')} has a time of day; a document date is a day only "
                            "(put the time in posted_at)")
        return value.date()
    if isinstance(value, date):
        return value
    if isinstance(value, bool | int | float):
        raise CellError(f"is a number ({value!r}), not a date; format the cell as a date or {_DATE_HINT}")
    text = str(value).strip()
    if not text:
        return None
    found = _date_from_text(text)
    if found is None:
        raise CellError(f"{text!r} is not a date; {_DATE_HINT}")
    return found


_TIME_PART = re.compile(r"^(\d{1,2}):(\d{2})(?::(\d{2})(\.\d{1,6})?)?$")
_OFFSET = re.compile(r"(Z|[+-]\d{2}:?\d{2})$", re.IGNORECASE)


def to_datetime(value: object) -> datetime | None:
    """A posting time: an Excel date-time cell (always naive) or text.

    Text is ISO 8601 (``2024-05-01T10:30:00+08:00``, ``...Z``) or a date as :func:`to_date`
    reads it, a space and ``HH:MM[:SS]``, with an optional UTC offset. The result is naive when
    the input had no offset; the caller decides which zone that means.
    """
    if value is None:
        return None
    if isinstance(value, datetime):
        return value
    if isinstance(value, date):
        return datetime.combine(value, time(0))
    if isinstance(value, bool | int | float):
        raise CellError(f"is a number ({value!r}), not a date and time; format the cell as a date-time")
    text = str(value).strip()
    if not text:
        return None
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        pass
    offset = _OFFSET.search(text)
    body = text[: offset.start()].strip() if offset else text
    day_text, _, time_text = body.partition(" ")
    day = _date_from_text(day_text.strip()) if day_text else None
    clock = _TIME_PART.match(time_text.strip()) if time_text else None
    if day is None or (time_text and clock is None):
        raise CellError(f"{text!r} is not a date and time; write it as 2024-05-01 10:30 or "
                        "2024-05-01T10:30:00+08:00")
    hour, minute, second = (int(clock.group(i) or 0) for i in (1, 2, 3)) if clock else (0, 0, 0)
    fraction = clock.group(4) if clock else None
    try:
        stamp = datetime.combine(day, time(hour, minute, second, int((fraction or ".0")[1:].ljust(6, "0"))))
    except ValueError as exc:
        raise CellError(f"{text!r} is not a date and time ({exc})") from None
    if offset:
        iso = stamp.isoformat() + ("+00:00" if offset.group(1).upper() == "Z" else offset.group(1))
        try:
            return datetime.fromisoformat(iso)
        except ValueError:
            raise CellError(f"{text!r} has a bad UTC offset {offset.group(1)!r}") from None
    return stamp
