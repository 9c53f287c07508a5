from __future__ import annotations

import json
import logging
import socket
import struct
import threading
import time
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests
import responses
import urllib3.exceptions as u3
from responses import matchers

from connectors.errors import Action, Ambiguous, AuthError, ConfigError, ContractViolation, RateLimited, Transient
from connectors.http import USER_AGENT, HttpClient, HttpStats, parse_retry_after, raise_for_generic_status

BASE = "https://k3.example.test/k3cloud"
SAVE = "Kingdee.BOS.WebApi.ServicesStub.DynamicFormService.Save.common.kdsvc"
SAVE_URL = f"{BASE}/{SAVE}"
ITEMS_URL = "https://k3.example.test/k3cloud/Items"


def sent_headers(**extra: str) -> dict[str, str]:
    """Every header the client sends, for strict matching."""
    headers = {"User-Agent": USER_AGENT, "Accept-Encoding": requests.utils.default_headers()["Accept-Encoding"],
               "Accept": "*/*", "Connection": "keep-alive"}
    headers.update(extra)
    return headers


@pytest.fixture
def client():
    with HttpClient(BASE, connect_timeout=2, read_timeout=7, name="kd_test") as c:
        yield c


@pytest.fixture
def mocked():
    with responses.RequestsMock(assert_all_requests_are_fired=True) as rsps:
        yield rsps


# ------------------------------------------------------------------------------------------------
# What goes on the wire


def test_post_sends_compact_utf8_json_with_timeouts_and_ca_bundle(mocked, tmp_path, monkeypatch):
    # Given a private CA bundle configured, and an environment CA bundle that must not replace it
    bundle = tmp_path / "erp-ca.pem"
    bundle.write_text("-----BEGIN CERTIFICATE-----\n")
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", "/etc/ssl/certs/ca-certificates.crt")
    body = '{"FormId":"STK_InStock","Model":{"FName":"金蝶"}}'.encode()
    mocked.add(responses.POST, SAVE_URL, json={"Result": {"ResponseStatus": {"IsSuccess": True}}}, match=[
        matchers.header_matcher(sent_headers(**{"Content-Type": "application/json",
                                                "Content-Length": str(len(body))}), strict_match=True),
        matchers.body_matcher(body.decode()),
        matchers.query_string_matcher(""),
        matchers.request_kwargs_matcher({"timeout": (2.0, 7.0), "verify": str(bundle), "stream": False}),
    ])
    # When a document is saved
    with HttpClient(BASE, connect_timeout=2, read_timeout=7, verify=str(bundle)) as client:
        resp = client.request("POST", SAVE, idempotent=False, json={"FormId": "STK_InStock",
                                                                    "Model": {"FName": "金蝶"}})
    # Then exactly that request was sent and its answer comes back
    assert resp.status == 200
    assert resp.json() == {"Result": {"ResponseStatus": {"IsSuccess": True}}}
    assert resp.where == f"POST k3.example.test/k3cloud/{SAVE}"
    assert resp.elapsed >= 0


def test_get_sends_params_and_default_headers(mocked):
    mocked.add(responses.GET, ITEMS_URL, json={"value": []}, match=[
        matchers.header_matcher(sent_headers(Authorization="Bearer tok-123456"), strict_match=True),
        matchers.query_param_matcher({"$filter": "ItemCode eq 'A001'", "$top": "2"}, strict_match=True),
        matchers.request_kwargs_matcher({"timeout": (2.0, 30.0)}),
    ])
    with HttpClient(BASE, connect_timeout=2, read_timeout=30, headers={"Authorization": "Bearer tok-123456"}) as c:
        resp = c.get("Items", params={"$filter": "ItemCode eq 'A001'", "$top": 2})
    assert resp.json() == {"value": []}


def test_read_timeout_can_be_raised_for_one_slow_call(mocked, client):
    mocked.add(responses.POST, SAVE_URL, json={}, match=[matchers.request_kwargs_matcher({"timeout": (2.0, 120.0)})])
    client.request("POST", SAVE, idempotent=True, json={}, read_timeout=120)


def test_idempotent_must_be_stated(client):
    with pytest.raises(TypeError):
        client.request("POST", SAVE, json={})  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        client.request("POST", SAVE, idempotent=None, json={})  # type: ignore[arg-type]


