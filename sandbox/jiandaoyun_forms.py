"""Jiandaoyun apps, forms, widgets and records, as the simulator keeps them (``vendors/jiandaoyun.md`` §3-5).

A :class:`Form` holds widget definitions and records. Records are stored keyed by the
permanent widget ID (``_widget_<13 digits>``); they are *read* keyed by each widget's ``name``
(its alias when one is set, else the widget ID) and *written* wrapped as ``{"value": v}`` under
either the alias or the widget ID. Changing an alias therefore changes the keys of every read and
webhook, as on the real service.

Also here: rising 24-hex ObjectId-like ids, the ``YYYY-MM-DDTHH:MM:SS.mmmZ`` time format, value
coercion per widget type (datetimes as ISO text or epoch milliseconds; numbers kept as
``Decimal``), and the ``data/list`` filter language (``rel`` and/or; methods checked against the
field type; ``in``/``nin`` at most 200 values; inclusive ``range`` with ``null`` ends; subform
fields not filterable).

The reference inventory app of §12 is :func:`reference_app`: 物料, 仓库, 出入库单 (with its 明细
subform) and 库存台账, with fixed app, entry and widget ids so connector defaults can name them.
Items and the idempotency-key field carry aliases; the other widgets are read by widget ID.
"""
from __future__ import annotations

import bisect
import copy
import itertools
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any


class JdyError(Exception):
    """An API error: answered as HTTP ``status`` with ``{"code": code, "msg": msg}``."""

    def __init__(self, code: int, msg: str, status: int = 400) -> None:
        super().__init__(msg)
        self.code = code
        self.msg = msg
        self.status = status


# The simulator's error-code table (§7); the simulator may replace entries from its seed.
DEFAULT_CODES: dict[str, int] = {
    "missing_param": 1,          # invalid request / missing parameter
    "bad_param": 3005,           # bad request parameters
    "submit_failed": 4000,       # data submission failed (the tenant's stock automation refused)
    "not_found": 4001,           # data does not exist
    "unauthorized": 8302,        # bad or disabled API key
    "rate_limited": 8303,        # 超出请求频率限制
    "form_not_found": 3005,      # unverified code: app or form unknown
}

TEXT_TYPES = frozenset({"text", "textarea", "sn", "combo", "radiogroup", "phone"})
NUMBER_TYPES = frozenset({"number", "money"})
ARRAY_TYPES = frozenset({"checkboxgroup", "combocheck"})
NOT_WRITABLE = frozenset({"sn", "separator", "signature", "flowstate"})
SYSTEM_TIME_FIELDS = ("createTime", "updateTime", "deleteTime")
MAX_IN_VALUES = 200

# Methods allowed per field type (§4, apifox table); ``like`` is also allowed on free text.
_METHODS = {
    "text": {"eq", "ne", "in", "nin", "empty", "not_empty", "like"},
    "textarea": {"eq", "ne", "in", "nin", "empty", "not_empty", "like"},
    "sn": {"eq", "ne", "in", "nin", "empty", "not_empty"},
    "combo": {"eq", "ne", "in", "nin", "empty", "not_empty"},
    "radiogroup": {"eq", "ne", "in", "nin", "empty", "not_empty"},
    "phone": {"like", "verified", "unverified", "empty", "not_empty"},
    "number": {"eq", "ne", "range", "empty", "not_empty"},
    "money": {"eq", "ne", "range", "empty", "not_empty"},
    "datetime": {"eq", "ne", "range", "empty", "not_empty"},
    "flowstate": {"eq", "ne"},
}
_OTHER_METHODS = {"empty", "not_empty"}


# --- ids and times ---------------------------------------------------------------------------


class IdMaker:
    """Rising 24-hex ids: 8 hex digits of seconds (never going back), a fixed 10-digit machine
    part and a 6-digit counter, like a MongoDB ObjectId from one process."""

    def __init__(self, clock: Callable[[], float], machine: str = "c9a2790006") -> None:
        self.clock = clock
        self.machine = machine
        self._lock = threading.Lock()
        self._seconds = 0
        self._counter = itertools.count(1)

    def __call__(self) -> str:
        with self._lock:
            self._seconds = max(self._seconds, int(self.clock()))
            return f"{self._seconds:08x}{self.machine}{next(self._counter) % 0x1000000:06x}"


