"""``/_admin/`` routes every simulator mounts: tests seed it, break it and read its truth.

| route | does |
|---|---|
| ``POST /_admin/seed`` | JSON seed data → ``sim.seed(data)`` |
| ``GET /_admin/faults`` | the fault plan in force and how often each rule fired |
| ``POST /_admin/faults`` | replace the fault plan (a :class:`~sandbox.faults.FaultPlan` as JSON; ``{}`` clears it) |
| ``POST /_admin/expire-sessions`` | every session dies now |
| ``GET /_admin/ledger`` | true balances, quantities as decimal strings; ``?history=1`` adds the postings |
| ``GET /_admin/calls`` | the call log; filters ``method``, ``path``, ``operation`` (globs), ``status`` |
| ``POST /_admin/touch`` | ``{"entity": "items", "key": "SKU-1", "at": <epoch seconds or null>}`` → ``sim.touch(...)`` |
| ``GET /_admin/documents?reference=R`` | numbers of the documents carrying our reference ``R`` |
| ``POST /_admin/reset`` | forget everything: ledger, faults, calls, sessions, the simulator's own state |

Errors answer ``{"error": "<what is wrong>"}`` with 400 (bad input) or 404/405.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

from werkzeug.exceptions import BadRequest, HTTPException
from werkzeug.routing import Map, Rule
from werkzeug.wrappers import Request, Response

from sandbox.jsonio import decimal_text, json_response, read_json
from sandbox.ledger import Entry, LedgerError, Posting


def _entry_json(entry: Entry) -> dict[str, Any]:
    return {"sku": entry.sku, "warehouse": entry.warehouse, "bin": entry.bin, "lot": entry.lot,
            "qty_delta": decimal_text(entry.qty_delta)}


def _posting_json(posting: Posting) -> dict[str, Any]:
    return {"seq": posting.seq, "document_ref": posting.document_ref, "kind": posting.kind, "at": posting.at,
            "entries": [_entry_json(e) for e in posting.entries]}


class AdminApi:
    """The admin routes of one simulator (``sim`` is a :class:`sandbox.base.Simulator`)."""

    def __init__(self, sim: Any) -> None:
        self.sim = sim
        self.url_map = Map([
            Rule("/_admin/seed", endpoint="seed", methods=["POST"]),
            Rule("/_admin/faults", endpoint="get_faults", methods=["GET"]),
            Rule("/_admin/faults", endpoint="set_faults", methods=["POST"]),
            Rule("/_admin/expire-sessions", endpoint="expire_sessions", methods=["POST"]),
            Rule("/_admin/ledger", endpoint="ledger", methods=["GET"]),
            Rule("/_admin/calls", endpoint="calls", methods=["GET"]),
            Rule("/_admin/touch", endpoint="touch", methods=["POST"]),
            Rule("/_admin/documents", endpoint="documents", methods=["GET"]),
            Rule("/_admin/reset", endpoint="reset", methods=["POST"]),
        ])

    def dispatch(self, request: Request) -> Response:
        try:
            endpoint, values = self.url_map.bind_to_environ(request.environ).match()
            handler: Callable[..., Response] = getattr(self, endpoint)
            return handler(request, **values)
        except HTTPException as exc:
            return json_response({"error": exc.description}, status=exc.code or 500)
        except NotImplementedError as exc:
            return json_response({"error": str(exc)}, status=501)
        except (ValueError, TypeError, LedgerError) as exc:
            return json_response({"error": str(exc)}, status=400)

    def seed(self, request: Request) -> Response:
        data = read_json(request)
        if not isinstance(data, dict):
            raise BadRequest("seed data must be a JSON object")
        self.sim.seed(data)
        return json_response({"seeded": True})

    def get_faults(self, request: Request) -> Response:
        return json_response({"plan": self.sim.faults.plan.to_dict(), "fired": self.sim.faults.fired()})

    def set_faults(self, request: Request) -> Response:
        plan = self.sim.faults.set(read_json(request, decimals=False))
        return json_response({"plan": plan.to_dict()})

    def expire_sessions(self, request: Request) -> Response:
        self.sim.expire_sessions()
        return json_response({"expired": True})

    def ledger(self, request: Request) -> Response:
        ledger = self.sim.ledger
        body: dict[str, Any] = {
            "balances": [
                {"sku": key.sku, "warehouse": key.warehouse, "bin": key.bin, "lot": key.lot, "qty": decimal_text(qty)}
                for key, qty in ledger.balances().items()
            ],
        }
        if request.args.get("history", "").lower() in ("1", "true", "yes"):
            body["history"] = [_posting_json(p) for p in ledger.history()]
        return json_response(body)

    def calls(self, request: Request) -> Response:
        filters: dict[str, Any] = {k: request.args[k] for k in ("method", "path", "operation") if k in request.args}
        if "status" in request.args:
            status = request.args["status"]
            if not status.isdigit():
                raise BadRequest(f"status must be a number, got {status!r}")
            filters["status"] = int(status)
        return json_response({"calls": [c.to_dict() for c in self.sim.calls.list(**filters)]})

    def touch(self, request: Request) -> Response:
        data = read_json(request, decimals=False)
        if not isinstance(data, dict) or not {"entity", "key"} <= set(data):
            raise BadRequest("touch needs a JSON object with entity and key")
        self.sim.touch(str(data["entity"]), str(data["key"]), data.get("at"))
        return json_response({"touched": True})

    def documents(self, request: Request) -> Response:
        reference = request.args.get("reference")
        if not reference:
            raise BadRequest("documents needs ?reference=")
        return json_response({"documents": self.sim.documents_for(reference)})

    def reset(self, request: Request) -> Response:
        self.sim.reset()
        return json_response({"reset": True})