def test_there_is_no_client_without_timeouts():
    with pytest.raises(TypeError):
        HttpClient(BASE)  # type: ignore[call-arg]
    with pytest.raises(ConfigError, match="read_timeout"):
        HttpClient(BASE, connect_timeout=5, read_timeout=0)
    with pytest.raises(ConfigError, match="connect_timeout"):
        HttpClient(BASE, connect_timeout=float("inf"), read_timeout=5)


def test_tls_verification_cannot_be_turned_off():
    with pytest.raises(ConfigError, match="cannot be turned off"):
        HttpClient(BASE, connect_timeout=5, read_timeout=5, verify=False)
    with pytest.raises(ConfigError, match="does not exist"):
        HttpClient(BASE, connect_timeout=5, read_timeout=5, verify="/nonexistent/ca.pem")


def test_adapter_never_retries_and_pools_for_a_few_threads(client):
    # urllib3 must not resend a POST behind the engine's back
    adapter = client._session.get_adapter(SAVE_URL)
    assert adapter.max_retries.total == 0
    assert adapter.max_retries.read is False
    assert adapter._pool_maxsize >= 4


def test_absolute_urls_must_stay_on_the_configured_server(mocked, client):
    # Given a link handed back by the vendor (an async result URL, an OData nextLink)
    mocked.add(responses.GET, "https://k3.example.test/other/result/42", json={"done": True})
    assert client.get("https://k3.example.test/other/result/42").json() == {"done": True}
    # Then a link to another host is refused: our default headers would travel with it
    with pytest.raises(ContractViolation, match="not the configured server"):
        client.get("https://evil.example.test/k3cloud/x?token=abc")


def test_redirects_are_not_followed_and_mean_a_wrong_base_url(mocked, client):
    mocked.add(responses.POST, SAVE_URL, status=302, headers={"Location": "https://k3.example.test/login?ret=x"})
    resp = client.request("POST", SAVE, idempotent=False, json={})
    assert resp.status == 302
    with pytest.raises(ConfigError, match="redirect to k3.example.test/login"):
        raise_for_generic_status(resp)


def test_session_cookies_are_kept_for_the_next_call(mocked, client):
    # Given a login that sets the SAP B1 session cookies
    mocked.add(responses.POST, f"{BASE}/Login", json={"SessionId": "b1-sess-1234"},
               headers={"Set-Cookie": "B1SESSION=b1-sess-1234; path=/; HttpOnly"})
    mocked.add(responses.GET, ITEMS_URL, json={"value": []}, match=[
        matchers.header_matcher(sent_headers(Cookie="B1SESSION=b1-sess-1234"), strict_match=True)])
    # When the next call is made
    login = client.request("POST", "Login", idempotent=True, json={"UserName": "manager", "Password": "x"})
    client.get("Items")
    # Then the cookie went with it, and both the response and the client expose it
    assert login.cookies["B1SESSION"] == "b1-sess-1234"
    assert client.cookies.get("B1SESSION") == "b1-sess-1234"


# ------------------------------------------------------------------------------------------------
# Status classification


def test_429_with_seconds(mocked, client):
    mocked.add(responses.POST, SAVE_URL, status=429, headers={"Retry-After": "7"}, json={"code": 8303})
    with pytest.raises(RateLimited) as caught:
        client.request("POST", SAVE, idempotent=False, json={})
    assert caught.value.retry_after == 7.0
    assert caught.value.action is Action.RETRY
    assert caught.value.details["status"] == 429


def test_429_with_http_date(mocked, client):
    when = datetime.now(timezone.utc) + timedelta(seconds=120)
    mocked.add(responses.GET, ITEMS_URL, status=429, headers={"Retry-After": format_datetime(when, usegmt=True)})
    with pytest.raises(RateLimited) as caught:
        client.get("Items")
    assert 100 <= caught.value.retry_after <= 121


def test_429_without_retry_after(mocked, client):
    mocked.add(responses.GET, ITEMS_URL, status=429)
    with pytest.raises(RateLimited) as caught:
        client.get("Items")
    assert caught.value.retry_after is None


