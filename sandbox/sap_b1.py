"""A simulator of the SAP Business One Service Layer (``vendors/sap_b1.md``), over real HTTP.

Endpoints, under ``/b1s/v1`` (OData v3 dialect) and ``/b1s/v2`` (OData v4 dialect):

| call | does |
|---|---|
| ``POST Login`` / ``POST Logout`` | session: ``B1SESSION=<id>;HttpOnly;`` + ``ROUTEID=.node1; path=/b1s`` cookies, sliding ``SessionTimeout`` (minutes) |
| ``GET <Set>`` | ``$filter $select $orderby $top $skip``, ``$inlinecount=allpages`` (v1) / ``$count=true`` (v2), 20-row pages, next links |
| ``GET <Set>/$count`` | plain-text count |
| ``GET <Set>(key)`` | one entity (``Items('A')``, ``InventoryGenEntries(5)``, ``Items(ItemCode='A')``) |
| ``POST <Set>`` | 201 + entity + ``Location`` (``Prefer: return-no-content`` → 204) |
| ``PATCH``/``PUT <Set>(key)`` | 204; v2 ``If-Match`` checked (412 / -2039) |
| ``DELETE <Set>(key)`` | 204 for master data; documents → 400 / -5006 |
| ``POST <Set>(key)/Cancel`` ``/Close`` | document actions, 204 |
| ``POST $batch`` | multipart/mixed, atomic changesets (202 on v1, 200 on v2) |
| ``GET /ping/``, ``/ping/node`` ... | load balancer pings, no session |
| ``POST /DIServer``, ``GET /DIServer?wsdl`` | the DI Server commands over SOAP (:mod:`sandbox.sap_b1_di`), same company |

The company state (records, numbering, stock rules) is :class:`sandbox.sap_b1_company.Company`;
this module only speaks HTTP and OData. The DI Server front end (:mod:`sandbox.sap_b1_di`, mounted
here) shares ``simulator.company``, the sessions and the ledger.

Configuration (constructor keywords, or seed keys ``service_layer`` and ``company``): users and
company databases, ``session_timeout`` (minutes), ``page_size`` (0 = unpaged), ``next_link``
("relative" or "absolute-path"), ``v1_session_error`` ("guide": numeric code and lang/value
message; "dump": string code and plain message, as a production v1 log showed), ``login_delay``
(seconds), ``proxy_errors_html`` (injected 502/503 as Apache HTML, as the balancer answers).
"""
from __future__ import annotations

import json
import secrets
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from typing import Any
from urllib.parse import parse_qsl, urlsplit
from urllib.parse import quote as url_quote

from werkzeug.datastructures import MultiDict
from werkzeug.exceptions import HTTPException
from werkzeug.http import HTTP_STATUS_CODES
from werkzeug.routing import Rule
from werkzeug.wrappers import Request, Response

from sandbox.base import Simulator
from sandbox.faults import Decision, DecisionKind, RequestInfo
from sandbox.sap_b1_batch import (
    ChangeSet,
    ChangeSetResponse,
    SubRequest,
    SubResponse,
    build_response,
    parse_batch,
)
from sandbox.sap_b1_company import B1Error, Company, CompanyConfig, etag_for
from sandbox.sap_b1_di import DI_PATH, DiServerMixin
from sandbox.sap_b1_entities import ENTITY_SETS
from sandbox.sap_b1_odata import (
    QueryError,
    parse_count,
    parse_filter,
    parse_orderby,
    parse_resource,
    parse_select,
    quote,
    sort_key,
)
from sandbox.world import World

CONTENT_TYPE = {
    "v1": "application/json;odata=minimalmetadata;charset=utf-8",
    "v2": "application/json;odata.metadata=minimal;charset=utf-8",
}
VERSION_BUILD = {"v1": "1000190", "v2": "1000280"}
INVALID_SESSION = "Invalid session or session already timeout."
LOGIN_FAILED = "Fail to get DB Credentials from SLD"
ETAG_MISMATCH = ("Another user or another operation modified data; to continue, open the window again "
                 "(ODBC -2039)")
WRITE_METHODS = frozenset({"POST", "PATCH", "PUT", "DELETE"})
_V1_OPTIONS = frozenset({"$filter", "$select", "$orderby", "$top", "$skip", "$inlinecount"})
_V2_OPTIONS = frozenset({"$filter", "$select", "$orderby", "$top", "$skip", "$count"})
_PROXY_ERROR = (
    '<!DOCTYPE HTML PUBLIC "-//IETF//DTD HTML 2.0//EN">\n<html><head>\n<title>{status} Proxy Error</title>\n'
    "</head><body>\n<h1>Proxy Error</h1>\n<p>The proxy server received an invalid\r\nresponse from an upstream "
    "server.<br />\r\n</p>\n</body></html>\n"
)


