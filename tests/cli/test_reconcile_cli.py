"""``erphub reconcile`` end to end through typer's runner: a temporary configuration naming the
Kingdee and reference simulators (running on loopback), reports in three formats, a count sheet,
--propose and --apply (twice: nothing duplicated)."""
from __future__ import annotations

import json
from pathlib import Path

from sqlalchemy import func, select

from sync.store import Movement, Outbox, Store
from tests.cli.test_sync_cli import ENV, _config, sims  # noqa: F401 - sims is a fixture
from tests.conformance.kit import movement
from tests.reference.connector import ReferenceConnector, ReferenceSettings
from tests.reference.simulator import PASSWORD, USER

from erphub.cli import app


def invoke(runner, config: Path, *args: str):
    return runner.invoke(app, ["--config", str(config), "reconcile", *args], env=ENV)


def diverge(sims) -> None:
    """Scrap 3 TS-001 from WH01 in the reference ERP only."""
    sim, url = sims["ref"]
    with ReferenceConnector(ReferenceSettings(platform="reference", url=url, user=USER, password=PASSWORD),
                            name="ref") as connector:
        connector.push(movement("scrap", reference="SCRAP-1", lines=[("TS-001", "3")], source="WH01"), key="SCRAP-1")


def outbox_rows(config: Path) -> tuple[int, int]:
    with Store.open(f"sqlite:///{config.parent / 'hub.db'}") as store, store.session() as s:
        return s.scalar(select(func.count()).select_from(Movement)), s.scalar(select(func.count()).select_from(Outbox))


def test_reconcile_two_systems_writes_three_reports(tmp_path, runner, reference_platform, sims):
    config = _config(tmp_path, sims, "")
    out = tmp_path / "report"
    # Given two systems that agree: exit 0, 100% match
    agreed = invoke(runner, config, "kd", "ref", "--output", str(out))
    assert agreed.exit_code == 0, agreed.output
    assert "match rate 100.00%" in agreed.output
    # When they diverge: exit 1, the difference named, and HTML, Markdown and JSON written
    diverge(sims)
    result = invoke(runner, config, "kd", "ref", "--output", str(out))
    assert result.exit_code == 1, result.output
    assert "TS-001 @ WH01: quantity mismatch: ref 97 vs kd 100 PCS: -3" in result.output
    data = json.loads((out / "reconcile.json").read_text(encoding="utf-8"))
    assert data["counts"]["quantity_mismatch"] == 1 and data["reference"] == "kd"
    assert "| TS-001 | WH01 | 100 | 97 | PCS | -3 | quantity mismatch |" in (out / "reconcile.md").read_text("utf-8")
    html = (out / "reconcile.html").read_text(encoding="utf-8")
    assert "Measured against simulators" in html and "TS-001" in html


def test_propose_then_apply_twice_enqueues_once(tmp_path, runner, reference_platform, sims):
    config = _config(tmp_path, sims, "")
    diverge(sims)
    proposal = tmp_path / "adjust.json"
    # When the adjustments are proposed: a file, and nothing enqueued
    result = invoke(runner, config, "kd", "ref", "--output", str(tmp_path / "r"), "--propose", str(proposal))
    assert result.exit_code == 1 and "proposed 1 count adjustment(s) for ref" in result.output
    moves = json.loads(proposal.read_text(encoding="utf-8"))
    assert [(m["kind"], m["lines"][0]["sku"], m["lines"][0]["quantity"]) for m in moves] == [
        ("count_gain", "TS-001", "3")]
    assert outbox_rows(config) == (0, 0)
    # When applied: one movement and one outbox row toward ref
    applied = invoke(runner, config, "kd", "ref", "--output", str(tmp_path / "r"), "--apply", "--to", "ref")
    assert "applied: 1 new count adjustment(s) enqueued for ref" in applied.output, applied.output
    # When applied again (not delivered yet): the gap is in flight, nothing new
    again = invoke(runner, config, "kd", "ref", "--output", str(tmp_path / "r"), "--apply", "--to", "ref")
    assert again.exit_code == 0, again.output
    assert "in flight" in again.output and "applied: 0 new" in again.output
    assert outbox_rows(config) == (1, 1)


def test_count_sheet_problems_stop_the_run_unless_partial(tmp_path, runner, reference_platform, sims):
    config = _config(tmp_path, sims, "")
    sheet = tmp_path / "count.csv"
    sheet.write_text("sku,warehouse,counted,unit\nTS-001,WH01,100,PCS\nNOPE,WH01,1,PCS\nTS-002,WH01,x,PCS\n",
                     encoding="utf-8")
    stopped = invoke(runner, config, "kd", "--count-sheet", str(sheet), "--output", str(tmp_path / "r"))
    assert stopped.exit_code == 1
    assert "line 3: sku: unknown item 'NOPE'" in stopped.output and "line 4: counted: 'x' is not a number" \
        in stopped.output
    assert not (tmp_path / "r").exists()
    partial = invoke(runner, config, "kd", "--count-sheet", str(sheet), "--partial", "--warehouse", "WH01",
                     "--output", str(tmp_path / "r"))
    data = json.loads((tmp_path / "r" / "reconcile.json").read_text(encoding="utf-8"))
    assert data["reference"] == "count sheet count.csv" and data["warehouses"] == ["WH01"]
    assert any("line 3" in p for p in data["problems"]), partial.output


def test_usage_errors_exit_2(tmp_path, runner, reference_platform, sims):
    config = _config(tmp_path, sims, "")
    assert invoke(runner, config, "kd").exit_code == 2
    assert "no connection named 'nope'" in invoke(runner, config, "kd", "nope").output
    assert invoke(runner, config, "kd", "ref", "--tolerance", "lots").exit_code == 2
