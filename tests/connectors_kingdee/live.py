"""The Kingdee connector against a running Kingdee simulator seeded with the sandbox test world.

Fixtures ``sim``, ``url`` and ``kd`` for tests that go over real HTTP; ``connect(url, **overrides)``
for a connector with other settings.
"""
from __future__ import annotations

from collections.abc import Iterator

import pytest

from connectors.kingdee import KingdeeConnector
from connectors.kingdee import KingdeeSettings
from sandbox.kingdee import KingdeeSimulator
from sandbox.kingdee_auth import DEFAULT_ACCT_ID, DEFAULT_APP_ID, DEFAULT_APP_SECRET, DEFAULT_USER
from tests.sandbox_kingdee.conftest import WORLD


@pytest.fixture
def sim() -> KingdeeSimulator:
    simulator = KingdeeSimulator()
    simulator.seed_world(WORLD)
    return simulator


@pytest.fixture
def url(sim) -> Iterator[str]:
    with sim.serve() as server:
        yield f"{server.url}/k3cloud/"


def connect(url: str, **overrides) -> KingdeeConnector:
    return KingdeeConnector(KingdeeSettings(url=url, acct_id=DEFAULT_ACCT_ID, username=DEFAULT_USER,
                                            app_id=DEFAULT_APP_ID, app_secret=DEFAULT_APP_SECRET, **overrides))


@pytest.fixture
def kd(url) -> Iterator[KingdeeConnector]:
    connector = connect(url)
    yield connector
    connector.close()
