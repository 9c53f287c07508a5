"""Fixtures: a seeded SAP B1 Service Layer simulator on loopback, a settable clock, logged-in clients."""
from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
import requests

from sandbox.sap_b1 import SapB1Simulator
from sandbox.server import SimulatorServer

START = 1_767_268_800.0  # 2026-01-01 12:00:00 UTC
CREDENTIALS = {"CompanyDB": "SBODEMOUS", "UserName": "manager", "Password": "secret"}

WORLD = {
    "items": [{"sku": f"A{i:03d}", "name": f"Item {i}", "unit": "PCS"} for i in range(45)]
    + [{"sku": "LOT-1", "name": "Batch item", "batch_managed": True}],
    "warehouses": [{"code": "01", "name": "Main"}, {"code": "02", "name": "Overflow"},
                   {"code": "BW", "name": "Bins", "bins": ["BW-A1", "BW-A2"]}],
    "partners": [{"code": "S100", "name": "Supplier", "role": "supplier"},
                 {"code": "C100", "name": "Customer", "role": "customer"}],
    "balances": [{"sku": "A000", "warehouse": "01", "qty": "10"}, {"sku": "A001", "warehouse": "01", "qty": "5"},
                 {"sku": "A002", "warehouse": "BW", "qty": "7", "bin": "BW-A2"},
                 {"sku": "LOT-1", "warehouse": "01", "qty": "6", "lot": "L1"}],
}


class Clock:
    def __init__(self, now: float = START) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def sim(clock: Clock) -> SapB1Simulator:
    simulator = SapB1Simulator(clock=clock, sleep=lambda seconds: None)
    simulator.seed({"world": WORLD})
    return simulator


@pytest.fixture
def server(sim: SapB1Simulator) -> Iterator[SimulatorServer]:
    with sim.serve() as running:
        yield running


@pytest.fixture
def connect(server: SimulatorServer) -> Iterator[Callable[[str], tuple[requests.Session, str]]]:
    """``connect("v2")`` → (a requests session logged in on that dialect, its root URL)."""
    opened: list[requests.Session] = []

    def login(version: str = "v2") -> tuple[requests.Session, str]:
        http = requests.Session()
        opened.append(http)
        root = f"{server.url}/b1s/{version}"
        answer = http.post(f"{root}/Login", json=CREDENTIALS, timeout=5)
        assert answer.status_code == 200, answer.text
        return http, root

    yield login
    for http in opened:
        http.close()


@pytest.fixture(params=["v1", "v2"])
def dialect(request: pytest.FixtureRequest) -> str:
    return request.param


def error_of(answer: requests.Response, version: str) -> tuple[str, str]:
    """(code, message) from either error dialect, checking the dialect's exact shape."""
    error = answer.json()["error"]
    if version == "v2":
        assert isinstance(error["code"], str) and isinstance(error["message"], str), error
        return error["code"], error["message"]
    assert isinstance(error["code"], int), error
    assert set(error["message"]) == {"lang", "value"} and error["message"]["lang"] == "en-us", error
    return str(error["code"]), error["message"]["value"]
