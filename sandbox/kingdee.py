"""A K3Cloud (金蝶云星空) WebAPI simulator, faithful to vendors/kingdee.md (its §12 first).

Endpoints (``POST``, case-insensitive, ``.common.kdsvc`` — or bare ``.kdsvc`` — suffix)::

    /k3cloud/Kingdee.BOS.WebApi.ServicesStub.DynamicFormService.<Op>.common.kdsvc
        ExecuteBillQuery BillQuery View Save BatchSave Draft Submit Audit UnAudit Delete
        CancelAssign ExcuteOperation (and ExecuteOperation) QueryBusinessInfo QueryAsyncResult
    /k3cloud/Kingdee.BOS.WebApi.ServicesStub.AuthService.<Login>.common.kdsvc
        ValidateUser LoginByAppSecret LoginByAppSecret2 LoginBySign LogOut
    /k3cloud/Kingdee.BOS.ServiceFacade.ServicesStub.Account.AccountService.GetDataCenterList.common.kdsvc

Authentication: a live ``kdservice-sessionid`` (cookie or header) first; else the official SDK's
signature headers (verified; a good signature silently issues a new session, returned in the
cookies); else MsgCode 1 ``会话信息已丢失，请重新登录``. A signature naming an unknown account id
answers HTTP 500 ``Fail to verify thirty passport`` (text/plain).

Configuration (constructor): ``accounts`` (:class:`sandbox.kingdee_auth.Account` list; default one
account ``65f1a2b3c4d5e6`` with ``demo_user``/``demo_password`` and the app of doc §11),
``max_page_size`` (10 000; 2 000 for old builds), ``timezone`` (``Asia/Shanghai``),
``remark_field`` (``FNote``: the head field ``documents_for`` reads), ``org_number``/``org_name``
(the one stock organisation, ``100``), ``stock_closed_until`` (the stock organisation's closing
date, 库存关账; ``None``: never closed).

Seed (``POST /_admin/seed``) adds to the base keys::

    {"accounts": [{"acct_id": "...", "users": {"name": "password"}, "apps": {"<app id>": "<secret>"}}],
     "records": {"BD_MATERIAL": [{"FNumber": "M1", "FName": "...", "FBaseUnitId": {"FNumber": "PCS"}}],
                 "STK_InStock": [{"FBillNo": "...", "FDocumentStatus": "C", "FInStockEntry": [...]}]}}

``records`` are Save models (plus ``FDocumentStatus``, ``FForbidStatus``, ``FModifyDate``,
``FCreateDate``); audited bills post their stock (negative allowed) as they load. An account may
list ``read_only`` users: their writes answer MsgCode 2. ``{"stock_closed_until": "2024-01-31"}``
closes the stock period up to and including that date (``null`` reopens it); seeded records are
loaded whatever their date.

Where the vendor doc leaves a choice, the simulator takes one (each is tested):

* ExecuteBillQuery wraps *every* failure twice, MsgCode 1 included; BillQuery's are bare.
* Status refusals (Submit outside A/D, Audit outside B, Delete of B/C, Save of B/C...) are
  MsgCode 12; validation (unknown numbers, required fields, duplicate FBillNo, negative stock) 11;
  an unknown Id/Number 10; no Ids and no Numbers 5. Success omits ``ErrorCode``.
* Only head fields asked for (FieldKeys, FilterString, OrderString) → one row per bill; any entry
  field → one row per line (a bill without lines gives one row of nulls).
* Strings compare as SQL Server's default collation does: case-insensitive, trailing blanks ignored.
* Unknown Model keys are ignored; a bin sent for a warehouse without locations is dropped; a
  warehouse with locations requires one; a batch-managed material requires a lot (lots are created
  on first use); base quantities equal quantities (no unit conversion).
* A Draft (Z) has no FBillNo until it is saved; Z cannot be submitted.
* Ledger document refs are the FBillNo. NeedReturnData gives base data as ``{"FNumber": ...}``.
* Injected rate limits answer the rule's status (429 by default) with ``Retry-After`` and MsgCode 14
  in the operation's envelope; injected errors ``text/plain`` ``response_error:`` with the rule's
  status; an injected session expiry kills the session and lets the call re-authenticate (signed
  callers get a new session silently, session callers MsgCode 1).
* Limit above the maximum is capped silently (doc §13 leaves it open).
* Stock closing (库存关账) — INFERRED (no public WebAPI text; modelled on how the desktop client
  behaves): once the stock organisation is closed up to a date, a stock bill (a form that moves
  stock) whose FDate falls on or before that date cannot be saved (Save, BatchSave, Save with
  IsAutoSubmitAndAudit), audited or unaudited. Each refusal is MsgCode 11 with FieldName ``FDate``
  and the message ``单据日期“2024-01-15”小于或等于库存组织“总公司”的最近关账日期“2024-01-31”，
  不允许保存`` (…不允许审核 / 反审核). Drafts, Submit and Delete are not checked; base data never is.
"""
from __future__ import annotations

import base64
import copy
import json
import logging
import re
import secrets
import string
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any
from zoneinfo import ZoneInfo

from werkzeug.exceptions import HTTPException
from werkzeug.routing import Rule
from werkzeug.wrappers import Request, Response

from sandbox import kingdee_filter as kf
from sandbox.base import Simulator
from sandbox.faults import Decision, DecisionKind, RequestInfo
from sandbox.jsonio import json_response
from sandbox.kingdee_auth import (LCIDS, Account, PassportError, default_account, login_sign,
                                  signature_headers_present, verify_signature)
from sandbox.kingdee_forms import (BILLTYPE, BOOL, CUSTOMER, DATE, DECIMAL, ENUM, INT, LOCATION, LOT,
                                   MATERIAL, ORG, PK, REF, STATUS, STOCK, SUPPLIER, TEXT, UNIT, FieldDef, Form,
                                   build_forms)
from sandbox.ledger import Entry, LedgerError, NegativeStock, StockKey
from sandbox.world import World

_log = logging.getLogger("sandbox.kingdee")

SESSION_LOST = "会话信息已丢失，请重新登录"
ALLOW_NEGATIVE_FLAG = "STK_InvCheckResult"
STATUS_NAMES = {"Z": "暂存", "A": "创建", "B": "审核中", "C": "已审核", "D": "重新审核"}
AVAILABLE_STATUS = "KCZT01_SYS"
MATERIAL_PK = "FMATERIALID"

_SERVICE = re.compile(r"^/k3cloud/(?P<service>[^/]+?)(?:\.common)?\.kdsvc$", re.IGNORECASE)
_FORM_SERVICE = "kingdee.bos.webapi.servicesstub.dynamicformservice."
_AUTH_SERVICE = "kingdee.bos.webapi.servicesstub.authservice."
_ACCOUNT_SERVICE = "kingdee.bos.servicefacade.servicesstub.account.accountservice."

FORM_OPS = {name.lower(): name for name in (
    "ExecuteBillQuery", "BillQuery", "View", "Save", "BatchSave", "Draft", "Submit", "Audit", "UnAudit",
    "Delete", "CancelAssign", "QueryBusinessInfo", "QueryAsyncResult")}
FORM_OPS["excuteoperation"] = "ExecuteOperation"
FORM_OPS["executeoperation"] = "ExecuteOperation"
AUTH_OPS = {name.lower(): name for name in (
    "ValidateUser", "LoginByAppSecret", "LoginByAppSecret2", "LoginBySign", "LogOut")}
QUERY_OPS = {"ExecuteBillQuery", "BillQuery", "QueryBusinessInfo"}  # positional parameters: [data]
STATUS_OPS = {"Submit", "Audit", "UnAudit", "Delete", "CancelAssign", "ExecuteOperation"}


class KError(Exception):
    """A business failure answered in the operation's envelope (HTTP 200 unless ``status``)."""

    def __init__(self, msg_code: int, message: str, field_name: str | None = None, *,
                 status: int = 200, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.msg_code, self.message, self.field_name = msg_code, message, field_name
        self.status, self.headers = status, dict(headers or {})


class PlainError(Exception):
    """Answered as ``text/plain`` with ``status`` (server crash, passport failure)."""

    def __init__(self, status: int, text: str, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(text)
        self.status, self.text, self.headers = status, text, dict(headers or {})


@dataclass
class Problem:
    msg_code: int
    message: str
    field_name: str | None = None
    dindex: int = 0


@dataclass
class Call:
    op: str
    form_id: str | None
    op_number: str | None
    data: Any
    top: dict[str, Any]


class _Pending:
    """A lot or stock-location number whose id depends on other fields of the row."""

    def __init__(self, number: str) -> None:
        self.number = number


def _ci(mapping: Mapping[str, Any]) -> dict[str, Any]:
    return {str(k).lower(): v for k, v in mapping.items()}


def _as_bool(value: Any, default: bool = False) -> bool:
    if value is None or value == "":
        return default
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, Decimal)):
        return value != 0
    return str(value).strip().lower() in ("true", "1", "yes")


def _loads(text: str | bytes) -> Any:
    if isinstance(text, bytes):
        text = text.decode("utf-8-sig")
    return json.loads(text, parse_float=Decimal)


def _jsonable(value: Any) -> Any:
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def fmt_datetime(value: datetime | None) -> str | None:
    """Zone-less local ISO with a trimmed fraction: ``2024-12-13T09:18:04.96``."""
    if value is None:
        return None
    text = value.strftime("%Y-%m-%dT%H:%M:%S")
    millis = value.microsecond // 1000
    return text + ("." + f"{millis:03d}".rstrip("0") if millis else "")


