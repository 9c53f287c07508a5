"""sync.metrics against the reference and Kingdee simulators: the store's gauges and this process's
counters as Prometheus would read them (parsed with prometheus_client's own parser), and the
HTTP endpoint over loopback."""
from __future__ import annotations

import functools
import urllib.request
from collections.abc import Iterator

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from connectors import observe
from connectors.errors import RateLimited, Rejected, Transient
from sync import metrics
from sync.delivery import pause_connection
from sync.pull import pull
from sync.retry import RetryPolicy
from sync.store import Store
from tests.conformance.kit import movement
from tests.sync.conftest import KINGDEE, REFERENCE, _target
from tests.sync.test_delivery_history import History, drain, fast_policy
from tests.sync.test_faults import KINGDEE_SESSION, SAP_B1, poison_issue, receipts

SAP_B1_DI = _target("tests.conformance.targets.sap_b1", "sap_b1-di")


@pytest.fixture
def counters() -> Iterator[metrics.EventCounters]:
    with metrics.use_counters() as fresh:
        yield fresh


def scrape(store: Store) -> dict[tuple[str, frozenset], float]:
    """Every sample of a scrape: (sample name, labels) -> value."""
    text = generate_latest(metrics.registry_for(store)).decode("utf-8")
    return parse(text)


