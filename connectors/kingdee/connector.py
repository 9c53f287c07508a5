"""``KingdeeConnector``: the K3Cloud WebAPI behind the connector contract (DESIGN.md §4).

Reads
    items (BD_MATERIAL), warehouses (BD_STOCK), partners (BD_Supplier, then BD_Customer), audited
    stock bills as canonical movements (one form after the other), and balances (STK_Inventory,
    summed per material/stock/location/lot). Master data is read for ``stock_org`` (FUseOrgId)
    only. Incremental reads filter ``FModifyDate >= since`` rendered in the server's zone; every
    query orders by ``FModifyDate ASC`` plus a unique tie-breaker, so StartRow paging is stable.

Resume tokens
    base64 JSON ``{"v":1,"e":entity,"p":phase,"s":StartRow,"w":since}``: the form being read
    (phase), the next row, and the watermark the token belongs to. Resuming with another
    A token is self-contained (the contract): ``read(entity, resume=token)`` takes its ``since``
    and page size (``n``) from it. A balance read keeps its snapshot time (``as_of``) in ``w``, so a
    resumed snapshot is stamped like the pages before it. Movements and balances are grouped across rows (a bill's entry lines,
    a balance's status/owner rows); a group cut by the page edge is held back and the token
    points at its first row, so no bill or balance is ever split between pages.

Push (idempotent on ``key``)
    The key is written to the configured key field (``FNote`` by default, or ``FBillNo`` or a
    custom head field). Before saving, the bills carrying the key are looked up: an audited one is
    returned as is (``created=False``); one that stopped after Save or Submit is resumed (Submit
    and/or Audit the existing bill) instead of saving a second. Otherwise Save → Submit → Audit,
    or one Save with ``IsAutoSubmitAndAudit``. A lost answer is ``Ambiguous`` and is never resent
    here: the engine calls ``find(key)``, which reports the bill and its status.

Upsert (items → BD_MATERIAL, warehouses → BD_STOCK), in batches of ``master_batch_size``
    ``capabilities.max_batch`` is that batch size: per batch at most one lookup (ExecuteBillQuery
    ``FNumber in (...)`` for ``stock_org``), one BatchSave of the new records (``Model`` array), one
    BatchSave of the changed ones, and one Submit and one Audit over all of them (plus UnAudit,
    CancelAssign, Forbid or Enable when some need it). Movements have no bulk call: ``push_many``
    still pushes them one by one. Base data has the bills' life cycle (kingdee.md §8) and only
    audited (C), enabled base data can be referenced by bills, so:

    * missing → BatchSave (A) → Submit (B) → Audit (C);
    * mapped fields differ → UnAudit (C → D; CancelAssign when found submitted) → BatchSave of
      ``{FMaterialId|FStockId, FNumber, changed fields}`` with ``NeedUpDateFields`` = the changed
      fields, so nothing else on the record is touched → Submit → Audit;
    * equal and audited → ``Receipt(created=False)``, nothing sent; found unaudited (an earlier
      run stopped half-way) → the rest of Submit → Audit;
    * ``active`` differs from FForbidStatus → ExcuteOperation ``Forbid`` / ``Enable`` after Audit.

    Every step is one call for the whole batch and its answer is read per record (``DIndex`` /
    ``Id`` / ``Number``): a record refused at any step gets ``Rejected`` naming it (``Item 'SKU'``)
    and the vendor's FieldName, and says in ``details["left"]`` where the record was left; the
    others go on. Writes are never resent blindly: a lost answer is ``Ambiguous`` for the records
    of that call, and a re-run is safe because it looks the codes up first. A BatchSave that
    answers neither success nor error for some models is settled by a lookup; the models found
    absent are sent once more.

Refused Audit (negative stock and other business rules)
    ``Rejected`` with the vendor's MsgCode (``"11"``). With ``delete_rejected_bills`` (default) the
    unaudited bill is withdrawn (CancelAssign) and deleted, so the key is free again and a retry
    after the stock is fixed saves a fresh bill from the (possibly corrected) movement. When the
    server will not delete it, the bill stays unaudited, the error's details name it, and a retry
    with the same key resumes it (Submit/Audit) once the stock is there.
"""
from __future__ import annotations

import base64
import binascii
import json
import logging
import time
import unicodedata
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from canonical import Item, Movement, MovementKind, StockBalance, Warehouse
from connectors.base import Capabilities, CheckResult, Connector, Entity, Page, Receipt, RecordError
from connectors.errors import Action, Ambiguous, ConfigError, ConnectorError, ContractViolation, RateLimited, \
    Rejected
from connectors.kingdee import mapping as m
from connectors.kingdee.client import BatchResult, Credentials, K3CloudClient
from connectors.kingdee.filters import Condition, FilterBuilder, FilterError, all_of, literal
from connectors.kingdee.settings import KingdeeSettings
from connectors.registry import register

log = logging.getLogger(__name__)

MAX_KEY_LENGTH = 80
_STATUS_RANK = {"C": 4, "B": 3, "A": 2, "D": 2, "Z": 1}


@dataclass(frozen=True)
class _Phase:
    """One form read by one ``read`` call."""

    form_id: str
    fields: list[str]
    order: str
    conditions: tuple[Condition | None, ...]
    mapper: Callable[[Any], Any] | None = None  # row dict -> record (master data)
    kind: MovementKind | None = None  # bills


