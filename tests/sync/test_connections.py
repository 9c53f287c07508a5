from __future__ import annotations

import threading

import pytest

from connectors.base import ConnectionSettings
from connectors.errors import ConfigError
from sync.connections import Connections, ensure_connection
from sync.store import Connection, ConnectionStatus, Store
from tests.reference.connector import ReferenceConnector


@pytest.fixture
def store(tmp_path):
    with Store.open(f"sqlite:///{tmp_path / 'hub.db'}") as store:
        store.upgrade()
        yield store


@pytest.fixture
def reference_platform():
    from connectors import registry

    registry.register(ReferenceConnector)
    yield ReferenceConnector.platform
    registry.unregister(ReferenceConnector.platform)


def test_each_thread_gets_its_own_connector(store, reference_platform):
    settings = ReferenceConnector.Settings(platform=reference_platform, url="http://127.0.0.1:9", user="u",
                                           password="p")
    with Connections(store, {"ref": settings}) as connections:
        mine = connections.connector("ref")
        theirs = []
        worker = threading.Thread(target=lambda: theirs.append(connections.connector("ref")))
        worker.start()
        worker.join()
        assert connections.connector("ref") is mine
        assert theirs[0] is not mine and theirs[0].name == "ref"


def test_connection_rows_are_created_once_and_paused_rows_say_why(store):
    connections = Connections(store, {"kd": ConnectionSettings(platform="kingdee", url="http://x")})
    first = connections.id("kd")
    assert connections.id("kd") == first
    with store.session() as session:
        assert session.get(Connection, first).name == "kd"
        assert connections.is_paused(session, "kd") is None
        session.get(Connection, first).status = ConnectionStatus.PAUSED
        session.get(Connection, first).paused_reason = "AuthError: password expired"
    with store.session() as session:
        assert connections.is_paused(session, "kd") == "AuthError: password expired"


def test_a_renamed_platform_under_the_same_name_is_refused(store):
    with store.session() as session:
        ensure_connection(session, "prod", "kingdee")
    with store.session() as session, pytest.raises(ConfigError, match="was 'kingdee'"):
        ensure_connection(session, "prod", "sap_b1")


def test_unknown_connection_names_the_configured_ones(store):
    connections = Connections(store, {"kd": ConnectionSettings(platform="kingdee", url="http://x")})
    with pytest.raises(ConfigError, match="configured: kd"):
        connections.connector("nope")


def test_systems_fixture_wires_simulators_to_connections(systems):
    from tests.sync.conftest import KINGDEE, REFERENCE

    running = systems(kd=KINGDEE, ref=REFERENCE)
    for name in ("kd", "ref"):
        assert running.connections.connector(name).check().ok
    assert running.sims["kd"].ledger.balances()  # seeded opening stock
