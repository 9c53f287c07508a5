"""The trial report, opened in a real headless Chromium (Debian's ``/usr/bin/chromium``).

The page's own self-check (``#page-status``, filled on ``load``) tells how many images decoded and
whether any script or resource error happened; the DOM is read with ``--dump-dom``, console errors
are looked for in Chromium's log, and a screenshot is kept under ``test-artifacts/``.
Chromium is required in CI (``.ci/run`` installs it); elsewhere the test is skipped when it is absent.
"""
from __future__ import annotations

import os
import shutil
import subprocess
from contextlib import ExitStack
from html.parser import HTMLParser
from pathlib import Path

import pytest

from compare.report import write_trial_report
from compare.trial import parse_trial, rescore, run_trial
from tests.compare.test_trial import TARGETS, TRIAL, start_sims

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--hide-scrollbars"]


def chromium() -> str:
    found = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)
    if found:
        return found
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail("Chromium is not installed; .ci/run installs Debian's chromium package")
    pytest.skip("Chromium is not installed (apt-get install chromium); required in CI")


class _Dom(HTMLParser):
    """Collects what the test checks: ranking rows, images and the page's self-check."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: list[str] = []
        self.ranking_rows: list[str] = []
        self.images: list[dict[str, str | None]] = []
        self.status: dict[str, str | None] = {}
        self._in_ranking = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "table":
            self.tables.append(a.get("id") or "")
            self._in_ranking = a.get("id") == "ranking"
        elif tag == "tr" and self._in_ranking and a.get("data-key"):
            self.ranking_rows.append(a["data-key"] or "")
        elif tag == "img":
            self.images.append(a)
        elif tag == "div" and a.get("id") == "page-status":
            self.status = a

    def handle_endtag(self, tag: str) -> None:
        if tag == "table":
            self._in_ranking = False


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> Path:
    trial = parse_trial({**TRIAL, "scenario": {**TRIAL["scenario"], "movements": 16}})
    master = trial.scenario.master_data.resolved(trial.scenario.seed)
    with ExitStack() as stack:
        _, settings = start_sims(stack, master)
        results = run_trial(trial, settings, factory=lambda name, s: TARGETS[name].build(s),
                            results_dir=tmp_path_factory.mktemp("runs"))
    written = write_trial_report(results, rescore(results), tmp_path_factory.mktemp("report"))
    return written["html"]


def test_the_report_loads_in_chromium_with_its_ranking_and_charts(report: Path, tmp_path: Path):
    browser = chromium()
    url = report.resolve().as_uri()
    # When Chromium loads the page and prints the DOM after the load event
    dumped = subprocess.run(
        [browser, *FLAGS, f"--user-data-dir={tmp_path / 'profile-dom'}", "--enable-logging=stderr", "--v=0",
         "--virtual-time-budget=5000", "--dump-dom", url],
        capture_output=True, text=True, timeout=120)
    assert dumped.returncode == 0, dumped.stderr[-2000:]
    dom = _Dom()
    dom.feed(dumped.stdout)
    # Then the page's self-check ran, every image decoded and nothing raised
    assert dom.status.get("data-ready") == "yes", dom.status
    assert dom.status.get("data-errors") == "0", dumped.stdout[-2000:]
    assert int(dom.status["data-images"] or 0) == 3
    assert dom.status.get("data-images-decoded") == "3"
    assert len(dom.images) == 3 and all(img.get("data-decoded") == "yes" for img in dom.images)
    assert all((img.get("src") or "").startswith("data:image/png;base64,") for img in dom.images)
    # and the ranking table has one row per candidate, the other tables are there too
    assert sorted(dom.ranking_rows) == ["kd", "ref"]
    assert {"ranking", "criteria", "scores", "measured", "latency", "error-kinds"} <= set(dom.tables)
    assert "simulators on loopback" in dumped.stdout
    # and the console logged no error
    console = [line for line in dumped.stderr.splitlines() if "CONSOLE" in line]
    assert not [line for line in console if "Uncaught" in line or "Error" in line], console

    # When a screenshot is taken, it is kept as a test artefact
    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "trial-report.png"
    shot.unlink(missing_ok=True)
    taken = subprocess.run(
        [browser, *FLAGS, f"--user-data-dir={tmp_path / 'profile-shot'}", "--window-size=1280,2600",
         "--virtual-time-budget=5000", f"--screenshot={shot}", url],
        capture_output=True, text=True, timeout=120)
    assert taken.returncode == 0, taken.stderr[-2000:]
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000
