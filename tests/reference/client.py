"""Wire protocol of the reference ERP: login, session header, paging, envelopes → typed errors.

Knows nothing of canonical models. Translation happens once, here:

=======================================  =========================================
answer                                   error
=======================================  =========================================
401 ``SESSION`` (expired/unknown)        one transparent re-login, then the call again
401 ``AUTH`` (login refused)             AuthError
429, 5xx, timeouts, lost answers         connectors.http (Transient/RateLimited/Ambiguous)
200 ``ok: false`` ``E_*``                Rejected(vendor_code)
anything else not ``ok: true``           ContractViolation
=======================================  =========================================
"""
from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping
from typing import Any

from connectors.errors import AuthError, ContractViolation, Rejected
from connectors.http import HttpClient, HttpResponse, excerpt, raise_for_generic_status


class SessionExpired(Exception):
    """Internal: the server no longer knows our session."""


class ReferenceClient:
    def __init__(self, http: HttpClient, *, user: str, password: str) -> None:
        self.http = http
        self._user, self._password = user, password
        self._lock = threading.Lock()
        self._session: str | None = None

    # -- session -------------------------------------------------------------------------

    def login(self) -> None:
        resp = self.http.request("POST", "/api/login", idempotent=True,
                                 json={"user": self._user, "password": self._password})
        body = self._body(resp)
        session = body.get("session")
        if not isinstance(session, str) or not session:
            raise ContractViolation(f"{resp.where}: login answered without a session")
        with self._lock:
            self._session = session

    def _token(self) -> str:
        with self._lock:
            token = self._session
        if token is None:
            self.login()
            with self._lock:
                token = self._session
        assert token is not None
        return token

    # -- calls ---------------------------------------------------------------------------

    def call(self, method: str, path: str, *, idempotent: bool, params: Mapping[str, Any] | None = None,
             json: Any = None, headers: Mapping[str, str] | None = None) -> dict[str, Any]:
        """One authenticated call. A refused session is renewed once; a 401 is refused before
        the server does anything, so sending the call again is safe even for a write."""
        return self.exchange(method, path, idempotent=idempotent, params=params, json=json, headers=headers)[0]

    def exchange(self, method: str, path: str, *, idempotent: bool, params: Mapping[str, Any] | None = None,
                 json: Any = None, headers: Mapping[str, str] | None = None) -> tuple[dict[str, Any], HttpResponse]:
        """:meth:`call`, with the response too (for its headers, e.g. ``Idempotent-Replayed``)."""
        for attempt in (1, 2):
            resp = self.send(method, path, idempotent=idempotent, params=params, json=json,
                             headers={**(headers or {}), "X-Session": self._token()})
            try:
                return self._body(resp), resp
            except SessionExpired:
                with self._lock:
                    self._session = None
                if attempt == 2:
                    raise AuthError(f"{resp.where}: session refused right after a fresh login") from None
        raise AssertionError("unreachable")

    def send(self, method: str, path: str, **kwargs: Any) -> HttpResponse:
        """The HTTP exchange; generic statuses are already errors (see connectors.http)."""
        return self.http.request(method, path, **kwargs)

    def pages(self, path: str, *, params: Mapping[str, Any], offset: str | None,
              limit: int) -> Iterator[tuple[list[dict[str, Any]], str | None]]:
        """(rows, next offset token) per page, starting at ``offset``."""
        while True:
            body = self.call("GET", path, idempotent=True, params={**params, "limit": limit, "offset": offset or 0})
            rows, nxt = body.get("rows"), body.get("next")
            if not isinstance(rows, list) or not (nxt is None or isinstance(nxt, str)):
                raise ContractViolation(f"GET {path}: a page needs rows (list) and next (string or null)")
            yield rows, nxt
            if nxt is None:
                return
            offset = nxt

    # -- envelopes -----------------------------------------------------------------------

    def _body(self, resp: HttpResponse) -> dict[str, Any]:
        body = resp.json() if resp.content else None
        code = body.get("code") if isinstance(body, dict) else None
        if resp.status == 401:
            if code == "SESSION":
                raise SessionExpired()
            raise AuthError(f"{resp.where}: {code or 401}: {excerpt(resp.text)}")
        raise_for_generic_status(resp)
        if not isinstance(body, dict):
            raise ContractViolation(f"{resp.where}: {resp.status} answered {excerpt(resp.text)!r}, not an object")
        if body.get("ok") is True and resp.status == 200:
            return body
        message = str(body.get("message") or "")
        if isinstance(code, str) and code.startswith("E_"):
            raise Rejected(message or code, vendor_code=code)
        raise ContractViolation(f"{resp.where}: {resp.status} {code or 'no code'}: {excerpt(message)}")