def iso_ms(epoch: float) -> str:
    """``2018-01-01T10:10:10.000Z`` for epoch seconds."""
    moment = datetime.fromtimestamp(round(epoch, 3), tz=UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def parse_time(value: Any, what: str) -> float:
    """Epoch seconds from an ISO text (``Z`` or offset; a zone-less text is UTC; a bare date is
    midnight UTC) or epoch milliseconds (a number)."""
    if isinstance(value, bool):
        raise JdyError(DEFAULT_CODES["bad_param"], f"{what}: not a date/time: {value!r}")
    if isinstance(value, (int, Decimal)):
        return float(value) / 1000.0
    if isinstance(value, str):
        text = value.strip()
        try:
            if len(text) == 10:
                moment = datetime.combine(date.fromisoformat(text), datetime.min.time())
            else:
                moment = datetime.fromisoformat(text)
        except ValueError:
            raise JdyError(DEFAULT_CODES["bad_param"], f"{what}: not a date/time: {value!r}") from None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        return moment.timestamp()
    raise JdyError(DEFAULT_CODES["bad_param"], f"{what}: not a date/time: {value!r}")


# --- widgets and forms -----------------------------------------------------------------------


@dataclass
class Widget:
    widget_name: str                  # permanent id, _widget_<13 digits>
    label: str
    type: str
    alias: str | None = None
    items: list[Widget] = field(default_factory=list)  # subform sub-widgets
    target: str | None = None         # linkdata: the target form's entry id
    options: list[str] = field(default_factory=list)   # combo / radiogroup choices (not enforced)

    @property
    def name(self) -> str:
        return self.alias or self.widget_name

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "widgetName": self.widget_name, "label": self.label,
                               "type": self.type}
        if self.type == "subform":
            out["items"] = [w.describe() for w in self.items]
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Widget:
        return cls(widget_name=data["widgetName"], label=data["label"], type=data["type"],
                   alias=data.get("alias"), target=data.get("target"), options=list(data.get("options", ())),
                   items=[cls.from_dict(i) for i in data.get("items", ())])


@dataclass
class Record:
    id: str
    values: dict[str, Any]            # widget id -> internal value (subform: list of row dicts with "_id")
    creator: str
    updater: str
    create_time: float
    update_time: float
    delete_time: float | None = None  # set while in the recycle bin
    deleter: str | None = None


def member(username: str) -> dict[str, Any]:
    return {"name": username, "username": username, "status": 1, "type": 0, "departments": [1],
            "integrate_id": username}


