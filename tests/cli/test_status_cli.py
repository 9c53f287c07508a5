"""``erphub status`` (text and JSON) over a store with a temporary configuration; and the worker's
``--metrics-port`` option."""
from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path

import pytest

from erphub.cli import app
from sync.store import (
    Connection,
    ConnectionStatus,
    ErrorQueue,
    Movement,
    Outbox,
    OutboxStatus,
    RunStatus,
    Store,
    SyncRun,
    Watermark,
    utcnow,
)

ENV = {"COLUMNS": "220"}




@pytest.fixture
def config(tmp_path: Path) -> Iterator[Path]:
    """A configuration naming a store that holds: two connections (one paused), outbox rows to kd
    in several states (the oldest undelivered one 2 hours old), an open rejection, and a
    succeeded then a failed run of items from ref with its watermark."""
    url = f"sqlite:///{tmp_path / 'hub.db'}"
    now = utcnow()
    with Store.open(url) as store:
        store.upgrade()
        with store.session() as s:
            kd = Connection(name="kd", platform="kingdee")
            ref = Connection(name="ref", platform="reference", status=ConnectionStatus.PAUSED,
                             paused_reason="auth: password expired")
            s.add_all([kd, ref])
            s.flush()
            statuses = [OutboxStatus.PENDING, OutboxStatus.PENDING, OutboxStatus.AMBIGUOUS, OutboxStatus.SENT,
                        OutboxStatus.SENT, OutboxStatus.SENT, OutboxStatus.FAILED]
            for n, status in enumerate(statuses):
                m = Movement(reference=f"MV-{n}", kind="transfer", document_date=date(2024, 3, 1), payload={},
                             content_hash=f"h{n}", source_connection_id=ref.id)
                s.add(m)
                s.flush()
                s.add(Outbox(movement_id=m.id, target_connection_id=kd.id, idempotency_key=f"K{n}", status=status,
                             created_at=now - timedelta(hours=2 if n == 0 else 0, minutes=n)))
            s.flush()
            s.add(ErrorQueue(connection_id=kd.id, entity="movements", record_key="MV-6", kind="rejected",
                             vendor_code="E_STOCK_NEGATIVE", message="negative stock", fingerprint="f1",
                             first_seen=now - timedelta(minutes=30)))
            ok = SyncRun(connection_id=ref.id, entity="items", mode="full", status=RunStatus.SUCCEEDED,
                         started_at=now - timedelta(minutes=20), finished_at=now - timedelta(minutes=19))
            s.add(ok)
            s.flush()
            s.add(SyncRun(connection_id=ref.id, entity="items", mode="incremental", status=RunStatus.FAILED,
                          started_at=now - timedelta(minutes=5), error="Transient: 503 from the source"))
            s.add(Watermark(connection_id=ref.id, entity="items", cursor=now - timedelta(hours=3), sync_run_id=ok.id))
    path = tmp_path / "erphub.toml"
    path.write_text(f'[store]\nurl = "{url}"\n', encoding="utf-8")
    yield path


def _row(output: str, *cells: str) -> list[str]:
    line = next(line for line in output.splitlines() if all(f" {c} " in line for c in cells))
    return [cell.strip() for cell in line.strip("│┃ ").split("│")]


def test_status_prints_the_store_as_tables(runner, config) -> None:
    # When an operator asks for the status
    result = runner.invoke(app, ["--config", str(config), "status"], env=ENV)
    # Then the connections show their state and why one is paused
    assert result.exit_code == 0, result.output
    assert _row(result.output, "ref", "reference") == ["ref", "reference", "paused", "auth: password expired"]
    assert _row(result.output, "kd", "kingdee")[:3] == ["kd", "kingdee", "active"]
    # And the outbox by status for kd, sent included, with the oldest undelivered row's age
    target, pending, sending, ambiguous, failed, dead, sent, oldest = _row(result.output, "kd", "2", "3")
    assert (pending, sending, ambiguous, failed, dead, sent) == ("2", "0", "1", "1", "0", "3")
    assert oldest.startswith("2h ")
    # And the open error by kind, and the last run with its error, last success and watermark
    assert _row(result.output, "rejected")[:4] == ["kd", "rejected", "1", "0"]
    run = _row(result.output, "items")
    assert run[0:2] == ["ref", "items"] and "failed (incremental)" in run[2]
    assert run[4].startswith("19m") and "3h 00m ago" in run[5] and "503" in run[6]


def test_status_as_json(runner, config) -> None:
    result = runner.invoke(app, ["--config", str(config), "status", "--format", "json"], env=ENV)
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert {c["name"]: c["status"] for c in data["connections"]} == {"kd": "active", "ref": "paused"}
    kd = next(o for o in data["outbox"] if o["target"] == "kd")
    assert (kd["pending"], kd["ambiguous"], kd["sent"], kd["failed"], kd["undelivered"]) == (2, 1, 3, 1, 3)
    assert 7200 <= kd["oldest_undelivered_age_seconds"] < 7300
    [error] = data["errors"]
    assert (error["connection"], error["kind"], error["open"]) == ("kd", "rejected", 1)
    assert 1800 <= error["oldest_open_age_seconds"] < 1900
    [run] = data["runs"]
    assert (run["connection"], run["entity"], run["last_status"]) == ("ref", "items", "failed")
    assert 19 * 60 <= run["last_success_age_seconds"] < 20 * 60
    assert run["watermark_age_seconds"] >= 3 * 3600


def test_status_rejects_an_unknown_format(runner, config) -> None:
    result = runner.invoke(app, ["--config", str(config), "status", "--format", "xml"], env=ENV)
    assert result.exit_code == 2


def test_worker_offers_a_metrics_port(runner) -> None:
    result = runner.invoke(app, ["worker", "--help"], env=ENV)
    assert result.exit_code == 0
    assert "--metrics-port" in result.output and "--metrics-host" in result.output