def _status(problems: list[Problem], successes: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    errors = [{"FieldName": p.field_name, "Message": p.message, "DIndex": p.dindex} for p in problems]
    body: dict[str, Any] = {}
    if problems:
        body["ErrorCode"] = 500
    body.update({"IsSuccess": not problems, "Errors": errors, "SuccessEntitys": successes or [],
                 "SuccessMessages": [], "MsgCode": problems[0].msg_code if problems else 0})
    return body


def _problem(msg_code: int, message: str, field_name: str | None = None, dindex: int = 0) -> Problem:
    return Problem(msg_code, message, field_name, dindex)


def _envelope(op: str | None, status: dict[str, Any]) -> Any:
    """A failure in the shape the operation answers with (doc §5)."""
    if op == "ExecuteBillQuery":
        return [[{"Result": {"ResponseStatus": status}}]]
    if op in ("Save", "Draft"):
        return {"Result": {"ResponseStatus": status, "Id": "", "Number": "", "NeedReturnData": [{}]}}
    if op == "BatchSave":
        return {"Result": {"ResponseStatus": status, "NeedReturnData": []}}
    if op == "View":
        return {"Result": {"ResponseStatus": status, "Result": None}}
    return {"Result": {"ResponseStatus": status}}


class KingdeeSimulator(Simulator):
    name = "kingdee"

    def __init__(
        self, *, accounts: Iterable[Account] | None = None, max_page_size: int = 10000,
        timezone: str = "Asia/Shanghai", remark_field: str = "FNote", org_number: str = "100",
        org_name: str = "总公司", allow_negative: bool = False, session_idle_timeout: float | None = None,
        stock_closed_until: str | date | None = None,
        clock: Callable[[], float] = time.time, sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if max_page_size < 1:
            raise ValueError(f"max_page_size must be at least 1, got {max_page_size}")
        self.forms = build_forms()
        self.max_page_size = max_page_size
        self.tz = ZoneInfo(timezone)
        self.remark_field = remark_field
        self.org_number, self.org_name = org_number, org_name
        self._initial_accounts = list(accounts) if accounts is not None else [default_account()]
        self._initial_closed = _closing_date(stock_closed_until, "stock_closed_until")
        super().__init__(allow_negative=allow_negative, session_idle_timeout=session_idle_timeout,
                         clock=clock, sleep=sleep)
        self._init_state()

    # --- state ----------------------------------------------------------------------------

    def _init_state(self) -> None:
        self.accounts: dict[str, Account] = {a.acct_id: copy.deepcopy(a) for a in self._initial_accounts}
        self.records: dict[str, dict[int, dict[str, Any]]] = {key: {} for key in self.forms}
        self._next_id: dict[str, int] = {}
        self._next_entry_id = 100001
        self._number_seq: dict[str, int] = {}
        self._created_seq = 0
        self._index: dict[str, dict[Any, int] | None] = {}
        self._inventory_ids: dict[StockKey, str] = {}
        self._async: dict[str, Any] = {}
        self.stock_closed_until: date | None = self._initial_closed
        self.org_id = 100001  # the first ORG_Organizations id, referenced by itself
        org = self._insert(ORG, {"FNumber": self.org_number, "FName": self.org_name})
        assert org["FOrgID"] == self.org_id
        self._insert(STATUS, {"FNumber": AVAILABLE_STATUS, "FName": "可用"})
        for form in self.forms.values():
            if form.bill_type:
                self._insert(BILLTYPE, {"FNumber": form.bill_type, "FName": form.name, "FBillFormID": form.form_id})

    def reset(self) -> None:
        with self.lock:
            self._init_state()
        super().reset()

    def form(self, form_id: str) -> Form:
        form = self.forms.get(str(form_id).lower())
        if form is None or form.kind == "internal":
            raise KError(4, f"业务对象不存在（FormId: {form_id}）")
        return form

    def now(self) -> datetime:
        moment = datetime.fromtimestamp(self.clock(), self.tz).replace(tzinfo=None)
        return moment.replace(microsecond=moment.microsecond // 1000 * 1000)

    def _local(self, epoch: float) -> datetime:
        moment = datetime.fromtimestamp(epoch, self.tz).replace(tzinfo=None)
        return moment.replace(microsecond=moment.microsecond // 1000 * 1000)

    def _new_id(self, form_key: str) -> int:
        value = self._next_id.get(form_key, 100001)
        self._next_id[form_key] = value + 1
        return value

    def _defaults(self, form: Form) -> dict[str, Any]:
        record: dict[str, Any] = {}
        for f in form.head:
            record[f.key] = self._default_value(f)
        if form.entry_key:
            record[form.entry_key] = []
        return record

    @staticmethod
    def _default_value(f: FieldDef) -> Any:
        if f.kind in (REF, PK):
            return 0
        if f.kind == DECIMAL:
            return Decimal(f.default or 0)
        if f.kind == BOOL:
            return bool(f.default)
        if f.kind == INT:
            return int(f.default or 0)
        if f.kind in (TEXT, ENUM):
            return "" if f.default is None else f.default
        return f.default

    def _insert(self, form_id: str, values: Mapping[str, Any], *, status: str = "C") -> dict[str, Any]:
        """Create a base-data record directly (seeding, lots, locations)."""
        form = self.forms[form_id.lower()]
        record = self._defaults(form)
        record[form.pk] = self._new_id(form.form_id.lower())
        record.update(values)
        now = self.now()
        for key, value in (("FDocumentStatus", status), ("FCreateDate", now), ("FModifyDate", now),
                           ("FCreateOrgId", self.org_id), ("FUseOrgId", self.org_id)):
            if form.head_field(key) is not None and not values.get(key):
                record[key] = value
        self._store(form, record)
        return record

    def _store(self, form: Form, record: dict[str, Any]) -> None:
        key = form.form_id.lower()
        if "_seq" not in record:
            self._created_seq += 1
            record["_seq"] = self._created_seq
        table = self.records[key]
        rid = record[form.pk]
        index = self._index.get(key)
        if index is not None and rid not in table and form.form_id not in (LOCATION, LOT):
            # a new record: add its number to the index instead of rebuilding it (bulk seeding)
            number = str(record.get(form.number_key) or "")
            if number:
                index.setdefault(number.casefold(), rid)
        else:
            self._index[key] = None
        table[rid] = record

    def _by_number(self, form_id: str) -> dict[Any, int]:
        key = form_id.lower()
        index = self._index.get(key)
        if index is None:
            form = self.forms[key]
            index = {}
            for rid, record in self.records[key].items():
                number = str(record.get(form.number_key) or "")
                if form.form_id == LOCATION:
                    index[(record["FStockId"], number.casefold())] = rid
                elif form.form_id == LOT:
                    index[(record["FMaterialId"], number.casefold())] = rid
                elif number:
                    index.setdefault(number.casefold(), rid)
            self._index[key] = index
        return index

    def find(self, form_id: str, number: str) -> dict[str, Any] | None:
        rid = self._by_number(form_id).get(number.casefold())
        return None if rid is None else self.records[form_id.lower()][rid]

    def _lot_id(self, material_id: int, number: str) -> int:
        rid = self._by_number(LOT).get((material_id, number.casefold()))
        if rid is None:
            rid = self._insert(LOT, {"FNumber": number, "FName": number, "FMaterialId": material_id})["FLOTID"]
        return rid

    def _location_id(self, stock_id: int, number: str, *, create: bool = False) -> int | None:
        rid = self._by_number(LOCATION).get((stock_id, number.casefold()))
        if rid is None and create:
            rid = self._insert(LOCATION, {"FNumber": number, "FName": number, "FStockId": stock_id})["FID"]
        return rid

    def _number_of(self, form_id: str, rid: int | None) -> str | None:
        if not rid:
            return None
        record = self.records[form_id.lower()].get(rid)
        if record is None:
            return None
        return record.get(self.forms[form_id.lower()].number_key)

    # --- routing, faults, errors ----------------------------------------------------------

    def routes(self) -> list[Rule]:
        return [Rule("/<path:path>", endpoint="service", methods=["POST"])]

    def _operation(self, path: str) -> tuple[str, str] | None:
        """(``form``/``auth``/``account``, canonical operation) for a service path, or None."""
        match = _SERVICE.match(path)
        if match is None:
            return None
        service = match.group("service").lower()
        for prefix, kind, ops in ((_FORM_SERVICE, "form", FORM_OPS), (_AUTH_SERVICE, "auth", AUTH_OPS)):
            if service.startswith(prefix) and service[len(prefix):] in ops:
                return kind, ops[service[len(prefix):]]
        if service == _ACCOUNT_SERVICE + "getdatacenterlist":
            return "account", "GetDataCenterList"
        return None

    @staticmethod
    def _sid(request: Request) -> str | None:
        return request.headers.get("kdservice-sessionid") or request.cookies.get("kdservice-sessionid") or None

    def describe(self, request: Request, endpoint: str, values: Mapping[str, Any]) -> RequestInfo:
        found = self._operation(request.path)
        sid = self._sid(request)
        client = None
        appdata = request.headers.get("X-Kd-Appdata")
        if appdata:
            try:
                parts = base64.b64decode(appdata).decode("utf-8").split(",")
                client = f"{parts[0]}/{parts[1]}"
            except (ValueError, IndexError, UnicodeDecodeError):
                client = None
        if client is None and sid:
            session = self.sessions.get(sid)
            if session is not None:
                client = f"{session.data['acct']}/{session.data['user']}"
        return RequestInfo(request.method, request.path, operation=found[1] if found else None,
                           session=sid, client=client)

    def fault_response(self, request: Request, decision: Decision) -> Response:
        if decision.body is not None:
            return super().fault_response(request, decision)
        found = self._operation(request.path)
        op = found[1] if found else None
        if decision.kind is DecisionKind.SESSION_EXPIRED:
            # The harness has expired the session; the server re-checks credentials as usual:
            # a signed caller silently gets a new session, a session-only caller MsgCode 1.
            return self._call_endpoint(request, "service", {"path": request.path.lstrip("/")})
        if decision.kind is DecisionKind.RATE_LIMITED:
            body = _envelope(op, _status([_problem(14, f"接口调用次数超过限制（调用限制），请稍后再试（{decision.rule}）")]))
            return json_response(body, status=decision.status, headers=dict(decision.headers))
        return Response(f"response_error:服务器内部错误（injected by {decision.rule}）", status=decision.status,
                        headers=dict(decision.headers), content_type="text/plain; charset=utf-8")

    def error_response(self, request: Request, exc: Exception) -> Response:
        if isinstance(exc, PlainError):
            return Response(exc.text, status=exc.status, headers=exc.headers, content_type="text/plain; charset=utf-8")
        if isinstance(exc, HTTPException):
            return Response(exc.description or exc.name, status=exc.code or 500, content_type="text/plain; charset=utf-8")
        _log.exception("kingdee: %s %s failed", request.method, request.path)
        return Response(f"response_error:{type(exc).__name__}: {exc}", status=200,
                        content_type="text/plain; charset=utf-8")

    # --- the one endpoint -----------------------------------------------------------------

    def service(self, request: Request, path: str = "") -> Response:
        found = self._operation(request.path)
        if found is None:
            raise PlainError(404, f"找不到服务：{request.path}")
        kind, op = found
        with self.lock:
            if kind == "account":
                return self._json([{"Id": a.acct_id, "Number": a.number, "Name": a.name, "DataCenterType": 0}
                                   for a in self.accounts.values()])
            if kind == "auth":
                return self._auth(request, op)
            cookies: list[tuple[str, str]] = []
            try:
                context = self._authenticate(request, cookies)
                call = self._parse_call(request, op)
                response = self._dispatch_op(request, call, context)
            except KError as exc:
                response = json_response(_envelope(op, _status([_problem(exc.msg_code, exc.message, exc.field_name)])),
                                         status=exc.status, headers=exc.headers)
            for name, value in cookies:
                response.headers.add("Set-Cookie", f"{name}={value}; path=/" + ("; HttpOnly" if name.startswith("ASP") else ""))
            return response

    def _json(self, body: Any) -> Response:
        return json_response(_jsonable(body))

    # --- authentication -------------------------------------------------------------------

    def _authenticate(self, request: Request, cookies: list[tuple[str, str]]) -> dict[str, Any]:
        session = self.sessions.get(self._sid(request))
        if session is not None:
            return session.data
        if signature_headers_present(request.headers):
            try:
                identity = verify_signature(request.path, request.headers, self.accounts)
            except PassportError:
                raise PlainError(500, "Fail to verify thirty passport") from None
            if identity is not None:
                data = {"acct": identity.acct_id, "user": identity.user, "lcid": identity.lcid}
                new = self.sessions.create(data, token=uuid.uuid4().hex)
                cookies.append(("kdservice-sessionid", new.token))
                cookies.append(("ASP.NET_SessionId", self._asp_id()))
                return data
        raise KError(1, SESSION_LOST)

    @staticmethod
    def _asp_id() -> str:
        return "".join(secrets.choice(string.ascii_lowercase + string.digits) for _ in range(24))

    def _auth(self, request: Request, op: str) -> Response:
        if op == "LogOut":
            sid = self._sid(request)
            if sid:
                self.sessions.expire(sid)
            return self._json(True)
        try:
            args = self._login_args(request, op)
        except (ValueError, TypeError) as exc:
            return self._login_failed(-1, f"参数错误：{exc}")
        account = self.accounts.get(str(args.get("acctid", "")))
        if account is None:
            return self._login_failed(-1, "数据中心不存在，请检查账套ID")
        user = str(args.get("username", ""))
        try:
            lcid = int(args.get("lcid") or 2052)
        except (TypeError, ValueError):
            lcid = 0
        if lcid not in LCIDS:
            return self._login_failed(-1, f"不支持的语言：{args.get('lcid')}")
        if op == "ValidateUser":
            if account.users.get(user) != str(args.get("password", "")) or user not in account.users:
                return self._login_failed(0, "用户名或密码错误！")
        else:
            app_id = str(args.get("appid", ""))
            secret = account.apps.get(app_id)
            if user not in account.users or secret is None:
                return self._login_failed(-1, "第三方系统登录授权校验失败，请检查应用ID与用户")
            if op == "LoginBySign":
                expected = login_sign(account.acct_id, user, app_id, secret, str(args.get("timestamp", "")))
                if str(args.get("sign", "")).lower() != expected:
                    return self._login_failed(-1, "签名校验失败")
            elif str(args.get("appsecret", "")) != secret:
                return self._login_failed(-1, "第三方系统登录授权校验失败，应用密钥错误")
        data = {"acct": account.acct_id, "user": user, "lcid": lcid}
        session = self.sessions.create(data, token=uuid.uuid4().hex)
        asp = self._asp_id()
        offset = datetime.now(self.tz).utcoffset()
        ticks = int(offset.total_seconds() * 10_000_000) if offset is not None else 0
        zone = {"OffsetTicks": ticks, "StandardName": str(self.tz), "Id": 37, "Number": "1078_SYS",
                "CanBeUsed": True}
        body = {
            "Message": None, "MessageCode": "CheckPasswordPolicy", "LoginResultType": 1,
            "Context": {
                "UserLocale": "zh-CN", "LogLocale": "zh-CN", "DBid": account.acct_id, "DatabaseType": 3,
                "SessionId": session.token, "UseLanguages": [{"LocaleId": lcid, "LocaleName": "中文(简体)"}],
                "UserId": account.user_id(user), "UserName": user, "CustomName": account.name,
                "DisplayVersion": "8.2.0", "DataCenterName": account.name, "DataCenterNumber": account.number,
                "UserToken": str(uuid.uuid4()), "UTimeZone": zone, "STimeZone": zone, "Lcid": lcid,
                "CurrentOrganizationInfo": {"ID": self.org_id, "Name": self.org_name, "AcctOrgType": "1",
                                            "FunctionIds": [101, 102, 103, 104, 107, 108, 109, 110]},
                "IsCH_ZH_AutoTrans": False, "ClientType": 32, "WeiboAuthInfo": None,
            },
            "KDSVCSessionId": session.token, "FormId": None, "RedirectFormParam": None,
            "FormInputObject": None, "ErrorStackTrace": None, "Lcid": 0, "AccessToken": None,
            "CustomParam": {}, "KdAccessResult": None, "IsSuccessByAPI": True,
        }
        response = self._json(body)
        response.headers.add("Set-Cookie", f"kdservice-sessionid={session.token}; path=/")
        response.headers.add("Set-Cookie", f"ASP.NET_SessionId={asp}; path=/; HttpOnly")
        return response

    def _login_failed(self, result_type: int, message: str) -> Response:
        return self._json({"Message": message, "MessageCode": None, "LoginResultType": result_type, "Context": None,
                           "KDSVCSessionId": None, "FormId": None, "RedirectFormParam": None,
                           "FormInputObject": None, "ErrorStackTrace": None, "Lcid": 0, "AccessToken": None,
                           "CustomParam": {}, "KdAccessResult": None, "IsSuccessByAPI": False})

    def _login_args(self, request: Request, op: str) -> dict[str, Any]:
        top = self._top(request)
        params = top.get("parameters")
        if params is not None:
            if isinstance(params, str):
                params = _loads(params)
            if not isinstance(params, list):
                raise ValueError("parameters must be an array")
            names = {"ValidateUser": ["acctid", "username", "password", "lcid"],
                     "LoginByAppSecret": ["acctid", "username", "appid", "appsecret", "lcid"],
                     "LoginByAppSecret2": ["acctid", "username", "appid", "appsecret", "iskickoff", "lcid"],
                     "LoginBySign": ["acctid", "username", "appid", "timestamp", "sign", "lcid"]}[op]
            return dict(zip(names, params))
        return top

    # --- envelopes ------------------------------------------------------------------------

    def _top(self, request: Request) -> dict[str, Any]:
        if request.mimetype in ("application/x-www-form-urlencoded", "multipart/form-data"):
            return _ci(request.form.to_dict())
        raw = request.get_data()
        if not raw.strip():
            return {}
        try:
            top = _loads(raw)
        except (UnicodeDecodeError, ValueError) as exc:
            raise PlainError(200, f"response_error:请求数据不是有效的JSON：{exc}") from None
        if isinstance(top, list):  # a bare positional array
            return {"parameters": top}
        if not isinstance(top, dict):
            raise KError(8, "参数错误：请求体必须是JSON对象")
        return _ci(top)

    def _parse_call(self, request: Request, op: str) -> Call:
        top = self._top(request)
        form_id, op_number, data = top.get("formid"), top.get("opnumber"), top.get("data")
        params = top.get("parameters")
        if params is not None and data is None:
            if isinstance(params, str):
                try:
                    params = _loads(params)
                except ValueError:
                    raise KError(8, "参数错误：parameters不是有效的JSON数组") from None
            if not isinstance(params, list):
                raise KError(8, "参数错误：parameters必须是数组")
            if op in QUERY_OPS or op == "QueryAsyncResult":
                data = params[0] if params else None
            elif op == "ExecuteOperation":
                form_id, op_number, data = (list(params) + [None, None, None])[:3]
            else:
                form_id, data = (list(params) + [None, None])[:2]
        if isinstance(data, str):
            try:
                data = _loads(data) if data.strip() else None
            except ValueError:
                raise KError(8, "参数错误：data不是有效的JSON") from None
            if isinstance(data, str):
                raise KError(8, "参数错误：data被重复序列化（JSON字符串中仍是字符串）")
        if data is not None and not isinstance(data, dict):
            raise KError(8, "参数错误：data必须是JSON对象")
        return Call(op, None if form_id is None else str(form_id), None if op_number is None else str(op_number),
                    data or {}, top)

    def _dispatch_op(self, request: Request, call: Call, context: dict[str, Any]) -> Response:
        data = _ci(call.data)
        op = call.op
        if op in ("ExecuteBillQuery", "BillQuery"):
            return self._query(op, data)
        if op == "QueryBusinessInfo":
            return self._business_info(data)
        if op == "QueryAsyncResult":
            return self._async_result(call)
        if not call.form_id:
            raise KError(8, "参数错误：formid不能为空")
        form = self.form(call.form_id)
        if op == "View":
            return self._view(form, data)
        account = self.accounts.get(context["acct"])
        if account is not None and context["user"] in account.read_only:
            raise KError(2, f"用户“{context['user']}”没有{form.name}的“{op}”权限")
        if op in ("Save", "Draft", "BatchSave"):
            result, committed = self._save_op(form, op, data)
            if "beginmethod" in call.top:
                task = uuid.uuid4().hex
                self._async[task] = _jsonable(result)
                result = {"Status": 2, "TaskId": task, "Result": result}
            if committed:
                self.after_commit(request)
            return self._json(result)
        result, committed = self._status_op(form, op, call.op_number, data)
        if committed:
            self.after_commit(request)
        return self._json(result)

    def _async_result(self, call: Call) -> Response:
        info = call.top.get("queryinfo", call.data)
        if isinstance(info, str):
            info = _loads(info)
        task = str(_ci(info or {}).get("taskid", ""))
        if task not in self._async:
            raise KError(10, f"异步任务不存在：{task}")
        return self._json({"Status": 2, "TaskId": task, "Result": self._async[task]})

    # --- fields and values ----------------------------------------------------------------

    def _resolve(self, form: Form, key: str) -> tuple[Callable[[Any], Any], str, FieldDef | None, bool]:
        """(getter over (head, entry row), filter kind, field definition, is an entry field).

        Raises MsgCode 9 for a key the form lacks."""
        text = key.strip()
        lower = text.lower()
        missing = KError(9, f"元数据中标识为{text}的字段不存在", text)
        if form.entry_key:
            prefix = form.entry_key.lower() + "_"
            if lower in (prefix + "fentryid", prefix + "fseq"):
                column = "FEntryID" if lower.endswith("fentryid") else "FSeq"
                return (lambda pair: None if pair[1] is None else pair[1][column]), kf.ID, None, True
        base, _, sub = text.partition(".")
        f, in_entry = form.head_field(base), False
        if f is None and form.entry_key:
            f, in_entry = form.entry_field(base), True
        if f is None:
            raise missing
        where = 1 if in_entry else 0
        if not sub:
            kind = {DATE: kf.DATE, DECIMAL: kf.NUMBER, INT: kf.ID, PK: kf.ID, REF: kf.ID, BOOL: kf.BOOL}.get(f.kind, kf.TEXT)
            column = f.key

            def plain(pair: Any) -> Any:
                row = pair[where]
                return None if row is None else row.get(column)
            return plain, kind, f, in_entry
        if f.kind != REF or "." in sub:
            raise missing
        target = self.forms[f.ref.lower()]  # type: ignore[union-attr]
        sf = target.head_field(sub)
        if sf is None:
            raise missing
        kind = {DATE: kf.DATE, DECIMAL: kf.NUMBER, INT: kf.ID, PK: kf.ID, REF: kf.ID, BOOL: kf.BOOL}.get(sf.kind, kf.TEXT)
        table, column, sub_key = self.records[target.form_id.lower()], f.key, sf.key

        def dotted(pair: Any) -> Any:
            row = pair[where]
            if row is None:
                return None
            record = table.get(row.get(column) or 0)
            return None if record is None else record.get(sub_key)
        return dotted, kind, sf, in_entry

    @staticmethod
    def _out(value: Any, f: FieldDef | None, dotted: bool) -> Any:
        if isinstance(value, datetime):
            return fmt_datetime(value)
        if isinstance(value, Decimal):
            return float(value)
        if value is None and f is not None and f.kind == REF and not dotted:
            return 0
        return value

    # --- queries --------------------------------------------------------------------------

    def _query(self, op: str, data: dict[str, Any]) -> Response:
        form_id = data.get("formid")
        if not form_id:
            raise KError(8, "参数错误：FormId不能为空")
        form = self.form(str(form_id))
        field_keys = data.get("fieldkeys")
        if isinstance(field_keys, list):
            field_keys = ",".join(str(k) for k in field_keys)
        keys = [k.strip() for k in str(field_keys or "").split(",") if k.strip()]
        if not keys:
            raise KError(8, "参数错误：FieldKeys不能为空")
        columns = [(key, *self._resolve(form, key)) for key in keys]
        filter_text = data.get("filterstring")
        try:
            if isinstance(filter_text, list):
                node = kf.parse_filter(self._filter_from_array(filter_text))
            else:
                node = kf.parse_filter(None if filter_text is None else str(filter_text))
            order = kf.parse_order(None if data.get("orderstring") is None else str(data.get("orderstring")))
        except kf.FilterSyntaxError as exc:
            raise KError(4, f"GetRealExpress error: {exc}") from None
        resolved: dict[str, Any] = {}

        def resolve(name: str) -> Any:
            if name.lower() not in resolved:
                resolved[name.lower()] = self._resolve(form, name)
            return resolved[name.lower()]
        filter_fields = kf.fields_of(node)
        order_getters = [(resolve(name)[0], desc) for name, desc in order]
        try:
            predicate = kf.compile_filter(node, lambda n: resolve(n)[1], lambda n: resolve(n)[0])
        except kf.FilterSyntaxError as exc:
            raise KError(4, f"GetRealExpress error: {exc}") from None
        per_entry = any(c[4] for c in columns) or any(resolve(n)[3] for n in filter_fields) or \
            any(resolve(n)[3] for n, _ in order)
        try:
            top = int(data.get("toprowcount") or 0)
            start = int(data.get("startrow") or 0)
            limit = int(data.get("limit") or 0)
        except (TypeError, ValueError, InvalidOperation):
            raise KError(8, "参数错误：TopRowCount、StartRow、Limit必须是整数") from None
        if top < 0 or start < 0 or limit < 0:
            raise KError(8, "参数错误：TopRowCount、StartRow、Limit不能为负数")
        rows = [pair for pair in self._source(form, per_entry) if predicate(pair)]
        for getter, desc in reversed(order_getters):
            rows.sort(key=lambda pair, g=getter: kf.sort_key(g(pair)), reverse=desc)
        if top:
            rows = rows[:top]
        size = min(limit or self.max_page_size, self.max_page_size)
        rows = rows[start:start + size]
        if op == "ExecuteBillQuery":
            body: Any = [[self._out(getter(pair), f, "." in key) for key, getter, _, f, _ in columns] for pair in rows]
        else:
            body = [{key: self._out(getter(pair), f, "." in key) for key, getter, _, f, _ in columns} for pair in rows]
        return self._json(body)

    @staticmethod
    def _filter_from_array(items: list[Any]) -> str:
        """The newer array form ``[{"Left","FieldName","Compare","Value","Right","Logic"}]`` as text."""
        symbols = {"67": "=", "83": "<>", "17": ">", "16": ">=", "10": "<", "15": "<=", "60": "like",
                   "statusequalto": "=", "statusnotequalto": "<>"}
        parts = []
        for index, raw in enumerate(items):
            item = _ci(raw) if isinstance(raw, dict) else {}
            field = str(item.get("fieldname", ""))
            compare = str(item.get("compare", "=")).strip()
            op = symbols.get(compare.lower(), compare)
            if op.lower() not in ("=", "<>", "!=", ">", ">=", "<", "<=", "like"):
                raise kf.FilterSyntaxError(f"FilterString[{index}]: unknown Compare {compare!r}")
            clause = f"{item.get('left', '') or ''}{field} {op} {kf.quote(str(item.get('value', '')))}{item.get('right', '') or ''}"
            if parts:
                logic = str(item.get("logic", "0")).strip().lower()
                parts.append("or" if logic in ("1", "or") else "and")
            parts.append(clause)
        return " ".join(parts)

    def _source(self, form: Form, per_entry: bool) -> Iterable[tuple[dict[str, Any], dict[str, Any] | None]]:
        if form.kind == "inventory":
            return [(row, None) for row in self._inventory_rows()]
        records = self.records[form.form_id.lower()].values()
        if not per_entry or not form.entry_key:
            return [(record, None) for record in records]
        pairs = []
        for record in records:
            lines = record[form.entry_key] or [None]
            pairs.extend((record, line) for line in lines)
        return pairs

    def _inventory_rows(self) -> list[dict[str, Any]]:
        rows = []
        now = self.now()
        for key, qty in self.ledger.balances().items():
            material = self.find(MATERIAL, key.sku)
            stock = self.find(STOCK, key.warehouse)
            material_id = material[MATERIAL_PK] if material else 0
            stock_id = stock["FStockId"] if stock else 0
            location = self._location_id(stock_id, key.bin, create=True) if key.bin and stock_id else 0
            lot = self._lot_id(material_id, key.lot) if key.lot and material_id else 0
            row_id = self._inventory_ids.setdefault(key, str(uuid.uuid5(uuid.NAMESPACE_URL, "/".join(map(str, key)))))
            unit = material.get("FBaseUnitId", 0) if material else 0
            rows.append({
                "FID": row_id, "FStockOrgId": self.org_id, "FMaterialId": material_id, "FStockId": stock_id,
                "FStockLocId": location, "FLot": lot,
                "FStockStatusId": self.find(STATUS, AVAILABLE_STATUS)["FStockStatusId"],  # type: ignore[index]
                "FOwnerTypeId": "BD_OwnerOrg", "FOwnerId": self.org_id, "FKeeperTypeId": "BD_KeeperOrg",
                "FKeeperId": self.org_id, "FAuxPropId": 0, "FBaseUnitId": unit, "FStockUnitId": unit,
                "FBaseQty": qty, "FQty": qty, "FBaseLockQty": Decimal(0), "FLockQty": Decimal(0),
                "FAVBQty": qty, "FBaseAVBQty": qty, "FProduceDate": None, "FExpiryDate": None, "FUpdateTime": now,
            })
        return rows

    # --- View and metadata ----------------------------------------------------------------

    def _find_target(self, form: Form, rid: Any = None, number: Any = None) -> dict[str, Any] | None:
        table = self.records[form.form_id.lower()]
        if rid not in (None, "", 0, "0"):
            try:
                return table.get(int(str(rid).strip()))
            except ValueError:
                return None
        if number not in (None, ""):
            for record in table.values():
                if str(record.get(form.number_key) or "").casefold() == str(number).strip().casefold():
                    return record
        return None

    def _view(self, form: Form, data: dict[str, Any]) -> Response:
        if form.kind == "inventory":
            raise KError(4, f"{form.name}不支持查看操作")
        if data.get("id") in (None, "", 0, "0") and data.get("number") in (None, ""):
            raise KError(5, "单据内码和编号不能同时为空")
        record = self._find_target(form, data.get("id"), data.get("number"))
        if record is None:
            which = data.get("id") if data.get("id") not in (None, "", 0, "0") else data.get("number")
            raise KError(10, f"{form.name}“{which}”不存在或已被删除")
        view = self._view_object(form, record)
        return self._json({"Result": {"ResponseStatus": _status([]), "Result": view}})

    def _ref_view(self, f: FieldDef, rid: int) -> Any:
        if not rid or f.ref is None:
            return None
        target = self.forms[f.ref.lower()]
        record = self.records[target.form_id.lower()].get(rid)
        if record is None:
            return None
        name = record.get("FName")
        return {"Id": rid, "Number": record.get(target.number_key),
                "Name": [{"Key": 2052, "Value": name}] if name is not None else []}

    def _view_value(self, f: FieldDef, value: Any) -> Any:
        if f.kind == REF:
            return self._ref_view(f, value)
        return self._out(value, f, False)

    @staticmethod
    def _orm(key: str) -> str:
        return key[1:] if key[:1] in ("F", "f") and len(key) > 1 else key

    def _view_object(self, form: Form, record: dict[str, Any]) -> dict[str, Any]:
        view: dict[str, Any] = {"Id": record[form.pk]}
        for f in form.head:
            if f.kind == PK:
                continue
            view[self._orm(f.key)] = self._view_value(f, record.get(f.key))
        if form.number_key == "FBillNo":
            view["Number"] = record.get("FBillNo")
        if form.entry_key:
            view[self._orm(form.entry_key)] = [
                {"Id": row["FEntryID"], "Seq": row["FSeq"],
                 **{self._orm(f.key): self._view_value(f, row.get(f.key)) for f in form.entry}}
                for row in record[form.entry_key]
            ]
        return view

    def _business_info(self, data: dict[str, Any]) -> Response:
        form = self.form(str(data.get("formid") or ""))

        def fields(defs: list[FieldDef]) -> list[dict[str, Any]]:
            return [{"Key": f.key, "Name": [{"Key": 2052, "Value": f.name}], "FieldName": f.key.upper(),
                     "PropertyName": self._orm(f.key), "ElementType": f.kind,
                     "LookUpObjectFormId": f.ref} for f in defs]
        entrys = [{"Key": "FBillHead", "ParentKey": None, "Name": [{"Key": 2052, "Value": form.name}],
                   "Fields": fields(form.head)}]
        if form.entry_key:
            entrys.append({"Key": form.entry_key, "ParentKey": "FBillHead",
                           "Name": [{"Key": 2052, "Value": "明细"}], "Fields": fields(form.entry)})
        info = {"Id": form.form_id, "Name": [{"Key": 2052, "Value": form.name}], "PkFieldName": form.pk,
                "Entrys": entrys}
        return self._json({"Result": {"ResponseStatus": _status([]), "NeedReturnData": info}})

    # --- saving ---------------------------------------------------------------------------

    def _save_op(self, form: Form, op: str, data: dict[str, Any]) -> tuple[dict[str, Any], bool]:
        if form.kind == "inventory":
            raise KError(4, f"{form.name}不支持保存操作")
        model = data.get("model")
        options = self._save_options(data)
        if op == "BatchSave":
            if not isinstance(model, list):
                raise KError(8, "参数错误：BatchSave的Model必须是数组")
            successes, problems, returned = [], [], []
            for index, item in enumerate(model):
                record, errors = self._save_one(form, item, options, draft=False, dindex=index)
                if errors:
                    problems.extend(errors)
                else:
                    successes.append({"Id": record[form.pk], "Number": record.get(form.number_key) or "",
                                      "DIndex": index})
                    returned.append(self._return_data(form, record, options["fields"]))
            return ({"Result": {"ResponseStatus": _status(problems, successes), "NeedReturnData": returned}},
                    bool(successes))
        if not isinstance(model, dict):
            raise KError(8, "参数错误：Model必须是JSON对象")
        record, errors = self._save_one(form, model, options, draft=op == "Draft", dindex=0)
        if errors:
            return _envelope(op, _status(errors)), False
        number = record.get(form.number_key) or ""
        return ({"Result": {
            "ResponseStatus": _status([], [{"Id": record[form.pk], "Number": number, "DIndex": 0}]),
            "Id": record[form.pk], "Number": number,
            "NeedReturnData": [self._return_data(form, record, options["fields"])]}}, True)

    @staticmethod
    def _save_options(data: dict[str, Any]) -> dict[str, Any]:
        def names(value: Any) -> list[str]:
            if value is None or value == "":
                return []
            if isinstance(value, str):
                return [v.strip() for v in value.split(",") if v.strip()]
            return [str(v).strip() for v in value]
        flags = str(data.get("interationflags") or "")
        return {
            "fields": names(data.get("needreturnfields")),
            "update": {n.lower() for n in names(data.get("needupdatefields"))},
            "delete_entry": _as_bool(data.get("isdeleteentry"), True),
            "auto_audit": _as_bool(data.get("isautosubmitandaudit"), False),
            "allow_negative": ALLOW_NEGATIVE_FLAG.lower() in [f.strip().lower() for f in flags.split(";")],
        }

    def _save_one(self, form: Form, model: Any, options: dict[str, Any], *, draft: bool, dindex: int,
                  seed: bool = False) -> tuple[dict[str, Any], list[Problem]]:
        problems: list[Problem] = []

        def fail(code: int, message: str, field_name: str | None = None) -> None:
            problems.append(_problem(code, message, field_name, dindex))
        if not isinstance(model, dict):
            fail(8, "参数错误：Model必须是JSON对象")
            return {}, problems
        fields = _ci(model)
        table = self.records[form.form_id.lower()]
        try:
            rid = int(fields.get(form.pk.lower()) or fields.get("fid") or 0)
        except (TypeError, ValueError):
            fail(8, f"参数错误：{form.pk}必须是整数")
            return {}, problems
        existing = table.get(rid) if rid else None
        if rid and existing is None:
            fail(10, f"{form.name}内码{rid}对应的数据不存在或已被删除", form.pk)
            return {}, problems
        if existing is not None and not seed:
            status = existing.get("FDocumentStatus")
            allowed = ("Z",) if draft else ("Z", "A", "D")
            if status not in allowed:
                fail(12, f"{form.name}“{existing.get(form.number_key)}”当前状态为{STATUS_NAMES.get(status, status)}，"
                         f"不允许{'暂存' if draft else '修改'}", "FDocumentStatus")
                return {}, problems
        record = copy.deepcopy(existing) if existing is not None else self._defaults(form)
        update_only = options["update"] if existing is not None and options["update"] else None
        lenient = draft  # a draft keeps what it can and validates nothing
        protected = {"fdocumentstatus", "fforbidstatus", "fcancelstatus", "fcreatedate", "fmodifydate",
                     "fapprovedate", "fforbiddate"}
        for key, value in model.items():
            lower = str(key).lower()
            if form.entry_key and lower == form.entry_key.lower():
                continue
            f = form.head_field(str(key))
            if f is None or f.kind == PK or (lower in protected and not seed):
                continue  # the server ignores what it does not know
            if update_only is not None and lower not in update_only:
                continue
            if lower in protected and seed:
                record[f.key] = self._convert(f, value, None, lenient=True, fail=fail) if f.kind == DATE else str(value)
                continue
            record[f.key] = self._convert(f, value, None, lenient=lenient, fail=fail)
        if form.entry_key and any(str(k).lower() == form.entry_key.lower() for k in model) and \
                (update_only is None or form.entry_key.lower() in update_only):
            rows = fields[form.entry_key.lower()]
            if not isinstance(rows, list):
                fail(8, f"参数错误：{form.entry_key}必须是数组", form.entry_key)
                rows = []
            self._apply_entries(form, record, existing, rows, options, update_only, lenient, fail)
        self._fill_defaults(form, record, draft=draft)
        if form.entry_key:
            for seq, row in enumerate(record[form.entry_key], start=1):
                row["FSeq"] = seq
                self._finish_row(form, row, seq, lenient, fail)
        if not lenient:
            self._validate(form, record, fail, {p.field_name for p in problems})
            if not seed:
                closed = self._closed_period(form, record, "保存", dindex)
                if closed is not None:
                    problems.append(closed)
        number = str(record.get(form.number_key) or "")
        if number:
            for other in table.values():
                if other[form.pk] != rid and str(other.get(form.number_key) or "").casefold() == number.casefold():
                    fail(11, f"{form.name}编号“{number}”已经存在，编号必须唯一", form.number_key)
                    break
        if problems:
            return {}, problems
        now = self.now()
        if not number and form.is_bill and not draft:
            record[form.number_key] = self._next_number(form)
        if existing is None:
            record[form.pk] = self._new_id(form.form_id.lower())
            if not (seed and model_has(model, "FCreateDate")):
                record["FCreateDate"] = now
            if not seed or not model_has(model, "FDocumentStatus"):
                record["FDocumentStatus"] = "Z" if draft else "A"
        elif record.get("FDocumentStatus") == "Z" and not draft and not seed:
            record["FDocumentStatus"] = "A"
        if not (seed and model_has(model, "FModifyDate")):
            record["FModifyDate"] = now
        if form.entry_key:
            for row in record[form.entry_key]:
                if not row.get("FEntryID"):
                    row["FEntryID"] = self._next_entry_id
                    self._next_entry_id += 1
        if options["auto_audit"] and not draft:
            record["FDocumentStatus"] = "B"
            problem = self._audit(form, record, options["allow_negative"], dindex)
            if problem is not None:
                return {}, [problem]
        if seed and form.is_bill and record.get("FDocumentStatus") == "C":
            self._post(form, record, allow_negative=True)
        self._store(form, record)
        return record, []

    def _next_number(self, form: Form) -> str:
        while True:
            value = self._number_seq.get(form.form_id, 0) + 1
            self._number_seq[form.form_id] = value
            number = f"{form.prefix}{value:05d}"
            if self.find(form.form_id, number) is None:
                return number

    def _apply_entries(self, form: Form, record: dict[str, Any], existing: dict[str, Any] | None, rows: list[Any],
                       options: dict[str, Any], update_only: set[str] | None, lenient: bool,
                       fail: Callable[..., None]) -> None:
        entry_key = form.entry_key
        assert entry_key is not None
        current = {row["FEntryID"]: row for row in record[entry_key]}
        result: list[dict[str, Any]] = []
        touched: set[int] = set()
        for index, raw in enumerate(rows):
            if not isinstance(raw, dict):
                fail(8, f"参数错误：{entry_key}第{index + 1}行必须是JSON对象", entry_key)
                continue
            values = _ci(raw)
            try:
                entry_id = int(values.get("fentryid") or 0)
            except (TypeError, ValueError):
                entry_id = -1
            if entry_id and entry_id in current and existing is not None:
                row = current[entry_id]
                touched.add(entry_id)
                restrict = update_only
            elif entry_id:
                fail(10, f"{entry_key}第{index + 1}行的分录内码{entry_id}不存在", f"{entry_key}.FEntryID")
                continue
            else:
                row = {f.key: self._default_value(f) for f in form.entry}
                row["FEntryID"] = 0
                restrict = None
            for key, value in raw.items():
                f = form.entry_field(str(key))
                if f is None or (restrict is not None and str(key).lower() not in restrict):
                    continue
                if f.key == "FStockFlag":
                    continue
                row[f.key] = self._convert(f, value, index + 1, lenient=lenient, fail=fail)
            result.append(row)
        if options["delete_entry"] or existing is None:
            record[entry_key] = result
        else:
            new_rows = [row for row in result if not row["FEntryID"]]
            record[entry_key] = [row for row in record[entry_key]] + new_rows

    def _convert(self, f: FieldDef, value: Any, line: int | None, *, lenient: bool, fail: Callable[..., None]) -> Any:
        where = f"第{line}行分录，" if line else ""

        def bad(message: str) -> Any:
            if not lenient:
                fail(11, f"{where}字段“{f.name}”({f.key}){message}", f.key)
            return self._default_value(f)
        if f.kind in (TEXT, ENUM):
            return "" if value is None else (value if isinstance(value, str) else str(value))
        if f.kind == DATE:
            if value in (None, ""):
                return None
            try:
                return kf.parse_datetime(str(value))
            except ValueError:
                return bad(f"的值“{value}”不是有效的日期")
        if f.kind == DECIMAL:
            if value in (None, ""):
                return Decimal(0)
            if isinstance(value, bool):
                return bad(f"的值“{value}”不是有效的数字")
            try:
                number = Decimal(str(value).strip())
            except InvalidOperation:
                return bad(f"的值“{value}”不是有效的数字")
            return number if number.is_finite() else bad(f"的值“{value}”不是有效的数字")
        if f.kind == INT:
            try:
                return int(value or 0)
            except (TypeError, ValueError):
                return bad(f"的值“{value}”不是有效的整数")
        if f.kind == BOOL:
            return _as_bool(value)
        if f.kind == REF:
            return self._convert_ref(f, value, bad, lenient)
        return value

    def _convert_ref(self, f: FieldDef, value: Any, bad: Callable[[str], Any], lenient: bool) -> Any:
        assert f.ref is not None
        target = self.forms[f.ref.lower()]
        if value in (None, "", 0):
            return 0
        if not isinstance(value, dict):
            return bad(f"的值必须是对象，例如{{\"FNumber\": \"…\"}}，收到“{value}”")
        values = _ci(value)
        if f.ref == LOCATION and "fnumber" not in values:  # flex field: {"FSTOCKLOCID__FF100001": {"FNumber": ..}}
            nested = [v for v in values.values() if isinstance(v, dict)]
            values = _ci(nested[0]) if nested else values
        if "fnumber" in values:
            number = "" if values["fnumber"] is None else str(values["fnumber"])
            if not number:
                return 0
            if f.ref in (LOCATION, LOT):
                return _Pending(number)
            record = self.find(target.form_id, number)
            if record is None:
                return bad(f"的编码“{number}”在{target.name}中不存在")
        else:
            key = next((k for k in (target.pk.lower(), "id", "fid") if k in values), None)
            if key is None:
                return bad("的值缺少FNumber")
            try:
                record = self.records[target.form_id.lower()].get(int(values[key]))
            except (TypeError, ValueError):
                record = None
            if record is None:
                return bad(f"的内码“{values[key]}”在{target.name}中不存在")
        if not lenient and record.get("FForbidStatus") == "B":
            return bad(f"引用的{target.name}“{record.get(target.number_key)}”已禁用")
        if not lenient and record.get("FDocumentStatus") not in ("C", None, ""):
            return bad(f"引用的{target.name}“{record.get(target.number_key)}”未审核")
        return record[target.pk]

    def _fill_defaults(self, form: Form, record: dict[str, Any], *, draft: bool) -> None:
        if form.is_bill:
            if record.get("FDate") is None:
                record["FDate"] = self.now().replace(hour=0, minute=0, second=0, microsecond=0)
            if not record.get("FBillTypeID") and form.bill_type:
                record["FBillTypeID"] = self.find(BILLTYPE, form.bill_type)["FBillTypeID"]  # type: ignore[index]
            for f in form.head:
                if f.kind == REF and f.ref == ORG and not record.get(f.key):
                    record[f.key] = record.get("FStockOrgId") or self.org_id
        elif form.head_field("FCreateOrgId") is not None:
            for key in ("FCreateOrgId", "FUseOrgId"):
                record[key] = record.get(key) or self.org_id

    def _finish_row(self, form: Form, row: dict[str, Any], line: int, lenient: bool, fail: Callable[..., None]) -> None:
        where = f"第{line}行分录，"
        material_key = form.entry[0].key
        if form.form_id == "STK_TransferDirect":
            row["FDestMaterialId"] = row.get("FDestMaterialId") or row.get("FMaterialId")
            if not row.get("FDestLot") and row.get("FLot"):
                row["FDestLot"] = row["FLot"]
        material = self.records[MATERIAL.lower()].get(row.get(material_key) or 0)
        if material is not None:
            unit = material.get("FBaseUnitId") or 0
            row["FBaseUnitID"] = unit
            unit_key = next((f.key for f in form.entry if f.key.lower() == "funitid"), None)
            if unit_key and not row.get(unit_key):
                row[unit_key] = unit
        qty, base = form.qty, form.base_qty
        if qty and base:
            if row.get(qty) in (None, Decimal(0)) and row.get(base):
                row[qty] = row[base]
            else:
                row[base] = row.get(qty) or Decimal(0)
        for f in form.entry:
            if f.kind == REF and f.ref == STATUS and not row.get(f.key):
                row[f.key] = self.find(STATUS, AVAILABLE_STATUS)["FStockStatusId"]  # type: ignore[index]
        for mv in form.movements:
            stock = self.records[STOCK.lower()].get(row.get(mv.stock) or 0)
            pending = row.get(mv.location)
            if isinstance(pending, _Pending):
                if stock is not None and stock.get("FIsOpenLocation"):
                    found = self._location_id(stock["FStockId"], pending.number)
                    if found is None and not lenient:
                        fail(11, f"{where}仓位“{pending.number}”不属于仓库“{stock['FNumber']}”", mv.location)
                    row[mv.location] = found or 0
                else:
                    row[mv.location] = 0  # a warehouse without locations ignores the flex value
            elif not row.get(mv.location) and stock is not None and stock.get("FIsOpenLocation") and not lenient:
                fail(11, f"{where}仓库“{stock['FNumber']}”启用了仓位管理，字段“仓位”({mv.location})是必填项", mv.location)
            mat = self.records[MATERIAL.lower()].get(row.get(mv.material) or 0)
            lot = row.get(mv.lot)
            if isinstance(lot, _Pending):
                row[mv.lot] = self._lot_id(mat[MATERIAL_PK], lot.number) if mat is not None else 0
            elif not row.get(mv.lot) and mat is not None and mat.get("FIsBatchManage") and not lenient:
                fail(11, f"{where}物料“{mat['FNumber']}”启用了批号管理，字段“批号”({mv.lot})是必填项", mv.lot)

    def _validate(self, form: Form, record: dict[str, Any], fail: Callable[..., None], already: set[str | None]) -> None:
        """Required fields; a field that already failed (unknown number) is not reported twice."""
        def fail_once(code: int, message: str, field_name: str | None = None) -> None:
            if field_name not in already:
                fail(code, message, field_name)
        if not form.is_bill:
            for key in ("FNumber", "FName"):
                if not str(record.get(key) or "").strip() and form.head_field(key) is not None:
                    fail_once(11, f"字段“{form.head_field(key).name}”({key})是必填项", key)  # type: ignore[union-attr]
            return
        if form.partner and not record.get(form.partner):
            f = form.head_field(form.partner)
            fail_once(11, f"字段“{f.name}”({f.key})是必填项", f.key)  # type: ignore[union-attr]
        if not record.get("FStockOrgId"):
            fail_once(11, "字段“库存组织”(FStockOrgId)是必填项", "FStockOrgId")
        rows = record[form.entry_key] if form.entry_key else []
        if not rows:
            fail_once(11, f"单据体“{form.entry_key}”至少需要一行分录", form.entry_key)
        for line, row in enumerate(rows, start=1):
            where = f"第{line}行分录，"
            for mv in form.movements:
                for key in (mv.material, mv.stock):
                    if not row.get(key):
                        f = form.entry_field(key)
                        fail_once(11, f"{where}字段“{f.name}”({f.key})是必填项", f.key)  # type: ignore[union-attr]
            if form.qty and (row.get(form.qty) or Decimal(0)) <= 0:
                f = form.entry_field(form.qty)
                fail_once(11, f"{where}字段“{f.name}”({f.key})必须大于0", f.key)  # type: ignore[union-attr]

    def _return_data(self, form: Form, record: dict[str, Any], names: list[str]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name in names:
            head, _, rest = name.partition(".")
            if form.entry_key and head.lower() == form.entry_key.lower():
                rows = out.setdefault(form.entry_key, [{} for _ in record[form.entry_key]])
                for target, row in zip(rows, record[form.entry_key]):
                    if not rest or rest.lower() == "fentryid":
                        target["FEntryID"] = row["FEntryID"]
                        if not rest:
                            continue
                    f = form.entry_field(rest.partition(".")[0])
                    if f is not None:
                        target[rest if "." in rest else f.key] = self._return_value(form, f, row, rest)
                continue
            if head.lower() in (form.pk.lower(), "fid"):
                out[form.pk] = record[form.pk]
                continue
            f = form.head_field(head)
            if f is not None:
                out[name if rest else f.key] = self._return_value(form, f, record, name)
        return out

    def _return_value(self, form: Form, f: FieldDef, row: dict[str, Any], name: str) -> Any:
        sub = name.partition(".")[2]
        value = row.get(f.key)
        if f.kind == REF:
            target = self.forms[f.ref.lower()]  # type: ignore[union-attr]
            record = self.records[target.form_id.lower()].get(value or 0)
            if sub:
                sf = target.head_field(sub)
                return None if record is None or sf is None else self._out(record.get(sf.key), sf, True)
            return None if record is None else {"FNumber": record.get(target.number_key)}
        return self._out(value, f, False)

    # --- status operations ----------------------------------------------------------------

    def _targets(self, form: Form, data: dict[str, Any]) -> list[tuple[Any, dict[str, Any] | None]]:
        ids = data.get("ids")
        if ids not in (None, "", []):
            items = ids.split(",") if isinstance(ids, str) else (ids if isinstance(ids, list) else [ids])
            return [(str(i).strip(), self._find_target(form, rid=str(i).strip())) for i in items if str(i).strip()]
        numbers = data.get("numbers")
        if numbers not in (None, "", []):
            items = numbers.split(",") if isinstance(numbers, str) else (numbers if isinstance(numbers, list) else [numbers])
            return [(str(n).strip(), self._find_target(form, number=str(n).strip())) for n in items if str(n).strip()]
        return []

    def _status_op(self, form: Form, op: str, op_number: str | None, data: dict[str, Any]) -> tuple[dict[str, Any], bool]:
        if form.kind == "inventory":
            raise KError(4, f"{form.name}不支持该操作")
        if op == "ExecuteOperation":
            if not op_number:
                raise KError(3, "操作标识opNumber不能为空")
            op = {"forbid": "Forbid", "enable": "Enable", "cancel": "Cancel", "undocancel": "UndoCancel",
                  "submit": "Submit", "audit": "Audit", "unaudit": "UnAudit", "delete": "Delete"}.get(op_number.lower(), "")
            if not op or (op in ("Forbid", "Enable") and not form.has_forbid) or \
                    (op in ("Cancel", "UndoCancel") and not form.is_bill):
                raise KError(4, f"业务对象{form.form_id}上不存在操作“{op_number}”")
        targets = self._targets(form, data)
        if not targets:
            raise KError(5, "单据内码(Ids)和编号(Numbers)不能同时为空")
        flags = str(data.get("interationflags") or "")
        allow_negative = ALLOW_NEGATIVE_FLAG.lower() in [f.strip().lower() for f in flags.split(";")]
        successes, problems = [], []
        table = self.records[form.form_id.lower()]
        for dindex, (key, record) in enumerate(targets):
            if record is None or table.get(record[form.pk]) is not record:
                problems.append(_problem(10, f"{form.name}“{key}”不存在或已被删除", None, dindex))
                continue
            problem = self._apply_status(form, op, record, allow_negative, dindex)
            if problem is not None:
                problems.append(problem)
            else:
                successes.append({"Id": record[form.pk], "Number": record.get(form.number_key) or "", "DIndex": dindex})
        return {"Result": {"ResponseStatus": _status(problems, successes)}}, bool(successes)

    def _apply_status(self, form: Form, op: str, record: dict[str, Any], allow_negative: bool, dindex: int) -> Problem | None:
        status = record.get("FDocumentStatus")
        number = record.get(form.number_key) or record[form.pk]
        op_names = {"Submit": "提交", "Audit": "审核", "UnAudit": "反审核", "Delete": "删除", "CancelAssign": "撤销",
                    "Forbid": "禁用", "Enable": "反禁用", "Cancel": "作废", "UndoCancel": "反作废"}

        def refuse(reason: str | None = None) -> Problem:
            reason = reason or f"当前状态为“{STATUS_NAMES.get(status, status)}”"
            return _problem(12, f"{form.name}“{number}”{reason}，不能{op_names[op]}", "FDocumentStatus", dindex)
        allowed = {"Submit": ("A", "D"), "Audit": ("B",), "UnAudit": ("C",), "Delete": ("Z", "A", "D"),
                   "CancelAssign": ("B",)}
        if op in allowed and status not in allowed[op]:
            return refuse()
        if op in allowed and form.is_bill and record.get("FCancelStatus") == "B":
            return refuse("已作废")
        if op in ("Audit", "UnAudit"):
            closed = self._closed_period(form, record, op_names[op], dindex)
            if closed is not None:
                return closed
        now = self.now()
        if op == "Submit":
            record["FDocumentStatus"] = "B"
        elif op == "Audit":
            problem = self._audit(form, record, allow_negative, dindex)
            if problem is not None:
                return problem
        elif op == "UnAudit":
            if form.is_bill and record.get("_posted"):
                try:
                    self.ledger.reverse(record["_posted"], allow_negative=True if allow_negative else None)
                except NegativeStock as exc:
                    return _problem(11, "反审核将导致负库存：" + self._shortfall_text(exc), None, dindex)
                except LedgerError as exc:
                    return _problem(11, str(exc), None, dindex)
                record["_posted"] = None
                for row in record[form.entry_key or ""] if form.entry_key else []:
                    row["FStockFlag"] = False
            record["FDocumentStatus"] = "D"
            record["FApproveDate"] = None
        elif op == "CancelAssign":
            record["FDocumentStatus"] = "D"
        elif op == "Delete":
            del self.records[form.form_id.lower()][record[form.pk]]
            self._index[form.form_id.lower()] = None
            return None
        elif op == "Forbid":
            if record.get("FForbidStatus") == "B":
                return refuse("已经是禁用状态")
            record["FForbidStatus"], record["FForbidDate"] = "B", now
        elif op == "Enable":
            if record.get("FForbidStatus") != "B":
                return refuse("不是禁用状态")
            record["FForbidStatus"], record["FForbidDate"] = "A", None
        elif op == "Cancel":
            if status in ("B", "C") or record.get("FCancelStatus") == "B":
                return refuse()
            record["FCancelStatus"] = "B"
        elif op == "UndoCancel":
            if record.get("FCancelStatus") != "B":
                return refuse("未作废")
            record["FCancelStatus"] = "A"
        record["FModifyDate"] = now
        return None

    def _closed_period(self, form: Form, record: dict[str, Any], action: str, dindex: int) -> Problem | None:
        """MsgCode 11 on FDate when ``record`` is a stock bill dated inside the closed stock period."""
        closed = self.stock_closed_until
        if closed is None or not form.is_bill or not form.movements:
            return None
        when = record.get("FDate")
        day = when.date() if isinstance(when, datetime) else when
        if not isinstance(day, date) or day > closed:
            return None
        return _problem(11, f"单据日期“{day.isoformat()}”小于或等于库存组织“{self.org_name}”的最近关账日期"
                            f"“{closed.isoformat()}”，不允许{action}", "FDate", dindex)

    def _audit(self, form: Form, record: dict[str, Any], allow_negative: bool, dindex: int) -> Problem | None:
        """B → C, posting the stock; on refusal the record is left as it was."""
        if form.is_bill:
            try:
                self._post(form, record, allow_negative=True if allow_negative else None)
            except NegativeStock as exc:
                return _problem(11, "更新库存时出现可以忽略的异常数据，是否继续？库存不足：" + self._shortfall_text(exc),
                                None, dindex)
        now = self.now()
        record["FDocumentStatus"] = "C"
        record["FApproveDate"] = now
        record["FModifyDate"] = now
        return None

    def _stock_entries(self, form: Form, record: dict[str, Any]) -> list[Entry]:
        entries = []
        reverse = form.direction_field is not None and str(record.get(form.direction_field) or "").upper() == "RETURN"
        for row in record[form.entry_key] if form.entry_key else []:
            qty = row.get(form.base_qty or "") or Decimal(0)
            if not qty:
                continue
            for mv in form.movements:
                sku = self._number_of(MATERIAL, row.get(mv.material))
                warehouse = self._number_of(STOCK, row.get(mv.stock))
                if not sku or not warehouse:
                    continue
                sign = -mv.sign if reverse else mv.sign
                entries.append(Entry(sku, warehouse, qty * sign, bin=self._number_of(LOCATION, row.get(mv.location)),
                                     lot=self._number_of(LOT, row.get(mv.lot))))
        return entries

    def _post(self, form: Form, record: dict[str, Any], *, allow_negative: bool | None) -> None:
        entries = self._stock_entries(form, record)
        if entries:
            for entry in entries:  # BD_STOCK "allow negative stock" (INFERRED field name FAllowMinusQty)
                stock = self.find(STOCK, entry.warehouse)
                if stock is not None and stock.get("FAllowMinusQty") and allow_negative is None:
                    self.ledger.set_warehouse_policy(entry.warehouse, allow_negative=True)
            ref = str(record.get("FBillNo") or f"{form.form_id}:{record['FID']}")
            if self.ledger.is_posted(ref):
                ref = f"{form.form_id}:{ref}"
            self.ledger.post(ref, entries, allow_negative=allow_negative)
            record["_posted"] = ref
        for row in record[form.entry_key] if form.entry_key else []:
            row["FStockFlag"] = True

    def _shortfall_text(self, exc: NegativeStock) -> str:
        parts = []
        for s in exc.shortfalls:
            where = f"仓库{s.warehouse}" + (f" 仓位{s.bin}" if s.bin else "") + (f" 批号{s.lot}" if s.lot else "")
            parts.append(f"物料{s.sku} {where} 即时库存{s.on_hand} 需要{s.requested}")
        return "；".join(parts)

    # --- harness hooks --------------------------------------------------------------------

    def seed(self, data: Mapping[str, Any]) -> None:
        rest = dict(data)
        with self.lock:
            for index, raw in enumerate(rest.pop("accounts", [])):
                if not isinstance(raw, Mapping):
                    raise ValueError(f"accounts[{index}]: must be an object")
                account = Account.from_dict(raw)
                self.accounts[account.acct_id] = account
            if "stock_closed_until" in rest:
                self.stock_closed_until = _closing_date(rest.pop("stock_closed_until"), "stock_closed_until")
            records = rest.pop("records", {})
            if not isinstance(records, Mapping):
                raise ValueError("records: must be an object of FormId → list of models")
            for form_id, models in records.items():
                form = self.forms.get(str(form_id).lower())
                if form is None or form.kind in ("inventory", "internal"):
                    raise ValueError(f"records.{form_id}: unknown or read-only form")
                for index, model in enumerate(models):
                    if form.kind == "base" and isinstance(model, Mapping):
                        existing = self.find(form.form_id, str(_ci(model).get("fnumber", "")))
                        if existing is not None:
                            model = {**model, form.pk: existing[form.pk]}
                        model = {"FDocumentStatus": "C", **model}
                    options = {"fields": [], "update": set(), "delete_entry": True, "auto_audit": False,
                               "allow_negative": True}
                    _, problems = self._save_one(form, _plain(model), options, draft=False, dindex=index, seed=True)
                    if problems:
                        raise ValueError(f"records.{form_id}[{index}]: {problems[0].message}")
            super().seed(rest)

    def seed_world(self, world: World) -> None:
        with self.lock:
            for item in world.items:
                unit = self.find(UNIT, item.unit) or self._insert(UNIT, {"FNumber": item.unit, "FName": item.unit})
                self._upsert(MATERIAL, item.sku, {
                    "FName": item.name, "FSpecification": item.spec or "", "FBaseUnitId": unit["FUNITID"],
                    "FIsBatchManage": item.batch_managed, "FBarCode": item.barcode or ""})
            for warehouse in world.warehouses:
                stock = self._upsert(STOCK, warehouse.code, {"FName": warehouse.name,
                                                             "FIsOpenLocation": bool(warehouse.bins)})
                for bin_code in warehouse.bins:
                    self._location_id(stock["FStockId"], bin_code, create=True)
            for partner in world.partners:
                if partner.role not in ("supplier", "customer"):
                    raise ValueError(f"partner {partner.code}: role must be supplier or customer, got {partner.role!r}")
                self._upsert(SUPPLIER if partner.role == "supplier" else CUSTOMER, partner.code, {"FName": partner.name})
            self.ledger.seed_balances({StockKey(b.sku, b.warehouse, b.bin, b.lot): b.qty for b in world.balances})

    def _upsert(self, form_id: str, number: str, values: dict[str, Any]) -> dict[str, Any]:
        existing = self.find(form_id, number)
        if existing is not None:
            existing.update(values)
            existing["FModifyDate"] = self.now()
            self._index[form_id.lower()] = None
            return existing
        return self._insert(form_id, {"FNumber": number, **values})

    def touch(self, entity: str, key: str, at: float | None = None) -> None:
        form_ids = {"items": [MATERIAL], "warehouses": [STOCK], "partners": [SUPPLIER, CUSTOMER]}.get(entity)
        if form_ids is None:
            raise ValueError(f"touch: unknown entity {entity!r} (items, warehouses, partners)")
        stamp = self.now() if at is None else self._local(float(at))
        with self.lock:
            found = [r for r in (self.find(f, key) for f in form_ids) if r is not None]
            if not found:
                raise ValueError(f"touch: no {entity} with number {key!r}")
            for record in found:
                record["FModifyDate"] = stamp

    def documents_for(self, reference: str) -> list[str]:
        found = []
        with self.lock:
            for form in self.forms.values():
                if not form.is_bill:
                    continue
                remark = form.head_field(self.remark_field)
                for record in self.records[form.form_id.lower()].values():
                    if record.get("FCancelStatus") == "B":
                        continue
                    if record.get("FBillNo") == reference or (remark is not None and record.get(remark.key) == reference):
                        found.append((record["_seq"], record.get("FBillNo") or ""))
        return [number for _, number in sorted(found)]

    # --- conveniences for tests -----------------------------------------------------------

    def bill(self, form_id: str, number: str) -> dict[str, Any] | None:
        """The stored record of a bill (or base data) by number, as the simulator holds it."""
        with self.lock:
            return copy.deepcopy(self._find_target(self.forms[form_id.lower()], number=number))



def _closing_date(value: Any, where: str) -> date | None:
    """A stock closing date from ``None``, a ``date`` or ``"YYYY-MM-DD"``."""
    if value is None or (isinstance(value, date) and not isinstance(value, datetime)):
        return value
    if isinstance(value, str):
        try:
            return date.fromisoformat(value.strip())
        except ValueError:
            pass
    raise ValueError(f"{where}: must be a date \"YYYY-MM-DD\" or null, got {value!r}")


def model_has(model: Mapping[str, Any], key: str) -> bool:
    return any(str(k).lower() == key.lower() for k in model)


def _plain(value: Any) -> Any:
    """Seed JSON with floats as Decimals (the admin route parses fractions as Decimal already)."""
    if isinstance(value, float):
        return Decimal(str(value))
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value