class Form:
    """One form (entry): widgets plus records in ``_id`` order (ids rise, so insertion order)."""

    def __init__(self, app_id: str, entry_id: str, name: str, widgets: Iterable[Widget], *, role: str | None = None,
                 modified: float = 0.0) -> None:
        self.app_id = app_id
        self.entry_id = entry_id
        self.name = name
        self.role = role              # "items", "warehouses", "movements", "ledger" (the simulator's own tag)
        self.widgets: list[Widget] = list(widgets)
        self.records: dict[str, Record] = {}
        self.data_modify_time = modified
        self.serial = itertools.count(1)
        self._order: list[str] = []  # record ids in ascending order, rebuilt after adds and discards
        self._version = 0
        self._order_version = 0

    # -- widgets --

    def widget(self, key: str) -> Widget | None:
        """The top-level widget named ``key`` (alias or widget id)."""
        for w in self.widgets:
            if key in (w.widget_name, w.alias):
                return w
        return None

    def by_label(self, label: str) -> Widget | None:
        return next((w for w in self.widgets if w.label == label), None)

    def set_alias(self, key: str, alias: str | None) -> None:
        w = self.widget(key)
        if w is None:
            raise ValueError(f"form {self.name}: no widget {key!r}")
        w.alias = alias

    def describe(self) -> dict[str, Any]:
        return {"widgets": [w.describe() for w in self.widgets],
                "sysWidgets": [{"name": n} for n in ("_id", "appId", "entryId", "creator", "updater", "deleter",
                                                     "createTime", "updateTime", "deleteTime")],
                "dataModifyTime": iso_ms(self.data_modify_time)}

    # -- records --

    def live(self) -> list[Record]:
        return [r for r in self.records.values() if r.delete_time is None]

    def add(self, record: Record) -> None:
        self.records[record.id] = record
        self._version += 1

    def discard(self, data_id: str) -> None:
        self.records.pop(data_id, None)
        self._version += 1

    def after(self, cursor: str) -> Iterator[Record]:
        """Live records with an ``_id`` above ``cursor``, ascending (the ``data/list`` order)."""
        if self._order_version != self._version:
            self._order = sorted(self.records)
            self._order_version = self._version
        order = self._order
        for data_id in order[bisect.bisect_right(order, cursor):]:
            record = self.records[data_id]
            if record.delete_time is None:
                yield record

    def get(self, data_id: Any) -> Record | None:
        record = self.records.get(data_id) if isinstance(data_id, str) else None
        return record if record is not None and record.delete_time is None else None

    def render(self, record: Record, fields: Iterable[str] | None = None) -> dict[str, Any]:
        """The record as ``data/get`` answers it: plain values keyed by name, plus system fields."""
        wanted = None if fields is None else set(fields)
        out: dict[str, Any] = {}
        for w in self.widgets:
            if wanted is not None and w.name not in wanted and w.widget_name not in wanted:
                continue
            value = record.values.get(w.widget_name)
            if w.type == "subform":
                rows = []
                for row in value or []:
                    plain: dict[str, Any] = {"_id": row["_id"]}
                    for sub in w.items:
                        plain[sub.name] = _read_value(sub, row.get(sub.widget_name))
                    rows.append(plain)
                out[w.name] = rows
            else:
                out[w.name] = _read_value(w, value)
        out["_id"] = record.id
        system = {"appId": self.app_id, "entryId": self.entry_id, "creator": member(record.creator),
                  "updater": member(record.updater), "createTime": iso_ms(record.create_time),
                  "updateTime": iso_ms(record.update_time)}
        if record.delete_time is not None:  # only on records in the recycle bin (data_remove pushes)
            system.update({"deleter": member(record.deleter or record.updater), "deleteTime": iso_ms(record.delete_time)})
        out.update(system if wanted is None else {k: v for k, v in system.items() if k in wanted})
        return out

    def coerce(self, data: Any, *, known_rows: Mapping[str, dict[str, Any]] | None = None,
               new_id: Callable[[], str], linked: Callable[[str, str], bool]) -> dict[str, Any]:
        """Internal values from a write's ``data`` (``{name: {"value": v}}``). Unknown keys, system
        and non-writable fields are ignored; no required or unique check (vendor behaviour)."""
        if not isinstance(data, Mapping):
            raise JdyError(DEFAULT_CODES["bad_param"], "data must be an object of {field: {value}}")
        out: dict[str, Any] = {}
        for key, wrapped in data.items():
            w = self.widget(key)
            if w is None or w.type in NOT_WRITABLE:
                continue
            value = _unwrap(wrapped, key)
            if w.type == "subform":
                out[w.widget_name] = self._rows(w, value, known_rows or {}, new_id, linked)
            else:
                out[w.widget_name] = _write_value(w, value, key, linked)
        return out

    def _rows(self, w: Widget, value: Any, known: Mapping[str, dict[str, Any]], new_id: Callable[[], str],
              linked: Callable[[str, str], bool]) -> list[dict[str, Any]] | None:
        if value is None:
            return None
        if not isinstance(value, list):
            raise JdyError(DEFAULT_CODES["bad_param"], f"{w.name}: a subform value is a list of rows")
        rows = []
        for index, row in enumerate(value):
            if not isinstance(row, Mapping):
                raise JdyError(DEFAULT_CODES["bad_param"], f"{w.name}[{index}]: a row is an object")
            row_id = _unwrap(row["_id"], "_id") if "_id" in row else None
            kept = isinstance(row_id, str) and row_id in known
            plain: dict[str, Any] = {"_id": row_id if kept else new_id()}
            for key, wrapped in row.items():
                if key == "_id":
                    continue
                sub = next((s for s in w.items if key in (s.widget_name, s.alias)), None)
                if sub is None or sub.type in NOT_WRITABLE:
                    continue
                plain[sub.widget_name] = _write_value(sub, _unwrap(wrapped, f"{w.name}.{key}"),
                                                      f"{w.name}[{index}].{key}", linked)
            rows.append(plain)
        return rows

    def next_serial(self, prefix: str = "CRK") -> str:
        return f"{prefix}{next(self.serial):06d}"


