"""A toy ERP built on the harness, as a vendor simulator would be (test-only, not shipped).

``POST /api/login`` → ``{"session": token}``; every other call needs ``X-Session: token``.
``POST /api/stock/<ref>`` with ``{"lines": [{"sku", "warehouse", "qty", "bin"?, "lot"?}]}`` posts
to the ledger; ``DELETE /api/stock/<ref>`` reverses it; ``GET /api/ping`` answers ``{"ok": true}``.
Errors use the toy envelope ``{"ok": false, "code": ..., "message": ...}``.
"""
from __future__ import annotations

from typing import Any

from werkzeug.exceptions import HTTPException
from werkzeug.routing import Rule
from werkzeug.wrappers import Request, Response

from sandbox.base import Simulator
from sandbox.faults import Decision, RequestInfo
from sandbox.jsonio import decimal_text, json_response, read_json
from sandbox.ledger import Entry, LedgerError, NegativeStock


class _Refused(Exception):
    def __init__(self, status: int, code: str, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status, self.code, self.extra = status, code, extra


def _envelope(status: int, code: str, message: str, headers: Any = None, **extra: Any) -> Response:
    return json_response({"ok": False, "code": code, "message": message, **extra}, status=status,
                         headers=dict(headers or {}))


class ToyErp(Simulator):
    name = "toy"

    def routes(self) -> list[Rule]:
        return [
            Rule("/api/login", endpoint="login", methods=["POST"]),
            Rule("/api/ping", endpoint="ping", methods=["GET"]),
            Rule("/api/stock/<ref>", endpoint="post_stock", methods=["POST"]),
            Rule("/api/stock/<ref>", endpoint="cancel_stock", methods=["DELETE"]),
        ]

    def describe(self, request: Request, endpoint: str, values: Any) -> RequestInfo:
        return RequestInfo(request.method, request.path, operation=endpoint,
                           session=request.headers.get("X-Session"), client=request.headers.get("X-Client"))

    def fault_response(self, request: Request, decision: Decision) -> Response:
        if decision.body is not None:
            return super().fault_response(request, decision)
        return _envelope(decision.status, decision.kind.value, f"injected by {decision.rule}", decision.headers)

    def error_response(self, request: Request, exc: Exception) -> Response:
        if isinstance(exc, _Refused):
            return _envelope(exc.status, exc.code, str(exc), **exc.extra)
        if isinstance(exc, HTTPException):
            return _envelope(exc.code or 500, "http", exc.description or "")
        return super().error_response(request, exc)

    def _require_session(self, request: Request) -> None:
        if self.sessions.get(request.headers.get("X-Session")) is None:
            raise _Refused(401, "auth", "session expired or unknown; log in again")

    def login(self, request: Request) -> Response:
        return json_response({"ok": True, "session": self.sessions.create({"user": "toy"}).token})

    def ping(self, request: Request) -> Response:
        self._require_session(request)
        return json_response({"ok": True})

    def post_stock(self, request: Request, ref: str) -> Response:
        self._require_session(request)
        lines = read_json(request)["lines"]
        entries = [Entry(l["sku"], l["warehouse"], l["qty"], bin=l.get("bin"), lot=l.get("lot")) for l in lines]
        try:
            self.ledger.post(ref, entries)
        except NegativeStock as exc:
            raise _Refused(400, "negative_stock", str(exc), lines=[
                {"sku": s.sku, "warehouse": s.warehouse, "on_hand": decimal_text(s.on_hand),
                 "requested": decimal_text(s.requested)} for s in exc.shortfalls
            ]) from None
        except LedgerError as exc:
            raise _Refused(409, "ledger", str(exc)) from None
        self.after_commit(request)
        return json_response({"ok": True, "ref": ref})

    def cancel_stock(self, request: Request, ref: str) -> Response:
        self._require_session(request)
        try:
            self.ledger.reverse(ref)
        except LedgerError as exc:
            raise _Refused(409, "ledger", str(exc)) from None
        self.after_commit(request)
        return json_response({"ok": True, "ref": ref})
