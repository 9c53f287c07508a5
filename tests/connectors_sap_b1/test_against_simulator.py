"""The connector against the Service Layer simulator over loopback HTTP, for what the shared
conformance suite does not cover: push_many through a real ``$batch`` (RELIABILITY §6(i) F15),
incremental movements, balances per bin warehouse, and a write after every session died."""
from __future__ import annotations

from decimal import Decimal

import pytest
from pydantic import SecretStr

from canonical import Movement
from connectors.base import Entity, Receipt
from connectors.errors import Rejected
from connectors.sap_b1 import SapB1Connector, SapB1Settings
from sandbox.sap_b1 import SapB1Simulator
from tests.conformance.kit import STANDARD_WORLD, Clock, fresh_key, fresh_reference


@pytest.fixture(params=["v1", "v2"])
def env(request):
    clock = Clock()
    sim = SapB1Simulator(users={"manager": "secret"}, companies=("SBODEMOUS",), timezone="Asia/Shanghai",
                         clock=clock)
    sim.seed_world(STANDARD_WORLD)
    with sim.serve() as server:
        settings = SapB1Settings(url=server.url, company_db="SBODEMOUS", username="manager",
                                 password=SecretStr("secret"), odata_version=request.param, timezone="Asia/Shanghai",
                                 batch_size=40, read_timeout=10)
        with SapB1Connector(settings) as connector:
            yield sim, connector, clock


def issue(qty: str) -> Movement:
    return Movement.model_validate({
        "reference": fresh_reference(), "kind": "misc_issue", "document_date": "2024-03-01",
        "lines": [{"line_no": 1, "sku": "TS-001", "quantity": qty, "unit": "PCS", "from_warehouse": "WH01"}]})


def test_push_many_three_of_a_hundred_refused_leaves_97_posted(env) -> None:
    sim, connector, _ = env
    # Given 100 goods issues of 1 piece from 100 in stock, three of them asking for 1000
    refused_at = {7, 48, 93}
    batch = [(issue("1000" if i in refused_at else "1"), fresh_key()) for i in range(100)]
    before = sim.ledger.total("TS-001", "WH01")
    # When they go through $batch
    results = connector.push_many(batch)
    # Then 97 documents exist, one per key, and the three refusals carry -10
    assert [i for i, r in enumerate(results) if isinstance(r, Rejected)] == sorted(refused_at)
    assert all(r.vendor_code == "-10" for r in results if isinstance(r, Rejected))
    receipts = [(key, r) for (_, key), r in zip(batch, results) if isinstance(r, Receipt)]
    assert len(receipts) == 97
    for key, receipt in receipts:
        assert sim.documents_for(key) == [receipt.document_number]
    assert sim.ledger.total("TS-001", "WH01") == before - 97
    # And sending the same batch again creates nothing new
    again = connector.push_many(batch)
    assert [r.created for r in again if isinstance(r, Receipt)] == [False] * 97
    assert sim.ledger.total("TS-001", "WH01") == before - 97


def test_push_after_every_session_died_posts_once(env) -> None:
    sim, connector, _ = env
    connector.check()
    sim.expire_sessions()
    key = fresh_key()
    receipt = connector.push(issue("2"), key)
    assert sim.documents_for(key) == [receipt.document_number]
    assert connector.client.logins == 2


def test_incremental_movements_and_balances(env) -> None:
    sim, connector, clock = env
    clock.advance(3600)
    since = clock.datetime()
    key = fresh_key()
    mv = issue("3")
    connector.push(mv, key)
    pages = list(connector.read(Entity.MOVEMENTS, since=since))
    assert [m.reference for p in pages for m in p.records] == [mv.reference]
    assert max(p.max_modified for p in pages if p.max_modified) == since
    balances = [b for p in connector.read_balances(warehouse="WH03") for b in p.records]
    assert [(b.sku, b.warehouse, b.on_hand) for b in balances] == [("CAP-01", "WH03", Decimal(5))]
