"""Simulator name → factory, and starting them all (``erphub sandbox up``).

A vendor simulator is one module plus one line in :data:`SIMULATORS`: ``"name":
"module:attribute"``, the attribute being a callable that returns a fresh
:class:`~sandbox.base.Simulator` (usually the class itself). It is imported on first use.
"""
from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable
from typing import NamedTuple

from sandbox.base import Simulator
from sandbox.server import SimulatorServer

SimulatorFactory = Callable[[], Simulator]

SIMULATORS: dict[str, str] = {
    "kingdee": "sandbox.kingdee:KingdeeSimulator",
    "sap_b1": "sandbox.sap_b1:SapB1Simulator",
    # "yonyou": "sandbox.yonyou:YonyouSimulator",
    "jiandaoyun": "sandbox.jiandaoyun:JiandaoyunSimulator",
}

_registered: dict[str, SimulatorFactory] = {}


class UnknownSimulator(KeyError):
    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.name = name

    def __str__(self) -> str:
        return f"unknown simulator {self.name!r} (known: {', '.join(available()) or 'none'})"


def register(name: str, factory: SimulatorFactory) -> None:
    """Add a simulator at run time (tests, plug-ins); :data:`SIMULATORS` is for the built-in ones."""
    if name in SIMULATORS or (name in _registered and _registered[name] is not factory):
        raise ValueError(f"simulator {name!r} is already registered")
    _registered[name] = factory


def unregister(name: str) -> None:
    _registered.pop(name, None)


def available() -> list[str]:
    return sorted(set(SIMULATORS) | set(_registered))


def factory(name: str) -> SimulatorFactory:
    if name in _registered:
        return _registered[name]
    if name not in SIMULATORS:
        raise UnknownSimulator(name)
    module, _, attribute = SIMULATORS[name].partition(":")
    return getattr(importlib.import_module(module), attribute)


def create(name: str) -> Simulator:
    return factory(name)()


class Served(NamedTuple):
    name: str
    url: str
    server: SimulatorServer  # server.app is the Simulator


def serve_all(names: Iterable[str] | None = None, host: str = "127.0.0.1", base_port: int = 0) -> list[Served]:
    """Start every named simulator (all by default), each on its own server.

    ``base_port=0`` gives each an ephemeral port; otherwise they take ``base_port``,
    ``base_port + 1``... in the order given (sorted by name for "all"). If one fails to start,
    those already started are stopped before the error is raised.
    """
    chosen = available() if names is None else list(names)
    simulators = [(name, create(name)) for name in chosen]  # unknown names fail before any start
    served: list[Served] = []
    try:
        for index, (name, simulator) in enumerate(simulators):
            port = base_port + index if base_port else 0
            server = simulator.serve(host=host, port=port).start()
            served.append(Served(name, server.url, server))
    except BaseException:
        stop_all(served)
        raise
    return served


def stop_all(served: Iterable[Served]) -> None:
    for entry in served:
        entry.server.stop()
