"""A simulator of the Jiandaoyun (简道云) v5 Open API (``vendors/jiandaoyun.md``), over real HTTP.

Every call is ``POST /api/v5/<route>`` with a JSON body and ``Authorization: Bearer <API key>``;
success is 200 + JSON, every API error HTTP 400 ``{"code": <int>, "msg": "..."}`` (codes in
:data:`sandbox.jiandaoyun_forms.DEFAULT_CODES`, replaceable with the seed key ``error_codes``).

| route | does |
|---|---|
| ``app/list`` / ``app/entry/list`` | ``skip``, ``limit`` 1-100 (default 100) |
| ``app/entry/widget/list`` | ``widgets[{name, widgetName, label, type, items?}]``, ``sysWidgets``, ``dataModifyTime`` |
| ``app/entry/data/get`` | ``{"data": record}``; unknown ``data_id`` → 4001 |
| ``app/entry/data/list`` | ascending ``_id``, exclusive ``data_id`` cursor, ``limit`` 1-100 (default 10; more is clamped [inf]), ``fields``, ``filter`` |
| ``app/entry/data/create`` / ``update`` / ``delete`` | single writes; they push webhooks |
| ``app/entry/data/batch_create`` | ≤100, all or nothing; a ``transaction_id`` seen before returns the original answer and creates nothing [inf] |
| ``app/entry/data/batch_update`` / ``batch_delete`` | ≤100 ids; ``batch_update`` refuses subforms; no webhooks |

The v1 routes (``POST /api/v1/app/{app}/entry/{entry}/widgets|data|data_retrieve|data_create|
data_update|data_delete|data_batch_*``, ``/api/v1/app/retrieve_all``, ``/api/v1/app/{app}/entry_retrieve``)
answer the same, with the ids from the path, ``widgets`` without ``sysWidgets``, and one shared
limit of 5 calls a second (``rate_limits`` class ``v1``).

Records are read plain (keyed by alias or widget ID, system fields ``_id appId entryId creator
updater createTime updateTime``), written wrapped ``{"value": v}``; API writes run **no**
required or unique check (vendor behaviour).

Rate limits (vendor behaviour, not a fault): sliding one-second windows per API key and endpoint
class, reads 30, single writes 20, batch writes 10, plus 50 per company; over the limit the
answer is 400 ``{"code": 8303, "msg": "超出请求频率限制"}`` with no ``Retry-After``. They run on
real time (``time.monotonic``, or ``limiter_clock``), not the simulator's clock, so a frozen test
clock does not freeze the windows. ``rate_limits=None`` (or the seed key ``rate_limits: null``) turns them off;
``{"read": 30, "write": 20, "batch": 10, "company": 50}`` sets them. Injected faults
(``/_admin/faults``) come on top: a rate-limit rule answers 8303 with the rule's status (429 by
default, as the documented concurrency limit) and its ``Retry-After``; an error rule answers its
status with ``{"code": <status>, "msg"}`` unless the rule gives a body (e.g. ``{"code": 8303}``
with status 400 for "fail the next N calls with 8303").

Stock (INFERRED: the tenant's automation, not Jiandaoyun's): Jiandaoyun has no stock rules. The
reference app's tenant runs an automation (智能助手) on the 出入库单 form that posts each
movement to the stock ledger (:class:`sandbox.ledger.Ledger`) and keeps the 库存台账 form in
step. A movement is posted when it is created (single or batch), re-posted when updated,
reversed when deleted and posted again when recovered; 业务类型 gives the direction (see
``DIRECTIONS``; 调拨 moves from 调出仓库编码 to 调入仓库编码, the others use 仓库编码). A posting
that would take stock negative (ledger policy) is refused with 400 ``{"code": 4000}`` and nothing
is saved; a batch is refused as a whole. Records of unknown 业务类型 are plain data.

Admin (on top of :mod:`sandbox.admin`):

| route | does |
|---|---|
| ``POST /_admin/seed`` | base keys plus ``app`` (JSON app definition, replaces the reference app), ``api_keys``, ``rate_limits``, ``error_codes``, ``aliases`` (``{form: {widget: alias or null}}``; pushes ``form_update``), ``webhooks`` (``{form: config}``, as below), ``webhook_delivery`` |
| ``GET /_admin/webhooks`` | hook settings per form, delivery settings and ``deliveries`` (every attempt: ``deliver_id, op, entry_id, data_id, attempt, status, error, timestamp, nonce, url, signature_ok, at``); ``?wait=<s>`` first waits until no delivery is pending |
| ``POST /_admin/webhooks`` | ``{"form": "items", "url": "http://...", "secret": "...", "ops": [...], "duplicate": false, "bad_signature": false, "stale_seconds": 0}`` (``url: null`` removes the hook); or ``{"delivery": {"retries": 4, "backoff": [0.05, 0.1], "timeout": 2}}`` |
| ``POST /_admin/webhooks/test`` | ``{"form": "items"}``: the settings page's connection test, an event ``op: data_test`` without data |
| ``POST /_admin/records`` | an edit in the Jiandaoyun UI: ``{"form", "op": "create"/"update"/"remove"/"recover", "data_id"?, "data"? (wrapped values)}``; pushes like an API single write; answers ``{"data": record}`` |

``form`` is a role (``items``, ``warehouses``, ``movements``, ``ledger``), an entry id or a form
name. ``touch(entity, key, at)`` is a UI edit too and pushes ``data_update``. The same from Python:
``sim.configure_webhook(form, url=..., secret=..., duplicate=..., bad_signature=..., stale_seconds=...)``,
``sim.webhooks.set_delivery({...})``, ``sim.send_test(form)``, ``sim.ui_edit(form, op, data_id=, data=)``,
``sim.set_aliases(form, {...})``, ``sim.webhooks.deliveries()``, ``sim.webhooks.wait_idle(seconds)``.
A push's ``timestamp`` (and ``opTime``) come from the simulator's clock: run it on real time
(the default) when the receiver checks freshness. Delivery details:
:mod:`sandbox.jiandaoyun_webhooks`.
"""
from __future__ import annotations

