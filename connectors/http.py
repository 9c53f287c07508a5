"""The HTTP helper every vendor client is built on.

One :class:`HttpClient` per connection owns one keep-alive ``requests.Session``. It does three
things and nothing else:

* sends with a timeout, always: ``timeout=(connect, read)`` on every request, TLS ``verify`` on
  every request (so ``REQUESTS_CA_BUNDLE`` cannot silently replace a configured CA bundle,
  psf/requests #3829), ``verify=False`` refused;
* classifies generic HTTP failures once, into :mod:`connectors.errors` (table below); vendor
  envelopes (Kingdee ``IsSuccess``, SAP ``error.code``, U8 ``errcode``) are translated by each
  vendor client on top;
* keeps secrets out of logs and error text, and counts calls for the trial reports.

It never retries: the retry policy lives in the engine. The adapter keeps ``max_retries=0``, so
urllib3 does not resend a POST behind our back either.

========================================================  ================  ==================
failure                                                   idempotent=True   idempotent=False
========================================================  ================  ==================
refused, DNS, connect timeout, proxy unreachable          Transient         Transient
TLS certificate rejected                                  ConfigError       ConfigError
read timeout, reset, closed without answer, cut-off body  Transient         Ambiguous
429; 503 with Retry-After                                 RateLimited       RateLimited
503 (the server refused the work)                         Transient         Transient
500 (the server failed mid-way: the write may have landed) Transient         Ambiguous
502, 504 (a proxy may have forwarded the request)         Transient         Ambiguous
any other status                                          returned          returned
========================================================  ================  ==================
"""
from __future__ import annotations

import json as jsonlib
import logging
import math
import os
import re
import socket
import ssl
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from http.client import HTTPException, RemoteDisconnected
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import requests
import urllib3.exceptions as u3
from requests.adapters import HTTPAdapter
from requests.auth import AuthBase
from requests.structures import CaseInsensitiveDict
from urllib3.connection import HTTPConnection

from connectors.errors import Ambiguous, AuthError, ConfigError, ConnectorError, ContractViolation, RateLimited, \
    Transient
from connectors.redaction import MASK, is_secret_key, redact_data, redact_text, register_secret

log = logging.getLogger(__name__)
body_log = logging.getLogger(__name__ + ".body")  # DEBUG only; request/response bodies, redacted

USER_AGENT = "erphub/0.1"
POOL_MAXSIZE = 8  # connections kept per host: enough for a few worker threads sharing one client
EXCERPT_CHARS = 200
BODY_LOG_CHARS = 4000
_MARGIN = 1000  # redact this much past what is shown: no secret is cut in half before it is masked

_ABSOLUTE = re.compile(r"^https?://", re.IGNORECASE)


# ---------------------------------------------------------------------------------------------
# Response


