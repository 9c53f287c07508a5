"""Fixtures for engine tests: a fresh store and running vendor simulators wired as connections.

``systems(kd=KINGDEE, ref=REFERENCE)`` starts one simulator per name (on a frozen, test-driven
clock, seeded with the conformance suite's standard world) and returns the simulators together
with a :class:`sync.connections.Connections` whose connectors talk to them over loopback.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Any

import pytest

from sandbox.base import Simulator
from sandbox.world import World
from sync.connections import Connections
from sync.store import Store
from tests.conformance.kit import STANDARD_WORLD, Clock
from tests.conformance.target import ConformanceTarget


def _target(module: str, name: str) -> ConformanceTarget:
    import importlib

    return next(t for t in importlib.import_module(module).TARGETS if t.name == name)


REFERENCE = _target("tests.reference.target", "reference")
KINGDEE = _target("tests.conformance.targets.kingdee", "kingdee")


@dataclass
class Systems:
    connections: Connections
    sims: dict[str, Simulator]
    clock: Clock
    targets: dict[str, ConformanceTarget] = field(default_factory=dict)


@pytest.fixture
def store(tmp_path) -> Iterator[Store]:
    with Store.open(f"sqlite:///{tmp_path / 'hub.db'}") as store:
        store.upgrade()
        yield store


@pytest.fixture
def systems(store: Store) -> Iterator[Callable[..., Systems]]:
    with ExitStack() as stack:
        def start(world: World = STANDARD_WORLD, **targets: ConformanceTarget) -> Systems:
            clock = Clock()
            sims: dict[str, Simulator] = {}
            settings: dict[str, Any] = {}
            for name, target in targets.items():
                sim = target.simulator(clock=clock)
                sim.seed({"world": world.to_dict()})
                server = stack.enter_context(sim.serve())
                sims[name] = sim
                settings[name] = target.settings(server.url, good_credentials=True, connect_timeout=2.0,
                                                 read_timeout=5.0)
            connections = Connections(store, settings,
                                      factory=lambda name, s: targets[name].build(s))
            stack.callback(connections.close)
            return Systems(connections, sims, clock, dict(targets))

        yield start
