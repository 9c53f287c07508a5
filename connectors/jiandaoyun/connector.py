"""``JiandaoyunConnector``: the Jiandaoyun v5 Open API behind the connector contract (DESIGN.md §4).

Inventory lives in tenant-designed forms (``vendors/jiandaoyun.md`` §12): 物料 (items), 仓库
(warehouses), 出入库单 with its 明细 subform (movements) and optionally 库存台账 (a stock
ledger kept by the tenant's automation). Each form's fields are named in the settings by alias,
widget ID or label and resolved once per connector through ``widget/list``
(:mod:`connectors.jiandaoyun.settings`); records are then read by each field's current name.

Reads
    ``data/list`` pages (at most 100 records, ascending ``_id``, the last ``_id`` as exclusive
    cursor). Incremental reads filter ``updateTime`` ``range [since, null]`` (inclusive, the
    vendor's millisecond stamps) and keep the ``_id`` cursor. A page asks one record more than
    it returns to know whether another follows, so only the last page has no resume token.
    Resume tokens are base64 JSON ``{"v", "e": entity, "a": last _id, "w": since, "n": page size}``:
    self-contained, as the contract requires.

Balances
    From the 库存台账 ledger form when ``ledger`` is configured (the default: the reference app
    has one), one balance per ledger record, paged like any read. With ``ledger = None`` they are
    recomputed from every movement record (movements are the source of truth; opening stock must
    then be movements too, e.g. 业务类型 期初) and paged from that snapshot by offset.
    ``as_of`` is the read's start, kept in the token.

Push (idempotent on ``key``): find, then create
    The key goes to the movement form's key field (外部单号, a text field) together with the
    reference (参考号). ``push`` first looks the key up (``data/list``, ``eq`` on the key field): a
    record found is returned with ``created=False``; otherwise one ``data/create``. Jiandaoyun
    promises no idempotency for ``create`` and runs no unique check, so a lost answer (timeout,
    reset, 5xx) is ``Ambiguous`` and never resent here: the engine asks ``find(key)``, which reads
    the same field. Find-then-create was chosen over ``batch_create`` with a deterministic
    ``transaction_id`` for single pushes because (a) replaying a ``transaction_id`` is
    undocumented (the simulator answers the original result, INFERRED) while a lookup by key is
    plain documented behaviour, (b) ``create`` answers the whole record (its 单号) in one call,
    and (c) single writes fire the form's data push and, when configured, the tenant's
    automations, as a UI submission does. The stock automation posts the movement when it is
    created; its refusal (e.g. negative stock) is ``Rejected`` with the vendor code (4000).

push_many
    Per chunk of 100: one ``in`` lookup of the keys (≤200 values), then one ``batch_create`` of
    the movements not found, with ``transaction_id = uuid5(app, form, keys)``, so a resent chunk
    is answered with the first result and a regrouped one is caught by the lookup. The batch is
    all or nothing; when it is refused as a whole the chunk falls back to ``push`` one by one, so
    each movement gets its own honest result. Batch writes send no webhooks.

Upsert (items, warehouses)
    Per chunk of 100 codes: one ``in`` lookup on the code field; equal records are left alone
    (``created=False``), changed ones get one ``data/update`` of the changed fields, missing ones
    one ``batch_create`` (deterministic ``transaction_id``; refused as a whole → one ``create``
    each). Several records with one code (API writes skip unique checks) → the oldest is used.

Webhooks
    ``receive_webhook`` verifies the push (:mod:`connectors.jiandaoyun.webhook`) and decodes
    ``data_create``/``data_update``/``data_recover`` of the mapped forms (told apart by
    ``entryId``) to canonical records, ``data_remove`` to the removed natural keys (sku, code or
    movement reference) and ``data_test``/``form_update`` (and unmapped forms) to ``entity=None``.
    It makes no vendor call: field names come from the resolution already made (``check()`` or a
    read does it; a ``form_update`` push refreshes it); before any, the configured references are
    used as data keys, which works when they are aliases or widget IDs.
"""
from __future__ import annotations

import base64
import binascii
import json
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from pydantic import BaseModel

