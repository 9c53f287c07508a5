"""Fixtures of the conformance suite (DESIGN.md §8).

Every test taking ``target`` runs once per :class:`ConformanceTarget`: the vendors listed in
``targets/__init__.py`` plus the suite's own reference target (``SUITE_TARGET_MODULES``). Setting
``ERPHUB_CONFORMANCE_TARGETS`` to ``module[:ATTR],...`` runs the listed targets instead (the
meta-tests use it to run the suite against deliberately broken connectors).

Per test: a fresh simulator on a frozen :class:`~tests.conformance.kit.Clock`, served on loopback,
seeded with the standard world; ``connect(**overrides)`` builds connectors on it.

A test named in ``target.skips`` is skipped with the written reason; a blank reason fails it
(and ``test_guard.py`` fails for blank reasons and for keys naming no test).
"""
from __future__ import annotations

import importlib
import os
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from connectors.base import Connector
from sandbox.base import Simulator
from sandbox.server import SimulatorServer
from tests.conformance.kit import STANDARD_WORLD, Clock
from tests.conformance.target import ConformanceTarget
from tests.conformance.targets import all_targets

TARGETS_ENV = "ERPHUB_CONFORMANCE_TARGETS"
# Targets that are not vendors: the suite's reference connector proves the suite itself.
SUITE_TARGET_MODULES: list[str] = ["tests.reference.target"]

# Short timeouts keep a failing target from stalling the run; fault tests lower them further.
DEFAULT_OVERRIDES: dict[str, Any] = {"connect_timeout": 2.0, "read_timeout": 5.0}


def _load(spec: str) -> list[ConformanceTarget]:
    module_path, _, attr = spec.strip().partition(":")
    found = getattr(importlib.import_module(module_path), attr or "TARGETS")
    found = [found] if isinstance(found, ConformanceTarget) else list(found)
    for target in found:
        if not isinstance(target, ConformanceTarget):
            raise TypeError(f"{spec}: {target!r} is not a ConformanceTarget")
    return found


def suite_targets() -> list[ConformanceTarget]:
    spec = os.environ.get(TARGETS_ENV, "").strip()
    if spec:
        targets = [t for part in spec.split(",") if part.strip() for t in _load(part)]
    else:
        targets = all_targets() + [t for module in SUITE_TARGET_MODULES for t in _load(module)]
    names = [t.name for t in targets]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"conformance targets share a name: {', '.join(duplicates)}; set id= to tell them apart")
    return targets


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "target" in metafunc.fixturenames:
        targets = suite_targets()
        metafunc.parametrize("target", targets, ids=[t.name for t in targets])


@pytest.fixture(autouse=True)
def _declared_skip(request: pytest.FixtureRequest) -> None:
    callspec = getattr(request.node, "callspec", None)
    target = callspec.params.get("target") if callspec is not None else None
    if not isinstance(target, ConformanceTarget):
        return
    name = request.node.originalname
    if name in target.skips:
        reason = target.skips[name]
        if not isinstance(reason, str) or not reason.strip():
            pytest.fail(f"{target.name} skips {name} without a reason; every skip needs one")
        pytest.skip(f"{target.name}: {reason.strip()}")


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def sim(target: ConformanceTarget, clock: Clock) -> Simulator:
    """The target's simulator, seeded with the standard world (not yet served)."""
    simulator = target.simulator(clock=clock)
    simulator.seed_world(STANDARD_WORLD)
    return simulator


@pytest.fixture
def server(sim: Simulator) -> Iterator[SimulatorServer]:
    with sim.serve() as srv:
        yield srv


@pytest.fixture
def connect(target: ConformanceTarget, server: SimulatorServer) -> Iterator[Callable[..., Connector]]:
    """``connect(good_credentials=True, **overrides)`` → a connector on the served simulator."""
    made: list[Connector] = []

    def build(*, good_credentials: bool = True, **overrides: Any) -> Connector:
        settings = target.settings(server.url, good_credentials=good_credentials,
                                   **{**DEFAULT_OVERRIDES, **overrides})
        connector = target.build(settings)
        made.append(connector)
        return connector

    yield build
    for connector in made:
        connector.close()


@pytest.fixture
def connector(connect: Callable[..., Connector]) -> Connector:
    return connect()
