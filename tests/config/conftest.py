"""Fixtures for the configuration tests: a test-only connector platform and a config writer."""
from __future__ import annotations

import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from pydantic import SecretStr

from connectors import registry
from connectors.base import ConnectionSettings, Connector

PLATFORM = "fakeerp"


class FakeErpSettings(ConnectionSettings):
    """What a vendor connector's settings look like: plain keys and one or two secrets."""

    acct_id: str
    username: str
    password: SecretStr
    app_secret: SecretStr | None = None
    lcid: int = 2052


class FakeErpConnector(Connector):
    platform = PLATFORM
    Settings = FakeErpSettings

    @property
    def capabilities(self):  # pragma: no cover - never instantiated here
        raise NotImplementedError

    def check(self):  # pragma: no cover
        raise NotImplementedError

    def read(self, entity, *, since=None, resume=None, page_size=None):  # pragma: no cover
        raise NotImplementedError

    def read_balances(self, *, warehouse=None, resume=None, page_size=None):  # pragma: no cover
        raise NotImplementedError

    def push(self, movement, key):  # pragma: no cover
        raise NotImplementedError

    def find(self, key):  # pragma: no cover
        raise NotImplementedError


@pytest.fixture(autouse=True)
def fake_platform() -> Iterator[str]:
    registry.register(FakeErpConnector)
    try:
        yield PLATFORM
    finally:
        registry.unregister(PLATFORM)


@pytest.fixture
def write_config(tmp_path: Path) -> Callable[[str], Path]:
    def write(text: str, name: str = "erphub.toml") -> Path:
        path = tmp_path / name
        path.write_text(textwrap.dedent(text), encoding="utf-8")
        return path

    return write