@dataclass
class ServiceLayerConfig:
    users: dict[str, str] = field(default_factory=lambda: {"manager": "secret"})
    companies: tuple[str, ...] = ("SBODEMOUS",)
    session_timeout: int = 30           # minutes, idle (sliding)
    page_size: int = 20                 # 0 = no paging
    next_link: str = "relative"         # or "absolute-path": "/b1s/v1/Items?$skip=20"
    v1_session_error: str = "guide"     # or "dump"
    login_delay: float = 0.0
    proxy_errors_html: bool = False
    route_id: str = ".node1"

    _KNOWN = ("users", "companies", "session_timeout", "page_size", "next_link", "v1_session_error",
              "login_delay", "proxy_errors_html", "route_id")

    def update(self, data: Mapping[str, Any]) -> None:
        unknown = sorted(set(data) - set(self._KNOWN))
        if unknown:
            raise ValueError(f"service_layer.{unknown[0]}: unknown setting (known: {', '.join(self._KNOWN)})")
        for name, value in data.items():
            if name == "users":
                if not isinstance(value, Mapping) or not all(isinstance(v, str) for v in value.values()):
                    raise ValueError("service_layer.users: must map user names to passwords")
                value = dict(value)
            elif name == "companies":
                if isinstance(value, str) or not all(isinstance(v, str) for v in value):
                    raise ValueError("service_layer.companies: must be a list of CompanyDB names")
                value = tuple(value)
            elif name in ("session_timeout", "page_size"):
                if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                    raise ValueError(f"service_layer.{name}: must be a non-negative integer")
            elif name == "next_link" and value not in ("relative", "absolute-path"):
                raise ValueError("service_layer.next_link: must be relative or absolute-path")
            elif name == "v1_session_error" and value not in ("guide", "dump"):
                raise ValueError("service_layer.v1_session_error: must be guide or dump")
            elif name == "login_delay" and (isinstance(value, bool) or not isinstance(value, (int, float))):
                raise ValueError("service_layer.login_delay: must be a number of seconds")
            elif name == "proxy_errors_html" and not isinstance(value, bool):
                raise ValueError("service_layer.proxy_errors_html: must be true or false")
            setattr(self, name, value)


@dataclass
class Reply:
    status: int
    body: Any = None                   # dict/list → JSON; str → text/plain; None → empty
    headers: dict[str, str] = field(default_factory=dict)
    committed: bool = False            # a write was committed


@dataclass
class Ctx:
    version: str                       # "v1" or "v2"
    root: str                          # "http://127.0.0.1:5000/b1s/v1"
    headers: Mapping[str, str]         # case-insensitive get()
    in_batch: bool = False


