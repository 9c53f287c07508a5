"""``erphub trial run|score|report`` through typer's runner: the Kingdee and SAP B1 simulators seeded by
``--seed-simulators``, the run stored, then scored and reported after the simulators are gone."""
from __future__ import annotations

import json
import textwrap
from contextlib import ExitStack
from pathlib import Path

from typer.testing import CliRunner

from erphub.cli import app
from tests.cli.test_sync_cli import kingdee_block
from tests.conformance.kit import Clock
from tests.conformance.targets.kingdee import simulator as kingdee_simulator
from tests.conformance.targets.sap_b1 import COMPANY, PASSWORD, TIMEZONE, USER
from tests.conformance.targets.sap_b1 import TARGETS as SAP_TARGETS
from sandbox.kingdee_auth import DEFAULT_APP_SECRET

ENV = {"KD_APP_SECRET": DEFAULT_APP_SECRET, "SAP_PASSWORD": PASSWORD, "COLUMNS": "200"}

TRIAL = textwrap.dedent("""\
    [trial]
    name = "仓储系统选型 pilot"
    candidates = ["kd", "sap"]

    [scenario]
    seed = 3
    movements = 20
    concurrency = 2
    duration_cap = "2m"

    [scenario.master_data.generate]
    items = 5
    warehouses = 2

    [criteria.rated.go_live_speed.ratings.kd]
    wang = 7

    [criteria.measured.success_rate]
    weight = 2

    [criteria.measured.api_calls_per_document]
    weight = 1
    """)




def sap_block(name: str, url: str) -> str:
    return textwrap.dedent(f"""\
        [connections.{name}]
        platform = "sap_b1"
        url = "{url}"
        company_db = "{COMPANY}"
        username = "{USER}"
        password = {{ env = "SAP_PASSWORD" }}
        odata_version = "v2"
        timezone = "{TIMEZONE}"
        spec_field = "User_Text"
        """)


def test_run_score_and_report_from_the_command_line(runner: CliRunner, tmp_path: Path):
    results_dir = tmp_path / "runs"
    trial_file = tmp_path / "trial.toml"
    trial_file.write_text(TRIAL, encoding="utf-8")
    with ExitStack() as stack:
        clock = Clock()
        kd = stack.enter_context(kingdee_simulator(clock=clock).serve())
        sap = stack.enter_context(SAP_TARGETS[0].simulator(clock=clock).serve())
        config = tmp_path / "erphub.toml"
        config.write_text(f'[store]\nurl = "sqlite:///{tmp_path / "hub.db"}"\n\n' + kingdee_block("kd", kd.url)
                          + "\n" + sap_block("sap", sap.url), encoding="utf-8")
        # When the trial runs, seeding the empty simulators first
        ran = runner.invoke(app, ["-c", str(config), "trial", "run", str(trial_file), "--seed-simulators",
                                  "--results-dir", str(results_dir)], env=ENV)
        assert ran.exit_code == 0, ran.output
    assert "seeded kd with 5 items" in ran.output and "seeded sap with 5 items" in ran.output
    (run_dir,) = list(results_dir.iterdir())
    stored = json.loads((run_dir / "results.json").read_text(encoding="utf-8"))
    for name in ("kd", "sap"):
        assert stored["systems"][name]["documents"]["succeeded"] == 20, stored["systems"][name]["errors"]
        assert stored["systems"][name]["accuracy"]["share"] == 1.0

    # Then, with the simulators gone, the run is re-scored with other weights...
    scored = runner.invoke(app, ["trial", "score", run_dir.name, "--results-dir", str(results_dir),
                                 "--weights", "api_calls_per_document=10"], env=ENV)
    assert scored.exit_code == 0, scored.output
    assert "ranking" in scored.output and "kd" in scored.output and "sap" in scored.output
    # ...and reported in three formats
    out = tmp_path / "report"
    reported = runner.invoke(app, ["trial", "report", run_dir.name, "--results-dir", str(results_dir),
                                   "--output", str(out)], env=ENV)
    assert reported.exit_code == 0, reported.output
    for name in ("report.html", "report.md", "report.json", "charts/radar.png", "charts/latency.png",
                 "charts/errors.png"):
        assert (out / name).is_file(), name
    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    assert report["simulators"] == ["kd", "sap"]
    assert [r["system"] for r in report["scorecard"]["ranking"]] != []
    markdown = (out / "report.md").read_text(encoding="utf-8")
    assert "measured against simulators on loopback" in markdown and "| rank | system |" in markdown


def test_a_bad_trial_file_is_reported_by_key_path(runner: CliRunner, tmp_path: Path):
    trial_file = tmp_path / "trial.toml"
    trial_file.write_text('[trial]\nname = "x"\ncandidates = ["kd"]\n[scenario]\nconcurrency = 0\n'
                          'duration_cap = "later"\n', encoding="utf-8")
    config = tmp_path / "erphub.toml"
    config.write_text(f'[store]\nurl = "sqlite:///{tmp_path / "hub.db"}"\n', encoding="utf-8")
    result = runner.invoke(app, ["-c", str(config), "trial", "run", str(trial_file)], env=ENV)
    assert result.exit_code == 2
    assert "scenario.concurrency: " in result.output and "scenario.duration_cap: not a duration" in result.output


def test_a_candidate_that_is_not_configured_is_refused(runner: CliRunner, tmp_path: Path):
    trial_file = tmp_path / "trial.toml"
    trial_file.write_text('[trial]\nname = "x"\ncandidates = ["nowhere"]\n', encoding="utf-8")
    config = tmp_path / "erphub.toml"
    config.write_text(f'[store]\nurl = "sqlite:///{tmp_path / "hub.db"}"\n', encoding="utf-8")
    result = runner.invoke(app, ["-c", str(config), "trial", "run", str(trial_file)], env=ENV)
    assert result.exit_code == 2 and "trial.candidates: 'nowhere' is not a configured connection" in result.output


def test_score_of_an_unknown_run_says_where_it_looked(runner: CliRunner, tmp_path: Path):
    result = runner.invoke(app, ["trial", "score", "no-such-run", "--results-dir", str(tmp_path)], env=ENV)
    assert result.exit_code == 2 and "no stored trial run 'no-such-run'" in result.output
