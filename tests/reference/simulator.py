"""The reference ERP: a tiny JSON-over-HTTP inventory API, just faithful enough to prove the
conformance suite (test-only, not shipped). Built on the sandbox harness like a vendor simulator.

Protocol
  ``POST /api/login`` ``{"user", "password"}`` → ``{"ok": true, "session": token}``; every other
  call sends ``X-Session: token`` (an unknown or expired one → 401 ``SESSION``).
  ``GET /api/ping`` → ``{"ok": true, "version": ...}``.
  ``GET /api/{items,warehouses,partners,documents}`` with ``limit`` (≤ 100), ``offset`` (the
  paging token: ``next`` of the previous answer), ``modified_since`` (ISO 8601, inclusive) and,
  for documents, ``ext_key`` → ``{"ok": true, "rows": [...], "next": "10" | null}``. Rows are
  ordered by code (documents by id); every row has ``modified`` (ISO 8601, +08:00).
  ``GET /api/stock`` (``limit``, ``offset``, ``warehouse``) → on-hand rows and ``as_of``.
  ``POST /api/documents`` ``{"type", "ext_key", "reference", "date", "partner", "lines": [...]}``
  creates and posts a stock document in one call. ``ext_key`` alone is not de-duplicated (a
  client that sends no ``Idempotency-Key`` must look before it sends, as with Kingdee and SAP B1).
  With an ``Idempotency-Key`` header (≤ 255 characters, as Stripe's): the first request that
  *creates* a document under a key is remembered, and a later request with the same key and the
  same body creates nothing and answers that same document again, with
  ``Idempotent-Replayed: true``; the same key with a different body is refused (400
  ``E_IDEMPOTENCY``). A request that was refused (negative stock, unknown item, ...) created
  nothing and is not remembered, so it may be sent again once its cause is fixed (unlike Stripe,
  which also replays stored errors; like U8's ``biz_id``: "will not create two resources"). The
  key is checked and the document created under one lock, so concurrent requests with one key
  create one document. A commit whose answer is lost (``drop_after_commit``) is remembered too.
  ``POST /api/{items,warehouses}`` ``{"rows": [...]}`` (≤ 100 rows) creates or updates master
  records by ``code``: ``{"ok": true, "results": [...]}``, one result per row, in order:
  ``{"ok": true, "code", "created": bool, "changed": bool}`` or ``{"ok": false, "code": "E_...",
  "message", "field"}`` for a row refused on its own (``E_UNIT``: a unit the company does not
  know; ``E_INVALID``: a missing code or name). A row identical to the stored one changes
  nothing (its ``modified`` stamp stays). The known units are the constructor's ``units`` plus
  those of seeded items.

Business failures answer HTTP 200 with ``{"ok": false, "code": "E_...", "message": ...}``
(``E_STOCK_NEGATIVE``, ``E_ITEM``, ``E_PARTNER``, ``E_WAREHOUSE``, ``E_INVALID``). Auth failures
are 401 with code ``AUTH`` (bad login) or ``SESSION``. Injected faults answer
``{"ok": false, "code": "FAULT", ...}`` with the plan's status and ``Retry-After``.
"""
from __future__ import annotations

import itertools
from collections.abc import Mapping
from datetime import datetime, timedelta, timezone
from decimal import Decimal, InvalidOperation
from typing import Any

from werkzeug.exceptions import HTTPException
from werkzeug.routing import Rule
from werkzeug.wrappers import Request, Response

from sandbox.base import Simulator
from sandbox.faults import Decision, DecisionKind, RequestInfo
from sandbox.jsonio import decimal_text, json_response, read_json
from sandbox.ledger import Entry, LedgerError, NegativeStock, StockKey
from sandbox.world import World

USER, PASSWORD = "conformance", "ref-secret-42"
MAX_LIMIT = 100
MAX_UPSERT = 100
# Units a fresh company knows (the vendor's unit list; seeded items add theirs).
DEFAULT_UNITS = ("PCS", "EA", "SET", "PAIR", "BOX", "CTN", "PACK", "DOZ", "KG", "G", "T", "L", "ML", "M")
ITEM_FIELDS = ("name", "uom", "spec", "barcode", "group", "lot_control")
WAREHOUSE_FIELDS = ("name", "bins")
CST = timezone(timedelta(hours=8))

# document type → (stock direction, partner role needed)
DOC_TYPES: dict[str, tuple[str, str | None]] = {
    "GRN": ("in", "supplier"),     # purchase receipt
    "PRT": ("out", "supplier"),    # purchase return
    "DN": ("out", "customer"),     # sales issue
    "SRT": ("in", "customer"),     # sales return
    "TRF": ("move", None),         # transfer
    "CNT+": ("in", None),          # count gain
    "CNT-": ("out", None),         # count loss
    "MRC": ("in", None),           # misc receipt
    "MIS": ("out", None),          # misc issue
    "SCR": ("out", None),          # scrap
}


