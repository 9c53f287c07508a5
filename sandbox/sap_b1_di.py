"""The SAP Business One DI Server over SOAP, on the same simulator as the Service Layer.

``POST /DIServer`` takes a SOAP envelope with one DI command; ``GET /DIServer?wsdl`` serves the
description in ``sap_b1_di.wsdl`` (DI Server has no WSDL of its own, ``vendors/sap_b1.md``: ours is
written so that zeep can drive the commands). It is mounted by :class:`sandbox.sap_b1.SapB1Simulator`
through :class:`DiServerMixin`, and works on the same :class:`~sandbox.sap_b1_company.Company`,
sessions and ledger as the Service Layer: a document added here is read back over ``/b1s/v2``
and the other way round.

| command | body (children unqualified) | reply |
|---|---|---|
| ``Login`` | DatabaseServer, DatabaseName, DatabaseType, CompanyUsername, CompanyPassword, Language, LicenseServer | ``LoginResponse/SessionID`` |
| ``Logout`` | — | ``LogoutResponse`` |
| ``AddObject`` | ``<BOM><BO><AdmInfo><Object>…</Object></AdmInfo><node><row>…`` | ``AddObjectResponse/RetKey`` |
| ``UpdateObject`` | the same BOM; the key in ``BO/QueryParams`` or the header row | ``UpdateObjectResponse`` |
| ``GetByKey`` | ``Object`` + the key element (``ItemCode``, ``CardCode``, ``WarehouseCode``, ``AbsEntry``, ``DocEntry``, ``DocumentEntry``) | ``GetByKeyResponse/BOM`` |
| ``ExecuteSQL`` | ``DoQuery`` (the SELECT subset of :mod:`sandbox.sap_b1_di_sql`) | ``ExecuteSQLResponse/BOM`` with ``<row>`` elements |

Wire rules. SOAP 1.1 in and out (``text/xml``); a SOAP 1.2 envelope is answered in 1.2
(``application/soap+xml``) — the real DI Server takes 1.1 and answers 1.2, which zeep refuses, so
each dialect stays self-consistent here [I]. ``SessionID`` in the header, unqualified (also taken in
the DIS namespace). The request is parsed by ``defusedxml`` with DTDs forbidden (no entities, no
external references); bodies over 4 MiB are refused. Every failure is a SOAP Fault (HTTP 500) whose
``detail/dis:Error`` carries the DI ``Code`` and ``Message`` (in 1.2 also ``Code/Subcode/Value``).

BOM node names. Where the vendor doc gives them (marketing and inventory documents: ``Documents``
and ``Document_Lines``) we use them; where it is silent we use the real DI table names: ``OWTR``/
``WTR1`` (stock transfers), ``OINC``/``INC1``, ``OIQR``/``IQR1``, ``OITM`` + ``OITW`` (items and their
warehouse rows), ``OWHS``, ``OCRD``, ``OBIN``. Input takes either spelling (``OIGN``/``IGN1`` for a goods
receipt, ``StockTransfer``/``StockTransfer_Lines``, ``Items_WarehouseInfo``…). Line sub-collections
(``BatchNumbers``, ``SerialNumbers``, ``DocumentLinesBinAllocations``,
``StockTransferLinesBinAllocations``) are their own nodes whose rows name their line by
``BaseLineNumber`` (0-based line position), as in DI. Field names are the DI/Service Layer property
names; values are text: dates ``YYYYMMDD`` (DI XML form), times ``HH:MM:SS``, quantities plain
decimals, enums by name (``tYES``, ``bost_Close``; codes ``Y``/``O`` are accepted). Empty values are
left out.

SQL tables for ``ExecuteSQL``: the header tables (``OIGN OIGE OPDN ODLN ORDN ORPD OWTR OINC OIQR``),
their line tables (``IGN1``… with the parent key column), ``OITM``, ``OITW``, ``OWHS``, ``OCRD``, ``OBIN``.
Columns are the property names, plus a few real column names as aliases (``Ref1``, ``Ref2``,
``DocStatus``, ``CANCELED``, ``WhsCode``, ``OnHand``, ``IsCommited``, ``OnOrder``…) [I]. Comparisons are
typed by the column (dates, numbers, enum names or codes) and case-sensitive [I, as on HANA].

Error codes: business refusals come from the company (``-10`` "Quantity falls into negative
inventory  [IGE1.ItemCode][line: 1]", ``-2028`` "No matching records found (ODBC -2028)" for an
unknown item, warehouse or key); a missing or expired session is ``301`` "Invalid session or session
already timeout." (the Service Layer's wording: the DI Server's own is not recorded, [I]); a refused
login is ``-4008`` for an unknown company database and ``100000048`` "Enter valid user name and
password" [I]; a refused SQL statement ``-1`` with the reason [I]; a malformed envelope or unknown
command ``-1000``.
"""
from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import date
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any
from xml.etree.ElementTree import Element
from xml.sax.saxutils import escape

