"""SAP Business One Service Layer: the wire protocol, nothing else (vendors/sap_b1.md §2).

:class:`ServiceLayerClient` knows sessions, the two OData dialects, paging, ``$batch`` and the
error envelopes. It speaks plain dicts of SAP field names; it knows nothing of canonical models.

Sessions. ``POST /Login`` with ``CompanyDB``/``UserName``/``Password`` answers ``B1SESSION``
(and, behind the balancer, ``ROUTEID``) cookies. We keep both and send them ourselves on every
request as one ``Cookie`` header (the cookie jar is emptied after login: the exact SAP form
``B1SESSION=<id>;HttpOnly;`` is path-scoped differently by different jars, and an explicit
header is what the strict tests pin). The session is idle-timed (``SessionTimeout`` minutes,
sliding), so a session idle for longer than the timeout less a margin is renewed before use.

Re-login. A 401, or any answer whose error code is ``301`` ("Invalid session or session already
timeout."), triggers exactly one transparent re-login and one retry of that request. For writes
(POST of a document, ``$batch``) this happens only when the answer *is* the Service Layer's
session error: the session is checked before anything is executed, so that answer proves the
write was not applied. A bare 401 from something else (a proxy) on a write is an AuthError, never
a resend. A second session error after the re-login is an :class:`AuthError`.

Error translation (both envelopes: v1 ``{"error":{"code":-10,"message":{"lang":..,"value":..}}}``
and v2 ``{"error":{"code":"-10","message":".."}}``):

========================================  ===============================================
answer                                    raised
========================================  ===============================================
429, 500, 502, 503, 504                   shared helper (:func:`connectors.http.status_error`):
                                          RateLimited / Transient, or Ambiguous for a write
401 / code 301 (after the one re-login)   AuthError
3xx                                       ConfigError (we never follow redirects)
404 -2028 on a lookup                     ``None`` (not found)
404 -2028 on a write                      Rejected(-2028): a referenced code does not exist
404 without the envelope                  ConfigError (wrong base URL or entity name)
400 -10 and any other coded 400 on write  Rejected(vendor_code=code), message as SAP wrote it
400 on a read (our query was refused)     ContractViolation (a bug on our side)
"Property 'X' … is invalid" (read/write)  ConfigError: a property this connection names (a
                                          configured UDF such as ``U_HubKey``) is unknown to
                                          the company; every record would fail the same way
412 -2039                                 Transient (see below)
other 4xx                                 Rejected(code) on writes with an envelope,
                                          ContractViolation otherwise
2xx with an error envelope                as its code says (400 rules)
========================================  ===============================================

Where SAP names the place (``Quantity falls into negative inventory  [IGE1.ItemCode][line: 1]``),
the error's ``details`` carry it as ``field`` (``IGE1.ItemCode``) and ``line`` (1-based, as SAP
counts document lines); the message keeps SAP's text unchanged.

412 -2039 ("Another user or another operation modified data"): the Service Layer checks the
precondition *before* executing, so nothing was written. We never hold ETags across calls (we only
create documents), so the only way to meet it is a concurrent change by another user or process;
sending again later re-reads current state and normally succeeds. It is therefore
:class:`Transient`, not Rejected: dead-lettering a movement because of a momentary lock conflict
would need an operator for nothing.
"""
from __future__ import annotations

import json as jsonlib
import logging
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any
from urllib.parse import parse_qsl, quote, urlsplit

from connectors import observe
from connectors.errors import (
    Ambiguous,
    AuthError,
    ConfigError,
    ConnectorError,
    ContractViolation,
    Rejected,
    Transient,
)
from connectors.http import HttpClient, HttpResponse, excerpt, raise_for_generic_status, status_error
from connectors.redaction import register_secret

log = logging.getLogger(__name__)

