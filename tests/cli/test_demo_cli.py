"""``erphub demo --quick --skus 200`` end to end: simulators, migration, sync with a fault, reconcile,
trial, index; the headline figures checked against the demo's own store."""
from __future__ import annotations

import json
import re
import sqlite3
from pathlib import Path

import pytest
from typer.testing import CliRunner

from erphub.cli import app

pytestmark = pytest.mark.timeout(90)
CANDIDATES = ("kingdee", "sap_b1", "sap_b1_di", "jiandaoyun")


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, object]:
    output = tmp_path_factory.mktemp("demo") / "report"
    result = CliRunner().invoke(app, ["demo", "--quick", "--skus", "200", "--output", str(output)])
    return output, result


def test_the_quick_demo_passes_every_check_and_says_it_ran_on_simulators(demo_run) -> None:
    output, result = demo_run
    # Then it exits 0, prints where the report is, and says every figure comes from simulators
    assert result.exit_code == 0, result.output
    assert f"report: {output.resolve() / 'index.html'}" in result.output.replace("\n", "")
    assert "simulators" in result.output
    summary = json.loads((output / "demo.json").read_text(encoding="utf-8"))
    assert summary["ok"] is True
    assert [c for c in summary["checks"] if not c["passed"]] == []
    assert "simulators" in summary["note"]
    # and each phase was timed
    assert set(summary["timings"]) >= {"simulators", "configuration", "migration", "sync", "reconcile", "trial",
                                       "total"}


def test_the_index_links_every_report_and_each_exists(demo_run) -> None:
    output, _ = demo_run
    index = (output / "index.html").read_text(encoding="utf-8")
    links = re.findall(r'<a href="([^"]+)"', index)
    for expected in ("migration/migration.md", "reconcile/reconcile.html", "trial/report.html"):
        assert expected in links
    for link in links:
        assert (output / link).is_file(), link
    assert "simulators" in index and 'id="headline"' in index
    markdown = (output / "index.md").read_text(encoding="utf-8")
    assert "(reconcile/reconcile.html)" in markdown and "(trial/report.html)" in markdown
    for name in ("reconcile/reconcile.json", "reconcile/reconcile.md", "trial/report.json", "migration/migration.json"):
        assert (output / name).is_file(), name


def test_the_headline_figures_agree_with_the_store(demo_run) -> None:
    output, _ = demo_run
    figures = json.loads((output / "demo.json").read_text(encoding="utf-8"))["figures"]
    db = sqlite3.connect(output / "erphub-demo.db")
    try:
        kd_id, sap_id = (db.execute("select id from connection where name = ?", (n,)).fetchone()[0]
                         for n in ("kingdee", "sap_b1"))
        items_in_sap = db.execute("select count(*) from id_map where connection_id = ? and entity = 'items'",
                                  (sap_id,)).fetchone()[0]
        synced = db.execute(
            "select count(*) from outbox o join movement m on m.id = o.movement_id where o.target_connection_id = ? "
            "and m.source_connection_id = ? and o.status = 'sent' and m.reference not like 'MIG-%'",
            (sap_id, kd_id)).fetchone()[0]
        not_sent = db.execute("select count(*) from outbox where status != 'sent'").fetchone()[0]
        absorbed = db.execute("select count(*) from outbox where status = 'sent' and last_error_kind is not null"
                              ).fetchone()[0]
        keys = db.execute("select count(distinct idempotency_key), count(*) from outbox").fetchone()
    finally:
        db.close()
    # Then the 200 SKUs and 4 fabrics were migrated and bound in SAP B1's id map
    assert figures["items_migrated"] == figures["skus"] == 204 == items_in_sap
    # every document the business posted was delivered once, nothing is left in the outbox
    assert figures["movements_synced"] == figures["business_documents"] == synced > 0
    assert not_sent == 0 and keys[0] == keys[1]
    assert figures["duplicates"] == 0
    assert figures["sap_documents_checked"] == synced + figures["opening_documents"]
    # the injected fault fired and each lost answer was settled by a later delivery
    assert figures["faults_injected"] >= 1 and figures["faults_absorbed"] == absorbed >= figures["faults_injected"]
    # zero variance, and every connector in the trial
    assert figures["match_rate"] == 1.0 and figures["variance_rows"] == 0 and figures["in_flight_rows"] == 0
    assert {r["system"] for r in figures["trial_ranking"]} == set(CANDIDATES)


def test_the_reconcile_report_agrees_with_the_headline(demo_run) -> None:
    output, _ = demo_run
    figures = json.loads((output / "demo.json").read_text(encoding="utf-8"))["figures"]
    report = json.loads((output / "reconcile" / "reconcile.json").read_text(encoding="utf-8"))
    assert report["total_rows"] == figures["reconciled_rows"] > 0
    assert report["match_rate"] == figures["match_rate"] == 1.0
    trial = json.loads((output / "trial" / "report.json").read_text(encoding="utf-8"))
    assert trial["run_id"] == figures["trial_run"]
    assert set(trial["simulators"]) == set(CANDIDATES)