@dataclass(frozen=True)
class _Bill:
    form_id: str
    id: str
    number: str
    status: str


@dataclass(frozen=True)
class _Master:
    """How one writable entity lives in K3Cloud."""

    form_id: str
    pk: str  # Save key of the internal id; also the first lookup field
    label: str  # "Item 'SKU'"
    kind: type
    lookup_fields: Callable[[m.MappingConfig], list[str]]
    to_model: Callable[[Any, m.MappingConfig], dict[str, Any]]
    changes: Callable[[Any, Mapping[str, Any], m.MappingConfig], list[str]]


_MASTERS: dict[Entity, _Master] = {
    Entity.ITEMS: _Master("BD_MATERIAL", m.MATERIAL_PK, "Item", Item, m.material_lookup_fields,
                          m.item_to_material, m.material_changes),
    Entity.WAREHOUSES: _Master("BD_STOCK", m.STOCK_PK, "Warehouse", Warehouse, m.stock_lookup_fields,
                               m.warehouse_to_stock, m.stock_changes),
}


@dataclass
class _Write:
    """One record of an upsert batch on its way through the life cycle."""

    position: int  # in the caller's list
    record: Any  # the canonical Item / Warehouse
    code: str
    label: str
    model: dict[str, Any]
    active: bool
    id: str | None = None  # internal id once K3Cloud has the record
    status: str | None = None  # its FDocumentStatus now
    forbidden: bool = False
    changes: list[str] = field(default_factory=list)
    created: bool = False
    result: ConnectorError | None = None

    def where(self) -> str:
        """Where the record was left, for an error's details."""
        if self.id is None:
            return "nothing was written for it"
        made = "created" if self.created else "found"
        if self.status == "C":
            return f"{made} as id {self.id} and audited"
        return (f"{made} as id {self.id}, left in status {self.status} (not audited, so bills cannot use it "
                "yet); a re-run looks it up and finishes its life cycle")


