"""K3Cloud WebAPI wire protocol (kingdee.md §1-§7). Knows nothing of canonical models.

Every call is ``POST {site}/k3cloud/<Service>.common.kdsvc`` with a JSON body. This module:

* authenticates, either by the official SDK's per-request signature headers (§2.3, computed
  exactly as ``k3cloud_webapi_sdk`` 8.2.0 does) or by a session login (``ValidateUser`` or
  ``LoginByAppSecret``, §3) whose ``kdservice-sessionid`` is kept as cookie and header;
* answers ``MsgCode 1`` ("context lost") with exactly one transparent re-login and one resend,
  never a loop (duplicate writes came from re-login loops, §10);
* decodes the raw body as UTF-8 and translates every envelope, HTTP-200 failures included, into
  :mod:`connectors.errors` (table in :func:`envelope_error`);
* pages ``ExecuteBillQuery`` with ``StartRow``/``Limit`` and ``TopRowCount = 0`` (§6 trap) and
  refuses a page that does not advance;
* sends writes with ``idempotent=False``, so a lost answer is ``Ambiguous`` and never resent.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import json as jsonlib
import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import quote, urlsplit

from connectors import observe
from connectors.errors import Ambiguous, AuthError, ConfigError, ConnectorError, ContractViolation, RateLimited, \
    Rejected, Transient
from connectors.http import HttpClient, HttpResponse, excerpt, raise_for_generic_status
from connectors.redaction import redact_text, register_secret, unregister_secret

FORM_SERVICE = "Kingdee.BOS.WebApi.ServicesStub.DynamicFormService."
AUTH_SERVICE = "Kingdee.BOS.WebApi.ServicesStub.AuthService."
SUFFIX = ".common.kdsvc"
SESSION_COOKIE = "kdservice-sessionid"

# The SDK's fixed XOR key for the secret part of an app id (kingdee.md §2.3; KDGO hard-codes it too).
_APP_SECRET_KEY = b"0054f397c6234378b09ca7d3e5debce7"
_PASSPORT_FAILURE = "fail to verify thirty passport"
_RESPONSE_ERROR = re.compile(r"\s*response_error:", re.IGNORECASE)  # the server's crash text (§2.6)

AuthMode = Literal["signature", "session"]
LoginMethod = Literal["app_secret", "password"]


# ---------------------------------------------------------------------------------------------
# Signing (kingdee.md §2.3)


def decode_app_secret(secret_part: str) -> str:
    """The SDK's ``DecodeAppSecret``: a 32-char part is base64-decoded, XORed with the fixed key
    byte by byte, and base64-encoded again; any other length gives ``''``."""
    if len(secret_part) != 32:
        return ""
    try:
        raw = base64.b64decode(secret_part)
    except ValueError:
        return ""
    return base64.b64encode(bytes(b ^ _APP_SECRET_KEY[i] for i, b in enumerate(raw))).decode("ascii")


def kd_signature(key: str, message: str) -> str:
    """base64 of the lower-case **hex text** of HMAC-SHA256(key, message), as the SDK computes it."""
    digest = hmac.new(key.encode("utf-8"), message.encode("utf-8"), hashlib.sha256).hexdigest()
    return base64.b64encode(digest.encode("ascii")).decode("ascii")


def split_app_id(app_id: str) -> tuple[str, str]:
    """(client id, client secret) from ``"<clientId>_<secretPart>"``; both empty unless exactly two parts."""
    parts = app_id.split("_")
    if len(parts) != 2:
        return "", ""
    return parts[0], decode_app_secret(parts[1])


def signature_headers(url: str, *, acct_id: str, username: str, app_id: str, app_secret: str, lcid: int,
                      org_num: str, timestamp: int) -> dict[str, str]:
    """The SDK's ``BuildHeader`` for one request to ``url``."""
    client_id, client_secret = split_app_id(app_id)
    path = urlsplit(url).path
    ts = str(int(timestamp))
    message = f"POST\n{quote(path, encoding='utf-8').replace('/', '%2F')}\n\nx-api-nonce:{ts}\nx-api-timestamp:{ts}\n"
    appdata = f"{acct_id},{username},{lcid},{org_num}"
    return {
        "X-Api-ClientID": client_id,
        "X-Api-Auth-Version": "2.0",
        "x-api-timestamp": ts,
        "x-api-nonce": ts,
        "x-api-signheaders": "x-api-timestamp,x-api-nonce",
        "X-Api-Signature": kd_signature(client_secret, message),
        "X-Kd-Appkey": app_id,
        "X-Kd-Appdata": base64.b64encode(appdata.encode("utf-8")).decode("ascii"),
        "X-Kd-Signature": kd_signature(app_secret, app_id + appdata),
    }