def _unwrap(wrapped: Any, key: str) -> Any:
    if isinstance(wrapped, Mapping) and "value" in wrapped:
        return wrapped["value"]
    if wrapped is None:
        return None
    raise JdyError(DEFAULT_CODES["bad_param"], f"{key}: a written value is wrapped as {{\"value\": ...}}")


def _write_value(w: Widget, value: Any, key: str, linked: Callable[[str, str], bool]) -> Any:
    if value is None or (value == "" and w.type not in TEXT_TYPES):
        return None
    kind = w.type
    if kind in NUMBER_TYPES:
        if isinstance(value, bool):
            raise JdyError(DEFAULT_CODES["bad_param"], f"{key}: not a number: {value!r}")
        try:
            number = Decimal(str(value)) if isinstance(value, (int, Decimal, str)) else None
        except InvalidOperation:
            number = None
        if number is None or not number.is_finite():
            raise JdyError(DEFAULT_CODES["bad_param"], f"{key}: not a number: {value!r}")
        return number
    if kind == "datetime":
        return parse_time(value, key)
    if kind in ARRAY_TYPES:
        if not isinstance(value, list):
            raise JdyError(DEFAULT_CODES["bad_param"], f"{key}: must be a list")
        return [str(v) for v in value]
    if kind == "linkdata":
        if not isinstance(value, str) or not w.target or not linked(w.target, value):
            raise JdyError(DEFAULT_CODES["bad_param"], f"{key}: linked record {value!r} does not exist")
        return value
    if kind in ("address", "location", "user", "dept", "image", "upload", "usergroup", "deptgroup"):
        return copy.deepcopy(value)
    if isinstance(value, (dict, list)):
        raise JdyError(DEFAULT_CODES["bad_param"], f"{key}: expected text, got {type(value).__name__}")
    return value if isinstance(value, str) else str(value)


def _read_value(w: Widget, value: Any) -> Any:
    if value is None:
        return [] if w.type in ARRAY_TYPES else ("" if w.type in TEXT_TYPES else None)
    if w.type == "datetime":
        return iso_ms(value)
    return copy.deepcopy(value) if isinstance(value, (dict, list)) else value


# --- filters ---------------------------------------------------------------------------------


_SYSTEM_FILTER_TYPES = {"createTime": "datetime", "updateTime": "datetime", "flowState": "flowstate"}


def compile_filter(form: Form, spec: Any) -> Callable[[Record], bool]:
    """A predicate for a ``data/list`` filter; a bad filter raises :class:`JdyError` (3005)."""
    bad = DEFAULT_CODES["bad_param"]
    if spec is None or spec == "" or spec == {}:
        return lambda record: True
    if isinstance(spec, str):  # the dify plugin sends "{}" as a string
        import json
        try:
            spec = json.loads(spec, parse_float=Decimal)
        except ValueError:
            raise JdyError(bad, "filter is not valid JSON") from None
        if spec == {}:
            return lambda record: True
    if not isinstance(spec, Mapping):
        raise JdyError(bad, "filter must be an object {rel, cond}")
    rel = spec.get("rel", "and")
    if rel not in ("and", "or"):
        raise JdyError(bad, f"filter.rel must be and/or, got {rel!r}")
    conds = spec.get("cond") or []
    if not isinstance(conds, list):
        raise JdyError(bad, "filter.cond must be a list")
    tests = [_condition(form, c, index) for index, c in enumerate(conds)]
    if not tests:
        return lambda record: True
    if rel == "and":
        return lambda record: all(t(record) for t in tests)
    return lambda record: any(t(record) for t in tests)


