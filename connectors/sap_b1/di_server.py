"""SAP Business One through the DI Server over SOAP (vendors/sap_b1.md, "SOAP transport"), with zeep.

:class:`DiServerClient` offers the client methods :class:`connectors.sap_b1.connector.SapB1Connector`
uses (``query_page``, ``query``, ``create``, ``batch``, ``server_version``, ``close``) on top of the
DI commands ``Login``, ``Logout``, ``AddObject``, ``UpdateObject``, ``GetByKey`` and ``ExecuteSQL``, so the mapping
works unchanged on plain dicts of SAP field names. Select it with ``transport = "di_server"``.

WSDL and XML safety (RELIABILITY.md §4.5). DI Server has no WSDL of its own: by default we load the
vendored copy next to this module (``di_server.wsdl``, the description our simulator serves) and
point the service at ``<url>/DIServer`` (or at ``url`` itself when it already names the endpoint);
``wsdl=`` takes another local path or an http(s) URL (tests load it from the simulator). zeep runs
with ``Settings(strict=True, forbid_dtd=True, forbid_entities=True, forbid_external=True,
xml_huge_tree=False)``. Every HTTP call goes through :class:`connectors.http.HttpClient` (timeouts,
TLS verification, secrets masked, failures classified).

Reads. ``query_page(entity, filter=…)`` turns our OData ``$filter`` (as built by
:mod:`connectors.sap_b1.odata`) into SQL ``WHERE`` with the same operators, re-quoting every string as
``N'…'`` with quotes doubled, and pages with ``ORDER BY … OFFSET n ROWS FETCH NEXT m+1 ROWS ONLY``
(one extra row tells whether another page exists). Scalar columns come straight from the SQL
recordset; whole documents (lines, batches, bin allocations) and an item's warehouse rows come from
``GetByKey`` per key. Values arrive as text: whole-number fields (``DocEntry``, ``LineNum``,
``BinAbsEntry``…) are turned into ``int``; dates stay ``YYYYMMDD`` text, quantities decimal text
(the mapping reads both).

Writes. ``create`` sends one ``AddObject`` with the body as BOM XML (``Documents``/``Document_Lines``
for marketing and inventory documents, ``OWTR``/``WTR1`` for stock transfers; line sub-collections as
their own nodes with ``BaseLineNumber``), then reads ``DocNum`` back with one SQL query. ``batch``
has no DI equivalent: it sends one ``AddObject`` per operation, in order. ``update`` (master data)
sends ``UpdateObject`` with the changed fields and the key in ``QueryParams``; there are no ETags.

Errors:

=================================================  ===========================================
answer                                             raised
=================================================  ===========================================
Fault code 301 / "Invalid session…"                one re-login and one retry (the session is
                                                   checked before anything runs), then AuthError
Fault on Login                                     AuthError(vendor_code)
Fault on AddObject/UpdateObject (``env:Client``)   Rejected(vendor_code, message as SAP wrote it);
                                                   -1116 (commit failed) is Transient
Fault ``env:Server`` on a write / on a read        Ambiguous / Transient
Fault -2028 on GetByKey                            ``None`` (not found)
Fault on ExecuteSQL or another read                ContractViolation (our query was refused)
refused, timeout, reset, 429, 5xx without a Fault  as :mod:`connectors.http` classifies them: a
                                                   lost answer to AddObject is Ambiguous
malformed XML, DTD/entities, unexpected shape      ContractViolation
=================================================  ===========================================

The password and the session id are registered as secrets: they never appear in logs or errors.
"""
from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any

import zeep
import zeep.exceptions
from lxml import etree
from zeep.wsdl.utils import etree_to_string

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
from connectors.http import HttpClient, excerpt, raise_for_generic_status
from connectors.redaction import register_secret
from connectors.sap_b1.client import BatchOp, BatchResult, ResultPage

log = logging.getLogger(__name__)

__all__ = ["DiServerClient", "VENDORED_WSDL", "odata_filter_to_sql", "sql_string", "build_bom", "parse_bom"]

