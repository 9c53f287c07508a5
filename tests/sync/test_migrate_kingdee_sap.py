"""Issue 5's done-criterion: 20,000 items and their balances from the Kingdee simulator into the
SAP B1 simulator, killed half way and resumed, ending with zero variance and zero duplicates.

Unmarked, so it runs in CI with the rest (keep it to a couple of minutes at most). It skips, saying why, until both
connectors declare ``Entity.ITEMS`` and ``Entity.WAREHOUSES`` in ``capabilities.writable``
(their ``upsert`` is being written by the Kingdee and SAP B1 engineers).
"""
from __future__ import annotations

import os
from collections.abc import Callable, Iterator
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


def serve(stack: ExitStack, store: Store, sims: dict[str, tuple[Any, Any]],
          wrap: Callable[[str, Connector], Connector]) -> Connections:
    """Serve each simulator on loopback; connections to them, each connector passed through ``wrap``."""
    settings = {}
    for name, (sim, target) in sims.items():
        server = stack.enter_context(sim.serve())
        settings[name] = target.settings(server.url, good_credentials=True, connect_timeout=2.0, read_timeout=30.0)
    connections = Connections(store, settings, factory=lambda name, s: wrap(name, sims[name][1].build(s)))
    stack.callback(connections.close)
    return connections


@pytest.fixture
def kd_to_sap(store: Store) -> Iterator[tuple[Any, Any, Connections, dict[str, Any]]]:
    plan: dict[str, Any] = {"what": "pages:balances", "at": 0}
    with ExitStack() as stack:
        clock = Clock()
        kd, sap = KINGDEE.simulator(clock=clock), SAP.simulator(clock=clock)
        kd.seed_world(world())
        connections = serve(stack, store, {"kd": (kd, KINGDEE), "sap": (sap, SAP)},
                            lambda name, c: Killer(c, plan) if name == "kd" else c)  # type: ignore[arg-type,return-value]
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


# --- bin locations --------------------------------------------------------------------------------

BIN_WORLD = World(
    warehouses=(WorldWarehouse("CK001", "货架仓", bins=("A-01", "A-02", "B-01")), WorldWarehouse("CK002", "平仓")),
    items=tuple(WorldItem(f"MAT{n:03d}", f"物料{n}号", "PCS") for n in range(1, 13)),
    # the bins hold stock; B-01 stands empty
    balances=tuple(WorldBalance(f"MAT{n:03d}", "CK001", Decimal(n), bin="A-01" if n % 2 else "A-02")
                   for n in range(1, 13)) + tuple(WorldBalance(f"MAT{n:03d}", "CK002", Decimal(5)) for n in (1, 2)),
)


def bin_ledger(sim: Any) -> dict[tuple[str, str, str | None], Decimal]:
    out: dict[tuple[str, str, str | None], Decimal] = {}
    for key, qty in sim.ledger.balances().items():
        if qty:
            out[(key.sku, key.warehouse, key.bin)] = out.get((key.sku, key.warehouse, key.bin), Decimal(0)) + qty
    return out


def sap_bins(sim: Any) -> set[tuple[str, str]]:
    return {(b["Warehouse"], b["BinCode"]) for b in sim.company.records["BinLocations"].values()}


class Limited:
    """A connector that cannot write (``write=False``) or even list (``read=False``) bin locations."""

    def __init__(self, inner: Connector, *, read: bool) -> None:
        self.inner, self.read_bins = inner, read

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    @property
    def capabilities(self) -> Any:
        import dataclasses

        caps = self.inner.capabilities
        entities = caps.entities if self.read_bins else caps.entities - {Entity.LOCATIONS}
        return dataclasses.replace(caps, entities=entities, writable=caps.writable - {Entity.LOCATIONS})


@pytest.fixture
def bins_pair(store: Store) -> Iterator[Any]:
    """``bins_pair(source="kd"|"sap", target_world=None, limit=None)``: a source seeded with
    BIN_WORLD and a SAP B1 target (optionally pre-seeded, optionally limited)."""
    with ExitStack() as stack:
        def start(source: str = "kd", *, target_world: World | None = None,
                  limit: dict[str, bool] | None = None) -> tuple[Any, Any, Connections]:
            clock = Clock()
            src_target = KINGDEE if source == "kd" else SAP
            src, sap = src_target.simulator(clock=clock), SAP.simulator(clock=clock)
            src.seed_world(BIN_WORLD)
            if target_world is not None:
                sap.seed_world(target_world)
            connections = serve(stack, store, {"src": (src, src_target), "sap": (sap, SAP)},
                                lambda name, c: Limited(c, **limit) if name == "sap" and limit else c)  # type: ignore[arg-type,return-value]
            return src, sap, connections

        yield start


