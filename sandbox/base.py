"""The base every vendor simulator is built on.

A simulator is a WSGI app owning a stock :class:`~sandbox.ledger.Ledger`, a
:class:`~sandbox.faults.Faults` plan, a :class:`~sandbox.calls.CallLog` and a
:class:`~sandbox.sessions.SessionStore`, with the ``/_admin/`` routes mounted (see
:mod:`sandbox.admin`). A vendor simulator subclasses :class:`Simulator`::

    class KingdeeSimulator(Simulator):
        name = "kingdee"

        def routes(self):
            return [Rule("/k3cloud/<path:service>.common.kdsvc", endpoint="service", methods=["POST"])]

        def describe(self, request, endpoint, values):        # what the fault rules see
            return RequestInfo(request.method, request.path, operation=values["service"],
                               session=request.headers.get("kdservice-sessionid"))

        def fault_response(self, request, decision):           # injected faults, vendor-shaped
            ...

        def service(self, request, service):                   # endpoint = method name
            ...
            self.ledger.post(bill_no, entries)                 # raises NegativeStock: all or nothing
            self.after_commit(request)                         # may lose the answer now
            return json_response(...)

Every call outside ``/_admin/`` goes: route → ``describe`` → ``faults.before`` (latency, then a
refusal answered by ``fault_response``) → the endpoint → the call log. Admin calls are neither
fault-injected nor logged.
"""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any, ClassVar

from werkzeug.exceptions import HTTPException
from werkzeug.routing import Map, Rule
from werkzeug.wrappers import Request, Response

from sandbox.admin import AdminApi
from sandbox.calls import CallLog
from sandbox.faults import Decision, DecisionKind, Faults, RequestInfo
from sandbox.jsonio import json_response
from sandbox.ledger import Ledger, StockKey
from sandbox.server import DropConnection, SimulatorServer
from sandbox.sessions import SessionStore
from sandbox.world import World

_log = logging.getLogger("sandbox")

INFO_KEY = "sandbox.request_info"  # environ key: the RequestInfo of the call being handled