VERSIONS = ("v1", "v2")
SESSION_CODE = "301"
NOT_FOUND_CODE = "-2028"
CONFLICT_CODE = "-2039"
RENEW_MARGIN = 60.0  # seconds before the idle timeout at which a session is renewed proactively
DEFAULT_SESSION_MINUTES = 30
_SESSION_TEXT = re.compile(r"invalid session|session already timeout", re.IGNORECASE)
# "… [IGE1.ItemCode][line: 1]", "Invalid BP code [OPDN.CardCode] , 'P2'" (vendors/sap_b1.md §2.4)
_WHERE_TEXT = re.compile(r"\[(?P<field>[A-Za-z_][\w]*(?:\.[A-Za-z_][\w]*)?)\](?:\[line:\s*(?P<line>\d+)\])?")
# "Property 'U_HubKey' of 'Document' is invalid" (writes), "Property 'Bogus' is invalid" ($filter) [I]
_PROPERTY_TEXT = re.compile(r"\bProperty '(?P<name>[^']+)'(?: of '[^']*')? is invalid", re.IGNORECASE)
# "CServiceData::SetPropertyValueString failed; Value too long in property 'CardCode' of 'BusinessPartner'"
_VALUE_PROPERTY_TEXT = re.compile(r"\bin property ['`](?P<name>[A-Za-z_]\w*)['`]", re.IGNORECASE)
CRLF = "\r\n"


# ---------------------------------------------------------------------------------------------
# Envelopes


@dataclass(frozen=True)
class SapError:
    """A parsed Service Layer error envelope."""

    code: str
    message: str


def parse_error(payload: Any) -> SapError | None:
    """The error in a v1 or v2 envelope, or None if ``payload`` is not one."""
    if not isinstance(payload, Mapping):
        return None
    error = payload.get("error")
    if not isinstance(error, Mapping) or "code" not in error:
        return None
    code = error.get("code")
    if isinstance(code, bool) or not isinstance(code, (int, str, float)):
        return None
    code_text = str(int(code)) if isinstance(code, float) and code.is_integer() else str(code).strip()
    message = error.get("message")
    if isinstance(message, Mapping):  # v1: {"lang": "en-us", "value": "..."}
        message = message.get("value")
    if not isinstance(message, str):
        message = "" if message is None else str(message)
    details = error.get("details")
    if not message and isinstance(details, list):
        message = "; ".join(str(d.get("message")) for d in details if isinstance(d, Mapping) and d.get("message"))
    return SapError(code_text, message)


def read_json(resp: HttpResponse) -> Any:
    """The body as JSON with numbers kept exact (``Decimal``, not float); anything else is a
    :class:`ContractViolation`."""
    try:
        return jsonlib.loads(resp.text, parse_float=Decimal)
    except ValueError:
        return resp.json()  # raises the helper's ContractViolation with an excerpt


def _error_of(resp: HttpResponse) -> SapError | None:
    if not resp.content:
        return None
    try:
        payload = jsonlib.loads(resp.text)
    except ValueError:
        return None
    return parse_error(payload)


def error_details(error: SapError | None, **base: Any) -> dict[str, Any]:
    """``base`` plus the field and line SAP names in its message, and an unknown property."""
    details = dict(base)
    if error is None:
        return details
    match = _WHERE_TEXT.search(error.message)
    if match:
        details["field"] = match.group("field")
        if match.group("line"):
            details["line"] = int(match.group("line"))
    else:
        value = _VALUE_PROPERTY_TEXT.search(error.message)
        if value:
            details["field"] = value.group("name")
    prop = _PROPERTY_TEXT.search(error.message)
    if prop:
        details["property"] = prop.group("name")
    return details


def unknown_property(error: SapError | None) -> str | None:
    """The property SAP says does not exist (our configuration or code named it), or None."""
    match = _PROPERTY_TEXT.search(error.message) if error is not None else None
    return match.group("name") if match else None


def is_session_error(error: SapError | None) -> bool:
    """The Service Layer's own "no valid session" answer (code 301, in any envelope). It is checked
    before the request is executed, so it proves a write was not applied."""
    return error is not None and (error.code == SESSION_CODE or bool(_SESSION_TEXT.search(error.message)))


def _dumps(payload: Any) -> bytes:
    """Compact UTF-8 JSON; Decimals as JSON numbers (the Service Layer reads doubles anyway)."""
    def default(value: Any) -> Any:
        if isinstance(value, Decimal):
            if not value.is_finite():
                raise ValueError(f"cannot send {value}")
            return int(value) if value == value.to_integral_value() else float(value)
        raise TypeError(f"cannot send a {type(value).__name__} as JSON")
    return jsonlib.dumps(payload, ensure_ascii=False, separators=(",", ":"), allow_nan=False,
                         default=default).encode("utf-8")


# ---------------------------------------------------------------------------------------------
# Results


@dataclass(frozen=True)
class LoginInfo:
    session_id: str
    route_id: str | None
    version: str | None
    timeout_minutes: float


