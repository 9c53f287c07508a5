"""Issue 5's done-criterion: 20,000 items and their balances from the Kingdee simulator into the
SAP B1 simulator, killed half way and resumed, ending with zero variance and zero duplicates.

Unmarked, so it runs in CI with the rest (keep it to a couple of minutes at most). It skips, saying why, until both
connectors declare ``Entity.ITEMS`` and ``Entity.WAREHOUSES`` in ``capabilities.writable``
(their ``upsert`` is being written by the Kingdee and SAP B1 engineers).
"""
from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import ExitStack
from decimal import Decimal
from typing import Any

import pytest

from connectors.base import Connector, Entity
from sandbox.world import World, WorldBalance, WorldItem, WorldWarehouse
from sync.connections import Connections
from sync.migrate import MigrateOptions, migrate
from sync.retry import RetryPolicy
from sync.store import Outbox, OutboxStatus, RunStatus, Store, SyncRun
from tests.conformance.kit import Clock
from tests.conformance.targets.sap_b1 import TARGETS as SAP_TARGETS
from tests.sync.conftest import KINGDEE
from tests.sync.test_migrate import Killer

ITEMS = int(os.environ.get("ERPHUB_MIGRATE_ITEMS", "20000"))
WAREHOUSES = 4
SAP = next(t for t in SAP_TARGETS if t.name == "sap_b1")


def world(items: int = ITEMS) -> World:
    whs = tuple(WorldWarehouse(f"CK{w:03d}", f"仓库{w}") for w in range(1, WAREHOUSES + 1))
    its = tuple(WorldItem(f"MAT{n:06d}", f"物料{n}号", "PCS", spec=f"M{n % 97}") for n in range(1, items + 1))
    bals = tuple(WorldBalance(i.sku, whs[n % WAREHOUSES].code, Decimal(n % 40 + 1)) for n, i in enumerate(its))
    return World(items=its, warehouses=whs, balances=bals)


def _writable(connector: Connector) -> bool:
    return {Entity.ITEMS, Entity.WAREHOUSES} <= connector.capabilities.writable


def ledger(sim: Any) -> dict[tuple[str, str], Decimal]:
    out: dict[tuple[str, str], Decimal] = {}
    for key, qty in sim.ledger.balances().items():
        if qty:
            out[(key.sku, key.warehouse)] = out.get((key.sku, key.warehouse), Decimal(0)) + qty
    return out


@pytest.fixture
def kd_to_sap(store: Store) -> Iterator[tuple[Any, Any, Connections, dict[str, Any]]]:
    plan: dict[str, Any] = {"what": "pages:balances", "at": 0}
    with ExitStack() as stack:
        clock = Clock()
        kd, sap = KINGDEE.simulator(clock=clock), SAP.simulator(clock=clock)
        kd.seed_world(world())
        settings = {}
        for name, sim, target in (("kd", kd, KINGDEE), ("sap", sap, SAP)):
            server = stack.enter_context(sim.serve())
            settings[name] = target.settings(server.url, good_credentials=True, connect_timeout=2.0,
                                             read_timeout=30.0)
        targets = {"kd": KINGDEE, "sap": SAP}

        def build(name: str, s: Any) -> Connector:
            connector = targets[name].build(s)
            return Killer(connector, plan) if name == "kd" else connector  # type: ignore[return-value]

        connections = Connections(store, settings, factory=build)
        stack.callback(connections.close)
        yield kd, sap, connections, plan


# Most of the time goes to the simulators: SAP B1's upsert looks each batch of 40 codes up with $filter
# queries the simulator answers by scanning every item (so it grows with the company), and the
# Kingdee balance reads; the migration's own work is a few seconds. Hence a timeout above the default.
@pytest.mark.timeout(360)
def test_20000_items_and_balances_kingdee_to_sap_b1_killed_and_resumed(store, kd_to_sap) -> None:
    kd, sap, connections, plan = kd_to_sap
    for name in ("kd", "sap"):
        if not _writable(connections.connector(name)):
            pytest.skip(f"{connections.platform(name)} does not declare items and warehouses in "
                        "capabilities.writable yet (its upsert is being written)")
    policy = RetryPolicy(scale=0.001, lease_seconds=5.0)
    # Given the migration dies half way through the opening balances
    plan["at"] = (ITEMS // WAREHOUSES // connections.connector("kd").capabilities.max_page_size) or 2
    with pytest.raises(KeyboardInterrupt):
        migrate(store, connections, MigrateOptions(source="kd", target="sap"), policy=policy)
    with store.session() as s:
        run = max(s.query(SyncRun).all(), key=lambda r: r.id)
        assert run.status == RunStatus.INTERRUPTED
    # When it is resumed
    result = migrate(store, connections, MigrateOptions(resume_run=run.id), policy=policy)
    # Then SAP B1 holds every item once and the same stock, and the reconciliation shows no variance
    assert result.ok, (result.reconciliation, result.errors)
    rec = result.reconciliation
    assert rec.sets["items"].matched == ITEMS and rec.balances.matched == len(ledger(kd))
    assert ledger(sap) == ledger(kd)
    with store.session() as s:
        keys = [row.idempotency_key for row in s.query(Outbox).all()]
        assert all(row.status == OutboxStatus.SENT for row in s.query(Outbox).all())
    for key in keys:
        assert len(sap.documents_for(key)) == 1
