"""Fixtures: a Jiandaoyun simulator seeded with a small world, served on loopback, and a raw API caller."""
from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
import requests

from sandbox.jiandaoyun import DEFAULT_API_KEY, JiandaoyunSimulator
from sandbox.jiandaoyun_forms import APP_ID
from sandbox.server import SimulatorServer
from sandbox.world import World
from tests.conformance.kit import Clock

START = 1_767_268_800.0  # 2026-01-01 12:00:00 UTC

WORLD = World.from_dict({
    "items": [{"sku": f"A{i:03d}", "name": f"物料 {i}", "unit": "PCS"} for i in range(25)],
    "warehouses": [{"code": "WH1", "name": "主仓"}, {"code": "WH2", "name": "二仓"}],
    "balances": [{"sku": "A000", "warehouse": "WH1", "qty": "10"}, {"sku": "A001", "warehouse": "WH1", "qty": "2.5"}],
})


@pytest.fixture
def clock() -> Clock:
    return Clock(START)


@pytest.fixture
def sim(clock: Clock) -> JiandaoyunSimulator:
    simulator = JiandaoyunSimulator(clock=clock, rate_limits=None, webhook_backoff=(0.02, 0.02, 0.02, 0.02))
    simulator.seed_world(WORLD)
    return simulator


@pytest.fixture
def server(sim: JiandaoyunSimulator) -> Iterator[SimulatorServer]:
    with sim.serve() as running:
        yield running


Api = Callable[..., tuple[int, Any]]


@pytest.fixture
def api(server: SimulatorServer) -> Iterator[Api]:
    """``api(route, body, key=...)`` → (HTTP status, parsed JSON), as the official clients call it."""
    session = requests.Session()

    def call(route: str, body: dict[str, Any] | None = None, *, key: str | None = DEFAULT_API_KEY,
             form: str | None = None) -> tuple[int, Any]:
        headers = {"Content-Type": "application/json;charset=utf-8"}
        if key is not None:
            headers["Authorization"] = f"Bearer {key}"
        payload = dict(body or {})
        if form is not None:
            payload = {"app_id": APP_ID, "entry_id": form, **payload}
        answer = session.post(f"{server.url}/api/v5/{route}", json=payload, headers=headers)
        return answer.status_code, answer.json()

    yield call
    session.close()