def test_503_with_retry_after_is_rate_limited(mocked, client):
    mocked.add(responses.POST, SAVE_URL, status=503, headers={"Retry-After": "30"})
    with pytest.raises(RateLimited) as caught:
        client.request("POST", SAVE, idempotent=False, json={})
    assert caught.value.retry_after == 30.0


@pytest.mark.parametrize(("value", "expected"), [
    ("0", 0.0), ("120", 120.0), (" 5 ", 5.0), ("1.5", 1.5), ("-3", 0.0),
    ("Wed, 21 Oct 2015 07:28:00 GMT", 60.0), ("Wed, 21 Oct 2015 07:26:00 GMT", 0.0),
    ("soon", None), ("", None), (None, None), ("nan", None),
])
def test_parse_retry_after(value, expected):
    now = datetime(2015, 10, 21, 7, 27, 0, tzinfo=timezone.utc)
    assert parse_retry_after(value, now=now) == expected


@pytest.mark.parametrize(("status", "idempotent", "expected"), [
    (500, True, Transient), (502, True, Transient), (503, True, Transient), (504, True, Transient),
    (503, False, Transient),
    # the server failed mid-write, or a gateway may have forwarded the request before it failed
    (500, False, Ambiguous), (502, False, Ambiguous), (504, False, Ambiguous),
])
def test_5xx(mocked, client, status, idempotent, expected):
    mocked.add(responses.POST, SAVE_URL, status=status, body="<html>upstream error</html>")
    with pytest.raises(expected) as caught:
        client.request("POST", SAVE, idempotent=idempotent, json={})
    assert type(caught.value) is expected
    assert f"POST k3.example.test/k3cloud/{SAVE}: {status}" in str(caught.value)
    assert "upstream error" in str(caught.value)


@pytest.mark.parametrize("status", [200, 201, 204, 400, 404, 409, 422])
def test_other_statuses_are_returned_to_the_caller(mocked, client, status):
    body = b"" if status == 204 else json.dumps({"error": {"code": -10}} if status >= 400 else {}).encode()
    mocked.add(responses.POST, SAVE_URL, status=status, body=body)
    assert client.request("POST", SAVE, idempotent=False, json={}).status == status


@pytest.mark.parametrize(("status", "expected"), [(401, AuthError), (403, AuthError), (407, ConfigError),
                                                  (408, Transient)])
def test_raise_for_generic_status(mocked, client, status, expected):
    mocked.add(responses.GET, ITEMS_URL, status=status, json={"error": "nope"})
    resp = client.get("Items")
    with pytest.raises(expected):
        raise_for_generic_status(resp)


@pytest.mark.parametrize("status", [200, 400, 404, 422])
def test_raise_for_generic_status_leaves_the_rest_to_the_caller(mocked, client, status):
    mocked.add(responses.GET, ITEMS_URL, status=status, json={})
    resp = client.get("Items")
    assert raise_for_generic_status(resp) is resp


# ------------------------------------------------------------------------------------------------
# Decoding


@pytest.mark.parametrize("content_type", ["application/json; charset=gbk", "application/json; charset=ISO-8859-1",
                                          "text/plain", "application/json"])
def test_text_is_utf8_whatever_the_declared_charset(mocked, client, content_type):
    # Given a vendor that declares a wrong charset (or none) and sends UTF-8
    body = json.dumps({"FName": "金蝶", "FSpec": "螺丝 M6"}, ensure_ascii=False).encode("utf-8")
    mocked.add(responses.GET, ITEMS_URL, body=body, content_type=content_type)
    # When the answer is read
    resp = client.get("Items")
    # Then the Chinese text is intact
    assert "金蝶" in resp.text
    assert resp.json() == {"FName": "金蝶", "FSpec": "螺丝 M6"}


def test_a_utf8_byte_order_mark_is_dropped(mocked, client):
    mocked.add(responses.GET, ITEMS_URL, body=b"\xef\xbb\xbf" + '{"a": "金蝶"}'.encode(), content_type="text/json")
    assert client.get("Items").json() == {"a": "金蝶"}


def test_bytes_that_are_not_utf8_are_replaced_with_a_warning(mocked, client, caplog):
    mocked.add(responses.GET, ITEMS_URL, body='{"a": "金蝶"}'.encode("gbk"), content_type="application/json")
    resp = client.get("Items")
    with caplog.at_level(logging.WARNING, logger="connectors.http"):
        text = resp.text
    assert "\ufffd" in text
    assert "not valid UTF-8" in caplog.text


