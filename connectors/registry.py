"""Platform name → connector class.

A vendor package registers its connector when imported; built-in vendors are imported on
first use from the table below, so adding a vendor is a new folder plus one line here.
"""
from __future__ import annotations

import importlib

from connectors.base import Connector

BUILTIN_MODULES: dict[str, str] = {
    "kingdee": "connectors.kingdee",
    "sap_b1": "connectors.sap_b1",
    # "yonyou": "connectors.yonyou",
    "jiandaoyun": "connectors.jiandaoyun",
}

_registry: dict[str, type[Connector]] = {}


class UnknownPlatform(KeyError):
    def __init__(self, platform: str) -> None:
        super().__init__(platform)
        self.platform = platform

    def __str__(self) -> str:
        known = ", ".join(platforms()) or "none"
        return f"unknown platform {self.platform!r} (known: {known})"


def register(cls: type[Connector]) -> type[Connector]:
    """Class decorator: make ``cls`` available under ``cls.platform``."""
    existing = _registry.get(cls.platform)
    if existing is not None and existing is not cls:
        raise ValueError(f"platform {cls.platform!r} is already registered by {existing.__qualname__}")
    _registry[cls.platform] = cls
    return cls


def unregister(platform: str) -> None:
    _registry.pop(platform, None)


def get(platform: str) -> type[Connector]:
    if platform not in _registry and platform in BUILTIN_MODULES:
        importlib.import_module(BUILTIN_MODULES[platform])
    try:
        return _registry[platform]
    except KeyError:
        raise UnknownPlatform(platform) from None


def platforms() -> list[str]:
    """Every platform name, registered or importable."""
    return sorted(set(_registry) | set(BUILTIN_MODULES))


def load_all() -> dict[str, type[Connector]]:
    for platform in BUILTIN_MODULES:
        get(platform)
    return dict(_registry)