import defusedxml.ElementTree as SafeET
from defusedxml import DefusedXmlException
from werkzeug.exceptions import HTTPException
from werkzeug.http import HTTP_STATUS_CODES
from werkzeug.routing import Rule
from werkzeug.wrappers import Request, Response

from sandbox.faults import Decision, DecisionKind, RequestInfo
from sandbox.sap_b1_company import NOT_FOUND, B1Error
from sandbox.sap_b1_di_sql import And, Compare, InList, IsNull, Like, Not, Or, Query, SqlError, like_regex, parse_sql
from sandbox.sap_b1_entities import ENTITY_SETS, ENUM_ALIASES, EntitySet
from sandbox.sap_b1_odata import QueryError, parse_date_text

__all__ = ["DI_PATH", "DIS_NS", "DiServerMixin", "DiError", "BO_OBJECTS", "SQL_TABLES"]

DI_PATH = "/DIServer"
DIS_NS = "http://www.sap.com/SBO/DIS"
SOAP11 = "http://schemas.xmlsoap.org/soap/envelope/"
SOAP12 = "http://www.w3.org/2003/05/soap-envelope"
WSDL_FILE = Path(__file__).with_name("sap_b1_di.wsdl")
WSDL_ADDRESS = "http://localhost/DIServer"
MAX_BODY = 4 * 1024 * 1024
INVALID_SESSION = "Invalid session or session already timeout."
SESSION_CODE = 301
_ENV_KEY = "sandbox.sap_b1_di"
COMMANDS = ("Login", "Logout", "AddObject", "UpdateObject", "GetByKey", "ExecuteSQL")
WRITE_COMMANDS = frozenset({"AddObject", "UpdateObject"})


class DiError(Exception):
    """A refusal answered as a SOAP Fault: DI ``code``, ``message``; ``sender`` False = server-side."""

    def __init__(self, code: int | str, message: str, *, sender: bool = True) -> None:
        super().__init__(message)
        self.code = str(code)
        self.message = message
        self.sender = sender


# --- the object catalogue ------------------------------------------------------------------------

_LINE_SUBS = ("BatchNumbers", "SerialNumbers", "DocumentLinesBinAllocations", "StockTransferLinesBinAllocations")


@dataclass(frozen=True)
class BoObject:
    """One DI business object: its entity set and the BOM node names (first = the one we write)."""

    name: str                       # oInventoryGenEntry
    es: EntitySet
    header: tuple[str, ...]         # ("Documents", "OIGN")
    lines: tuple[str, ...] = ()     # ("Document_Lines", "IGN1")
    collections: Mapping[str, tuple[str, ...]] | None = None   # master collections: property -> node names


def _catalogue() -> dict[str, BoObject]:
    out: dict[str, BoObject] = {}
    masters = {"Items": ("OITM", "Items"), "Warehouses": ("OWHS", "Warehouses"),
               "BusinessPartners": ("OCRD", "BusinessPartners"), "BinLocations": ("OBIN", "BinLocations")}
    for es in ENTITY_SETS.values():
        if es.di_object is None:
            continue
        if es.kind == "master":
            collections = {"ItemWarehouseInfoCollection": ("OITW", "Items_WarehouseInfo")} if es.name == "Items" else {}
            obj = BoObject(es.di_object, es, masters[es.name], (), collections)
        elif es.lines == "DocumentLines":
            obj = BoObject(es.di_object, es, ("Documents", es.header_table or ""), ("Document_Lines", es.line_table or ""))
        else:
            di_name = {"StockTransfers": "StockTransfer", "InventoryCountings": "InventoryCounting",
                       "InventoryPostings": "InventoryPosting"}[es.name]
            obj = BoObject(es.di_object, es, (es.header_table or "", di_name),
                           (es.line_table or "", f"{di_name}_Lines", es.lines or ""))
        out[obj.name] = out[obj.name.lower()] = obj
        if es.object_code:
            out[es.object_code] = obj
    return out


