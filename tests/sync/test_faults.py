"""RELIABILITY.md §6(i) fault matrix, push side, against the real simulators (scaled down).

Each test enqueues movements, injects the fault through the simulator's fault plan, delivers
with the production policy scaled 1000× faster, and checks the history: lost = 0 and
duplicated = 0 against ``sim.documents_for(key)``, and every ledger moved exactly by the
movements marked sent.
"""
from __future__ import annotations

import threading
import time
from decimal import Decimal
from itertools import cycle, islice

import pytest
from sqlalchemy import select

from canonical import Movement, MovementKind
from connectors.base import ConnectionSettings
from sync import errorqueue
from sync.connections import Connections
from sync.push import payload_of
from sync.store import ErrorQueue, ErrorStatus, Outbox, OutboxStatus, Store
from tests.conformance.kit import Clock, movement
from tests.sync.conftest import KINGDEE, REFERENCE, _target
from tests.sync.test_delivery_history import History, drain, fast_policy, outcomes

KINGDEE_SESSION = _target("tests.conformance.targets.kingdee", "kingdee-session")
SAP_B1 = _target("tests.conformance.targets.sap_b1", "sap_b1")

# Items whose opening stock and units make simple single-line movements valid everywhere.
SKUS = ("TS-001", "TS-002", "SH-001", "RICE-5", "SOCK-3", "BAG-01", "OIL-1", "WATER-24", "GLV-01", "CAP-01")
WAREHOUSES = ("WH01", "WH02")


def receipts(n: int, *, qty: str = "1", exclude: tuple[tuple[str, str], ...] = ()) -> list[Movement]:
    """``n`` single-line count gains spread over sku × warehouse (20 ordering keys, less ``exclude``)."""
    positions = islice(cycle([(s, w) for s in SKUS for w in WAREHOUSES if (s, w) not in exclude]), n)
    return [movement("count_gain", lines=[(sku, qty)], dest=wh) for sku, wh in positions]


def poison_issue(sku: str = "SH-001", qty: str = "100000") -> Movement:
    """A sales issue of far more than there is: every vendor refuses it (negative stock)."""
    return movement("sales_issue", lines=[(sku, qty)], source="WH01")


def with_settings(store: Store, running, name: str, **overrides) -> Connections:
    """The running systems' connections, with ``name``'s settings changed (e.g. a short read timeout)."""
    settings: dict[str, ConnectionSettings] = dict(running.connections.settings)
    settings[name] = settings[name].model_copy(update=overrides)
    connections = Connections(store, settings, factory=lambda n, s: running.targets[n].build(s))
    return connections


def dead_letters(store: Store) -> list[ErrorQueue]:
    with store.session() as s:
        return list(s.scalars(select(ErrorQueue).order_by(ErrorQueue.id)))


# -- F1 ---------------------------------------------------------------------------------------------


def test_f1_random_503s_are_retried_until_everything_is_delivered(store, systems) -> None:
    # Given Kingdee answers 20% of all calls with 503
    running = systems(kd=KINGDEE)
    history = History(store, running)
    history.enqueue(receipts(40), ["kd"])
    running.sims["kd"].faults.set({"seed": 7, "errors": [{"status": 503, "rate": 0.2}]})
    # When the worker delivers
    results = drain(store, running.connections, fast_policy())
    # Then all are delivered once, nothing is dead-lettered, and the faults really happened
    fired = running.sims["kd"].faults.fired()["errors[0]"]
    assert fired >= 10
    assert outcomes(r for r in results if r.outcome == "sent") == {"sent": 40}
    report = history.check()
    report.assert_clean()
    assert report.sent == 40 and dead_letters(store) == []


# -- F2 ---------------------------------------------------------------------------------------------