VENDORED_WSDL = Path(__file__).with_name("di_server.wsdl")
DIS_NS = "http://www.sap.com/SBO/DIS"
BINDING = f"{{{DIS_NS}}}DIServerBinding"
SESSION_CODE = "301"
NOT_FOUND_CODE = "-2028"
COMMIT_FAILED_CODE = "-1116"
WRITE_COMMANDS = frozenset({"AddObject", "UpdateObject"})
SESSION_IDLE_RENEW = 20 * 60.0  # seconds idle after which we log in again before use (DI default timeout 30 min)
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,99}$")
_SESSION_IN_REPLY = re.compile(rb"<(?:\w+:)?SessionID>([^<]{1,200})</(?:\w+:)?SessionID>")


@dataclass(frozen=True)
class _Object:
    di: str                   # AdmInfo/Object
    table: str                # SQL header table
    key: str
    header_node: str          # BOM node we write
    lines_node: str | None = None
    line_table: str | None = None
    lines: str | None = None  # SL property of the lines


def _doc(di: str, table: str, line_table: str) -> _Object:
    return _Object(di, table, "DocEntry", "Documents", "Document_Lines", line_table, "DocumentLines")


OBJECTS: dict[str, _Object] = {
    "InventoryGenEntries": _doc("oInventoryGenEntry", "OIGN", "IGN1"),
    "InventoryGenExits": _doc("oInventoryGenExit", "OIGE", "IGE1"),
    "PurchaseDeliveryNotes": _doc("oPurchaseDeliveryNotes", "OPDN", "PDN1"),
    "DeliveryNotes": _doc("oDeliveryNotes", "ODLN", "DLN1"),
    "Returns": _doc("oReturns", "ORDN", "RDN1"),
    "PurchaseReturns": _doc("oPurchaseReturns", "ORPD", "RPD1"),
    "StockTransfers": _Object("oStockTransfer", "OWTR", "DocEntry", "OWTR", "WTR1", "WTR1", "StockTransferLines"),
    "Items": _Object("oItems", "OITM", "ItemCode", "OITM"),
    "Warehouses": _Object("oWarehouses", "OWHS", "WarehouseCode", "OWHS"),
    "BusinessPartners": _Object("oBusinessPartners", "OCRD", "CardCode", "OCRD"),
    "BinLocations": _Object("oBinLocations", "OBIN", "AbsEntry", "OBIN"),
}
# BOM node names a reply may use, per role (the vendor doc's object names and the DI table names)
_LINE_NODES = {"Document_Lines", "StockTransfer_Lines", "DocumentLines", "StockTransferLines",
               *(o.line_table for o in OBJECTS.values() if o.line_table)}
_LINE_SUBS = ("BatchNumbers", "SerialNumbers", "DocumentLinesBinAllocations", "StockTransferLinesBinAllocations")
_COLLECTION_NODES = {"OITW": "ItemWarehouseInfoCollection", "Items_WarehouseInfo": "ItemWarehouseInfoCollection"}
_COLLECTION_PROPS = frozenset({"ItemWarehouseInfoCollection", "DocumentLines", "StockTransferLines"})
_INT_FIELDS = frozenset({
    "DocEntry", "DocNum", "LineNum", "Series", "BaseType", "BaseEntry", "BaseLine", "BinAbsEntry", "AbsEntry",
    "BaseLineNumber", "SerialAndBatchNumbersBaseLine", "ItemsGroupCode", "GroupCode", "UoMEntry", "DocumentEntry",
    "DocumentNumber", "LineNumber", "PriceList", "DefaultBin", "SalesPersonCode",
})


# --- values, BOM XML ---------------------------------------------------------------------------


def _text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return "tYES" if value else "tNO"
    if isinstance(value, Decimal):
        if not value.is_finite():
            raise ValueError(f"not a finite number: {value}")
        return format(value, "f")
    if isinstance(value, float):
        return format(Decimal(repr(value)), "f")
    if isinstance(value, date):
        return value.isoformat()
    return str(value)


def _field(name: str) -> str:
    if not isinstance(name, str) or not _NAME.match(name):
        raise ValueError(f"{name!r} is not a DI field name")
    return name


def _row(parent: etree._Element, values: Mapping[str, Any]) -> None:
    row = etree.SubElement(parent, "row")
    for name, value in values.items():
        if isinstance(value, (list, dict)):
            continue
        text = _text(value)
        if text is not None:
            etree.SubElement(row, _field(name)).text = text


