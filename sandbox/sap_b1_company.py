"""One SAP Business One company: master data, documents, numbering and stock posting rules.

No HTTP here. The Service Layer front end (:mod:`sandbox.sap_b1`) and a DI Server front end
(``sandbox/sap_b1_di.py``, later) both call this class, so they serve the same state and post to the
same harness :class:`~sandbox.ledger.Ledger`. Its vocabulary is the DI/SL object model: entity sets
from :mod:`sandbox.sap_b1_entities`, records as dicts of SL property names with internal value
types (``Decimal`` quantities, ``date`` dates, ``"HH:MM:SS"`` times); each front end renders them.

Every write runs inside :meth:`Company.unit_of_work`: all or nothing. Stock is checked against the
ledger plus the postings pending in the unit (so a changeset may receive then issue), and the
ledger is only posted when the unit commits. A failure anywhere undoes every change of the unit
(records, counters, numbering) and posts nothing: that is how a ``$batch`` changeset rolls back.

Business failures raise :class:`B1Error` with the vendor's code, message and HTTP status.
"""
from __future__ import annotations

import copy
import hashlib
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any
from zoneinfo import ZoneInfo

from sandbox.ledger import Entry, Ledger, LedgerError, StockKey
from sandbox.sap_b1_entities import (
    DATE_FIELDS,
    ENTITY_SETS,
    ENUM_ALIASES,
    INTRASTAT_TEMPLATE,
    ITEM_PRICE_TEMPLATE,
    ITEM_WAREHOUSE_TEMPLATE,
    EntitySet,
)
from sandbox.sap_b1_odata import QueryError, parse_date_text
from sandbox.world import World

NOT_FOUND = "No matching records found (ODBC -2028)"
NEGATIVE = "Quantity falls into negative inventory"
ALREADY_EXISTS = "This entry already exists in the following tables (ODBC -2035)"
NOT_SUPPORTED_ACTION = "The requested action is not supported for this object."
COMMIT_FAILED = "Could not commit transaction: Error -1 detected during transaction"
_MISSING = object()