from canonical import Item, Movement, StockBalance, Warehouse, content_hash
from connectors.base import (
    Capabilities,
    CheckResult,
    Connector,
    Entity,
    Page,
    Receipt,
    RecordError,
    WebhookEvent,
    WebhookRequest,
)
from connectors.errors import ConfigError, ConnectorError, ContractViolation, Rejected
from connectors.jiandaoyun import mapping as m
from connectors.jiandaoyun.client import MAX_BATCH, MAX_IN, MAX_PAGE, JdyClient
from connectors.jiandaoyun.settings import (
    ItemForm,
    JiandaoyunSettings,
    LedgerForm,
    MovementForm,
    WarehouseForm,
)
from connectors.jiandaoyun.webhook import verify
from connectors.registry import register

log = logging.getLogger(__name__)

_TEXT = frozenset({"text", "textarea", "sn", "combo", "radiogroup"})
_NUMBER = frozenset({"number", "money"})
# widget types each mapped field may have; anything else is a configuration error (fail closed)
_TYPES: dict[str, frozenset[str]] = {"date": frozenset({"datetime"}), "changed_at": frozenset({"datetime"}),
                                     "line_qty": _NUMBER, "line_cost": _NUMBER, "qty": _NUMBER,
                                     "lines": frozenset({"subform"})}
_LINE_FIELDS = ("line_sku", "line_qty", "line_unit", "line_cost", "line_lot", "line_from_bin", "line_to_bin")
_NOT_FIELDS = {"entry_id", "kinds"}
RECORD_OPS = {"data_create", "data_update", "data_recover"}