def build_bom(entity: str, body: Mapping[str, Any]) -> etree._Element:
    """An SL-shaped body → ``<BOM><BO><AdmInfo><Object>…`` for AddObject/UpdateObject."""
    obj = _object(entity)
    bom = etree.Element("BOM")
    bo = etree.SubElement(bom, "BO")
    etree.SubElement(etree.SubElement(bo, "AdmInfo"), "Object").text = obj.di
    _row(etree.SubElement(bo, obj.header_node), body)
    if obj.lines and obj.lines_node:
        lines = body.get(obj.lines) or []
        node = etree.SubElement(bo, obj.lines_node)
        subs: dict[str, list[dict[str, Any]]] = {}
        for index, line in enumerate(lines):
            if not isinstance(line, Mapping):
                raise ValueError(f"{obj.lines}[{index}] is not a mapping")
            _row(node, line)
            for sub in _LINE_SUBS:
                for item in line.get(sub) or ():
                    subs.setdefault(sub, []).append({**item, "BaseLineNumber": index})
        for sub in _LINE_SUBS:
            if sub in subs:
                sub_node = etree.SubElement(bo, sub)
                for item in subs[sub]:
                    _row(sub_node, item)
    return bom


def _value(name: str, text: str | None) -> Any:
    if text is None:
        return None
    if name in _INT_FIELDS:
        try:
            return int(text)
        except ValueError:
            raise ContractViolation(f"DI Server sent {name}={excerpt(text)!r}, not a whole number") from None
    return text


def _rows(node: etree._Element) -> list[dict[str, Any]]:
    rows = []
    for row in node:
        if not isinstance(row.tag, str):
            continue
        if etree.QName(row).localname != "row":
            raise ContractViolation(f"DI Server sent <{etree.QName(row).localname}> where rows were expected")
        rows.append({etree.QName(c).localname: _value(etree.QName(c).localname, c.text)
                     for c in row if isinstance(c.tag, str)})
    return rows


def parse_bom(bom: Any) -> tuple[str | None, dict[str, Any]]:
    """``<BOM>`` from GetByKey → (object name, SL-shaped record with lines and collections)."""
    if not isinstance(bom, etree._Element) or etree.QName(bom).localname != "BOM":
        raise ContractViolation("DI Server answered GetByKey without a BOM")
    bo = next((c for c in bom if isinstance(c.tag, str) and etree.QName(c).localname == "BO"), None)
    if bo is None:
        raise ContractViolation("DI Server answered a BOM without a BO")
    object_name = None
    record: dict[str, Any] = {}
    lines: list[dict[str, Any]] | None = None
    subs: dict[str, list[dict[str, Any]]] = {}
    header_seen = False
    for node in bo:
        if not isinstance(node.tag, str):
            continue
        name = etree.QName(node).localname
        if name == "AdmInfo":
            object_name = next((c.text for c in node if isinstance(c.tag, str)
                                and etree.QName(c).localname == "Object"), None)
        elif name in _LINE_NODES:
            lines = _rows(node)
        elif name in _LINE_SUBS:
            subs[name] = _rows(node)
        elif name in _COLLECTION_NODES:
            record[_COLLECTION_NODES[name]] = _rows(node)
        elif not header_seen:
            rows = _rows(node)
            if len(rows) != 1:
                raise ContractViolation(f"DI Server sent {len(rows)} header rows in <{name}>")
            record.update(rows[0])
            header_seen = True
        else:
            record[name] = _rows(node)
    if not header_seen:
        raise ContractViolation("DI Server sent a BO without a header row")
    if lines is not None:
        for sub, rows in subs.items():
            for row in rows:
                base = row.get("BaseLineNumber")
                if isinstance(base, int) and 0 <= base < len(lines):
                    lines[base].setdefault(sub, []).append(row)
        prop = "StockTransferLines" if object_name == "oStockTransfer" else "DocumentLines"
        record[prop] = lines
    return object_name, record


def _object(entity: str) -> _Object:
    try:
        return OBJECTS[entity]
    except KeyError:
        raise ConfigError(f"the DI Server transport does not know entity set {entity!r}") from None


# --- OData $filter -> SQL ---------------------------------------------------------------------