def _condition(form: Form, cond: Any, index: int) -> Callable[[Record], bool]:
    bad = DEFAULT_CODES["bad_param"]
    where = f"filter.cond[{index}]"
    if not isinstance(cond, Mapping) or not isinstance(cond.get("field"), str) or not isinstance(cond.get("method"), str):
        raise JdyError(bad, f"{where}: needs field and method")
    name, method = cond["field"], cond["method"]
    values = cond.get("value")
    if values is None:
        values = []
    if not isinstance(values, list):
        raise JdyError(bad, f"{where}.value must be an array")
    if name in _SYSTEM_FILTER_TYPES:
        kind = _SYSTEM_FILTER_TYPES[name]

        def get(record: Record) -> Any:
            return {"createTime": record.create_time, "updateTime": record.update_time}.get(name)
    else:
        w = form.widget(name)
        if w is None:
            if any(name in (s.widget_name, s.alias) for top in form.widgets for s in top.items):
                raise JdyError(bad, f"{where}: subform field {name!r} cannot be filtered")
            raise JdyError(bad, f"{where}: unknown field {name!r}")
        if w.type == "subform":
            raise JdyError(bad, f"{where}: subform field {name!r} cannot be filtered")
        kind = w.type
        wid = w.widget_name

        def get(record: Record) -> Any:
            return record.values.get(wid)
    declared = cond.get("type")
    if declared is not None and declared != kind and not (declared in ("text", "combo", "radiogroup")
                                                          and kind in TEXT_TYPES):
        raise JdyError(bad, f"{where}: field {name!r} is a {kind}, not a {declared}")
    allowed = _METHODS.get(kind, _OTHER_METHODS)
    if method not in allowed:
        raise JdyError(bad, f"{where}: method {method!r} is not allowed on a {kind} field "
                            f"(allowed: {', '.join(sorted(allowed))})")
    if method in ("in", "nin") and len(values) > MAX_IN_VALUES:
        raise JdyError(bad, f"{where}: {method} takes at most {MAX_IN_VALUES} values, got {len(values)}")
    convert = _converter(kind, where)
    if method == "empty":
        return lambda r: get(r) in (None, "", [])
    if method == "not_empty":
        return lambda r: get(r) not in (None, "", [])
    if method == "range":
        if len(values) != 2:
            raise JdyError(bad, f"{where}: range takes [low, high] (null for an open end)")
        low = None if values[0] in (None, "") else convert(values[0])
        high = None if values[1] in (None, "") else convert(values[1])

        def in_range(r: Record) -> bool:
            v = get(r)
            return v is not None and (low is None or v >= low) and (high is None or v <= high)
        return in_range
    if method == "like":
        needle = str(values[0]) if values else ""
        return lambda r: isinstance(get(r), str) and needle in get(r)
    if method in ("verified", "unverified"):
        return lambda r: method == "unverified"
    wanted = [convert(v) for v in values]
    if method in ("eq", "ne") and len(wanted) != 1:
        raise JdyError(bad, f"{where}: {method} takes one value")
    if method in ("eq", "in"):
        return lambda r: get(r) in wanted
    return lambda r: get(r) not in wanted


def _converter(kind: str, where: str) -> Callable[[Any], Any]:
    if kind == "datetime":
        return lambda v: parse_time(v, where)
    if kind in NUMBER_TYPES or kind == "flowstate":
        def number(v: Any) -> Decimal:
            try:
                return Decimal(str(v))
            except InvalidOperation:
                raise JdyError(DEFAULT_CODES["bad_param"], f"{where}: not a number: {v!r}") from None
        return number
    return lambda v: v if isinstance(v, str) else str(v)