def _token(data: Mapping[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps({"v": 1, **data}, separators=(",", ":")).encode()).decode()


def _untoken(token: str, scope: str) -> dict[str, Any]:
    try:
        data = json.loads(base64.urlsafe_b64decode(token.encode()))
    except (ValueError, binascii.Error):
        raise ConfigError(f"resume token {token[:40]!r} is not a Jiandaoyun token") from None
    if not isinstance(data, dict) or data.get("v") != 1 or data.get("e") != scope:
        raise ConfigError(f"resume token belongs to another read (wanted {scope})")
    return data


def _utc_iso(moment: datetime | None) -> str | None:
    if moment is None:
        return None
    if moment.tzinfo is None:
        raise ConfigError("since must be timezone-aware")
    return m.format_time(moment)


@register
class JiandaoyunConnector(Connector):
    platform = "jiandaoyun"
    Settings = JiandaoyunSettings

    def __init__(self, settings: JiandaoyunSettings, *, name: str | None = None, client: JdyClient | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        if not isinstance(settings, JiandaoyunSettings):
            settings = JiandaoyunSettings.model_validate(settings.model_dump())
        super().__init__(settings, name=name)
        self.settings: JiandaoyunSettings = settings
        self.clock = clock
        self.client = client or JdyClient(
            settings.url, settings.api_key.get_secret_value(), app_id=settings.app_id,
            connect_timeout=settings.connect_timeout, read_timeout=settings.read_timeout, verify=settings.verify_tls,
            name=self.name, limits=settings.rate_limits.model_dump(), rate_limited_wait=settings.rate_limited_wait)
        self._lock = threading.Lock()
        self._resolved: dict[str, Any] = {}

    # -- field resolution ---------------------------------------------------------------------------

    def _configured(self, role: str) -> Any:
        return {"items": self.settings.items, "warehouses": self.settings.warehouses,
                "movements": self.settings.movements, "ledger": self.settings.ledger}[role]

    def form(self, role: str) -> Any:
        """The role's form settings with every field reference replaced by the field's name."""
        with self._lock:
            if role in self._resolved:
                return self._resolved[role]
        configured = self._configured(role)
        resolved = resolve(configured, self.client.widgets(configured.entry_id)["widgets"], role)
        with self._lock:
            self._resolved[role] = resolved
        return resolved

    # -- contract -----------------------------------------------------------------------------------

    @property
    def capabilities(self) -> Capabilities:
        entities = frozenset({Entity.ITEMS, Entity.WAREHOUSES, Entity.MOVEMENTS})
        return Capabilities(
            entities=entities,
            movement_kinds=m.writable_kinds(self.settings.movements),
            incremental=entities,
            balances=True,
            max_page_size=MAX_PAGE,
            max_batch=MAX_BATCH,
            writable=frozenset({Entity.ITEMS, Entity.WAREHOUSES}),
            rate_limit_per_second=self.settings.rate_limits.company,
            posting_calls=1,
            notes=(
                f"idempotency key in the movement form's {self.settings.movements.key!r} field; find() by data/list eq",
                ("push: find, then data/create (the tenant's automation posts stock); push_many: batch_create of "
                "≤100 with a deterministic transaction_id after an in-lookup of the keys"),
                "balances: " + ("库存台账 ledger form" if self.settings.ledger else "recomputed from movements"),
                "no partner form: counterparties travel as code and name on the movement",
                "throttled per endpoint class (read/write/batch) and per company below 30/20/10 and 50 per second",
            ),
        )

    def check(self) -> CheckResult:
        with self._lock:  # always one real call: resolve the items form afresh
            self._resolved.pop("items", None)
        items = self.form("items")
        return CheckResult(ok=True, detail=f"Jiandaoyun app {self.settings.app_id}: items form {items.entry_id} "
                                           f"(code field {items.sku!r}) readable with the API key")

    def read(self, entity: Entity, *, since: datetime | None = None, resume: str | None = None,
             page_size: int | None = None) -> Iterator[Page[Any]]:
        entity = Entity(entity)
        role = {Entity.ITEMS: "items", Entity.WAREHOUSES: "warehouses", Entity.MOVEMENTS: "movements"}.get(entity)
        if role is None:
            raise ConfigError(f"{self.name}: the Jiandaoyun connector does not read {entity.value}")
        size = self._size(page_size)
        after = None
        since_text = _utc_iso(since)
        if resume:
            state = _untoken(resume, entity.value)
            after, since_text, size = state.get("a"), state.get("w"), self._size(state.get("n"))
        return self._read(entity, role, since_text, after, size)

    def _read(self, entity: Entity, role: str, since: str | None, after: str | None,
              size: int) -> Iterator[Page[Any]]:
        f = self.form(role)
        flt = None
        if since is not None:
            flt = {"rel": "and", "cond": [{"field": "updateTime", "type": "datetime", "method": "range",
                                           "value": [since, None]}]}
        mapper = self._mapper(role, f)
        for rows, resume_after in self._pages(f.entry_id, flt, after, size):
            records, errors, stamps = [], [], []
            for row in rows:
                try:
                    records.append(mapper(row))
                except m.MappingError as exc:
                    label = self._label(role, f, row)
                    errors.append(RecordError(entity.value, label, f"{label}: {exc}", field=exc.field, raw=row))
                stamp = row.get("updateTime")
                if stamp:
                    stamps.append(m.parse_time(stamp, field="updateTime"))
            resume = _token({"e": entity.value, "a": resume_after, "w": since, "n": size}) if resume_after else None
            yield Page(tuple(records), resume, max(stamps) if stamps else None, tuple(errors))

    def _pages(self, entry_id: str, flt: Any, after: str | None,
               size: int) -> Iterator[tuple[list[dict[str, Any]], str | None]]:
        """(rows, the _id to resume after or None on the last page)."""
        while True:
            ask = size + 1 if size < MAX_PAGE else MAX_PAGE
            rows = self.client.list_page(entry_id, after=after, limit=ask, filter=flt)
            page = rows[:size]
            more = bool(page) and (len(rows) > size or len(rows) == MAX_PAGE)
            after = page[-1]["_id"] if more else None
            yield page, after
            if after is None:
                return

    def _mapper(self, role: str, f: Any) -> Callable[[Mapping[str, Any]], Any]:
        if role == "items":
            return lambda row: m.item_from_record(row, f)
        if role == "warehouses":
            return lambda row: m.warehouse_from_record(row, f)
        zone = self.settings.zone
        return lambda row: m.movement_from_record(row, f, zone, source_system=self.name)

    @staticmethod
    def _label(role: str, f: Any, row: Mapping[str, Any]) -> str:
        if role == "movements":
            return m.movement_label(row, f)
        key = f.sku if role == "items" else f.code
        return str(m.text(row, key) or row.get("_id") or "?")

    def _size(self, page_size: Any) -> int:
        size = page_size if isinstance(page_size, int) and page_size > 0 else self.settings.page_size
        return max(1, min(size, MAX_PAGE))

    # -- balances -----------------------------------------------------------------------------------

    def read_balances(self, *, warehouse: str | None = None, resume: str | None = None,
                      page_size: int | None = None) -> Iterator[Page[StockBalance]]:
        scope = f"balances:{warehouse or ''}"
        size = self._size(page_size)
        as_of = datetime.fromtimestamp(int(self.clock()), tz=UTC)
        after, offset = None, 0
        if resume:
            state = _untoken(resume, scope)
            size, after, offset = self._size(state.get("n")), state.get("a"), int(state.get("o") or 0)
            as_of = m.parse_time(state["t"], field="as_of")
        if self.settings.ledger is not None:
            return self._ledger_balances(scope, warehouse, as_of, after, size)
        return self._recomputed_balances(scope, warehouse, as_of, offset, size)

    def _ledger_balances(self, scope: str, warehouse: str | None, as_of: datetime, after: str | None,
                         size: int) -> Iterator[Page[StockBalance]]:
        f: LedgerForm = self.form("ledger")
        flt = None
        if warehouse is not None:
            flt = {"rel": "and", "cond": [{"field": f.warehouse, "method": "eq", "value": [warehouse]}]}
        units = {} if f.unit else self._units()
        for rows, resume_after in self._pages(f.entry_id, flt, after, size):
            records, errors = [], []
            for row in rows:
                try:
                    records.append(m.balance_from_ledger(row, f, as_of, units))
                except m.MappingError as exc:
                    label = f"{m.text(row, f.sku) or '?'} @ {m.text(row, f.warehouse) or '?'}"
                    errors.append(RecordError("balances", label, f"库存台账 {label}: {exc}", field=exc.field, raw=row))
            resume = _token({"e": scope, "a": resume_after, "t": m.format_time(as_of), "n": size}) \
                if resume_after else None
            yield Page(tuple(records), resume, None, tuple(errors))

    def _units(self) -> dict[str, str]:
        f = self.form("items")
        return {sku: unit for row in self.client.iterate(f.entry_id)
                if (sku := m.text(row, f.sku)) and (unit := m.text(row, f.unit))}

    def _recomputed_balances(self, scope: str, warehouse: str | None, as_of: datetime, offset: int,
                             size: int) -> Iterator[Page[StockBalance]]:
        f: MovementForm = self.form("movements")
        totals: dict[tuple[str, str, str | None, str | None], Decimal] = {}
        units: dict[str, str] = {}
        errors = []
        for row in self.client.iterate(f.entry_id):
            try:
                movement = m.movement_from_record(row, f, self.settings.zone)
            except m.MappingError as exc:
                label = m.movement_label(row, f)
                errors.append(RecordError("balances", label, f"出入库单 {label}: {exc}", field=exc.field, raw=row))
                continue
            for delta in movement.stock_deltas():
                key = (delta.sku, delta.warehouse, delta.bin, delta.lot)
                totals[key] = totals.get(key, Decimal(0)) + delta.quantity
                units.setdefault(delta.sku, delta.unit)
        keys = sorted((k for k in totals if warehouse is None or k[1] == warehouse),
                      key=lambda k: tuple(part or "" for part in k))
        balances = [StockBalance(sku=k[0], warehouse=k[1], bin=k[2], lot=k[3], on_hand=totals[k], unit=units[k[0]],
                                 as_of=as_of) for k in keys]
        if offset == 0 and not balances:
            yield Page((), None, None, tuple(errors))
            return
        while offset < len(balances):
            chunk = balances[offset:offset + size]
            offset += len(chunk)
            more = offset < len(balances)
            resume = _token({"e": scope, "o": offset, "t": m.format_time(as_of), "n": size}) if more else None
            yield Page(tuple(chunk), resume, None, tuple(errors) if offset == len(chunk) else ())
            if not more:
                return

    # -- push ---------------------------------------------------------------------------------------

    def push(self, movement: Movement, key: str) -> Receipt:
        key = _check_key(key)
        record = f"{movement.kind.value} {movement.reference}"
        f: MovementForm = self.form("movements")
        try:
            data = m.movement_to_data(movement, key, f, self.settings.zone)
        except m.MappingError as exc:
            raise Rejected(f"cannot express the movement as a 出入库单: {exc}", record=record) from None
        existing = self._find_rows(f, [key]).get(key)
        if existing is not None:
            log.info("[%s] key %s already has record %s: not creating another", self.name, key, existing["_id"])
            return self._receipt(existing, f, key, created=False)
        created = self.client.create(f.entry_id, data, start_workflow=self.settings.start_workflow,
                                     start_trigger=self.settings.start_trigger, record=record)
        return self._receipt(created, f, key, created=True)

    def find(self, key: str) -> Receipt | None:
        key = _check_key(key)
        f: MovementForm = self.form("movements")
        row = self._find_rows(f, [key]).get(key)
        return None if row is None else self._receipt(row, f, key, created=False)

    def _find_rows(self, f: MovementForm, keys: Sequence[str]) -> dict[str, dict[str, Any]]:
        """The oldest movement record per key (``eq`` for one key, ``in`` for several)."""
        found: dict[str, dict[str, Any]] = {}
        for start in range(0, len(keys), MAX_IN):
            chunk = list(keys[start:start + MAX_IN])
            method = "eq" if len(chunk) == 1 else "in"
            flt = {"rel": "and", "cond": [{"field": f.key, "type": "text", "method": method, "value": chunk}]}
            for row in self.client.iterate(f.entry_id, filter=flt):
                found.setdefault(str(m.key_of(row, f)), row)
        return found

    @staticmethod
    def _receipt(row: Mapping[str, Any], f: MovementForm, key: str, *, created: bool) -> Receipt:
        return Receipt(key=key, document_id=str(row["_id"]), document_number=m.text(row, f.number), created=created,
                       posted=True)

    def push_many(self, batch: Sequence[tuple[Movement, str]]) -> list[Receipt | ConnectorError]:
        results: list[Receipt | ConnectorError] = []
        for start in range(0, len(batch), MAX_BATCH):
            results.extend(self._push_chunk(batch[start:start + MAX_BATCH]))
        return results

    def _push_chunk(self, chunk: Sequence[tuple[Movement, str]]) -> list[Receipt | ConnectorError]:
        f: MovementForm = self.form("movements")
        results: list[Receipt | ConnectorError | None] = [None] * len(chunk)
        try:
            existing = self._find_rows(f, list(dict.fromkeys(_check_key(k) for _, k in chunk)))
        except ConnectorError as exc:
            return [exc] * len(chunk)
        todo: list[tuple[int, str, dict[str, Any]]] = []
        for position, (movement, key) in enumerate(chunk):
            if key in existing:
                results[position] = self._receipt(existing[key], f, key, created=False)
            elif any(key == k for _, k, _ in todo):
                results[position] = Rejected("the key appears twice in one push_many", record=key)
            else:
                try:
                    todo.append((position, key, m.movement_to_data(movement, key, f, self.settings.zone)))
                except m.MappingError as exc:
                    results[position] = Rejected(f"cannot express the movement as a 出入库单: {exc}",
                                                 record=f"{movement.kind.value} {movement.reference}")
        if todo:
            transaction = _transaction(self.settings.app_id, f.entry_id, [k for _, k, _ in todo])
            try:
                self.client.batch_create(f.entry_id, [d for _, _, d in todo], transaction_id=transaction,
                                         start_workflow=self.settings.start_workflow)
                made = self._find_rows(f, [k for _, k, _ in todo])
                for position, key, _ in todo:
                    row = made.get(key)
                    results[position] = self._receipt(row, f, key, created=True) if row else ContractViolation(
                        f"batch_create succeeded but no record carries key {key}", record=key)
            except Rejected:  # refused as a whole: one by one, so each movement gets its own answer
                for position, _, _ in todo:
                    movement, key = chunk[position]
                    try:
                        results[position] = self.push(movement, key)
                    except ConnectorError as exc:
                        results[position] = exc
            except ConnectorError as exc:
                for position, _, _ in todo:
                    results[position] = exc
        return [r for r in results if r is not None]

    # -- upsert -------------------------------------------------------------------------------------

    def upsert(self, entity: Entity, records: Sequence[Any]) -> list[Receipt | ConnectorError]:
        entity = Entity(entity)
        if entity not in (Entity.ITEMS, Entity.WAREHOUSES):
            raise ConfigError(f"{self.name}: writing {entity.value} is not supported by the Jiandaoyun connector")
        kind, role = (Item, "items") if entity is Entity.ITEMS else (Warehouse, "warehouses")
        for position, record in enumerate(records):
            if not isinstance(record, kind):
                raise TypeError(f"upsert({entity.value}): record {position} is a {type(record).__name__}, "
                                f"not a {kind.__name__}")
        if not records:
            return []
        f = self.form(role)
        results: list[Receipt | ConnectorError] = []
        for start in range(0, len(records), MAX_BATCH):
            results.extend(self._upsert_chunk(role, f, records[start:start + MAX_BATCH]))
        return results

    def _upsert_chunk(self, role: str, f: Any, chunk: Sequence[Any]) -> list[Receipt | ConnectorError]:
        code_field = f.sku if role == "items" else f.code
        values_of = (lambda r: m.item_values(r, f)) if role == "items" else (lambda r: m.warehouse_values(r, f))
        label = "Item" if role == "items" else "Warehouse"
        codes = [r.natural_key for r in chunk]
        results: list[Receipt | ConnectorError | None] = [None] * len(chunk)
        try:
            flt = {"rel": "and", "cond": [{"field": code_field, "method": "in", "value": list(dict.fromkeys(codes))}]}
            existing: dict[str, dict[str, Any]] = {}
            for row in self.client.iterate(f.entry_id, filter=flt):
                existing.setdefault(str(m.text(row, code_field)), row)
        except ConnectorError as exc:
            return [exc] * len(chunk)
        missing: list[int] = []
        for position, record in enumerate(chunk):
            code, name = codes[position], f"{label} {codes[position]!r}"
            row = existing.get(code)
            if row is None:
                missing.append(position)
                continue
            changed = m.changes(values_of(record), row)
            try:
                if changed:
                    self.client.update(f.entry_id, row["_id"], changed, record=name)
                results[position] = Receipt(key=code, document_id=row["_id"], document_number=code, created=False)
            except ConnectorError as exc:
                results[position] = exc
        if missing:
            data = [m.wrap(values_of(chunk[p])) for p in missing]
            content = json.dumps([[codes[p], content_hash(chunk[p])] for p in missing])
            try:
                ids = self.client.batch_create(f.entry_id, data, transaction_id=_transaction(
                    self.settings.app_id, f.entry_id, [content]))
                for position, data_id in zip(missing, ids, strict=True):
                    results[position] = Receipt(key=codes[position], document_id=data_id,
                                                document_number=codes[position], created=True)
            except Rejected:  # refused as a whole: one create each
                for position, values in zip(missing, data, strict=True):
                    try:
                        row = self.client.create(f.entry_id, values, record=f"{label} {codes[position]!r}")
                        results[position] = Receipt(key=codes[position], document_id=row["_id"],
                                                    document_number=codes[position], created=True)
                    except ConnectorError as exc:
                        results[position] = exc
            except ConnectorError as exc:
                for position in missing:
                    results[position] = exc
        return [r for r in results if r is not None]

    # -- webhooks -----------------------------------------------------------------------------------

    def receive_webhook(self, request: WebhookRequest) -> WebhookEvent:
        secret = self.settings.webhook_secret.get_secret_value() if self.settings.webhook_secret else None
        push = verify(request, secret, max_age=self.settings.webhook_max_age_seconds)
        data = push.data if isinstance(push.data, dict) else {}
        entry_id = data.get("entryId")
        roles = {"items": Entity.ITEMS, "warehouses": Entity.WAREHOUSES, "movements": Entity.MOVEMENTS}
        role = next((r for r in roles if self._configured(r).entry_id == entry_id), None)
        event = WebhookEvent(delivery_id=push.delivery_id, operation=push.op, entity=None, occurred_at=push.op_time)
        if push.op == "form_update" and role is not None and isinstance(data.get("widgets"), list):
            self._refresh(role, data["widgets"])
        if role is None or push.op not in RECORD_OPS | {"data_remove"}:
            return event
        # Pushed records are keyed by alias or widget ID, never by label: decoding needs the field
        # names, read once per form through widget/list and cached (only after the signature and
        # timestamp verified, so a forged request never causes a vendor call). A failed read
        # raises its own error and the hub answers non-2xx, so Jiandaoyun sends the push again.
        f = self.form(role)
        label = self._label(role, f, data)
        if push.op == "data_remove":
            # the natural key a read gives: a movement's reference (参考号, else 单号, else _id), a code
            key = m.movement_label(data, f) if role == "movements" else m.text(data, f.sku if role == "items" else f.code)
            if key is None:
                error = RecordError(roles[role].value, label, f"{label}: the removed record carries no key field",
                                    raw=data)
                return WebhookEvent(push.delivery_id, push.op, roles[role], errors=(error,), occurred_at=push.op_time)
            return WebhookEvent(push.delivery_id, push.op, roles[role], removed=(key,), occurred_at=push.op_time)
        try:
            record = self._mapper(role, f)(data)
        except m.MappingError as exc:
            error = RecordError(roles[role].value, label, f"{label}: {exc}", field=exc.field, raw=data)
            return WebhookEvent(push.delivery_id, push.op, roles[role], errors=(error,), occurred_at=push.op_time)
        return WebhookEvent(push.delivery_id, push.op, roles[role], records=(record,), occurred_at=push.op_time)

    def _refresh(self, role: str, widgets: list[Any]) -> None:
        """A ``form_update`` push carries the form's widgets: re-resolve from them (no call)."""
        try:
            resolved = resolve(self._configured(role), widgets, role)
        except ConfigError as exc:
            log.warning("[%s] form_update of %s: %s; keeping the earlier field names", self.name, role, exc)
            return
        with self._lock:
            self._resolved[role] = resolved

    def close(self) -> None:
        self.client.close()


def resolve(form: BaseModel, widgets: Sequence[Any], role: str) -> Any:
    """``form`` with each field reference replaced by the matching widget's ``name``: by widget ID,
    then alias (``name``), then label (which must be unique). Missing → ConfigError."""
    updates: dict[str, Any] = {}
    top = [w for w in widgets if isinstance(w, Mapping)]
    lines = None
    if isinstance(form, MovementForm):
        lines = _match(top, form.lines, role, "lines")
        updates["lines"] = lines["name"]
    for field_name in type(form).model_fields:
        if field_name in _NOT_FIELDS or field_name == "lines":
            continue
        reference = getattr(form, field_name)
        if reference is None:
            continue
        if field_name in _LINE_FIELDS and lines is not None:
            items = [w for w in lines.get("items") or [] if isinstance(w, Mapping)]
            updates[field_name] = _match(items, reference, role, field_name)["name"]
        else:
            updates[field_name] = _match(top, reference, role, field_name)["name"]
    return form.model_copy(update=updates)


def _match(widgets: Sequence[Mapping[str, Any]], reference: str, role: str, field_name: str) -> Mapping[str, Any]:
    found = next(([w] for key in ("widgetName", "name") for w in widgets if w.get(key) == reference), None) or [
        w for w in widgets if w.get("label") == reference]
    if len(found) == 1:
        widget = found[0]
        allowed = _TYPES.get(field_name, _TEXT)
        kind = widget.get("type")
        if kind is not None and kind not in allowed:
            raise ConfigError(f"{role}.{field_name}: field {reference!r} ({widget.get('name')}) is a {kind} field; "
                              f"expected {' or '.join(sorted(allowed))}")
        return widget
    if len(found) > 1:
        raise ConfigError(f"{role}.{field_name}: several fields are labelled {reference!r}; name it by alias or "
                          "widget ID")
    known = ", ".join(f"{w.get('label')} ({w.get('name')})" for w in widgets)
    raise ConfigError(f"{role}.{field_name}: the form has no field {reference!r} (fields: {known})")


def _check_key(key: str) -> str:
    if not isinstance(key, str) or not key.strip():
        raise ValueError("an idempotency key must be non-empty text")
    return key


def _transaction(app_id: str, entry_id: str, parts: Sequence[str]) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"erphub:jiandaoyun:{app_id}:{entry_id}:" + "\x1f".join(parts)))


__all__ = ["ItemForm", "JiandaoyunConnector", "LedgerForm", "MovementForm", "WarehouseForm", "resolve"]
