"""What a connector hands the shared conformance suite (DESIGN.md §8).

Each vendor adds one module under ``tests/conformance/targets/`` that builds a
:class:`ConformanceTarget` and lists it in ``targets/__init__.py``. The suite starts the
target's simulator on loopback, seeds it with a vendor-neutral :class:`sandbox.world.World`,
builds connectors from the target's settings factory and speaks only the contract of
``connectors/base.py``; it reads the truth (stock ledger, documents carrying a key, call log)
from the simulator's Python handle.

A connector that cannot run a test declares it in ``skips`` with a written reason; a skip
without a reason fails the suite.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from connectors.base import ConnectionSettings, Connector
from sandbox.base import Simulator


@dataclass(frozen=True)
class ConformanceTarget:
    # Registry platform name of the connector under test; ``id`` tells apart several targets of one
    # platform (e.g. "sap_b1" over the Service Layer and "sap_b1-di" over the DI Server).
    platform: str
    # A fresh simulator. ``clock`` is passed on so tests control vendor modification stamps.
    simulator: Callable[..., Simulator]
    # Connection settings pointing at the running simulator's base URL; ``good_credentials=False``
    # must produce credentials the simulator refuses. ``overrides`` patch fields (page_size, timeouts).
    settings: Callable[..., ConnectionSettings]
    id: str = ""
    # test name (function name in tests/conformance/) -> why this connector cannot run it
    skips: Mapping[str, str] = field(default_factory=dict)
    # vendor extras a test may need, e.g. {"rejected_vendor_code": "11"}; the keys the suite
    # reads are listed in tests/conformance/README.md
    extras: Mapping[str, Any] = field(default_factory=dict)
    # Builds the connector under test from settings. None (the default): the class registered
    # for ``platform`` in connectors.registry. Test-only connectors (the suite's reference
    # connector and its broken variants) pass a factory so they stay out of the registry.
    connector: Callable[[ConnectionSettings], Connector] | None = None

    @property
    def name(self) -> str:
        return self.id or self.platform

    def build(self, settings: ConnectionSettings) -> Connector:
        """The connector under test for ``settings``."""
        if self.connector is not None:
            return self.connector(settings)
        from connectors import registry

        return registry.get(self.platform)(settings, name=self.name)