@dataclass(frozen=True)
class ResultPage:
    """One page of a collection: rows and where the next page starts (``None`` on the last)."""

    rows: tuple[dict[str, Any], ...]
    next_skip: int | None
    next_link: str | None
    count: int | None = None


@dataclass(frozen=True)
class BatchOp:
    """One write for ``$batch``: ``POST <entity>`` with ``body``; ``no_content`` asks for a 204
    without the created record (``Prefer: return-no-content``) when the caller knows its key."""

    entity: str
    body: Mapping[str, Any]
    method: str = "POST"
    no_content: bool = False


@dataclass(frozen=True)
class BatchResult:
    """The outcome of one changeset.

    ``status``: ``created`` (``entity`` holds the created record, or None after a 204),
    ``failed`` (``error`` says why; nothing of it was applied), ``not_executed`` (the server
    stopped at an earlier failure: nothing of it was applied, it is safe to send again), or
    ``unknown`` (no answer for it: it may have been applied, check before sending again).
    """

    status: str
    entity: dict[str, Any] | None = None
    error: ConnectorError | None = None
    http_status: int | None = None


@dataclass
class _HttpPart:
    status: int
    reason: str
    headers: dict[str, str]
    body: str


@dataclass
class _Session:
    session_id: str
    route_id: str | None
    timeout: float  # seconds
    last_used: float
    generation: int
    version: str | None = None


# ---------------------------------------------------------------------------------------------
# Client


