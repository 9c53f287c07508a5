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
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from canonical import Movement, MovementKind, StockBalance
from connectors.base import Capabilities, CheckResult, Connector, Entity, Page, Receipt, RecordError
from connectors.errors import ConfigError, ConnectorError, ContractViolation, Rejected
from connectors.kingdee import mapping as m
from connectors.kingdee.client import Credentials, K3CloudClient
from connectors.kingdee.filters import Condition, FilterBuilder, FilterError, all_of
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
            ["FID", "FModifyDate", "FDocumentStatus", "FUseOrgId.FNumber", "FStockOrgId.FNumber", "FStockId.FNumber",
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
            max_batch=1,
            rate_limit_per_second=self.settings.rate_limit_per_second,
            posting_calls=1 if self.settings.auto_submit_audit else 3,
            notes=(
                f"idempotency key in {self.settings.key_field}; find() by ExecuteBillQuery",
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

    def close(self) -> None:
        self.client.close()

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
