"""SAP Business One over the Service Layer: the connector contract (DESIGN.md §4).

Wires :mod:`connectors.sap_b1.client` (wire protocol) to :mod:`connectors.sap_b1.mapping` (pure
mapping). How the contract is met:

Incremental reads. The Service Layer stamps Items, BusinessPartners and documents with
``UpdateDate`` (a date) and ``UpdateTime`` (a separate time of day, company-local). A filter on
both jointly would need ``UpdateDate gt d or (UpdateDate eq d and UpdateTime ge t)``, and time
literals compare only the time part (guide §3.7.5), so we ask the server for
``UpdateDate ge '<since's date in the company zone>'`` and compare the exact stamp (date + time)
client-side, inclusively (a record changed exactly at ``since`` is read). ``StockTransfers`` have
no ``UpdateTime``: they are compared by date only and stamped at the start of their day, so the
whole day is read again next time (the engine de-duplicates by content hash). Warehouses and bin
locations carry no modification stamp in the vendor doc: ``read`` returns them in full whatever
``since`` says (they are not in ``capabilities.incremental``), and change detection is the
engine's content-hash comparison of what it stored last time.

Paging and resume. Collections are read in key order (``$orderby``) with ``Prefer:
odata.maxpagesize=N``, following the server's nextLinks (``$skip``). A page never holds more than
``page_size`` records even if the server sends a bigger page; the resume token names the entity
set, the ``$skip`` of the server page, the offset inside it, and the ``since`` it belongs to.

Idempotent push. Our key goes to the reference field (default ``Reference2``; a UDF such as
``U_HubKey`` is safer where keys are long). ``push`` first looks for a live document of that
entity set carrying the key (``$filter=Reference2 eq '<key>'``) and returns it (``created=False``);
only then it POSTs, once: a lost answer is :class:`Ambiguous` and ``find`` settles it.
``push_many`` does the same in bulk: one lookup per entity set for all keys, then ``$batch`` with
one changeset per movement (each its own transaction); the Service Layer stops at the first
failing changeset, so the changesets after it (not executed) are sent again in the next batch.

Master data (``upsert``). Items, Warehouses and BinLocations are written by code (a bin by its
``BinCode``, PATCHed by its ``AbsEntry``), lookup first: ``$filter=ItemCode eq 'A' or …`` (20
codes a request, ``$select`` of the compared properties only), then missing records are created
through ``$batch`` (one changeset each, ``Prefer: return-no-content``: the key is ours, the 201
body of an item would carry every warehouse row) and changed ones PATCHed with the changed
properties only. On v2 the PATCH carries ``If-Match`` with the lookup row's
``@odata.etag``. The vendor doc (§2.6, [D Q Q1]) says a ``$select`` read carries a *frozen*
``sha1("1")`` ETag, right only for a record never changed since it was created; for any other the
first PATCH meets 412 -2039, and we then GET the record by key (no ``$select``: its real ETag),
compare again and PATCH once more — two extra calls for such a record, none for the rest. A second
412 is :class:`Transient`. ``$batch`` does not check ETags, so updates are not batched.

Transports. The connector needs from its client only ``query_page``/``query`` (collections),
``create`` (one document), ``batch`` (many), ``server_version`` and ``close``; the mapping works on
plain dicts of SAP field names. A DI Server transport (SOAP via zeep) can implement the same
methods over ``AddObject``/``UpdateObject``/``ExecuteSQL`` and reuse :mod:`connectors.sap_b1.mapping` unchanged:
``transport = "di_server"`` selects :class:`connectors.sap_b1.di_server.DiServerClient` (``url`` is the
DI Server's SOAP root; ``push_many`` then sends one ``AddObject`` per movement).
"""
from __future__ import annotations

import base64
import copy
import json
import logging
import re
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from typing import Any, Literal
from zoneinfo import ZoneInfo

from pydantic import Field, SecretStr, field_validator, model_validator

from canonical import Item, Location, Movement, MovementKind, RecordInvalid, StockBalance, Warehouse
from connectors.base import Capabilities, CheckResult, ConnectionSettings, Connector, Entity, Page, Receipt, \
    RecordError, TimeZoneName
from connectors.errors import Action, Ambiguous, AuthError, ConfigError, ConnectorError, ContractViolation, DependencyMissing, \
    Rejected, Transient
from connectors.registry import register
from connectors.sap_b1 import mapping as m
from connectors.sap_b1.client import CONFLICT_CODE, BatchOp, BatchResult, ServiceLayerClient
from connectors.sap_b1.odata import FIELD_RE, Expr, FilterBuilder, and_

log = logging.getLogger(__name__)

__all__ = ["SapB1Connector", "SapB1Settings"]

MAX_PAGE_SIZE = 1000  # no documented maximum (vendors/sap_b1.md §2.5); clients use 100-2500
LOOKUP_CHUNK = 20  # keys per "or" filter when looking up many keys at once
_LIVE = ("tNO", "N", None)