class SapB1Simulator(DiServerMixin, Simulator):
    """The SAP B1 Service Layer. ``company`` is shared with the DI Server front end (``/DIServer``)."""

    name = "sap_b1"

    def __init__(
        self, *, allow_negative: bool = False, session_idle_timeout: float | None = None,
        clock: Callable[[], float] = time.time, sleep: Callable[[float], None] = time.sleep,
        session_timeout: int = 30, page_size: int = 20, users: Mapping[str, str] | None = None,
        companies: Iterable[str] = ("SBODEMOUS",), reference_fields: Iterable[str] = ("Reference2",),
        **settings: Any,
    ) -> None:
        self.config = ServiceLayerConfig()
        self.config.update({"session_timeout": session_timeout, "page_size": page_size,
                            "companies": tuple(companies), **({"users": users} if users is not None else {}),
                            **{k: v for k, v in settings.items() if k in ServiceLayerConfig._KNOWN}})
        company_settings = {k: v for k, v in settings.items() if k not in ServiceLayerConfig._KNOWN}
        self._sleep = sleep
        super().__init__(allow_negative=allow_negative, clock=clock, sleep=sleep,
                         session_idle_timeout=session_idle_timeout or session_timeout * 60)
        self._company_defaults = CompanyConfig().updated({"reference_fields": list(reference_fields),
                                                          **company_settings})
        self.company = Company(self.ledger, clock=clock, lock=self.lock, config=self._company_defaults)
        self._session_users: dict[str, str] = {}
        self._config_defaults = dict(vars(self.config))

    # --- harness hooks --------------------------------------------------------------------

    def routes(self) -> list[Rule]:
        version = "/b1s/<any(v1,v2):version>"
        return [
            Rule(f"{version}/Login", endpoint="login", methods=["POST"]),
            Rule(f"{version}/Logout", endpoint="logout", methods=["POST"]),
            Rule(f"{version}/$batch", endpoint="batch", methods=["POST"]),
            Rule(f"{version}/", endpoint="service_document", methods=["GET"]),
            Rule(f"{version}/$metadata", endpoint="metadata", methods=["GET"]),
            Rule(f"{version}/<path:resource>", endpoint="resource",
                 methods=["GET", "POST", "PATCH", "PUT", "DELETE", "MERGE"]),
            Rule("/ping/", endpoint="ping", methods=["GET"]),
            Rule("/ping/load-balancer", endpoint="ping", methods=["GET"]),
            Rule("/ping/node", endpoint="ping_node", methods=["GET"]),
            Rule("/ping/node/<int:node>", endpoint="ping_node", methods=["GET"]),
            *self.di_routes(),
        ]

    def describe(self, request: Request, endpoint: str, values: Mapping[str, Any]) -> RequestInfo:
        if endpoint == "di_server":
            return self.di_describe(request)
        token = request.cookies.get("B1SESSION")
        operation = {"login": "Login", "logout": "Logout", "batch": "$batch", "service_document": "service",
                     "metadata": "$metadata", "ping": "ping", "ping_node": "ping"}.get(endpoint)
        if endpoint == "resource":
            method = self._method(request)
            try:
                resource = parse_resource(values["resource"])
                operation = f"{resource.entity_set}.{resource.rest or method}"
                if resource.rest == "$count":
                    operation = f"{resource.entity_set}.GET"
            except QueryError:
                operation = f"{values['resource']}.{method}"
        session = token if endpoint not in ("login", "ping", "ping_node") else None
        return RequestInfo(request.method, request.path, operation=operation, session=session,
                           client=self._session_users.get(token or ""))

    def fault_response(self, request: Request, decision: Decision) -> Response:
        if request.path == DI_PATH:
            return self.di_fault_response(request, decision)
        if decision.body is not None:
            return super().fault_response(request, decision)
        version = _version_of(request.path)
        if decision.kind is DecisionKind.SESSION_EXPIRED:
            response = self._error(version, B1Error(301, INVALID_SESSION, decision.status))
        elif self.config.proxy_errors_html and decision.status in (502, 503):
            response = Response(_PROXY_ERROR.format(status=decision.status), status=decision.status,
                                content_type="text/html; charset=iso-8859-1")
        else:
            reason = HTTP_STATUS_CODES.get(decision.status, "Error")
            response = self._error(version, B1Error(-1, f"{reason} ({decision.kind.value}, {decision.rule})",
                                                    decision.status))
        for name, value in decision.headers.items():
            response.headers[name] = value
        return response

    def error_response(self, request: Request, exc: Exception) -> Response:
        if request.path == DI_PATH:
            return self.di_error_response(request, exc)
        version = _version_of(request.path)
        if isinstance(exc, (B1Error, QueryError)):
            return self._error(version, exc)
        if isinstance(exc, HTTPException):
            if request.path.startswith("/b1s/"):
                return self._error(version, B1Error(-1000, exc.description or exc.name, exc.code or 500))
            return exc.get_response(request.environ)
        return super().error_response(request, exc)

    def seed(self, data: Mapping[str, Any]) -> None:
        """Seed keys on top of the base ones (``world``, ``balances``, ``allow_negative``,
        ``warehouse_allow_negative``):

        * ``service_layer``: :class:`ServiceLayerConfig` settings (users, companies, page_size...);
        * ``company``: :class:`~sandbox.sap_b1_company.CompanyConfig` settings (reference_fields,
          user_fields, timezone, docnum_start, require_batches, warehouse_stamps...);
        * ``series``: ``{"InventoryGenEntries": [{"Series": 21, "NextNumber": 500, "Default": true}]}``;
        * ``Warehouses``, ``BinLocations``, ``Items``, ``BusinessPartners``: SL-shaped records, created
          as a POST would (in that order).
        """
        rest = dict(data)
        if "service_layer" in rest:
            self.config.update(rest.pop("service_layer"))
            self.sessions.idle_timeout = self.config.session_timeout * 60
        if "company" in rest:
            self.company.configure(rest.pop("company"))
        for entity_set, rows in dict(rest.pop("series", {})).items():
            self.company.set_series(entity_set, rows)
        for entity_set in ("Warehouses", "BinLocations", "Items", "BusinessPartners"):
            if entity_set in rest:
                try:
                    self.company.seed_records(entity_set, rest.pop(entity_set))
                except B1Error as exc:
                    raise ValueError(f"{entity_set}: {exc.message}") from None
        try:
            super().seed(rest)
        finally:
            self.company.stock_changed()

    def seed_world(self, world: World) -> None:
        try:
            self.company.seed_world(world)
        except B1Error as exc:
            raise ValueError(f"world: {exc.message}") from None

    _TOUCH_SETS = {"items": "Items", "warehouses": "Warehouses", "partners": "BusinessPartners",
                   "businesspartners": "BusinessPartners", "bins": "BinLocations", "binlocations": "BinLocations"}

    def touch(self, entity: str, key: str, at: float | None = None) -> None:
        entity_set = self._TOUCH_SETS.get(entity.lower(), entity)
        if entity_set not in ENTITY_SETS:
            raise ValueError(f"touch: unknown entity {entity!r} (items, warehouses, partners)")
        try:
            self.company.touch(entity_set, int(key) if ENTITY_SETS[entity_set].key_type is int else key, at)
        except B1Error:
            raise ValueError(f"touch: no {entity_set} record {key!r}") from None

    def documents_for(self, reference: str) -> list[str]:
        return self.company.documents_for(reference)

    def reset(self) -> None:
        with self.lock:
            self.company.config = self._company_defaults
            self.company.reset()
            self.config.update(self._config_defaults)
            self.sessions.idle_timeout = self.config.session_timeout * 60
            self._session_users.clear()
        super().reset()
        self.company.stock_changed()

    # --- sessions -------------------------------------------------------------------------

    def login(self, request: Request, version: str) -> Response:
        try:
            body = json.loads(request.get_data() or b"null")
        except ValueError:
            body = None
        if self.config.login_delay:
            self._sleep(self.config.login_delay)
        if not isinstance(body, dict):
            return self._error(version, B1Error(-1000, "Invalid login request body", 400))
        user, password, company = body.get("UserName"), body.get("Password"), body.get("CompanyDB")
        if (company not in self.config.companies or not isinstance(user, str)
                or self.config.users.get(user) != password):
            return self._error(version, B1Error(-304, LOGIN_FAILED, 401))
        token = _guid()
        self.sessions.create({"user": user, "company": company}, token=token)
        self._session_users[token] = user
        context = "@odata.context" if version == "v2" else "odata.metadata"
        suffix = "$entity" if version == "v2" else "@Element"
        payload = {context: f"{self._root(request, version)}/$metadata#B1Sessions/{suffix}", "SessionId": token,
                   "Version": VERSION_BUILD[version], "SessionTimeout": self.config.session_timeout}
        response = Response(_dumps(payload), status=200, content_type=CONTENT_TYPE[version])
        response.headers.add("Set-Cookie", f"B1SESSION={token};HttpOnly;")
        response.headers.add("Set-Cookie", f"ROUTEID={self.config.route_id}; path=/b1s")
        return response

    def logout(self, request: Request, version: str) -> Response:
        token = self._require_session(request, version)
        if isinstance(token, Response):
            return token
        self.sessions.expire(token)
        self._session_users.pop(token, None)
        return Response(status=204)

    def _require_session(self, request: Request, version: str) -> str | Response:
        token = request.cookies.get("B1SESSION")
        if token is None or self.sessions.get(token) is None:
            return self._error(version, B1Error(301, INVALID_SESSION, 401))
        return token

    # --- other endpoints ------------------------------------------------------------------

    def ping(self, request: Request) -> Response:
        return self._json({"message": "pong", "sender": "load balancer", "timestamp": f"{self.clock():.3f}"})

    def ping_node(self, request: Request, node: int = 1) -> Response:
        return self._json({"message": "pong", "sender": f"node {node}", "timestamp": f"{self.clock():.3f}"})

    def service_document(self, request: Request, version: str) -> Response:
        token = self._require_session(request, version)
        if isinstance(token, Response):
            return token
        sets = [{"name": name, "kind": "EntitySet", "url": name} for name in ENTITY_SETS]
        key = "@odata.context" if version == "v2" else "odata.metadata"
        return self._reply(version, Reply(200, {key: f"{self._root(request, version)}/$metadata", "value": sets}))

    def metadata(self, request: Request, version: str) -> Response:
        token = self._require_session(request, version)
        if isinstance(token, Response):
            return token
        return Response(_metadata(version), status=200, content_type="application/xml")

    # --- resources ------------------------------------------------------------------------

    def resource(self, request: Request, version: str, resource: str) -> Response:
        token = self._require_session(request, version)
        if isinstance(token, Response):
            return token
        ctx = Ctx(version, self._root(request, version), request.headers)
        reply = self._handle(ctx, self._method(request), resource, request.args, request.get_data())
        if reply.committed:
            self.after_commit(request)
        return self._reply(version, reply)

    @staticmethod
    def _method(request: Request) -> str:
        override = request.headers.get("X-HTTP-Method-Override", "").strip().upper()
        method = override if request.method == "POST" and override else request.method
        return "PATCH" if method == "MERGE" else method

    def _handle(self, ctx: Ctx, method: str, path: str, args: MultiDict, body: bytes) -> Reply:
        try:
            resource = parse_resource(path)
            es = self.company.entity_set(resource.entity_set)
            key = self._key(es, resource) if resource.has_key else None
            if method == "GET":
                if resource.rest == "$count" and not resource.has_key:
                    return self._count(ctx, es.name, args)
                if resource.rest is not None:
                    raise B1Error(-1000, f"Resource not found for the segment '{resource.rest}'", 404)
                if resource.has_key:
                    return self._get_one(ctx, es.name, key, args)
                return self._list(ctx, es.name, resource.entity_set, args)
            if resource.rest is not None:
                if method != "POST" or not resource.has_key:
                    raise B1Error(-1000, f"Resource not found for the segment '{resource.rest}'", 404)
                self.company.record(es.name, key)
                if resource.rest not in ("Cancel", "Close"):
                    raise B1Error(-1000, f"Resource not found for the segment '{resource.rest}'", 404)
                self.company.action(es.name, key, resource.rest)
                return Reply(204, committed=True)
            if method == "POST":
                if resource.has_key:
                    raise B1Error(-1000, "Method not allowed on an entity", 405)
                created = self.company.create(es.name, _read_body(body))
                return self._created(ctx, es.name, created)
            if not resource.has_key:
                raise B1Error(-1000, f"{method} needs an entity key", 405)
            if method in ("PATCH", "PUT"):
                data = _read_body(body)
                self.company.record(es.name, key)
                self._check_etag(ctx, es.name, key)
                self.company.update(es.name, key, data)
                return Reply(204, committed=True)
            if method == "DELETE":
                self.company.record(es.name, key)
                self._check_etag(ctx, es.name, key)
                self.company.delete(es.name, key)
                return Reply(204, committed=True)
            raise B1Error(-1000, f"Method {method} not allowed", 405)
        except (B1Error, QueryError) as exc:
            return self._error_reply(ctx.version, exc)

    def _key(self, es: Any, resource: Any) -> Any:
        key = resource.key
        if isinstance(key, dict):
            if set(key) != {es.key}:
                raise B1Error(-1000, f"Invalid key for '{es.name}': expected {es.key}")
            key = key[es.key]
        if es.key_type is int:
            if not isinstance(key, int):
                raise B1Error(-1000, f"Invalid key for '{es.name}': {es.key} is a number")
            return key
        return key if isinstance(key, str) else str(key)

    def _check_etag(self, ctx: Ctx, entity_set: str, key: Any) -> None:
        wanted = ctx.headers.get("If-Match")
        if ctx.version != "v2" or ctx.in_batch or not wanted or wanted.strip() == "*":
            return
        if wanted.strip() != self.company.etag(entity_set, key):
            raise B1Error(-2039, ETAG_MISMATCH, 412)

    def _created(self, ctx: Ctx, entity_set: str, key: Any) -> Reply:
        location = f"{ctx.root}/{entity_set}({_key_literal(key)})"
        headers = {"Location": location}
        if "return-no-content" in ctx.headers.get("Prefer", ""):
            headers["Preference-Applied"] = "return-no-content"
            return Reply(204, None, headers, committed=True)
        entity = self._entity_json(ctx, entity_set, key, select=None, single=True)
        if ctx.version == "v2":
            headers["ETag"] = self.company.etag(entity_set, key)
        return Reply(201, entity, headers, committed=True)

    def _get_one(self, ctx: Ctx, entity_set: str, key: Any, args: MultiDict) -> Reply:
        self._check_options(ctx, args, allowed=frozenset({"$select"}))
        self.company.record(entity_set, key)
        known = self.company.known_property(entity_set)
        select = parse_select(args["$select"], known) if "$select" in args else None
        entity = self._entity_json(ctx, entity_set, key, select=select, single=True)
        headers = {}
        if ctx.version == "v2" and select is None:
            headers["ETag"] = self.company.etag(entity_set, key)
        return Reply(200, entity, headers)

    def _check_options(self, ctx: Ctx, args: MultiDict, allowed: frozenset[str] | None = None) -> None:
        options = allowed if allowed is not None else (_V1_OPTIONS if ctx.version == "v1" else _V2_OPTIONS)
        for name in args:
            if name.startswith("$") and name not in options:
                raise QueryError(f"Not supported query string  [{name} on /b1s/{ctx.version}]")

    def _matching(self, ctx: Ctx, entity_set: str, args: MultiDict) -> list[Any]:
        known = self.company.known_property(entity_set)
        fold = ctx.headers.get("B1S-CaseInsensitive", "").strip().lower() == "true"
        predicate = parse_filter(args["$filter"], ctx.version, known=known, case_insensitive=fold) \
            if "$filter" in args else None
        order = parse_orderby(args["$orderby"], known) if "$orderby" in args else []
        with self.lock:
            keys = self.company.keys(entity_set)
            hint = getattr(predicate, "equals", None)
            es = self.company.entity_set(entity_set)
            # string keys only: a wrongly typed literal must still reach the predicate and fail
            if hint is not None and hint[0] == es.key and es.key_type is str:
                wanted = hint[1]
                keys = [key for key in keys if key in wanted]
            getters = {key: self.company.getter(entity_set, key) for key in keys}
            if predicate is not None:
                keys = [key for key in keys if predicate(getters[key])]
            for name, descending in reversed(order):
                keys.sort(key=lambda k: sort_key(getters[k](name)), reverse=descending)
        return keys

    def _count(self, ctx: Ctx, entity_set: str, args: MultiDict) -> Reply:
        self._check_options(ctx, args, allowed=frozenset({"$filter"}))
        return Reply(200, str(len(self._matching(ctx, entity_set, args))))

    def _page_size(self, ctx: Ctx) -> tuple[int, dict[str, str]]:
        prefer = ctx.headers.get("Prefer", "")
        for part in prefer.split(","):
            name, _, value = part.strip().partition("=")
            if name.strip().lower() == "odata.maxpagesize" and value.strip().isdigit():
                size = int(value.strip())
                return size, {"Preference-Applied": f"odata.maxpagesize={size}"}
        header = ctx.headers.get("B1S-PageSize", "").strip()
        if header:
            if not header.isdigit():
                raise QueryError(f"Not supported query string  [B1S-PageSize: {header!r}]")
            return int(header), {}
        return self.config.page_size, {}

    def _list(self, ctx: Ctx, entity_set: str, name: str, args: MultiDict) -> Reply:
        self._check_options(ctx, args)
        known = self.company.known_property(entity_set)
        select = parse_select(args["$select"], known) if "$select" in args else None
        skip = parse_count("$skip", args["$skip"]) if "$skip" in args else 0
        top = parse_count("$top", args["$top"]) if "$top" in args else None
        with_count = False
        if ctx.version == "v1" and "$inlinecount" in args:
            if args["$inlinecount"] not in ("allpages", "none"):
                raise QueryError(f"Not supported query string  [$inlinecount={args['$inlinecount']}]")
            with_count = args["$inlinecount"] == "allpages"
        if ctx.version == "v2" and "$count" in args:
            if args["$count"] not in ("true", "false"):
                raise QueryError(f"Not supported query string  [$count={args['$count']}]")
            with_count = args["$count"] == "true"
        page_size, headers = self._page_size(ctx)
        keys = self._matching(ctx, entity_set, args)
        window = keys[skip:] if top is None else keys[skip:skip + top]
        page = window if page_size == 0 else window[:page_size]
        rows = [self._entity_json(ctx, entity_set, key, select=select, single=False) for key in page]
        context = f"{ctx.root}/$metadata#{name}"
        if select is not None:
            context += f"({','.join(select)})" if ctx.version == "v2" else f"&$select={','.join(select)}"
        body: dict[str, Any]
        if ctx.version == "v2":
            body = {"@odata.context": context}
            if with_count:
                body["@odata.count"] = len(keys)
            body["value"] = rows
        else:
            body = {"odata.metadata": context}
            if with_count:
                body["odata.count"] = str(len(keys))
            body["value"] = rows
        if len(window) > len(page):
            link = self._next_link(ctx, name, args, skip + len(page), None if top is None else top - len(page))
            body["@odata.nextLink" if ctx.version == "v2" else "odata.nextLink"] = link
        return Reply(200, body, headers)

    def _next_link(self, ctx: Ctx, name: str, args: MultiDict, skip: int, top: int | None) -> str:
        pairs = [(k, v) for k, v in args.items(multi=True) if k not in ("$skip", "$top")]
        if top is not None:
            pairs.append(("$top", str(top)))
        pairs.append(("$skip", str(skip)))
        query = "&".join(f"{url_quote(k, safe='$')}={url_quote(v, safe=chr(39) + ',$()/:')}" for k, v in pairs)
        prefix = f"/b1s/{ctx.version}/" if self.config.next_link == "absolute-path" else ""
        return f"{prefix}{name}?{query}"

    def _entity_json(self, ctx: Ctx, entity_set: str, key: Any, *, select: list[str] | None,
                     single: bool) -> dict[str, Any]:
        entity = self.company.render(entity_set, key)
        if not single and "ItemIntrastatExtension" in entity:
            entity["ItemIntrastatExtension"] = {}   # as recorded: empty in collection reads, full by key
        if select is not None:
            entity = {name: entity.get(name) for name in select}
        out: dict[str, Any] = {}
        if single:
            suffix = "/$entity" if ctx.version == "v2" else "/@Element"
            context = f"{ctx.root}/$metadata#{entity_set}{suffix}"
            out["@odata.context" if ctx.version == "v2" else "odata.metadata"] = context
        if ctx.version == "v2":
            # $select reads carry a frozen sha1("1") ETag in the body (doc §2.6)
            out["@odata.etag"] = etag_for(1) if select is not None else self.company.etag(entity_set, key)
        for name, value in entity.items():
            out[name] = _wire(value, ctx.version)
        return out

    # --- $batch ---------------------------------------------------------------------------

    def batch(self, request: Request, version: str) -> Response:
        token = self._require_session(request, version)
        if isinstance(token, Response):
            return token
        root = self._root(request, version)
        try:
            items = parse_batch(request.get_data(), request.headers.get("Content-Type", ""))
        except B1Error as exc:
            return self._error(version, exc)
        continue_on_error = "odata.continue-on-error" in request.headers.get("Prefer", "")
        results: list[SubResponse | ChangeSetResponse] = []
        committed = False
        for item in items:
            if isinstance(item, ChangeSet):
                result, ok = self._changeset(request, version, root, item)
                committed = committed or ok
            else:
                reply = self._sub(request, version, root, item, {})
                result = self._sub_response(version, reply, item.content_id)
                ok = reply.status < 400
                committed = committed or reply.committed
            results.append(result)
            if not ok and not continue_on_error:
                break
        if committed:
            self.after_commit(request)
        content_type, body = build_response(results)
        return Response(body, status=202 if version == "v1" else 200, content_type=content_type)

    def _changeset(self, request: Request, version: str, root: str,
                   changeset: ChangeSet) -> tuple[SubResponse | ChangeSetResponse, bool]:
        ids = [sub.content_id for sub in changeset.requests]
        if version == "v2" and any(not i for i in ids):
            return self._sub_response(version, self._error_reply(version, B1Error(
                244, "Content ID should be specified in each change set request.")), None), False
        if len([i for i in ids if i]) != len({i for i in ids if i}):
            duplicate = B1Error(-1116, "Could not commit transaction: Error -1 detected during transaction")
            return self._sub_response(version, self._error_reply(version, duplicate), None), False
        locations: dict[str, str] = {}
        responses: list[SubResponse] = []

        class _Failed(Exception):
            def __init__(self, reply: Reply, content_id: str | None) -> None:
                self.reply, self.content_id = reply, content_id

        try:
            with self.company.unit_of_work():
                for sub in changeset.requests:
                    if sub.method == "GET":
                        raise _Failed(self._error_reply(version, B1Error(
                            -1000, "A change set may hold only POST, PATCH, PUT and DELETE requests")), sub.content_id)
                    reply = self._sub(request, version, root, sub, locations)
                    if reply.status >= 400:
                        raise _Failed(reply, sub.content_id)
                    if sub.content_id and "Location" in reply.headers:
                        locations[sub.content_id] = reply.headers["Location"]
                    responses.append(self._sub_response(version, reply, sub.content_id))
        except _Failed as failed:
            return self._sub_response(version, failed.reply, failed.content_id), False
        except B1Error as exc:   # the commit itself failed
            return self._sub_response(version, self._error_reply(version, exc), None), False
        return ChangeSetResponse(responses), True

    def _sub(self, request: Request, version: str, root: str, sub: SubRequest,
             locations: Mapping[str, str]) -> Reply:
        url = sub.url
        parts = urlsplit(url)
        path, query = (parts.path, parts.query) if parts.scheme else url.partition("?")[::2]
        sub_version = version
        for candidate in ("v1", "v2"):
            prefix = f"/b1s/{candidate}/"
            if path.startswith(prefix):
                path, sub_version = path[len(prefix):], candidate
                break
        path = path.lstrip("/")
        if path.startswith("$"):
            content_id, _, rest = path[1:].partition("/")
            if content_id not in locations:
                return self._error_reply(sub_version, B1Error(-1000, f"Content-ID ${content_id} is not defined"))
            target = locations[content_id].split(f"/b1s/{sub_version}/", 1)[-1]
            path = target + (f"/{rest}" if rest else "")
        sub_root = root.rsplit("/", 1)[0] + f"/{sub_version}"
        headers = _Headers(sub.headers)
        ctx = Ctx(sub_version, sub_root, headers, in_batch=True)
        method = sub.method
        if method == "POST" and headers.get("X-HTTP-Method-Override"):
            method = headers.get("X-HTTP-Method-Override", "").upper()
        return self._handle(ctx, method, path, MultiDict(parse_qsl(query, keep_blank_values=True)), sub.body)

    def _sub_response(self, version: str, reply: Reply, content_id: str | None) -> SubResponse:
        body = b"" if reply.body is None else (
            reply.body.encode() if isinstance(reply.body, str) else _dumps(reply.body).encode())
        headers = list(reply.headers.items())
        if reply.body is not None and not any(name.lower() == "content-type" for name, _ in headers):
            headers.append(("Content-Type", CONTENT_TYPE[version]))
        return SubResponse(reply.status, HTTP_STATUS_CODES.get(reply.status, "Unknown"), headers, body, content_id)

    # --- envelopes ------------------------------------------------------------------------

    def _error_body(self, version: str, exc: B1Error | QueryError) -> dict[str, Any]:
        code, message = exc.code, str(exc)
        if version == "v2":
            return {"error": {"code": str(code), "message": message}}
        if code == 301 and self.config.v1_session_error == "dump":
            return {"error": {"code": "301", "message": message}}
        return {"error": {"code": code, "message": {"lang": "en-us", "value": message}}}

    def _error_reply(self, version: str, exc: B1Error | QueryError) -> Reply:
        status = exc.status if isinstance(exc, B1Error) else 400
        return Reply(status, self._error_body(version, exc))

    def _error(self, version: str, exc: B1Error | QueryError) -> Response:
        return self._reply(version, self._error_reply(version, exc))

    def _reply(self, version: str, reply: Reply) -> Response:
        headers = dict(reply.headers)
        if reply.body is None:
            response = Response(status=reply.status, headers=headers)
            response.headers.pop("Content-Type", None)
            return response
        if isinstance(reply.body, str):
            return Response(reply.body, status=reply.status, headers=headers, content_type="text/plain;charset=utf-8")
        if version == "v2":
            headers.setdefault("OData-Version", "4.0")
        return Response(_dumps(reply.body), status=reply.status, headers=headers, content_type=CONTENT_TYPE[version])

    def _json(self, body: Any) -> Response:
        return Response(_dumps(body), status=200, content_type="application/json;charset=utf-8")

    @staticmethod
    def _root(request: Request, version: str) -> str:
        return f"{request.host_url.rstrip('/')}/b1s/{version}"


