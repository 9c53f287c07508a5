"""The /_admin/ routes over HTTP: seed, faults, ledger, calls, reset."""
from __future__ import annotations

import pytest


@pytest.fixture
def admin(toy_server):
    return f"{toy_server.url}/_admin"


def test_seed_then_read_the_true_ledger(toy, admin, toy_server, logged_in):
    # Given balances seeded over HTTP
    seeded = logged_in.post(f"{admin}/seed", json={
        "balances": [
            {"sku": "A", "warehouse": "WH1", "qty": "10"},
            {"sku": "B", "warehouse": "WH1", "bin": "A-01-01", "lot": "L1", "qty": 2.5},
        ],
        "warehouse_allow_negative": {"WH2": True},
    }, timeout=5)
    assert seeded.json() == {"seeded": True}
    # When a push moves stock (WH2 may go negative)
    lines = {"lines": [{"sku": "A", "warehouse": "WH1", "qty": "-3"}, {"sku": "A", "warehouse": "WH2", "qty": "-1.50"}]}
    assert logged_in.post(f"{toy_server.url}/api/stock/SO-1", json=lines, timeout=5).ok
    # Then the admin ledger shows every balance as a decimal string
    ledger = logged_in.get(f"{admin}/ledger", timeout=5).json()
    assert ledger == {"balances": [
        {"sku": "A", "warehouse": "WH1", "bin": None, "lot": None, "qty": "7"},
        {"sku": "A", "warehouse": "WH2", "bin": None, "lot": None, "qty": "-1.50"},
        {"sku": "B", "warehouse": "WH1", "bin": "A-01-01", "lot": "L1", "qty": "2.5"},
    ]}
    # and with ?history=1 the postings too
    [posting] = logged_in.get(f"{admin}/ledger?history=1", timeout=5).json()["history"]
    assert (posting["document_ref"], posting["kind"]) == ("SO-1", "post")
    assert [e["qty_delta"] for e in posting["entries"]] == ["-3", "-1.50"]


def test_bad_seed_data_is_a_400_that_says_what(admin, http):
    for body, message in [
        ({"balances": [{"sku": "A", "qty": "1"}]}, "balances[0]"),
        ({"balances": [{"sku": "A", "warehouse": "WH1", "qty": "lots"}]}, "not a number"),
        ({"items": []}, "items: unknown seed key"),
    ]:
        answer = http.post(f"{admin}/seed", json=body, timeout=5)
        assert answer.status_code == 400 and message in answer.json()["error"], answer.text
    assert http.post(f"{admin}/seed", data="{", timeout=5).status_code == 400


def test_set_read_and_clear_the_fault_plan(toy, admin, toy_server, logged_in):
    # When a plan is set over HTTP
    plan = {"seed": 3, "errors": [{"rate": 1.0, "status": 500, "operation": "ping", "max_count": 1}]}
    assert logged_in.post(f"{admin}/faults", json=plan, timeout=5).json()["plan"]["errors"][0]["status"] == 500
    # Then it is in force, and reading it back shows how often it fired
    assert logged_in.get(f"{toy_server.url}/api/ping", timeout=5).status_code == 500
    current = logged_in.get(f"{admin}/faults", timeout=5).json()
    assert current["plan"]["seed"] == 3 and current["fired"] == {"errors[0]": 1}
    # When it is cleared with an empty plan, Then nothing is injected
    logged_in.post(f"{admin}/faults", json={"errors": [{"rate": 1.0}]}, timeout=5)
    logged_in.post(f"{admin}/faults", json={}, timeout=5)
    assert logged_in.get(f"{toy_server.url}/api/ping", timeout=5).status_code == 200
    assert toy.faults.plan.empty


def test_a_bad_fault_plan_is_a_400_naming_the_field(toy, admin, http):
    answer = http.post(f"{admin}/faults", json={"rate_limits": [{"limit": 0}]}, timeout=5)
    assert answer.status_code == 400
    assert answer.json()["error"].startswith("rate_limits[0].limit: must be at least 1")
    assert toy.faults.plan.empty


def test_calls_are_listed_and_filtered_and_admin_calls_are_not_logged(admin, toy_server, logged_in):
    logged_in.get(f"{toy_server.url}/api/ping", timeout=5)
    logged_in.get(f"{admin}/ledger", timeout=5)
    calls = logged_in.get(f"{admin}/calls", timeout=5).json()["calls"]
    assert [(c["method"], c["path"], c["operation"], c["status"]) for c in calls] == [
        ("POST", "/api/login", "login", 200), ("GET", "/api/ping", "ping", 200)]
    assert isinstance(calls[0]["started"], float) and calls[0]["fault"] is None
    only = logged_in.get(f"{admin}/calls", params={"operation": "pi*", "status": "200"}, timeout=5).json()["calls"]
    assert [c["operation"] for c in only] == ["ping"]


def test_reset_forgets_everything(toy, admin, toy_server, logged_in):
    logged_in.post(f"{admin}/seed", json={"balances": [{"sku": "A", "warehouse": "WH1", "qty": "5"}]}, timeout=5)
    logged_in.post(f"{admin}/faults", json={"latency": [{"fixed": 0.001}]}, timeout=5)
    assert logged_in.post(f"{admin}/reset", timeout=5).json() == {"reset": True}
    assert logged_in.get(f"{admin}/ledger", timeout=5).json() == {"balances": []}
    assert logged_in.get(f"{admin}/calls", timeout=5).json() == {"calls": []}
    assert toy.faults.plan.empty
    assert logged_in.get(f"{toy_server.url}/api/ping", timeout=5).status_code == 401  # sessions gone


def test_unknown_admin_routes_and_methods(admin, http):
    assert http.get(f"{admin}/nothing", timeout=5).status_code == 404
    assert http.get(f"{admin}/reset", timeout=5).status_code == 405