class SapB1Settings(ConnectionSettings):
    """Connection settings for SAP Business One (``[connections.<name>]`` with platform ``sap_b1``)."""

    platform: str = "sap_b1"
    company_db: str = Field(min_length=1, description="CompanyDB sent at Login")
    username: str = Field(min_length=1, description="B1 user name (DOMAIN\\\\user for domain users)")
    password: SecretStr = Field(description="B1 password; a { env = \"NAME\" } or { file = \"PATH\" } reference")
    odata_version: Literal["v1", "v2"] = Field("v2", description="/b1s/v1 (OData v3) or /b1s/v2 (OData v4)")
    transport: Literal["service_layer", "di_server"] = "service_layer"
    timezone: TimeZoneName = Field("UTC", description="The company's time zone: UpdateDate/UpdateTime are local to it")
    reference_field: str = Field("Reference2", description="Header field that holds our idempotency key")
    reference_max_length: int | None = Field(
        None, ge=1, description="Longest key the reference field holds; default 11 for Reference2, else unchecked")
    movement_reference_field: str | None = Field(
        "Reference1", description="Header field for the movement's own reference (a UDF where Ref1 is system-filled)")
    kind_marker_field: str = Field("JournalMemo", description="Header field telling count gain/loss, scrap and "
                                                              "misc documents apart")
    series: dict[str, int] = Field(default_factory=dict, description="Series per entity set, e.g. "
                                                                     "{InventoryGenEntries = 21}")
    warehouse_map: dict[str, str] = Field(default_factory=dict, description="our warehouse code -> SAP WarehouseCode")
    unit_map: dict[str, str] = Field(default_factory=dict, description="SAP UoM code -> our unit code")
    default_unit: str = Field("PCS", description="Unit of items without an InventoryUOM")
    spec_field: str | None = Field(None, description="Items property holding the specification, e.g. User_Text")
    send_prices: bool = Field(True, description="Send unit_cost as UnitPrice on inbound documents")
    include_zero_balances: bool = False
    batch_size: int = Field(50, ge=1, le=500, description="Movements (or master records) per $batch request")
    # DI Server transport only (transport = "di_server")
    di_wsdl: str | None = Field(None, description="WSDL to load: a local file or URL; default the vendored copy")
    di_database_server: str = Field("", description="DI Login DatabaseServer (SQL/HANA host as the DI Server sees it)")
    di_database_type: str = Field("dst_MSSQL2016", description="DI Login DatabaseType, e.g. dst_HANADB")
    di_language: str = Field("ln_English", description="DI Login Language")
    di_license_server: str = Field("", description="DI Login LicenseServer (host:port)")

    @field_validator("reference_field", "kind_marker_field", "movement_reference_field", "spec_field")
    @classmethod
    def _field_name(cls, value: str | None) -> str | None:
        if value is not None and not FIELD_RE.match(value):
            raise ValueError(f"{value!r} is not a Service Layer property name")
        return value

    @field_validator("series")
    @classmethod
    def _series(cls, value: dict[str, int]) -> dict[str, int]:
        unknown = sorted(set(value) - set(m.DOCUMENT_ENTITIES))
        if unknown:
            raise ValueError(f"unknown entity set {unknown[0]!r} (known: {', '.join(m.DOCUMENT_ENTITIES)})")
        return value

    @model_validator(mode="after")
    def _distinct_fields(self) -> SapB1Settings:
        used = [f for f in (self.reference_field, self.kind_marker_field, self.movement_reference_field) if f]
        if len(used) != len(set(used)):
            raise ValueError("reference_field, kind_marker_field and movement_reference_field must differ")
        return self

    @property
    def key_max_length(self) -> int | None:
        if self.reference_max_length is not None:
            return self.reference_max_length
        return 11 if self.reference_field == "Reference2" else None


# ---------------------------------------------------------------------------------------------
# What each entity reads


@dataclass(frozen=True)
class _Source:
    entity_set: str
    key: str
    select: tuple[str, ...] | None
    incremental: bool
    base_filter: Callable[[FilterBuilder], Expr | None] = lambda f: None


_STAMPS = ("UpdateDate", "UpdateTime")
_ITEM_SELECT = ("ItemCode", "ItemName", "ForeignName", "ItemsGroupCode", "BarCode", "InventoryUOM",
                "ManageBatchNumbers", "ManageSerialNumbers", "Valid", "Frozen", "AvgStdPrice", *_STAMPS)
_SOURCES: dict[Entity, tuple[_Source, ...]] = {
    Entity.ITEMS: (_Source("Items", "ItemCode", _ITEM_SELECT, True),),
    Entity.WAREHOUSES: (_Source("Warehouses", "WarehouseCode", None, False),),
    Entity.LOCATIONS: (_Source("BinLocations", "AbsEntry", None, False),),
    Entity.PARTNERS: (_Source("BusinessPartners", "CardCode", ("CardCode", "CardName", "CardType", *_STAMPS), True,
                              lambda f: f.ne("CardType", "cLid")),),
    Entity.MOVEMENTS: tuple(_Source(name, "DocEntry", None, True) for name in m.DOCUMENT_ENTITIES),
}
_FILTER_FIELDS = ("UpdateDate", "CardType", "ItemCode", "DocEntry")
_BALANCE_SOURCE = _Source("Items", "ItemCode", ("ItemCode", "InventoryUOM", "ItemWarehouseInfoCollection"), False)


@dataclass(frozen=True)
class _Writer:
    """How ``upsert`` writes one entity: its entity set, key property, the label of its records in
    errors (``Item 'TS-001'``), the table SAP names in ``[OITM.ItemName]``, and the mapping."""

    entity_set: str
    key: str
    label: str
    model: type
    table: str
    fields: Callable[[m.MappingConfig], tuple[str, ...]]
    code: Callable[[Any, m.MappingConfig], str]
    body: Callable[[Any, m.MappingConfig], dict[str, Any]]
    changes: Callable[[Any, Mapping[str, Any], m.MappingConfig], dict[str, Any]]
    # the key property of the record's URL when the code is not it (a bin: AbsEntry, looked up by BinCode)
    path_key: str | None = None
    # why an existing record with the code cannot be this one (a bin code in another warehouse)
    clash: Callable[[Any, Mapping[str, Any], m.MappingConfig], m.MappingError | None] | None = None


