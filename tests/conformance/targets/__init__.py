"""Every connector's conformance target. A new vendor adds its module and one line here."""
from __future__ import annotations

import importlib

from tests.conformance.target import ConformanceTarget

# module path -> attribute holding a ConformanceTarget (or a list of them)
TARGET_MODULES: list[str] = [
    "tests.conformance.targets.kingdee",
    "tests.conformance.targets.sap_b1",
    "tests.conformance.targets.jiandaoyun",
]


def all_targets() -> list[ConformanceTarget]:
    targets: list[ConformanceTarget] = []
    for module_path in TARGET_MODULES:
        module = importlib.import_module(module_path)
        found = module.TARGETS
        targets.extend(found)
    return targets