def test_jiandaoyun_runs_the_same_trial_with_a_score_and_no_rate_limit_refusal(demo_run) -> None:
    output, _ = demo_run
    figures = json.loads((output / "demo.json").read_text(encoding="utf-8"))["figures"]
    trial = json.loads((output / "trial" / "report.json").read_text(encoding="utf-8"))
    systems, card = trial["systems"], {s["system"]: s for s in trial["scorecard"]["ranking"]}
    jdy = systems["jiandaoyun"]
    # Then Jiandaoyun was sent the same documents as every other candidate and has a total score
    assert jdy["platform"] == "jiandaoyun" and jdy["failure"] is None
    assert {name: s["documents"]["sent"] for name, s in systems.items()} == dict.fromkeys(CANDIDATES,
                                                                                        trial["plan"]["documents"])
    assert card["jiandaoyun"]["total"] is not None
    assert next(r for r in figures["trial_ranking"] if r["system"] == "jiandaoyun")["total"] == card["jiandaoyun"][
        "total"]
    # with the figures measured for the others
    for measure in ("success_rate", "accuracy", "latency_p95_ms", "api_calls_per_document"):
        assert jdy["measures"][measure] is not None, measure
    assert jdy["measures"]["accuracy"] == 1.0
    # every document keeps each side in one warehouse (a Jiandaoyun 出入库单 has a header warehouse),
    # so every candidate could post every document
    assert {name: s["documents"]["succeeded"] for name, s in systems.items()} == dict.fromkeys(
        CANDIDATES, trial["plan"]["documents"])
    # and the demo's own concurrency drew no 8303 (nor failed a master-data write)
    assert "rate_limited" not in jdy["error_kinds"]
    assert all(e["failed"] == 0 for e in jdy["master_data"].values() if e["how"] == "upserted")
    # and the report says how Jiandaoyun was throttled
    notes = trial["scorecard"]["notes"]
    assert any(n.startswith("jiandaoyun:") and "8303" in n for n in notes)
    html = (output / "trial" / "report.html").read_text(encoding="utf-8")
    assert 'id="notes-section"' in html and "jiandaoyun" in html


def test_a_file_as_output_is_refused(tmp_path: Path) -> None:
    target = tmp_path / "not-a-dir"
    target.write_text("x", encoding="utf-8")
    result = CliRunner().invoke(app, ["demo", "--output", str(target)])
    assert result.exit_code == 2


def test_the_index_opens_in_chromium(demo_run, tmp_path: Path) -> None:
    import subprocess

    from tests.compare.test_report_browser import ARTIFACTS, FLAGS, _Dom, chromium

    browser = chromium()
    output, _ = demo_run
    url = (output / "index.html").resolve().as_uri()
    # When Chromium loads the index and prints the DOM after the load event
    dumped = subprocess.run([browser, *FLAGS, f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=5000",
                             "--dump-dom", url], capture_output=True, text=True, timeout=120)
    assert dumped.returncode == 0, dumped.stderr[-2000:]
    dom = _Dom()
    dom.feed(dumped.stdout)
    # Then the page's self-check ran without errors and the headline and checks tables are there
    assert dom.status.get("data-ready") == "yes", dom.status
    assert dom.status.get("data-errors") == "0", dumped.stdout[-2000:]
    assert {"headline", "checks", "timings"} <= set(dom.tables)
    # and a screenshot is kept as a test artefact
    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "demo-index.png"
    shot.unlink(missing_ok=True)
    taken = subprocess.run([browser, *FLAGS, f"--user-data-dir={tmp_path / 'shot'}", "--window-size=1280,1600",
                            "--virtual-time-budget=5000", f"--screenshot={shot}", url],
                           capture_output=True, text=True, timeout=120)
    assert taken.returncode == 0, taken.stderr[-2000:]
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_migration_created_the_bins_of_the_bin_managed_warehouse(demo_run) -> None:
    from erphub.demo_data import WAREHOUSES

    output, _ = demo_run
    figures = json.loads((output / "demo.json").read_text(encoding="utf-8"))["figures"]
    summary = json.loads((output / "migration" / "migration.json").read_text(encoding="utf-8"))
    # Then every bin of the demo company was created in SAP B1 by the migration (the demo sets none up itself)
    bins = sum(len(w["bins"]) for w in WAREHOUSES)
    assert figures["bins_migrated"] == summary["phases"]["locations"]["written"] == bins > 0
    # and the reconciliation found them all there
    assert summary["reconciliation"]["sets"]["locations"] == {"matched": bins, "missing": 0, "extra": 0,
                                                              "examples_missing": []}
    index = (output / "index.md").read_text(encoding="utf-8")
    assert f"{bins} bin locations migrated" in index