class ServiceLayerClient:
    """One connection to a Service Layer root (``https://host:50000/b1s/v2``). Thread-safe."""

    def __init__(self, url: str, *, company_db: str, username: str, password: str, version: str = "v2",
                 connect_timeout: float = 5.0, read_timeout: float = 30.0, verify: bool | str = True,
                 name: str = "sap_b1", clock: Callable[[], float] = time.monotonic,
                 boundary: Callable[[str], str] | None = None, login_read_timeout: float | None = None) -> None:
        if version not in VERSIONS:
            raise ConfigError(f"{name}: odata_version must be v1 or v2, not {version!r}")
        self.version = version
        self.root = service_root(url, version, name=name)
        self.root_path = urlsplit(self.root).path.rstrip("/")
        self.name = name
        self._company_db = company_db
        self._username = username
        self._password = password
        register_secret(password)
        self.http = HttpClient(self.root, connect_timeout=connect_timeout, read_timeout=read_timeout, verify=verify,
                               name=name)
        self._clock = clock
        self._boundary = boundary or (lambda kind: f"{kind}_{uuid.uuid4()}")
        self._login_read_timeout = login_read_timeout or read_timeout  # real logins take 3-8 s
        self._lock = threading.Lock()
        self._session: _Session | None = None
        self._generation = 0
        self.logins = 0  # how many logins this client made (tests and the trial report read it)

    # -- session --------------------------------------------------------------------------

    def login(self) -> LoginInfo:
        """Open a new session (replacing any current one)."""
        with self._lock:
            return self._login_locked()

    def _login_locked(self) -> LoginInfo:
        body = {"CompanyDB": self._company_db, "UserName": self._username, "Password": self._password}
        self.http.cookies.clear()
        resp = self.http.request("POST", "Login", idempotent=True, data=_dumps(body),
                                 headers={"Content-Type": "application/json"}, read_timeout=self._login_read_timeout)
        self.logins += 1
        error = _error_of(resp)
        if resp.status in (400, 401, 403) or (error is not None and resp.status < 500):
            code = error.code if error else None
            said = error.message if error else excerpt(resp.text)
            raise AuthError(f"{self.name}: login to company {self._company_db!r} as {self._username!r} refused "
                            f"({resp.status}): {said}", vendor_code=code)
        error_for_status = status_error(resp, idempotent=True)
        if error_for_status is not None:
            raise error_for_status
        raise_for_generic_status(resp)
        if resp.status != 200:
            raise ContractViolation(f"{self.name}: login answered {resp.status}, expected 200")
        payload = resp.json()
        session_id = resp.cookies.get("B1SESSION") if resp.cookies is not None else None
        if not session_id and isinstance(payload, Mapping):
            session_id = payload.get("SessionId")
        if not isinstance(session_id, str) or not session_id:
            raise ContractViolation(f"{self.name}: login succeeded but no B1SESSION cookie or SessionId came back")
        route_id = resp.cookies.get("ROUTEID") if resp.cookies is not None else None
        register_secret(session_id)
        minutes = payload.get("SessionTimeout") if isinstance(payload, Mapping) else None
        if not isinstance(minutes, (int, float)) or isinstance(minutes, bool) or minutes <= 0:
            minutes = DEFAULT_SESSION_MINUTES
        self.http.cookies.clear()
        self._generation += 1
        version = payload.get("Version") if isinstance(payload, Mapping) else None
        self._session = _Session(session_id, route_id, float(minutes) * 60.0, self._clock(), self._generation,
                                 str(version) if version is not None else None)
        log.info("[%s] logged in to %s (server version %s, session timeout %s min)", self.name, self._company_db,
                 version, minutes)
        return LoginInfo(session_id, route_id, self._session.version, float(minutes))

    @property
    def server_version(self) -> str | None:
        return self._session.version if self._session else None

    def _current(self) -> _Session:
        """The session to use now: logs in if there is none or it has idled out."""
        with self._lock:
            s = self._session
            if s is None or self._clock() - s.last_used > max(s.timeout - RENEW_MARGIN, s.timeout / 2):
                self._login_locked()
                s = self._session
            assert s is not None
            return s

    def _relogin_after(self, generation: int) -> None:
        """Re-login, unless another thread already replaced the session that failed."""
        with self._lock:
            if self._session is not None and self._session.generation != generation:
                return
            observe.relogin(self.name, reason="Service Layer session refused")
            self._login_locked()

    def _cookie(self, s: _Session) -> str:
        return f"B1SESSION={s.session_id}" + (f"; ROUTEID={s.route_id}" if s.route_id else "")

    def logout(self) -> None:
        """End the session (``POST /Logout``); errors are logged, not raised."""
        with self._lock:
            s, self._session = self._session, None
        if s is None:
            return
        try:
            self.http.request("POST", "Logout", idempotent=True, headers={"Cookie": self._cookie(s)})
        except ConnectorError as exc:
            log.info("[%s] logout failed: %s", self.name, exc)

    def close(self) -> None:
        if self.http is not None:
            try:
                self.logout()
            finally:
                self.http.close()

    # -- sending ---------------------------------------------------------------------------

    def _send(self, method: str, path: str, *, idempotent: bool, params: Any = None, body: bytes | None = None,
              headers: Mapping[str, str] | None = None) -> tuple[HttpResponse, SapError | None]:
        """Send with the session; one re-login and one retry on a session error. Returns the answer
        (any status other than a session error) and its parsed error envelope."""
        for attempt in (1, 2):
            s = self._current()
            send_headers = {"Cookie": self._cookie(s), **(headers or {})}
            resp = self.http.request(method, path, idempotent=idempotent, params=params, data=body,
                                     headers=send_headers)
            error = _error_of(resp)
            session_error = is_session_error(error)
            if resp.status == 401 or session_error:
                proven = session_error  # the Service Layer's own session answer: nothing was executed
                if attempt == 1 and (idempotent or proven):
                    log.info("[%s] session rejected on %s %s; logging in again", self.name, method, path)
                    self._relogin_after(s.generation)
                    continue
                said = error.message if error else excerpt(resp.text)
                raise AuthError(f"{resp.where}: {resp.status} {said}".rstrip(),
                                vendor_code=error.code if error else None,
                                details={"status": resp.status, "relogin": attempt > 1})
            with self._lock:
                if self._session is s:
                    s.last_used = self._clock()
            return resp, error
        raise AssertionError("unreachable")

    def _raise_for(self, resp: HttpResponse, error: SapError | None, *, write: bool, lookup: bool = False) -> None:
        """Raise the translated error for a failed answer; return quietly for a good one.
        For a lookup, a 404 -2028 returns quietly too (the caller turns it into None)."""
        generic = status_error(resp, idempotent=not write)
        if generic is not None:
            if error is not None:
                generic.vendor_code = error.code
            raise generic
        if 300 <= resp.status < 400:
            raise_for_generic_status(resp)
        if resp.ok and error is None:
            return
        status = resp.status
        details = error_details(error, status=status, path=urlsplit(resp.url).path)
        if error is None:
            if status == 404:
                raise ConfigError(f"{resp.where}: 404 without a Service Layer error; check the base URL and entity "
                                  "name (they are case-sensitive)", details=details)
            if status == 403:
                raise AuthError(f"{resp.where}: 403 {resp.reason}", details=details)
            raise ContractViolation(f"{resp.where}: {status} {resp.reason} without a Service Layer error envelope; "
                                    f"body starts {excerpt(resp.text)!r}", details=details)
        message = f"{resp.where}: {error.message}" if error.message else f"{resp.where}: {status} {resp.reason}"
        if error.code == NOT_FOUND_CODE:
            if lookup and not write:
                return
            if write:
                raise Rejected(message, vendor_code=error.code, details=details)
            raise ContractViolation(message, vendor_code=error.code, details=details)
        if status == 412 or error.code == CONFLICT_CODE:
            raise Transient(message + " (nothing was written; sending again re-reads current data)",
                            vendor_code=error.code, details=details)
        prop = unknown_property(error) if status < 500 else None
        if prop is not None:
            raise ConfigError(f"{message} (the company has no property {prop!r}: check the configured reference, "
                              "marker and spec fields, and that user fields exist)", vendor_code=error.code,
                              details=details)
        if status == 403:
            raise AuthError(message, vendor_code=error.code, details=details)
        if write:
            raise Rejected(message, vendor_code=error.code, details=details)
        raise ContractViolation(message, vendor_code=error.code, details=details)

    # -- reads -----------------------------------------------------------------------------

    def get(self, path: str, *, params: Mapping[str, Any] | None = None) -> dict[str, Any] | None:
        """``GET <root>/<path>``: the entity, or None when the Service Layer says -2028 not found."""
        resp, error = self._send("GET", path, idempotent=True, params=dict(params or {}))
        self._raise_for(resp, error, write=False, lookup=True)
        if error is not None and error.code == NOT_FOUND_CODE:
            return None
        payload = read_json(resp)
        if not isinstance(payload, dict):
            raise ContractViolation(f"{resp.where}: expected a JSON object, got {type(payload).__name__}")
        return payload

    def query_page(self, entity: str, *, filter: str | None = None, select: Sequence[str] | None = None,
                   orderby: str | None = None, skip: int | None = None, top: int | None = None,
                   page_size: int | None = None, next_link: str | None = None) -> ResultPage:
        """One page of ``GET <root>/<entity>`` with our own query options.

        The page size is asked for with ``Prefer: odata.maxpagesize=N`` (the server may answer
        fewer). When following a page, ``skip`` is taken from the server's nextLink and our own
        options are sent again: some builds drop ``$filter``/``$select`` from the link. A link
        without a ``$skip`` is followed as it is (``next_link``).
        """
        headers = {"Prefer": f"odata.maxpagesize={page_size}"} if page_size else {}
        if next_link is not None:
            resp, error = self._send("GET", self._resolve_link(next_link), idempotent=True, headers=headers)
        else:
            params: list[tuple[str, str]] = []
            if filter:
                params.append(("$filter", filter))
            if select:
                params.append(("$select", ",".join(select)))
            if orderby:
                params.append(("$orderby", orderby))
            if skip:
                params.append(("$skip", str(int(skip))))
            if top is not None:
                params.append(("$top", str(int(top))))
            resp, error = self._send("GET", entity, idempotent=True, params=params, headers=headers)
        self._raise_for(resp, error, write=False)
        payload = read_json(resp)
        if not isinstance(payload, Mapping) or not isinstance(payload.get("value"), list):
            raise ContractViolation(f"{resp.where}: expected a collection with a 'value' list")
        rows = tuple(r for r in payload["value"] if isinstance(r, dict))
        if len(rows) != len(payload["value"]):
            raise ContractViolation(f"{resp.where}: a row of the collection is not a JSON object")
        link = payload.get("@odata.nextLink", payload.get("odata.nextLink"))
        if link is not None and not isinstance(link, str):
            raise ContractViolation(f"{resp.where}: nextLink is not a string")
        next_skip = _skip_of(link) if link else None
        count = payload.get("@odata.count", payload.get("odata.count"))
        try:
            count = int(count) if count is not None else None
        except (TypeError, ValueError):
            count = None
        return ResultPage(rows, next_skip, link or None, count)

    def query(self, entity: str, *, filter: str | None = None, select: Sequence[str] | None = None,
              orderby: str | None = None, skip: int | None = None, page_size: int | None = None,
              max_pages: int = 1_000_000) -> Iterator[ResultPage]:
        """Every page of a collection, following nextLinks (``odata.nextLink`` in v1,
        ``@odata.nextLink`` in v2)."""
        link: str | None = None
        for _ in range(max_pages):
            page = self.query_page(entity, filter=filter, select=select, orderby=orderby, skip=skip,
                                   page_size=page_size, next_link=link)
            yield page
            if page.next_link is None:
                return
            if page.next_skip is not None:
                if skip is not None and page.next_skip <= skip:
                    raise ContractViolation(f"{self.name}: nextLink of {entity} does not move forward "
                                            f"($skip {page.next_skip} after {skip})")
                skip, link = page.next_skip, None
            else:
                link = page.next_link
        raise ContractViolation(f"{self.name}: {entity} did not end after {max_pages} pages")

    def _resolve_link(self, link: str) -> str:
        """A nextLink as a URL: absolute (same server only), absolute path, or relative to the root."""
        if re.match(r"^https?://", link, re.IGNORECASE):
            return link
        if link.startswith("/"):
            parts = urlsplit(self.root)
            return f"{parts.scheme}://{parts.netloc}{link}"
        return f"{self.root}/{link}"

    # -- writes ----------------------------------------------------------------------------

    def create(self, entity: str, body: Mapping[str, Any]) -> dict[str, Any]:
        """``POST <root>/<entity>``: the created record (201). Never resent blindly: a lost answer
        is :class:`Ambiguous`."""
        resp, error = self._send("POST", entity, idempotent=False, body=_dumps(body),
                                 headers={"Content-Type": "application/json"})
        self._raise_for(resp, error, write=True)
        if resp.status == 204 or not resp.content:
            return {}
        payload = read_json(resp)
        if not isinstance(payload, dict):
            raise ContractViolation(f"{resp.where}: expected the created record")
        return payload

    def get_entity(self, entity: str, key: str) -> dict[str, Any] | None:
        """``GET <root>/<entity>('<key>')``, the whole record (v2: with its real ``@odata.etag``, which
        a ``$select`` read does not carry), or None when it does not exist."""
        return self.get(entity_path(entity, key))

    def update(self, entity: str, key: str, body: Mapping[str, Any], *, etag: str | None = None) -> None:
        """``PATCH <root>/<entity>('<key>')`` (204), with ``If-Match: etag`` when given (v2).

        A PATCH sets the same values however often it is sent, so a lost answer is retried like a
        read; a 412 -2039 (someone changed the record since ``etag`` was read) is :class:`Transient`
        with ``vendor_code`` -2039, for the caller to re-read and decide."""
        headers = {"Content-Type": "application/json"}
        if etag:
            headers["If-Match"] = etag
        resp, error = self._send("PATCH", entity_path(entity, key), idempotent=True, body=_dumps(body),
                                 headers=headers)
        self._raise_for(resp, error, write=True)
        if resp.status not in (200, 204):
            raise ContractViolation(f"{resp.where}: PATCH answered {resp.status} {resp.reason}, expected 204")

    # -- $batch ----------------------------------------------------------------------------

    def build_batch(self, ops: Sequence[BatchOp]) -> tuple[str, bytes]:
        """The ``Content-Type`` and CRLF body of a ``$batch`` with one changeset per op.

        Each changeset is its own transaction, so one failing document does not roll back the
        others. Content-IDs are unique across the batch (v2 requires one per changeset request;
        duplicates give -1116).
        """
        batch = self._boundary("batch")
        lines: list[str] = []
        for index, op in enumerate(ops, start=1):
            changeset = self._boundary("changeset")
            lines += [f"--{batch}", f"Content-Type: multipart/mixed;boundary={changeset}", "",
                      f"--{changeset}", "Content-Type: application/http", "Content-Transfer-Encoding: binary",
                      f"Content-ID: {index}", "",
                      f"{op.method} {self.root_path}/{op.entity} HTTP/1.1",
                      "Content-Type: application/json",
                      *(["Prefer: return-no-content"] if op.no_content else []), "",
                      _dumps(op.body).decode("utf-8"),
                      f"--{changeset}--"]
        lines.append(f"--{batch}--")
        return f"multipart/mixed;boundary={batch}", (CRLF.join(lines) + CRLF).encode("utf-8")

    def batch(self, ops: Sequence[BatchOp]) -> list[BatchResult]:
        """Send ``ops`` as one ``$batch`` (one changeset each); one result per op, in order.

        The Service Layer stops at the first failing changeset and answers one error part for it;
        changesets after it are absent from the answer and were not executed. If the whole answer
        is lost, the outcome of every op is unknown: :class:`Ambiguous` is raised.
        """
        if not ops:
            return []
        content_type, body = self.build_batch(ops)
        resp, error = self._send("POST", "$batch", idempotent=False, body=body,
                                 headers={"Content-Type": content_type})
        if resp.status not in (200, 202) or error is not None:
            self._raise_for(resp, error, write=True)
            raise ContractViolation(f"{resp.where}: $batch answered {resp.status} {resp.reason}")
        boundary = _boundary_of(resp.headers.get("Content-Type", ""))
        if boundary is None:
            raise Ambiguous(f"{resp.where}: $batch answer is not multipart (content-type "
                            f"{resp.headers.get('Content-Type')!r}); its documents may have been created")
        try:
            top = _split_multipart(resp.text, boundary)
        except ValueError as exc:
            raise Ambiguous(f"{resp.where}: cannot read the $batch answer ({exc}); its documents may have been "
                            "created") from None
        return self._batch_results(ops, top, resp)

    def _batch_results(self, ops: Sequence[BatchOp], parts: list[tuple[dict[str, str], str]],
                       resp: HttpResponse) -> list[BatchResult]:
        results: list[BatchResult] = []
        stopped = False
        for index, op in enumerate(ops):
            if index >= len(parts):
                results.append(BatchResult("not_executed") if stopped else BatchResult(
                    "unknown", error=Ambiguous(f"{resp.where}: no answer for changeset {index + 1} "
                                               f"({op.entity}); it may have been created")))
                continue
            headers, body = parts[index]
            try:
                http_parts = self._http_parts(headers, body)
            except ValueError as exc:
                results.append(BatchResult("unknown", error=Ambiguous(
                    f"{resp.where}: changeset {index + 1} ({op.entity}) answered unreadably ({exc}); it may have "
                    "been created")))
                continue
            failed = next((p for p in http_parts if p.status >= 400), None)
            if failed is not None:
                stopped = True
                results.append(BatchResult("failed", error=self._part_error(failed, op, resp), http_status=failed.status))
                continue
            created = http_parts[0] if http_parts else None
            if created is None:
                results.append(BatchResult("unknown", error=Ambiguous(
                    f"{resp.where}: changeset {index + 1} ({op.entity}) answered no request; it may have been "
                    "created")))
                continue
            entity: dict[str, Any] | None = None
            if created.body.strip():
                try:
                    payload = jsonlib.loads(created.body, parse_float=Decimal)
                except ValueError:
                    payload = None
                if not isinstance(payload, dict):
                    results.append(BatchResult("unknown", http_status=created.status, error=ContractViolation(
                        f"{resp.where}: changeset {index + 1} ({op.entity}) answered {created.status} with a body "
                        "that is not the created record")))
                    continue
                entity = payload
            results.append(BatchResult("created", entity=entity, http_status=created.status))
        if len(parts) > len(ops):
            log.warning("[%s] $batch answered %d parts for %d changesets", self.name, len(parts), len(ops))
        return results

    def _http_parts(self, headers: Mapping[str, str], body: str) -> list[_HttpPart]:
        content_type = headers.get("content-type", "")
        if content_type.lower().startswith("multipart/mixed"):
            inner = _boundary_of(content_type)
            if inner is None:
                raise ValueError("changeset without a boundary")
            return [_parse_http(b) for _, b in _split_multipart(body, inner)]
        return [_parse_http(body)]

    def _part_error(self, part: _HttpPart, op: BatchOp, resp: HttpResponse) -> ConnectorError:
        try:
            error = parse_error(jsonlib.loads(part.body)) if part.body.strip() else None
        except ValueError:
            error = None
        where = f"{resp.where} ({op.method} {op.entity})"
        details = error_details(error, status=part.status, path=f"{self.root_path}/{op.entity}")
        code = error.code if error else None
        message = f"{where}: {error.message}" if error and error.message else f"{where}: {part.status} {part.reason}"
        if part.status in (429, 503):
            return Transient(message, vendor_code=code, details=details)
        if part.status >= 500:
            return Ambiguous(message + "; it may have been applied", vendor_code=code, details=details)
        if part.status == 412 or code == CONFLICT_CODE:
            return Transient(message + " (nothing was written)", vendor_code=code, details=details)
        if part.status == 401 or code == SESSION_CODE:
            return AuthError(message, vendor_code=code, details=details)
        prop = unknown_property(error)
        if prop is not None:
            return ConfigError(f"{message} (the company has no property {prop!r})", vendor_code=code, details=details)
        if error is None:
            return ContractViolation(message + " without a Service Layer error envelope", details=details)
        return Rejected(message, vendor_code=code, details=details)


