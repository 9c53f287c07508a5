"""``--metrics-port`` on ``erphub sync run|once``: the same Prometheus endpoint as ``erphub worker``,
scraped over HTTP while the command runs; and ``erphub status --metrics URL``, which reads the
retry and re-login counters back from such endpoints."""
from __future__ import annotations

import json
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest
from prometheus_client import start_http_server
from prometheus_client.parser import text_string_to_metric_families

from connectors import observe
from erphub.cli import app
from sync import metrics
from sync.store import Store
from tests.cli import test_sync_cli
from tests.cli.test_sync_cli import ENV, FLOWS, _config
from tests.conformance.kit import movement
from tests.reference.connector import ReferenceConnector, ReferenceSettings
from tests.reference.simulator import PASSWORD, USER

sims = test_sync_cli.sims  # the running Kingdee and reference simulators (a fixture)

MOVEMENTS_ONLY = FLOWS.split("\n\n")[0] + "\n"  # the flow ref -> kd every second, without master data


@pytest.fixture
def counters() -> Iterator[metrics.EventCounters]:
    with metrics.use_counters() as fresh:
        yield fresh


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def scrape(url: str) -> dict[tuple[str, frozenset], float] | None:
    """Every sample served at ``url`` ((name, labels) -> value), or None while nothing listens."""
    try:
        with urllib.request.urlopen(url, timeout=5) as answer:
            text = answer.read().decode("utf-8")
    except (urllib.error.URLError, ConnectionError):
        return None
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def total(samples: dict, name: str, **labels: str) -> float:
    return sum(v for (n, ls), v in samples.items() if n == name and set(labels.items()) <= ls)


def post_movements(url: str, count: int, tag: str) -> None:
    source = ReferenceConnector(ReferenceSettings(url=url, user=USER, password=PASSWORD), name="ref")
    try:
        for n in range(count):
            source.push(movement("transfer", reference=f"{tag}-{n}", lines=[("TS-001", "1")]), key=f"{tag}KEY{n}")
    finally:
        source.close()


def test_sync_run_serves_metrics_while_it_runs(tmp_path, runner, reference_platform, sims, counters) -> None:
    # Given 3 movements in the reference ERP, and Kingdee answering its first two Saves with 503
    post_movements(sims["ref"][1], 3, "MET")
    kd = sims["kd"][0]
    kd.faults.set({"errors": [{"status": 503, "operation": "Save", "max_count": 2}]})
    config = _config(tmp_path, sims, MOVEMENTS_ONLY)
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    # When `erphub sync run --metrics-port` runs (in a thread) and Prometheus scrapes it
    results = []
    command = threading.Thread(target=lambda: results.append(runner.invoke(
        app, ["--config", str(config), "sync", "run", "--for", "10", "--metrics-port", str(port)], env=ENV)))
    command.start()
    seen = None
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and command.is_alive():
        seen = scrape(url) or seen
        if seen and total(seen, "erphub_deliveries_total", target="kd", outcome="sent") >= 3:
            break
        time.sleep(0.2)
    command.join(60)
    # Then the endpoint answered with the store's gauges and this process's counters: the three
    # movements sent, and each 503 counted as a retry of kind transient
    assert not command.is_alive() and results, "sync run did not stop after --for"
    result = results[0]
    assert result.exit_code == 0, result.output
    assert f"metrics on {url}" in result.output
    assert seen is not None, "nothing answered on the metrics port"
    assert total(seen, "erphub_store_up") == 1
    assert total(seen, "erphub_deliveries_total", target="kd", outcome="sent") == 3
    assert total(seen, "erphub_runs_started_total", connection="ref", entity="movements") >= 1
    assert kd.faults.fired()["errors[0]"] == 2
    assert total(seen, "erphub_retries_total", kind="transient") == 2
    assert ("erphub_outbox_rows", frozenset({("target", "kd"), ("status", "pending")})) in seen
    # And the endpoint closed with the command
    assert scrape(url) is None


def test_sync_once_serves_metrics_until_it_ends(tmp_path, runner, reference_platform, sims, counters) -> None:
    post_movements(sims["ref"][1], 1, "ONCE")
    config = _config(tmp_path, sims, MOVEMENTS_ONLY)
    port = free_port()
    result = runner.invoke(app, ["--config", str(config), "sync", "once", "--timeout", "60", "--metrics-port",
                                 str(port)], env=ENV)
    assert result.exit_code == 0, result.output
    assert f"metrics on http://127.0.0.1:{port}/" in result.output
    assert scrape(f"http://127.0.0.1:{port}/") is None  # closed with the command
    with socket.socket() as s:  # and the port is free again
        s.bind(("127.0.0.1", port))