# ---------------------------------------------------------------------------------------------
# Envelopes (kingdee.md §5)


@dataclass(frozen=True)
class VendorStatus:
    """A parsed ``ResponseStatus``."""

    success: bool
    msg_code: int
    errors: tuple[Mapping[str, Any], ...] = ()
    success_entities: tuple[Mapping[str, Any], ...] = ()
    raw: Mapping[str, Any] = field(default_factory=dict)

    def error_text(self) -> str:
        parts = []
        for err in self.errors:
            name = _ci(err, "FieldName")
            message = str(_ci(err, "Message") or "").strip() or "(no message)"
            parts.append(f"{name}: {message}" if name else message)
        return "; ".join(parts) or "(no error message)"

    def field_names(self) -> list[str]:
        return [str(n) for err in self.errors if (n := _ci(err, "FieldName"))]


def _ci(mapping: Any, key: str) -> Any:
    """``mapping[key]`` ignoring case (gateways vary the casing); None when absent."""
    if not isinstance(mapping, Mapping):
        return None
    if key in mapping:
        return mapping[key]
    lower = key.lower()
    for k, v in mapping.items():
        if isinstance(k, str) and k.lower() == lower:
            return v
    return None


def _as_bool(value: Any) -> bool | None:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    return None


def _as_int(value: Any, default: int = 0) -> int:
    if isinstance(value, bool):
        return default
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value.strip())
    return default


def find_status(data: Any) -> Mapping[str, Any] | None:
    """The ``ResponseStatus`` in any documented wrapping: ``{"Result":{"ResponseStatus":…}}``, the
    query failure ``[[{"Result":{"ResponseStatus":…}}]]``, or a bare ``{"ResponseStatus":…}``."""
    if isinstance(data, list) and len(data) == 1:
        inner = data[0]
        if isinstance(inner, list) and len(inner) == 1 and isinstance(inner[0], Mapping):
            return find_status(inner[0])
        if isinstance(inner, Mapping):
            return find_status(inner)
        return None
    if not isinstance(data, Mapping):
        return None
    result = _ci(data, "Result")
    if isinstance(result, Mapping):
        status = _ci(result, "ResponseStatus")
        if isinstance(status, Mapping):
            return status
    status = _ci(data, "ResponseStatus")
    return status if isinstance(status, Mapping) else None


def parse_status(raw: Mapping[str, Any], where: str) -> VendorStatus:
    success = _as_bool(_ci(raw, "IsSuccess"))
    if success is None:
        raise ContractViolation(f"{where}: ResponseStatus has no boolean IsSuccess: {excerpt(repr(raw))!r}")
    errors = _ci(raw, "Errors")
    entities = _ci(raw, "SuccessEntitys")
    errors = [] if errors is None else errors
    entities = [] if entities is None else entities
    if not isinstance(errors, list) or not isinstance(entities, list):
        raise ContractViolation(f"{where}: ResponseStatus Errors/SuccessEntitys are not lists")
    return VendorStatus(success=success, msg_code=_as_int(_ci(raw, "MsgCode")),
                        errors=tuple(e for e in errors if isinstance(e, Mapping)),
                        success_entities=tuple(e for e in entities if isinstance(e, Mapping)), raw=raw)


_UNKNOWN_FORM_MARKERS = ("业务对象不存在", "does not exist", "not exist", "不存在")
_BAD_FILTER_MARKERS = ("getrealexpress",)