def test_invalid_json_is_a_contract_violation_naming_the_path(mocked, client, secret):
    # Given an HTML error page that echoes a secret and the query string
    value = secret()
    page = f"<html><body>Server Error in '/k3cloud' Application. key={value} token=abc123xyz</body></html>"
    mocked.add(responses.GET, ITEMS_URL, body=page, content_type="text/html")
    resp = client.get("Items", params={"token": "qs-secret-1"})
    # When it is parsed as JSON
    with pytest.raises(ContractViolation) as caught:
        resp.json()
    # Then the error names the path and shows a short, redacted excerpt
    message = str(caught.value)
    assert "GET k3.example.test/k3cloud/Items" in message
    assert "Server Error in" in message
    assert value not in message and "abc123xyz" not in message and "qs-secret-1" not in message
    assert caught.value.action is Action.DEAD_LETTER


def test_empty_body_is_not_json(mocked, client):
    mocked.add(responses.GET, ITEMS_URL, body=b"")
    with pytest.raises(ContractViolation):
        client.get("Items").json()


# ------------------------------------------------------------------------------------------------
# Transport failures, simulated (the loopback tests below cause the real ones)


def _max_retry(reason: Exception) -> requests.exceptions.ConnectionError:
    return requests.exceptions.ConnectionError(u3.MaxRetryError(None, "/k3cloud/x?token=qs-secret-1", reason))


@pytest.mark.parametrize(("exc", "expected", "words"), [
    (requests.exceptions.ConnectTimeout(u3.MaxRetryError(None, "/x", u3.ConnectTimeoutError(None, "timed out"))),
     Transient, "no connection within 2 s; nothing was sent"),
    (_max_retry(u3.NameResolutionError("k3.example.test", None, socket.gaierror(-2, "Name unknown"))),
     Transient, "DNS lookup failed"),
    (requests.exceptions.ProxyError(u3.MaxRetryError(None, "/x", u3.ProxyError("no proxy", OSError("down")))),
     Transient, "proxy"),
    (requests.exceptions.ReadTimeout("read timed out"), Ambiguous, "no answer within 7 s"),
    (requests.exceptions.ConnectionError(u3.ProtocolError("Connection aborted.", ConnectionResetError(104, "reset"))),
     Ambiguous, "reset"),
    (requests.exceptions.ChunkedEncodingError(u3.ProtocolError("Connection broken", u3.IncompleteRead(10, 5))),
     Ambiguous, "broke while the answer was being read"),
    (requests.exceptions.SSLError(u3.MaxRetryError(None, "/x", u3.SSLError("certificate verify failed: "
                                                                           "CERTIFICATE_VERIFY_FAILED"))),
     ConfigError, "certificate"),
])
def test_transport_failures_are_classified(mocked, client, exc, expected, words):
    mocked.add(responses.POST, SAVE_URL, body=exc)
    with pytest.raises(expected, match=words) as caught:
        client.request("POST", SAVE, idempotent=False, json={}, params={"token": "qs-secret-1"})
    assert type(caught.value) is expected
    assert "qs-secret-1" not in str(caught.value)
    assert caught.value.__suppress_context__  # the raw exception (full URL) is not chained into tracebacks


def test_post_send_failure_of_an_idempotent_request_is_transient(mocked, client):
    mocked.add(responses.GET, ITEMS_URL, body=requests.exceptions.ReadTimeout("read timed out"))
    with pytest.raises(Transient) as caught:
        client.get("Items")
    assert type(caught.value) is Transient


def test_programming_errors_are_not_disguised(mocked, client):
    mocked.add(responses.GET, ITEMS_URL, body=KeyError("bug"))
    with pytest.raises(KeyError):
        client.get("Items")
    with pytest.raises(ValueError):
        client.request("POST", SAVE, idempotent=False, json={"qty": float("nan")})


# ------------------------------------------------------------------------------------------------
# Counters and logs