class HttpResponse:
    """An answer that arrived: status, headers, cookies, bytes, UTF-8 text, JSON, elapsed time."""

    __slots__ = ("status", "reason", "headers", "cookies", "content", "method", "url", "elapsed", "_text")

    def __init__(self, *, status: int, reason: str, headers: Mapping[str, str], cookies: Any, content: bytes,
                 method: str, url: str, elapsed: float) -> None:
        self.status = status
        self.reason = reason
        self.headers: CaseInsensitiveDict[str] = CaseInsensitiveDict(headers)
        self.cookies = cookies  # requests.cookies.RequestsCookieJar of cookies set by this response
        self.content = content
        self.method = method
        self.url = url  # full URL, query included: never log it, use .where
        self.elapsed = elapsed  # seconds, request sent to body read
        self._text: str | None = None

    @property
    def ok(self) -> bool:
        return self.status < 400

    @property
    def where(self) -> str:
        """``METHOD host/path`` without the query string: safe for messages."""
        return _where(self.method, self.url)

    @property
    def text(self) -> str:
        """The body decoded as UTF-8 whatever charset the server declared.

        Chinese ERPs declare ``gbk`` or ``ISO-8859-1`` (or nothing) and send UTF-8. Bytes that
        are not valid UTF-8 are decoded as GB18030 when the server declared a GB charset (a
        superset of GBK and GB2312, so real GBK bodies keep their Chinese text), otherwise with
        replacement characters and a logged warning. A leading UTF-8 byte-order mark is dropped.
        """
        if self._text is None:
            try:
                self._text = self.content.decode("utf-8-sig")
            except UnicodeDecodeError as exc:
                declared = (self.headers.get("Content-Type") or "").lower()
                if "charset=gb" in declared.replace(" ", ""):
                    try:
                        self._text = self.content.decode("gb18030")
                        return self._text
                    except UnicodeDecodeError:
                        pass
                log.warning("%s answered %d bytes that are not valid UTF-8 (declared content-type %r, first bad "
                            "byte at %d); decoding with replacement characters",
                            self.where, len(self.content), self.headers.get("Content-Type"), exc.start)
                self._text = self.content.decode("utf-8-sig", errors="replace")
        return self._text

    def json(self) -> Any:
        """The body parsed as JSON; anything else is a :class:`ContractViolation`."""
        text = self.text
        try:
            return jsonlib.loads(text)
        except ValueError as exc:
            reason = f"{exc.msg} at position {exc.pos}" if isinstance(exc, jsonlib.JSONDecodeError) else str(exc)
            raise ContractViolation(
                f"{self.where}: the answer is not valid JSON ({reason}); status {self.status}, content-type "
                f"{self.headers.get('Content-Type')!r}, body starts {excerpt(text)!r}",
                details={**_details(self.method, self.url), "status": self.status},
            ) from None

    def __repr__(self) -> str:
        return f"<HttpResponse {self.status} {self.where} {len(self.content)} B>"


# ---------------------------------------------------------------------------------------------
# Counters


@dataclass
class HttpStats:
    """What one client sent: API calls, statuses, bytes and time. Subtract two snapshots for a delta."""

    requests: int = 0
    by_status: dict[int, int] = field(default_factory=dict)
    failures: dict[str, int] = field(default_factory=dict)  # no status: "connect", "timeout", "disconnected"...
    bytes_sent: int = 0
    bytes_received: int = 0
    elapsed: float = 0.0  # seconds, summed over requests

    def copy(self) -> HttpStats:
        return HttpStats(self.requests, dict(self.by_status), dict(self.failures), self.bytes_sent,
                         self.bytes_received, self.elapsed)

    def __sub__(self, other: HttpStats) -> HttpStats:
        def diff(a: dict[Any, int], b: dict[Any, int]) -> dict[Any, int]:
            return {k: a.get(k, 0) - b.get(k, 0) for k in a.keys() | b.keys() if a.get(k, 0) != b.get(k, 0)}
        return HttpStats(self.requests - other.requests, diff(self.by_status, other.by_status),
                         diff(self.failures, other.failures), self.bytes_sent - other.bytes_sent,
                         self.bytes_received - other.bytes_received, self.elapsed - other.elapsed)

    def as_dict(self) -> dict[str, Any]:
        return {"requests": self.requests, "by_status": dict(sorted(self.by_status.items())),
                "failures": dict(sorted(self.failures.items())), "bytes_sent": self.bytes_sent,
                "bytes_received": self.bytes_received, "elapsed_ms": round(self.elapsed * 1000, 1)}


# ---------------------------------------------------------------------------------------------
# Transport


class _NoNetrc(AuthBase):
    """Sends no credentials. Set as the session's auth so requests never reads ~/.netrc."""

    def __call__(self, r: requests.PreparedRequest) -> requests.PreparedRequest:
        return r


def _socket_options() -> list[tuple[int, int, int]]:
    """urllib3's defaults (TCP_NODELAY) plus TCP keep-alive, so firewalls in front of on-prem
    ERPs do not silently drop idle pooled connections (which would turn the next POST ambiguous)."""
    options = list(HTTPConnection.default_socket_options)
    options.append((socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1))
    for name, value in (("TCP_KEEPIDLE", 60), ("TCP_KEEPINTVL", 20), ("TCP_KEEPCNT", 3)):
        if hasattr(socket, name):
            options.append((socket.IPPROTO_TCP, getattr(socket, name), value))
    return options


