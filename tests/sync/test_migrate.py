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


# --- kill and resume ----------------------------------------------------------------------------------


class Killer:
    """A connector that dies (KeyboardInterrupt, as Ctrl-C would) at the ``at``-th call of ``what``
    (``pages`` read from the source, ``upserts``, ``pushes``), once; ``after_commit`` kills the
    process right after the vendor committed a push, before its answer is recorded."""

    def __init__(self, inner: Connector, plan: dict[str, Any]) -> None:
        self.inner, self.plan = inner, plan

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def _tick(self, what: str) -> None:
        if self.plan.get("what") != what or self.plan.get("fired"):
            return
        self.plan["seen"] = self.plan.get("seen", 0) + 1
        if self.plan["seen"] >= self.plan["at"]:
            self.plan["fired"] = True
            raise KeyboardInterrupt(f"killed at {what} #{self.plan['seen']}")

    def read(self, entity: Entity, **kwargs: Any) -> Iterator[Page[Any]]:
        for page in self.inner.read(entity, **kwargs):
            self._tick(f"pages:{Entity(entity).value}")
            yield page

    def read_balances(self, **kwargs: Any) -> Iterator[Page[Any]]:
        for page in self.inner.read_balances(**kwargs):
            self._tick("pages:balances")
            yield page

    def upsert(self, entity: Entity, records: Any) -> Any:
        self._tick("upserts")
        return self.inner.upsert(entity, records)

    def push(self, movement: Any, key: str) -> Any:
        if self.plan.get("after_commit"):
            receipt = self.inner.push(movement, key)
            self._tick("pushes")
            return receipt
        self._tick("pushes")
        return self.inner.push(movement, key)

    def push_many(self, batch: Any) -> Any:
        return [self.push(m, k) for m, k in batch]


KILLS = [
    pytest.param({"side": "src", "what": "pages:items", "at": 5}, id="reading items"),
    pytest.param({"side": "dst", "what": "upserts", "at": 7}, id="writing items"),
    pytest.param({"side": "src", "what": "pages:balances", "at": 4}, id="reading balances"),
    pytest.param({"side": "dst", "what": "pushes", "at": 6}, id="delivering"),
    pytest.param({"side": "dst", "what": "pushes", "at": 3, "after_commit": True}, id="answer lost after commit"),
]


@pytest.mark.parametrize("plan", KILLS)
def test_killed_half_way_and_resumed_ends_with_no_duplicates_and_no_variance(store, pair, plan) -> None:
    # Given 1,000 items over 3 warehouses (10 pages of each), and a connector that dies half way
    world = generated_world(1000)
    p = pair(world, wrap=lambda name, c: Killer(c, plan) if name == plan["side"] else c)
    with pytest.raises(KeyboardInterrupt) as killed:
        run(store, p, lines_per_movement=40)
    run_id = store_run_id(store)
    assert f"--resume {run_id}" in "".join(getattr(killed.value, "__notes__", []))
    with store.session() as s:
        assert s.get(SyncRun, run_id).status == RunStatus.INTERRUPTED
    # When the run is resumed
    result = run(store, p, source=None, target=None, resume_run=run_id)
    # Then the target matches the source exactly, and nothing was created twice
    assert result.ok, (result.reconciliation, result.errors)
    assert result.resumed and result.run_id == run_id
    assert len(p.target.items) == 1000 and ledger(p.target) == ledger(p.source)
    docs = migration_documents(p.target)
    keys = [d["ext_key"] for d in docs]
    assert len(keys) == len(set(keys)) and len({d["reference"] for d in docs}) == len(docs)
    with store.session() as s:
        assert s.query(Outbox).filter(Outbox.status != OutboxStatus.SENT).count() == 0
        assert s.query(Outbox).count() == len(docs)


def store_run_id(store: Store) -> int:
    with store.session() as s:
        return max(r.id for r in s.query(SyncRun).all())


def test_a_new_run_is_refused_while_an_earlier_one_is_unfinished(store, pair) -> None:
    plan = {"what": "pages:balances", "at": 1}
    p = pair(wrap=lambda name, c: Killer(c, plan) if name == "src" else c)
    with pytest.raises(KeyboardInterrupt):
        run(store, p)
    from connectors.errors import ConfigError

    with pytest.raises(ConfigError, match="--resume"):
        run(store, p)


def test_a_second_migration_never_posts_the_opening_balances_again(store, pair) -> None:
    from connectors.errors import ConfigError

    # Given a migration that succeeded
    p = pair()
    run(store, p)
    stock = ledger(p.target)
    # When the same migration is started again
    with pytest.raises(ConfigError, match="already posted the opening balances"):
        run(store, p)
    # Then nothing was posted twice; master data alone may still be refreshed
    run(store, p, entities=("warehouses", "items"))
    assert ledger(p.target) == stock


# --- bad records on a real run --------------------------------------------------------------------------


def test_bad_records_go_to_the_error_queue_and_the_rest_migrates(store, pair) -> None:
    # Given a target that does not know dozens, an item kept in dozens, and a negative balance
    p = pair(BAD_WORLD, target_units=("PCS", "PAIR", "KG", "PACK", "L", "CTN"))
    p.source.seed(NEGATIVE)
    result = run(store, p)
    # Then the item is refused by the target and sits in the error queue with the vendor's code and field
    with store.session() as s:
        entries = {(e.entity, e.record_key): e for e in errorqueue.entries(s, status="open")}
    drum = entries[("items", "DRUM-1")]
    assert drum.vendor_code == "E_UNIT" and drum.payload["field"] == "uom"
    assert entries[("balances", "DRUM-1@WH01")].payload["field"] == "sku"
    assert entries[("balances", "CAP-01@WH02")].payload["field"] == "on_hand"
    # and everything else migrated
    assert set(p.target.items) == set(p.source.items) - {"DRUM-1"}
    expected = {k: v for k, v in ledger(p.source).items() if k[0] != "DRUM-1" and v > 0}
    assert ledger(p.target) == expected
    # and the reconciliation does not pretend otherwise
    rec = result.reconciliation
    assert not result.ok and rec.sets["items"].missing == 1 and rec.sets["items"].examples_missing == ["DRUM-1"]
    assert rec.balances.missing == 2 and rec.balances.different == 0
