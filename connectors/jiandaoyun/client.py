"""Wire protocol of the Jiandaoyun v5 Open API (``vendors/jiandaoyun.md`` §1-7). Knows nothing of
canonical models.

Every call is ``POST {base}/v5/<route>`` with a JSON body and ``Authorization: Bearer <key>``;
answers are parsed with ``parse_float=Decimal`` (numbers arrive exact, never via float) and
``Decimal`` values are sent as exact JSON numbers. Errors are translated once, here:

=========================================  =======================================================
answer                                     error
=========================================  =======================================================
400 ``{"code": 8303}`` (rate limit)        ``RateLimited``, ``retry_after`` = Retry-After or ``rate_limited_wait`` (5 s)
400 ``{"code": 8302}`` (bad key), 401/403  ``AuthError``
400 ``{"code": 4001}`` (no such data)      ``NotFound`` (a ``Rejected``); ``get`` answers None
400 any other ``{"code"}``                 ``Rejected`` with the vendor code
429, 5xx, timeouts, resets                 the shared classification of :mod:`connectors.http`
                                           (writes: lost answers are ``Ambiguous``)
other 4xx, non-JSON answers                ``ContractViolation``
=========================================  =======================================================

A client-side throttle keeps each endpoint class (read 30/s, single write 20/s, batch write
10/s) and the company's 50/s under the vendor's limits, as sliding one-second windows (the
official demos do the same with 5/s).
"""
from __future__ import annotations

import json
import re
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from decimal import Decimal
from typing import Any

from connectors.errors import AuthError, ContractViolation, RateLimited, Rejected
from connectors.http import (
    HttpClient,
    HttpResponse,
    excerpt,
    parse_retry_after,
    raise_for_generic_status,
)
from connectors.redaction import register_secret

RATE_LIMITED = 8303
UNAUTHORIZED = 8302
NOT_FOUND = 4001
MAX_PAGE = 100
MAX_BATCH = 100
MAX_IN = 200

READ, WRITE, BATCH = "read", "write", "batch"


class NotFound(Rejected):
    """Error 4001: the data id does not exist (any more)."""


