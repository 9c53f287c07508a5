"""Migration reference → reference (two simulators): end to end, dry run, kill and resume, bad records."""
from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import pytest

from connectors.base import Connector, Entity, Page
from sandbox.world import World, WorldBalance, WorldItem, WorldWarehouse
from sync import errorqueue
from sync.connections import Connections
from sync.migrate import MigrateOptions, migrate, run_reference
from sync.migrate_workspace import Workspace
from sync.retry import RetryPolicy
from sync.store import ErrorQueue, Outbox, OutboxStatus, RunStatus, Store, SyncRun
from tests.conformance.kit import STANDARD_WORLD, Clock
from tests.reference.simulator import ReferenceErp
from tests.reference.target import REFERENCE

FAST = RetryPolicy(scale=0.001, lease_seconds=2.0)


@dataclass
class Pair:
    source: ReferenceErp
    target: ReferenceErp
    connections: Connections


def generated_world(items: int, warehouses: int = 3) -> World:
    whs = tuple(WorldWarehouse(f"WH{w:02d}", f"仓库 {w}") for w in range(1, warehouses + 1))
    its = tuple(WorldItem(f"SKU-{n:06d}", f"物料 {n}", "KG" if n % 7 == 0 else "PCS") for n in range(1, items + 1))
    bals = tuple(WorldBalance(i.sku, whs[n % warehouses].code,
                              Decimal(n % 50 + 1) + (Decimal("0.25") if i.unit == "KG" else 0))
                 for n, i in enumerate(its))
    return World(items=its, warehouses=whs, balances=bals)


@pytest.fixture
def pair(store: Store) -> Iterator[Callable[..., Pair]]:
    """``pair(world, target_units=..., wrap=...)``: a seeded source and an empty target."""
    with ExitStack() as stack:
        def start(world: World = STANDARD_WORLD, *, target_units: Any = None, target_world: World | None = None,
                  wrap: Callable[[str, Connector], Connector] | None = None) -> Pair:
            clock = Clock()
            source = ReferenceErp(clock=clock)
            source.seed({"world": world.to_dict()})
            target = ReferenceErp(clock=clock, **({"units": target_units} if target_units is not None else {}))
            if target_world is not None:
                target.seed({"world": target_world.to_dict()})
            settings = {}
            for name, sim in (("src", source), ("dst", target)):
                server = stack.enter_context(sim.serve())
                settings[name] = REFERENCE.settings(server.url, connect_timeout=2.0, read_timeout=10.0)

            def build(name: str, s: Any) -> Connector:
                connector = REFERENCE.build(s)
                return wrap(name, connector) if wrap is not None else connector

            connections = Connections(store, settings, factory=build)
            stack.callback(connections.close)
            return Pair(source, target, connections)

        yield start


def run(store: Store, pair: Pair, **options: Any) -> Any:
    options.setdefault("source", "src")
    options.setdefault("target", "dst")
    return migrate(store, pair.connections, MigrateOptions(**options), policy=FAST, sleep=lambda s: None)


def ledger(sim: ReferenceErp) -> dict[tuple[str, str], Decimal]:
    out: dict[tuple[str, str], Decimal] = {}
    for key, qty in sim.ledger.balances().items():
        if qty:
            out[(key.sku, key.warehouse)] = out.get((key.sku, key.warehouse), Decimal(0)) + qty
    return out


def migration_documents(sim: ReferenceErp) -> list[dict[str, Any]]:
    with sim.lock:
        return [d for d in sim.documents if str(d.get("reference") or "").startswith("MIG-")]


# --- end to end -------------------------------------------------------------------------------------


def test_migrates_items_warehouses_and_balances_and_proves_it(store, pair) -> None:
    # Given a source with the standard world and an empty target
    p = pair()
    # When everything is migrated
    result = run(store, p)
    # Then the target holds the same items, warehouses and stock per sku + warehouse
    assert result.ok, result
    assert set(p.target.items) == set(p.source.items)
    assert set(p.target.warehouses) == set(p.source.warehouses)
    assert ledger(p.target) == ledger(p.source)
    # one count-gain document per warehouse (the standard world fits in one page), each once
    docs = migration_documents(p.target)
    assert sorted(d["reference"] for d in docs) == sorted(
        run_reference(result.run_id, wh, 1) for wh in {k[1] for k in ledger(p.source)})
    assert all(d["type"] == "CNT+" for d in docs)
    for doc in docs:
        assert len(p.target.documents_for(doc["ext_key"])) == 1
    # and the reconciliation says so
    rec = result.reconciliation
    assert rec.ok and rec.balances.matched == len(ledger(p.source)) and rec.sets["items"].matched == 12
    with store.session() as s:
        assert s.get(SyncRun, result.run_id).status == RunStatus.SUCCEEDED


def test_a_second_run_after_success_writes_no_master_data_twice(store, pair) -> None:
    p = pair()
    run(store, p, entities=("warehouses", "items"))
    again = run(store, p, entities=("warehouses", "items"))
    assert again.phases["items"].written == 0 and again.phases["items"].unchanged == 12
    assert again.ok


# --- dry run ----------------------------------------------------------------------------------------


def test_dry_run_touches_nothing_in_the_target(store, pair) -> None:
    p = pair()
    with Workspace() as ws:
        result = migrate(store, p.connections, MigrateOptions(source="src", target="dst", dry_run=True), policy=FAST,
                         workspace=ws)
        problems = list(ws.problems())
    assert result.dry_run and result.errors == 0, problems
    assert result.phases["items"].written == 12 and result.phases["balances"].movements == 3
    # the target answered reads and logins only
    assert {(c.method, c.operation) for c in p.target.calls.list()} <= {("POST", "login"), ("GET", "list_master")}
    assert p.target.items == {} and p.target.documents == [] and ledger(p.target) == {}
    with store.session() as s:
        assert s.query(Outbox).count() == 0 and s.query(ErrorQueue).count() == 0


BAD_WORLD = dataclasses.replace(
    STANDARD_WORLD,
    items=STANDARD_WORLD.items + (WorldItem("DRUM-1", "铁桶", "DOZ"),),
    balances=STANDARD_WORLD.balances + (WorldBalance("DRUM-1", "WH01", Decimal("3")),),
)
NEGATIVE = {"allow_negative": True, "balances": [{"sku": "CAP-01", "warehouse": "WH02", "qty": "-2"}]}


def test_dry_run_reports_what_would_fail_with_record_and_field(store, pair) -> None:
    # Given an item in a unit the target keeps differently, and a negative balance
    target_world = World(items=(WorldItem("SH-001", "跑步鞋", "PCS"),))
    p = pair(BAD_WORLD, target_world=target_world)
    p.source.seed(NEGATIVE)
    with Workspace() as ws:
        result = migrate(store, p.connections, MigrateOptions(source="src", target="dst", dry_run=True), policy=FAST,
                         workspace=ws)
        problems = [pr for pr in ws.problems() if pr.severity == "error"]
    by_record = {(pr.phase, pr.record): pr for pr in problems}
    unit = by_record[("items", "SH-001")]
    assert unit.field == "base_unit" and "PAIR" in unit.message and unit.position is not None
    stock = by_record[("balances", "SH-001@WH01")]
    assert stock.field == "sku" and "would fail" in stock.message
    negative = by_record[("balances", "CAP-01@WH02")]
    assert negative.field == "on_hand" and "negative" in negative.message
    assert result.errors == len(problems)
    assert p.target.documents == [] and set(p.target.items) == {"SH-001"}
