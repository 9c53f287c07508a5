"""Guards on the targets themselves: every skip names a real test and says why (Airbyte's rule)."""
from __future__ import annotations

import importlib
import inspect
import pkgutil
from pathlib import Path

import tests.conformance as suite
from tests.conformance.kit import EXTRAS
from tests.conformance.target import ConformanceTarget

GUARD_TESTS = {"test_skips_name_real_tests_and_say_why", "test_extras_are_known"}


def suite_test_names() -> set[str]:
    names: set[str] = set()
    for info in pkgutil.iter_modules([str(Path(suite.__file__).parent)]):
        if info.name.startswith("test_"):
            module = importlib.import_module(f"tests.conformance.{info.name}")
            names |= {n for n, obj in vars(module).items() if n.startswith("test_") and inspect.isfunction(obj)}
    return names


def skip_problems(target: ConformanceTarget, known: set[str]) -> list[str]:
    problems = []
    for name, reason in target.skips.items():
        if name in GUARD_TESTS:
            problems.append(f"{name}: the guards cannot be skipped")
        elif name not in known:
            problems.append(f"{name}: no such conformance test (known: {', '.join(sorted(known))})")
        if not isinstance(reason, str) or not reason.strip():
            problems.append(f"{name}: skipped without a reason")
    return problems


def test_skips_name_real_tests_and_say_why(target: ConformanceTarget) -> None:
    assert skip_problems(target, suite_test_names()) == []


def test_extras_are_known(target: ConformanceTarget) -> None:
    assert sorted(set(target.extras) - set(EXTRAS)) == []


def test_the_guard_catches_blank_reasons_and_unknown_names() -> None:
    # Given a target that skips a test with no reason and names a test that does not exist
    bad = ConformanceTarget(platform="bad", simulator=lambda **kw: None, settings=lambda url, **kw: None,
                            skips={"test_check_succeeds": " ", "test_no_such_thing": "typo"})
    # Then the guard reports both
    problems = skip_problems(bad, suite_test_names())
    assert any(p.startswith("test_check_succeeds: skipped without a reason") for p in problems)
    assert any(p.startswith("test_no_such_thing: no such conformance test") for p in problems)