def envelope_error(status: VendorStatus, *, where: str, write: bool, form_id: str | None = None,
                   record: str | None = None, bill: str | None = None) -> ConnectorError:
    """The error for a failed ``ResponseStatus`` (``MsgCode 1`` is handled by the caller's re-login).

    ========  ======================================  ==========================================
    MsgCode   meaning (kingdee.md §5)                 error
    ========  ======================================  ==========================================
    1         context lost / credentials refused      AuthError (after the one re-login)
    2, 15     no permission, admin login forbidden    AuthError
    3, 5, 8   operation/bill id empty, bad parameter  ContractViolation (our request is wrong)
    4         exception: unknown form                 ConfigError
    4         exception: bad FilterString             ContractViolation
    4         other exception                         Rejected (write) / ContractViolation (read)
    6         database operation failed               Ambiguous (write) / Transient (read)
    7         licence                                 ConfigError
    9         field or value does not exist           Rejected (write: a referenced value) /
                                                      ConfigError (read: a field key missing)
    10        data not found                          Rejected
    11, 12    validation failed, not operable         Rejected(vendor_code, naming FieldName)
    13        network-control conflict                Transient (someone holds the record)
    14        call limit                              RateLimited
    other     —                                       Rejected (write) / ContractViolation (read)
    ========  ======================================  ==========================================
    """
    code = status.msg_code
    text = status.error_text()
    target = " ".join(p for p in (where, form_id, bill) if p)
    message = f"{target}: {text}"
    details: dict[str, Any] = {"msg_code": code, "errors": [dict(e) for e in status.errors]}
    names = status.field_names()
    if names:
        details["fields"] = names
    if bill:
        details["bill_number"] = bill
    vendor_code = str(code)
    lowered = text.lower()
    kwargs: dict[str, Any] = {"vendor_code": vendor_code, "record": record, "details": details}
    if code in (1, 2, 15):
        return AuthError(message, **kwargs)
    if code in (3, 5, 8):
        return ContractViolation(message, **kwargs)
    if code == 4:
        if any(m in lowered for m in _BAD_FILTER_MARKERS):
            return ContractViolation(message, **kwargs)
        if "业务对象不存在" in text or ("form" in lowered and any(m in lowered for m in _UNKNOWN_FORM_MARKERS)):
            return ConfigError(f"{message} (is the form id right for this tenant?)", **kwargs)
        return Rejected(message, **kwargs) if write else ContractViolation(message, **kwargs)
    if code == 6:
        if write:
            return Ambiguous(f"{message}; the database step failed, check before sending again", **kwargs)
        return Transient(message, **kwargs)
    if code == 7:
        return ConfigError(message, **kwargs)
    if code == 9:
        return Rejected(message, **kwargs) if write else ConfigError(
            f"{message} (a field key this connection uses is unknown to the tenant)", **kwargs)
    if code in (10, 11, 12):
        return Rejected(message, **kwargs)
    if code == 13:
        return Transient(message, **kwargs)
    if code == 14:
        return RateLimited(message, retry_after=None, **kwargs)
    return Rejected(message, **kwargs) if write else ContractViolation(message, **kwargs)


# ---------------------------------------------------------------------------------------------
# Results


@dataclass(frozen=True)
class SaveResult:
    id: str
    number: str
    raw: Mapping[str, Any]


@dataclass(frozen=True)
class BatchResult:
    """The ``ResponseStatus`` of a call on several records (BatchSave, Submit/Audit/... of several
    ids): the successes (``Id``, ``Number``, ``DIndex``) and the errors (``FieldName``,
    ``Message``, ``DIndex``), for the caller to map back to its records."""

    success: bool
    msg_code: int
    successes: tuple[Mapping[str, Any], ...]
    errors: tuple[Mapping[str, Any], ...]


@dataclass(frozen=True)
class QueryPage:
    start_row: int
    rows: list[list[Any]]
    next_start_row: int | None  # None on the last page


@dataclass(frozen=True)
class Credentials:
    acct_id: str
    username: str
    app_id: str = ""
    app_secret: str | None = None
    password: str | None = None
    lcid: int = 2052
    org_num: str = "0"
    auth: AuthMode = "signature"
    login: LoginMethod = "app_secret"

    def __repr__(self) -> str:  # never print a secret
        return (f"Credentials(acct_id={self.acct_id!r}, username={self.username!r}, app_id={self.app_id!r}, "
                f"auth={self.auth!r}, login={self.login!r})")


# ---------------------------------------------------------------------------------------------
# Client