BO_OBJECTS = _catalogue()

# SQL table -> (entity set, what): "header", "lines" or "itemwh"
SQL_TABLES: dict[str, tuple[str, str]] = {"OITM": ("Items", "header"), "OITW": ("Items", "itemwh"),
                                          "OWHS": ("Warehouses", "header"), "OCRD": ("BusinessPartners", "header"),
                                          "OBIN": ("BinLocations", "header")}
for _es in ENTITY_SETS.values():
    if _es.kind == "document" and _es.header_table and _es.line_table:
        SQL_TABLES[_es.header_table] = (_es.name, "header")
        SQL_TABLES[_es.line_table] = (_es.name, "lines")

# Real column names accepted next to the property names [I].
COLUMN_ALIASES = {
    "Ref1": "Reference1", "Ref2": "Reference2", "DocStatus": "DocumentStatus", "CANCELED": "Cancelled",
    "WhsCode": "WarehouseCode", "WhsName": "WarehouseName", "OnHand": "InStock", "IsCommited": "Committed",
    "OnOrder": "Ordered", "Filler": "FromWarehouse", "ToWhsCode": "ToWarehouse", "Dscription": "ItemDescription",
    "FromWhsCod": "FromWarehouseCode",
}

# Fields whose text is a whole number (the rest is left to the company's own normalisation).
_INT_FIELDS = frozenset({
    "Series", "DocEntry", "DocNum", "LineNum", "BaseType", "BaseEntry", "BaseLine", "BinAbsEntry", "AbsEntry",
    "BaseLineNumber", "SerialAndBatchNumbersBaseLine", "ItemsGroupCode", "GroupCode", "UoMEntry", "DocumentEntry",
    "DocumentNumber", "LineNumber", "PriceList", "DefaultBin", "SystemSerialNumber", "SalesPersonCode",
    "SingleCounterID",
})


# --- values ---------------------------------------------------------------------------------------


def wire_text(value: Any) -> str | None:
    """A stored value as BOM/recordset text; None = leave the element out."""
    if value is None or isinstance(value, (list, dict)):
        return None
    if isinstance(value, bool):
        return "tYES" if value else "tNO"
    if isinstance(value, date):
        return value.strftime("%Y%m%d")
    if isinstance(value, Decimal):
        text = format(value, "f")
        return text.rstrip("0").rstrip(".") if "." in text else text
    if isinstance(value, float):
        return wire_text(Decimal(repr(value)))
    return str(value)


def _from_text(name: str, text: str, template: Mapping[str, Any]) -> Any:
    default = template.get(name)
    if name in _INT_FIELDS or (isinstance(default, int) and not isinstance(default, bool)):
        try:
            return int(text.strip())
        except ValueError:
            raise DiError(-10, f"Invalid value '{text}' for field '{name}'") from None
    if isinstance(default, float):
        try:
            return Decimal(text.strip())
        except InvalidOperation:
            raise DiError(-10, f"Invalid value '{text}' for field '{name}'") from None
    return text


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _rows(node: Element) -> list[dict[str, str]]:
    rows: list[dict[str, str]] = []
    for row in node:
        if _local(row.tag) != "row":
            raise DiError(-1000, f"Invalid node '{_local(row.tag)}' in '{_local(node.tag)}': expected row")
        values: dict[str, str] = {}
        for cell in row:
            if len(cell):
                raise DiError(-1000, f"Field '{_local(cell.tag)}' may not have child elements")
            values[_local(cell.tag)] = cell.text or ""
        rows.append(values)
    return rows


# --- BOM XML ----------------------------------------------------------------------------------------


def _typed(row: Mapping[str, str], template: Mapping[str, Any]) -> dict[str, Any]:
    return {name: _from_text(name, text, template) for name, text in row.items()}