def parse(text: str) -> dict[tuple[str, frozenset], float]:
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(samples: dict, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


def names(samples: dict) -> set[str]:
    return {name for name, _ in samples}


def test_outbox_and_error_queue_gauges_follow_delivery(store, systems, counters) -> None:
    # Given three good movements and one the reference ERP refuses (negative stock), for it and Kingdee
    running = systems(ref=REFERENCE, kd=KINGDEE)
    history = History(store, running)
    good = [movement("purchase_receipt", lines=[(sku, "1")]) for sku in ("TS-001", "SH-001", "BAG-01")]
    history.enqueue(good, ["ref", "kd"])
    history.enqueue([poison_issue("TS-002")], ["ref"])
    # When Prometheus scrapes before anything is delivered
    before = scrape(store)
    # Then every row is pending, with the age of the oldest, and the store was readable
    assert value(before, "erphub_store_up") == 1
    assert value(before, "erphub_outbox_rows", target="ref", status="pending") == 4
    assert value(before, "erphub_outbox_rows", target="kd", status="pending") == 3
    assert value(before, "erphub_outbox_rows", target="ref", status="failed") == 0
    assert value(before, "erphub_outbox_oldest_undelivered_age_seconds", target="ref") >= 0
    assert "erphub_error_queue_entries" not in names(before)
    assert value(before, "erphub_connection_paused", connection="ref", platform="reference") == 0
    # When a worker delivers everything it can
    drain(store, running.connections, fast_policy())
    after = scrape(store)
    # Then nothing waits, the refused row is failed with one open error-queue entry, ...
    assert value(after, "erphub_outbox_rows", target="ref", status="pending") == 0
    assert value(after, "erphub_outbox_rows", target="ref", status="failed") == 1
    assert value(after, "erphub_outbox_rows", target="kd", status="failed") == 0
    assert ("erphub_outbox_oldest_undelivered_age_seconds", frozenset({("target", "ref")})) not in after
    assert value(after, "erphub_error_queue_entries", connection="ref", kind="rejected", status="open") == 1
    assert value(after, "erphub_error_queue_entries", connection="ref", kind="rejected", status="retrying") == 0
    assert value(after, "erphub_error_queue_oldest_open_age_seconds", connection="ref", kind="rejected") >= 0
    # ... and the counters saw each settled delivery once (sent rows are counted only there)
    assert value(after, "erphub_deliveries_total", target="ref", outcome="sent") == 3
    assert value(after, "erphub_deliveries_total", target="ref", outcome="dead_letter") == 1
    assert value(after, "erphub_deliveries_total", target="kd", outcome="sent") == 3
    assert "erphub_outbox_rows" in names(after) and not any(
        dict(labels).get("status") == "sent" for name, labels in after if name == "erphub_outbox_rows")
    history.check().assert_clean()


def test_a_transient_failure_counts_as_a_retry(store, systems, counters) -> None:
    # Given the reference ERP answers the next request with 503, and no in-process retries
    running = systems(ref=REFERENCE)
    history = History(store, running)
    history.enqueue([movement("purchase_receipt", lines=[("TS-001", "1")])], ["ref"])
    running.sims["ref"].faults.set({"errors": [{"status": 503, "max_count": 1}]})
    # When a worker delivers until nothing is left
    drain(store, running.connections, fast_policy(inline_attempts=1))
    samples = parse(generate_latest(counters.registry).decode())
    # Then one delivery was rescheduled (kind transient) and the next one sent the row
    assert value(samples, "erphub_deliveries_total", target="ref", outcome="retry") == 1
    assert value(samples, "erphub_retries_total", connection="ref", kind="transient", stage="requeued") == 1
    assert value(samples, "erphub_retries_total", connection="ref", kind="transient", stage="in_process") is None
    assert value(samples, "erphub_deliveries_total", target="ref", outcome="sent") == 1
    history.check().assert_clean()


def test_in_process_retries_are_counted_by_connection_and_kind(store, systems, counters) -> None:
    # Given the reference ERP answers the next two requests with 503, and three tries per call
    running = systems(ref=REFERENCE)
    history = History(store, running)
    history.enqueue([movement("purchase_receipt", lines=[("TS-001", "1")])], ["ref"])
    running.sims["ref"].faults.set({"errors": [{"status": 503, "max_count": 2}]})
    # When a worker delivers until nothing is left
    results = drain(store, running.connections, fast_policy(inline_attempts=3))
    samples = parse(generate_latest(counters.registry).decode())
    fired = running.sims["ref"].faults.fired()["errors[0]"]
    # Then the row went out within its one delivery attempt, and each 503 cost one in-process
    # retry, labelled with the connection delivery names; nothing was re-queued
    assert [r.outcome for r in results] == ["sent"] and results[0].attempts == 1
    assert fired == 2
    in_process = {dict(labels)["connection"]: v for (name, labels), v in samples.items()
                  if name == "erphub_retries_total" and dict(labels)["stage"] == "in_process"
                  and dict(labels)["kind"] == "transient"}
    assert in_process == {"ref": fired}
    assert value(samples, "erphub_retries_total", connection="ref", kind="transient", stage="requeued") is None
    history.check().assert_clean()


def test_every_retry_of_retry_policy_call_is_counted(counters) -> None:
    # Given a connector-like object whose call fails twice with Transient, then succeeds
    class Flaky:
        name = "kd"

        def __init__(self) -> None:
            self.calls = 0

        def push(self) -> str:
            self.calls += 1
            if self.calls < 3:
                raise Transient("503")
            return "ok"

    policy = RetryPolicy(scale=0.001, inline_attempts=5, sleep=lambda _s: None)
    flaky = Flaky()
    # When it is called through the policy: its connection is the bound method's owner ...
    assert policy.call(flaky.push) == "ok"
    # ... or the one named by the caller (a wrapped function has no owner)
    other = Flaky()
    assert policy.call(lambda: other.push(), connection="sap") == "ok"
    # ... or the owner of the method a functools.wraps wrapper wraps (a rate-limit gate); else unknown
    third = Flaky()
    third.name = "erp"
    assert policy.call(functools.wraps(third.push)(lambda: third.push())) == "ok"
    fourth = Flaky()
    assert policy.call(lambda: fourth.push()) == "ok"
    # And a batch re-sends two rows after one transient and one rate-limited answer
    policy.batch_wait(1, [Transient("503"), RateLimited("429", retry_after=0.0)], connection="sap")
    # And a refused call is not retried at all
    with pytest.raises(Rejected):
        policy.call(lambda: (_ for _ in ()).throw(Rejected("no")), connection="kd")
    samples = parse(generate_latest(counters.registry).decode())
    # Then each attempt after the first counts once, under its connection
    assert flaky.calls == 3 and other.calls == 3
    assert value(samples, "erphub_retries_total", connection="kd", kind="transient", stage="in_process") == 2
    assert value(samples, "erphub_retries_total", connection="sap", kind="transient", stage="in_process") == 3
    assert value(samples, "erphub_retries_total", connection="sap", kind="rate_limited", stage="in_process") == 1
    assert value(samples, "erphub_retries_total", connection="kd", kind="rejected", stage="in_process") is None
    assert value(samples, "erphub_retries_total", connection="erp", kind="transient", stage="in_process") == 2
    assert value(samples, "erphub_retries_total", connection="unknown", kind="transient", stage="in_process") == 2


@pytest.mark.parametrize("target", [KINGDEE_SESSION, SAP_B1, SAP_B1_DI], ids=lambda t: t.name)
def test_each_transparent_relogin_is_counted(store, systems, counters, target) -> None:
    # Given a target logged in once
    running = systems(erp=target)
    sim = running.sims["erp"]
    login = target.extras["login_operation"]
    history = History(store, running)
    connector = running.connections.connector("erp")
    connector.check()
    logins_before = len(sim.calls.list(operation=login))
    # When the vendor drops every session before each of two deliveries
    for wave in range(2):
        history.enqueue(receipts(3, qty=str(wave + 1)), ["erp"])
        sim.expire_sessions()
        drain(store, running.connections, fast_policy())
    samples = parse(generate_latest(counters.registry).decode())
    # Then each expiry cost one re-login, and each re-login was counted once (the first login
    # was not), labelled with the name the connector gave its client (the connection name when
    # built from a configuration)
    assert len(sim.calls.list(operation=login)) - logins_before == 2
    assert value(samples, "erphub_relogins_total", connection=connector.name) == 2
    history.check().assert_clean()


def test_connector_events_reach_only_current_listeners(counters) -> None:
    seen: list[observe.Event] = []
    unsubscribe = observe.subscribe(seen.append)
    observe.relogin("kd", reason="MsgCode 1")
    unsubscribe()
    observe.relogin("kd", reason="MsgCode 1")
    assert seen == [observe.Event(observe.RELOGIN, "kd", "MsgCode 1")]
    samples = parse(generate_latest(counters.registry).decode())
    assert value(samples, "erphub_relogins_total", connection="kd") == 2  # sync.metrics listens throughout


def test_pull_runs_records_and_watermark(store, systems, counters) -> None:
    # Given the Kingdee simulator with the standard world
    running = systems(kd=KINGDEE)
    # When items are pulled in full, then incrementally
    first = pull(store, running.connections, "kd", "items", mode="full")
    pull(store, running.connections, "kd", "items", mode="incremental")
    samples = scrape(store)
    # Then both runs were counted as started and succeeded, with the records read and written
    assert value(samples, "erphub_runs_started_total", connection="kd", entity="items", mode="full") == 1
    assert value(samples, "erphub_runs_finished_total", connection="kd", entity="items", mode="full",
                 status="succeeded") == 1
    assert value(samples, "erphub_runs_finished_total", connection="kd", entity="items", mode="incremental",
                 status="succeeded") == 1
    assert value(samples, "erphub_records_read_total", connection="kd", entity="items") >= first.read > 0
    assert value(samples, "erphub_records_written_total", connection="kd", entity="items") == first.written
    # And the store gauges show the last success and the watermark
    assert 0 <= value(samples, "erphub_last_successful_run_age_seconds", connection="kd", entity="items") < 60
    if first.watermark is not None:
        assert value(samples, "erphub_watermark_age_seconds", connection="kd", entity="items") >= 0


def test_a_failed_pull_is_counted_as_failed(store, systems, counters) -> None:
    running = systems(ref=REFERENCE)
    running.sims["ref"].faults.set({"errors": [{"status": 503}]})  # the source is down
    with pytest.raises(Exception):
        pull(store, running.connections, "ref", "items", mode="full")
    samples = parse(generate_latest(counters.registry).decode())
    assert value(samples, "erphub_runs_finished_total", connection="ref", entity="items", mode="full",
                 status="failed") == 1
    assert ("erphub_last_successful_run_age_seconds", frozenset({("connection", "ref"), ("entity", "items")})) \
        not in scrape(store)


def test_paused_connection_gauge(store, systems) -> None:
    # Given two connections known to the store, one of them paused by an auth failure
    running = systems(ref=REFERENCE, kd=KINGDEE)
    ids = {name: running.connections.id(name) for name in ("ref", "kd")}  # rows are made on first use
    with store.session() as s:
        pause_connection(s, ids["ref"], "auth: password expired")
    # Then the gauge says which one an operator must resume
    samples = scrape(store)
    assert value(samples, "erphub_connection_paused", connection="ref", platform="reference") == 1
    assert value(samples, "erphub_connection_paused", connection="kd", platform="kingdee") == 0


def test_an_unreadable_store_reports_down_instead_of_failing(tmp_path) -> None:
    # Given a database without the schema (never migrated)
    with Store.open(f"sqlite:///{tmp_path / 'empty.db'}") as empty:
        samples = scrape(empty)
    # Then the scrape still answers, saying the store could not be read
    assert value(samples, "erphub_store_up") == 0
    assert "erphub_outbox_rows" not in names(samples)
    assert "erphub_leases_expired_total" in names(samples)  # the process's counters are still served


def test_http_endpoint_serves_prometheus_text_on_loopback(store, systems, counters) -> None:
    # Given a pending row and a served endpoint on a free loopback port
    running = systems(ref=REFERENCE)
    History(store, running).enqueue([movement("purchase_receipt", lines=[("TS-001", "1")])], ["ref"])
    with metrics.serve(store, 0) as server:
        assert server.url.startswith("http://127.0.0.1:")
        # When it is scraped
        with urllib.request.urlopen(server.url, timeout=10) as answer:
            content_type = answer.headers["Content-Type"]
            body = answer.read().decode("utf-8")
        # And again after a delivery (counters are live, gauges re-read)
        drain(store, running.connections, fast_policy())
        with urllib.request.urlopen(server.url, timeout=10) as answer:
            later = parse(answer.read().decode("utf-8"))
    # Then it is Prometheus text with the store's gauges and the process's counters
    assert content_type.startswith("text/plain")
    samples = parse(body)
    assert value(samples, "erphub_store_up") == 1
    assert value(samples, "erphub_outbox_rows", target="ref", status="pending") == 1
    assert value(later, "erphub_outbox_rows", target="ref", status="pending") == 0
    assert value(later, "erphub_deliveries_total", target="ref", outcome="sent") == 1


def test_counting_never_breaks_the_work(monkeypatch) -> None:
    class Broken:
        def __getattr__(self, _name):
            raise RuntimeError("registry gone")

    with metrics.use_counters(Broken()):  # type: ignore[arg-type]
        metrics.run_started("kd", "items", "full")
        metrics.deliveries([object()])
        metrics.leases_expired(2)
        metrics.retried("kd", "transient")
        observe.relogin("kd")