# ---------------------------------------------------------------------------------------------
# Helpers


def service_root(url: str, version: str, *, name: str = "sap_b1") -> str:
    """``https://host:50000`` → ``https://host:50000/b1s/v2``; a URL already naming ``/b1s/vN`` is
    used as is and must agree with ``version``."""
    url = url.rstrip("/")
    match = re.search(r"/b1s/(v\d+)$", url)
    if match:
        if match.group(1) != version:
            raise ConfigError(f"{name}: url ends in /b1s/{match.group(1)} but odata_version is {version}")
        return url
    if "/b1s" in urlsplit(url).path:
        raise ConfigError(f"{name}: url {url!r} names /b1s but not /b1s/v1 or /b1s/v2")
    return f"{url}/b1s/{version}"


def entity_path(entity: str, key: str | int) -> str:
    """``Items('O''Brien 50%')`` as a URL path: the key an OData string literal (quotes doubled),
    then percent-encoded so ``%``, ``/``, ``#``, ``?`` and spaces stay part of the key."""
    if not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", entity):
        raise ValueError(f"{entity!r} is not an entity set name")
    if isinstance(key, int) and not isinstance(key, bool):
        return f"{entity}({key})"  # a numeric key (a bin's AbsEntry, a DocEntry) is a bare literal
    if not isinstance(key, str) or not key:
        raise ValueError(f"{entity} key must be a non-empty string or an integer, not {key!r}")
    literal = "'" + key.replace("'", "''") + "'"
    return entity + "(" + quote(literal, safe="'") + ")"