_WRITERS: dict[Entity, _Writer] = {
    Entity.ITEMS: _Writer("Items", "ItemCode", "Item", Item, "OITM", m.item_compared_fields,
                          lambda item, cfg: item.sku, m.item_to_sap, m.item_changes),
    Entity.WAREHOUSES: _Writer("Warehouses", "WarehouseCode", "Warehouse", Warehouse, "OWHS",
                               lambda cfg: m.WAREHOUSE_COMPARED_FIELDS,
                               lambda wh, cfg: cfg.sap_warehouse(wh.code), m.warehouse_to_sap, m.warehouse_changes),
    Entity.LOCATIONS: _Writer("BinLocations", "BinCode", "Bin location", Location, "OBIN",
                              lambda cfg: m.BIN_COMPARED_FIELDS, lambda loc, cfg: loc.code, m.location_to_sap,
                              m.location_changes, path_key="AbsEntry", clash=m.location_clash),
}
_WHERE = re.compile(r"\[(?P<field>[A-Za-z_]\w*\.[A-Za-z_]\w*)\]|\bin property ['`](?P<property>[A-Za-z_]\w*)['`]")


@dataclass
class _Write:
    """One record of an ``upsert`` call on its way: where its result goes, its SAP code, what to send."""

    index: int
    record: Any
    code: str
    body: dict[str, Any]
    etag: str | None = None
    path: str | int | None = None  # the record's URL key when it is not ``code`` (a bin's AbsEntry)


@dataclass(frozen=True)
class _Position:
    """Where a read stands: entity set index, server ``$skip`` and offset inside that page."""

    index: int = 0
    skip: int = 0
    offset: int = 0


def _encode(payload: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(payload, separators=(",", ":"), sort_keys=True).encode()).decode()


def _decode(token: str) -> dict[str, Any]:
    try:
        payload = json.loads(base64.urlsafe_b64decode(token.encode()))
    except (ValueError, TypeError):
        raise ValueError("not a resume token of the sap_b1 connector") from None
    if not isinstance(payload, dict) or payload.get("v") != 1:
        raise ValueError("not a resume token of the sap_b1 connector")
    return payload


# ---------------------------------------------------------------------------------------------