class _Headers:
    """Case-insensitive read-only headers of a batch sub-request."""

    def __init__(self, headers: Mapping[str, str]) -> None:
        self._headers = {k.lower(): v for k, v in headers.items()}

    def get(self, name: str, default: str | None = None) -> Any:
        return self._headers.get(name.lower(), default)


def _version_of(path: str) -> str:
    return "v1" if path.startswith("/b1s/v1") else "v2"


def _read_body(body: bytes) -> dict[str, Any]:
    try:
        data = json.loads(body or b"null", parse_float=Decimal)
    except (UnicodeDecodeError, ValueError):
        raise B1Error(-1000, "Invalid JSON in the request body") from None
    if not isinstance(data, dict):
        raise B1Error(-1000, "The request body must be a JSON object")
    return data


def _key_literal(key: Any) -> str:
    return quote(key) if isinstance(key, str) else str(key)


def _wire(value: Any, version: str) -> Any:
    """Internal value → JSON value of the dialect: Decimal → double, date → text."""
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, date):
        text = value.isoformat()
        return f"{text}T00:00:00Z" if version == "v2" else text
    if isinstance(value, dict):
        return {k: _wire(v, version) for k, v in value.items()}
    if isinstance(value, list):
        return [_wire(v, version) for v in value]
    return value