def bom_to_body(bom: Element) -> tuple[BoObject, dict[str, Any], dict[str, Any]]:
    """``<BOM><BO>…`` → (object, SL-shaped body, QueryParams)."""
    if _local(bom.tag) != "BOM":
        raise DiError(-1000, f"Expected a BOM element, got '{_local(bom.tag)}'")
    bos = [child for child in bom if _local(child.tag) == "BO"]
    if len(bos) != 1:
        raise DiError(-1000, "A BOM must hold exactly one BO")
    bo = bos[0]
    nodes: dict[str, Element] = {}
    for child in bo:
        name = _local(child.tag)
        if name in nodes:
            raise DiError(-1000, f"Node '{name}' appears twice")
        nodes[name] = child
    adm = nodes.pop("AdmInfo", None)
    object_name = None
    if adm is not None:
        for child in adm:
            if _local(child.tag) == "Object":
                object_name = (child.text or "").strip()
    if not object_name:
        raise DiError(-1000, "AdmInfo/Object is missing")
    obj = BO_OBJECTS.get(object_name) or BO_OBJECTS.get(object_name.lower())
    if obj is None:
        raise DiError(-1000, f"Object '{object_name}' is not supported")
    es = obj.es
    params: dict[str, Any] = {}
    if "QueryParams" in nodes:
        query = nodes.pop("QueryParams")
        params = {_local(c.tag): _from_text(_local(c.tag), c.text or "", es.template) for c in query}
    header_node = next((nodes.pop(n) for n in obj.header if n in nodes), None)
    header_rows = _rows(header_node) if header_node is not None else []
    if len(header_rows) > 1:
        raise DiError(-1000, f"'{obj.header[0]}' must hold one row")
    body = _typed(header_rows[0], es.template) if header_rows else {}
    if obj.lines:
        line_node = next((nodes.pop(n) for n in obj.lines if n in nodes), None)
        if line_node is not None:
            lines = [_typed(r, es.line_template) for r in _rows(line_node)]
            for sub in _LINE_SUBS:
                if sub not in nodes:
                    continue
                for row in _rows(nodes.pop(sub)):
                    typed = _typed(row, {})
                    base = typed.get("BaseLineNumber")
                    if base is None and len(lines) == 1:
                        base = 0
                    if not isinstance(base, int) or not 0 <= base < len(lines):
                        raise DiError(-10, f"Invalid BaseLineNumber '{row.get('BaseLineNumber')}' in '{sub}'")
                    lines[base].setdefault(sub, []).append(typed)
            body[es.lines or "DocumentLines"] = lines
    for prop, names in (obj.collections or {}).items():
        node = next((nodes.pop(n) for n in names if n in nodes), None)
        if node is not None:
            body[prop] = [_typed(r, {}) for r in _rows(node)]
    if nodes:
        raise DiError(-1000, f"Node '{next(iter(nodes))}' is not part of object '{obj.name}'")
    return obj, body, params


def _row_xml(values: Mapping[str, Any]) -> str:
    cells = []
    for name, value in values.items():
        text = wire_text(value)
        if text is not None:
            cells.append(f"<{name}>{escape(text)}</{name}>")
    return "<row>" + "".join(cells) + "</row>"


def record_to_bom(obj: BoObject, record: Mapping[str, Any]) -> str:
    """A rendered company record as ``<BOM>`` text (scalars in the header row, collections as nodes)."""
    es = obj.es
    parts = [f"<BOM><BO><AdmInfo><Object>{obj.name}</Object><Version>2</Version></AdmInfo>",
             f"<{obj.header[0]}>{_row_xml(record)}</{obj.header[0]}>"]
    if obj.lines and es.lines:
        lines = record.get(es.lines) or []
        parts.append(f"<{obj.lines[0]}>" + "".join(_row_xml(line) for line in lines) + f"</{obj.lines[0]}>")
        for sub in _LINE_SUBS:
            rows = []
            for index, line in enumerate(lines):
                for row in line.get(sub) or ():
                    if isinstance(row, Mapping):
                        rows.append(_row_xml({**row, "BaseLineNumber": index}))
            if rows:
                parts.append(f"<{sub}>" + "".join(rows) + f"</{sub}>")
    for prop, names in (obj.collections or {}).items():
        rows = [_row_xml(r) for r in record.get(prop) or () if isinstance(r, Mapping)]
        parts.append(f"<{names[0]}>" + "".join(rows) + f"</{names[0]}>")
    parts.append("</BO></BOM>")
    return "".join(parts)


# --- ExecuteSQL -----------------------------------------------------------------------------------