import json
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from decimal import Decimal
from typing import Any

from werkzeug.exceptions import HTTPException
from werkzeug.routing import Rule
from werkzeug.wrappers import Request, Response

from sandbox.base import Simulator
from sandbox.faults import Decision, DecisionKind, RequestInfo
from sandbox.jiandaoyun_forms import (
    DEFAULT_CODES,
    DIRECTIONS,
    Form,
    IdMaker,
    JdyError,
    Record,
    Widget,
    compile_filter,
    iso_ms,
    reference_app,
)
from sandbox.jiandaoyun_webhooks import WebhookSender
from sandbox.ledger import Entry, LedgerError, NegativeStock, StockKey, to_decimal
from sandbox.world import World, WorldBalance

DEFAULT_API_KEY = "jdy-sim-key-0123456789abcdef"
COMPANY_CREATOR = "jdy_admin"
RATE_LIMITED_MSG = "超出请求频率限制"
DEFAULT_RATE_LIMITS = {"read": 30, "write": 20, "batch": 10, "v1": 5, "company": 50}
MAX_BATCH = 100

# v1 route (the last path segment) → the v5 route it became
V1_ROUTES: dict[str, str] = {
    "retrieve_all": "app/list", "entry_retrieve": "app/entry/list", "widgets": "app/entry/widget/list",
    "data": "app/entry/data/list", "data_retrieve": "app/entry/data/get", "data_create": "app/entry/data/create",
    "data_update": "app/entry/data/update", "data_delete": "app/entry/data/delete",
    "data_batch_create": "app/entry/data/batch_create", "data_batch_update": "app/entry/data/batch_update",
    "data_batch_delete": "app/entry/data/batch_delete",
}

# route → (endpoint class, handler name)
ROUTES: dict[str, tuple[str, str]] = {
    "app/list": ("read", "_app_list"),
    "app/entry/list": ("read", "_entry_list"),
    "app/entry/widget/list": ("read", "_widget_list"),
    "app/entry/data/get": ("read", "_data_get"),
    "app/entry/data/list": ("read", "_data_list"),
    "app/entry/data/create": ("write", "_data_create"),
    "app/entry/data/update": ("write", "_data_update"),
    "app/entry/data/delete": ("write", "_data_delete"),
    "app/entry/data/batch_create": ("batch", "_batch_create"),
    "app/entry/data/batch_update": ("batch", "_batch_update"),
    "app/entry/data/batch_delete": ("batch", "_batch_delete"),
}