class Throttle:
    """Sliding one-second windows per endpoint class plus one for the company; ``acquire`` waits."""

    def __init__(self, limits: Mapping[str, float], *, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.limits = dict(limits)
        self._clock, self._sleep = clock, sleep
        self._lock = threading.Lock()
        self._windows: dict[str, deque[float]] = {name: deque() for name in self.limits}

    def acquire(self, kind: str) -> None:
        names = [kind, "company"] if kind != "company" else ["company"]
        while True:
            with self._lock:
                now = self._clock()
                wait = 0.0
                for name in names:
                    window, limit = self._windows[name], self.limits[name]
                    while window and window[0] <= now - 1.0:
                        window.popleft()
                    if len(window) >= limit:
                        wait = max(wait, window[0] + 1.0 - now)
                if wait <= 0:
                    for name in names:
                        self._windows[name].append(now)
                    return
            self._sleep(wait)


_NUMBER_MARK = re.compile(r'"\\u0000(-?[0-9.]+)\\u0000"')


def encode(payload: Any) -> bytes:
    """Compact UTF-8 JSON; ``Decimal`` values become exact JSON numbers (never via float)."""
    def mark(value: Any) -> Any:
        if isinstance(value, Decimal):
            if not value.is_finite():
                raise ValueError(f"{value} cannot be sent as a JSON number")
            return f"\0{format(value, 'f')}\0"
        if isinstance(value, Mapping):
            return {k: mark(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [mark(v) for v in value]
        return value
    text = json.dumps(mark(payload), ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    return _NUMBER_MARK.sub(r"\1", text).encode("utf-8")


class JdyClient:
    """One API key's connection to one app."""

    def __init__(self, base_url: str, api_key: str, *, app_id: str, connect_timeout: float, read_timeout: float,
                 verify: bool | str = True, name: str = "jiandaoyun", limits: Mapping[str, float] | None = None,
                 rate_limited_wait: float = 5.0, sleep: Callable[[float], None] = time.sleep) -> None:
        register_secret(api_key)
        self.app_id = app_id
        self.name = name
        self.rate_limited_wait = rate_limited_wait
        self.http = HttpClient(base_url, connect_timeout=connect_timeout, read_timeout=read_timeout, verify=verify,
                               name=name, headers={"Authorization": f"Bearer {api_key}"})
        self.throttle = Throttle(limits or {READ: 25, WRITE: 15, BATCH: 8, "company": 45}, sleep=sleep)

    def close(self) -> None:
        self.http.close()

    # -- one call -------------------------------------------------------------------------------

    def call(self, route: str, body: Mapping[str, Any], *, kind: str, idempotent: bool,
             record: str | None = None) -> dict[str, Any]:
        """POST ``v5/<route>`` and return the answer object, or raise the translated error."""
        self.throttle.acquire(kind)
        resp = self.http.request("POST", f"v5/{route}", idempotent=idempotent, data=encode(body),
                                 headers={"Content-Type": "application/json;charset=utf-8"})
        if resp.status == 200:
            answer = self._json(resp)
            if not isinstance(answer, dict):
                raise ContractViolation(f"{resp.where}: the answer is not a JSON object: {excerpt(resp.text)!r}")
            return answer
        raise_for_generic_status(resp)
        raise self._error(resp, record)

    def _json(self, resp: HttpResponse) -> Any:
        try:
            return json.loads(resp.text, parse_float=Decimal)
        except ValueError:
            return resp.json()  # raises the shared ContractViolation with an excerpt

    def _error(self, resp: HttpResponse, record: str | None) -> Exception:
        try:
            answer = json.loads(resp.text, parse_float=Decimal)
        except ValueError:
            answer = None
        code = answer.get("code") if isinstance(answer, dict) else None
        if resp.status != 400 or code is None:
            return ContractViolation(f"{resp.where}: unexpected {resp.status} {resp.reason}; body starts "
                                     f"{excerpt(resp.text)!r}", details={"status": resp.status})
        message = str(answer.get("msg") or "")
        vendor_code = str(code)
        details = {"status": resp.status, "code": vendor_code}
        if code == RATE_LIMITED:
            advertised = parse_retry_after(resp.headers.get("Retry-After"))
            wait = max(self.rate_limited_wait, advertised or 0.0)
            return RateLimited(f"{resp.where}: rate limited ({message}), retry after {wait:g} s", retry_after=wait,
                               vendor_code=vendor_code, details={**details, "retry_after": wait})
        if code == UNAUTHORIZED:
            return AuthError(f"{resp.where}: the API key was refused ({message})", vendor_code=vendor_code,
                             details=details)
        if code == NOT_FOUND:
            return NotFound(f"{resp.where}: {message or 'data does not exist'}", vendor_code=vendor_code,
                            record=record, details=details)
        return Rejected(f"{resp.where}: {message or 'refused'}", vendor_code=vendor_code, record=record,
                        details=details)

    def _form(self, entry_id: str, **more: Any) -> dict[str, Any]:
        return {"app_id": self.app_id, "entry_id": entry_id, **{k: v for k, v in more.items() if v is not None}}

    # -- schema -----------------------------------------------------------------------------------

    def apps(self, *, limit: int = MAX_PAGE) -> list[dict[str, Any]]:
        return list(self.call("app/list", {"skip": 0, "limit": limit}, kind=READ, idempotent=True).get("apps") or [])

    def widgets(self, entry_id: str) -> dict[str, Any]:
        answer = self.call("app/entry/widget/list", self._form(entry_id), kind=READ, idempotent=True)
        if not isinstance(answer.get("widgets"), list):
            raise ContractViolation(f"{self.name}: widget/list of {entry_id} answered without widgets")
        return answer

    # -- records ------------------------------------------------------------------------------------

    def get(self, entry_id: str, data_id: str) -> dict[str, Any] | None:
        try:
            answer = self.call("app/entry/data/get", self._form(entry_id, data_id=data_id), kind=READ,
                               idempotent=True)
        except NotFound:
            return None
        return _record(answer, "data/get")

    def list_page(self, entry_id: str, *, after: str | None = None, limit: int = MAX_PAGE,
                  fields: Sequence[str] | None = None, filter: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
        """One ``data/list`` page: records with ``_id`` above ``after``, ascending, at most ``limit``."""
        body = self._form(entry_id, data_id=after or None, limit=max(1, min(limit, MAX_PAGE)),
                          fields=list(fields) if fields else None, filter=filter)
        rows = self.call("app/entry/data/list", body, kind=READ, idempotent=True).get("data")
        if not isinstance(rows, list) or not all(isinstance(r, dict) and isinstance(r.get("_id"), str) for r in rows):
            raise ContractViolation(f"{self.name}: data/list of {entry_id} answered without a list of records")
        return rows

    def iterate(self, entry_id: str, *, filter: Mapping[str, Any] | None = None,
                fields: Sequence[str] | None = None) -> Iterator[dict[str, Any]]:
        """Every matching record, page by page until a short page."""
        after = None
        while True:
            rows = self.list_page(entry_id, after=after, filter=filter, fields=fields)
            yield from rows
            if len(rows) < MAX_PAGE:
                return
            after = rows[-1]["_id"]

    def create(self, entry_id: str, data: Mapping[str, Any], *, start_workflow: bool = False,
               start_trigger: bool = False, record: str | None = None) -> dict[str, Any]:
        body = self._form(entry_id, data=data, is_start_workflow=start_workflow or None,
                          is_start_trigger=start_trigger or None)
        return _record(self.call("app/entry/data/create", body, kind=WRITE, idempotent=False, record=record),
                       "data/create")

    def update(self, entry_id: str, data_id: str, data: Mapping[str, Any], *, record: str | None = None) -> dict[str, Any]:
        body = self._form(entry_id, data_id=data_id, data=data)
        # an update sends the same values again: harmless to repeat
        return _record(self.call("app/entry/data/update", body, kind=WRITE, idempotent=True, record=record),
                       "data/update")

    def delete(self, entry_id: str, data_id: str) -> None:
        self.call("app/entry/data/delete", self._form(entry_id, data_id=data_id), kind=WRITE, idempotent=True)

    def batch_create(self, entry_id: str, data_list: Sequence[Mapping[str, Any]], *, transaction_id: str,
                     start_workflow: bool = False) -> list[str]:
        """Create up to 100 records, all or none. The vendor answers a repeated ``transaction_id`` with
        the first result and creates nothing, so a resend after a lost answer is safe."""
        if not 1 <= len(data_list) <= MAX_BATCH:
            raise ValueError(f"batch_create takes 1 to {MAX_BATCH} records, got {len(data_list)}")
        body = self._form(entry_id, data_list=list(data_list), transaction_id=transaction_id,
                          is_start_workflow=start_workflow or None)
        answer = self.call("app/entry/data/batch_create", body, kind=BATCH, idempotent=True)
        ids = answer.get("success_ids")
        if not isinstance(ids, list) or len(ids) != len(data_list) or not all(isinstance(i, str) for i in ids):
            raise ContractViolation(f"{self.name}: batch_create answered {excerpt(json.dumps(answer, default=str))!r}, "
                                    f"expected {len(data_list)} success_ids")
        return ids

    def batch_delete(self, entry_id: str, data_ids: Sequence[str]) -> int:
        answer = self.call("app/entry/data/batch_delete", self._form(entry_id, data_ids=list(data_ids)), kind=BATCH,
                           idempotent=True)
        return int(answer.get("success_count") or 0)


def _record(answer: Mapping[str, Any], what: str) -> dict[str, Any]:
    data = answer.get("data")
    if not isinstance(data, dict) or not isinstance(data.get("_id"), str):
        raise ContractViolation(f"{what} answered without a record")
    return data