def _skip_of(link: str) -> int | None:
    query = urlsplit(link).query
    for key, value in parse_qsl(query, keep_blank_values=True):
        if key in ("$skip", "%24skip"):
            try:
                return int(value)
            except ValueError:
                return None
    return None


def _boundary_of(content_type: str) -> str | None:
    match = re.search(r'boundary="?([^";]+)"?', content_type, re.IGNORECASE)
    return match.group(1).strip() if match else None


def _split_multipart(text: str, boundary: str) -> list[tuple[dict[str, str], str]]:
    """The parts of a multipart body as (lower-cased headers, body). Tolerates LF line ends."""
    delimiter = f"--{boundary}"
    if delimiter not in text:
        raise ValueError(f"boundary {boundary!r} not found")
    chunks = text.split(delimiter)
    parts: list[tuple[dict[str, str], str]] = []
    closed = False
    for chunk in chunks[1:]:
        if chunk.startswith("--"):
            closed = True
            break
        chunk = chunk[2:] if chunk.startswith("\r\n") else chunk[1:] if chunk.startswith("\n") else chunk
        if chunk.endswith("\r\n"):
            chunk = chunk[:-2]
        elif chunk.endswith("\n"):
            chunk = chunk[:-1]
        headers, body = _split_head(chunk)
        parts.append((_header_dict(headers), body))
    if not closed:
        raise ValueError("the multipart body is not closed")
    return parts


def _split_head(text: str) -> tuple[list[str], str]:
    match = re.search(r"\r?\n\r?\n", text)
    if match is None:
        return [line for line in re.split(r"\r?\n", text) if line], ""
    head = text[: match.start()]
    return [line for line in re.split(r"\r?\n", head) if line], text[match.end():]


def _header_dict(lines: Sequence[str]) -> dict[str, str]:
    headers: dict[str, str] = {}
    for line in lines:
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    return headers


_STATUS_LINE = re.compile(r"^HTTP/\d(?:\.\d)?\s+(\d{3})\s*(.*)$")


def _parse_http(text: str) -> _HttpPart:
    """An embedded HTTP response (``application/http`` part)."""
    lines, body = _split_head(text.lstrip("\r\n"))
    if not lines:
        raise ValueError("empty embedded response")
    match = _STATUS_LINE.match(lines[0].strip())
    if match is None:
        raise ValueError(f"not an HTTP status line: {lines[0][:60]!r}")
    return _HttpPart(int(match.group(1)), match.group(2).strip(), _header_dict(lines[1:]), body.strip())