class _Adapter(HTTPAdapter):
    """``HTTPAdapter`` with keep-alive socket options and no retries (``max_retries=0``)."""

    def __init__(self, *, pool_maxsize: int) -> None:
        super().__init__(pool_connections=4, pool_maxsize=pool_maxsize, max_retries=0, pool_block=False)

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("socket_options", _socket_options())
        super().init_poolmanager(*args, **kwargs)

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> Any:
        if not proxy.lower().startswith("socks"):
            proxy_kwargs.setdefault("socket_options", _socket_options())
        return super().proxy_manager_for(proxy, **proxy_kwargs)


# ---------------------------------------------------------------------------------------------
# Client


class HttpClient:
    """One connection's HTTP session. Thread-safe for a few worker threads.

    ``base_url`` is joined with relative paths by plain concatenation (``https://h/b1s/v1`` +
    ``Items('A1')`` → ``https://h/b1s/v1/Items('A1')``). Absolute URLs must point at the same
    scheme, host and port, so default headers (tokens) never travel to another server.
    """

    def __init__(self, base_url: str, *, connect_timeout: float, read_timeout: float, verify: bool | str = True,
                 headers: Mapping[str, str] | None = None, name: str = "", pool_maxsize: int = POOL_MAXSIZE) -> None:
        parts = urlsplit(base_url)
        if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
            raise ConfigError(f"{name or 'http'}: base URL {redact_text(_strip_query(base_url))!r} is not an "
                              "http(s) URL")
        for label, value in (("connect_timeout", connect_timeout), ("read_timeout", read_timeout)):
            if not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
                raise ConfigError(f"{name or 'http'}: {label} must be a positive number of seconds, not {value!r}")
        self.verify = _check_verify(verify, name)
        self.base_url = base_url.rstrip("/")
        self.name = name or parts.hostname
        self.connect_timeout = float(connect_timeout)
        self.read_timeout = float(read_timeout)
        self._origin = _origin(base_url)

        self._session = requests.Session()
        self._session.auth = _NoNetrc()
        adapter = _Adapter(pool_maxsize=pool_maxsize)
        self._session.mount("https://", adapter)
        self._session.mount("http://", adapter)
        self._session.headers["User-Agent"] = USER_AGENT
        if headers:
            _register_header_secrets(headers)
            self._session.headers.update(headers)

        self._lock = threading.Lock()
        self._stats = HttpStats()
        self._closed = False

    # -- public surface -----------------------------------------------------------------------

    @property
    def headers(self) -> CaseInsensitiveDict[str]:
        """Headers sent with every request; a vendor client may set a token here after login."""
        return self._session.headers

    @property
    def cookies(self) -> requests.cookies.RequestsCookieJar:
        """The session's cookie jar (SAP ``B1SESSION``/``ROUTEID``, Kingdee ``kdservice-sessionid``)."""
        return self._session.cookies

    @property
    def stats(self) -> HttpStats:
        """A snapshot of this client's counters."""
        with self._lock:
            return self._stats.copy()

    def reset_stats(self) -> None:
        with self._lock:
            self._stats = HttpStats()

    def url_for(self, path_or_url: str) -> str:
        """The absolute URL a request for ``path_or_url`` goes to."""
        if _ABSOLUTE.match(path_or_url):
            if _origin(path_or_url) != self._origin:
                raise ContractViolation(
                    f"{self.name}: refusing to send to {redact_text(_where('', path_or_url)).strip()}: not the "
                    f"configured server {self._origin}")
            return path_or_url
        return f"{self.base_url}/{path_or_url.lstrip('/')}" if path_or_url else self.base_url

    def request(self, method: str, path_or_url: str, *, idempotent: bool, params: Any = None, json: Any = None,
                data: Any = None, headers: Mapping[str, str] | None = None,
                read_timeout: float | None = None) -> HttpResponse:
        """Send one request and return the answer, or raise the classified :class:`ConnectorError`.

        ``idempotent`` is required: True when sending it twice is harmless (a read, or a write the
        vendor de-duplicates by key); it decides whether a lost answer is ``Transient`` or
        ``Ambiguous``. ``json`` is sent as compact UTF-8 (not ``\\u`` escapes). ``read_timeout``
        overrides the client's for one slow call. Redirects are never followed (a POST must not
        turn into a GET, nor headers travel elsewhere): a 3xx comes back to the caller (see
        :func:`raise_for_generic_status`).
        """
        if not isinstance(idempotent, bool):
            raise TypeError("idempotent must be True or False")
        if self._closed:
            raise RuntimeError(f"{self.name}: HttpClient is closed")
        if json is not None and data is not None:
            raise TypeError("pass json or data, not both")
        method = method.upper()
        url = self.url_for(path_or_url)
        read_to = self.read_timeout if read_timeout is None else float(read_timeout)
        if not math.isfinite(read_to) or read_to <= 0:
            raise ValueError(f"read_timeout must be positive, not {read_timeout!r}")

        send_headers = dict(headers or {})
        if headers:
            _register_header_secrets(headers)
        if json is not None:
            data = jsonlib.dumps(json, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode("utf-8")
            if not any(k.lower() == "content-type" for k in send_headers):
                send_headers["Content-Type"] = "application/json"
        elif isinstance(data, str):
            data = data.encode("utf-8")

        try:
            prepared = self._session.prepare_request(
                requests.Request(method, url, params=params, data=data, headers=send_headers))
        except (requests.exceptions.InvalidURL, requests.exceptions.MissingSchema, requests.exceptions.InvalidSchema,
                requests.exceptions.InvalidHeader, u3.LocationParseError) as exc:
            raise ConfigError(f"{_where(method, url)}: cannot build the request ({type(exc).__name__})",
                              details=_details(method, url)) from None
        url = prepared.url or url
        sent = _body_size(prepared.body)
        with self._lock:
            self._stats.requests += 1
            self._stats.bytes_sent += sent
            seq = self._stats.requests
        if body_log.isEnabledFor(logging.DEBUG):
            body_log.debug("[%s] #%d %s body: %s", self.name, seq, _where(method, url), _body_for_log(prepared.body))

        # verify goes in per request: a CA bundle path given here survives REQUESTS_CA_BUNDLE.
        settings = self._session.merge_environment_settings(prepared.url, {}, None, self.verify, None)
        started = time.perf_counter()
        try:
            raw = self._session.send(prepared, timeout=(self.connect_timeout, read_to),
                                     allow_redirects=False, **settings)
            content = raw.content  # read the whole body inside the try: a cut-off body fails here
        except Exception as exc:
            elapsed = time.perf_counter() - started
            error = self._translate(exc, method, url, idempotent=idempotent, read_timeout=read_to, elapsed=elapsed)
            if error is None:
                raise
            raise error from None
        elapsed = time.perf_counter() - started
        resp = HttpResponse(status=raw.status_code, reason=raw.reason or "", headers=raw.headers,
                            cookies=raw.cookies, content=content, method=method, url=url, elapsed=elapsed)
        with self._lock:
            self._stats.by_status[resp.status] = self._stats.by_status.get(resp.status, 0) + 1
            self._stats.bytes_received += len(content)
            self._stats.elapsed += elapsed
        if log.isEnabledFor(logging.DEBUG):
            log.debug("[%s] #%d %s %s -> %d in %.0f ms (%d B sent, %d B received)", self.name, seq, method,
                      _display(url), resp.status, elapsed * 1000, sent, len(content))
        if body_log.isEnabledFor(logging.DEBUG):
            body_log.debug("[%s] #%d %s answer %d: %s", self.name, seq, resp.where, resp.status,
                           _clip(redact_text(resp.text[:BODY_LOG_CHARS + _MARGIN]), len(resp.text)))
        error = status_error(resp, idempotent=idempotent)
        if error is not None:
            log.info("[%s] #%d %s %s -> %d in %.0f ms: %s", self.name, seq, method, _display(url), resp.status,
                     elapsed * 1000, error.kind)
            raise error
        return resp

    def get(self, path_or_url: str, *, params: Any = None, headers: Mapping[str, str] | None = None,
            read_timeout: float | None = None) -> HttpResponse:
        """A GET, idempotent."""
        return self.request("GET", path_or_url, idempotent=True, params=params, headers=headers,
                            read_timeout=read_timeout)

    def close(self) -> None:
        self._closed = True
        self._session.close()

    def __enter__(self) -> HttpClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<HttpClient {self.name} {self._origin}>"

    # -- failure translation ------------------------------------------------------------------

    def _translate(self, exc: BaseException, method: str, url: str, *, idempotent: bool, read_timeout: float,
                   elapsed: float) -> ConnectorError | None:
        """The ConnectorError for a transport failure, or None for one that is not (a bug: re-raise)."""
        if not isinstance(exc, (requests.RequestException, u3.HTTPError, HTTPException, OSError)):
            return None
        chain = list(_causes(exc))
        where = _where(method, url)
        details = {**_details(method, url), "elapsed_ms": round(elapsed * 1000), "exception": type(exc).__name__}
        log.debug("[%s] %s failed: %s", self.name, where, redact_text(repr(exc)))

        def count(kind: str) -> None:
            with self._lock:
                self._stats.failures[kind] = self._stats.failures.get(kind, 0) + 1
                self._stats.elapsed += elapsed

        def note(error: ConnectorError, kind: str) -> ConnectorError:
            count(kind)
            log.info("[%s] %s %s failed after %.0f ms: %s (%s)", self.name, method, _display(url), elapsed * 1000,
                     kind, error.kind)
            return error

        if isinstance(exc, (requests.exceptions.InvalidURL, requests.exceptions.MissingSchema,
                            requests.exceptions.InvalidSchema, requests.exceptions.InvalidHeader)):
            return note(ConfigError(f"{where}: invalid request ({type(exc).__name__})", details=details), "invalid")
        if isinstance(exc, OSError) and "CA certificate bundle" in str(exc):
            return note(ConfigError(f"{where}: {redact_text(str(exc))}", details=details), "tls")
        if any(isinstance(e, (ssl.SSLCertVerificationError, ssl.CertificateError)) for e in chain) or (
                isinstance(exc, requests.exceptions.SSLError) and "CERTIFICATE_VERIFY_FAILED" in str(exc)):
            return note(ConfigError(f"{where}: the server's TLS certificate was rejected; configure verify_tls with "
                                    "the CA bundle that signed it", details=details), "tls")

        pre_send = _nothing_sent(exc, chain, self.connect_timeout)
        if pre_send is not None:
            return note(Transient(f"{where}: {pre_send}; nothing was sent", details=details), "connect")

        # From here the request may have reached the server.
        reason = _post_send_reason(exc, chain, read_timeout)
        kind = "timeout" if any(isinstance(e, (requests.exceptions.ReadTimeout, u3.ReadTimeoutError, TimeoutError,
                                               socket.timeout)) for e in chain) else "disconnected"
        if idempotent:
            return note(Transient(f"{where}: {reason}", details=details), kind)
        return note(Ambiguous(f"{where}: {reason} after the request was sent; it may have been applied, check "
                              "before sending it again", details=details), kind)


# ---------------------------------------------------------------------------------------------
# Status classification (public: vendor clients may reuse them)


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header: delta-seconds or an HTTP-date; None if absent or bad."""
    if value is None:
        return None
    value = value.strip()
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when is None:
            return None
        if when.tzinfo is None:  # RFC 9110 dates are GMT
            when = when.replace(tzinfo=timezone.utc)
        current = now or datetime.now(timezone.utc)
        return max(0.0, (when - current).total_seconds())
    if not math.isfinite(seconds):
        return None
    return max(0.0, seconds)


def status_error(resp: HttpResponse, *, idempotent: bool) -> ConnectorError | None:
    """The generic error for ``resp``'s status (429, 5xx), or None when the caller should decide."""
    status = resp.status
    if status != 429 and status not in (500, 502, 503, 504):
        return None
    details = {**_details(resp.method, resp.url), "status": status, "elapsed_ms": round(resp.elapsed * 1000)}
    said = f"; body starts {excerpt(resp.text)!r}" if resp.content else ""
    retry_after = parse_retry_after(resp.headers.get("Retry-After"))
    if status == 429 or (status == 503 and retry_after is not None):
        if retry_after is not None:
            details["retry_after"] = retry_after
        wait = f", retry after {retry_after:g} s" if retry_after is not None else ""
        return RateLimited(f"{resp.where}: {status} {resp.reason}{wait}{said}", retry_after=retry_after,
                           details=details)
    if status in (500, 502, 503, 504):
        # RELIABILITY §2: a 500 is retried blindly only when the vendor says it is transient. For a
        # write we cannot know, so the engine checks with find(key) before sending it again.
        if not idempotent and status in (500, 502, 504):
            who = "the server failed while handling it" if status == 500 else "a gateway answered"
            return Ambiguous(f"{resp.where}: {status} {resp.reason}; {who}, so the request may have been applied: "
                             f"check before sending it again{said}", details=details)
        return Transient(f"{resp.where}: {status} {resp.reason}{said}", details=details)
    return None


def raise_for_generic_status(resp: HttpResponse) -> HttpResponse:
    """Raise for statuses every vendor means the same way; return ``resp`` otherwise.

    3xx → ConfigError (the base URL is wrong: we do not follow redirects), 401/403 → AuthError
    (call it only after your one transparent re-login on 401), 407 → ConfigError (proxy), 408 →
    Transient (the server gave up waiting for the request, so it was not processed). 404 and the
    other 4xx are left to the caller: a vendor client knows whether 404 means "not found" or
    "wrong URL", and which 400 is a Rejected.
    """
    status = resp.status
    details = {**_details(resp.method, resp.url), "status": status}
    if 300 <= status < 400:
        location = resp.headers.get("Location")
        to = f" to {_display(location)}" if location else ""
        raise ConfigError(f"{resp.where}: {status} redirect{to}; fix the connection's base URL", details=details)
    if status in (401, 403):
        raise AuthError(f"{resp.where}: {status} {resp.reason}; body starts {excerpt(resp.text)!r}",
                        details=details)
    if status == 407:
        raise ConfigError(f"{resp.where}: 407 proxy authentication required; fix the proxy settings",
                          details=details)
    if status == 408:
        raise Transient(f"{resp.where}: 408 request timeout", details=details)
    return resp


def excerpt(text: str, limit: int = EXCERPT_CHARS) -> str:
    """A short, single-line, redacted start of ``text`` for error messages."""
    flat = " ".join(redact_text(text[: limit * 4 + _MARGIN]).split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


# ---------------------------------------------------------------------------------------------
# Helpers


def _check_verify(verify: bool | str, name: str) -> bool | str:
    label = name or "http"
    if verify is False:
        raise ConfigError(f"{label}: TLS verification cannot be turned off; set verify_tls to the path of the CA "
                          "bundle that signed the server's certificate")
    if verify is True:
        return True
    if isinstance(verify, (str, os.PathLike)):
        path = os.fspath(verify)
        if not os.path.exists(path):
            raise ConfigError(f"{label}: CA bundle {path!r} does not exist")
        return path
    raise ConfigError(f"{label}: verify must be True or a CA bundle path, not {verify!r}")


def _origin(url: str) -> str:
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    port = parts.port or (443 if scheme == "https" else 80)
    return f"{scheme}://{(parts.hostname or '').lower()}:{port}"


def _strip_query(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname or ''}{':' + str(parts.port) if parts.port else ''}{parts.path}"


def _where(method: str, url: str) -> str:
    """``METHOD host/path`` with no query string and no user info."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return redact_text(f"{method} {host}{parts.path or '/'}".strip())


def _display(url: str) -> str:
    """host/path?query for logs, with secret parameters masked and values scrubbed and clipped."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    shown = f"{host}{parts.path or '/'}"
    if parts.query:
        pairs = []
        for key, value in parse_qsl(parts.query, keep_blank_values=True):
            value = MASK if is_secret_key(key) else redact_text(value)
            pairs.append(f"{key}={value if len(value) <= 64 else value[:63] + '…'}")
        shown += "?" + "&".join(pairs)
    return redact_text(shown)


def _details(method: str, url: str) -> dict[str, Any]:
    parts = urlsplit(url)
    return {"method": method, "host": parts.hostname or "", "path": redact_text(parts.path or "/")}


def _body_size(body: Any) -> int:
    if body is None:
        return 0
    if isinstance(body, (bytes, bytearray)):
        return len(body)
    if isinstance(body, str):
        return len(body.encode("utf-8"))
    return 0  # streamed/file bodies: not counted


def _clip(text: str, total: int | None = None) -> str:
    """The first BODY_LOG_CHARS of already-redacted text. Callers redact a little more than they
    show (_MARGIN), so a secret cut at the edge was still whole, and masked, when redacted."""
    total = len(text) if total is None else total
    return text if len(text) <= BODY_LOG_CHARS and total <= len(text) else f"{text[:BODY_LOG_CHARS]}… ({total} chars)"


def _body_for_log(body: Any) -> str:
    if body is None:
        return "(none)"
    if isinstance(body, (bytes, bytearray)):
        body = bytes(body).decode("utf-8", errors="replace")
    if not isinstance(body, str):
        return f"({type(body).__name__})"
    try:
        parsed = jsonlib.loads(body)
    except ValueError:
        if "=" in body and "\n" not in body:  # a form body
            pairs = parse_qsl(body, keep_blank_values=True)
            if pairs:
                return _clip("&".join(f"{k}={MASK if is_secret_key(k) else redact_text(v)}" for k, v in pairs))
        return _clip(redact_text(body[:BODY_LOG_CHARS + _MARGIN]), len(body))
    return _clip(redact_text(jsonlib.dumps(redact_data(parsed), ensure_ascii=False)))


def _register_header_secrets(headers: Mapping[str, str]) -> None:
    """Credentials handed to us in headers are registered, so they are masked even out of context."""
    for key, value in headers.items():
        if isinstance(value, str) and is_secret_key(key):
            register_secret(value)
            scheme, _, token = value.partition(" ")
            if token and scheme.lower() in ("bearer", "basic", "token"):
                register_secret(token)


def _causes(exc: BaseException) -> list[BaseException]:
    """``exc`` and what it wraps: args, ``__cause__``, urllib3's ``reason``/``original_error``."""
    seen: set[int] = set()
    out: list[BaseException] = []
    stack: list[BaseException | None] = [exc]
    while stack:
        e = stack.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        out.append(e)
        stack.append(e.__cause__)
        if e.__context__ is not None and isinstance(e, u3.NewConnectionError):
            stack.append(e.__context__)  # urllib3 raises NewConnectionError from the socket error
        for attr in ("reason", "original_error"):
            inner = getattr(e, attr, None)
            if isinstance(inner, BaseException):
                stack.append(inner)
        stack.extend(a for a in getattr(e, "args", ()) if isinstance(a, BaseException))
    return out


def _nothing_sent(exc: BaseException, chain: list[BaseException], connect_timeout: float) -> str | None:
    """Why the request never left, or None if it may have been sent."""
    if any(isinstance(e, u3.NameResolutionError) or isinstance(e, socket.gaierror) for e in chain):
        return "DNS lookup failed"
    if any(isinstance(e, ConnectionRefusedError) for e in chain):
        return "connection refused"
    if isinstance(exc, requests.exceptions.ProxyError) or any(isinstance(e, u3.ProxyError) for e in chain):
        return "could not reach the proxy"
    if isinstance(exc, requests.exceptions.ConnectTimeout) or any(
            isinstance(e, u3.ConnectTimeoutError) and not isinstance(e, u3.NewConnectionError) for e in chain):
        return f"no connection within {connect_timeout:g} s"
    if any(isinstance(e, u3.NewConnectionError) for e in chain):
        return "could not connect"
    return None


def _post_send_reason(exc: BaseException, chain: list[BaseException], read_timeout: float) -> str:
    if any(isinstance(e, (requests.exceptions.ReadTimeout, u3.ReadTimeoutError, TimeoutError, socket.timeout))
           for e in chain):
        return f"no answer within {read_timeout:g} s"
    if any(isinstance(e, RemoteDisconnected) for e in chain):
        return "the server closed the connection without answering"
    if any(isinstance(e, ConnectionResetError) for e in chain):
        return "the connection was reset"
    if isinstance(exc, (requests.exceptions.ChunkedEncodingError, requests.exceptions.ContentDecodingError)) or any(
            isinstance(e, (u3.IncompleteRead, u3.ProtocolError)) for e in chain):
        return "the connection broke while the answer was being read"
    if isinstance(exc, requests.exceptions.SSLError):
        return "TLS error on the connection"
    return f"the connection failed ({type(exc).__name__})"