def test_f2_no_request_inside_a_retry_after_window(store, systems, monkeypatch) -> None:
    # Given the reference ERP on real time, answering 429 + Retry-After: 1 on 10% of document
    # calls, and once with an HTTP-date
    monkeypatch.setattr(Clock, "__call__", lambda self: time.time())
    running = systems(ref=REFERENCE)
    sim = running.sims["ref"]
    history = History(store, running)
    history.enqueue(receipts(30), ["ref"])
    sim.faults.set({"seed": 3, "errors": [
        {"path": "/api/documents", "method": "POST", "status": 429, "retry_after": 1,
         "retry_after_format": "http-date", "max_count": 1},
        {"path": "/api/documents", "status": 429, "retry_after": 1, "rate": 0.1},
    ]})
    # When the worker delivers (Retry-After of a second is waited out in the worker)
    results = drain(store, running.connections, fast_policy(max_inline_wait=5))
    # Then no call reached the vendor inside any advertised window
    calls = sim.calls.list(path="/api/documents")
    refused = [c for c in calls if c.retry_after is not None]
    assert len(refused) >= 2 and any(c.retry_after > 0 for c in refused)
    for c in refused:
        early = [later for later in calls if later.seq > c.seq and later.started < c.started + c.retry_after]
        assert early == [], f"call {early[0].seq} came {early[0].started - c.started:.3f} s after a " \
                            f"Retry-After of {c.retry_after} s"
    # And everything was delivered once, with no dead letters
    assert sum(r.outcome == "sent" for r in results) == 30
    history.check().assert_clean()
    assert dead_letters(store) == []


# -- F4 / F5 ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("target", [KINGDEE, REFERENCE], ids=lambda t: t.name)
def test_f4_commit_then_drop_is_settled_by_find_without_resending(store, systems, target) -> None:
    # Given the vendor commits the posting call and then drops the connection, on 10% of pushes
    running = systems(erp=target)
    sim = running.sims["erp"]
    history = History(store, running)
    history.enqueue(receipts(40), ["erp"])
    posting = dict(target.extras["push_fault_target"])
    sim.faults.set({"seed": 11, "drop_after_commit": [{**posting, "rate": 0.1}]})
    # When the worker delivers
    results = drain(store, running.connections, fast_policy())
    # Then the dropped ones were reconciled by find() and marked sent without a second post
    dropped = sim.faults.fired()["drop_after_commit[0]"]
    assert dropped >= 2
    assert sum(r.outcome == "reconcile" for r in results) == dropped
    assert sum(r.settled_by_find for r in results) == dropped
    assert len(sim.calls.list(**posting)) == 40  # one posting call per movement: no resend
    report = history.check()
    report.assert_clean()
    assert report.sent == 40


def test_f5_slow_commit_is_reconciled_after_it_lands(store, systems) -> None:
    # Given Kingdee's Audit (the call that posts stock) answers after 0.8 s, twice, and the
    # connector waits 0.25 s for an answer
    running = systems(kd=KINGDEE)
    sim = running.sims["kd"]
    connections = with_settings(store, running, "kd", read_timeout=0.25)
    history = History(store, running)
    history.enqueue(receipts(20), ["kd"])
    sim.faults.set({"seed": 5, "latency": [{"operation": "Audit", "fixed": 0.8, "max_count": 2}]})
    # When the worker delivers, looking up an ambiguous push 0.3 s later (before the slow Audit
    # may have landed: find() then sees the bill submitted, not posted, and push resumes it)
    try:
        results = drain(store, connections, fast_policy(reconcile_delay=300))
        time.sleep(1.0)  # let the slow calls finish on the simulator
    finally:
        connections.close()
    # Then each slow push was ambiguous, settled once; nothing posted twice
    assert sum(r.outcome == "reconcile" for r in results) == 2
    assert sum(r.outcome == "sent" for r in results) == 20
    report = history.check()
    report.assert_clean()
    assert report.sent == 20