def test_stats_count_calls_statuses_bytes_and_time(mocked, client):
    mocked.add(responses.GET, ITEMS_URL, body=b"[1,2,3]")
    mocked.add(responses.POST, SAVE_URL, status=400, body=b'{"e":1}')
    mocked.add(responses.POST, SAVE_URL, body=requests.exceptions.ReadTimeout("t"))
    before = client.stats
    client.get("Items")
    client.request("POST", SAVE, idempotent=False, data="abcd")
    with pytest.raises(Ambiguous):
        client.request("POST", SAVE, idempotent=False, data=b"xy")
    delta = client.stats - before
    assert delta.requests == 3
    assert delta.by_status == {200: 1, 400: 1}
    assert delta.failures == {"timeout": 1}
    assert delta.bytes_sent == 6 and delta.bytes_received == 14
    assert delta.elapsed >= 0
    assert client.stats.as_dict()["requests"] == 3
    client.reset_stats()
    assert client.stats == HttpStats()


def test_request_logs_carry_no_secrets_and_bodies_only_at_debug(mocked, client, caplog, secret):
    value = secret()
    mocked.add(responses.POST, SAVE_URL, json={"SessionId": "sess-7777", "echo": value})
    mocked.add(responses.POST, SAVE_URL, json={"SessionId": "sess-7777", "echo": value})
    payload = {"acctid": "1", "username": "manager", "password": "hunter22", "note": value}
    # At INFO: no request lines, no bodies
    with caplog.at_level(logging.INFO, logger="connectors.http"):
        client.request("POST", SAVE, idempotent=False, json=payload, params={"token": "qs-secret-1", "lcid": "2052"})
    assert "manager" not in caplog.text
    caplog.clear()
    # At DEBUG: method, host, path, query with the secret masked, status, elapsed; bodies redacted
    with caplog.at_level(logging.DEBUG, logger="connectors.http"):
        client.request("POST", SAVE, idempotent=False, json=payload, params={"token": "qs-secret-1", "lcid": "2052"})
    text = caplog.text
    assert f"POST k3.example.test/k3cloud/{SAVE}?token=***&lcid=2052 -> 200" in text
    assert "manager" in text  # the body was logged...
    for leaked in ("hunter22", "qs-secret-1", value, "sess-7777"):  # ...without its secrets
        assert leaked not in text


def test_credentials_given_in_headers_are_registered(mocked):
    mocked.add(responses.GET, ITEMS_URL, status=500, body="bad key jdy-key-0123456789")
    with HttpClient(BASE, connect_timeout=1, read_timeout=1, headers={"Authorization": "Bearer jdy-key-0123456789"}) \
            as client, pytest.raises(Transient) as caught:
        client.get("Items")
    assert "jdy-key-0123456789" not in str(caught.value)


# ------------------------------------------------------------------------------------------------
# A real loopback server for true network faults


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # RELIABILITY.md §5.2(d): otherwise ~45 ms per request

    def setup(self) -> None:
        super().setup()
        with self.server.lock:
            self.server.connections += 1

    def _read_request(self) -> bytes:
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _handle(self) -> None:
        self._read_request()
        if self.path.startswith("/api/hangup"):  # read the request, then close without answering
            self.close_connection = True
            return
        if self.path.startswith("/api/reset"):  # read the request, then reset the connection
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.close_connection = True
            return
        if self.path.startswith("/api/silent"):  # read the request, never answer
            self.server.stop.wait(60)
            self.close_connection = True
            return
        if self.path.startswith("/api/cutoff"):  # promise 100 bytes, send 10, close
            self.send_response(200)
            self.send_header("Content-Length", "100")
            self.end_headers()
            self.wfile.write(b'{"Result":')
            self.close_connection = True
            return
        body = '{"FName": "金蝶"}'.encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json; charset=gbk")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = _handle

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server():
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    srv.daemon_threads = True
    srv.lock = threading.Lock()
    srv.connections = 0
    srv.stop = threading.Event()
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield srv
    srv.stop.set()
    srv.shutdown()
    srv.server_close()


def _base(srv: ThreadingHTTPServer) -> str:
    return f"http://127.0.0.1:{srv.server_address[1]}/api"


def test_loopback_answers_and_keeps_the_connection_alive(server):
    with HttpClient(_base(server), connect_timeout=2, read_timeout=5) as client:
        first = client.request("POST", "ok", idempotent=False, json={"a": 1})
        second = client.get("ok")
    assert first.json() == second.json() == {"FName": "金蝶"}
    assert server.connections == 1