class Simulator:
    """Subclass hooks: :meth:`routes`, :meth:`describe`, :meth:`fault_response`,
    :meth:`error_response`, :meth:`seed`, :meth:`reset`, :meth:`expire_sessions`."""

    name: ClassVar[str] = "simulator"

    def __init__(
        self, *, allow_negative: bool = False, session_idle_timeout: float | None = None,
        clock: Callable[[], float] = time.time, sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.clock = clock
        self.lock = threading.RLock()  # for the subclass's own state (documents, master data)
        self.ledger = Ledger(allow_negative=allow_negative, clock=clock)
        self.faults = Faults(clock=clock, sleep=sleep)
        self.calls = CallLog()
        self.sessions = SessionStore(idle_timeout=session_idle_timeout, clock=clock)
        self.url_map = Map(list(self.routes()))
        self._admin = AdminApi(self)

    # --- hooks for vendor simulators ------------------------------------------------------

    def routes(self) -> Iterable[Rule]:
        """werkzeug ``Rule``s; each ``endpoint`` names a method ``(request, **values) -> Response``.

        Called once, from ``Simulator.__init__``: build state the routes need before ``super().__init__()``.
        """
        return ()

    def describe(self, request: Request, endpoint: str, values: Mapping[str, Any]) -> RequestInfo:
        """What fault rules match on; override to name the vendor operation, session and client."""
        return RequestInfo(request.method, request.path, operation=endpoint)

    def fault_response(self, request: Request, decision: Decision) -> Response:
        """Answer an injected refusal. Override to wrap it in the vendor's envelope; keep
        ``decision.headers`` (``Retry-After``) and, when set, ``decision.body``."""
        body = decision.body if decision.body is not None else {"error": decision.kind.value, "rule": decision.rule}
        if isinstance(body, str):
            return Response(body, status=decision.status, headers=dict(decision.headers),
                            content_type="text/plain; charset=utf-8")
        return json_response(body, status=decision.status, headers=dict(decision.headers))

    def error_response(self, request: Request, exc: Exception) -> Response:
        """Answer an unrouted path (``HTTPException``) or an endpoint's unexpected exception."""
        if isinstance(exc, HTTPException):
            return exc.get_response(request.environ)
        _log.exception("%s: %s %s failed", self.name, request.method, request.path)
        return json_response({"error": "internal", "message": str(exc)}, status=500)

    def seed(self, data: Mapping[str, Any]) -> None:
        """Load seed data (``POST /_admin/seed``). The base understands::

            {"world": {...a sandbox.world.World as JSON...},
             "balances": [{"sku": "A", "warehouse": "WH1", "bin": null, "lot": null, "qty": "5"}],
             "allow_negative": false, "warehouse_allow_negative": {"WH2": true}}

        Subclasses take their own keys out and pass the rest on to ``super().seed(rest)``;
        anything left unknown is an error.
        """
        known = {"world", "balances", "allow_negative", "warehouse_allow_negative"}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"{unknown[0]}: unknown seed key (known here: {', '.join(sorted(known))})")
        if "world" in data:
            self.seed_world(World.from_dict(data["world"]))
        if "allow_negative" in data:
            if not isinstance(data["allow_negative"], bool):
                raise ValueError(f"allow_negative: must be true or false, got {data['allow_negative']!r}")
            self.ledger.allow_negative = data["allow_negative"]
        for warehouse, allowed in dict(data.get("warehouse_allow_negative", {})).items():
            if allowed is not None and not isinstance(allowed, bool):
                raise ValueError(f"warehouse_allow_negative.{warehouse}: must be true, false or null")
            self.ledger.set_warehouse_policy(warehouse, allow_negative=allowed)
        balances = {}
        for index, row in enumerate(data.get("balances", [])):
            try:
                key = StockKey(row["sku"], row["warehouse"], row.get("bin"), row.get("lot"))
                balances[key] = row["qty"]
            except (KeyError, TypeError, AttributeError) as exc:
                raise ValueError(f"balances[{index}]: needs sku, warehouse and qty ({exc!r})") from None
        self.ledger.seed_balances(balances)

    def seed_world(self, world: World) -> None:
        """Create the world's items, warehouses (with bins) and partners as this vendor's native
        records, and post its balances as opening stock. Each vendor simulator implements it."""
        raise NotImplementedError(f"{self.name} cannot seed a world yet")

    def touch(self, entity: str, key: str, at: float | None = None) -> None:
        """Modify a master record (``entity`` items, warehouses, partners; ``key`` its code) so that
        its vendor modification stamp becomes ``at`` (epoch seconds; now when None), as an edit in
        the vendor's own UI would. Incremental-read tests rely on it."""
        raise NotImplementedError(f"{self.name} cannot touch records yet")

    def documents_for(self, reference: str) -> list[str]:
        """Numbers of the live (not deleted or cancelled) documents that carry ``reference`` in the
        field the connector writes its idempotency key to, in creation order."""
        raise NotImplementedError(f"{self.name} cannot list documents by reference yet")

    def reset(self) -> None:
        """Forget everything (``POST /_admin/reset``); subclasses clear their state, then ``super()``."""
        self.ledger.reset()
        self.faults.clear()
        self.calls.clear()
        self.sessions.expire_all()

    def expire_sessions(self) -> None:
        """Every session dies now (``POST /_admin/expire-sessions``)."""
        self.sessions.expire_all()

    # --- for endpoints --------------------------------------------------------------------

    def request_info(self, request: Request) -> RequestInfo:
        return request.environ[INFO_KEY]

    def after_commit(self, request: Request) -> None:
        """Call right after a write is committed: a ``drop_after_commit`` fault loses the answer here."""
        if self.faults.after_commit(self.request_info(request)):
            raise DropConnection()

    # --- serving --------------------------------------------------------------------------

    def serve(self, host: str = "127.0.0.1", port: int = 0) -> SimulatorServer:
        """A server for this simulator, not yet started: ``with sim.serve() as srv: ...``."""
        return SimulatorServer(self, host=host, port=port)

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        request = Request(environ)
        if request.path == "/_admin" or request.path.startswith("/_admin/"):
            response = self._admin.dispatch(request)
        else:
            response = self._dispatch(request)
        return response(environ, start_response)

    def _dispatch(self, request: Request) -> Response:
        started = self.clock()
        info = RequestInfo(request.method, request.path)
        decision: Decision | None = None
        status: int | None = 500
        fault: str | None = None
        try:
            try:
                endpoint, values = self.url_map.bind_to_environ(request.environ).match()
            except HTTPException as exc:
                response = self.error_response(request, exc)
            else:
                info = self.describe(request, endpoint, values)
                request.environ[INFO_KEY] = info
                decision = self.faults.before(info, now=started)
                if decision is None:
                    response = self._call_endpoint(request, endpoint, values)
                else:
                    if decision.kind is DecisionKind.SESSION_EXPIRED and info.session is not None:
                        self.sessions.expire(info.session)
                    fault = decision.kind.value
                    response = self.fault_response(request, decision)
            status = response.status_code
            return response
        except DropConnection:
            status, fault = None, "dropped"
            raise
        finally:
            self.calls.record(
                method=info.method, path=info.path, operation=info.operation, status=status,
                started=started, finished=self.clock(), fault=fault,
                retry_after=decision.retry_after if decision else None, client=info.client,
            )

    def _call_endpoint(self, request: Request, endpoint: str, values: Mapping[str, Any]) -> Response:
        try:
            return getattr(self, endpoint)(request, **values)
        except Exception as exc:
            return self.error_response(request, exc)