def test_sync_run_refuses_a_port_in_use(tmp_path, runner, reference_platform, sims) -> None:
    config = _config(tmp_path, sims, MOVEMENTS_ONLY)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = runner.invoke(app, ["--config", str(config), "sync", "run", "--for", "0", "--metrics-port",
                                     str(port)], env=ENV)
    assert result.exit_code == 2
    assert f"cannot serve metrics on 127.0.0.1:{port}" in result.output


# -- erphub status --metrics -------------------------------------------------------------------------


@pytest.fixture
def hub_config(tmp_path) -> Iterator[tuple[str, Store]]:
    url = f"sqlite:///{tmp_path / 'hub.db'}"
    path = tmp_path / "erphub.toml"
    path.write_text(f'[store]\nurl = "{url}"\n', encoding="utf-8")
    with Store.open(url) as store:
        store.upgrade()
        yield str(path), store


def _row(output: str, *cells: str) -> list[str]:
    line = next(line for line in output.splitlines() if all(f" {c} " in line for c in cells))
    return [cell.strip() for cell in line.strip("│┃ ").split("│")]


def test_status_adds_the_retries_and_relogins_of_running_processes(runner, hub_config, counters) -> None:
    # Given two processes serving metrics: this one (erphub's endpoint), which counted 3
    # in-process and 2 re-queued transient retries to kd and a re-login of kd; and another that
    # counted 1 in-process transient retry to kd and 1 rate-limited re-queue to sap
    config, store = hub_config
    metrics.retried("kd", "transient", metrics.IN_PROCESS, 3)
    metrics.retried("kd", "transient", metrics.REQUEUED, 2)
    observe.relogin("kd", reason="MsgCode 1")
    other = metrics.EventCounters()
    other.retries.labels("kd", "transient", metrics.IN_PROCESS).inc()
    other.retries.labels("sap", "rate_limited", metrics.REQUEUED).inc()
    server, thread = start_http_server(0, addr="127.0.0.1", registry=other.registry)
    try:
        with metrics.serve(store, 0) as this:
            # When an operator asks for the status with both endpoints (host:port is enough)
            args = ["--config", config, "status", "--metrics", this.url,
                    "--metrics", f"127.0.0.1:{server.server_address[1]}"]
            result = runner.invoke(app, args, env={"COLUMNS": "200"})
            as_json = runner.invoke(app, [*args, "--format", "json"], env={"COLUMNS": "200"})
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
    # Then the retries by connection and kind, in process and re-queued, and the re-logins show,
    # added up over both processes
    assert result.exit_code == 0, result.output
    assert "retries (2 process(es), since each started)" in result.output
    assert _row(result.output, "kd", "transient") == ["kd", "transient", "4", "2"]
    assert _row(result.output, "sap", "rate_limited") == ["sap", "rate_limited", "0", "1"]
    relogins = result.output.split("re-logins (2 process(es)")[1]
    assert _row(relogins, "kd") == ["kd", "1"]
    assert as_json.exit_code == 0, as_json.output
    data = json.loads(as_json.output)["counters"]
    assert len(data["scraped"]) == 2 and data["unreachable"] == []
    assert {(r["connection"], r["kind"], r["in_process"], r["requeued"]) for r in data["retries"]} == {
        ("kd", "transient", 4, 2), ("sap", "rate_limited", 0, 1)}
    assert data["relogins"] == {"kd": 1}


def test_status_names_an_endpoint_that_does_not_answer(runner, hub_config) -> None:
    config, _ = hub_config
    port = free_port()
    result = runner.invoke(app, ["--config", config, "status", "--format", "json", "--metrics",
                                 f"127.0.0.1:{port}"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    assert f"metrics endpoint http://127.0.0.1:{port}/ did not answer" in result.stderr
    data = json.loads(result.stdout)
    assert data["counters"]["scraped"] == [] and data["counters"]["unreachable"][0]["url"].endswith(f":{port}/")
    assert data["connections"] == []  # the store's figures are still there