# -- F8 / F9 ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("target", [KINGDEE, REFERENCE], ids=lambda t: t.name)
def test_f8_business_error_goes_to_the_error_queue_after_one_attempt(store, systems, target) -> None:
    # Given 30 good movements and 2 the vendor refuses (not enough stock)
    running = systems(erp=target)
    history = History(store, running)
    bad = [poison_issue("SH-001"), poison_issue("BAG-01")]
    history.enqueue(receipts(15) + [bad[0]] + receipts(15) + [bad[1]], ["erp"])
    # When the worker delivers
    drain(store, running.connections, fast_policy())
    # Then the two are in the error queue with the vendor's code and message and the original
    # payload, after exactly one attempt; everything else was delivered
    entries = dead_letters(store)
    assert [e.record_key for e in entries] == [m.reference for m in bad]
    with store.session() as s:
        rows = {r.id: r for r in s.scalars(select(Outbox))}
    for entry, mv in zip(entries, bad, strict=True):
        assert entry.kind == "rejected" and entry.status == ErrorStatus.OPEN
        assert entry.vendor_code == target.extras["rejected_vendor_code"]
        assert entry.message and entry.payload == payload_of(mv)
        assert rows[entry.outbox_id].attempts == 1 and rows[entry.outbox_id].status == OutboxStatus.FAILED
    # the two refusals share one fingerprint: same kind, code and message shape
    assert len({e.fingerprint for e in entries}) == 1
    report = history.check()
    report.assert_clean()
    assert (report.sent, report.failed) == (30, 2)


def test_f9_poison_is_retried_by_the_operator_once_fixed_and_delivered_once(store, systems) -> None:
    # Given a sales issue refused for lack of stock, sitting in the error queue
    running = systems(ref=REFERENCE)
    history = History(store, running)
    poison = poison_issue("SH-001", qty="100")
    history.enqueue([poison], ["ref"])
    drain(store, running.connections, fast_policy())
    [entry] = dead_letters(store)
    # When the cause is fixed (stock arrives through the hub) and an operator retries it
    history.enqueue([movement("count_gain", lines=[("SH-001", "100")], dest="WH01")], ["ref"])
    drain(store, running.connections, fast_policy())
    with store.session() as s:
        first = errorqueue.retry(s, [entry.id], by="alice")
    results = drain(store, running.connections, fast_policy())
    # Then it is delivered once, and its entry resolved
    assert first.changed == [entry.id] and outcomes(results) == {"sent": 1}
    [entry] = dead_letters(store)
    assert entry.status == ErrorStatus.RESOLVED and entry.resolved_at is not None
    # And a second retry is a no-op
    with store.session() as s:
        second = errorqueue.retry(s, [entry.id], by="bob")
    assert second.changed == [] and second.skipped == [(entry.id, "is resolved, not open")]
    assert drain(store, running.connections, fast_policy()) == []
    report = history.check()
    report.assert_clean()
    assert report.sent == 2


# -- F14 --------------------------------------------------------------------------------------------------


def test_f14_session_expiry_costs_one_relogin_each(store, systems) -> None:
    # Given Kingdee with session logins, expiring the session on every 10th call
    running = systems(kd=KINGDEE_SESSION)
    sim = running.sims["kd"]
    history = History(store, running)
    history.enqueue(receipts(30), ["kd"])
    running.connections.connector("kd").check()  # logged in
    logins_before = len(sim.calls.list(operation="ValidateUser"))
    sim.faults.set({"session_expiry": [{"every": 10}]})
    # When the worker delivers
    results = drain(store, running.connections, fast_policy())
    # Then each expiry cost exactly one re-login, and all went out once with no dead letters
    expired = sim.faults.fired()["session_expiry[0]"]
    assert expired >= 5
    assert len(sim.calls.list(operation="ValidateUser")) - logins_before == expired
    assert sum(r.outcome == "sent" for r in results) == 30 and dead_letters(store) == []
    history.check().assert_clean()


# -- F15 --------------------------------------------------------------------------------------------------


