"""The suite fails by design: run it against broken connectors and see the right tests fail.

One pytest subprocess runs only the tests that matter (``-k``) against every broken target and
the reference (which must pass the same tests, so the failures come from the bugs and not the
machine), reporting per-test outcomes as JUnit XML.
"""
from __future__ import annotations

import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from tests.conformance.conftest import TARGETS_ENV
from tests.reference.broken import BLANK_SKIP, CAUGHT_BY, DECLARED_SKIP
from tests.reference.target import REFERENCE

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[str, str], str]:
    """(test name, target name) → passed / failed / skipped: <reason>."""
    report = tmp_path_factory.mktemp("broken") / "junit.xml"
    tests = sorted({name for names in CAUGHT_BY.values() for name in names})
    env = {**os.environ, TARGETS_ENV: "tests.reference.broken,tests.reference.target"}
    run = subprocess.run(
        [sys.executable, "-m", "pytest", str(ROOT / "tests" / "conformance"), "-q", "-p", "no:cacheprovider",
         "-k", " or ".join(tests), f"--junitxml={report}", "-o", "junit_family=xunit2"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )
    assert report.exists(), run.stdout[-3000:] + run.stderr[-3000:]
    found: dict[tuple[str, str], str] = {}
    for case in ET.parse(report).iter("testcase"):
        name, _, param = case.get("name", "").partition("[")
        target = param.rstrip("]")
        if target.endswith(("-1", "-3")) and target[:-2] in {*CAUGHT_BY, REFERENCE.name}:
            target = target[:-2]  # test_odd_page_sizes_lose_nothing[<target>-<size>]
        outcome = "passed"
        for child in case:
            if child.tag in ("failure", "error"):
                outcome = "failed"
            elif child.tag == "skipped":
                outcome = f"skipped: {child.get('message', '')}"
        found[(name, target)] = outcome
    return found


@pytest.mark.parametrize("broken", sorted(CAUGHT_BY))
def test_the_suite_catches_the_broken_connector(outcomes, broken) -> None:
    for test in sorted(CAUGHT_BY[broken]):
        assert outcomes.get((test, broken)) == "failed", f"{test} did not catch {broken}: {outcomes.get((test, broken))}"


def test_the_reference_passes_the_same_tests(outcomes) -> None:
    mine = {test: outcome for (test, target), outcome in outcomes.items() if target == REFERENCE.name}
    assert mine and set(mine.values()) == {"passed"}, mine


def test_a_declared_skip_is_skipped_with_its_reason(outcomes) -> None:
    outcome = outcomes.get(("test_check_succeeds", DECLARED_SKIP.name), "")
    assert outcome.startswith("skipped") and "the vendor has no cheap read" in outcome, outcome
    assert outcomes.get(("test_skips_name_real_tests_and_say_why", DECLARED_SKIP.name)) == "passed"
    assert BLANK_SKIP.name in CAUGHT_BY