_TOKEN = re.compile(r"\s*(?:(?P<string>'(?:[^']|'')*')|(?P<number>-?\d+(?:\.\d+)?)(?![A-Za-z_])|"
                    r"(?P<word>[A-Za-z_][A-Za-z0-9_]*)|(?P<paren>[()]))")
_OPS = {"eq": "=", "ne": "<>", "gt": ">", "ge": ">=", "lt": "<", "le": "<="}


def sql_string(value: str) -> str:
    """A SQL string literal: ``O'Brien`` → ``N'O''Brien'`` (nothing else is special inside)."""
    if not isinstance(value, str):
        raise TypeError(f"expected a string, not {type(value).__name__}")
    if "\x00" in value:
        raise ValueError("a NUL character cannot be sent in a query")
    return "N'" + value.replace("'", "''") + "'"


def odata_filter_to_sql(text: str) -> str:
    """Our ``$filter`` subset (``field op literal``, ``and``, ``or``, ``not``, parentheses) as SQL.
    Anything else is a ValueError: the connector only builds filters of this subset."""
    tokens: list[tuple[str, str]] = []
    pos = 0
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        if match is None or match.end() == pos:
            if text[pos:].strip() == "":
                break
            raise ValueError(f"cannot translate $filter near {text[pos:pos + 12]!r}")
        kind = match.lastgroup or ""
        tokens.append((kind, match.group(kind)))
        pos = match.end()
    tokens.append(("end", ""))
    index = 0

    def peek() -> tuple[str, str]:
        return tokens[index]

    def take() -> tuple[str, str]:
        nonlocal index
        index += 1
        return tokens[index - 1]

    def expr() -> str:
        parts = [term()]
        while peek() == ("word", "or"):
            take()
            parts.append(term())
        return parts[0] if len(parts) == 1 else "(" + " OR ".join(parts) + ")"

    def term() -> str:
        parts = [factor()]
        while peek() == ("word", "and"):
            take()
            parts.append(factor())
        return parts[0] if len(parts) == 1 else "(" + " AND ".join(parts) + ")"

    def factor() -> str:
        kind, value = take()
        if (kind, value) == ("word", "not"):
            return f"NOT {factor()}"
        if kind == "paren" and value == "(":
            inner = expr()
            if take() != ("paren", ")"):
                raise ValueError("unbalanced parentheses in $filter")
            return inner
        if kind != "word" or value in _OPS or value in ("and", "or", "not"):
            raise ValueError(f"expected a field name in $filter, got {value!r}")
        field = _field(value)
        op_kind, op = take()
        if op_kind != "word" or op not in _OPS:
            raise ValueError(f"unsupported operator {op!r} in $filter")
        lit_kind, lit = take()
        if lit_kind == "string":
            literal = sql_string(lit[1:-1].replace("''", "'"))
        elif lit_kind == "number":
            literal = lit
        else:
            raise ValueError(f"unsupported literal {lit!r} in $filter")
        return f"{field} {_OPS[op]} {literal}"

    result = expr()
    if peek()[0] != "end":
        raise ValueError(f"unexpected {peek()[1]!r} in $filter")
    return result


def _order_sql(orderby: str | None, key: str) -> str:
    if not orderby:
        return f"{key} ASC"
    parts = []
    for item in orderby.split(","):
        words = item.split()
        if not words or len(words) > 2 or (len(words) == 2 and words[1].lower() not in ("asc", "desc")):
            raise ValueError(f"cannot translate $orderby {orderby!r}")
        parts.append(f"{_field(words[0])} {(words[1] if len(words) == 2 else 'asc').upper()}")
    return ", ".join(parts)


# --- transport --------------------------------------------------------------------------------


class _Reply:
    """What zeep reads from an answer: status_code, headers, content, encoding."""

    def __init__(self, status: int, headers: Mapping[str, str], content: bytes) -> None:
        self.status_code = status
        self.headers = headers
        self.content = content
        self.encoding = "utf-8"


