"""The simulator registry and serve_all, as ``erphub sandbox up`` uses them."""
from __future__ import annotations

import threading

import pytest
import requests

from sandbox import registry
from tests.sandbox.toy import ToyErp


@pytest.fixture
def toys():
    registry.register("toy-a", ToyErp)
    registry.register("toy-b", ToyErp)
    yield ["toy-a", "toy-b"]
    registry.unregister("toy-a")
    registry.unregister("toy-b")


def test_serve_all_starts_each_simulator_on_its_own_port(toys):
    served = registry.serve_all(toys)
    try:
        assert [s.name for s in served] == toys
        assert len({s.url for s in served}) == 2
        for entry in served:
            assert isinstance(entry.server.app, ToyErp)
            assert requests.post(f"{entry.url}/api/login", timeout=5).ok
        assert served[0].server.app is not served[1].server.app
    finally:
        registry.stop_all(served)
    assert not [t for t in threading.enumerate() if t.name.startswith("sandbox-")]


def test_serve_all_without_names_serves_every_registered_one(toys):
    served = registry.serve_all()
    try:
        assert {"toy-a", "toy-b"} <= {s.name for s in served}
    finally:
        registry.stop_all(served)


def test_base_port_numbers_the_servers_in_order(toys):
    with registry.create("toy-a").serve() as probe:  # find a free pair of ports near a known one
        base = probe.port
    try:
        served = registry.serve_all(toys, base_port=base)
    except OSError:
        pytest.skip("the ports next to a freed ephemeral port are taken")
    try:
        assert [s.server.port for s in served] == [base, base + 1]
    finally:
        registry.stop_all(served)


def test_a_port_clash_stops_the_ones_already_started(toys):
    with registry.create("toy-a").serve() as busy:
        with pytest.raises(OSError):
            registry.serve_all(toys, base_port=busy.port - 1)
    assert not [t for t in threading.enumerate() if t.name.startswith("sandbox-")]


def test_unknown_and_duplicate_names(toys):
    with pytest.raises(registry.UnknownSimulator, match="known: .*toy-a"):
        registry.serve_all(["nope"])
    with pytest.raises(ValueError):
        registry.register("toy-a", lambda: ToyErp())
    registry.register("toy-a", ToyErp)  # the same factory again is fine
