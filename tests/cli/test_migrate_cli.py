"""``erphub migrate`` end to end: a temporary configuration (secrets from the environment), two
reference ERP simulators, typer's runner for dry and real runs, and a real ``erphub`` process
killed with SIGKILL half way and resumed with ``--resume``."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from erphub.cli import app
from tests.conformance.kit import Clock
from tests.reference.simulator import PASSWORD, USER, ReferenceErp
from tests.sync.test_migrate import NEGATIVE, STANDARD_WORLD, generated_world, ledger, migration_documents

ENV = {"SRC_PASSWORD": PASSWORD, "DST_PASSWORD": PASSWORD, "COLUMNS": "220"}






@pytest.fixture
def sims() -> Iterator[dict[str, tuple[ReferenceErp, str]]]:
    with ExitStack() as stack:
        clock = Clock()
        running = {}
        for name in ("src", "dst"):
            sim = ReferenceErp(clock=clock, units=("PCS", "PAIR", "KG", "PACK", "L", "CTN"))
            running[name] = (sim, stack.enter_context(sim.serve()).url)
        yield running


def _config(tmp_path: Path, sims: dict) -> Path:
    blocks = [f'[store]\nurl = "sqlite:///{tmp_path / "hub.db"}"\n\n[broker]\nurl = "memory://"\n']
    for name, (_, url) in sims.items():
        blocks.append(textwrap.dedent(f"""\
            [connections.{name}]
            platform = "reference"
            url = "{url}"
            user = "{USER}"
            password = {{ env = "{name.upper()}_PASSWORD" }}
            """))
    config = tmp_path / "erphub.toml"
    config.write_text("\n".join(blocks), encoding="utf-8")
    return config


def test_dry_run_writes_a_report_of_what_would_fail_and_touches_nothing(tmp_path, runner, reference_platform,
                                                                        sims, monkeypatch) -> None:
    # Given a source with a negative balance
    source, target = sims["src"][0], sims["dst"][0]
    source.seed({"world": STANDARD_WORLD.to_dict()})
    source.seed(NEGATIVE)
    config = _config(tmp_path, sims)
    monkeypatch.chdir(tmp_path)
    # When a dry run is asked for
    result = runner.invoke(app, ["--config", str(config), "migrate", "--from", "src", "--to", "dst", "--dry-run"],
                           env=ENV)
    # Then it exits 1 (something would fail) and the default report names record, position and field
    assert result.exit_code == 1, result.output
    report = next(tmp_path.glob("erphub-migrate-*.md")).read_text(encoding="utf-8")
    line = next(row for row in report.splitlines() if "CAP-01@WH02" in row)
    assert "| error | balances |" in line and "| on_hand |" in line and "negative" in line
    assert target.items == {} and target.documents == []
    assert {c.method for c in target.calls.list()} <= {"GET", "POST"}
    assert all(c.operation in ("login", "list_master") for c in target.calls.list())
    assert PASSWORD not in result.output


def test_migrate_then_reconcile_and_a_csv_json_report(tmp_path, runner, reference_platform, sims) -> None:
    source, target = sims["src"][0], sims["dst"][0]
    source.seed({"world": generated_world(300).to_dict()})
    config = _config(tmp_path, sims)
    report = tmp_path / "out" / "migration.csv"
    report.parent.mkdir()
    result = runner.invoke(app, ["--config", str(config), "migrate", "--from", "src", "--to", "dst",
                                 "--batch", "50", "--report", str(report)], env=ENV)
    assert result.exit_code == 0, result.output
    assert "MATCH" in result.output and "on-hand per sku + warehouse" in result.output
    assert len(target.items) == 300 and ledger(target) == ledger(source)
    summary = json.loads(report.with_suffix(".json").read_text(encoding="utf-8"))
    assert summary["ok"] and summary["reconciliation"]["balances"]["matched"] == len(ledger(source))
    assert report.read_text(encoding="utf-8-sig").splitlines()[0].startswith("severity,phase,record")
    # items were written 50 per call
    assert len(target.calls.list(method="POST", path="/api/items")) == 6


def test_unknown_connection_and_missing_arguments_are_usage_errors(tmp_path, runner, reference_platform,
                                                                   sims) -> None:
    config = _config(tmp_path, sims)
    result = runner.invoke(app, ["--config", str(config), "migrate", "--from", "src", "--to", "nowhere"], env=ENV)
    assert result.exit_code == 2 and "nowhere" in result.output
    result = runner.invoke(app, ["--config", str(config), "migrate", "--from", "src"], env=ENV)
    assert result.exit_code == 2


def _last_run(db: Path) -> tuple[int, str, dict] | None:
    engine = create_engine(f"sqlite:///{db}")
    try:
        with engine.connect() as conn:
            row = conn.execute(text("SELECT id, status, resume_token FROM sync_run WHERE mode = 'migrate' "
                                    "ORDER BY id DESC LIMIT 1")).first()
    except Exception:
        return None
    finally:
        engine.dispose()
    return None if row is None else (row[0], row[1], json.loads(row[2] or "{}"))


def test_sigkill_half_way_then_resume_creates_nothing_twice(tmp_path, runner, reference_platform, sims) -> None:
    # Given 2,000 items in the source, read slowly enough to kill the process half way
    source, target = sims["src"][0], sims["dst"][0]
    source.seed({"world": generated_world(2000).to_dict()})
    source.faults.set({"latency": [{"path": "/api/stock", "fixed": 0.15}]})
    config = _config(tmp_path, sims)
    plugin = tmp_path / "erphub_reference_plugin.py"
    plugin.write_text(textwrap.dedent("""\
        import sys
        from connectors import registry
        from tests.reference.connector import ReferenceConnector
        registry.register(ReferenceConnector)
        from erphub.cli import app
        sys.exit(app())
        """), encoding="utf-8")
    env = {**os.environ, **ENV, "PYTHONPATH": os.pathsep.join([str(Path.cwd()), os.environ.get("PYTHONPATH", "")])}
    process = subprocess.Popen([sys.executable, str(plugin), "--config", str(config), "migrate", "--from", "src",
                                "--to", "dst", "--lines", "25"], env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT)
    # When it is killed with SIGKILL once some balance pages are committed
    deadline = time.monotonic() + 90
    try:
        while time.monotonic() < deadline:
            run = _last_run(tmp_path / "hub.db")
            if run is not None and run[2].get("counts", {}).get("balances", {}).get("pages", 0) >= 5:
                break
            assert process.poll() is None, process.communicate()[0].decode()
            time.sleep(0.05)
        else:
            pytest.fail("the migration never got half way")
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
    run_id, status, state = _last_run(tmp_path / "hub.db")
    assert status == "running" and "balances" not in state["done"]
    # Then `--resume RUN` finishes it: the target matches the source and holds every document once
    source.faults.clear()
    result = runner.invoke(app, ["--config", str(config), "migrate", "--resume", str(run_id)], env=ENV)
    assert result.exit_code == 0, result.output
    assert "(resumed)" in result.output and "MATCH" in result.output
    assert len(target.items) == 2000 and ledger(target) == ledger(source)
    docs = migration_documents(target)
    assert len({d["ext_key"] for d in docs}) == len(docs) == len({d["reference"] for d in docs})
