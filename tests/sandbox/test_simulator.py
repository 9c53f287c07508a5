"""The toy ERP over real loopback HTTP: faults as a client sees them, and the call log."""
from __future__ import annotations

import time
from decimal import Decimal
from email.utils import parsedate_to_datetime

import pytest
import requests

from sandbox.faults import DropAfterCommit, ErrorFault, FaultPlan, RateLimit, SessionExpiry
from sandbox.ledger import StockKey

LINES = {"lines": [{"sku": "A", "warehouse": "WH1", "qty": "-2"}]}


@pytest.fixture
def stocked(toy):
    toy.ledger.seed_balances({StockKey("A", "WH1"): Decimal("10")})
    return toy


def test_a_push_changes_the_ledger_and_is_logged(stocked, toy_server, logged_in):
    answer = logged_in.post(f"{toy_server.url}/api/stock/SO-1", json=LINES, timeout=5)
    assert answer.json() == {"ok": True, "ref": "SO-1"}
    assert stocked.ledger.balance("A", "WH1") == Decimal("8")
    [login, push] = stocked.calls.list()
    assert (push.method, push.path, push.operation, push.status, push.fault) == (
        "POST", "/api/stock/SO-1", "post_stock", 200, None)
    assert login.operation == "login" and login.seq < push.seq and push.started <= push.finished


def test_negative_stock_is_refused_in_the_vendor_envelope(stocked, toy_server, logged_in):
    lines = {"lines": [{"sku": "A", "warehouse": "WH1", "qty": "-11"}, {"sku": "B", "warehouse": "WH1", "qty": "-1"}]}
    answer = logged_in.post(f"{toy_server.url}/api/stock/SO-1", json=lines, timeout=5)
    assert answer.status_code == 400
    assert [(l["sku"], l["on_hand"], l["requested"]) for l in answer.json()["lines"]] == [
        ("A", "10", "11"), ("B", "0", "1")]
    assert stocked.ledger.balance("A", "WH1") == Decimal("10")


def test_error_rate_one_gives_the_configured_status(toy, toy_server, logged_in):
    # Given every push fails with 503 (pings are not targeted)
    toy.faults.set(FaultPlan(errors=[ErrorFault(rate=1.0, status=503, operation="post_stock", retry_after=2)]))
    # When the client pushes
    answers = [logged_in.post(f"{toy_server.url}/api/stock/SO-{i}", json=LINES, timeout=5) for i in range(3)]
    # Then each push gets 503 with Retry-After in the toy envelope, and nothing is posted
    assert {(a.status_code, a.headers["Retry-After"], a.json()["code"]) for a in answers} == {(503, "2", "error")}
    assert logged_in.get(f"{toy_server.url}/api/ping", timeout=5).status_code == 200
    assert toy.ledger.history() == ()
    assert [c.fault for c in toy.calls.list(operation="post_stock")] == ["error"] * 3


def test_a_configured_body_replaces_the_envelope(toy, toy_server, logged_in):
    toy.faults.set(FaultPlan(errors=[ErrorFault(status=502, body="Bad Gateway", operation="ping")]))
    answer = logged_in.get(f"{toy_server.url}/api/ping", timeout=5)
    assert (answer.status_code, answer.text) == (502, "Bad Gateway")


def test_seeded_error_sequences_are_reproducible_over_http(toy, toy_server, logged_in):
    def statuses() -> list[int]:
        toy.faults.set(FaultPlan(seed=42, errors=[ErrorFault(rate=0.5, operation="ping")]))
        return [logged_in.get(f"{toy_server.url}/api/ping", timeout=5).status_code for _ in range(30)]

    first = statuses()
    assert first == statuses()
    assert set(first) == {200, 503}