class _SoapHttpClient(HttpClient):
    """:class:`HttpClient` that also hands back SOAP 1.1 Faults, which arrive as HTTP 500.

    The base classifies every 500 as Transient/Ambiguous; a 500 whose body is a SOAP Fault is a
    definitive answer, so a response hook keeps its body and :meth:`post_soap` returns it."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._faults = threading.local()
        self._session.hooks["response"].append(self._keep_fault)

    def _keep_fault(self, response: Any, *args: Any, **kwargs: Any) -> Any:
        if "xml" not in response.headers.get("Content-Type", ""):
            return response
        content = response.content
        if response.status_code == 200 and b"LoginResponse" in content[:4096]:
            # mask the new session id before the base client logs the answer body
            match = _SESSION_IN_REPLY.search(content)
            if match:
                register_secret(match.group(1).decode("utf-8", "replace").strip())
        if response.status_code == 500 and b"Fault" in content[:4096]:
            self._faults.last = (response.status_code, dict(response.headers), content)
        return response

    def post_soap(self, url: str, data: bytes, headers: Mapping[str, str], *, idempotent: bool) -> _Reply:
        self._faults.last = None
        try:
            resp = self.request("POST", url, idempotent=idempotent, data=data, headers=dict(headers))
        except ConnectorError:
            stashed, self._faults.last = getattr(self._faults, "last", None), None
            if stashed is not None:
                return _Reply(*stashed)
            raise
        self._faults.last = None
        if resp.status == 200:
            return _Reply(resp.status, resp.headers, resp.content)
        raise_for_generic_status(resp)
        raise ContractViolation(f"{resp.where}: {resp.status} {resp.reason} without a SOAP answer; body starts "
                                f"{excerpt(resp.text)!r}", details={"status": resp.status})


class _Transport(zeep.Transport):
    """zeep's transport, sending through our :class:`HttpClient` (timeouts, TLS, secrets, errors)."""

    def __init__(self, http: _SoapHttpClient) -> None:
        super().__init__()
        self.http = http

    def load(self, url: str) -> bytes:
        if re.match(r"^https?://", url, re.IGNORECASE):
            resp = self.http.request("GET", url, idempotent=True)
            raise_for_generic_status(resp)
            if resp.status != 200:
                raise ConfigError(f"{resp.where}: the WSDL could not be loaded ({resp.status} {resp.reason})")
            return resp.content
        if url.startswith("file://"):
            url = url[len("file://"):]
        return Path(url).expanduser().read_bytes()

    def post_xml(self, address: str, envelope: Any, headers: Mapping[str, str]) -> _Reply:
        body = envelope.find("{http://schemas.xmlsoap.org/soap/envelope/}Body")
        command = etree.QName(body[0]).localname if body is not None and len(body) else ""
        return self.http.post_soap(address, etree_to_string(envelope), headers,
                                   idempotent=command not in WRITE_COMMANDS)


def _fault_code(fault: zeep.exceptions.Fault) -> str | None:
    detail = fault.detail
    if detail is not None:
        code = detail.find(f".//{{{DIS_NS}}}Error/Code")
        if code is not None and code.text:
            return code.text.strip()
    for sub in getattr(fault, "subcodes", None) or ():
        text = getattr(sub, "text", None) or (sub.localname if hasattr(sub, "localname") else None)
        if text:
            return str(text)
    return None


@dataclass
class _Session:
    token: str
    last_used: float
    generation: int