@register
class SapB1Connector(Connector):
    platform = "sap_b1"
    Settings = SapB1Settings

    def __init__(self, settings: ConnectionSettings, *, name: str | None = None,
                 client: ServiceLayerClient | None = None) -> None:
        if not isinstance(settings, SapB1Settings):
            settings = SapB1Settings.model_validate(settings.model_dump())
        super().__init__(settings, name=name)
        self.settings: SapB1Settings = settings
        if client is None and settings.transport == "di_server":
            from connectors.sap_b1.di_server import DiServerClient

            client = DiServerClient(  # type: ignore[assignment]
                settings.url, company_db=settings.company_db, username=settings.username,
                password=settings.password.get_secret_value(), connect_timeout=settings.connect_timeout,
                read_timeout=settings.read_timeout, verify=settings.verify_tls, name=self.name,
                wsdl=settings.di_wsdl, database_server=settings.di_database_server,
                database_type=settings.di_database_type, language=settings.di_language,
                license_server=settings.di_license_server)
        self.client = client or ServiceLayerClient(
            settings.url, company_db=settings.company_db, username=settings.username,
            password=settings.password.get_secret_value(), version=settings.odata_version,
            connect_timeout=settings.connect_timeout, read_timeout=settings.read_timeout,
            verify=settings.verify_tls, name=self.name)
        self.mapping = m.MappingConfig(
            timezone=ZoneInfo(settings.timezone), reference_field=settings.reference_field,
            movement_reference_field=settings.movement_reference_field,
            kind_marker_field=settings.kind_marker_field, warehouse_map=dict(settings.warehouse_map),
            unit_map=dict(settings.unit_map), default_unit=settings.default_unit, series=dict(settings.series),
            spec_field=settings.spec_field,
            send_prices=settings.send_prices, include_zero_balances=settings.include_zero_balances)
        self.filters = FilterBuilder({*_FILTER_FIELDS, settings.reference_field})
        self._key_filters = FilterBuilder({w.key for w in _WRITERS.values()})
        self._lock = threading.Lock()
        self._item_units: dict[str, str] = {}
        self._bins: dict[tuple[str, str], int] | None = None
        self._bin_names: dict[int, str] = {}
        self._key_hints: dict[str, str] = {}  # key -> entity set it was pushed to (saves find() calls)

    # -- contract: capabilities, check -------------------------------------------------------

    @property
    def capabilities(self) -> Capabilities:
        return Capabilities(
            entities=frozenset(_SOURCES),
            movement_kinds=frozenset(k.value for k in MovementKind),
            incremental=frozenset({Entity.ITEMS, Entity.PARTNERS, Entity.MOVEMENTS}),
            writable=frozenset(_WRITERS),
            balances=True,
            max_page_size=MAX_PAGE_SIZE,
            max_batch=self.settings.batch_size,
            rate_limit_per_second=self.settings.rate_limit_per_second,
            posting_calls=1,
            notes=(
                f"{self._transport_name()}; idempotency key in {self.settings.reference_field}",
                "incremental on UpdateDate (server) + UpdateTime (client); StockTransfers by date only",
                "warehouses and bin locations have no modification stamp: full read, content-hash change detection",
                "push_many uses $batch, one changeset per movement" if self.settings.transport == "service_layer"
                else "push_many sends one AddObject per movement (the DI Server has no batch call)",
                "upsert writes Items, Warehouses and BinLocations (by BinCode) by code: one $select lookup per 20 "
                "codes, then new records "
                "through $batch (one changeset each) and changed ones by PATCH"
                + (" with If-Match (ETag from the lookup, re-read once on 412)" if self._etags else "")
                if self.settings.transport == "service_layer"
                else "upsert writes Items, Warehouses and BinLocations (by BinCode) by code: one ExecuteSQL lookup "
                     "per 20 codes, then "
                     "AddObject per new record and UpdateObject per changed one (no ETags on the DI Server)",
            ),
        )

    def check(self) -> CheckResult:
        self.client.query_page("Warehouses", select=["WarehouseCode"], top=1)
        return CheckResult(True, f"logged in to {self.settings.company_db} as {self.settings.username} on "
                                 f"the {self._transport_name()}; read Warehouses",
                           server_version=self.client.server_version)

    @property
    def _etags(self) -> bool:
        """Optimistic concurrency on PATCH: the Service Layer's v2 dialect only (vendors/sap_b1.md §2.6)."""
        return self.settings.transport == "service_layer" and self.settings.odata_version == "v2"

    def _transport_name(self) -> str:
        if self.settings.transport == "di_server":
            return "DI Server (SOAP)"
        return f"Service Layer /b1s/{self.settings.odata_version}"

    def close(self) -> None:
        self.client.close()

    # -- contract: reads ---------------------------------------------------------------------

    def read(self, entity: Entity, *, since: datetime | None = None, resume: str | None = None,
             page_size: int | None = None) -> Iterator[Page[Any]]:
        try:
            entity = Entity(entity)
        except ValueError:
            raise ConfigError(f"{self.name}: cannot read {entity!r}") from None
        sources = self._sources(entity)
        position = _Position()
        if resume is not None:  # self-contained: the token's since and page size win
            token = _decode(resume)
            if token.get("e") != entity.value:
                raise ValueError(f"resume token belongs to {token.get('e')!r}, not {entity.value!r}")
            since = datetime.fromisoformat(token["since"]) if token.get("since") else None
            page_size = int(token["n"])
            position = _Position(int(token["i"]), int(token["skip"]), int(token["off"]))
        if since is not None and (since.tzinfo is None or since.utcoffset() is None):
            raise ValueError("since must be timezone-aware")
        size = self._size(page_size)

        def token_for(pos: _Position) -> str:
            return _encode({"v": 1, "e": entity.value, "since": since.isoformat() if since else None, "n": size,
                            "i": pos.index, "skip": pos.skip, "off": pos.offset})

        def convert(source: _Source, rows: Sequence[dict[str, Any]]) -> list[tuple[Any, datetime | None]]:
            return self._convert(entity, source, rows, since)

        yield from self._paged(sources, position, size, since, convert, token_for)

    def read_balances(self, *, warehouse: str | None = None, resume: str | None = None,
                      page_size: int | None = None) -> Iterator[Page[StockBalance]]:
        position = _Position()
        if resume is not None:
            token = _decode(resume)
            if token.get("e") != "balances":
                raise ValueError("resume token belongs to another read")
            warehouse, page_size = token.get("wh"), int(token["n"])
            position = _Position(0, int(token["skip"]), int(token["off"]))
        size = self._size(page_size)
        # One snapshot time for the whole read, resumed pages included.
        as_of = datetime.fromisoformat(token["asof"]) if resume is not None else datetime.now(timezone.utc).replace(
            microsecond=0)

        def token_for(pos: _Position) -> str:
            return _encode({"v": 1, "e": "balances", "wh": warehouse, "n": size, "asof": as_of.isoformat(),
                            "skip": pos.skip, "off": pos.offset})

        def convert(source: _Source, rows: Sequence[dict[str, Any]]) -> list[tuple[Any, datetime | None]]:
            out: list[tuple[Any, datetime | None]] = []
            for row in rows:
                try:
                    out.extend((b, None) for b in m.item_to_balances(row, self.mapping, as_of=as_of,
                                                                     warehouse=warehouse))
                except (m.MappingError, RecordInvalid) as exc:
                    out.append((self._record_error("balances", row.get("ItemCode"), exc, row), None))
            return out

        yield from self._paged((_BALANCE_SOURCE,), position, size, None, convert, token_for)

    def _size(self, page_size: int | None) -> int:
        size = page_size or self.settings.page_size
        if size < 1:
            raise ValueError("page_size must be at least 1")
        return min(size, MAX_PAGE_SIZE)

    def _paged(self, sources: Sequence[_Source], position: _Position, size: int, since: datetime | None,
               convert: Callable[[_Source, Sequence[dict[str, Any]]], list[tuple[Any, datetime | None]]],
               token_for: Callable[[_Position], str]) -> Iterator[Page[Any]]:
        """Pages of at most ``size`` entries over the entity sets from ``position`` on."""
        yielded = False
        index, skip, offset = position.index, position.skip, position.offset
        while index < len(sources):
            source = sources[index]
            server = self.client.query_page(source.entity_set, filter=self._filter(source, since),
                                            select=source.select, orderby=f"{source.key} asc", skip=skip,
                                            page_size=size)
            entries = convert(source, server.rows)
            if offset > len(entries):
                raise ValueError("resume token points past the end of its page (the data changed); read again")
            if server.next_link is not None and server.next_skip is None:
                raise ContractViolation(f"{self.name}: nextLink of {source.entity_set} has no $skip: "
                                        "cannot resume from it")
            if server.next_skip is not None and server.next_skip <= skip:
                raise ContractViolation(f"{self.name}: nextLink of {source.entity_set} does not move forward")
            while True:
                chunk = entries[offset: offset + size]
                offset += len(chunk)
                if offset < len(entries):
                    after: _Position | None = _Position(index, skip, offset)
                elif server.next_skip is not None:
                    after = _Position(index, server.next_skip, 0)
                elif index + 1 < len(sources):
                    after = _Position(index + 1, 0, 0)
                else:
                    after = None
                if chunk or after is None:
                    yield self._page(chunk, after, token_for)
                    yielded = True
                if after is None:
                    return
                if after.index != index or after.skip != skip:
                    break
            index, skip, offset = after.index, after.skip, after.offset
        if not yielded:
            yield Page(())

    def _page(self, chunk: list[tuple[Any, datetime | None]], after: _Position | None,
              token_for: Callable[[_Position], str]) -> Page[Any]:
        records = tuple(e for e, _ in chunk if not isinstance(e, RecordError))
        errors = tuple(e for e, _ in chunk if isinstance(e, RecordError))
        stamps = [s for e, s in chunk if s is not None and not isinstance(e, RecordError)]
        return Page(records, resume=token_for(after) if after is not None else None,
                    max_modified=max(stamps) if stamps else None, errors=errors)

    def _filter(self, source: _Source, since: datetime | None) -> str | None:
        parts = [p for p in (source.base_filter(self.filters),) if p is not None]
        if since is not None and source.incremental:
            local_day = since.astimezone(self.mapping.timezone).date()
            parts.append(self.filters.ge("UpdateDate", local_day))
        return str(and_(*parts)) if parts else None

    def _convert(self, entity: Entity, source: _Source, rows: Sequence[dict[str, Any]],
                 since: datetime | None) -> list[tuple[Any, datetime | None]]:
        if entity is Entity.MOVEMENTS:
            self._learn_units(rows, source.entity_set)
            if any(_has_bins(r) for r in rows):
                self._load_bins()
        out: list[tuple[Any, datetime | None]] = []
        for row in rows:
            try:
                stamp = m.stamp_of(row, self.mapping)
                if since is not None and source.incremental and not _changed_since(stamp, since, self.mapping):
                    continue
                if entity is Entity.MOVEMENTS and not _live(row):
                    continue
                record = self._map(entity, source, row)
            except (m.MappingError, RecordInvalid) as exc:
                key = row.get(source.key)
                out.append((self._record_error(entity.value, key, exc, row), None))
                continue
            out.append((record, getattr(record, "modified_at", None)))
        return out

    def _sources(self, entity: Entity) -> tuple[_Source, ...]:
        sources = _SOURCES[entity]
        if entity is Entity.ITEMS and self.settings.spec_field and sources[0].select is not None:
            return (replace(sources[0], select=(*sources[0].select, self.settings.spec_field)),)
        return sources

    def _map(self, entity: Entity, source: _Source, row: Mapping[str, Any]) -> Any:
        cfg = self.mapping
        if entity is Entity.ITEMS:
            return m.item_to_item(row, cfg)
        if entity is Entity.WAREHOUSES:
            return m.warehouse_to_warehouse(row, cfg)
        if entity is Entity.LOCATIONS:
            return m.bin_to_location(row, cfg)
        if entity is Entity.PARTNERS:
            return m.partner_to_partner(row, cfg)
        return m.document_to_movement(source.entity_set, row, cfg, item_units=self._item_units.get,
                                      bin_names=self._bin_names.get)

    def _record_error(self, entity: str, key: object, exc: Exception, row: Mapping[str, Any]) -> RecordError:
        field = getattr(exc, "field", None)
        if isinstance(exc, RecordInvalid) and exc.problems:
            field = exc.problems[0].field or None
        return RecordError(entity=entity, record_key=str(key) if key is not None else "?", message=str(exc),
                           field=field, raw=dict(row))

    def _learn_units(self, rows: Sequence[Mapping[str, Any]], entity_set: str) -> None:
        """Item units for the document lines on a page (lines say ``UoMCode: Manual`` without UoM
        groups): one Items lookup per 20 unknown item codes, cached for the connector's life."""
        lines_field = "StockTransferLines" if entity_set == "StockTransfers" else "DocumentLines"
        wanted = sorted({str(line.get("ItemCode")) for row in rows for line in (row.get(lines_field) or ())
                         if isinstance(line, Mapping) and line.get("ItemCode")} - set(self._item_units))
        for start in range(0, len(wanted), LOOKUP_CHUNK):
            chunk = wanted[start: start + LOOKUP_CHUNK]
            for page in self.client.query("Items", filter=str(self.filters.any_of("ItemCode", chunk)),
                                          select=("ItemCode", "InventoryUOM"), page_size=LOOKUP_CHUNK):
                for row in page.rows:
                    self._item_units[str(row.get("ItemCode"))] = m.item_unit(row, self.mapping)

    def _load_bins(self) -> dict[tuple[str, str], int]:
        with self._lock:
            if self._bins is not None:
                return self._bins
        bins: dict[tuple[str, str], int] = {}
        names: dict[int, str] = {}
        for page in self.client.query("BinLocations", select=("AbsEntry", "BinCode", "Warehouse"),
                                      orderby="AbsEntry asc", page_size=MAX_PAGE_SIZE):
            for row in page.rows:
                if row.get("AbsEntry") is None or not row.get("BinCode"):
                    continue
                bins[(str(row.get("Warehouse")), str(row["BinCode"]))] = int(row["AbsEntry"])
                names[int(row["AbsEntry"])] = str(row["BinCode"])
        with self._lock:
            self._bins, self._bin_names = bins, names
        return bins

    # -- contract: writes --------------------------------------------------------------------

    def _document(self, movement: Movement, key: str) -> tuple[str, dict[str, Any]]:
        self._check_key(key)
        needs_bins = any(line.from_bin or line.to_bin for line in movement.lines)
        bins = self._load_bins() if needs_bins else {}
        try:
            return m.movement_to_document(movement, key, self.mapping,
                                          bins=lambda wh, code: bins.get((wh, code)))
        except m.MappingError as exc:
            error_cls = DependencyMissing if exc.dependency else Rejected
            raise error_cls(f"{movement.label}: {exc}", record=movement.reference) from None

    def _check_key(self, key: str) -> None:
        if not isinstance(key, str) or not key.strip() or key != key.strip():
            raise ValueError(f"idempotency key must be a non-blank string without surrounding spaces: {key!r}")
        limit = self.settings.key_max_length
        if limit is not None and len(key) > limit:
            raise ConfigError(f"{self.name}: key {key!r} is {len(key)} characters but {self.settings.reference_field} "
                              f"holds {limit}; configure a user field (e.g. U_HubKey) as reference_field")

    def push(self, movement: Movement, key: str) -> Receipt:
        entity, body = self._document(movement, key)
        existing = self._find_in(entity, [key]).get(key)
        if existing is not None:
            return existing
        created = self.client.create(entity, body)
        self._key_hints[key] = entity
        if not created.get("DocEntry"):
            found = self._find_in(entity, [key]).get(key)
            if found is None:
                raise Ambiguous(f"{self.name}: {entity} answered without the created document and none carries key "
                                f"{key!r} yet; check again before sending", record=movement.reference)
            return Receipt(key, found.document_id, found.document_number, True, found.status)
        return _receipt(key, created, created=True)

    def find(self, key: str) -> Receipt | None:
        self._check_key(key)
        hinted = self._key_hints.get(key)
        order = ([hinted] if hinted else []) + [e for e in m.DOCUMENT_ENTITIES if e != hinted]
        for entity in order:
            found = self._find_in(entity, [key]).get(key)
            if found is not None:
                return found
        return None

    def _find_in(self, entity: str, keys: Sequence[str]) -> dict[str, Receipt]:
        """Live documents of ``entity`` carrying any of ``keys``, the first (lowest DocEntry) per key."""
        field = self.settings.reference_field
        found: dict[str, Receipt] = {}
        for start in range(0, len(keys), LOOKUP_CHUNK):
            chunk = list(keys[start: start + LOOKUP_CHUNK])
            expr = self.filters.any_of(field, chunk)
            select = ["DocEntry", "DocNum", "DocumentStatus", "Cancelled", field]
            if entity != "StockTransfers":  # marketing and inventory documents; transfers have no CancelStatus
                select.insert(4, "CancelStatus")
            for page in self.client.query(entity, filter=str(expr), orderby="DocEntry asc", page_size=LOOKUP_CHUNK,
                                          select=select):
                for row in page.rows:
                    key = row.get(field)
                    if key in chunk and key not in found and _live(row):
                        found[key] = _receipt(key, row, created=False)
        return found

    def push_many(self, batch: Sequence[tuple[Movement, str]]) -> list[Receipt | ConnectorError]:
        """All movements through ``$batch``: one result per input, in order (see module doc)."""
        results: list[Receipt | ConnectorError | None] = [None] * len(batch)
        pending: list[tuple[int, str, str, dict[str, Any]]] = []  # (index, key, entity, body)
        for index, (movement, key) in enumerate(batch):
            try:
                entity, body = self._document(movement, key)
            except ConnectorError as exc:
                results[index] = exc
                continue
            pending.append((index, key, entity, body))
        # Already there? One lookup per entity set for all its keys.
        by_entity: dict[str, list[str]] = {}
        for _, key, entity, _ in pending:
            by_entity.setdefault(entity, []).append(key)
        existing: dict[tuple[str, str], Receipt] = {}
        try:
            for entity, keys in by_entity.items():
                for key, receipt in self._find_in(entity, keys).items():
                    existing[(entity, key)] = receipt
        except ConnectorError as exc:
            for index, *_ in pending:
                results[index] = exc
            return results  # type: ignore[return-value]
        seen: dict[tuple[str, str], int] = {}
        to_send: list[tuple[int, str, str, dict[str, Any]]] = []
        for index, key, entity, body in pending:
            if (entity, key) in existing:
                results[index] = existing[(entity, key)]
            elif (entity, key) in seen:  # the same key twice in one call: create once
                results[index] = Rejected(f"key {key!r} appears twice in one push_many call", vendor_code=None)
            else:
                seen[(entity, key)] = index
                to_send.append((index, key, entity, body))
        while to_send:
            chunk, to_send = to_send[: self.settings.batch_size], to_send[self.settings.batch_size:]
            try:
                outcomes = self.client.batch([BatchOp(entity, body) for _, _, entity, body in chunk])
            except ConnectorError as exc:
                for index, *_ in chunk + to_send:
                    results[index] = exc
                break
            retry: list[tuple[int, str, str, dict[str, Any]]] = []
            for (index, key, entity, _body), outcome in zip(chunk, outcomes, strict=True):
                self._key_hints[key] = entity
                results[index] = self._batch_result(key, entity, outcome)
                if outcome.status == "not_executed":
                    retry.append((index, key, entity, _body))
            if len(retry) == len(chunk):  # nothing moved forward: do not loop
                for index, *_ in retry:
                    results[index] = ContractViolation(f"{self.name}: $batch executed nothing and reported no error")
                retry = []
            to_send = retry + to_send
        return [r if r is not None else ContractViolation("no result") for r in results]

    def _batch_result(self, key: str, entity: str, outcome: BatchResult) -> Receipt | ConnectorError:
        if outcome.status == "created":
            if outcome.entity and outcome.entity.get("DocEntry"):
                return _receipt(key, outcome.entity, created=True)
            return Ambiguous(f"{self.name}: {entity} was created for key {key!r} but the answer did not say which "
                             "document; find() will tell")
        if outcome.error is not None:
            return outcome.error
        return Ambiguous(f"{self.name}: {entity} for key {key!r}: outcome {outcome.status}")

    # -- contract: master data ---------------------------------------------------------------

    def upsert(self, entity: Entity, records: Sequence[Any]) -> list[Receipt | ConnectorError]:
        """Create or update Items / Warehouses / BinLocations by code; one result per record, in order.

        Bin locations (:class:`canonical.Location`) are looked up by ``BinCode`` (unique in the
        company: the same code in another warehouse is refused, field ``OBIN.BinCode``), created
        with ``Warehouse`` (through the warehouse map), ``BinCode``, ``Description`` and ``Inactive``
        (SAP refuses a bin in a warehouse without ``EnableBinLocations``), and PATCHed by their
        ``AbsEntry`` (description, inactive). Creating bins forgets the connector's cache of bin
        codes, so the documents pushed next resolve them.

        1. Look every code up first (``$filter=ItemCode eq 'A' or …``, 20 codes a request, ``$select``
           only the compared properties); a failure here raises: nothing has been written.
        2. Compare only what the mapping writes (:func:`mapping.item_changes`): equal → a receipt with
           ``created=False`` and no write.
        3. Missing → created: ``$batch`` of ``max_batch`` changesets, one per record, so a refused
           record rolls back only itself (over the DI Server: one ``AddObject`` each). The Service
           Layer stops at the first failing changeset; the ones after it were not executed and go
           out again in the next ``$batch``.
        4. Different → ``PATCH`` with only the changed properties (v2: ``If-Match`` with the lookup's
           ETag; a 412 -2039 re-reads the record once, compares again and PATCHes with the fresh
           ETag; a second 412 is :class:`Transient`). DI Server: ``UpdateObject``.

        Refusals are :class:`Rejected` naming the record (``Item 'TS-001'``) and, where SAP says it,
        the field (``details["field"]``, e.g. ``OITM.ItemName``). A lost ``$batch`` answer is
        :class:`Ambiguous` for its records: running the same upsert again is safe, it looks first.
        A failure of the connection itself (session, configuration, network) stops the writing: the
        records not sent yet get a :class:`Transient` "not sent" (or the same Auth/Config error).
        """
        try:
            entity = Entity(entity)
        except ValueError:
            raise ConfigError(f"{self.name}: cannot write {entity!r}") from None
        writer = _WRITERS.get(entity)
        if writer is None:
            raise ConfigError(f"{self.name}: writing {entity} is not supported by the sap_b1 connector")
        cfg = self.mapping
        results: list[Receipt | ConnectorError | None] = [None] * len(records)
        planned: list[_Write] = []
        seen: set[str] = set()
        for index, record in enumerate(records):
            if not isinstance(record, writer.model):
                results[index] = Rejected(f"{writer.label} upsert needs a {writer.model.__name__}, not "
                                          f"{type(record).__name__}")
                continue
            code = writer.code(record, cfg)
            if code in seen:
                results[index] = Rejected(f"{writer.label} '{code}' appears twice in one upsert call",
                                          record=str(record.natural_key))
                continue
            seen.add(code)
            try:
                body = writer.body(record, cfg)
            except (m.MappingError, ValueError) as exc:
                results[index] = Rejected(f"{writer.label} '{code}': {exc}", record=str(record.natural_key),
                                          details={"field": getattr(exc, "field", None)})
                continue
            planned.append(_Write(index, record, code, body))

        existing = self._lookup(writer, [w.code for w in planned])
        creates: list[_Write] = []
        updates: list[_Write] = []
        for write in planned:
            row = existing.get(write.code)
            if row is None:
                creates.append(write)
                continue
            clash = writer.clash(write.record, row, cfg) if writer.clash is not None else None
            if clash is not None:
                results[write.index] = Rejected(f"{writer.label} '{write.code}': {clash}",
                                                record=str(write.record.natural_key),
                                                details={"field": clash.field, "code": write.code})
                continue
            changes = writer.changes(write.record, row, cfg)
            if not changes:
                results[write.index] = self._upserted(writer, write, created=False, status="unchanged")
            else:
                etag = row.get("@odata.etag")
                updates.append(_Write(write.index, write.record, write.code, changes,
                                      etag if self._etags and isinstance(etag, str) else None,
                                      row.get(writer.path_key) if writer.path_key else None))

        stopped = self._create_all(writer, creates, results)
        if entity is Entity.LOCATIONS and any(isinstance(r, Receipt) and r.created for r in results):
            with self._lock:
                self._bins = None  # documents resolve bin codes to AbsEntry: read the new ones next time
        for write in updates:
            if stopped is not None:
                results[write.index] = self._not_sent(writer, write, stopped)
                continue
            outcome = self._update(writer, write)
            results[write.index] = outcome
            if isinstance(outcome, ConnectorError) and _stops(outcome):
                stopped = outcome
        return [r if r is not None else ContractViolation(f"{self.name}: no result") for r in results]

    def _lookup(self, writer: _Writer, codes: Sequence[str]) -> dict[str, dict[str, Any]]:
        """The SAP records of ``codes`` that exist, by code, with the compared properties (and the v2
        ``@odata.etag`` each row carries)."""
        found: dict[str, dict[str, Any]] = {}
        select = list(dict.fromkeys((writer.key, *writer.fields(self.mapping))))
        for start in range(0, len(codes), LOOKUP_CHUNK):
            chunk = list(codes[start: start + LOOKUP_CHUNK])
            expr = self._key_filters.any_of(writer.key, chunk)
            for page in self.client.query(writer.entity_set, filter=str(expr), select=select,
                                          page_size=LOOKUP_CHUNK):
                for row in page.rows:
                    code = row.get(writer.key)
                    if isinstance(code, str) and code in chunk:
                        found.setdefault(code, row)
        return found

    def _create_all(self, writer: _Writer, creates: list[_Write],
                    results: list[Receipt | ConnectorError | None]) -> ConnectorError | None:
        """Create ``creates`` in batches; results in place. Returns the error that stopped the writing."""
        size = self.settings.batch_size
        to_send = list(creates)
        while to_send:
            chunk, to_send = to_send[:size], to_send[size:]
            try:
                outcomes = self.client.batch([BatchOp(writer.entity_set, w.body, no_content=True) for w in chunk])
            except ConnectorError as exc:
                for write in chunk:
                    results[write.index] = self._for_record(writer, write, exc)
                for write in to_send:
                    results[write.index] = self._not_sent(writer, write, exc)
                return exc
            retry: list[_Write] = []
            stopped: ConnectorError | None = None
            for write, outcome in zip(chunk, outcomes, strict=True):
                if outcome.status == "created":
                    results[write.index] = self._upserted(writer, write, created=True, status="created")
                elif outcome.status == "not_executed":
                    retry.append(write)
                else:
                    error = outcome.error or Ambiguous(f"{self.name}: no answer for the created record")
                    results[write.index] = self._for_record(writer, write, error)
                    if _stops(error):
                        stopped = stopped or error
            if stopped is not None:
                for write in retry + to_send:
                    results[write.index] = self._not_sent(writer, write, stopped)
                return stopped
            if retry and len(retry) == len(chunk):  # nothing moved forward: do not loop
                for write in retry:
                    results[write.index] = ContractViolation(
                        f"{self.name}: {writer.label} '{write.code}': $batch executed nothing and reported no error",
                        record=str(write.record.natural_key))
                retry = []
            to_send = retry + to_send
        return None

    def _update(self, writer: _Writer, write: _Write) -> Receipt | ConnectorError:
        """PATCH (or UpdateObject) the changed fields; on a 412 re-read once and try again."""
        body, etag = write.body, write.etag
        key: Any = write.code if write.path is None else write.path
        for attempt in (1, 2):
            try:
                self.client.update(writer.entity_set, key, body, etag=etag)
                return self._upserted(writer, write, created=False, status="updated")
            except ConnectorError as exc:
                conflict = exc.vendor_code == CONFLICT_CODE or exc.details.get("status") == 412
                if not conflict:
                    return self._for_record(writer, write, exc)
                if attempt == 2:
                    return Transient(f"{writer.label} '{write.code}' was changed by someone else twice while we "
                                     "updated it (412 -2039); nothing was written, run the upsert again",
                                     vendor_code=exc.vendor_code, record=str(write.record.natural_key),
                                     details={"field": None, "code": write.code})
            try:
                row = self.client.get_entity(writer.entity_set, key)
            except ConnectorError as exc:
                return self._for_record(writer, write, exc)
            if row is None:
                return Transient(f"{writer.label} '{write.code}' was deleted while we updated it; run the upsert "
                                 "again to create it", record=str(write.record.natural_key))
            body = writer.changes(write.record, row, self.mapping)
            if not body:  # the other change made it what we wanted
                return self._upserted(writer, write, created=False, status="unchanged")
            fresh = row.get("@odata.etag")
            etag = fresh if isinstance(fresh, str) else None
        raise AssertionError("unreachable")

    def _upserted(self, writer: _Writer, write: _Write, *, created: bool, status: str) -> Receipt:
        return Receipt(key=str(write.record.natural_key), document_id=write.code, document_number=write.code,
                       created=created, status=status)

    def _for_record(self, writer: _Writer, write: _Write, exc: ConnectorError) -> ConnectorError:
        """``exc`` as this record's error: the record named first, SAP's field kept in ``details``."""
        if isinstance(exc, (AuthError, ConfigError)):
            return exc  # the connection's problem, not this record's: one error for every record
        field = exc.details.get("field")
        if not field:
            match = _WHERE.search(exc.message)
            if match:
                field = match.group("field") or f"{writer.table}.{match.group('property')}"
        where = f" ({field})" if field else ""
        message = f"{writer.label} '{write.code}'{where}: {exc.message}"
        if isinstance(exc, Ambiguous):
            message += "; running the same upsert again is safe (it looks the code up first)"
        named = copy.copy(exc)  # same class and extras (RateLimited.retry_after), this record's words
        ConnectorError.__init__(named, message, vendor_code=exc.vendor_code, record=str(write.record.natural_key),
                                details={**exc.details, "field": field, "code": write.code})
        return named

    def _not_sent(self, writer: _Writer, write: _Write, cause: ConnectorError) -> ConnectorError:
        if cause.action is Action.PAUSE:
            return cause
        return Transient(f"{writer.label} '{write.code}': not sent, an earlier write of the same upsert failed "
                         f"({cause.kind}); run the upsert again", record=str(write.record.natural_key),
                         details={"code": write.code})