def _wire(value: Any) -> Any:
    if isinstance(value, Decimal):  # Jiandaoyun numbers are JSON doubles
        return int(value) if value == value.to_integral_value() and abs(value) < 2**53 else float(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def dumps(data: Any) -> str:
    """Compact UTF-8 JSON, numbers as JSON numbers."""
    return json.dumps(data, ensure_ascii=False, separators=(",", ":"), default=_wire)


def _answer(data: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> Response:
    return Response(dumps(data), status=status, headers=dict(headers or {}),
                    content_type="application/json; charset=utf-8")


class _Limiter:
    """Sliding one-second windows per (key, class) and per company, on real time."""

    def __init__(self, limits: Mapping[str, int] | None, clock: Callable[[], float] = time.monotonic) -> None:
        self._lock = threading.Lock()
        self._clock = clock
        self.set(limits)

    def set(self, limits: Mapping[str, int] | None) -> None:
        if limits is not None:
            unknown = sorted(set(limits) - set(DEFAULT_RATE_LIMITS))
            if unknown:
                raise ValueError(f"rate_limits.{unknown[0]}: unknown class (known: read, write, batch, v1, company)")
            for name, value in limits.items():
                if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                    raise ValueError(f"rate_limits.{name}: a positive integer of calls per second")
            limits = {**DEFAULT_RATE_LIMITS, **limits}
        with self._lock:
            self.limits = dict(limits) if limits is not None else None
            self._windows: dict[tuple[str, str], deque[float]] = {}

    def admit(self, key: str, kind: str) -> bool:
        if self.limits is None:
            return True
        now = self._clock()
        with self._lock:
            windows = [(self._windows.setdefault((key, kind), deque()), self.limits[kind]),
                       (self._windows.setdefault(("", "company"), deque()), self.limits["company"])]
            for window, limit in windows:
                while window and window[0] <= now - 1.0:
                    window.popleft()
                if len(window) >= limit:
                    return False
            for window, _ in windows:
                window.append(now)
            return True


class JiandaoyunSimulator(Simulator):
    name = "jiandaoyun"

    def __init__(self, *, allow_negative: bool = False, clock: Callable[[], float] = time.time,
                 sleep: Callable[[float], None] = time.sleep, api_keys: Iterable[str] = (DEFAULT_API_KEY,),
                 rate_limits: Mapping[str, int] | None = DEFAULT_RATE_LIMITS,
                 webhook_retries: int = 4, webhook_backoff: Iterable[float] = (2.0, 4.0, 8.0, 16.0),
                 webhook_timeout: float = 5.0, session_idle_timeout: float | None = None,
                 limiter_clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__(allow_negative=allow_negative, clock=clock, sleep=sleep,
                         session_idle_timeout=session_idle_timeout)
        self._defaults = (tuple(api_keys), None if rate_limits is None else dict(rate_limits))
        self.api_keys: set[str] = set(api_keys)
        self.limiter = _Limiter(rate_limits, limiter_clock)
        self.codes = dict(DEFAULT_CODES)
        self.new_id = IdMaker(clock)
        self.webhooks = WebhookSender(clock, dumps, retries=webhook_retries, backoff=webhook_backoff,
                                      timeout=webhook_timeout)
        self._transactions: dict[tuple[str, str], dict[str, Any]] = {}
        self.apps: dict[str, tuple[str, dict[str, Form]]] = {}
        self.load_app(reference_app())

    # --- the tenant's apps -----------------------------------------------------------------

    def load_app(self, definition: Mapping[str, Any]) -> None:
        """Replace every app with ``definition`` (``{"app_id", "name", "forms": [{"entry_id", "name",
        "role"?, "widgets": [{"widgetName", "label", "type", "alias"?, "items"?, "target"?}]}]}``)."""
        try:
            forms = {f["entry_id"]: Form(definition["app_id"], f["entry_id"], f["name"],
                                         [Widget.from_dict(w) for w in f["widgets"]], role=f.get("role"),
                                         modified=self.clock())
                     for f in definition["forms"]}
            app = (str(definition["app_id"]), (str(definition.get("name", "")), forms))
        except (KeyError, TypeError) as exc:
            raise ValueError(f"app: incomplete app definition ({exc!r})") from None
        with self.lock:
            self.apps = dict([app])
            self._transactions.clear()
            self._ledger_rows: dict[StockKey, str] = {}
            self._openings = 0
            self._units: tuple[Any, dict[str, Any]] = (None, {})

    def forms(self) -> list[Form]:
        return [form for _, forms in self.apps.values() for form in forms.values()]

    def form(self, which: str) -> Form:
        """A form by role (``items``...), entry id or name."""
        for form in self.forms():
            if which in (form.role, form.entry_id, form.name):
                return form
        raise ValueError(f"no form {which!r} (roles: {', '.join(f.role or '-' for f in self.forms())})")

    def _role(self, role: str) -> Form | None:
        return next((f for f in self.forms() if f.role == role), None)

    def _linked(self, entry_id: str, data_id: str) -> bool:
        target = next((f for f in self.forms() if f.entry_id == entry_id), None)
        return target is not None and target.get(data_id) is not None

    # --- harness hooks ---------------------------------------------------------------------

    def routes(self) -> list[Rule]:
        return [Rule("/api/v5/<path:route>", endpoint="v5", methods=["POST"]),
                Rule("/api/v1/app/retrieve_all", endpoint="v1", methods=["POST"], defaults={"op": "retrieve_all"}),
                Rule("/api/v1/app/<app_id>/entry_retrieve", endpoint="v1", methods=["POST"],
                     defaults={"op": "entry_retrieve"}),
                Rule("/api/v1/app/<app_id>/entry/<entry_id>/<op>", endpoint="v1", methods=["POST"])]

    def describe(self, request: Request, endpoint: str, values: Mapping[str, Any]) -> RequestInfo:
        if endpoint == "v1":
            route = V1_ROUTES.get(values.get("op", ""))
            return RequestInfo(request.method, request.path, operation=route, client=_bearer(request))
        return RequestInfo(request.method, request.path, operation=values.get("route"), client=_bearer(request))

    def fault_response(self, request: Request, decision: Decision) -> Response:
        headers = dict(decision.headers)
        if decision.body is not None:
            body = decision.body
        elif decision.kind is DecisionKind.RATE_LIMITED:
            body = {"code": self.codes["rate_limited"], "msg": RATE_LIMITED_MSG}
        elif decision.kind is DecisionKind.SESSION_EXPIRED:
            body = {"code": self.codes["unauthorized"], "msg": "API key is invalid or disabled"}
        else:
            body = {"code": decision.status, "msg": f"injected {decision.kind.value} ({decision.rule})"}
        if isinstance(body, str):
            return Response(body, status=decision.status, headers=headers, content_type="text/plain; charset=utf-8")
        return _answer(body, decision.status, headers)

    def error_response(self, request: Request, exc: Exception) -> Response:
        if isinstance(exc, JdyError):
            return _answer({"code": exc.code, "msg": exc.msg}, exc.status)
        if isinstance(exc, HTTPException):
            return _answer({"code": exc.code or 500, "msg": exc.description or exc.name}, exc.code or 500)
        return super().error_response(request, exc)

    def seed(self, data: Mapping[str, Any]) -> None:
        rest = dict(data)
        with self.lock:
            if "app" in rest:
                self.load_app(rest.pop("app"))
            if "api_keys" in rest:
                keys = rest.pop("api_keys")
                if isinstance(keys, str) or not all(isinstance(k, str) and k for k in keys):
                    raise ValueError("api_keys: a list of API keys")
                self.api_keys = set(keys)
            if "rate_limits" in rest:
                self.limiter.set(rest.pop("rate_limits"))
            if "error_codes" in rest:
                codes = rest.pop("error_codes")
                unknown = sorted(set(codes) - set(DEFAULT_CODES))
                if unknown:
                    raise ValueError(f"error_codes.{unknown[0]}: unknown (known: {', '.join(DEFAULT_CODES)})")
                self.codes.update({k: int(v) for k, v in codes.items()})
            for which, aliases in dict(rest.pop("aliases", {})).items():
                self.set_aliases(which, aliases)
            for which, config in dict(rest.pop("webhooks", {})).items():
                self.webhooks.configure(self.form(which).entry_id, config)
            if "webhook_delivery" in rest:
                self.webhooks.set_delivery(rest.pop("webhook_delivery"))
        balances = rest.pop("balances", None)
        super().seed(rest)
        if balances:  # opening stock is movements here (base seed would set the ledger behind the forms)
            try:
                parsed = [WorldBalance(r["sku"], r["warehouse"], to_decimal(r["qty"], f"balances[{i}].qty"),
                                       r.get("bin"), r.get("lot")) for i, r in enumerate(balances)]
            except (KeyError, TypeError, AttributeError) as exc:
                raise ValueError(f"balances: each needs sku, warehouse and qty ({exc!r})") from None
            self._opening(parsed)

    def set_aliases(self, form: str, aliases: Mapping[str, str | None]) -> None:
        """A form designer saving new aliases (seed key ``aliases``): reads and pushes use them from
        now on, and the form's hook gets ``op: form_update`` with the widgets (表单事件推送)."""
        target = self.form(form)
        with self.lock:
            for widget, alias in aliases.items():
                target.set_alias(widget, alias)
            target.data_modify_time = self.clock()
            widgets = [{k: w.describe()[k] for k in ("label", "name", "type", "widgetName")} | (
                {"items": w.describe()["items"]} if w.type == "subform" else {}) for w in target.widgets]
            self.webhooks.emit(target.entry_id, "form_update", {
                "appId": target.app_id, "entryId": target.entry_id, "name": target.name,
                "createTime": iso_ms(self.clock()), "widgets": widgets})

    def seed_world(self, world: World) -> None:
        """Items → 物料, warehouses → 仓库 (partners have no form in the reference app and are
        left out), balances → one 期初 movement per warehouse, posted by the stock automation."""
        items, warehouses = self._role("items"), self._role("warehouses")
        if items is None or warehouses is None:
            raise ValueError("world: the app has no items, warehouses or movements form")
        with self.lock:
            for item in world.items:
                self._insert(items, _wrap({"物料编码": item.sku, "名称": item.name, "规格型号": item.spec,
                                           "单位": item.unit, "类别": item.category, "条形码": item.barcode,
                                           "批次管理": "是" if item.batch_managed else "否", "状态": "启用"}, items),
                             push=False)
            for wh in world.warehouses:
                self._insert(warehouses, _wrap({"仓库编码": wh.code, "仓库名称": wh.name,
                                                "库位管理": "是" if wh.bins else "否", "状态": "启用"}, warehouses),
                             push=False)
            self._opening(world.balances)

    def _opening(self, balances: Iterable[WorldBalance]) -> None:
        """Opening stock as one 期初 movement per warehouse, posted by the stock automation, so the
        ledger form and a recomputation from movements both start from it."""
        movements = self._role("movements")
        lines = movements.by_label("明细") if movements else None
        if movements is None or lines is None:
            raise ValueError("balances: the app has no movements form with a 明细 subform")
        by_warehouse: dict[str, list[WorldBalance]] = {}
        for balance in balances:
            by_warehouse.setdefault(balance.warehouse, []).append(balance)
        with self.lock:
            for code, rows in sorted(by_warehouse.items()):
                self._openings += 1
                data = _wrap({"业务类型": "期初", "业务日期": int(self.clock() * 1000), "仓库编码": code,
                              "参考号": f"OPENING-{code}-{self._openings}"}, movements)
                data[lines.name] = {"value": [
                    {_sub(lines, "物料编码"): {"value": b.sku}, _sub(lines, "数量"): {"value": b.qty},
                     _sub(lines, "单位"): {"value": self._unit_of(b.sku)}, _sub(lines, "批次号"): {"value": b.lot},
                     _sub(lines, "调入库位"): {"value": b.bin}} for b in rows]}
                self._insert(movements, data, push=False)

    def touch(self, entity: str, key: str, at: float | None = None) -> None:
        labels = {"items": ("items", "物料编码"), "warehouses": ("warehouses", "仓库编码")}
        if entity not in labels:
            raise ValueError(f"touch: unknown entity {entity!r} (items, warehouses)")
        role, label = labels[entity]
        form = self._role(role)
        with self.lock:
            widget = form.by_label(label) if form else None
            found = [r for r in form.live() if r.values.get(widget.widget_name) == key] if form and widget else []
            if not found:
                raise ValueError(f"touch: no {entity} with code {key!r}")
            stamp = self.clock() if at is None else float(at)
            for record in found:
                record.update_time = stamp
                record.updater = COMPANY_CREATOR
                form.data_modify_time = max(form.data_modify_time, stamp)
                self.webhooks.emit(form.entry_id, "data_update", form.render(record))

    def documents_for(self, reference: str) -> list[str]:
        form = self._role("movements")
        if form is None:
            return []
        key_widget, number_widget = form.by_label("外部单号"), form.by_label("单号")
        with self.lock:
            return [r.values.get(number_widget.widget_name) or r.id for r in form.live()
                    if key_widget is not None and number_widget is not None
                    and r.values.get(key_widget.widget_name) == reference]

    def reset(self) -> None:
        with self.lock:
            self.api_keys = set(self._defaults[0])
            self.limiter.set(self._defaults[1])
            self.codes = dict(DEFAULT_CODES)
            self.webhooks.reset()
            self.load_app(reference_app())
        super().reset()

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        request = Request(environ)
        handler = {"/_admin/webhooks": self._admin_webhooks, "/_admin/webhooks/test": self._admin_webhook_test,
                   "/_admin/records": self._admin_records}.get(request.path)
        if handler is None:
            return super().__call__(environ, start_response)
        try:
            response = handler(request)
        except (ValueError, TypeError, JdyError, LedgerError) as exc:
            response = _answer({"error": str(exc)}, 400)
        return response(environ, start_response)

    # --- admin: webhooks and UI edits ------------------------------------------------------

    def _admin_webhooks(self, request: Request) -> Response:
        if request.method == "GET":
            wait = request.args.get("wait")
            if wait:
                self.webhooks.wait_idle(float(wait))
            return _answer({**self.webhooks.describe(), "deliveries": self.webhooks.deliveries()})
        if request.method != "POST":
            return _answer({"error": "GET or POST"}, 405)
        data = _admin_json(request)
        if "delivery" in data:
            self.webhooks.set_delivery(data.pop("delivery"))
        if "form" in data:
            self.configure_webhook(str(data.pop("form")), **data)
        elif data:
            raise ValueError("webhooks: give form (and url, secret...) or delivery")
        return _answer(self.webhooks.describe())

    def configure_webhook(self, form: str, **config: Any) -> None:
        """Python twin of ``POST /_admin/webhooks``."""
        self.webhooks.configure(self.form(form).entry_id, config)

    def _admin_webhook_test(self, request: Request) -> Response:
        data = _admin_json(request)
        return _answer({"deliver_id": self.send_test(str(data.get("form", "")))})

    def send_test(self, form: str) -> str | None:
        """The 数据推送 settings page's connection test: ``op: data_test`` with no data."""
        return self.webhooks.emit(self.form(form).entry_id, "data_test", None)

    def _admin_records(self, request: Request) -> Response:
        data = _admin_json(request)
        return _answer({"data": self.ui_edit(str(data.get("form", "")), str(data.get("op", "")),
                                             data_id=data.get("data_id"), data=data.get("data"))})

    def ui_edit(self, form: str, op: str, *, data_id: str | None = None, data: Any = None) -> dict[str, Any]:
        """A change made in the Jiandaoyun UI (it pushes like a single API write)."""
        target = self.form(form)
        with self.lock:
            if op == "create":
                record = self._insert(target, data or {}, push=True)
            elif op == "update":
                record = self._update(target, self._existing(target, data_id), data or {}, push=True)
            elif op == "remove":
                record = self._remove(target, self._existing(target, data_id), push=True)
            elif op == "recover":
                record = self._recover(target, data_id, push=True)
            else:
                raise ValueError("records: op is create, update, remove or recover")
            return target.render(record)

    # --- the API ---------------------------------------------------------------------------

    def v5(self, request: Request, route: str) -> Response:
        return self._serve(request, route, "v5", {})

    def v1(self, request: Request, op: str, app_id: str | None = None, entry_id: str | None = None) -> Response:
        """The 2018 routes (``vendors/jiandaoyun.md`` §2): ids in the path, 5 calls a second for all."""
        ids = {k: v for k, v in (("app_id", app_id), ("entry_id", entry_id)) if v is not None}
        return self._serve(request, V1_ROUTES.get(op, ""), "v1", ids)

    def _serve(self, request: Request, route: str, version: str, ids: Mapping[str, str]) -> Response:
        spec = ROUTES.get(route)
        if spec is None:
            raise JdyError(404, f"no such API: {request.path}", status=404)
        kind, handler = spec
        key = _bearer(request)
        if key is None or key not in self.api_keys:
            raise JdyError(self.codes["unauthorized"], "API key is invalid or disabled")
        if not self.limiter.admit(key, kind if version == "v5" else "v1"):
            raise JdyError(self.codes["rate_limited"], RATE_LIMITED_MSG)
        body = {**self._body(request), **ids}
        reply, committed = getattr(self, handler)(body)
        if version == "v1" and route == "app/entry/widget/list":
            reply = {"widgets": reply["widgets"]}  # sysWidgets and dataModifyTime came with v2
        if committed:
            self.after_commit(request)
        return _answer(reply)

    def _body(self, request: Request) -> dict[str, Any]:
        raw = request.get_data()
        if not raw.strip():
            return {}
        try:
            data = json.loads(raw, parse_float=Decimal)
        except (UnicodeDecodeError, ValueError):
            raise JdyError(self.codes["missing_param"], "the request body is not valid JSON") from None
        if not isinstance(data, dict):
            raise JdyError(self.codes["missing_param"], "the request body must be a JSON object")
        return {k: v for k, v in data.items() if v is not None}  # null = absent

    def _need(self, body: Mapping[str, Any], name: str) -> Any:
        if name not in body or body[name] == "":
            raise JdyError(self.codes["missing_param"], f"missing parameter {name}")
        return body[name]

    def _target(self, body: Mapping[str, Any]) -> Form:
        app_id, entry_id = self._need(body, "app_id"), self._need(body, "entry_id")
        app = self.apps.get(app_id) if isinstance(app_id, str) else None
        form = app[1].get(entry_id) if app and isinstance(entry_id, str) else None
        if form is None:
            raise JdyError(self.codes["form_not_found"], f"form {entry_id!r} of app {app_id!r} does not exist")
        return form

    def _window(self, body: Mapping[str, Any], default: int) -> tuple[int, int]:
        skip, limit = body.get("skip", 0), body.get("limit", default)
        if isinstance(skip, bool) or not isinstance(skip, int) or skip < 0:
            raise JdyError(self.codes["bad_param"], "skip must be a non-negative integer")
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise JdyError(self.codes["bad_param"], "limit must be between 1 and 100")
        return skip, min(limit, 100)

    def _existing(self, form: Form, data_id: Any) -> Record:
        record = form.get(data_id)
        if record is None:
            raise JdyError(self.codes["not_found"], f"data {data_id!r} does not exist")
        return record

    def _ids(self, body: Mapping[str, Any]) -> list[str]:
        ids = self._need(body, "data_ids")
        if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids) or not ids:
            raise JdyError(self.codes["bad_param"], "data_ids must be a non-empty list of ids")
        if len(ids) > MAX_BATCH:
            raise JdyError(self.codes["bad_param"], f"at most {MAX_BATCH} data_ids per call, got {len(ids)}")
        return list(dict.fromkeys(ids))

    def _app_list(self, body: Mapping[str, Any]) -> tuple[Any, bool]:
        skip, limit = self._window(body, 100)
        apps = [{"app_id": app_id, "name": name} for app_id, (name, _) in self.apps.items()]
        return {"apps": apps[skip:skip + limit]}, False

    def _entry_list(self, body: Mapping[str, Any]) -> tuple[Any, bool]:
        app_id = self._need(body, "app_id")
        skip, limit = self._window(body, 100)
        if app_id not in self.apps:
            raise JdyError(self.codes["form_not_found"], f"app {app_id!r} does not exist")
        forms = [{"name": f.name, "app_id": app_id, "entry_id": f.entry_id} for f in self.apps[app_id][1].values()]
        return {"forms": forms[skip:skip + limit]}, False

    def _widget_list(self, body: Mapping[str, Any]) -> tuple[Any, bool]:
        form = self._target(body)
        with self.lock:
            return form.describe(), False

    def _data_get(self, body: Mapping[str, Any]) -> tuple[Any, bool]:
        form = self._target(body)
        with self.lock:
            return {"data": form.render(self._existing(form, self._need(body, "data_id")))}, False

    def _data_list(self, body: Mapping[str, Any]) -> tuple[Any, bool]:
        form = self._target(body)
        cursor = body.get("data_id") or ""
        limit = body.get("limit", 10)
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise JdyError(self.codes["bad_param"], "limit must be between 1 and 100")
        limit = min(limit, 100)
        fields = body.get("fields") or None
        if fields is not None and (not isinstance(fields, list) or not all(isinstance(f, str) for f in fields)):
            raise JdyError(self.codes["bad_param"], "fields must be a list of field names")
        if not isinstance(cursor, str):
            raise JdyError(self.codes["bad_param"], "data_id must be a data id")
        with self.lock:
            predicate = compile_filter(form, body.get("filter"))
            page = []
            for record in form.after(cursor):
                if predicate(record):
                    page.append(form.render(record, fields))
                    if len(page) == limit:
                        break
        return {"data": page}, False

    def _data_create(self, body: Mapping[str, Any]) -> tuple[Any, bool]:
        form = self._target(body)
        data = self._need(body, "data")
        creator = body.get("data_creator") or COMPANY_CREATOR
        with self.lock:
            record = self._insert(form, data, push=True, creator=str(creator))
            return {"data": form.render(record)}, True

    def _data_update(self, body: Mapping[str, Any]) -> tuple[Any, bool]:
        form = self._target(body)
        data_id, data = self._need(body, "data_id"), self._need(body, "data")
        with self.lock:
            record = self._update(form, self._existing(form, data_id), data, push=True)
            return {"data": form.render(record)}, True

    def _data_delete(self, body: Mapping[str, Any]) -> tuple[Any, bool]:
        form = self._target(body)
        with self.lock:
            self._remove(form, self._existing(form, self._need(body, "data_id")), push=True)
            return {"status": "success"}, True

    def _batch_create(self, body: Mapping[str, Any]) -> tuple[Any, bool]:
        form = self._target(body)
        data_list = self._need(body, "data_list")
        if not isinstance(data_list, list) or not data_list:
            raise JdyError(self.codes["bad_param"], "data_list must be a non-empty list")
        if len(data_list) > MAX_BATCH:
            raise JdyError(self.codes["bad_param"], f"at most {MAX_BATCH} records per batch_create, got {len(data_list)}")
        transaction = body.get("transaction_id")
        creator = str(body.get("data_creator") or COMPANY_CREATOR)
        with self.lock:
            if isinstance(transaction, str) and (form.entry_id, transaction) in self._transactions:
                return self._transactions[(form.entry_id, transaction)], False
            made: list[Record] = []
            try:
                for index, data in enumerate(data_list):
                    try:
                        made.append(self._insert(form, data, push=False, creator=creator))
                    except JdyError as exc:
                        raise JdyError(exc.code, f"data_list[{index}]: {exc.msg}", exc.status) from None
            except JdyError:
                for record in reversed(made):  # all or nothing
                    self._unpost(form, record)
                    form.discard(record.id)
                raise
            reply = {"status": "success", "success_count": len(made), "success_ids": [r.id for r in made]}
            if isinstance(transaction, str):
                self._transactions[(form.entry_id, transaction)] = reply
            return reply, True

    def _batch_update(self, body: Mapping[str, Any]) -> tuple[Any, bool]:
        form = self._target(body)
        ids, data = self._ids(body), self._need(body, "data")
        if isinstance(data, Mapping) and any((w := form.widget(k)) is not None and w.type == "subform" for k in data):
            raise JdyError(self.codes["bad_param"], "batch_update cannot change subform fields")
        with self.lock:
            records = [form.get(i) for i in ids]
            done: list[tuple[Record, dict[str, Any], float, str]] = []
            try:
                for record in records:
                    if record is not None:
                        before = (record, dict(record.values), record.update_time, record.updater)
                        self._update(form, record, data, push=False)
                        done.append(before)
            except JdyError:
                for record, values, stamp, updater in reversed(done):
                    self._unpost(form, record)
                    record.values, record.update_time, record.updater = values, stamp, updater
                    self._post(form, record.id, values)
                raise
            return {"status": "success", "success_count": len(done)}, bool(done)

    def _batch_delete(self, body: Mapping[str, Any]) -> tuple[Any, bool]:
        form = self._target(body)
        ids = self._ids(body)
        with self.lock:
            removed = 0
            for data_id in ids:
                record = form.get(data_id)
                if record is not None:
                    self._remove(form, record, push=False)
                    removed += 1
            return {"status": "success", "success_count": removed}, bool(removed)

    # --- writes and the stock automation ---------------------------------------------------

    def _insert(self, form: Form, data: Any, *, push: bool, creator: str = COMPANY_CREATOR) -> Record:
        values = form.coerce(data, new_id=self.new_id, linked=self._linked)
        for w in form.widgets:
            if w.type == "sn":
                values[w.widget_name] = form.next_serial()
        now = self.clock()
        record = Record(self.new_id(), values, creator, creator, now, now)
        self._post(form, record.id, record.values)
        form.add(record)
        return self._changed(form, record, "data_create", now, push)

    def _update(self, form: Form, record: Record, data: Any, *, push: bool) -> Record:
        known = {row["_id"]: row for w in form.widgets if w.type == "subform"
                 for row in record.values.get(w.widget_name) or []}
        changes = form.coerce(data, known_rows=known, new_id=self.new_id, linked=self._linked)
        after = {**record.values, **changes}
        ref = f"jdy:{record.id}"
        new = self._entries(form, after)
        old = self._entries(form, record.values) if self.ledger.is_posted(ref) else None
        if new != old:  # only a change to the stock effect is re-posted
            self._unpost(form, record)
            try:
                self._post(form, record.id, after)
            except JdyError:
                self._post(form, record.id, record.values)
                raise
        record.values = after
        record.update_time = self.clock()
        record.updater = COMPANY_CREATOR
        return self._changed(form, record, "data_update", record.update_time, push)

    def _remove(self, form: Form, record: Record, *, push: bool) -> Record:
        self._unpost(form, record)
        record.delete_time = self.clock()
        record.deleter = COMPANY_CREATOR
        return self._changed(form, record, "data_remove", record.delete_time, push)

    def _changed(self, form: Form, record: Record, op: str, stamp: float, push: bool) -> Record:
        """Every write moves the form's dataModifyTime; single writes and UI edits push ``op``."""
        form.data_modify_time = max(form.data_modify_time, stamp)
        if push:
            self.webhooks.emit(form.entry_id, op, form.render(record))
        return record

    def _recover(self, form: Form, data_id: Any, *, push: bool) -> Record:
        record = form.records.get(data_id) if isinstance(data_id, str) else None
        if record is None or record.delete_time is None:
            raise JdyError(self.codes["not_found"], f"data {data_id!r} is not in the recycle bin")
        self._post(form, record.id, record.values)
        record.delete_time, record.deleter = None, None
        record.update_time = self.clock()
        return self._changed(form, record, "data_recover", record.update_time, push)

    def _entries(self, form: Form, values: Mapping[str, Any]) -> list[Entry] | None:
        """What the stock automation posts for a movement's values (None: not a stock document)."""
        if form.role != "movements":
            return None

        def head(label: str) -> Any:
            w = form.by_label(label)
            return values.get(w.widget_name) if w else None

        direction = DIRECTIONS.get(head("业务类型") or "")
        lines = form.by_label("明细")
        if direction is None or lines is None:
            return None
        sub = {s.label: s.widget_name for s in lines.items}
        sides = {"in": [(head("仓库编码"), 1, "调入库位")], "out": [(head("仓库编码"), -1, "调出库位")],
                 "transfer": [(head("调出仓库编码"), -1, "调出库位"), (head("调入仓库编码"), 1, "调入库位")]}[direction]
        entries = []
        for index, row in enumerate(values.get(lines.widget_name) or [], start=1):
            sku, qty = row.get(sub.get("物料编码", "")), row.get(sub.get("数量", ""))
            if not sku or qty is None:
                raise JdyError(self.codes["submit_failed"], f"明细 row {index}: 物料编码 and 数量 are needed to post stock")
            for warehouse, sign, bin_label in sides:
                if not warehouse:
                    raise JdyError(self.codes["submit_failed"], f"{head('业务类型')}: the warehouse code is missing")
                entries.append(Entry(str(sku), str(warehouse), sign * Decimal(qty),
                                     bin=row.get(sub.get(bin_label, "")) or None,
                                     lot=row.get(sub.get("批次号", "")) or None))
        return entries or None

    def _post(self, form: Form, record_id: str, values: Mapping[str, Any]) -> None:
        entries = self._entries(form, values)
        if entries is None:
            return
        try:
            posting = self.ledger.post(f"jdy:{record_id}", entries)
        except NegativeStock as exc:
            raise JdyError(self.codes["submit_failed"], "库存不足 (stock would go negative): "
                           + "; ".join(map(str, exc.shortfalls))) from None
        self._ledger_form([e.key for e in posting.entries])

    def _unpost(self, form: Form, record: Record) -> None:
        ref = f"jdy:{record.id}"
        if form.role != "movements" or not self.ledger.is_posted(ref):
            return
        try:
            posting = self.ledger.reverse(ref)
        except NegativeStock as exc:
            raise JdyError(self.codes["submit_failed"], "库存不足 (undoing this movement would take stock negative): "
                           + "; ".join(map(str, exc.shortfalls))) from None
        self._ledger_form([e.key for e in posting.entries])

    def _unit_of(self, sku: str) -> Any:
        """The item's 单位, from an index of the items form rebuilt when that form changes."""
        items = self._role("items")
        code, unit = (items.by_label("物料编码"), items.by_label("单位")) if items else (None, None)
        if items is None or code is None or unit is None:
            return None
        if self._units[0] != (id(items), items.data_modify_time, len(items.records)):
            index = {r.values.get(code.widget_name): r.values.get(unit.widget_name) for r in reversed(items.live())}
            self._units = ((id(items), items.data_modify_time, len(items.records)), index)
        return self._units[1].get(sku)

    def _ledger_form(self, keys: Iterable[StockKey]) -> None:
        """The automation's second step: 库存台账 rows of the touched positions follow the ledger."""
        ledger = self._role("ledger")
        if ledger is None:
            return
        labels = {w.label: w.widget_name for w in ledger.widgets}
        now = self.clock()
        for key in dict.fromkeys(keys):
            wanted = {labels.get("物料编码"): key.sku, labels.get("仓库编码"): key.warehouse,
                      labels.get("库位"): key.bin, labels.get("批次号"): key.lot}
            row = ledger.get(self._ledger_rows.get(key))
            if row is None or not all(row.values.get(k) == v for k, v in wanted.items() if k):
                row = next((r for r in ledger.live() if all(r.values.get(k) == v for k, v in wanted.items() if k)),
                           None)
            qty = self.ledger.balance(*key)
            if row is None:
                values = {k: v for k, v in wanted.items() if k}
                row = Record(self.new_id(), values, COMPANY_CREATOR, COMPANY_CREATOR, now, now)
                ledger.add(row)
            self._ledger_rows[key] = row.id
            if labels.get("现存量"):
                row.values[labels["现存量"]] = qty
            if labels.get("最近变动时间"):
                row.values[labels["最近变动时间"]] = now
            if labels.get("单位"):
                row.values[labels["单位"]] = self._unit_of(key.sku)
            row.update_time = now
            ledger.data_modify_time = max(ledger.data_modify_time, now)


def _bearer(request: Request) -> str | None:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    return token.strip() or None if scheme.lower() == "bearer" else None


def _wrap(values: Mapping[str, Any], form: Form) -> dict[str, Any]:
    """Labels → ``{name: {"value": v}}`` for the seed (None values left out)."""
    out = {}
    for label, value in values.items():
        widget = form.by_label(label)
        if widget is not None and value is not None:
            out[widget.name] = {"value": value}
    return out


def _sub(subform: Widget | None, label: str) -> str:
    widget = next((s for s in subform.items if s.label == label), None) if subform else None
    if widget is None:
        raise ValueError(f"the movements form's 明细 subform has no {label} field")
    return widget.name


def _admin_json(request: Request) -> dict[str, Any]:
    raw = request.get_data()
    try:
        data = json.loads(raw or b"{}")
    except ValueError:
        raise ValueError("the body is not valid JSON") from None
    if not isinstance(data, dict):
        raise TypeError("the body must be a JSON object")
    return data