class B1Error(Exception):
    """A refusal as the vendor words it: ``code`` (-10, -2028...), ``message``, HTTP ``status``."""

    def __init__(self, code: int, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status


def _where(table: str | None, column: str, line: int | None = None) -> str:
    """The ``  [IGE1.ItemCode][line: 1]`` suffix (two spaces, 1-based line)."""
    text = f"  [{table}.{column}]" if table else f"  [{column}]"
    return text + (f"[line: {line}]" if line is not None else "")


@dataclass
class CompanyConfig:
    """Company settings (seed key ``company``).

    ``reference_fields``: document properties :meth:`Company.documents_for` matches (the connector's
    idempotency key: ``Reference2`` by default, or a declared ``U_`` field).
    ``user_fields``: declared UDFs by group: an entity set name (``Items``), ``Documents`` (every
    document header) or ``DocumentLines`` (every line); undeclared ``U_*`` properties are refused.
    ``require_batches``: batch-managed items need ``BatchNumbers`` on stock documents.
    ``warehouse_stamps``: give Warehouses CreateDate/UpdateDate (the vendor doc does not list them).
    ``missing_reference_status``: HTTP status when a body names an unknown item/warehouse (400 or 404).
    ``max_lengths``: longest text a master property holds, by entity set; a longer value is refused
    with "CServiceData::SetPropertyValueString failed; Value too long in property 'X' of 'Item'"
    (the wording public integrations record; its code is not recorded: -5002 here [I]). The
    defaults are the column sizes of OITM/OWHS as we know them (ItemCode 50, ItemName 200,
    WhsCode 8, WhsName 100) [I]; set a group to {} to lift them.
    """

    reference_fields: tuple[str, ...] = ("Reference2",)
    user_fields: dict[str, frozenset[str]] = field(default_factory=dict)
    timezone: str = "UTC"
    docnum_start: int = 1
    require_batches: bool = True
    warehouse_stamps: bool = False
    missing_reference_status: int = 400
    max_lengths: dict[str, dict[str, int]] = field(default_factory=lambda: {
        "Items": {"ItemCode": 50, "ItemName": 200}, "Warehouses": {"WarehouseCode": 8, "WarehouseName": 100}})

    _KNOWN = ("reference_fields", "user_fields", "timezone", "docnum_start", "require_batches",
              "warehouse_stamps", "missing_reference_status", "max_lengths")

    def updated(self, data: Mapping[str, Any]) -> CompanyConfig:
        unknown = sorted(set(data) - set(self._KNOWN))
        if unknown:
            raise ValueError(f"company.{unknown[0]}: unknown setting (known: {', '.join(self._KNOWN)})")
        changes: dict[str, Any] = {}
        for name, value in data.items():
            if name == "reference_fields":
                if isinstance(value, str) or not all(isinstance(v, str) and v for v in value):
                    raise ValueError("company.reference_fields: must be a list of property names")
                changes[name] = tuple(value)
            elif name == "user_fields":
                if not isinstance(value, Mapping):
                    raise ValueError("company.user_fields: must map a group to a list of U_ names")
                groups = dict(self.user_fields)
                for group, names in value.items():
                    bad = [n for n in names if not (isinstance(n, str) and n.startswith("U_"))]
                    if bad:
                        raise ValueError(f"company.user_fields.{group}: {bad[0]!r} does not start with U_")
                    groups[group] = frozenset(names)
                changes[name] = groups
            elif name == "max_lengths":
                if not isinstance(value, Mapping) or not all(
                        isinstance(limits, Mapping) and all(isinstance(n, int) and not isinstance(n, bool) and n > 0
                                                            for n in limits.values()) for limits in value.values()):
                    raise ValueError("company.max_lengths: must map an entity set to {property: positive length}")
                changes[name] = {**self.max_lengths, **{g: dict(limits) for g, limits in value.items()}}
            elif name == "timezone":
                ZoneInfo(value)
                changes[name] = value
            elif name in ("docnum_start", "missing_reference_status"):
                if isinstance(value, bool) or not isinstance(value, int):
                    raise ValueError(f"company.{name}: must be an integer")
                changes[name] = value
            else:
                if not isinstance(value, bool):
                    raise ValueError(f"company.{name}: must be true or false")
                changes[name] = value
        return replace(self, **changes)


@dataclass
class Meta:
    """What the database keeps beside a record: stamps (epoch seconds), DataVersion, order."""

    created: float
    updated: float
    version: int
    seq: int


@dataclass
class Series:
    series: int
    name: str
    next_number: int


class _UnitOfWork:
    def __init__(self) -> None:
        self.undo: list[Callable[[], None]] = []
        self.postings: list[tuple[str, str, tuple[Entry, ...]]] = []   # (kind, ref, entries)
        self.pending: dict[StockKey, Decimal] = {}


class Company:
    """The state of one company database, shared by every front end."""

    def __init__(self, ledger: Ledger, *, clock: Callable[[], float] = time.time,
                 lock: threading.RLock | None = None, config: CompanyConfig | None = None) -> None:
        self.ledger = ledger
        self.clock = clock
        self.lock = lock or threading.RLock()
        self.config = config or CompanyConfig()
        self._uow: _UnitOfWork | None = None
        self.reset()

    # --- life cycle -----------------------------------------------------------------------

    def reset(self) -> None:
        with self.lock:
            self.records: dict[str, dict[Any, dict[str, Any]]] = {name: {} for name in ENTITY_SETS}
            self.meta: dict[tuple[str, Any], Meta] = {}
            self.item_warehouse: dict[tuple[str, str], dict[str, Any]] = {}  # per item × warehouse overrides
            self.counters: dict[str, int] = {name: 0 for name in ENTITY_SETS}
            self.series: dict[str, dict[int, Series]] = {}
            self.default_series: dict[str, int] = {}
            self.postings: dict[str, tuple[Entry, ...]] = {}   # ledger ref → entries (for cancel)
            self.seq = 0
            self.stock_generation = 0
            self._onhand: tuple[int, dict[tuple[str, str], Decimal]] = (-1, {})
            for index, es in enumerate(e for e in ENTITY_SETS.values() if e.kind == "document"):
                number = 10 + index
                self.series[es.name] = {number: Series(number, "Primary", self.config.docnum_start)}
                self.default_series[es.name] = number

    def configure(self, data: Mapping[str, Any]) -> None:
        with self.lock:
            self.config = self.config.updated(data)
            if "docnum_start" in data:
                for name, series in self.series.items():
                    default = series[self.default_series[name]]
                    if not self.records[name]:
                        default.next_number = self.config.docnum_start

    def set_series(self, entity_set: str, rows: Iterable[Mapping[str, Any]]) -> None:
        """Numbering series of a document entity set (seed key ``series``)."""
        es = self.entity_set(entity_set)
        if es.kind != "document":
            raise ValueError(f"series.{entity_set}: only documents have numbering series")
        table: dict[int, Series] = {}
        default = None
        for index, row in enumerate(rows):
            try:
                number, next_number = int(row["Series"]), int(row.get("NextNumber", 1))
            except (KeyError, TypeError, ValueError):
                raise ValueError(f"series.{entity_set}[{index}]: needs Series and NextNumber integers") from None
            table[number] = Series(number, str(row.get("Name", f"Series {number}")), next_number)
            if default is None or row.get("Default"):   # the first series unless one says Default
                default = number
        if not table:
            raise ValueError(f"series.{entity_set}: give at least one series")
        with self.lock:
            self.series[es.name] = table
            self.default_series[es.name] = default if default is not None else next(iter(table))

    def entity_set(self, name: str) -> EntitySet:
        try:
            return ENTITY_SETS[name]
        except KeyError:
            raise B1Error(-1000, f"Resource not found for the segment '{name}'", 404) from None

    # --- units of work --------------------------------------------------------------------

    @contextmanager
    def unit_of_work(self) -> Iterator[None]:
        """All changes inside happen together or not at all; nested units join the outer one."""
        with self.lock:
            if self._uow is not None:
                yield
                return
            uow = self._uow = _UnitOfWork()
            try:
                yield
                self._post(uow)
            except BaseException:
                self._uow = None
                for undo in reversed(uow.undo):
                    undo()
                raise
            self._uow = None

    def _post(self, uow: _UnitOfWork) -> None:
        done: list[tuple[str, str, tuple[Entry, ...]]] = []
        try:
            for kind, ref, entries in uow.postings:
                if kind == "post":
                    self.ledger.post(ref, entries)
                else:
                    self.ledger.reverse(ref)
                done.append((kind, ref, entries))
        except LedgerError:
            for kind, ref, entries in reversed(done):  # stock moved under us: put it back
                if kind == "post":
                    self.ledger.reverse(ref, allow_negative=True)
                else:
                    self.ledger.post(ref, entries, allow_negative=True)
            raise B1Error(-1116, COMMIT_FAILED) from None
        finally:
            if done:
                self.stock_generation += 1

    def _assign(self, mapping: dict[Any, Any], key: Any, value: Any) -> None:
        old = mapping.get(key, _MISSING)
        mapping[key] = value
        if self._uow is not None:
            def undo() -> None:
                if old is _MISSING:
                    mapping.pop(key, None)
                else:
                    mapping[key] = old
            self._uow.undo.append(undo)

    def _delete(self, mapping: dict[Any, Any], key: Any) -> None:
        old = mapping.pop(key, _MISSING)
        if self._uow is not None and old is not _MISSING:
            self._uow.undo.append(lambda: mapping.__setitem__(key, old))

    def _set_attr(self, obj: Any, name: str, value: Any) -> None:
        old = getattr(obj, name)
        setattr(obj, name, value)
        if self._uow is not None:
            self._uow.undo.append(lambda: setattr(obj, name, old))

    def _require_uow(self) -> _UnitOfWork:
        if self._uow is None:
            raise RuntimeError("company writes run inside Company.unit_of_work()")
        return self._uow

    # --- time -----------------------------------------------------------------------------

    def local(self, at: float) -> datetime:
        return datetime.fromtimestamp(at, ZoneInfo(self.config.timezone))

    def today(self) -> date:
        return self.local(self.clock()).date()

    # --- reads ----------------------------------------------------------------------------

    def keys(self, entity_set: str) -> list[Any]:
        """Keys in creation order (which is key order for numbered entities)."""
        with self.lock:
            return list(self.records[entity_set])

    def exists(self, entity_set: str, key: Any) -> bool:
        with self.lock:
            return key in self.records[entity_set]

    def record(self, entity_set: str, key: Any) -> dict[str, Any]:
        with self.lock:
            try:
                return self.records[entity_set][key]
            except KeyError:
                raise B1Error(-2028, NOT_FOUND, 404) from None

    def version(self, entity_set: str, key: Any) -> int:
        with self.lock:
            return self.meta[(entity_set, key)].version

    def etag(self, entity_set: str, key: Any) -> str:
        """Weak ETag: SHA-1 of the DataVersion as decimal text, upper-case hex (doc §2.6)."""
        return etag_for(self.version(entity_set, key))

    def stamps(self, es: EntitySet, key: Any) -> dict[str, Any]:
        meta = self.meta[(es.name, key)]
        stamps = dict(es.stamps)
        if es.name == "Warehouses" and self.config.warehouse_stamps:
            stamps = {"create_date": "CreateDate", "create_time": "CreateTime", "update_date": "UpdateDate",
                      "update_time": "UpdateTime"}
        values: dict[str, Any] = {}
        created, updated = self.local(meta.created), self.local(meta.updated)
        for what, name in stamps.items():
            moment = created if what.startswith("create") else updated
            values[name] = moment.date() if what.endswith("date") else moment.strftime("%H:%M:%S")
        return values

    def onhand(self) -> dict[tuple[str, str], Decimal]:
        """In stock per (item, warehouse), summed over bins and batches (cached per stock change)."""
        generation, cached = self._onhand
        if generation == self.stock_generation:
            return cached
        totals: dict[tuple[str, str], Decimal] = {}
        for key, qty in self.ledger.balances().items():
            totals[(key.sku, key.warehouse)] = totals.get((key.sku, key.warehouse), Decimal(0)) + qty
        self._onhand = (self.stock_generation, totals)
        return totals

    def stock_changed(self) -> None:
        """Call after changing the ledger outside a unit of work (seeding)."""
        with self.lock:
            self.stock_generation += 1

    def getter(self, entity_set: str, key: Any) -> Callable[[str], Any]:
        """``get(property)`` for ``$filter``/``$orderby``: stored value, stamp, computed or default."""
        return _Getter(self, ENTITY_SETS[entity_set], key, self.records[entity_set][key])

    def _item_totals(self, sku: str) -> dict[str, Decimal]:
        onhand = self.onhand()
        totals = {"QuantityOnStock": Decimal(0), "QuantityOrderedFromVendors": Decimal(0),
                  "QuantityOrderedByCustomers": Decimal(0)}
        for warehouse in self.records["Warehouses"]:
            row = self.item_warehouse.get((sku, warehouse), {})
            totals["QuantityOnStock"] += onhand.get((sku, warehouse), Decimal(0))
            totals["QuantityOrderedFromVendors"] += row.get("Ordered", Decimal(0))
            totals["QuantityOrderedByCustomers"] += row.get("Committed", Decimal(0))
        return totals

    def render(self, entity_set: str, key: Any) -> dict[str, Any]:
        """The full entity (every template property, stamps, computed stock), internal value types."""
        with self.lock:
            es = ENTITY_SETS[entity_set]
            record = self.record(entity_set, key)
            out: dict[str, Any] = {}
            for name, default in es.template.items():
                value = record.get(name, default)
                out[name] = copy.deepcopy(value) if isinstance(value, (list, dict)) else value
            for name, value in record.items():
                if name not in out:
                    out[name] = copy.deepcopy(value)
            out.update(self.stamps(es, key))
            if es.name == "Items":
                out.update(self._item_totals(key))
                out["DataVersion"] = self.meta[(entity_set, key)].version
                out["ItemWarehouseInfoCollection"] = self._item_warehouse_rows(key)
                out["ItemIntrastatExtension"] = {**INTRASTAT_TEMPLATE, "ItemCode": key}
                if not record.get("ItemPrices"):   # one row per price list; the company has one
                    out["ItemPrices"] = [dict(ITEM_PRICE_TEMPLATE, PriceList=1, BasePriceList=1)]
                if record.get("BarCode") and not record.get("ItemBarCodeCollection"):
                    out["ItemBarCodeCollection"] = [{"AbsEntry": self.meta[(entity_set, key)].seq, "UoMEntry": -1,
                                                     "Barcode": record["BarCode"], "FreeText": None}]
            if es.name == "Warehouses":
                out["WarehouseBinLocations"] = []
            for name in self.config.user_fields.get(es.name, ()):
                out.setdefault(name, None)
            if es.kind == "document":
                for name in self.config.user_fields.get("Documents", ()):
                    out.setdefault(name, None)
                for line in out.get(es.lines, []):
                    for name in self.config.user_fields.get("DocumentLines", ()):
                        line.setdefault(name, None)
            return out

    def _item_warehouse_rows(self, sku: str) -> list[dict[str, Any]]:
        onhand = self.onhand()
        rows = []
        for warehouse in self.records["Warehouses"]:
            row = dict(ITEM_WAREHOUSE_TEMPLATE)
            row.update({"MinimalStock": Decimal(0), "MaximalStock": Decimal(0), "Committed": Decimal(0),
                        "Ordered": Decimal(0)})
            row.update(self.item_warehouse.get((sku, warehouse), {}))
            row["ItemCycleCounts"] = []
            row.update({"ItemCode": sku, "WarehouseCode": warehouse,
                        "InStock": onhand.get((sku, warehouse), Decimal(0))})
            for name in self.config.user_fields.get("ItemWarehouseInfoCollection", ()):
                row.setdefault(name, None)
            rows.append(row)
        return rows

    def known_property(self, entity_set: str) -> Callable[[str], bool]:
        es = ENTITY_SETS[entity_set]
        names = set(es.template) | set(es.stamps.values())
        if es.name == "Warehouses":
            names |= {"CreateDate", "CreateTime", "UpdateDate", "UpdateTime"} if self.config.warehouse_stamps else set()
        if es.name == "Items":
            names.add("DataVersion")
        udfs = set(self.config.user_fields.get(es.name, ()))
        if es.kind == "document":
            udfs |= set(self.config.user_fields.get("Documents", ()))
        names |= udfs
        return names.__contains__

    def documents_for(self, reference: str) -> list[str]:
        """Numbers (DocNum / DocumentNumber, as text) of live documents carrying ``reference`` in a
        configured reference field, in creation order."""
        with self.lock:
            found: list[tuple[int, str]] = []
            for es in ENTITY_SETS.values():
                if es.kind != "document":
                    continue
                for key, record in self.records[es.name].items():
                    if record.get("Cancelled") == "tYES":
                        continue
                    if any(record.get(name) == reference for name in self.config.reference_fields):
                        found.append((self.meta[(es.name, key)].seq, str(record[es.number])))
            return [number for _, number in sorted(found)]

    # --- master data ----------------------------------------------------------------------

    def _stamp_new(self, entity_set: str, key: Any, at: float | None = None) -> None:
        now = self.clock() if at is None else at
        self.seq += 1
        self._assign(self.meta, (entity_set, key), Meta(now, now, 1, self.seq))

    def _touch(self, entity_set: str, key: Any, at: float | None = None) -> None:
        meta = self.meta[(entity_set, key)]
        self._assign(self.meta, (entity_set, key),
                     replace(meta, updated=self.clock() if at is None else at, version=meta.version + 1))

    def touch(self, entity_set: str, key: Any, at: float | None = None) -> None:
        """Restamp UpdateDate/UpdateTime (where the entity has them) and bump DataVersion."""
        with self.unit_of_work():
            self.record(entity_set, key)
            self._touch(entity_set, key, at)

    def create(self, entity_set: str, body: Mapping[str, Any]) -> Any:
        """POST: a master record or a document. Returns the new key."""
        es = self.entity_set(entity_set)
        with self.unit_of_work():
            if es.kind == "document":
                return self._add_document(es, body)
            return self._add_master(es, body)

    def _check_properties(self, es: EntitySet, body: Mapping[str, Any], template: Mapping[str, Any],
                          group: str, extra: Iterable[str] = ()) -> dict[str, Any]:
        """Canonical property names (case-insensitive match, doc: be lenient); unknown ones refused."""
        known = {name.lower(): name for name in [*template, *extra]}
        udfs = set(self.config.user_fields.get(group, ()))
        if es.kind == "document" and group == es.name:
            udfs |= set(self.config.user_fields.get("Documents", ()))
        for name in udfs:
            known[name.lower()] = name
        out: dict[str, Any] = {}
        for name, value in body.items():
            canonical = known.get(str(name).lower())
            if canonical is None or (canonical.startswith("U_") and canonical not in udfs):
                type_name = es.type_name if group == es.name else group.rstrip("s")
                raise B1Error(-1000, f"Property '{name}' of '{type_name}' is invalid")
            out[canonical] = value
        return out

    def _check_lengths(self, es: EntitySet, data: Mapping[str, Any]) -> None:
        limits = self.config.max_lengths.get(es.name) or {}
        for name, value in data.items():
            limit = limits.get(name)
            if limit is not None and isinstance(value, str) and len(value) > limit:
                raise B1Error(-5002, f"CServiceData::SetPropertyValueString failed; Value too long in property "
                                     f"'{name}' of '{es.type_name}'")

    def _normalize(self, name: str, value: Any, where: str = "") -> Any:
        if value is None:
            return None
        if name in ENUM_ALIASES and isinstance(value, str):
            return ENUM_ALIASES[name].get(value, value)
        if name in DATE_FIELDS:
            if isinstance(value, str):
                try:
                    return parse_date_text(value)
                except QueryError:
                    raise B1Error(-10, f"Invalid date value '{value}'{where}") from None
            raise B1Error(-10, f"Invalid date value '{value}'{where}")
        if isinstance(value, float):
            return Decimal(str(value))
        return value

    def _add_master(self, es: EntitySet, body: Mapping[str, Any]) -> Any:
        extra = ["ItemWarehouseInfoCollection", "ItemPrices"] if es.name == "Items" else []
        data = self._check_properties(es, body, es.template, es.name, extra)
        self._check_lengths(es, data)
        warehouse_rows = data.pop("ItemWarehouseInfoCollection", None) if es.name == "Items" else None
        record = {name: self._normalize(name, value) for name, value in data.items()
                  if name not in es.stamps.values() and name not in ("QuantityOnStock", "DataVersion")}
        if es.name == "BinLocations":
            warehouse = record.get("Warehouse")
            wh = self.records["Warehouses"].get(warehouse)
            if wh is None:
                raise B1Error(-2028, NOT_FOUND + _where("OBIN", "WhsCode"), self.config.missing_reference_status)
            if wh.get("EnableBinLocations") != "tYES":
                raise B1Error(-10, f"Bin locations are not enabled in warehouse '{warehouse}'")
            if not record.get("BinCode"):
                subs = [str(record[s]) for s in ("Sublevel1", "Sublevel2", "Sublevel3", "Sublevel4") if record.get(s)]
                if not subs:
                    raise B1Error(-10, "Enter a bin sublevel code  [OBIN.SL1Code]")
                record["BinCode"] = "-".join([warehouse, *subs])
            if any(b.get("BinCode") == record["BinCode"] for b in self.records["BinLocations"].values()):
                raise B1Error(-2035, ALREADY_EXISTS + " 'OBIN'")
            self._set_counter(es.name)
            key = self.counters[es.name]
            record["AbsEntry"] = key
        else:
            key = record.get(es.key)
            if not isinstance(key, str) or not key:
                raise B1Error(-10, f"Enter a valid code{_where(es.header_table or es.type_name, es.key)}")
            if key in self.records[es.name]:
                if es.name == "BusinessPartners":
                    raise B1Error(-10, f"1320000140 - Business partner code '{key}' already assigned to a business partner; enter a unique business partner code")
                raise B1Error(-2035, ALREADY_EXISTS)
        if es.name == "BusinessPartners" and record.get("CardType") not in (None, "cCustomer", "cSupplier", "cLid"):
            raise B1Error(-10, f"Invalid value '{record['CardType']}' for CardType")
        self._assign(self.records[es.name], key, record)
        self._stamp_new(es.name, key)
        if es.name == "Items":
            for row in warehouse_rows or []:
                self._set_item_warehouse(key, row)
        return key

    def _set_counter(self, entity_set: str) -> None:
        self._assign(self.counters, entity_set, self.counters[entity_set] + 1)

    def _set_item_warehouse(self, sku: str, row: Mapping[str, Any]) -> None:
        warehouse = row.get("WarehouseCode")
        if warehouse not in self.records["Warehouses"]:
            raise B1Error(-2028, NOT_FOUND + _where("OITW", "WhsCode"), self.config.missing_reference_status)
        editable = {"MinimalStock", "MaximalStock", "MinimalOrder", "Locked", "DefaultBin", "Committed", "Ordered"}
        current = dict(self.item_warehouse.get((sku, warehouse), {}))
        for name, value in row.items():
            if name in editable:
                current[name] = self._normalize(name, value)
            elif name not in ITEM_WAREHOUSE_TEMPLATE and name not in self.config.user_fields.get(
                    "ItemWarehouseInfoCollection", ()):
                raise B1Error(-1000, f"Property '{name}' of 'ItemWarehouseInfo' is invalid")
        self._assign(self.item_warehouse, (sku, warehouse), current)

    def update(self, entity_set: str, key: Any, body: Mapping[str, Any]) -> None:
        """PATCH: master records change freely (keys excepted); posted documents only in their
        editable header fields and UDFs (other known properties are ignored, lines refused)."""
        es = self.entity_set(entity_set)
        with self.unit_of_work():
            record = dict(self.record(es.name, key))
            if es.kind == "document":
                self._update_document(es, key, record, body)
                return
            extra = ["ItemWarehouseInfoCollection", "ItemPrices"] if es.name == "Items" else []
            data = self._check_properties(es, body, es.template, es.name, extra)
            self._check_lengths(es, data)
            rows = data.pop("ItemWarehouseInfoCollection", None) if es.name == "Items" else None
            for name, value in data.items():
                if name == es.key or name in es.stamps.values() or name in ("QuantityOnStock", "DataVersion",
                                                                           "QuantityOrderedFromVendors",
                                                                           "QuantityOrderedByCustomers"):
                    continue  # read-only: silently ignored, as the Service Layer does
                record[name] = self._normalize(name, value)
            self._assign(self.records[es.name], key, record)
            for row in rows or []:
                self._set_item_warehouse(key, row)
            self._touch(es.name, key)

    def _update_document(self, es: EntitySet, key: Any, record: dict[str, Any], body: Mapping[str, Any]) -> None:
        data = self._check_properties(es, body, es.template, es.name)
        udfs = set(self.config.user_fields.get(es.name, ())) | set(self.config.user_fields.get("Documents", ()))
        for name, value in data.items():
            if name == es.lines:
                if value:
                    raise B1Error(-10, f"Cannot update lines of a posted document{_where(es.line_table, 'ItemCode')}")
                continue
            if name in es.editable or name in udfs:
                record[name] = self._normalize(name, value)
        self._assign(self.records[es.name], key, record)
        self._touch(es.name, key)

    def delete(self, entity_set: str, key: Any) -> None:
        es = self.entity_set(entity_set)
        with self.unit_of_work():
            self.record(es.name, key)
            if es.kind == "document":
                raise B1Error(-5006, NOT_SUPPORTED_ACTION)
            if self._in_use(es, key):
                raise B1Error(-10, f"Cannot remove '{key}': it is used in transactions")
            self._delete(self.records[es.name], key)
            self._delete(self.meta, (es.name, key))

    def _in_use(self, es: EntitySet, key: Any) -> bool:
        if es.name in ("Items", "Warehouses"):
            column = 0 if es.name == "Items" else 1
            if any(pair[column] == key and qty for pair, qty in self.onhand().items()):
                return True
        fields = {"Items": ("ItemCode",), "Warehouses": ("WarehouseCode", "FromWarehouseCode"),
                  "BusinessPartners": ("CardCode",)}.get(es.name, ())
        for other in ENTITY_SETS.values():
            if other.kind != "document":
                continue
            for record in self.records[other.name].values():
                if es.name == "BusinessPartners" and record.get("CardCode") == key:
                    return True
                for line in record.get(other.lines, []):
                    if any(line.get(f) == key for f in fields):
                        return True
        if es.name == "Warehouses":
            return any(b.get("Warehouse") == key for b in self.records["BinLocations"].values())
        return False

    # --- documents ------------------------------------------------------------------------

    def _quantity(self, value: Any, where: str) -> Decimal:
        if isinstance(value, bool) or value is None:
            raise B1Error(-10, f"Enter a valid quantity{where}")
        try:
            qty = Decimal(str(value)) if isinstance(value, (int, float, str)) else Decimal(value)
        except (InvalidOperation, TypeError, ValueError):
            raise B1Error(-10, f"Enter a valid quantity{where}") from None
        if not qty.is_finite():
            raise B1Error(-10, f"Enter a valid quantity{where}")
        return qty

    def _add_document(self, es: EntitySet, body: Mapping[str, Any]) -> int:
        header = self._check_properties(es, body, es.template, es.name)
        raw_lines = header.pop(es.lines, None) or []
        if not isinstance(raw_lines, list) or not raw_lines:
            raise B1Error(-10, f"Cannot add a document without rows{_where(None, es.lines)}")
        record: dict[str, Any] = {}
        for name, value in header.items():
            if name in (es.key, es.number, "DocObjectCode", "DocObjectCodeEx", "DocumentStatus", "Cancelled",
                        "CancelStatus", "DocTotal") or name in es.stamps.values():
                continue  # assigned by the system
            record[name] = self._normalize(name, value)
        today = self.today()
        date_field = {"count": "CountDate", "post": "PostingDate"}.get(es.effect, "DocDate")
        if es.effect == "post":
            record.setdefault("CountDate", record.get("PostingDate") or today)
        if date_field not in record or record[date_field] is None:
            record[date_field] = today
        if es.template.get("TaxDate", _MISSING) is None:
            record.setdefault("TaxDate", record.get("DocDate"))
        if "DocDueDate" in es.template:
            record.setdefault("DocDueDate", record.get("DocDate"))
        if "DueDate" in es.template:
            record.setdefault("DueDate", record.get("DocDate"))
        self._check_partner(es, record)
        series_table = self.series[es.name]
        series_number = record.get("Series")
        if series_number is None:
            series_number = self.default_series[es.name]
        series = series_table.get(series_number) if isinstance(series_number, int) else None
        if series is None:
            raise B1Error(-10, f"Invalid series '{series_number}'{_where(es.header_table, 'Series')}")
        record["Series"] = series.series

        uow = self._require_uow()
        lines, entries = self._build_lines(es, record, raw_lines, uow)

        self._set_counter(es.name)
        doc_entry = self.counters[es.name]
        number = series.next_number
        self._set_attr(series, "next_number", number + 1)
        record[es.key] = doc_entry
        record[es.number] = number
        if es.effect in ("count", "post"):
            record["DocObjectCodeEx"] = es.object_code
        else:
            record["DocObjectCode"] = es.di_object
            record["Cancelled"] = "tNO"
        closed = es.effect in ("in", "out", "transfer") and es.partner is None
        if es.effect == "count":
            record["DocumentStatus"] = "cdsOpen"
        elif es.effect == "post":
            record["DocumentStatus"] = "bost_Close"
        else:
            record["DocumentStatus"] = "bost_Close" if closed else "bost_Open"
        for line in lines:
            if es.line_key == "LineNumber":
                line["DocumentEntry"] = doc_entry
            elif es.name == "StockTransfers":
                line["DocEntry"] = doc_entry
            if "LineStatus" in es.line_template and es.effect not in ("count", "post"):
                line["LineStatus"] = "bost_Close" if closed else "bost_Open"
                line["RemainingOpenQuantity"] = Decimal(0) if closed else line["Quantity"]
        if "DocTotal" in es.template:
            record["DocTotal"] = sum((line.get("LineTotal", Decimal(0)) for line in lines), Decimal(0))
        record[es.lines] = lines

        ref = f"{es.name}({doc_entry})"
        if entries:
            self._queue_posting(es, ref, entries)
        self._assign(self.records[es.name], doc_entry, record)
        self._stamp_new(es.name, doc_entry)
        return doc_entry

    def _check_partner(self, es: EntitySet, record: dict[str, Any]) -> None:
        code = record.get("CardCode")
        if code is None:
            if es.partner is not None:
                raise B1Error(-10, f"Invalid BP code{_where(es.header_table, 'CardCode')} , ''")
            return
        partner = self.records["BusinessPartners"].get(code)
        wanted = {"supplier": "cSupplier", "customer": "cCustomer"}.get(es.partner or "")
        if partner is None or (wanted and partner.get("CardType", "cCustomer") != wanted):
            raise B1Error(-10, f"Invalid BP code{_where(es.header_table, 'CardCode')} , '{code}'")
        record.setdefault("CardName", partner.get("CardName"))

    def _build_lines(self, es: EntitySet, record: dict[str, Any], raw_lines: list[Any],
                     uow: _UnitOfWork) -> tuple[list[dict[str, Any]], list[tuple[int, Entry]]]:
        lines: list[dict[str, Any]] = []
        entries: list[tuple[int, Entry]] = []   # (1-based line, entry)
        table = es.line_table
        alloc_name = {"DocumentLines": "DocumentLinesBinAllocations",
                      "StockTransferLines": "StockTransferLinesBinAllocations"}.get(es.lines or "")
        for index, raw in enumerate(raw_lines):
            n = index + 1
            if not isinstance(raw, Mapping):
                raise B1Error(-10, f"Invalid document line{_where(table, 'ItemCode', n)}")
            line = self._check_properties(es, raw, es.line_template, "DocumentLines")
            line = {name: self._normalize(name, value, _where(table, name, n)) for name, value in line.items()}
            line[es.line_key] = index + es.line_base
            code = line.get("ItemCode")
            if not code:
                raise B1Error(-10, f"Item number is missing; specify an item number{_where(table, 'ItemCode', n)}")
            item = self.records["Items"].get(code)
            if item is None:
                raise B1Error(-2028, NOT_FOUND + _where(table, "ItemCode", n), self.config.missing_reference_status)
            line.setdefault("ItemDescription", item.get("ItemName"))
            if item.get("Frozen") == "tYES" or item.get("Valid") == "tNO":
                raise B1Error(-10, f"131 - Item '{code}' is inactive or frozen{_where(table, 'ItemCode', n)}")
            stock_item = item.get("InventoryItem", "tYES") == "tYES"
            batch_item = item.get("ManageBatchNumbers") == "tYES"

            if es.effect in ("count", "post"):
                entries.extend(self._count_line(es, line, item, n, uow))
                lines.append(line)
                continue

            qty = self._quantity(line.get("Quantity"), _where(table, "Quantity", n))
            if qty <= 0:
                raise B1Error(-10, f"Enter a quantity greater than zero{_where(table, 'Quantity', n)}")
            line["Quantity"] = qty
            line.setdefault("InventoryQuantity", qty)
            price = line.get("UnitPrice", line.get("Price")) or Decimal(0)
            price = self._quantity(price, _where(table, "Price", n))
            line["UnitPrice"] = line["Price"] = price
            line["LineTotal"] = qty * price

            batches = self._batches(line, qty, batch_item, stock_item, table, n, code)
            allocations = line.get(alloc_name) or []
            if es.effect == "transfer":
                source = line.get("FromWarehouseCode") or record.get("FromWarehouse")
                target = line.get("WarehouseCode") or record.get("ToWarehouse")
                line["FromWarehouseCode"], line["WarehouseCode"] = source, target
                self._warehouse(source, table, "FromWhsCod", n, code)
                self._warehouse(target, table, "WhsCode", n, code)
                if source == target:
                    raise B1Error(-10, f"Source and target warehouses are the same{_where(table, 'WhsCode', n)}")
                if stock_item:
                    out_allocs = [a for a in allocations if ENUM_ALIASES["BinActionType"].get(
                        str(a.get("BinActionType")), a.get("BinActionType")) == "batFromWarehouse"]
                    in_allocs = [a for a in allocations if a not in out_allocs]
                    for bin_code, lot, part in self._parts(source, code, qty, batches, out_allocs, table, n):
                        entries.append((n, Entry(code, source, -part, bin=bin_code, lot=lot)))
                    for bin_code, lot, part in self._parts(target, code, qty, batches, in_allocs, table, n):
                        entries.append((n, Entry(code, target, part, bin=bin_code, lot=lot)))
            else:
                warehouse = line.get("WarehouseCode") or item.get("DefaultWarehouse") or next(
                    iter(self.records["Warehouses"]), None)
                line["WarehouseCode"] = warehouse
                self._warehouse(warehouse, table, "WhsCode", n, code)
                if stock_item:
                    sign = 1 if es.effect == "in" else -1
                    for bin_code, lot, part in self._parts(warehouse, code, qty, batches, allocations, table, n):
                        entries.append((n, Entry(code, warehouse, sign * part, bin=bin_code, lot=lot)))
            lines.append(line)
        return lines, entries

    def _warehouse(self, code: Any, table: str | None, column: str, n: int, item: str) -> dict[str, Any]:
        warehouse = self.records["Warehouses"].get(code) if isinstance(code, str) else None
        if warehouse is None:
            raise B1Error(-2028, NOT_FOUND + _where(table, column, n), self.config.missing_reference_status)
        if warehouse.get("Inactive") == "tYES" or self.item_warehouse.get((item, code), {}).get("Locked") == "tYES":
            raise B1Error(-10, f"131 - Item '{item}' is frozen in warehouse '{code}'{_where(table, column, n)}")
        return warehouse

    def _batches(self, line: dict[str, Any], qty: Decimal, batch_item: bool, stock_item: bool,
                 table: str | None, n: int, code: str) -> list[tuple[str, Decimal]]:
        raw = line.get("BatchNumbers") or []
        if raw and not batch_item:
            raise B1Error(-10, f"Item '{code}' is not managed by batches{_where(table, 'ItemCode', n)}")
        if not batch_item or not stock_item:
            return []
        if not raw:
            if self.config.require_batches:
                raise B1Error(-10, f"Batch numbers are required for item '{code}'{_where(table, 'ItemCode', n)}")
            return []
        batches: list[tuple[str, Decimal]] = []
        normalized = []
        for row in raw:
            if not isinstance(row, Mapping):
                raise B1Error(-10, f"Invalid batch row{_where(table, 'ItemCode', n)}")
            fields = {str(k).lower(): v for k, v in row.items()}
            number = fields.get("batchnumber") or fields.get("batchnumberproperty")
            if not isinstance(number, str) or not number:
                raise B1Error(-10, f"Enter a batch number{_where(table, 'BatchNumber', n)}")
            part = self._quantity(fields.get("quantity"), _where(table, "Quantity", n))
            if part <= 0:
                raise B1Error(-10, f"Enter a quantity greater than zero{_where(table, 'Quantity', n)}")
            batches.append((number, part))
            normalized.append({**{k: self._normalize(k, v) for k, v in row.items() if k not in ("quantity",)},
                               "BatchNumber": number, "Quantity": part})
        if sum(q for _, q in batches) != qty:
            raise B1Error(-10, f"Batch quantities do not match the row quantity of item '{code}'{_where(table, 'Quantity', n)}")
        line["BatchNumbers"] = normalized
        return batches

    def _parts(self, warehouse: str, code: str, qty: Decimal, batches: list[tuple[str, Decimal]],
               allocations: list[Any], table: str | None, n: int) -> list[tuple[str | None, str | None, Decimal]]:
        """Split a line's quantity over bins and batches: [(bin code, batch, qty)]."""
        record = self.records["Warehouses"][warehouse]
        if record.get("EnableBinLocations") != "tYES":
            return [(None, lot, q) for lot, q in batches] or [(None, None, qty)]
        fully = (f"1470000341 - Fully allocate item '{code}' to bin locations in warehouse '{warehouse}'"
                 f"{_where(table, 'ItemCode', n)}")
        if not allocations:
            default = record.get("DefaultBin")
            if default is None:
                raise B1Error(-10, fully)
            bin_code = self.records["BinLocations"][default]["BinCode"]
            return [(bin_code, lot, q) for lot, q in batches] or [(bin_code, None, qty)]
        parts: list[tuple[str | None, str | None, Decimal]] = []
        for alloc in allocations:
            entry = alloc.get("BinAbsEntry")
            bin_record = self.records["BinLocations"].get(entry)
            if bin_record is None or bin_record.get("Warehouse") != warehouse:
                raise B1Error(-2028, NOT_FOUND + _where(table, "BinAbsEntry", n), self.config.missing_reference_status)
            part = self._quantity(alloc.get("Quantity"), _where(table, "Quantity", n))
            lot = None
            if batches:
                base = alloc.get("SerialAndBatchNumbersBaseLine", -1)
                if isinstance(base, int) and 0 <= base < len(batches):
                    lot = batches[base][0]
                elif len(batches) == 1:
                    lot = batches[0][0]
                else:
                    raise B1Error(-10, fully)
            parts.append((bin_record["BinCode"], lot, part))
        if sum(p for _, _, p in parts) != qty:
            raise B1Error(-10, fully)
        return parts

    def _count_line(self, es: EntitySet, line: dict[str, Any], item: Mapping[str, Any], n: int,
                    uow: _UnitOfWork) -> list[tuple[int, Entry]]:
        table, code = es.line_table, line["ItemCode"]
        warehouse = line.get("WarehouseCode") or item.get("DefaultWarehouse")
        self._warehouse(warehouse, table, "WhsCode", n, code)
        counted = self._quantity(line.get("CountedQuantity", 0), _where(table, "CountedQty", n))
        if counted < 0:
            raise B1Error(-10, f"Counted quantity cannot be negative{_where(table, 'CountedQty', n)}")
        bin_code = None
        if line.get("BinEntry") is not None:
            bin_record = self.records["BinLocations"].get(line["BinEntry"])
            if bin_record is None or bin_record.get("Warehouse") != warehouse:
                raise B1Error(-2028, NOT_FOUND + _where(table, "BinEntry", n), self.config.missing_reference_status)
            bin_code = bin_record["BinCode"]
        in_warehouse = self.available(code, warehouse, uow)
        line.update({"WarehouseCode": warehouse, "CountedQuantity": counted, "InWarehouseQuantity": in_warehouse,
                     "Variance": counted - in_warehouse})
        if es.effect == "count":
            line["Counted"] = "tYES"
            line["UoMCountedQuantity"] = counted
            return []
        current = self.available(code, warehouse, uow, bin=bin_code, lot=None, exact=True)
        delta = counted - (current if bin_code is not None else in_warehouse)
        line["Variance"] = delta
        return [(n, Entry(code, warehouse, delta, bin=bin_code))] if delta else []

    def available(self, sku: str, warehouse: str, uow: _UnitOfWork | None = None, *, bin: str | None = None,
                  lot: str | None = None, exact: bool = False) -> Decimal:
        """On hand incl. postings pending in the unit: per exact key, or summed over the warehouse."""
        pending = uow.pending if uow else {}
        if exact:
            key = StockKey(sku, warehouse, bin, lot)
            return self.ledger.balance(*key) + pending.get(key, Decimal(0))
        total = self.onhand().get((sku, warehouse), Decimal(0))
        return total + sum((q for k, q in pending.items() if k.sku == sku and k.warehouse == warehouse), Decimal(0))

    def _queue_posting(self, es: EntitySet, ref: str, entries: list[tuple[int, Entry]]) -> None:
        """Check stock like the ledger will (per key, negative refused unless allowed), then queue."""
        uow = self._require_uow()
        net: dict[StockKey, Decimal] = {}
        first_line: dict[StockKey, int] = {}
        for n, entry in entries:
            net[entry.key] = net.get(entry.key, Decimal(0)) + entry.qty_delta
            first_line.setdefault(entry.key, n)
        for key, delta in net.items():
            if delta >= 0:
                continue
            after = self.available(key.sku, key.warehouse, uow, bin=key.bin, lot=key.lot, exact=True) + delta
            if after < 0 and not self.ledger.negative_allowed(key.warehouse):
                raise B1Error(-10, NEGATIVE + _where(es.line_table, "ItemCode", first_line[key]))
        for key, delta in net.items():
            uow.pending[key] = uow.pending.get(key, Decimal(0)) + delta
        plain = tuple(entry for _, entry in entries)
        uow.postings.append(("post", ref, plain))
        self._assign(self.postings, ref, plain)

    def action(self, entity_set: str, key: Any, action: str) -> None:
        """``Cancel`` (reverses the stock posting) or ``Close``."""
        es = self.entity_set(entity_set)
        with self.unit_of_work():
            record = dict(self.record(es.name, key))
            if action not in es.actions:
                raise B1Error(-5006, NOT_SUPPORTED_ACTION)
            if action == "Cancel":
                if record.get("Cancelled") == "tYES":
                    raise B1Error(-5002, "Document is already cancelled")
                ref = f"{es.name}({key})"
                entries = self.postings.get(ref)
                if entries:
                    uow = self._require_uow()
                    reverse = [(i + 1, Entry(e.sku, e.warehouse, -e.qty_delta, bin=e.bin, lot=e.lot))
                               for i, e in enumerate(entries)]
                    # map back to 1-based line numbers for the message: entries follow line order
                    self._check_reverse(es, reverse, uow)
                    for _, entry in reverse:
                        uow.pending[entry.key] = uow.pending.get(entry.key, Decimal(0)) + entry.qty_delta
                    uow.postings.append(("reverse", ref, entries))
                    self._delete(self.postings, ref)
                record.update({"Cancelled": "tYES", "CancelStatus": "csCancelled", "DocumentStatus": "bost_Close"})
            else:
                closed = "cdsClosed" if es.effect == "count" else "bost_Close"
                if record.get("DocumentStatus") == closed:
                    raise B1Error(-5002, "Document is already closed")
                record["DocumentStatus"] = closed
            if es.lines:
                record[es.lines] = [
                    {**line, **({"LineStatus": "clsClosed" if es.effect == "count" else "bost_Close"}
                                if "LineStatus" in es.line_template else {})}
                    for line in record[es.lines]
                ]
            self._assign(self.records[es.name], key, record)
            self._touch(es.name, key)

    def _check_reverse(self, es: EntitySet, reverse: list[tuple[int, Entry]], uow: _UnitOfWork) -> None:
        net: dict[StockKey, Decimal] = {}
        for _, entry in reverse:
            net[entry.key] = net.get(entry.key, Decimal(0)) + entry.qty_delta
        for key, delta in net.items():
            if delta < 0:
                after = self.available(key.sku, key.warehouse, uow, bin=key.bin, lot=key.lot, exact=True) + delta
                if after < 0 and not self.ledger.negative_allowed(key.warehouse):
                    raise B1Error(-10, NEGATIVE + _where(es.line_table, "ItemCode", 1))

    # --- seeding --------------------------------------------------------------------------

    def seed_records(self, entity_set: str, rows: Iterable[Mapping[str, Any]]) -> None:
        """Create master records from SL-shaped JSON, as ``POST`` would."""
        with self.unit_of_work():
            for row in rows:
                self._add_master(self.entity_set(entity_set), row)

    def seed_world(self, world: World) -> None:
        """The vendor-neutral world as native records, opening stock posted to the ledger."""
        with self.unit_of_work():
            for wh in world.warehouses:
                self._add_master(ENTITY_SETS["Warehouses"], {
                    "WarehouseCode": wh.code, "WarehouseName": wh.name,
                    "EnableBinLocations": "tYES" if wh.bins else "tNO"})
                first = None
                for code in wh.bins:
                    self._add_master(ENTITY_SETS["BinLocations"], {"Warehouse": wh.code, "BinCode": code})
                    first = first or self.counters["BinLocations"]
                if first is not None:
                    record = dict(self.records["Warehouses"][wh.code], DefaultBin=first)
                    self._assign(self.records["Warehouses"], wh.code, record)
            for item in world.items:
                body: dict[str, Any] = {
                    "ItemCode": item.sku, "ItemName": item.name, "InventoryUOM": item.unit,
                    "SalesUnit": item.unit, "PurchaseUnit": item.unit,
                    "ManageBatchNumbers": "tYES" if item.batch_managed else "tNO",
                    "BarCode": item.barcode, "User_Text": item.spec,
                }
                declared = self.config.user_fields.get("Items", frozenset())
                for name, value in item.attributes.items():
                    udf = name if name.startswith("U_") else f"U_{name}"
                    if udf in declared:
                        body[udf] = value
                self._add_master(ENTITY_SETS["Items"], body)
            for partner in world.partners:
                if partner.role not in ("supplier", "customer"):
                    raise ValueError(f"partner {partner.code}: role must be supplier or customer")
                self._add_master(ENTITY_SETS["BusinessPartners"], {
                    "CardCode": partner.code, "CardName": partner.name,
                    "CardType": "cSupplier" if partner.role == "supplier" else "cCustomer"})
            entries = []
            for balance in world.balances:
                if not balance.qty:
                    continue
                warehouse = self.records["Warehouses"].get(balance.warehouse)
                if warehouse is None or balance.sku not in self.records["Items"]:
                    raise ValueError(f"balance {balance.sku}@{balance.warehouse}: unknown item or warehouse")
                bin_code = balance.bin
                if bin_code is None and warehouse.get("DefaultBin") is not None:
                    bin_code = self.records["BinLocations"][warehouse["DefaultBin"]]["BinCode"]
                entries.append(Entry(balance.sku, balance.warehouse, balance.qty, bin=bin_code, lot=balance.lot))
            if entries:
                self.seq += 1
                uow = self._require_uow()
                uow.postings.append(("post", f"OpeningBalances({self.seq})", tuple(entries)))
        self.stock_changed()


class _Getter:
    """One record's property reader for ``$filter``/``$orderby``. A small object rather than a
    closure: a query builds one per record of the entity set, and lookups by reference field
    scan every document, so this is the simulator's hot path."""

    __slots__ = ("company", "es", "key", "record", "stamps", "totals")

    def __init__(self, company: Company, es: EntitySet, key: Any, record: dict[str, Any]) -> None:
        self.company, self.es, self.key, self.record = company, es, key, record
        self.stamps: dict[str, Any] | None = None
        self.totals: dict[str, Decimal] | None = None

    def __call__(self, name: str) -> Any:
        record = self.record
        if name in record:
            return record[name]
        es = self.es
        if self.stamps is None:
            self.stamps = self.company.stamps(es, self.key)
        if name in self.stamps:
            return self.stamps[name]
        if es.name == "Items" and name in ("QuantityOnStock", "QuantityOrderedFromVendors",
                                           "QuantityOrderedByCustomers", "DataVersion"):
            if name == "DataVersion":
                return self.company.meta[(es.name, self.key)].version
            if self.totals is None:
                self.totals = self.company._item_totals(self.key)
            return self.totals[name]
        return es.template.get(name)


def etag_for(version: int) -> str:
    return 'W/"' + hashlib.sha1(str(version).encode()).hexdigest().upper() + '"'