@register
class KingdeeConnector(Connector):
    platform = "kingdee"
    Settings = KingdeeSettings

    def __init__(self, settings: KingdeeSettings, *, name: str | None = None, client: K3CloudClient | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        if not isinstance(settings, KingdeeSettings):
            settings = KingdeeSettings.model_validate(settings.model_dump())
        super().__init__(settings, name=name)
        self.settings: KingdeeSettings = settings
        self.clock = clock
        bill_types = settings.bill_types.model_dump()
        scrap_type = bill_types.pop("scrap")
        self.cfg = m.MappingConfig(
            stock_org=settings.stock_org, purchase_org=settings.purchase_org or settings.stock_org,
            sale_org=settings.sale_org or settings.stock_org, zone=settings.zone, bill_types=bill_types,
            scrap_bill_type=scrap_type, key_field=settings.key_field, reference_field=settings.reference_field,
            scrap_marker=settings.scrap_marker, scrap_marker_field=settings.scrap_marker_field,
            barcode_field=settings.barcode_field, category_field=settings.category_field,
            units=dict(settings.units), material_attribute_fields=dict(settings.material_attribute_fields),
            head_fields=dict(settings.head_fields), source_system=self.name)
        secret = settings.app_secret.get_secret_value() if settings.app_secret else None
        password = settings.password.get_secret_value() if settings.password else None
        self.client = client or K3CloudClient(
            settings.url, Credentials(acct_id=settings.acct_id, username=settings.username, app_id=settings.app_id,
                                      app_secret=secret, password=password, lcid=settings.lcid,
                                      org_num=settings.sign_org_num, auth=settings.auth, login=settings.login_method),
            connect_timeout=settings.connect_timeout, read_timeout=settings.read_timeout,
            verify=settings.verify_tls, name=self.name, clock=clock)
        self.filters = FilterBuilder(
            ["FID", "FNumber", "FModifyDate", "FDocumentStatus", "FUseOrgId.FNumber", "FStockOrgId.FNumber", "FStockId.FNumber",
             "FBillNo", settings.key_field], zone=settings.zone)

    # -- contract -----------------------------------------------------------------------------

    @property
    def capabilities(self) -> Capabilities:
        return Capabilities(
            entities=frozenset({Entity.ITEMS, Entity.WAREHOUSES, Entity.PARTNERS, Entity.MOVEMENTS}),
            movement_kinds=frozenset(k.value for k in MovementKind),
            incremental=frozenset({Entity.ITEMS, Entity.WAREHOUSES, Entity.PARTNERS, Entity.MOVEMENTS}),
            balances=True,
            max_page_size=self.settings.max_page_size,
            # master records per upsert batch (one lookup, one BatchSave, one Submit, one Audit);
            # movements have no bulk call and push_many pushes them one by one
            max_batch=self.settings.master_batch_size,
            writable=frozenset(_MASTERS),
            rate_limit_per_second=self.settings.rate_limit_per_second,
            posting_calls=1 if self.settings.auto_submit_audit else 3,
            notes=(
                f"idempotency key in {self.settings.key_field}; find() by ExecuteBillQuery",
                f"upsert of items/warehouses in batches of {self.settings.master_batch_size} (max_batch): lookup, "
                "BatchSave, Submit, Audit; changed audited records are UnAudited, saved with NeedUpDateFields "
                "and audited again",
                "movements read: audited bills (FDocumentStatus C) of stock_org",
                "bin locations are written and read as FStockLocId numbers; no Location entity",
            ),
        )

    def check(self) -> CheckResult:
        self.client.execute_bill_query("BD_STOCK", ["FNumber"], limit=1)
        mode = "signature" if self.settings.auth == "signature" else f"session ({self.settings.login_method})"
        return CheckResult(ok=True, detail=f"K3Cloud data centre {self.settings.acct_id} as "
                                           f"{self.settings.username} ({mode} authentication)")

    def read(self, entity: Entity, *, since: datetime | None = None, resume: str | None = None,
             page_size: int | None = None) -> Iterator[Page[Any]]:
        entity = Entity(entity)
        phase, start, size = 0, 0, self._page_size(page_size)
        if resume:  # self-contained: the token's since and page size win over the arguments
            phase, start, since, size = self._decode(resume, entity.value)
        phases = self._phases(entity, since)
        return self._read_phases(entity, phases, since, phase, start, size)

    def read_balances(self, *, warehouse: str | None = None, resume: str | None = None,
                      page_size: int | None = None) -> Iterator[Page[StockBalance]]:
        size = self._page_size(page_size)
        conditions = [self.filters.eq("FStockOrgId.FNumber", self.settings.stock_org)]
        if warehouse is not None:
            conditions.append(self.filters.eq("FStockId.FNumber", warehouse))
        filter_string = all_of(conditions)
        scope = f"balances:{warehouse or ''}"
        start, as_of = 0, datetime.fromtimestamp(self.clock(), tz=timezone.utc).replace(microsecond=0)
        if resume:
            _, start, token_as_of, size = self._decode(resume, scope)
            as_of = token_as_of or as_of
        order = "FMaterialId.FNumber ASC, FStockId.FNumber ASC, FStockLocId.FNumber ASC, FLot.FNumber ASC, FID ASC"
        fields = m.BALANCE_FIELDS + ["FID"]
        return self._balance_pages(fields, filter_string, order, size, start, scope, as_of)

    def push(self, movement: Movement, key: str) -> Receipt:
        key = self._check_key(key)
        record = f"{movement.kind.value} {movement.reference}"
        try:
            form_id, model = m.movement_to_bill(movement, key, self.cfg)
        except (m.MappingError, KeyError) as exc:
            raise Rejected(f"cannot express the movement as a K3Cloud bill: {exc}", record=record) from None
        try:
            existing = self._bills_for_key(key, [form_id])
            if existing:
                bill = existing[0]
                log.info("[%s] key %s already has %s %s (status %s): resuming", self.name, key, form_id,
                         bill.number, bill.status)
                return self._finish(bill, key, created=False, record=record)
            saved = self.client.save(form_id, model, auto_submit_audit=self.settings.auto_submit_audit,
                                     options=self._save_options(), record=record)
            status = "C" if self.settings.auto_submit_audit else "A"
            bill = _Bill(form_id, saved.id, saved.number, status)
            return self._finish(bill, key, created=True, record=record)
        except Rejected as exc:
            raise _name_shortage(exc, m.BILL_SPECS[movement.kind]) from exc.__cause__

    def find(self, key: str) -> Receipt | None:
        key = self._check_key(key)
        forms = list(dict.fromkeys(spec.form_id for spec in m.BILL_SPECS.values()))
        bills = self._bills_for_key(key, forms)
        if not bills:
            return None
        bill = bills[0]
        return Receipt(key=key, document_id=bill.id, document_number=bill.number or None, created=False,
                       status=bill.status, posted=bill.status == "C")

    def upsert(self, entity: Entity, records: Sequence[Any]) -> list[Receipt | ConnectorError]:
        entity = Entity(entity)
        master = _MASTERS.get(entity)
        if master is None:
            raise ConfigError(f"{self.name}: writing {entity.value} is not supported by the Kingdee connector")
        for position, record in enumerate(records):
            if not isinstance(record, master.kind):
                raise TypeError(f"upsert({entity.value}): record {position} is a {type(record).__name__}, "
                                f"not a {master.kind.__name__}")
        results: list[Receipt | ConnectorError | None] = [None] * len(records)
        size = self.settings.master_batch_size
        stop: ConnectorError | None = None
        for start in range(0, len(records), size):
            works = self._prepare(master, records, range(start, min(start + size, len(records))), results)
            if stop is not None:
                for w in works:
                    results[w.position] = _for_record(stop, w)
                continue
            try:
                self._upsert_batch(master, works)
            except ConnectorError as exc:  # the lookup failed: nothing was written for this batch
                for w in works:
                    w.result = w.result or _for_record(exc, w)
                if exc.action is Action.PAUSE:  # auth or configuration: the next batches would fail alike
                    stop = exc
            for w in works:
                results[w.position] = w.result or Receipt(key=w.code, document_id=str(w.id), document_number=w.code,
                                                          created=w.created, status=w.status, posted=True)
        assert all(r is not None for r in results)
        return results  # type: ignore[return-value]

    def close(self) -> None:
        self.client.close()

    # -- upsert helpers -----------------------------------------------------------------------

    def _prepare(self, master: _Master, records: Sequence[Any], positions: range,
                 results: list[Receipt | ConnectorError | None]) -> list[_Write]:
        """One ``_Write`` per record of the batch; a code sent twice or unfit for a filter is refused
        here, before anything is sent."""
        works: list[_Write] = []
        seen: dict[str, int] = {}
        for position in positions:
            record = records[position]
            code = str(record.natural_key)
            label = f"{master.label} {code!r}"
            try:
                literal(code)
            except FilterError as exc:
                results[position] = Rejected(f"{label}: the code cannot be looked up ({exc})", record=label,
                                             details={"fields": ["FNumber"]})
                continue
            first = seen.setdefault(code.casefold(), position)
            if first != position:  # K3Cloud numbers compare case-insensitively
                results[position] = Rejected(f"{label}: the same code is already at position {first} of this upsert; "
                                             "send each record once", record=label, details={"fields": ["FNumber"]})
                continue
            works.append(_Write(position, record, code, label, master.to_model(record, self.cfg),
                                bool(record.active)))
        return works

    def _upsert_batch(self, master: _Master, works: list[_Write]) -> None:
        if not works:
            return
        found = self._lookup(master, [w.code for w in works])
        for w in works:
            row = found.get(w.code.casefold())
            if row is None:
                continue
            w.id = str(row[master.pk])
            w.status = str(row.get("FDocumentStatus") or "")
            w.forbidden = str(row.get("FForbidStatus") or "") == "B"
            w.changes = master.changes(w.record, row, self.cfg)
            if w.status == "Z" and not w.changes:
                w.changes = ["FName"]  # a draft becomes A only by a Save

        def live() -> list[_Write]:  # the records no step has refused yet
            return [w for w in works if w.result is None]
        # audited (or submitted) records must go back to D before they can be modified
        self._operate(master, "UnAudit", [w for w in live() if w.id and w.changes and w.status == "C"], "D")
        self._operate(master, "CancelAssign", [w for w in live() if w.id and w.changes and w.status == "B"], "D")
        self._create(master, [w for w in live() if w.id is None])
        self._modify(master, [w for w in live() if w.id and w.changes])
        self._operate(master, "Submit", [w for w in live() if w.status in ("A", "D")], "B")
        self._operate(master, "Audit", [w for w in live() if w.status == "B"], "C")
        self._operate(master, "Forbid", [w for w in live() if not w.active and not w.forbidden], None)
        self._operate(master, "Enable", [w for w in live() if w.active and w.forbidden], None)

    def _lookup(self, master: _Master, codes: Sequence[str]) -> dict[str, dict[str, Any]]:
        """The lookup rows of ``codes`` (``stock_org``'s when ``filter_use_org``), by case-folded number."""
        fields = master.lookup_fields(self.cfg)
        conditions = [self.filters.is_in("FNumber", codes)]
        if self.settings.filter_use_org:
            conditions.append(self.filters.eq("FUseOrgId.FNumber", self.settings.stock_org))
        rows: dict[str, dict[str, Any]] = {}
        for page in self.client.query_pages(master.form_id, fields, filter_string=all_of(conditions),
                                            order_string=f"{master.pk} ASC", page_size=self.settings.max_page_size):
            for row in page.rows:
                data = m.row_dict(fields, row)
                rows.setdefault(str(data.get("FNumber") or "").casefold(), data)
        return rows

    def _call(self, works: list[_Write], send: Callable[[], BatchResult]) -> BatchResult | None:
        """``send()``; a failure of the call as a whole becomes each record's own error."""
        try:
            return send()
        except ConnectorError as exc:
            for w in works:
                w.result = _for_record(exc, w)
            return None

    def _create(self, master: _Master, works: list[_Write]) -> None:
        pending = works
        for attempt in (1, 2):
            if not pending:
                return
            result = self._call(pending, lambda: self.client.batch_save(
                master.form_id, [w.model for w in pending], record=_batch_label(master, pending)))
            if result is None:
                return
            done, refused = _match(result, pending)
            unsettled = []
            for i, w in enumerate(pending):
                if i in done:
                    w.id, w.status, w.created = str(_ci(done[i], "Id")), "A", True
                elif i in refused:
                    w.result = _refused(w, "BatchSave", master, result, refused[i])
                else:
                    unsettled.append(w)
            if not unsettled:
                return
            # the answer names neither a success nor an error for these models (a server that refuses
            # the whole batch for one bad model): look them up before anything is sent again
            found = self._lookup_for(master, unsettled)
            pending = []
            for w in unsettled:
                if w.result is not None:
                    continue
                row = found.get(w.code.casefold()) if found is not None else None
                if row is not None:
                    w.id, w.status, w.created = str(row[master.pk]), str(row.get("FDocumentStatus") or ""), True
                elif attempt == 1:
                    pending.append(w)
                else:
                    w.result = _refused(w, "BatchSave", master, result, list(result.errors), unnamed=True)

    def _lookup_for(self, master: _Master, works: list[_Write]) -> dict[str, dict[str, Any]] | None:
        try:
            return self._lookup(master, [w.code for w in works])
        except ConnectorError as exc:
            for w in works:
                w.result = _for_record(exc, w)
            return None

    def _modify(self, master: _Master, works: list[_Write]) -> None:
        if not works:
            return
        changed = list(dict.fromkeys(key for w in works for key in w.changes))
        models = [m.update_model(w.model, master.pk, str(w.id), changed) for w in works]
        result = self._call(works, lambda: self.client.batch_save(
            master.form_id, models, need_update_fields=changed, record=_batch_label(master, works)))
        if result is None:
            return
        done, refused = _match(result, works)
        for i, w in enumerate(works):
            if i in refused and i not in done:
                w.result = _refused(w, "BatchSave", master, result, refused[i])
            elif i in done or result.success:
                w.status = "A" if w.status == "Z" else w.status
            else:  # not resent: the record is found unaudited by a re-run, which modifies it again
                w.result = _refused(w, "BatchSave", master, result, list(result.errors), unnamed=True)

    def _operate(self, master: _Master, op: str, works: list[_Write], to_status: str | None) -> None:
        """One ``op`` over ``works`` (Forbid/Enable through ExcuteOperation); each success moves its
        record to ``to_status``, each refusal becomes its record's error."""
        if not works:
            return
        ids = [str(w.id) for w in works]
        record = _batch_label(master, works)
        if op in ("Forbid", "Enable"):
            result = self._call(works, lambda: self.client.execute_operation(op, master.form_id, ids, record=record))
        else:
            result = self._call(works, lambda: self.client.operate_many(op, master.form_id, ids, record=record))
        if result is None:
            return
        done, refused = _match(result, works)
        for i, w in enumerate(works):
            if i in refused and i not in done:
                w.result = _refused(w, op, master, result, refused[i])
            elif i in done or result.success:
                if to_status is not None:
                    w.status = to_status
                if op in ("Forbid", "Enable"):
                    w.forbidden = op == "Forbid"
            else:
                w.result = _refused(w, op, master, result, list(result.errors), unnamed=True)

    # -- push helpers -------------------------------------------------------------------------

    def _check_key(self, key: str) -> str:
        if not isinstance(key, str) or not key.strip() or key != key.strip():
            raise ValueError(f"idempotency key {key!r} must be non-empty text without surrounding blanks")
        if len(key) > MAX_KEY_LENGTH:
            raise ValueError(f"idempotency key is {len(key)} characters; K3Cloud keeps at most {MAX_KEY_LENGTH}")
        if any(unicodedata.category(c) in ("Cc", "Cf", "Cs") for c in key):
            raise ValueError("idempotency key contains control characters")
        return key

    def _save_options(self) -> dict[str, Any]:
        if self.settings.allow_negative_stock:
            return {"InterationFlags": "STK_InvCheckResult", "IgnoreInterationFlag": "true"}
        return {}

    def _audit_options(self) -> dict[str, Any]:
        return self._save_options()

    def _finish(self, bill: _Bill, key: str, *, created: bool, record: str) -> Receipt:
        """Take ``bill`` through what is left of Submit → Audit.

        A refusal is checked against the bill's status first: another attempt (an earlier push
        whose answer was lost, still in flight) may have moved it on, and then there is nothing
        to refuse: a bill found submitted is audited, one found audited is the receipt.
        """
        status = bill.status
        for _ in range(3):  # at most Submit, Audit, and one re-read after a refusal
            try:
                if status in ("Z", "A", "D"):
                    self.client.operate("Submit", bill.form_id, [bill.id], record=record, bill=bill.number or None)
                    status = "B"
                if status == "B":
                    self.client.operate("Audit", bill.form_id, [bill.id], options=self._audit_options(),
                                        record=record, bill=bill.number or None)
                    status = "C"
                break
            except Rejected as exc:
                current = self._bill_status(bill)
                if current == "C" or (current == "B" and status != "B"):
                    log.info("[%s] %s %s: refused (%s) but now %s; carrying on", self.name, bill.form_id,
                             bill.number, exc.message, current)
                    status = current
                    continue
                self._discard(bill, exc, record, current)
                raise
        if status != "C":
            raise ContractViolation(f"{bill.form_id} {bill.number}: unexpected status {status!r}", record=record)
        return Receipt(key=key, document_id=bill.id, document_number=bill.number or None, created=created,
                       status=status, posted=True)

    def _discard(self, bill: _Bill, exc: ConnectorError, record: str, current: str | None) -> None:
        """After a refusal: withdraw and delete the unaudited bill (best effort), and say what happened."""
        exc.details["bill"] = {"form_id": bill.form_id, "id": bill.id, "number": bill.number}
        if not self.settings.delete_rejected_bills:
            exc.details["bill_left"] = "unaudited; a retry with the same key resumes it"
            return
        try:
            if current == "B":
                self.client.operate("CancelAssign", bill.form_id, [bill.id], record=record,
                                    bill=bill.number or None)
            if current is not None and current != "C":
                self.client.operate("Delete", bill.form_id, [bill.id], record=record, bill=bill.number or None)
            exc.details["bill_left"] = "deleted; a retry saves a new bill"
        except ConnectorError as cleanup:
            log.warning("[%s] %s %s was refused (%s) and could not be deleted (%s); a retry with the same key "
                        "resumes it", self.name, bill.form_id, bill.number, exc.kind, cleanup)
            exc.details["bill_left"] = f"unaudited ({cleanup.kind}: {cleanup.message}); a retry resumes it"

    def _bill_status(self, bill: _Bill) -> str | None:
        condition = self.filters.eq("FID", int(bill.id)) if bill.id.isdigit() else self.filters.eq("FBillNo",
                                                                                                  bill.number)
        rows = self.client.execute_bill_query(bill.form_id, ["FID", "FDocumentStatus"], filter_string=condition.text,
                                              limit=10)
        return str(rows[0][1]) if rows else None

    def _bills_for_key(self, key: str, forms: Sequence[str]) -> list[_Bill]:
        """Live bills carrying ``key`` in ``forms``, most advanced status first."""
        try:
            condition = self.filters.eq(self.settings.key_field, key)
        except FilterError as exc:
            raise ValueError(f"idempotency key {key!r}: {exc}") from None
        fields = ["FID", "FBillNo", "FDocumentStatus"]
        found: dict[tuple[str, str], _Bill] = {}
        for form_id in forms:
            for page in self.client.query_pages(form_id, fields, filter_string=condition.text,
                                                order_string="FID ASC", page_size=self.settings.max_page_size):
                for row in page.rows:
                    fid, number, status = row
                    found.setdefault((form_id, str(fid)), _Bill(form_id, str(fid), str(number or ""),
                                                                 str(status or "")))
        bills = sorted(found.values(), key=lambda b: (-_STATUS_RANK.get(b.status, 0), _int(b.id)))
        if len(bills) > 1:
            log.warning("[%s] key %s is carried by %d bills: %s", self.name, key, len(bills),
                        ", ".join(f"{b.form_id} {b.number} ({b.status})" for b in bills))
        return bills

    # -- read helpers -------------------------------------------------------------------------

    def _page_size(self, page_size: int | None) -> int:
        size = page_size or self.settings.page_size
        if size < 1:
            raise ValueError("page_size must be at least 1")
        return min(size, self.settings.max_page_size)

    def _since_condition(self, since: datetime | None) -> Condition | None:
        if since is None:
            return None
        if since.tzinfo is None:
            raise ValueError("since must be timezone-aware")
        return self.filters.ge("FModifyDate", since)

    def _phases(self, entity: Entity, since: datetime | None) -> list[_Phase]:
        cfg, settings = self.cfg, self.settings
        since_cond = self._since_condition(since)
        org = self.filters.eq("FUseOrgId.FNumber", settings.stock_org) if settings.filter_use_org else None
        if entity is Entity.ITEMS:
            return [_Phase("BD_MATERIAL", m.material_fields(cfg), "FModifyDate ASC, FMaterialId ASC",
                           (org, since_cond), mapper=lambda r: m.material_to_item(r, cfg))]
        if entity is Entity.WAREHOUSES:
            return [_Phase("BD_STOCK", m.stock_fields(cfg), "FModifyDate ASC, FStockId ASC", (org, since_cond),
                           mapper=lambda r: m.stock_to_warehouse(r, cfg))]
        if entity is Entity.PARTNERS:
            return [
                _Phase("BD_Supplier", ["FSupplierId", *m.PARTNER_FIELDS], "FModifyDate ASC, FSupplierId ASC",
                       (org, since_cond), mapper=lambda r: m.supplier_to_partner(r, cfg)),
                _Phase("BD_Customer", ["FCUSTID", *m.PARTNER_FIELDS], "FModifyDate ASC, FCUSTID ASC",
                       (org, since_cond), mapper=lambda r: m.customer_to_partner(r, cfg)),
            ]
        if entity is Entity.MOVEMENTS:
            audited = self.filters.eq("FDocumentStatus", "C")
            stock_org = self.filters.eq("FStockOrgId.FNumber", settings.stock_org)
            phases = []
            for form_id, kind in m.READ_FORMS:
                spec = m.BILL_SPECS[kind]
                phases.append(_Phase(form_id, m.bill_fields(spec, cfg),
                                     f"FModifyDate ASC, FID ASC, {spec.entry_id()} ASC",
                                     (audited, stock_org, since_cond), kind=kind))
            return phases
        raise ConfigError(f"{self.name}: reading {entity.value} is not supported by the Kingdee connector")

    def _token(self, entity: str, phase: int, start: int, since: datetime | None, size: int) -> str:
        payload = {"v": 1, "e": entity, "p": phase, "s": start, "w": since.isoformat() if since else None, "n": size}
        return base64.urlsafe_b64encode(json.dumps(payload, separators=(",", ":")).encode()).decode()

    def _decode(self, token: str, entity: str) -> tuple[int, int, datetime | None, int]:
        """(phase, StartRow, since, page size) from a token of a read of ``entity``."""
        try:
            data = json.loads(base64.urlsafe_b64decode(token.encode()))
            if not isinstance(data, dict) or data.get("v") != 1:
                raise ValueError("unknown version")
            phase, start, size, watermark = int(data["p"]), int(data["s"]), int(data["n"]), data.get("w")
            token_entity = data["e"]
            since = datetime.fromisoformat(watermark) if watermark else None
        except (ValueError, KeyError, TypeError, binascii.Error) as exc:
            raise ValueError(f"not a Kingdee resume token ({exc})") from None
        if token_entity != entity:
            raise ValueError(f"the resume token belongs to a read of {token_entity}, not {entity}")
        if phase < 0 or start < 0 or size < 1:
            raise ValueError("bad resume token")
        return phase, start, since, self._page_size(size)

    def _read_phases(self, entity: Entity, phases: list[_Phase], since: datetime | None, phase_index: int,
                     start: int, size: int) -> Iterator[Page[Any]]:
        if phase_index >= len(phases):
            yield Page(records=())
            return
        for index in range(phase_index, len(phases)):
            phase = phases[index]
            first_row = start if index == phase_index else 0
            last_phase = index == len(phases) - 1
            filter_string = all_of(phase.conditions)
            if phase.kind is None:
                pages = self._master_pages(entity, phase, filter_string, size, first_row)
            else:
                pages = self._bill_pages(phase, filter_string, size, first_row)
            for records, errors, max_modified, next_row in pages:
                if next_row is not None:
                    resume_token: str | None = self._token(entity.value, index, next_row, since, size)
                elif not last_phase:
                    resume_token = self._token(entity.value, index + 1, 0, since, size)
                else:
                    resume_token = None
                if not records and not errors and resume_token is not None:
                    continue  # an empty end of one form: go straight on to the next
                yield Page(records=tuple(records), resume=resume_token, max_modified=max_modified,
                           errors=tuple(errors))

    def _master_pages(self, entity: Entity, phase: _Phase, filter_string: str, size: int,
                      start: int) -> Iterator[tuple[list[Any], list[RecordError], datetime | None, int | None]]:
        assert phase.mapper is not None
        for qp in self.client.query_pages(phase.form_id, phase.fields, filter_string=filter_string,
                                          order_string=phase.order, page_size=size, start_row=start):
            records, errors, latest = [], [], None
            fields, mapper = phase.fields, phase.mapper
            for row in qp.rows:
                data = dict(zip(fields, row))  # the client checked every row's width
                try:
                    record = mapper(data)
                except ValueError as exc:
                    key = str(data.get("FNumber") or f"{phase.form_id} row")
                    latest = _later(latest, self._row_modified(data))
                    errors.append(RecordError(entity.value, key, f"{phase.form_id} {key}: {exc}",
                                              field=getattr(exc, "field", None), raw=data))
                    continue
                records.append(record)
                # the record's modified_at is FModifyDate read in the server's zone: not parsed twice
                modified = record.modified_at
                if modified is not None and (latest is None or modified > latest):
                    latest = modified
            yield records, errors, latest, qp.next_start_row

    def _grouped(self, form_id: str, fields: list[str], filter_string: str, order: str, size: int, start: int,
                 group_key: Callable[[dict[str, Any]], Any]) -> Iterator[tuple[list[list[dict[str, Any]]], int | None]]:
        """Complete groups of adjacent rows, and the StartRow to resume from (None at the end)."""
        pending: list[dict[str, Any]] = []
        pending_start = start
        for qp in self.client.query_pages(form_id, fields, filter_string=filter_string, order_string=order,
                                          page_size=size, start_row=start):
            complete: list[list[dict[str, Any]]] = []
            for i, row in enumerate(qp.rows):
                data = m.row_dict(fields, row)
                if pending and group_key(pending[0]) != group_key(data):
                    complete.append(pending)
                    pending = []
                if not pending:
                    pending_start = qp.start_row + i
                pending.append(data)
            if qp.next_start_row is None:
                if pending:
                    complete.append(pending)
                yield complete, None
                return
            if complete:
                yield complete, pending_start if pending else qp.next_start_row

    def _bill_pages(self, phase: _Phase, filter_string: str, size: int,
                    start: int) -> Iterator[tuple[list[Any], list[RecordError], datetime | None, int | None]]:
        assert phase.kind is not None
        for groups, next_row in self._grouped(phase.form_id, phase.fields, filter_string, phase.order, size, start,
                                              lambda d: str(d.get("FID"))):
            records, errors, latest = [], [], None
            for rows in groups:
                number = str(rows[0].get("FBillNo") or f"FID {rows[0].get('FID')}")
                latest = _later(latest, self._row_modified(rows[0]))
                try:
                    records.append(m.bill_rows_to_movement(phase.kind, rows, self.cfg))
                except ValueError as exc:
                    errors.append(RecordError(Entity.MOVEMENTS.value, number, f"{phase.form_id} {number}: {exc}",
                                              field=getattr(exc, "field", None), raw=rows))
            yield records, errors, latest, next_row

    def _balance_pages(self, fields: list[str], filter_string: str, order: str, size: int, start: int,
                       scope: str, as_of: datetime) -> Iterator[Page[StockBalance]]:
        for groups, next_row in self._grouped("STK_Inventory", fields, filter_string, order, size, start,
                                              m.balance_key):
            records, errors = [], []
            for rows in groups:
                key = "/".join(v or "" for v in m.balance_key(rows[0]))
                try:
                    for balance in m.balance_rows_to_balances(rows, self.cfg, as_of=as_of):
                        if balance.on_hand != 0 or (balance.available or 0) != 0:
                            records.append(balance)
                except ValueError as exc:
                    errors.append(RecordError("balances", key, f"STK_Inventory {key}: {exc}",
                                              field=getattr(exc, "field", None), raw=rows))
            # the token carries the snapshot's as_of (in the watermark slot): a resumed read is one snapshot
            token = self._token(scope, 0, next_row, as_of, size) if next_row is not None else None
            yield Page(records=tuple(records), resume=token, errors=tuple(errors))

    def _row_modified(self, data: Mapping[str, Any]) -> datetime | None:
        try:
            return m.parse_server_datetime(data.get("FModifyDate"), self.cfg.zone)
        except m.MappingError:
            return None


# How K3Cloud words a stock shortage on Audit (the STK_InvCheckResult interaction); such errors
# carry no FieldName, so the connector names the line quantity field itself.
_SHORTAGE_MARKERS = ("库存不足", "负库存", "即时库存", "stk_invcheckresult", "insufficient", "negative stock")


def _name_shortage(exc: Rejected, spec: m.BillSpec) -> Rejected:
    """``exc`` unchanged unless it is a stock shortage that names no field: then the same error
    naming ``<entry>.<qty field>`` (e.g. ``FInStockEntry.FRealQty``) in its message and details."""
    if exc.details.get("fields") or not any(k in exc.message.lower() for k in _SHORTAGE_MARKERS):
        return exc
    field = f"{spec.entry}.{spec.qty}"
    named = Rejected(f"{exc.message} (field {field}: the quantity exceeds the stock on hand)",
                     vendor_code=exc.vendor_code, record=exc.record, details={**exc.details, "fields": [field]})
    return named


def _ci(mapping: Mapping[str, Any], key: str) -> Any:
    lower = key.lower()
    return next((v for k, v in mapping.items() if str(k).lower() == lower), None)


def _match(result: BatchResult, works: Sequence[_Write]) -> tuple[dict[int, Mapping[str, Any]],
                                                                   dict[int, list[Mapping[str, Any]]]]:
    """Successes (by Id, else Number, else DIndex) and errors (by DIndex) of one call, keyed by the
    position of their record in ``works`` (the order of the ``Model`` array or the ``Ids``)."""
    by_id = {w.id: i for i, w in enumerate(works) if w.id}
    by_number = {w.code.casefold(): i for i, w in enumerate(works)}
    done: dict[int, Mapping[str, Any]] = {}
    for entity in result.successes:
        index = by_id.get(str(_ci(entity, "Id")))
        if index is None:
            index = by_number.get(str(_ci(entity, "Number") or "").casefold())
        if index is None:
            index = _dindex(entity, len(works))
        if index is not None:
            done[index] = entity
    refused: dict[int, list[Mapping[str, Any]]] = {}
    for error in result.errors:
        index = _dindex(error, len(works))
        if index is not None:
            refused.setdefault(index, []).append(error)
    return done, refused


def _dindex(entry: Mapping[str, Any], size: int) -> int | None:
    value = _ci(entry, "DIndex")
    try:
        index = int(value)
    except (TypeError, ValueError):
        return None
    return index if 0 <= index < size else None


def _batch_label(master: _Master, works: Sequence[_Write]) -> str:
    first = works[0].label
    return first if len(works) == 1 else f"{first} and {len(works) - 1} more {master.form_id} records"


def _refused(w: _Write, op: str, master: _Master, result: BatchResult, errors: list[Mapping[str, Any]], *,
             unnamed: bool = False) -> Rejected:
    """``Rejected`` for one record: its label, the step, the vendor's FieldName and message, and
    where the record was left."""
    parts, fields = [], []
    for error in errors:
        name = _ci(error, "FieldName")
        text = str(_ci(error, "Message") or "").strip() or "(no message)"
        parts.append(f"{name}: {text}" if name else text)
        if name:
            fields.append(str(name))
    said = "; ".join(parts) or "(no error message)"
    if unnamed:
        said = f"the answer names no result for this record (the call said: {said})"
    where = w.where()
    details: dict[str, Any] = {"msg_code": result.msg_code, "errors": [dict(e) for e in errors], "left": where,
                               "form_id": master.form_id, "operation": op}
    if fields:
        details["fields"] = fields
    if w.id is not None:
        details["id"] = w.id
    return Rejected(f"{w.label}: {op} {master.form_id} refused: {said} ({where})",
                    vendor_code=str(result.msg_code), record=w.label, details=details)


def _for_record(exc: ConnectorError, w: _Write) -> ConnectorError:
    """``exc`` (a failure of a call on several records) as this record's own error, naming it."""
    message = f"{w.label}: {exc.message} ({w.where()})"
    kwargs: dict[str, Any] = {"vendor_code": exc.vendor_code, "record": w.label,
                              "details": {**exc.details, "left": w.where()}}
    if isinstance(exc, RateLimited):
        return RateLimited(message, retry_after=exc.retry_after, **kwargs)
    try:
        return type(exc)(message, **kwargs)
    except TypeError:
        return Ambiguous(message, **kwargs) if exc.action is Action.RECONCILE else Rejected(message, **kwargs)


def _later(a: datetime | None, b: datetime | None) -> datetime | None:
    if a is None:
        return b
    if b is None:
        return a
    return max(a, b)


def _int(value: str) -> int:
    try:
        return int(value)
    except ValueError:
        return 0
