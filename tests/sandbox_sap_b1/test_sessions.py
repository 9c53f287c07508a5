"""Login, cookies, sliding expiry and the 401 / 301 answers, over real HTTP."""
from __future__ import annotations

import requests

from sandbox.faults import FaultPlan, SessionExpiry
from tests.sandbox_sap_b1.conftest import CREDENTIALS, error_of


def test_login_sets_the_exact_cookies_and_the_dialects_body(server, dialect):
    # When a client logs in
    answer = requests.post(f"{server.url}/b1s/{dialect}/Login", json=CREDENTIALS, timeout=5)
    # Then it gets the balancer's cookie forms and the per-dialect session body
    assert answer.status_code == 200
    cookies = answer.raw.headers.getlist("Set-Cookie")
    body = answer.json()
    assert cookies == [f"B1SESSION={body['SessionId']};HttpOnly;", "ROUTEID=.node1; path=/b1s"]
    assert body["SessionTimeout"] == 30 and isinstance(body["Version"], str)
    if dialect == "v2":
        assert body["@odata.context"].endswith("/b1s/v2/$metadata#B1Sessions/$entity")
        assert answer.headers["Content-Type"] == "application/json;odata.metadata=minimal;charset=utf-8"
        assert "OData-Version" not in answer.headers
    else:
        assert body["odata.metadata"].endswith("/b1s/v1/$metadata#B1Sessions/@Element")
        assert answer.headers["Content-Type"] == "application/json;odata=minimalmetadata;charset=utf-8"
    assert "RouteId" not in body


def test_wrong_credentials_are_refused_with_401(server, dialect):
    for wrong in ({**CREDENTIALS, "Password": "nope"}, {**CREDENTIALS, "CompanyDB": "OTHER"}):
        answer = requests.post(f"{server.url}/b1s/{dialect}/Login", json=wrong, timeout=5)
        assert answer.status_code == 401
        assert error_of(answer, dialect) == ("-304", "Fail to get DB Credentials from SLD")
        assert "Set-Cookie" not in answer.headers


def test_paths_are_case_sensitive_so_lower_case_login_looks_like_a_session_error(server):
    answer = requests.post(f"{server.url}/b1s/v1/login", json=CREDENTIALS, timeout=5)
    assert answer.status_code == 401
    assert error_of(answer, "v1") == ("301", "Invalid session or session already timeout.")


def test_no_session_gives_401_301_in_each_dialect(server, dialect):
    answer = requests.get(f"{server.url}/b1s/{dialect}/Items", timeout=5)
    assert answer.status_code == 401
    assert error_of(answer, dialect) == ("301", "Invalid session or session already timeout.")


def test_the_cookie_jar_scopes_a_v1_session_to_v1(connect):
    http, root = connect("v1")
    assert http.get(f"{root}/Items('A000')", timeout=5).status_code == 200
    assert http.get(root.replace("/v1", "/v2") + "/Items('A000')", timeout=5).status_code == 401


def test_session_timeout_is_idle_and_sliding(connect, clock):
    http, root = connect("v2")
    # Given requests every 20 minutes, the 30-minute session stays alive
    for _ in range(4):
        clock.advance(20 * 60)
        assert http.get(f"{root}/Items('A000')", timeout=5).status_code == 200
    # When the client stays idle for longer than SessionTimeout
    clock.advance(30 * 60 + 1)
    answer = http.get(f"{root}/Items('A000')", timeout=5)
    # Then the session is gone, and a new login works
    assert answer.status_code == 401 and error_of(answer, "v2")[0] == "301"
    assert http.post(f"{root}/Login", json=CREDENTIALS, timeout=5).status_code == 200
    assert http.get(f"{root}/Items('A000')", timeout=5).status_code == 200


def test_logout_ends_the_session(connect):
    http, root = connect("v1")
    assert http.post(f"{root}/Logout", timeout=5).status_code == 204
    assert http.get(f"{root}/Items", timeout=5).status_code == 401


def test_admin_expiry_and_harness_session_faults_answer_301(sim, connect, server):
    http, root = connect("v2")
    requests.post(f"{server.url}/_admin/expire-sessions", timeout=5)
    assert http.get(f"{root}/Items", timeout=5).status_code == 401
    # Given a plan that expires every second call carrying a session
    http.post(f"{root}/Login", json=CREDENTIALS, timeout=5)
    sim.faults.set(FaultPlan(session_expiry=[SessionExpiry(every=2)]))
    first, second = (http.get(f"{root}/Items('A000')", timeout=5) for _ in range(2))
    assert first.status_code == 200
    assert second.status_code == 401 and error_of(second, "v2") == ("301", "Invalid session or session already timeout.")
    # Then the session really is dead (the harness expired it)
    sim.faults.clear()
    assert http.get(f"{root}/Items('A000')", timeout=5).status_code == 401
    assert [c.fault for c in sim.calls.list(operation="Items.GET")][-2:] == ["session_expired", None]


def test_v1_session_error_can_take_the_production_log_form(sim, server):
    sim.seed({"service_layer": {"v1_session_error": "dump"}})
    answer = requests.get(f"{server.url}/b1s/v1/Items", timeout=5)
    assert answer.json() == {"error": {"code": "301", "message": "Invalid session or session already timeout."}}


def test_ping_needs_no_session(server):
    answer = requests.get(f"{server.url}/ping/", timeout=5).json()
    assert answer["message"] == "pong" and answer["sender"] == "load balancer"