def _migrate(store: Store, connections: Connections, **options: Any) -> Any:
    from sync.migrate_workspace import Workspace

    ws = Workspace()
    result = migrate(store, connections, MigrateOptions(source="src", target="sap", deliver_timeout=30, **options),
                     policy=RetryPolicy(scale=0.001, lease_seconds=5.0), workspace=ws)
    problems = list(ws.problems())
    ws.close()
    return result, problems


def test_kingdee_bins_named_by_its_balances_are_created_in_sap_b1_before_the_stock(store, bins_pair) -> None:
    # Given Kingdee (which cannot list its bins) with stock in two bins of a bin-managed warehouse
    kd, sap, connections = bins_pair("kd")
    assert Entity.LOCATIONS not in connections.connector("src").capabilities.entities
    # When a dry run looks first, it counts the two bins it would create and creates none
    dry, dry_problems = _migrate(store, connections, dry_run=True)
    assert dry.errors == 0 and dry.phases["locations"].written == 2 and sap_bins(sap) == set(), dry_problems
    # When it is migrated into SAP B1
    result, problems = _migrate(store, connections)
    # Then the two bins exist in SAP B1 and hold the same stock, bin by bin
    assert result.ok, problems
    assert sap_bins(sap) == {("CK001", "A-01"), ("CK001", "A-02")}
    assert (result.phases["locations"].read, result.phases["locations"].written) == (2, 2)
    assert bin_ledger(sap) == bin_ledger(kd)
    # and the reconciliation compares the bins the source's balances name with SAP's own
    assert result.reconciliation.sets["locations"].matched == 2 and result.reconciliation.ok


def test_a_source_that_lists_its_bins_gets_every_bin_copied_even_an_empty_one(store, bins_pair) -> None:
    # Given SAP B1 as the source, which lists its bins (its balances are per warehouse, without
    # bins, so only master data is migrated here)
    src, sap, connections = bins_pair("sap")
    result, problems = _migrate(store, connections, entities=("warehouses", "locations", "items"))
    assert result.ok, problems
    assert sap_bins(sap) == sap_bins(src) == {("CK001", "A-01"), ("CK001", "A-02"), ("CK001", "B-01")}
    assert result.reconciliation.sets["locations"].matched == 3
    # a second run of master data writes no bin again
    again, _ = _migrate(store, connections, entities=("warehouses", "locations", "items"))
    assert (again.phases["locations"].written, again.phases["locations"].unchanged) == (0, 3)


def test_a_target_that_cannot_write_bins_is_checked_and_stock_on_a_missing_bin_is_reported(store, bins_pair) -> None:
    # Given a target holding bin A-01 only, and a connector to it that cannot create bins
    target_world = World(warehouses=(WorldWarehouse("CK001", "货架仓", bins=("A-01",)),))
    src, sap, connections = bins_pair("kd", target_world=target_world, limit={"read": True})
    # When a dry run, then the real run, migrate everything
    dry, dry_problems = _migrate(store, connections, dry_run=True)
    result, problems = _migrate(store, connections)
    # Then both name the two missing bins, and the stock on A-02 record by record, with the field
    for run, found in ((dry, dry_problems), (result, problems)):
        errors = {(p.phase, p.record): p for p in found if p.severity == "error"}
        assert {r for phase, r in errors if phase == "locations"} == {"CK001/A-02"}, found
        on_a02 = {r for (phase, r), p in errors.items() if phase == "balances" and p.field == "bin"}
        assert on_a02 == {f"MAT{n:03d}@CK001/A-02" for n in range(2, 13, 2)}
        assert run.errors == len(errors) and not run.ok
    # and nothing else is lost: the stock on A-01 and on the bin-less warehouse arrived
    expected = {k: v for k, v in bin_ledger(src).items() if k[2] != "A-02"}
    assert bin_ledger(sap) == expected and sap_bins(sap) == {("CK001", "A-01")}
    assert result.reconciliation.sets["locations"].missing == 1


def test_a_target_that_can_neither_write_nor_list_bins_gets_a_warning_per_bin(store, bins_pair) -> None:
    _src, _sap, connections = bins_pair("kd", limit={"read": False})
    result, problems = _migrate(store, connections, dry_run=True)
    warnings = {p.record: p.message for p in problems if p.phase == "locations" and p.severity == "warning"}
    assert set(warnings) == {"*", "CK001/A-01", "CK001/A-02"} and result.errors == 0
    assert "cannot write bin locations" in warnings.pop("*")
    assert all("must exist there already" in message for message in warnings.values())