@pytest.mark.parametrize("fmt", ["seconds", "http-date"])
def test_rate_limit_gives_429_with_retry_after_and_no_call_is_accepted_inside_the_window(toy, toy_server, logged_in, fmt):
    # Given at most 5 pings per second
    toy.faults.set(FaultPlan(rate_limits=[RateLimit(limit=5, operation="ping", retry_after_format=fmt)]))
    url = f"{toy_server.url}/api/ping"
    # When a client fires 8 pings at once, then honours Retry-After and pings again
    burst = [logged_in.get(url, timeout=5) for _ in range(8)]
    refused = [a for a in burst if a.status_code == 429]
    assert len(refused) >= 3
    header = refused[0].headers["Retry-After"]
    if fmt == "seconds":
        assert header.isdigit() and int(header) >= 1
        wait = int(header)
    else:
        wait = parsedate_to_datetime(header).timestamp() - time.time()
    time.sleep(max(wait, 0) + 0.05)
    assert logged_in.get(url, timeout=5).status_code == 200
    # Then the call log shows no accepted ping inside any advertised Retry-After window
    pings = toy.calls.list(operation="ping")
    windows = [(c.started, c.started + c.retry_after) for c in pings if c.fault == "rate_limited"]
    assert windows
    accepted = [c.started for c in pings if c.accepted]
    assert [t for t in accepted for start, end in windows if start <= t < end] == []
    assert all(c.status == 429 for c in pings if c.fault == "rate_limited")


def test_session_expiry_decision_expires_the_session(toy, toy_server, logged_in):
    # Given every 3rd call with a session finds it expired
    toy.faults.set(FaultPlan(session_expiry=[SessionExpiry(every=3)]))
    url = f"{toy_server.url}/api/ping"
    # When the client calls three times
    statuses = [logged_in.get(url, timeout=5).status_code for _ in range(3)]
    # Then the third gets 401, and the session is really gone for the next call too
    assert statuses == [200, 200, 401]
    assert toy.calls.list()[-1].fault == "session_expired"
    again = logged_in.get(url, timeout=5)
    assert (again.status_code, again.json()["code"]) == (401, "auth")
    assert len(toy.sessions) == 0


def test_expire_all_sessions_now(toy, toy_server, logged_in):
    assert logged_in.get(f"{toy_server.url}/api/ping", timeout=5).ok
    assert logged_in.post(f"{toy_server.url}/_admin/expire-sessions", timeout=5).json() == {"expired": True}
    assert logged_in.get(f"{toy_server.url}/api/ping", timeout=5).status_code == 401


def test_drop_after_commit_commits_but_the_client_gets_a_connection_error(stocked, toy_server, logged_in):
    # Given the first push's answer will be lost after its commit
    stocked.faults.set(FaultPlan(drop_after_commit=[DropAfterCommit(rate=1.0, max_count=1, operation="post_stock")]))
    # When the client pushes
    with pytest.raises(requests.ConnectionError):
        logged_in.post(f"{toy_server.url}/api/stock/SO-1", json=LINES, timeout=5)
    # Then the stock moved anyway, and the log shows a dropped call with no status
    assert stocked.ledger.balance("A", "WH1") == Decimal("8")
    assert stocked.ledger.is_posted("SO-1")
    dropped = stocked.calls.list(operation="post_stock")[-1]
    assert (dropped.status, dropped.fault, dropped.accepted) == (None, "dropped", True)
    # and a resend of the same document is refused by the ledger, not posted twice
    resend = logged_in.post(f"{toy_server.url}/api/stock/SO-1", json=LINES, timeout=5)
    assert resend.status_code == 409
    assert stocked.ledger.balance("A", "WH1") == Decimal("8")


def test_latency_delays_the_answer(toy, toy_server, logged_in):
    toy.faults.set({"latency": [{"fixed": 0.2, "operation": "ping"}]})
    started = time.perf_counter()
    assert logged_in.get(f"{toy_server.url}/api/ping", timeout=5).ok
    assert time.perf_counter() - started >= 0.2


def test_unrouted_paths_are_logged_but_not_faulted(toy, toy_server, http):
    toy.faults.set(FaultPlan(errors=[ErrorFault(rate=1.0)]))
    answer = http.get(f"{toy_server.url}/api/nowhere", timeout=5)
    assert answer.status_code == 404
    [call] = toy.calls.list()
    assert (call.path, call.operation, call.status, call.fault) == ("/api/nowhere", None, 404, None)