def _compare_value(column: str, stored: Any, literal: Any) -> Any:
    """``literal`` converted to the type of ``stored`` (raises SqlError when it cannot be)."""
    if isinstance(stored, date):
        try:
            return parse_date_text(str(literal))
        except QueryError:
            raise SqlError(f"Conversion failed when converting '{literal}' to a date for column '{column}'") from None
    if isinstance(stored, (int, Decimal, float)) and not isinstance(stored, bool):
        try:
            return Decimal(str(literal))
        except InvalidOperation:
            raise SqlError(f"Conversion failed when converting '{literal}' to a number for column '{column}'") from None
    text = str(literal) if not isinstance(literal, Decimal) else wire_text(literal)
    column = COLUMN_ALIASES.get(column, column)
    if column in ENUM_ALIASES:
        return ENUM_ALIASES[column].get(text, text)
    return text


def _stored_key(stored: Any) -> Any:
    return Decimal(str(stored)) if isinstance(stored, (int, float)) and not isinstance(stored, bool) else stored


def _matches(node: Any, get: Callable[[str], Any]) -> bool:
    if isinstance(node, And):
        return all(_matches(p, get) for p in node.parts)
    if isinstance(node, Or):
        return any(_matches(p, get) for p in node.parts)
    if isinstance(node, Not):
        return not _matches(node.part, get)
    if isinstance(node, IsNull):
        return (get(node.column) is None) != node.negated
    stored = get(node.column)
    if stored is None:
        return False                   # SQL: a comparison with NULL is not true
    if isinstance(node, Like):
        return bool(like_regex(node.pattern).match(str(wire_text(stored)))) != node.negated
    if isinstance(node, InList):
        values = [_compare_value(node.column, stored, v) for v in node.values if v is not None]
        return (_stored_key(stored) in values) != node.negated
    assert isinstance(node, Compare)
    if node.value is None:
        return False
    left, right = _stored_key(stored), _compare_value(node.column, stored, node.value)
    try:
        return {"=": left == right, "<>": left != right, "<": left < right, "<=": left <= right,
                ">": left > right, ">=": left >= right}[node.op]
    except TypeError:
        raise SqlError(f"Cannot compare column '{node.column}' with '{node.value}'") from None


# --- the front end --------------------------------------------------------------------------------