class DiServerClient:
    """One connection to a DI Server SOAP endpoint. Thread-safe (one session, re-login serialised)."""

    def __init__(self, url: str, *, company_db: str, username: str, password: str, connect_timeout: float = 5.0,
                 read_timeout: float = 30.0, verify: bool | str = True, name: str = "sap_b1",
                 wsdl: str | Path | None = None, database_server: str = "", database_type: str = "dst_MSSQL2016",
                 language: str = "ln_English", license_server: str = "",
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.name = name
        self.address = endpoint_address(url)
        self._company_db = company_db
        self._username = username
        self._password = password
        register_secret(password)
        self._login_fields = {"DatabaseServer": database_server or None, "DatabaseType": database_type or None,
                              "Language": language or None, "LicenseServer": license_server or None}
        self.http = _SoapHttpClient(self.address, connect_timeout=connect_timeout, read_timeout=read_timeout,
                               verify=verify, name=name)
        self._clock = clock
        self._lock = threading.Lock()
        self._session: _Session | None = None
        self._generation = 0
        self.logins = 0
        source = str(wsdl) if wsdl is not None else str(VENDORED_WSDL)
        settings = zeep.Settings(strict=True, forbid_dtd=True, forbid_entities=True, forbid_external=True,
                                 xml_huge_tree=False)
        try:
            self._zeep = zeep.Client(source, settings=settings, transport=_Transport(self.http))
            self.service = self._zeep.create_service(BINDING, self.address)
        except ConnectorError:
            self.http.close()
            raise
        except Exception as exc:  # noqa: BLE001 - any WSDL problem is a configuration problem
            self.http.close()
            raise ConfigError(f"{name}: cannot use the DI Server WSDL {source!r}: {type(exc).__name__}: "
                              f"{excerpt(str(exc))}") from None

    # -- session ---------------------------------------------------------------------------

    @property
    def server_version(self) -> str | None:
        return "DI Server (SOAP)"

    def login(self) -> str:
        with self._lock:
            return self._login_locked()

    def _login_locked(self) -> str:
        fields = {k: v for k, v in self._login_fields.items() if v is not None}
        self.logins += 1
        try:
            token = self.service.Login(DatabaseName=self._company_db, CompanyUsername=self._username,
                                       CompanyPassword=self._password, **fields)
        except zeep.exceptions.Fault as fault:
            code = _fault_code(fault)
            raise AuthError(f"{self.name}: DI Server login to company {self._company_db!r} as {self._username!r} "
                            f"refused: {fault.message}", vendor_code=code) from None
        except ConnectorError:
            raise
        except Exception as exc:  # noqa: BLE001 - zeep/lxml parse and shape errors
            raise self._contract(exc, "Login") from None
        if not isinstance(token, str) or not token.strip():
            raise ContractViolation(f"{self.name}: DI Server login answered without a SessionID")
        register_secret(token)
        self._generation += 1
        self._session = _Session(token, self._clock(), self._generation)
        log.info("[%s] logged in to %s over the DI Server", self.name, self._company_db)
        return token

    def _current(self) -> _Session:
        with self._lock:
            s = self._session
            if s is None or self._clock() - s.last_used > SESSION_IDLE_RENEW:
                self._login_locked()
                s = self._session
            assert s is not None
            return s

    def _relogin_after(self, generation: int) -> None:
        with self._lock:
            if self._session is not None and self._session.generation != generation:
                return
            observe.relogin(self.name, reason="DI Server session refused")
            self._login_locked()

    def logout(self) -> None:
        with self._lock:
            s, self._session = self._session, None
        if s is None:
            return
        try:
            self.service.Logout(_soapheaders={"SessionID": s.token})
        except (ConnectorError, zeep.exceptions.Error) as exc:
            log.info("[%s] DI Server logout failed: %s", self.name, exc)

    def close(self) -> None:
        try:
            self.logout()
        finally:
            self.http.close()

    # -- calls -----------------------------------------------------------------------------

    def _call(self, command: str, **kwargs: Any) -> Any:
        """One command with the session; one re-login and one retry on a session fault. Other faults
        come back as ``(None, fault)`` for the caller to translate."""
        for attempt in (1, 2):
            s = self._current()
            try:
                result = getattr(self.service, command)(**kwargs, _soapheaders={"SessionID": s.token})
            except zeep.exceptions.Fault as fault:
                code = _fault_code(fault)
                if code == SESSION_CODE or str(fault.message or "").startswith("Invalid session"):
                    if attempt == 1:
                        log.info("[%s] DI Server session rejected on %s; logging in again", self.name, command)
                        self._relogin_after(s.generation)
                        continue
                    raise AuthError(f"{self.name}: DI Server {command}: {fault.message}", vendor_code=code,
                                    details={"relogin": True}) from None
                raise self._translate(command, fault, code) from None
            except ConnectorError:
                raise
            except Exception as exc:  # noqa: BLE001 - zeep/lxml: malformed, forbidden or unexpected XML
                raise self._contract(exc, command) from None
            with self._lock:
                if self._session is s:
                    s.last_used = self._clock()
            return result
        raise AssertionError("unreachable")

    def _translate(self, command: str, fault: zeep.exceptions.Fault, code: str | None) -> ConnectorError:
        message = f"{self.name}: DI Server {command}: {fault.message}"
        details = {"command": command, "fault": str(fault.code)}
        server_side = str(fault.code or "").endswith(("Server", "Receiver"))
        if command in WRITE_COMMANDS:
            if code == COMMIT_FAILED_CODE:
                return Transient(message + " (nothing was committed; sending again is safe)", vendor_code=code,
                                 details=details)
            if server_side:
                return Ambiguous(message + " (the server failed while handling it: check before sending again)",
                                 vendor_code=code, details=details)
            return Rejected(message, vendor_code=code, details=details)
        if server_side:
            return Transient(message, vendor_code=code, details=details)
        return ContractViolation(message, vendor_code=code, details=details)

    def _contract(self, exc: Exception, command: str) -> ContractViolation:
        return ContractViolation(f"{self.name}: DI Server {command}: unusable answer ({type(exc).__name__}: "
                                 f"{excerpt(str(exc))})")

    # -- commands --------------------------------------------------------------------------

    def execute_sql(self, sql: str) -> list[dict[str, Any]]:
        """``ExecuteSQL``: the recordset rows (values as text, whole-number fields as int)."""
        result = self._call("ExecuteSQL", DoQuery=sql)
        bom = result if isinstance(result, etree._Element) else getattr(result, "_value_1", None)
        if not isinstance(bom, etree._Element):
            raise ContractViolation(f"{self.name}: ExecuteSQL answered without a recordset")
        rows: list[dict[str, Any]] = []
        for bo in bom.iter("BO"):
            for node in bo:
                if isinstance(node.tag, str) and etree.QName(node).localname != "AdmInfo":
                    rows.extend(_rows(node))
        return rows

    def get_by_key(self, entity: str, key: Any) -> dict[str, Any] | None:
        """``GetByKey``: the whole record (lines and collections included), or None if not found."""
        obj = _object(entity)
        try:
            result = self._call("GetByKey", Object=obj.di, **{obj.key: str(key)})
        except ContractViolation as exc:
            if exc.vendor_code == NOT_FOUND_CODE:
                return None
            raise
        bom = result if isinstance(result, etree._Element) else getattr(result, "_value_1", None)
        return parse_bom(bom)[1]

    def add_object(self, entity: str, body: Mapping[str, Any]) -> str:
        """``AddObject``: the new key (RetKey)."""
        try:
            bom = build_bom(entity, body)
        except ValueError as exc:
            raise Rejected(f"{self.name}: cannot express the {entity} body as BOM XML: {exc}") from None
        key = self._call("AddObject", _value_1=bom)
        if not isinstance(key, str) or not key.strip():
            raise Ambiguous(f"{self.name}: AddObject of {entity} answered without RetKey; the document may exist")
        return key.strip()

    def update_object(self, entity: str, key: Any, body: Mapping[str, Any]) -> None:
        """``UpdateObject``: the fields in ``body`` (None = clear it: sent as an empty element), the
        key in ``QueryParams``."""
        obj = _object(entity)
        try:
            bom = build_bom(entity, {name: "" if value is None else value for name, value in body.items()})
        except ValueError as exc:
            raise Rejected(f"{self.name}: cannot express the {entity} change as BOM XML: {exc}") from None
        bo = bom.find("BO")
        assert bo is not None
        etree.SubElement(etree.SubElement(bo, "QueryParams"), _field(obj.key)).text = _text(key)
        self._call("UpdateObject", _value_1=bom)

    # -- the client methods the connector uses -------------------------------------------------

    def get_entity(self, entity: str, key: str) -> dict[str, Any] | None:
        """The whole record (``GetByKey``), or None when it does not exist."""
        return self.get_by_key(entity, key)

    def update(self, entity: str, key: str, body: Mapping[str, Any], *, etag: str | None = None) -> None:
        """``UpdateObject``. The DI Server has no ETags: ``etag`` is ignored (a blind write)."""
        self.update_object(entity, key, body)

    def query_page(self, entity: str, *, filter: str | None = None, select: Sequence[str] | None = None,
                   orderby: str | None = None, skip: int | None = None, top: int | None = None,
                   page_size: int | None = None, next_link: str | None = None) -> ResultPage:
        obj = _object(entity)
        if next_link is not None:
            match = re.search(r"\$skip=(\d+)", next_link)
            if match is None:
                raise ContractViolation(f"{self.name}: cannot follow {next_link!r}")
            skip = int(match.group(1))
        skip = int(skip or 0)
        full = (select is None and obj.lines is not None) or any(s in _COLLECTION_PROPS for s in (select or ()))
        if full:
            columns = obj.key
        elif select:
            columns = ", ".join(_field(s) for s in dict.fromkeys(select))
        else:
            columns = "*"
        limits = [n for n in (page_size, top) if n]
        limit = min(limits) if limits else None
        sql = f"SELECT {columns} FROM {obj.table}"
        if filter:
            sql += f" WHERE {odata_filter_to_sql(filter)}"
        sql += f" ORDER BY {_order_sql(orderby, obj.key)}"
        if limit is not None:
            sql += f" OFFSET {skip} ROWS FETCH NEXT {limit + 1} ROWS ONLY"
        elif skip:
            sql += f" OFFSET {skip} ROWS"
        rows = self.execute_sql(sql)
        more = limit is not None and len(rows) > limit and top is None
        if limit is not None:
            rows = rows[:limit]
        if full:
            records = []
            for row in rows:
                record = self.get_by_key(entity, row.get(obj.key))
                if record is not None:  # deleted between the two calls
                    records.append(record)
            rows = records
        next_skip = skip + len(rows) if more else None
        return ResultPage(tuple(rows), next_skip, f"{entity}?$skip={next_skip}" if more else None)

    def query(self, entity: str, *, filter: str | None = None, select: Sequence[str] | None = None,
              orderby: str | None = None, skip: int | None = None, page_size: int | None = None,
              max_pages: int = 1_000_000) -> Iterator[ResultPage]:
        for _ in range(max_pages):
            page = self.query_page(entity, filter=filter, select=select, orderby=orderby, skip=skip,
                                   page_size=page_size)
            yield page
            if page.next_skip is None:
                return
            skip = page.next_skip
        raise ContractViolation(f"{self.name}: {entity} did not end after {max_pages} pages")

    def create(self, entity: str, body: Mapping[str, Any]) -> dict[str, Any]:
        """``AddObject``, then the new document's number read back. Never resent: a lost answer is
        :class:`Ambiguous`."""
        obj = _object(entity)
        key = self.add_object(entity, body)
        created: dict[str, Any] = {obj.key: _value(obj.key, key)}
        if obj.lines is None:
            return created
        try:
            rows = self.execute_sql(f"SELECT DocEntry, DocNum, DocumentStatus FROM {obj.table} "
                                    f"WHERE DocEntry = {int(key)}")
        except (ConnectorError, ValueError) as exc:
            log.info("[%s] %s %s created; its number could not be read back: %s", self.name, entity, key, exc)
            return created
        return {**created, **rows[0]} if rows else created

    def batch(self, ops: Sequence[BatchOp]) -> list[BatchResult]:
        """No batch in DI: one AddObject per operation, in order. After a failure that is not the
        document's own (transport, session), the rest are reported not sent."""
        results: list[BatchResult] = []
        stopped: ConnectorError | None = None
        for op in ops:
            if stopped is not None:
                results.append(BatchResult("failed", error=Transient(
                    f"{self.name}: not sent: an earlier AddObject in the same call failed ({type(stopped).__name__})")))
                continue
            if op.method != "POST":
                results.append(BatchResult("failed", error=ConfigError(f"{self.name}: DI batch supports creates only")))
                continue
            try:
                results.append(BatchResult("created", entity=self.create(op.entity, op.body)))
            except Rejected as exc:
                results.append(BatchResult("failed", error=exc))
            except ConnectorError as exc:
                results.append(BatchResult("unknown" if isinstance(exc, Ambiguous) else "failed", error=exc))
                stopped = exc
        return results


def endpoint_address(url: str) -> str:
    """``https://host/B1WS`` → ``https://host/B1WS/DIServer``; a URL already ending in the endpoint stays."""
    if not isinstance(url, str) or not re.match(r"^https?://", url, re.IGNORECASE):
        raise ConfigError(f"the DI Server URL must be http(s), not {url!r}")
    base = url.rstrip("/")
    return base if base.lower().endswith("/diserver") else base + "/DIServer"