class K3CloudClient:
    """One connection to one K3Cloud data centre."""

    def __init__(self, base_url: str, credentials: Credentials, *, connect_timeout: float = 5.0,
                 read_timeout: float = 30.0, verify: bool | str = True, name: str = "kingdee",
                 clock: Callable[[], float] = time.time, http: HttpClient | None = None) -> None:
        creds = credentials
        if creds.auth == "signature" and not (creds.app_id and creds.app_secret):
            raise ConfigError(f"{name}: signature authentication needs app_id and app_secret")
        if creds.auth == "session":
            if creds.login == "password" and not creds.password:
                raise ConfigError(f"{name}: session login with ValidateUser needs a password")
            if creds.login == "app_secret" and not (creds.app_id and creds.app_secret):
                raise ConfigError(f"{name}: session login with LoginByAppSecret needs app_id and app_secret")
        for secret in (creds.app_secret, creds.password):
            register_secret(secret)
        self.credentials = creds
        self.name = name
        self.clock = clock
        self.http = http or HttpClient(base_url, connect_timeout=connect_timeout, read_timeout=read_timeout,
                                       verify=verify, name=name)
        self._sid: str | None = None
        self._logged_in = False
        self._auth_lock = threading.Lock()
        self._secret_refs: dict[str, int] = {}
        self._secret_lock = threading.Lock()

    # -- authentication -----------------------------------------------------------------------

    @property
    def session_id(self) -> str | None:
        return self._sid

    def login(self) -> None:
        """Session mode: ``ValidateUser`` or ``LoginByAppSecret``; success only on ``LoginResultType == 1``."""
        creds = self.credentials
        with self._auth_lock:
            self._forget_session()
            if creds.login == "password":
                op = "ValidateUser"
                params: list[Any] = [creds.acct_id, creds.username, creds.password or "", creds.lcid]
            else:
                op = "LoginByAppSecret"
                params = [creds.acct_id, creds.username, creds.app_id, creds.app_secret or "", creds.lcid]
            resp = self._send(AUTH_SERVICE + op, {"parameters": params}, write=False, signed=False)
            data = self._json(resp, write=False, record=None)
            if not isinstance(data, Mapping):
                raise ContractViolation(f"{self.name}: {op} answered {excerpt(resp.text)!r}, not a login result")
            result_type = _as_int(_ci(data, "LoginResultType"), default=-999)
            if result_type != 1:
                message = _ci(data, "Message") or "login refused"
                raise AuthError(f"{self.name}: {op} refused (LoginResultType {result_type}): {message}",
                                vendor_code=f"LoginResultType {result_type}")
            sid = _ci(data, "KDSVCSessionId") or self._sid
            context = _ci(data, "Context")
            if not sid and isinstance(context, Mapping):
                sid = _ci(context, "SessionId")
            if not sid:
                raise ContractViolation(f"{self.name}: {op} succeeded but returned no session id")
            self._set_sid(str(sid))
            self._logged_in = True

    def _forget_session(self) -> None:
        self._sid = None
        self._logged_in = False
        for cookie in list(self.http.cookies):
            if cookie.name.lower() in (SESSION_COOKIE, "asp.net_sessionid"):
                self.http.cookies.clear(cookie.domain, cookie.path, cookie.name)

    def _set_sid(self, sid: str) -> None:
        register_secret(sid)
        self._sid = sid

    def _ensure_session(self) -> None:
        if self.credentials.auth == "session" and not self._logged_in:
            self.login()

    def _reauthenticate(self) -> None:
        """The one transparent re-login after MsgCode 1."""
        observe.relogin(self.name, reason="MsgCode 1")
        if self.credentials.auth == "session":
            self.login()
        else:
            with self._auth_lock:
                self._forget_session()  # the next request is checked by its signature alone

    # -- sending ------------------------------------------------------------------------------

    def _send(self, service: str, body: Any, *, write: bool, signed: bool = True) -> HttpResponse:
        path = service + SUFFIX
        headers: dict[str, str] = {"Accept-Charset": "utf-8"}
        if self._sid:
            headers[SESSION_COOKIE] = self._sid
        signatures: list[str] = []
        if signed and self.credentials.auth == "signature":
            creds = self.credentials
            sig = signature_headers(self.http.url_for(path), acct_id=creds.acct_id, username=creds.username,
                                    app_id=creds.app_id, app_secret=creds.app_secret or "", lcid=creds.lcid,
                                    org_num=creds.org_num, timestamp=int(self.clock()))
            headers.update(sig)
            signatures = [sig["X-Api-Signature"], sig["X-Kd-Signature"]]
        self._hold(signatures)
        try:
            resp = self.http.request("POST", path, idempotent=not write, json=body, headers=headers)
        except ConnectorError as exc:
            if _PASSPORT_FAILURE in exc.message.lower():
                raise AuthError(f"{self.name}: the server refused the account (Fail to verify thirty passport); "
                                "check acct_id", vendor_code="passport") from None
            raise
        finally:
            self._release(signatures)
        sid = resp.cookies.get(SESSION_COOKIE) if resp.cookies is not None else None
        if sid:
            self._set_sid(str(sid))
        if resp.status not in (200, 206):
            if _PASSPORT_FAILURE in resp.text.lower():
                raise AuthError(f"{self.name}: the server refused the account (Fail to verify thirty passport); "
                                "check acct_id", vendor_code="passport")
            raise_for_generic_status(resp)
            if resp.status == 404:
                raise ConfigError(f"{resp.where}: 404; is the connection URL the site root ending /k3cloud/?")
            raise ContractViolation(f"{resp.where}: unexpected status {resp.status}; body starts "
                                    f"{excerpt(resp.text)!r}")
        if _RESPONSE_ERROR.match(resp.text):
            said = excerpt(resp.text)
            if write:
                raise Ambiguous(f"{resp.where}: the server failed while handling the write ({said}); it may have "
                                "been applied, check before sending it again")
            raise Transient(f"{resp.where}: server exception ({said})")
        return resp

    def _hold(self, values: Sequence[str]) -> None:
        """Per-request signatures are secrets while in flight; counted so concurrent identical ones are kept."""
        if not values:
            return
        with self._secret_lock:
            for v in values:
                self._secret_refs[v] = self._secret_refs.get(v, 0) + 1
                register_secret(v)

    def _release(self, values: Sequence[str]) -> None:
        if not values:
            return
        with self._secret_lock:
            for v in values:
                left = self._secret_refs.get(v, 0) - 1
                if left <= 0:
                    self._secret_refs.pop(v, None)
                    unregister_secret(v)
                else:
                    self._secret_refs[v] = left

    @staticmethod
    def _json(resp: HttpResponse, *, write: bool, record: str | None) -> Any:
        """The body as JSON. Not JSON: a write may have been applied (Ambiguous); a read answer that
        stops mid-document was cut off on the way (Transient); any other read answer is a
        ContractViolation (the server speaks something else)."""
        text = resp.text
        try:
            return jsonlib.loads(text)
        except ValueError as exc:
            reason = f"{exc.msg} at position {exc.pos}" if isinstance(exc, jsonlib.JSONDecodeError) else str(exc)
            said = (f"{resp.where}: the answer is not valid JSON ({reason}); status {resp.status}, content-type "
                    f"{resp.headers.get('Content-Type')!r}, {len(resp.content)} bytes, starts {excerpt(text)!r}")
            details = {"status": resp.status, "bytes": len(resp.content)}
            stripped = text.strip()
            # the document ends inside a value (an unterminated string reports where it started)
            cut_off = (isinstance(exc, jsonlib.JSONDecodeError) and stripped[:1] in ("[", "{")
                       and (exc.pos >= len(stripped) or exc.msg.startswith("Unterminated string")))
            if write:
                raise Ambiguous(f"{said}; the write may have been applied, check before sending it again",
                                record=record, details=details) from None
            if cut_off:
                raise Transient(f"{said}; the answer was cut off", record=record, details=details) from None
            raise ContractViolation(said, record=record, details=details) from None

    def call(self, op: str, body: Mapping[str, Any], *, write: bool, form_id: str | None = None,
             record: str | None = None, bill: str | None = None, per_record: bool = False) -> Any:
        """POST ``DynamicFormService.<op>`` and return the parsed answer of a successful call.

        A failed envelope raises its error; ``MsgCode 1`` is answered by one re-login and one
        resend (the server refused the request before doing anything, so resending a write is
        safe), and a second ``MsgCode 1`` is an :class:`AuthError`. Every write answers with a
        ``ResponseStatus``; a write answer without one is a :class:`ContractViolation`. ``record``
        (ours) and ``bill`` (the bill number) are named in every error.

        ``per_record`` (calls on several records: BatchSave, Submit/Audit of several ids): a failure
        that is about records (the table's ``Rejected`` rows: MsgCode 4, 9-12 on a write) is
        returned, not raised, so the caller can read each ``DIndex``; the others still raise.
        """
        where = f"{self.name} {op}"
        target = " ".join(p for p in (where, form_id, bill) if p)
        self._ensure_session()
        relogged = False
        while True:
            try:
                resp = self._send(FORM_SERVICE + op, body, write=write)
            except ConnectorError as exc:
                if record and not exc.record:
                    exc.record = redact_text(record)  # transport failures name our record too
                raise
            data = self._json(resp, write=write, record=record)
            raw = find_status(data)
            if raw is None:
                if write:
                    raise ContractViolation(
                        f"{target}: the answer has no Result.ResponseStatus ({excerpt(resp.text)!r}); the K3Cloud "
                        "response shape changed. The write may have been applied: look the key up before "
                        "sending it again", record=record)
                return data
            try:
                status = parse_status(raw, target)
            except ContractViolation as exc:
                raise ContractViolation(exc.message, record=record, details=exc.details) from None
            if status.success:
                return data
            if status.msg_code == 1 and not relogged:
                relogged = True
                self._reauthenticate()
                continue
            if status.msg_code == 1:
                raise AuthError(f"{where}: session refused again after re-login: {status.error_text()}",
                                vendor_code="1", record=record)
            error = envelope_error(status, where=where, write=write, form_id=form_id, record=record, bill=bill)
            if per_record and type(error) is Rejected:
                return data
            raise error

    # -- queries ------------------------------------------------------------------------------

    def execute_bill_query(self, form_id: str, field_keys: Sequence[str], *, filter_string: str = "",
                           order_string: str = "", start_row: int = 0, limit: int = 2000) -> list[list[Any]]:
        """One ``ExecuteBillQuery`` page: rows as lists in ``field_keys`` order."""
        if not field_keys:
            raise ValueError("field_keys must not be empty")
        body = {"data": {"FormId": form_id, "FieldKeys": ",".join(field_keys), "FilterString": filter_string,
                         "OrderString": order_string, "TopRowCount": 0, "StartRow": start_row, "Limit": limit}}
        data = self.call("ExecuteBillQuery", body, write=False, form_id=form_id)
        where = f"{self.name} ExecuteBillQuery {form_id}"
        if not isinstance(data, list):
            raise ContractViolation(f"{where}: expected an array of rows, got {type(data).__name__}: "
                                    f"{excerpt(repr(data))!r}; the K3Cloud response shape changed",
                                    record=f"{form_id} StartRow {start_row}")
        width = len(field_keys)
        for i, row in enumerate(data):
            if type(row) is not list or len(row) != width:
                raise ContractViolation(
                    f"{where}: row {start_row + i} is not an array of {width} values in FieldKeys order "
                    f"({','.join(field_keys)}): {excerpt(repr(row))!r}", record=f"{form_id} StartRow {start_row + i}",
                    details={"field_keys": list(field_keys)})
        if len(data) > limit:
            raise ContractViolation(f"{where}: asked for at most {limit} rows from StartRow {start_row}, got "
                                    f"{len(data)} (the server ignored Limit)")
        return data

    def query_pages(self, form_id: str, field_keys: Sequence[str], *, filter_string: str = "",
                    order_string: str = "", page_size: int = 2000, start_row: int = 0) -> Iterator[QueryPage]:
        """Every page from ``start_row`` on. A short page is the last one; a page identical to the
        previous one means the server ignored ``StartRow`` and is refused (it would loop forever)."""
        previous: list[list[Any]] | None = None
        while True:
            rows = self.execute_bill_query(form_id, field_keys, filter_string=filter_string,
                                           order_string=order_string, start_row=start_row, limit=page_size)
            if rows and previous is not None and rows == previous:
                raise ContractViolation(f"{self.name} ExecuteBillQuery {form_id}: the page at StartRow {start_row} "
                                        "repeats the previous page; paging does not advance")
            last = len(rows) < page_size
            yield QueryPage(start_row, rows, None if last else start_row + len(rows))
            if last:
                return
            previous = rows
            start_row += len(rows)

    # -- writes -------------------------------------------------------------------------------

    def save(self, form_id: str, model: Mapping[str, Any], *, need_return_fields: Sequence[str] = ("FBillNo",),
             auto_submit_audit: bool = False, options: Mapping[str, Any] | None = None,
             record: str | None = None) -> SaveResult:
        """``Save`` one new bill (never resent: a lost answer is Ambiguous)."""
        data: dict[str, Any] = {"NeedReturnFields": list(need_return_fields), "IsDeleteEntry": "true"}
        if auto_submit_audit:
            data["IsAutoSubmitAndAudit"] = "true"
        if options:
            data.update(options)
        data["Model"] = dict(model)
        bill = _ci(model, "FBillNo")
        bill = str(bill) if isinstance(bill, (str, int)) and str(bill) else None
        where = " ".join(p for p in (f"{self.name} Save", form_id, bill) if p)
        answer = self.call("Save", {"formid": form_id, "data": data}, write=True, form_id=form_id, record=record,
                           bill=bill)
        result = _ci(answer, "Result") if isinstance(answer, Mapping) else None
        if not isinstance(result, Mapping):
            raise ContractViolation(f"{where}: the answer has no Result object", record=record)
        bill_id, number = _ci(result, "Id"), _ci(result, "Number")
        if bill_id in (None, "", 0):
            raw = find_status(answer) or {}
            entities = _ci(raw, "SuccessEntitys") or []
            if entities and isinstance(entities[0], Mapping):
                bill_id, number = _ci(entities[0], "Id"), number or _ci(entities[0], "Number")
        if bill_id in (None, "", 0):
            raise ContractViolation(f"{where}: success without a bill id; the bill may exist, look the key up "
                                    "before sending it again", record=record)
        return SaveResult(id=str(bill_id), number=str(number or ""), raw=answer)

    def operate(self, op: str, form_id: str, ids: Sequence[str], *, options: Mapping[str, Any] | None = None,
                record: str | None = None, bill: str | None = None) -> VendorStatus:
        """``Submit``/``Audit``/``UnAudit``/``Delete`` by internal ids (``Ids`` wins over ``Numbers``);
        ``bill`` (the bill number) is only named in errors."""
        data: dict[str, Any] = {"Ids": ",".join(str(i) for i in ids)}
        if options:
            data.update(options)
        answer = self.call(op, {"formid": form_id, "data": data}, write=True, form_id=form_id, record=record,
                           bill=bill)
        raw = find_status(answer)
        assert raw is not None  # call() refuses a write answer without one
        return parse_status(raw, f"{self.name} {op}")

    def batch_save(self, form_id: str, models: Sequence[Mapping[str, Any]], *,
                   need_update_fields: Sequence[str] | None = None, record: str | None = None) -> BatchResult:
        """``BatchSave`` of ``models`` (``Model`` array; DIndex = index in it), never resent.

        With ``need_update_fields`` the models modify existing records (each carries its internal
        id) and only those fields are written. Per-model refusals come back in the result; a
        failure of the call as a whole (auth, parameters, a lost answer...) raises."""
        data: dict[str, Any] = {"Model": [dict(m) for m in models]}
        if need_update_fields:
            data["NeedUpDateFields"] = list(need_update_fields)
        answer = self.call("BatchSave", {"formid": form_id, "data": data}, write=True, form_id=form_id,
                           record=record, per_record=True)
        return self._batch_result(answer, f"{self.name} BatchSave {form_id}")

    def operate_many(self, op: str, form_id: str, ids: Sequence[str], *, record: str | None = None) -> BatchResult:
        """``Submit``/``Audit``/``UnAudit``/``CancelAssign`` of several records by internal id
        (DIndex = position in ``ids``); per-record refusals come back in the result."""
        data = {"Ids": ",".join(str(i) for i in ids)}
        answer = self.call(op, {"formid": form_id, "data": data}, write=True, form_id=form_id, record=record,
                           per_record=True)
        return self._batch_result(answer, f"{self.name} {op} {form_id}")

    def execute_operation(self, op_number: str, form_id: str, ids: Sequence[str], *,
                          record: str | None = None) -> BatchResult:
        """``ExcuteOperation`` (the official SDK's spelling, kingdee.md §1) with ``opNumber``
        (``Forbid``, ``Enable``...) on several records by internal id."""
        body = {"formid": form_id, "opNumber": op_number, "data": {"Ids": ",".join(str(i) for i in ids)}}
        answer = self.call("ExcuteOperation", body, write=True, form_id=form_id, record=record, per_record=True)
        return self._batch_result(answer, f"{self.name} ExcuteOperation {op_number} {form_id}")

    @staticmethod
    def _batch_result(answer: Any, where: str) -> BatchResult:
        raw = find_status(answer)
        assert raw is not None  # call() refuses a write answer without one
        status = parse_status(raw, where)
        return BatchResult(success=status.success, msg_code=status.msg_code, successes=status.success_entities,
                           errors=status.errors)

    def close(self) -> None:
        self.http.close()