def _dumps(data: Any) -> str:
    return json.dumps(data, ensure_ascii=False, default=lambda v: _wire(v, "v2"))


def _guid() -> str:
    raw = secrets.token_hex(16)
    return f"{raw[:8]}-{raw[8:12]}-{raw[12:16]}-{raw[16:20]}-{raw[20:]}"


def _metadata(version: str) -> str:
    """A small CSDL naming the entity sets, keys and document actions (v3 FunctionImport, v4 Action)."""
    ns = "SAPB1"
    types, sets, actions = [], [], []
    for es in ENTITY_SETS.values():
        key_type = "Edm.Int32" if es.key_type is int else "Edm.String"
        types.append(f'<EntityType Name="{es.name}_{es.type_name}"><Key><PropertyRef Name="{es.key}"/></Key>'
                     f'<Property Name="{es.key}" Type="{key_type}" Nullable="false"/></EntityType>')
        sets.append(f'<EntitySet Name="{es.name}" EntityType="{ns}.{es.name}_{es.type_name}"/>')
        for action in sorted(es.actions):
            if version == "v2":
                actions.append(f'<Action Name="{es.name}_{action}" IsBound="true"><Parameter Name="bindingParameter" '
                               f'Type="{ns}.{es.name}_{es.type_name}"/></Action>')
            else:
                actions.append(f'<FunctionImport Name="{action}" IsBindable="true" EntitySet="{es.name}">'
                               f'<Parameter Name="{es.name}" Type="{ns}.{es.name}_{es.type_name}"/></FunctionImport>')
    if version == "v2":
        return ('<?xml version="1.0" encoding="utf-8"?><edmx:Edmx Version="4.0" '
                'xmlns:edmx="http://docs.oasis-open.org/odata/ns/edmx"><edmx:DataServices>'
                f'<Schema Namespace="{ns}" xmlns="http://docs.oasis-open.org/odata/ns/edm">{"".join(types)}'
                f'{"".join(actions)}<EntityContainer Name="ServiceLayer">{"".join(sets)}</EntityContainer>'
                "</Schema></edmx:DataServices></edmx:Edmx>")
    return ('<?xml version="1.0" encoding="utf-8"?><edmx:Edmx Version="1.0" '
            'xmlns:edmx="http://schemas.microsoft.com/ado/2007/06/edmx"><edmx:DataServices '
            'm:DataServiceVersion="3.0" xmlns:m="http://schemas.microsoft.com/ado/2007/08/dataservices/metadata">'
            f'<Schema Namespace="{ns}" xmlns="http://schemas.microsoft.com/ado/2009/11/edm">{"".join(types)}'
            f'<EntityContainer Name="ServiceLayer" m:IsDefaultEntityContainer="true">{"".join(sets)}'
            f'{"".join(actions)}</EntityContainer></Schema></edmx:DataServices></edmx:Edmx>')