def _receipt(key: str, row: Mapping[str, Any], *, created: bool) -> Receipt:
    entry = row.get("DocEntry")
    number = row.get("DocNum")
    if entry is None:
        raise ContractViolation(f"document for key {key!r} has no DocEntry")
    return Receipt(key=key, document_id=str(entry), document_number=str(number) if number is not None else None,
                   created=created, status=row.get("DocumentStatus"))


def _stops(error: ConnectorError) -> bool:
    """An error of the connection rather than of one record: no point sending the rest now."""
    return not isinstance(error, (Rejected, DependencyMissing, ContractViolation)) and not (
        isinstance(error, Transient) and error.vendor_code == CONFLICT_CODE)


def _live(row: Mapping[str, Any]) -> bool:
    """Neither cancelled nor a cancellation document (which copies the header of the one it cancels,
    reference fields included)."""
    return row.get("Cancelled") in _LIVE and row.get("CancelStatus") not in ("csCancellation", "csYes")


def _has_bins(row: Mapping[str, Any]) -> bool:
    for lines_field, alloc in (("DocumentLines", "DocumentLinesBinAllocations"),
                               ("StockTransferLines", "StockTransferLinesBinAllocations")):
        for line in row.get(lines_field) or ():
            if isinstance(line, Mapping) and line.get(alloc):
                return True
    return False


def _changed_since(stamp: m.Stamp, since: datetime, cfg: m.MappingConfig) -> bool:
    """Inclusive: the exact stamp when the record has a time, else its date against since's local date."""
    if stamp.at is None:
        return True  # no stamp at all: we cannot tell, so it is read
    if stamp.exact:
        return stamp.at >= since
    return stamp.at.date() >= since.astimezone(cfg.timezone).date()