class DiServerMixin:
    """Mounted into :class:`sandbox.sap_b1.SapB1Simulator`; uses its ``company``, ``config`` (users,
    companies, login delay), ``sessions`` and ``_session_users``."""

    company: Any
    config: Any
    sessions: Any
    _session_users: dict[str, str]
    _sleep: Callable[[float], None]
    after_commit: Callable[[Request], None]

    def di_routes(self) -> list[Rule]:
        return [Rule(DI_PATH, endpoint="di_server", methods=["GET", "POST"])]

    # --- harness hooks --------------------------------------------------------------------

    def di_describe(self, request: Request) -> RequestInfo:
        parsed = self._di_parse(request)
        command = parsed[2] if isinstance(parsed, tuple) else None
        session = parsed[1] if isinstance(parsed, tuple) and command not in (None, "Login") else None
        operation = f"DI.{command}" if command else ("DI.wsdl" if request.method == "GET" else "DI")
        return RequestInfo(request.method, request.path, operation=operation, session=session,
                           client=self._session_users.get(session or ""))

    def di_fault_response(self, request: Request, decision: Decision) -> Response:
        if decision.body is not None:
            body = decision.body if isinstance(decision.body, str) else str(decision.body)
            response = Response(body, status=decision.status, content_type="text/plain; charset=utf-8")
        elif decision.kind is DecisionKind.SESSION_EXPIRED:
            response = self._di_fault(request, DiError(SESSION_CODE, INVALID_SESSION))
        else:  # what IIS or a proxy in front of the DI Server would answer
            reason = HTTP_STATUS_CODES.get(decision.status, "Error")
            response = Response(f"{decision.status} {reason}", status=decision.status,
                                content_type="text/plain; charset=utf-8")
        for name, value in decision.headers.items():
            response.headers[name] = value
        return response

    def di_error_response(self, request: Request, exc: Exception) -> Response:
        if isinstance(exc, HTTPException):
            return exc.get_response(request.environ)
        if isinstance(exc, B1Error):
            return self._di_fault(request, DiError(exc.code, exc.message))
        if isinstance(exc, DiError):
            return self._di_fault(request, exc)
        return self._di_fault(request, DiError(-1, f"Internal error: {type(exc).__name__}", sender=False))

    # --- endpoint -------------------------------------------------------------------------

    def di_server(self, request: Request) -> Response:
        if request.method == "GET":
            if any(k.lower() == "wsdl" for k in request.args):
                address = request.host_url.rstrip("/") + DI_PATH
                text = WSDL_FILE.read_text(encoding="utf-8").replace(WSDL_ADDRESS, escape(address))
                return Response(text, content_type="text/xml; charset=utf-8")
            return Response("DI Server: POST a SOAP envelope, or GET ?wsdl", status=400,
                            content_type="text/plain; charset=utf-8")
        parsed = self._di_parse(request)
        if isinstance(parsed, DiError):
            return self._di_fault(request, parsed)
        _, session, command, element = parsed
        try:
            if command == "Login":
                return self._di_reply(request, self._di_login(element))
            if session is None or self.sessions.get(session) is None:
                raise DiError(SESSION_CODE, INVALID_SESSION)
            if command == "Logout":
                self.sessions.expire(session)
                self._session_users.pop(session, None)
                return self._di_reply(request, f"<dis:LogoutResponse xmlns:dis=\"{DIS_NS}\"/>")
            if command == "AddObject":
                obj, body, _ = bom_to_body(self._di_bom(element))
                key = self.company.create(obj.es.name, body)
                self.after_commit(request)
                return self._di_reply(request, f"<dis:AddObjectResponse xmlns:dis=\"{DIS_NS}\"><RetKey>"
                                               f"{escape(str(key))}</RetKey></dis:AddObjectResponse>")
            if command == "UpdateObject":
                obj, body, params = bom_to_body(self._di_bom(element))
                key = params.get(obj.es.key, body.pop(obj.es.key, None))
                if key is None:
                    raise DiError(-10, f"The key field '{obj.es.key}' is missing (QueryParams)")
                self.company.update(obj.es.name, key, body)
                self.after_commit(request)
                return self._di_reply(request, f"<dis:UpdateObjectResponse xmlns:dis=\"{DIS_NS}\"/>")
            if command == "GetByKey":
                return self._di_reply(request, self._di_get_by_key(element))
            if command == "ExecuteSQL":
                return self._di_reply(request, self._di_execute_sql(element))
        except B1Error as exc:
            return self._di_fault(request, DiError(exc.code, exc.message))
        except DiError as exc:
            return self._di_fault(request, exc)
        raise DiError(-1000, f"Command '{command}' is not supported")  # pragma: no cover

    # --- commands -------------------------------------------------------------------------

    def _di_login(self, element: Element) -> str:
        fields = {_local(c.tag): (c.text or "") for c in element}
        if self.config.login_delay:
            self._sleep(self.config.login_delay)
        database, user = fields.get("DatabaseName", ""), fields.get("CompanyUsername", "")
        if database not in self.config.companies:
            raise DiError(-4008, f"Unable to access company database '{database}'")
        if self.config.users.get(user) != fields.get("CompanyPassword") or not user:
            raise DiError(100000048, "Enter valid user name and password")
        token = "{" + _guid_text() + "}"
        self.sessions.create({"user": user, "company": database, "transport": "di_server"}, token=token)
        self._session_users[token] = user
        return (f"<dis:LoginResponse xmlns:dis=\"{DIS_NS}\"><SessionID>{escape(token)}</SessionID>"
                "</dis:LoginResponse>")

    def _di_bom(self, element: Element) -> Element:
        children = list(element)
        if len(children) != 1:
            raise DiError(-1000, "The command needs exactly one BOM element")
        return children[0]

    def _di_get_by_key(self, element: Element) -> str:
        fields = {_local(c.tag): (c.text or "").strip() for c in element}
        name = fields.pop("Object", "")
        obj = BO_OBJECTS.get(name) or BO_OBJECTS.get(name.lower())
        if obj is None:
            raise DiError(-1000, f"Object '{name}' is not supported")
        es = obj.es
        text = fields.get(es.key)
        if text is None:
            raise DiError(-10, f"The key field '{es.key}' of '{obj.name}' is missing")
        key: Any = text
        if es.key_type is int:
            try:
                key = int(text)
            except ValueError:
                raise DiError(-2028, NOT_FOUND) from None
        if not self.company.exists(es.name, key):
            raise DiError(-2028, NOT_FOUND)
        bom = record_to_bom(obj, self.company.render(es.name, key))
        return f"<dis:GetByKeyResponse xmlns:dis=\"{DIS_NS}\">{bom}</dis:GetByKeyResponse>"

    def _di_execute_sql(self, element: Element) -> str:
        fields = {_local(c.tag): (c.text or "") for c in element}
        try:
            query = parse_sql(fields.get("DoQuery", ""))
            rows = self._di_select(query)
        except SqlError as exc:
            raise DiError(-1, str(exc)) from None
        body = "".join(_row_xml(row) for row in rows)
        return (f"<dis:ExecuteSQLResponse xmlns:dis=\"{DIS_NS}\"><BOM><BO><AdmInfo><Object>oRecordset</Object>"
                f"</AdmInfo><{query.table}>{body}</{query.table}></BO></BOM></dis:ExecuteSQLResponse>")

    def _di_select(self, query: Query) -> list[dict[str, Any]]:
        table = query.table.upper()
        if table not in SQL_TABLES:
            raise SqlError(f"Invalid object name '{query.table}'")
        entity_set, what = SQL_TABLES[table]
        es = ENTITY_SETS[entity_set]
        company = self.company
        with company.lock:
            sources = self._di_sources(es, what)
            known = sources[0]
            for column in query.referenced:
                if COLUMN_ALIASES.get(column, column) not in known:
                    raise SqlError(f"Invalid column name '{column}'")
            matched: list[Callable[[str], Any]] = []
            for get in sources[1]:
                def resolve(column: str, get: Callable[[str], Any] = get) -> Any:
                    return get(COLUMN_ALIASES.get(column, column))
                if query.where is None or _matches(query.where, resolve):
                    matched.append(resolve)
            for column, descending in reversed(query.order):
                matched.sort(key=lambda g, c=column: _sort_key(g(c)), reverse=descending)
            if query.top is not None:
                matched = matched[: query.top]
            matched = matched[query.offset:]
            if query.fetch is not None:
                matched = matched[: query.fetch]
            columns = query.columns or tuple(sorted(known))
            return [{c: g(c) for c in columns} for g in matched]

    def _di_sources(self, es: EntitySet, what: str) -> tuple[set[str], list[Callable[[str], Any]]]:
        """(known column names, a getter per row) for one SQL table."""
        company = self.company
        if what == "header":
            known = {n for n in es.template if not isinstance(es.template[n], (list, dict))}
            known |= set(es.stamps.values()) | {es.key} | ({es.number} if es.number else set())
            if es.name == "Items":
                known |= {"QuantityOnStock", "QuantityOrderedFromVendors", "QuantityOrderedByCustomers"}
            if es.name == "Warehouses" and company.config.warehouse_stamps:
                known |= {"CreateDate", "CreateTime", "UpdateDate", "UpdateTime"}
            udfs = set(company.config.user_fields.get(es.name, ()))
            if es.kind == "document":
                udfs |= set(company.config.user_fields.get("Documents", ()))
            known |= udfs
            getters = [company.getter(es.name, key) for key in company.keys(es.name)]
            return known, getters
        if what == "lines":
            parent = "DocumentEntry" if es.line_key == "LineNumber" else "DocEntry"
            known = {n for n in es.line_template if not isinstance(es.line_template[n], (list, dict))} | {parent}
            known |= set(company.config.user_fields.get("DocumentLines", ()))
            rows: list[Callable[[str], Any]] = []
            for key in company.keys(es.name):
                for line in company.record(es.name, key).get(es.lines, []):
                    row = {**line, parent: key}
                    rows.append(lambda n, row=row: row.get(n, es.line_template.get(n)))
            return known, rows
        # itemwh: one row per item and warehouse
        rows = []
        known = {"ItemCode", "WarehouseCode", "InStock", "Committed", "Ordered", "MinimalStock", "MaximalStock",
                 "Locked"}
        for sku in company.keys("Items"):
            for row in company.render("Items", sku)["ItemWarehouseInfoCollection"]:
                rows.append(lambda n, row=row: row.get(n))
        return known, rows

    # --- envelopes ------------------------------------------------------------------------

    def _di_parse(self, request: Request) -> tuple[str, str | None, str, Element] | DiError:
        """(SOAP namespace, SessionID, command, command element), parsed once per request."""
        cached = request.environ.get(_ENV_KEY)
        if cached is not None:
            return cached
        result = self._di_parse_uncached(request)
        request.environ[_ENV_KEY] = result
        return result

    def _di_parse_uncached(self, request: Request) -> tuple[str, str | None, str, Element] | DiError:
        if request.method != "POST":
            return DiError(-1000, "POST a SOAP envelope")
        if (request.content_length or 0) > MAX_BODY:
            return DiError(-1000, "Request too large")
        data = request.get_data(cache=True)
        if len(data) > MAX_BODY:
            return DiError(-1000, "Request too large")
        try:
            root = SafeET.fromstring(data, forbid_dtd=True, forbid_entities=True, forbid_external=True)
        except DefusedXmlException as exc:
            return DiError(-1000, f"XML refused: {type(exc).__name__} (DTDs and entities are not accepted)")
        except SafeET.ParseError as exc:
            return DiError(-1000, f"Malformed XML: {exc}")
        ns = root.tag[1:].split("}", 1)[0] if root.tag.startswith("{") else ""
        if ns not in (SOAP11, SOAP12) or _local(root.tag) != "Envelope":
            return DiError(-1000, "Not a SOAP envelope")
        header = root.find(f"{{{ns}}}Header")
        body = root.find(f"{{{ns}}}Body")
        session = None
        if header is not None:
            for child in header:
                if child.tag in ("SessionID", f"{{{DIS_NS}}}SessionID"):
                    session = (child.text or "").strip() or None
        if body is None or len(body) != 1:
            return DiError(-1000, "The SOAP Body must hold exactly one command")
        element = body[0]
        command = _local(element.tag)
        if element.tag not in (f"{{{DIS_NS}}}{command}", command) or command not in COMMANDS:
            return DiError(-1000, f"Command '{command}' is not supported")
        return ns, session, command, element

    def _di_ns(self, request: Request) -> str:
        parsed = request.environ.get(_ENV_KEY)
        return parsed[0] if isinstance(parsed, tuple) else SOAP11

    def _di_reply(self, request: Request, body: str) -> Response:
        ns = self._di_ns(request)
        text = (f"<?xml version=\"1.0\" encoding=\"utf-8\"?><env:Envelope xmlns:env=\"{ns}\"><env:Body>{body}"
                "</env:Body></env:Envelope>")
        return Response(text, status=200, content_type=_content_type(ns))

    def _di_fault(self, request: Request, error: DiError) -> Response:
        ns = self._di_ns(request)
        detail = (f"<dis:Error xmlns:dis=\"{DIS_NS}\"><Code>{escape(error.code)}</Code>"
                  f"<Message>{escape(error.message)}</Message></dis:Error>")
        if ns == SOAP12:
            who = "env:Sender" if error.sender else "env:Receiver"
            fault = (f"<env:Fault><env:Code><env:Value>{who}</env:Value><env:Subcode><env:Value>"
                     f"{escape(error.code)}</env:Value></env:Subcode></env:Code><env:Reason><env:Text xml:lang=\"en\">"
                     f"{escape(error.message)}</env:Text></env:Reason><env:Detail>{detail}</env:Detail></env:Fault>")
        else:
            who = "env:Client" if error.sender else "env:Server"
            fault = (f"<env:Fault><faultcode>{who}</faultcode><faultstring>{escape(error.message)}</faultstring>"
                     f"<detail>{detail}</detail></env:Fault>")
        text = (f"<?xml version=\"1.0\" encoding=\"utf-8\"?><env:Envelope xmlns:env=\"{ns}\"><env:Body>{fault}"
                "</env:Body></env:Envelope>")
        return Response(text, status=500, content_type=_content_type(ns))


def _content_type(ns: str) -> str:
    return "application/soap+xml; charset=utf-8" if ns == SOAP12 else "text/xml; charset=utf-8"


def _sort_key(value: Any) -> tuple[int, Any]:
    if value is None:
        return (0, 0)
    return (1, _stored_key(value))


def _guid_text() -> str:
    return str(uuid.uuid4()).upper()
