"""sync.metrics against the reference and Kingdee simulators: the store's gauges and this process's
counters as Prometheus would read them (parsed with prometheus_client's own parser), and the
HTTP endpoint over loopback."""
from __future__ import annotations

import urllib.request
from collections.abc import Iterator

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from sync import metrics
from sync.delivery import pause_connection
from sync.pull import pull
from sync.store import Store
from tests.conformance.kit import movement
from tests.sync.conftest import KINGDEE, REFERENCE
from tests.sync.test_delivery_history import History, drain, fast_policy
from tests.sync.test_faults import poison_issue


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
    assert value(samples, "erphub_delivery_retries_total", target="ref", kind="transient") == 1
    assert value(samples, "erphub_deliveries_total", target="ref", outcome="sent") == 1
    history.check().assert_clean()


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