# --- the reference inventory app (§12) -------------------------------------------------------

APP_ID = "5e0dca0cc9a2790006c11e02"
APP_NAME = "进销存"
ITEMS_ENTRY = "56fcab0f02c4675e3fe9694a"
WAREHOUSES_ENTRY = "56fcab0f02c4675e3fe9694b"
MOVEMENTS_ENTRY = "56fcab0f02c4675e3fe9694c"
LEDGER_ENTRY = "56fcab0f02c4675e3fe9694d"

# 业务类型 → how the tenant's stock automation posts it
DIRECTIONS: dict[str, str] = {
    "采购入库": "in", "完工入库": "in", "盘盈": "in", "销售退货": "in", "其他入库": "in", "期初": "in",
    "销售出库": "out", "生产领料": "out", "盘亏": "out", "采购退货": "out", "其他出库": "out", "报损": "out",
    "调拨": "transfer",
}


def _w(n: int, label: str, type: str, alias: str | None = None, **more: Any) -> dict[str, Any]:
    return {"widgetName": f"_widget_1669106585{n:03d}", "label": label, "type": type,
            **({"alias": alias} if alias else {}), **more}


def reference_app() -> dict[str, Any]:
    """The §12 reference app as a JSON app definition (``seed({"app": ...})`` takes the same shape)."""
    return {
        "app_id": APP_ID, "name": APP_NAME,
        "forms": [
            {"entry_id": ITEMS_ENTRY, "name": "物料", "role": "items", "widgets": [
                _w(301, "物料编码", "text", "item_code"), _w(302, "名称", "text", "item_name"),
                _w(303, "规格型号", "text", "spec"),
                _w(304, "单位", "combo", "unit", options=["PCS", "PAIR", "KG", "L", "PACK", "CTN"]),
                _w(305, "类别", "combo", "category"), _w(306, "条形码", "text", "barcode"),
                _w(307, "批次管理", "radiogroup", "batch_managed", options=["是", "否"]),
                _w(308, "安全库存", "number", "safety_stock"),
                _w(309, "状态", "radiogroup", "status", options=["启用", "停用"])]},
            {"entry_id": WAREHOUSES_ENTRY, "name": "仓库", "role": "warehouses", "widgets": [
                _w(401, "仓库编码", "text"), _w(402, "仓库名称", "text"), _w(403, "地址", "address"),
                _w(404, "库位管理", "radiogroup", options=["是", "否"]),
                _w(405, "状态", "radiogroup", options=["启用", "停用"])]},
            {"entry_id": MOVEMENTS_ENTRY, "name": "出入库单", "role": "movements", "widgets": [
                _w(501, "单号", "sn"), _w(502, "业务类型", "combo", options=list(DIRECTIONS)),
                _w(503, "业务日期", "datetime"), _w(504, "仓库", "linkdata", target=WAREHOUSES_ENTRY),
                _w(505, "仓库编码", "text"), _w(506, "调出仓库编码", "text"), _w(507, "调入仓库编码", "text"),
                _w(508, "往来单位编码", "text"), _w(509, "往来单位名称", "text"), _w(510, "参考号", "text"),
                _w(511, "外部单号", "text", "hub_key"), _w(512, "备注", "textarea"),
                _w(520, "明细", "subform", items=[
                    _w(521, "物料", "linkdata", target=ITEMS_ENTRY), _w(522, "物料编码", "text"),
                    _w(523, "数量", "number"), _w(524, "单位", "text"), _w(525, "单价", "number"),
                    _w(526, "批次号", "text"), _w(527, "调出库位", "text"), _w(528, "调入库位", "text"),
                    _w(529, "行备注", "text")])]},
            {"entry_id": LEDGER_ENTRY, "name": "库存台账", "role": "ledger", "widgets": [
                _w(601, "物料编码", "text"), _w(602, "仓库编码", "text"), _w(603, "库位", "text"),
                _w(604, "批次号", "text"), _w(605, "现存量", "number"), _w(606, "最近变动时间", "datetime"),
                _w(607, "单位", "text")]},
        ],
    }