def test_f15_partial_batch_failure_sends_the_rest_once(store, systems) -> None:
    # Given 20 movements for SAP B1 ($batch) on 20 different stock positions, 3 of which it
    # refuses
    running = systems(sap=SAP_B1)
    sim = running.sims["sap"]
    history = History(store, running)
    bad = [poison_issue("SH-001"), poison_issue("BAG-01"), poison_issue("OIL-1")]
    good = receipts(17, exclude=(("SH-001", "WH01"), ("BAG-01", "WH01"), ("OIL-1", "WH01")))
    history.enqueue(good[:5] + [bad[0]] + good[5:11] + [bad[1]] + good[11:] + [bad[2]], ["sap"])
    assert running.connections.connector("sap").capabilities.max_batch > 1
    # When the worker delivers
    results = drain(store, running.connections, fast_policy())
    # Then 17 are sent with the vendor's ids from one push_many call (the connector splits the
    # $batch after each refused changeset), the 3 are in the error queue after that one attempt,
    # and nothing is sent again
    assert outcomes(results) == {"sent": 17, "dead_letter": 3}
    assert all(r.document_id for r in results if r.outcome == "sent" and r.attempts == 1)
    batches = len(sim.calls.list(path="*$batch"))
    assert 1 <= batches <= 1 + len(bad)
    assert sorted(e.record_key for e in dead_letters(store)) == sorted(m.reference for m in bad)
    assert drain(store, running.connections, fast_policy()) == []
    assert len(sim.calls.list(path="*$batch")) == batches
    report = history.check()
    report.assert_clean()
    assert (report.sent, report.failed) == (17, 3)


# -- F17 --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("target", [KINGDEE, REFERENCE], ids=lambda t: t.name)
def test_f17_movements_for_the_same_stock_arrive_in_order(store, systems, target) -> None:
    # Given chains on stock that does not exist yet: receive into WH01, transfer WH01 → WH02,
    # issue from WH02 (gloves and caps start at zero in WH01/WH02)
    running = systems(erp=target)
    history = History(store, running)
    chains = []
    for sku in ("GLV-01", "CAP-01"):
        chains += [movement("purchase_receipt", lines=[(sku, "10")], dest="WH01"),
                   movement("transfer", lines=[(sku, "10")], source="WH01", dest="WH02"),
                   movement("sales_issue", lines=[(sku, "4")], source="WH02")]
    history.enqueue(chains + receipts(10), ["erp"])
    # When one worker delivers them in batches
    drain(store, running.connections, fast_policy())
    # Then each chain was posted in order: nothing refused, the final stock is the fold
    assert dead_letters(store) == []
    report = history.check()
    report.assert_clean()
    assert report.sent == 16
    sim = running.sims["erp"]
    balances = {(k.sku, k.warehouse): q for k, q in sim.ledger.balances().items() if not k.bin}
    assert balances[("GLV-01", "WH02")] == Decimal(6)


# -- F18 --------------------------------------------------------------------------------------------------


def _two_operators_retry(store: Store, ids: list[int]) -> list[errorqueue.ActionResult]:
    barrier = threading.Barrier(2)
    results: list[errorqueue.ActionResult] = []
    errors: list[BaseException] = []

    def operator(name: str) -> None:
        try:
            barrier.wait()
            with store.session() as s:
                results.append(errorqueue.retry(s, ids, by=name))
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=operator, args=(n,)) for n in ("alice", "bob")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    return results


def _f18(store: Store, running, connections: Connections) -> None:
    sim = running.sims["ref"]
    # Given 50 issues refused for lack of stock, in the error queue
    with store.session() as s:
        from sync.push import enqueue_many

        enqueue_many(s, [poison_issue("GLV-01", qty="1") for _ in range(50)], ["ref"], connections=connections)
    drain(store, connections, fast_policy(), limit=50)
    entries = dead_letters(store)
    assert len(entries) == 50
    # When stock arrives and two operators retry the same 50 entries at the same moment
    sim.ledger.seed_balances({("GLV-01", "WH01", None, None): 50})
    results = _two_operators_retry(store, [e.id for e in entries])
    # Then each entry was re-queued by exactly one of them
    changed = [set(r.changed) for r in results]
    assert changed[0].isdisjoint(changed[1]) and changed[0] | changed[1] == {e.id for e in entries}
    # And each row is delivered once, the entries resolved, and the stock used exactly once
    delivered = drain(store, connections, fast_policy(), limit=50)
    assert outcomes(delivered) == {"sent": 50}
    assert {e.status for e in dead_letters(store)} == {ErrorStatus.RESOLVED}
    with store.session() as s:
        keys = list(s.scalars(select(Outbox.idempotency_key)))
    assert all(len(sim.documents_for(k)) == 1 for k in keys)
    assert sim.ledger.balances().get(("GLV-01", "WH01", None, None), 0) == 0


