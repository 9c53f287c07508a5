from __future__ import annotations

from collections.abc import Iterator

import pytest
import requests

from sandbox.server import SimulatorServer
from tests.sandbox.toy import ToyErp


@pytest.fixture
def toy() -> ToyErp:
    return ToyErp()


@pytest.fixture
def toy_server(toy: ToyErp) -> Iterator[SimulatorServer]:
    with toy.serve() as server:
        yield server


@pytest.fixture
def http() -> Iterator[requests.Session]:
    with requests.Session() as session:
        yield session


@pytest.fixture
def logged_in(toy_server: SimulatorServer, http: requests.Session) -> requests.Session:
    """A requests session logged in to the toy ERP (``X-Session`` header set)."""
    token = http.post(f"{toy_server.url}/api/login", timeout=5).json()["session"]
    http.headers["X-Session"] = token
    return http