def test_a_few_threads_share_one_client(server):
    # Given one client shared by four worker threads
    with HttpClient(_base(server), connect_timeout=2, read_timeout=5) as client:
        def work() -> None:
            for _ in range(10):
                assert client.get("ok").json() == {"FName": "金蝶"}
        threads = [threading.Thread(target=work) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        # Then every call is counted and connections are pooled, not opened per request
        assert client.stats.requests == 40
        assert client.stats.by_status == {200: 40}
    assert server.connections <= 4


def test_connection_refused_is_transient():
    # Given a port nobody listens on
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    with HttpClient(f"http://127.0.0.1:{port}", connect_timeout=2, read_timeout=2) as client:
        # When a write is sent there, Then it is safe to resend: nothing left
        with pytest.raises(Transient, match="connection refused") as caught:
            client.request("POST", "save", idempotent=False, json={})
        assert type(caught.value) is Transient
        assert client.stats.failures == {"connect": 1}


def test_connect_timeout_is_transient_and_bounded():
    # Given a listener whose accept queue is full, so new connection attempts go unanswered
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    fillers = []
    try:
        for _ in range(3):
            filler = socket.socket()
            filler.setblocking(False)
            filler.connect_ex(("127.0.0.1", port))
            fillers.append(filler)
        probe = socket.socket()
        probe.settimeout(0.3)
        if probe.connect_ex(("127.0.0.1", port)) == 0:
            pytest.skip("this kernel completes connections beyond the accept queue; cannot provoke a connect timeout")
        probe.close()
        with HttpClient(f"http://127.0.0.1:{port}", connect_timeout=0.5, read_timeout=5) as client:
            started = time.monotonic()
            # When a write is sent, Then nothing left: safe to resend
            with pytest.raises(Transient, match="no connection within 0.5 s; nothing was sent") as caught:
                client.request("POST", "save", idempotent=False, json={})
            took = time.monotonic() - started
        assert type(caught.value) is Transient
        assert took < 0.5 + 5
    finally:
        for filler in fillers:
            filler.close()
        listener.close()


@pytest.mark.parametrize(("path", "words"), [("hangup", "closed the connection|reset"),
                                           ("reset", "closed the connection|reset"),
                                           ("cutoff", "broke while the answer was being read")])
def test_lost_answer_to_a_write_is_ambiguous(server, path, words):
    # Given a server that reads the request and then drops the connection without (a whole) answer
    with HttpClient(_base(server), connect_timeout=2, read_timeout=5) as client:
        # When a write is sent, Then the outcome is unknown: reconcile before resending
        with pytest.raises(Ambiguous, match=words) as caught:
            client.request("POST", path, idempotent=False, json={"FBillNo": "HUB-1"})
        assert caught.value.action is Action.RECONCILE


@pytest.mark.parametrize("path", ["hangup", "reset", "cutoff"])
def test_lost_answer_to_a_read_is_transient(server, path):
    with HttpClient(_base(server), connect_timeout=2, read_timeout=5) as client:
        with pytest.raises(Transient) as caught:
            client.get(path)
        assert type(caught.value) is Transient


@pytest.mark.parametrize(("idempotent", "expected"), [(False, Ambiguous), (True, Transient)])
def test_a_server_that_never_answers_times_out_at_read_timeout(server, idempotent, expected):
    read_timeout = 0.5
    with HttpClient(_base(server), connect_timeout=2, read_timeout=read_timeout) as client:
        started = time.monotonic()
        with pytest.raises(expected, match="no answer within 0.5 s") as caught:
            client.request("POST", "silent", idempotent=idempotent, json={})
        took = time.monotonic() - started
    assert type(caught.value) is expected
    assert took < read_timeout + 5  # returned, no hang (no tight timing assertion)


def test_undecodable_body_declared_gbk_is_read_as_gb18030(mocked, client):
    # Given a server that really sends GBK bytes and says so
    mocked.add(responses.GET, f"{BASE}/gbk", body="库存 金蝶".encode("gbk"),
               content_type="text/plain; charset=GBK")
    # When the body is read
    text = client.get("/gbk").text
    # Then the Chinese text survives instead of becoming replacement characters
    assert text == "库存 金蝶"
