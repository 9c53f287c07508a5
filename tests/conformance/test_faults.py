"""Each injected fault maps to the error that tells the engine what to do next (DESIGN.md §4).

Faults are set through the simulator's fault plan (``sandbox/faults.py``); rules aimed at the
push or at reads use the target's ``push_fault_target`` / ``read_fault_target`` extras.
"""
from __future__ import annotations

import time

import pytest

from connectors.base import Entity
from connectors.errors import Action, Ambiguous, RateLimited, Transient
from tests.conformance.kit import (
    STANDARD_WORLD,
    expected_change,
    extra,
    fresh_key,
    ledger_change,
    ledger_snapshot,
    movement,
)
from tests.conformance.test_push import some_kind

SLOW = 0.8  # seconds of injected latency
TIMEOUT = 0.25  # the connector's read timeout in the latency tests


def _rule(target, which: str, **fields):
    return {**dict(extra(target, which)), **fields}


def test_503_is_transient(sim, connector) -> None:
    # Given every call answers 503 without Retry-After
    connector.check()
    sim.faults.set({"errors": [{"status": 503}]})
    # When the connector checks, reads and pushes
    for call in (connector.check, lambda: list(connector.read(Entity.ITEMS)), lambda: list(connector.read_balances())):
        with pytest.raises(Transient) as failed:
            call()
        # Then each is a plain Transient: retry with backoff
        assert type(failed.value) is Transient and failed.value.action is Action.RETRY
    mv, key = movement(some_kind(connector)), fresh_key()
    before = ledger_snapshot(sim)
    with pytest.raises(Transient) as pushed:
        connector.push(mv, key)
    assert not isinstance(pushed.value, RateLimited)
    # and a refused push changed nothing
    assert ledger_change(before, ledger_snapshot(sim)) == {}
    sim.faults.clear()
    assert sim.documents_for(key) == [] and connector.find(key) is None


def test_429_with_retry_after_is_rate_limited(sim, connector) -> None:
    connector.check()
    sim.faults.set({"errors": [{"status": 429, "retry_after": 7}]})
    with pytest.raises(RateLimited) as limited:
        list(connector.read(Entity.ITEMS))
    assert limited.value.retry_after is not None and limited.value.retry_after >= 7
    assert limited.value.action is Action.RETRY
    with pytest.raises(RateLimited) as pushed:
        connector.push(movement(some_kind(connector)), fresh_key())
    assert pushed.value.retry_after is not None and pushed.value.retry_after >= 7


def test_rate_limit_window_is_rate_limited(sim, connector) -> None:
    # Given a vendor limit of 2 calls a minute
    connector.check()
    sim.faults.set({"rate_limits": [{"limit": 2, "period": 60}]})
    # When a paged read makes more calls than that
    with pytest.raises(RateLimited) as limited:
        list(connector.read(Entity.ITEMS, page_size=min(2, connector.capabilities.max_page_size)))
    # Then the error says to wait at least as long as the vendor asked
    refused = [c for c in sim.calls.list() if c.fault == "rate_limited"]
    assert refused, "the simulator refused nothing"
    assert limited.value.retry_after is not None
    assert limited.value.retry_after >= max(c.retry_after for c in refused)


def test_lost_answer_after_commit_is_ambiguous_then_found(target, sim, connector) -> None:
    # Given the answer to the committing call of the next push is lost
    connector.check()
    sim.faults.set({"drop_after_commit": [_rule(target, "push_fault_target", max_count=1)]})
    mv, key = movement(some_kind(connector)), fresh_key()
    before = ledger_snapshot(sim)
    # When the connector pushes
    with pytest.raises(Ambiguous) as unknown:
        connector.push(mv, key)
    assert unknown.value.action is Action.RECONCILE
    assert sim.faults.fired().get("drop_after_commit[0]") == 1
    # Then find() settles it: the document is there and the stock moved once
    found = connector.find(key)
    assert found is not None and found.key == key
    assert ledger_change(before, ledger_snapshot(sim)) == expected_change(mv)
    # And pushing again with the key creates nothing new
    again = connector.push(mv, key)
    assert again.document_id == found.document_id and again.created is False
    assert len(sim.documents_for(key)) == 1
    assert ledger_change(before, ledger_snapshot(sim)) == expected_change(mv)


def test_session_expiry_mid_run_is_one_relogin(target, sim, connector) -> None:
    login = extra(target, "login_operation")
    connector.check()
    # Given a paged read under way
    pages = connector.read(Entity.ITEMS, page_size=min(3, connector.capabilities.max_page_size))
    first = next(pages)
    logins = len(sim.calls.list(operation=login)) if login else 0
    # When the vendor expires the session on the next call
    sim.faults.set({"session_expiry": [{"every": 1, "max_count": 1}]})
    records = list(first.records) + [r for page in pages for r in page.records]
    # Then the read carries on after one re-login, losing nothing
    assert sim.faults.fired().get("session_expiry[0]") == 1, "no call carried a session"
    assert sorted(r.sku for r in records) == sorted(i.sku for i in STANDARD_WORLD.items)
    if login:
        assert len(sim.calls.list(operation=login)) == logins + 1
    # And when every session dies, a push logs in again and posts once
    sim.expire_sessions()
    mv, key = movement(some_kind(connector)), fresh_key()
    before = ledger_snapshot(sim)
    receipt = connector.push(mv, key)
    assert ledger_change(before, ledger_snapshot(sim)) == expected_change(mv)
    assert len(sim.documents_for(key)) == 1 and receipt.created


def test_slow_read_is_transient(target, sim, connect) -> None:
    connector = connect(read_timeout=TIMEOUT)
    connector.check()
    # Given reads answer later than the connector waits
    sim.faults.set({"latency": [_rule(target, "read_fault_target", fixed=SLOW)]})
    # When it reads
    started = time.monotonic()
    with pytest.raises(Transient) as failed:
        list(connector.read(Entity.ITEMS))
    # Then the timeout is a retryable Transient: a read is safe to send again
    assert not isinstance(failed.value, Ambiguous) and failed.value.action is Action.RETRY
    assert time.monotonic() - started < SLOW * 4


def test_slow_push_is_ambiguous(target, sim, connect) -> None:
    connector = connect(read_timeout=TIMEOUT)
    connector.check()
    # Given the committing call of a push answers later than the connector waits
    sim.faults.set({"latency": [_rule(target, "push_fault_target", fixed=SLOW, max_count=1)]})
    mv, key = movement(some_kind(connector)), fresh_key()
    before = ledger_snapshot(sim)
    # When it pushes
    with pytest.raises(Ambiguous) as unknown:
        connector.push(mv, key)
    # Then the outcome is unknown (check before sending again), and find() settles it once the
    # vendor has finished: a multi-call connector may first see its document half-way (posted=False)
    assert unknown.value.action is Action.RECONCILE
    deadline = time.monotonic() + SLOW * 5
    found = connector.find(key)
    while (found is None or not found.posted) and time.monotonic() < deadline:
        time.sleep(0.05)
        found = connector.find(key)
    assert found is not None and found.posted
    assert found.created is False
    assert ledger_change(before, ledger_snapshot(sim)) == expected_change(mv)