def test_f18_two_operators_retry_the_same_rows_sqlite(store, systems) -> None:
    running = systems(ref=REFERENCE)
    _f18(store, running, running.connections)


@pytest.mark.postgres
def test_f18_two_operators_retry_the_same_rows_postgres(systems, pg_store) -> None:
    running = systems(ref=REFERENCE)
    connections = Connections(pg_store, running.connections.settings, factory=lambda n, s: running.targets[n].build(s))
    try:
        _f18(pg_store, running, connections)
    finally:
        connections.close()


@pytest.fixture
def pg_store(postgres_url):
    import uuid

    from sqlalchemy import create_engine, make_url

    schema = f"test_sync_{uuid.uuid4().hex[:12]}"
    admin = create_engine(postgres_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
    store = Store.open(make_url(postgres_url).update_query_dict({"options": f"-csearch_path={schema}"}))
    try:
        store.upgrade()
        yield store
    finally:
        store.close()
        with admin.connect() as connection:
            connection.exec_driver_sql(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        admin.dispose()


def test_kinds_used_here_are_canonical() -> None:
    assert {MovementKind.count_gain, MovementKind.sales_issue} <= set(MovementKind)


# -- F2 / P8 with several worker threads ----------------------------------------------------------


def test_f2_a_retry_after_holds_every_worker_thread(store, systems, monkeypatch) -> None:
    from sync.delivery import deliver_due
    from sync.ratelimit import RateLimiters

    # Given the reference ERP on real time, accepting 5 document POSTs per second (then 429 +
    # Retry-After), and four worker threads sharing a limiter set far too high (40/s)
    monkeypatch.setattr(Clock, "__call__", lambda self: time.time())
    running = systems(ref=REFERENCE)
    sim = running.sims["ref"]
    history = History(store, running)
    history.enqueue(receipts(24), ["ref"])
    sim.faults.set({"rate_limits": [{"method": "POST", "path": "/api/documents", "limit": 5, "period": 1.0}]})
    limiters = RateLimiters({"ref": 40.0}, headroom=1.0)
    policy = fast_policy(max_inline_wait=5)
    deadline = time.monotonic() + 60

    def worker(n: int) -> None:
        while time.monotonic() < deadline:
            deliver_due(store, running.connections, worker_id=f"w{n}", limit=2, policy=policy, limiters=limiters)
            with store.session() as s:
                if not s.scalar(select(Outbox.id).where(Outbox.status != OutboxStatus.SENT).limit(1)):
                    return
            time.sleep(0.01)

    # When they deliver side by side
    threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # Then the vendor did refuse some (our limiter let too much through)...
    posts = sim.calls.list(method="POST", path="/api/documents")
    refused = [c for c in posts if c.fault == "rate_limited"]
    assert refused, "the rate limit never fired"
    # ...but after a refusal was answered, no thread sent a POST inside its Retry-After window
    # (a POST already on its way when the 429 came back cannot be recalled: 50 ms grace)
    for c in refused:
        early = [p for p in posts if c.finished + 0.05 < p.started < c.started + c.retry_after]
        assert early == [], f"POST {early[0].seq} came {early[0].started - c.started:.3f} s after a " \
                            f"Retry-After of {c.retry_after} s (refused call {c.seq})"
    # And without the hold the refusals cascade; with it they stay a small share
    assert len(refused) <= len(posts) // 3
    assert sum(1 for c in posts if c.accepted) == 24
    history.check().assert_clean()