class Refused(Exception):
    def __init__(self, code: str, message: str, status: int = 200) -> None:
        super().__init__(message)
        self.code, self.status = code, status


def stamp(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, tz=CST).isoformat()


class ReferenceErp(Simulator):
    name = "reference"

    def __init__(self, *, units: Any = DEFAULT_UNITS, **kwargs: Any) -> None:
        self.units: set[str] = set(units)
        self.items: dict[str, dict[str, Any]] = {}
        self.warehouses: dict[str, dict[str, Any]] = {}
        self.partners: dict[str, dict[str, Any]] = {}
        self.documents: list[dict[str, Any]] = []
        # the ERP's indexes: ext_key -> its documents (creation order); Idempotency-Key -> the
        # body that created a document and that document
        self._by_ext_key: dict[str, list[dict[str, Any]]] = {}
        self._idempotent: dict[str, tuple[Any, dict[str, Any]]] = {}
        self._ids = itertools.count(1)
        super().__init__(**kwargs)

    # --- harness hooks ------------------------------------------------------------------------

    def routes(self) -> list[Rule]:
        return [
            Rule("/api/login", endpoint="login", methods=["POST"]),
            Rule("/api/ping", endpoint="ping", methods=["GET"]),
            Rule("/api/<any(items,warehouses,partners):entity>", endpoint="list_master", methods=["GET"]),
            Rule("/api/<any(items,warehouses):entity>", endpoint="upsert_master", methods=["POST"]),
            Rule("/api/stock", endpoint="stock", methods=["GET"]),
            Rule("/api/documents", endpoint="list_documents", methods=["GET"]),
            Rule("/api/documents", endpoint="create_document", methods=["POST"]),
        ]

    def describe(self, request: Request, endpoint: str, values: Mapping[str, Any]) -> RequestInfo:
        return RequestInfo(request.method, request.path, operation=endpoint,
                           session=request.headers.get("X-Session"), client=request.headers.get("X-Session"))

    def fault_response(self, request: Request, decision: Decision) -> Response:
        if decision.body is not None:
            return super().fault_response(request, decision)
        code = "SESSION" if decision.kind is DecisionKind.SESSION_EXPIRED else "FAULT"
        return json_response({"ok": False, "code": code, "message": f"injected {decision.kind.value}"},
                             status=decision.status, headers=dict(decision.headers))

    def error_response(self, request: Request, exc: Exception) -> Response:
        if isinstance(exc, Refused):
            return json_response({"ok": False, "code": exc.code, "message": str(exc)}, status=exc.status)
        if isinstance(exc, HTTPException):
            return json_response({"ok": False, "code": "HTTP", "message": exc.description or ""},
                                 status=exc.code or 500)
        return super().error_response(request, exc)

    def seed_world(self, world: World) -> None:
        now = self.clock()
        with self.lock:
            for item in world.items:
                self.units.add(item.unit)
                self.items[item.sku] = {"code": item.sku, "name": item.name, "uom": item.unit, "spec": item.spec,
                                        "barcode": item.barcode, "group": item.category,
                                        "lot_control": item.batch_managed, "modified": now}
            for wh in world.warehouses:
                self.warehouses[wh.code] = {"code": wh.code, "name": wh.name, "bins": list(wh.bins),
                                            "modified": now}
            for p in world.partners:
                self.partners[p.code] = {"code": p.code, "name": p.name, "role": p.role, "modified": now}
        self.ledger.seed_balances({StockKey(b.sku, b.warehouse, b.bin, b.lot): b.qty for b in world.balances})

    def touch(self, entity: str, key: str, at: float | None = None) -> None:
        table = {"items": self.items, "warehouses": self.warehouses, "partners": self.partners}.get(entity)
        if table is None:
            raise ValueError(f"{entity}: not a master entity (items, warehouses, partners)")
        with self.lock:
            if key not in table:
                raise ValueError(f"{entity} {key!r} does not exist")
            table[key]["modified"] = self.clock() if at is None else float(at)

    def documents_for(self, reference: str) -> list[str]:
        with self.lock:
            return [d["number"] for d in self._with_ext_key(reference)]

    def _with_ext_key(self, ext_key: str) -> list[dict[str, Any]]:
        """Documents whose ext_key is ``ext_key``, through the index (call with the lock held; a
        test that edits a document's ext_key in place is still answered right)."""
        return [d for d in self._by_ext_key.get(ext_key, ()) if d["ext_key"] == ext_key]

    def reset(self) -> None:
        with self.lock:
            self.items.clear()
            self.warehouses.clear()
            self.partners.clear()
            self.documents.clear()
            self._by_ext_key.clear()
            self._idempotent.clear()
        super().reset()

    # --- endpoints --------------------------------------------------------------------------

    def login(self, request: Request) -> Response:
        body = read_json(request)
        if not isinstance(body, dict) or body.get("user") != USER or body.get("password") != PASSWORD:
            raise Refused("AUTH", "unknown user or wrong password", status=401)
        return json_response({"ok": True, "session": self.sessions.create({"user": USER}).token})

    def _session(self, request: Request) -> None:
        if self.sessions.get(request.headers.get("X-Session")) is None:
            raise Refused("SESSION", "session expired or unknown; log in again", status=401)

    def ping(self, request: Request) -> Response:
        self._session(request)
        return json_response({"ok": True, "version": "reference-1.0"})

    def _page(self, request: Request, rows: list[dict[str, Any]]) -> Response:
        try:
            offset = int(request.args.get("offset", "0"))
            limit = min(int(request.args.get("limit", "50")), MAX_LIMIT)
        except ValueError:
            raise Refused("E_INVALID", "offset and limit must be integers", status=400) from None
        if offset < 0 or limit < 1:
            raise Refused("E_INVALID", "offset must be ≥ 0 and limit ≥ 1", status=400)
        since_text = request.args.get("modified_since")
        if since_text:
            try:
                since = datetime.fromisoformat(since_text)
            except ValueError:
                raise Refused("E_INVALID", f"modified_since {since_text!r} is not ISO 8601", status=400) from None
            if since.tzinfo is None:
                raise Refused("E_INVALID", "modified_since needs a UTC offset", status=400)
            rows = [r for r in rows if r["modified"] >= since.timestamp()]
        chunk = rows[offset: offset + limit]
        more = offset + limit < len(rows)
        out = [{**r, "modified": stamp(r["modified"])} for r in chunk]
        return json_response({"ok": True, "rows": out, "next": str(offset + limit) if more else None})

    def list_master(self, request: Request, entity: str) -> Response:
        self._session(request)
        table = {"items": self.items, "warehouses": self.warehouses, "partners": self.partners}[entity]
        with self.lock:
            rows = [dict(table[k]) for k in sorted(table)]
        return self._page(request, rows)

    def list_documents(self, request: Request) -> Response:
        self._session(request)
        ext_key = request.args.get("ext_key")
        with self.lock:
            rows = [dict(d) for d in (self.documents if ext_key is None else self._with_ext_key(ext_key))]
        for row in rows:
            partner = self.partners.get(row["partner"]) if row["partner"] else None
            row["partner"] = None if partner is None else {k: partner[k] for k in ("code", "name", "role")}
        return self._page(request, rows)

    def upsert_master(self, request: Request, entity: str) -> Response:
        self._session(request)
        body = read_json(request)
        rows = body.get("rows") if isinstance(body, dict) else None
        if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
            raise Refused("E_INVALID", "an upsert is {\"rows\": [objects]}", status=400)
        if len(rows) > MAX_UPSERT:
            raise Refused("E_INVALID", f"at most {MAX_UPSERT} rows per call, got {len(rows)}", status=400)
        table, fields = (self.items, ITEM_FIELDS) if entity == "items" else (self.warehouses, WAREHOUSE_FIELDS)
        results = []
        with self.lock:
            for n, row in enumerate(rows, start=1):
                problem = self._master_problem(entity, row)
                if problem is not None:
                    field, code, message = problem
                    results.append({"ok": False, "code": code, "field": field, "message": f"row {n}: {message}"})
                    continue
                clean = {f: (list(row.get(f) or []) if f == "bins" else row.get(f)) for f in fields}
                if entity == "items":
                    clean["lot_control"] = bool(clean["lot_control"])
                stored = table.get(row["code"])
                if stored is None:
                    table[row["code"]] = {"code": row["code"], **clean, "modified": self.clock()}
                    results.append({"ok": True, "code": row["code"], "created": True, "changed": True})
                elif any(stored.get(f) != clean[f] for f in fields):
                    stored.update(clean, modified=self.clock())
                    results.append({"ok": True, "code": row["code"], "created": False, "changed": True})
                else:
                    results.append({"ok": True, "code": row["code"], "created": False, "changed": False})
        self.after_commit(request)
        return json_response({"ok": True, "results": results})

    def _master_problem(self, entity: str, row: Mapping[str, Any]) -> tuple[str, str, str] | None:
        """(field, vendor code, message) of a row this company refuses, or None."""
        for field in ("code", "name"):
            if not isinstance(row.get(field), str) or not row[field].strip():
                return field, "E_INVALID", f"{field} is required"
        if entity == "items":
            uom = row.get("uom")
            if uom not in self.units:
                return "uom", "E_UNIT", f"item {row['code']!r}: unknown unit of measure {uom!r}"
        elif not isinstance(row.get("bins") or [], list):
            return "bins", "E_INVALID", "bins is a list of bin codes"
        return None

    def stock(self, request: Request) -> Response:
        self._session(request)
        warehouse = request.args.get("warehouse")
        rows = [
            {"item": k.sku, "warehouse": k.warehouse, "bin": k.bin, "lot": k.lot, "qty": decimal_text(q),
             "uom": self.items[k.sku]["uom"] if k.sku in self.items else None, "modified": self.clock()}
            for k, q in self.ledger.balances().items() if q != 0 and (warehouse is None or k.warehouse == warehouse)
        ]
        response = self._page(request, rows)
        return response

    def create_document(self, request: Request) -> Response:
        self._session(request)
        body = read_json(request)
        if not isinstance(body, dict):
            raise Refused("E_INVALID", "a document is a JSON object", status=400)
        idempotency_key = request.headers.get("Idempotency-Key")
        if idempotency_key is not None and not 0 < len(idempotency_key) <= 255:
            raise Refused("E_INVALID", "Idempotency-Key must be 1 to 255 characters", status=400)
        if idempotency_key is not None:
            with self.lock:
                replay = self._replay(idempotency_key, body)
            if replay is not None:
                return replay
        doc_type = body.get("type")
        if doc_type not in DOC_TYPES:
            raise Refused("E_INVALID", f"unknown document type {doc_type!r}")
        direction, role = DOC_TYPES[doc_type]
        partner = body.get("partner")
        if role is not None:
            known = self.partners.get(partner or "")
            if known is None or known["role"] != role:
                raise Refused("E_PARTNER", f"{doc_type} needs a {role}; {partner!r} is not one")
        lines = body.get("lines") or []
        if not lines:
            raise Refused("E_INVALID", "a document needs lines")
        entries = []
        for n, line in enumerate(lines, start=1):
            item = self.items.get(line.get("item", ""))
            if item is None:
                raise Refused("E_ITEM", f"line {n}: unknown item {line.get('item')!r}")
            try:
                qty = Decimal(str(line["qty"]))
            except (KeyError, InvalidOperation):
                raise Refused("E_INVALID", f"line {n}: qty must be a number") from None
            if qty <= 0 or line.get("uom") != item["uom"]:
                raise Refused("E_INVALID", f"line {n}: qty must be positive, in {item['uom']}")
            sides = {"in": [("to_wh", 1)], "out": [("from_wh", -1)], "move": [("from_wh", -1), ("to_wh", 1)]}
            for field, sign in sides[direction]:
                if line.get(field) not in self.warehouses:
                    raise Refused("E_WAREHOUSE", f"line {n}: unknown warehouse {line.get(field)!r}")
                entries.append(Entry(item["code"], line[field], qty * sign))
        with self.lock:
            if idempotency_key is not None:  # a request with this key may have committed meanwhile
                replay = self._replay(idempotency_key, body)
                if replay is not None:
                    return replay
            doc_id = next(self._ids)
            number = f"{doc_type}-{doc_id:06d}"
            try:
                self.ledger.post(number, entries)
            except NegativeStock as exc:
                raise Refused("E_STOCK_NEGATIVE", f"库存不足: {exc}") from None
            except LedgerError as exc:
                raise Refused("E_INVALID", str(exc)) from None
            document = {
                "id": doc_id, "number": number, "type": doc_type, "ext_key": body.get("ext_key"),
                "reference": body.get("reference"), "date": body.get("date"), "partner": partner,
                "memo": body.get("memo"), "lines": lines, "status": "posted", "modified": self.clock(),
            }
            self.documents.append(document)
            self._by_ext_key.setdefault(document["ext_key"], []).append(document)
            if idempotency_key is not None:
                self._idempotent[idempotency_key] = (body, document)
        self.after_commit(request)
        return json_response({"ok": True, "id": doc_id, "number": number, "status": "posted"})

    def _replay(self, key: str, body: Any) -> Response | None:
        """The answer for a document already created under Idempotency-Key ``key``, or None (call
        with the lock held)."""
        seen = self._idempotent.get(key)
        if seen is None:
            return None
        first_body, document = seen
        if first_body != body:
            raise Refused("E_IDEMPOTENCY", f"Idempotency-Key {key!r} was used with a different document",
                          status=400)
        return json_response({"ok": True, "id": document["id"], "number": document["number"],
                              "status": document["status"]}, headers={"Idempotent-Replayed": "true"})
