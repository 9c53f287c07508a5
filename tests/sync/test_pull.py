"""Pull against the real simulators: full, incremental, watermark cap, resume, dead letters."""
from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import pytest
from sqlalchemy import func, select

from canonical import Location
from connectors.base import Capabilities, ConnectionSettings, Connector, Entity, Page, RecordError
from connectors.errors import Transient
from sandbox.world import World, WorldItem
from sync import codemap, idmap
from sync.connections import Connections
from sync.pull import pull, pull_balances, pull_movements
from sync.store import (
    BalanceSnapshot,
    BalanceSnapshotRow,
    ErrorQueue,
    IdMap,
    Item,
    Location as Location_,
    Partner,
    RunStatus,
    SyncRun,
    Warehouse,
    Watermark,
)
from tests.conformance.kit import STANDARD_WORLD, ledger_snapshot, movement
from tests.sync.conftest import KINGDEE, REFERENCE

SKUS = sorted(i.sku for i in STANDARD_WORLD.items)


def _count(store, model, *where) -> int:
    with store.session() as s:
        return s.scalar(select(func.count()).select_from(model).where(*where))


def _skus(store) -> list[str]:
    with store.session() as s:
        return sorted(s.scalars(select(Item.sku)))


def _watermark(store, connection_id, entity="items"):
    with store.session() as s:
        row = s.get(Watermark, (connection_id, entity))
        return row.cursor if row else None


def _wrap_read(connector, after_page=None):
    """Make ``connector.read`` record the resume tokens it is called with and, when ``after_page``
    is set, fail with Transient once that many pages were yielded."""
    original = connector.read
    calls: list[dict] = []

    def read(entity, **kwargs):
        calls.append(kwargs)
        for number, page in enumerate(original(entity, **kwargs), start=1):
            yield page
            if after_page is not None and number == after_page and page.resume is not None:
                raise Transient("connection reset by peer (injected)")

    connector.read = read  # an instance attribute; _restore removes it
    return calls


@pytest.mark.parametrize("target", [KINGDEE, REFERENCE], ids=["kingdee", "reference"])
def test_full_pull_fills_the_canonical_tables_and_id_map(systems, store, target):
    # Given a simulator seeded with the standard world
    sys_ = systems(src=target)
    conn_id = sys_.connections.id("src")
    # When items, warehouses and partners are pulled in full, three records a page
    results = [pull(store, sys_.connections, "src", entity, mode="full", page_size=3, now=sys_.clock.datetime())
               for entity in ("items", "warehouses", "partners")]
    # Then every record is stored once, by natural key, with its content hash
    assert [r.status for r in results] == ["succeeded"] * 3
    assert _skus(store) == SKUS
    assert _count(store, Warehouse) == 3 and _count(store, Partner) == 2
    assert results[0].read == results[0].written == 12 and results[0].pages >= 4
    with store.session() as s:
        item = s.scalar(select(Item).where(Item.sku == "TS-001"))
        assert item.payload["name"] == "运动T恤" and len(item.content_hash) == 64
        assert item.source_connection_id == conn_id
        # and id_map binds each canonical key to the source's code, both ways
        assert idmap.external_for(s, conn_id, "items", "TS-001") == "TS-001"
        assert idmap.canonical_for(s, conn_id, "item", "OB'50%-X") == "OB'50%-X"
        assert s.scalar(select(func.count()).select_from(IdMap).where(IdMap.connection_id == conn_id)) == 17
        run = s.get(SyncRun, results[0].run_id)
        assert run.status == RunStatus.SUCCEEDED and run.resume_token is None and run.mode == "full"
    # and the watermark is the highest source stamp (the seed time)
    assert _watermark(store, conn_id) == sys_.clock.datetime()


@pytest.mark.parametrize("target", [KINGDEE, REFERENCE], ids=["kingdee", "reference"])
def test_incremental_pull_takes_exactly_the_changed_records(systems, store, target):
    # Given a full pull at the seed time
    sys_ = systems(src=target)
    sim, clock = sys_.sims["src"], sys_.clock
    pull(store, sys_.connections, "src", "items", mode="full", now=clock.datetime())
    # When an hour later one item is renamed and another only touched
    clock.advance(3600)
    sim.seed_world(World(items=(WorldItem("SH-001", "跑步鞋 新款", "PAIR", spec="42", category="鞋类"),)))
    sim.touch("items", "TS-001")
    first = pull(store, sys_.connections, "src", "items", now=clock.datetime())
    # Then the run reads from the watermark minus the lookback (the seed-time records come back
    # as overlap) and writes only the renamed item; the touched one has the same content hash
    assert first.since == clock.datetime(clock() - 3600) - timedelta(minutes=5)
    assert first.read == 12 and first.written == 1 and first.unchanged == 11
    with store.session() as s:
        assert s.scalar(select(Item).where(Item.sku == "SH-001")).payload["name"] == "跑步鞋 新款"
    # And the next incremental run reads only the two changed records, writing nothing new
    clock.advance(60)
    second = pull(store, sys_.connections, "src", "items", now=clock.datetime())
    assert second.read == 2 and second.written == 0 and second.unchanged == 2
    assert _count(store, Item) == 12


def test_the_watermark_never_passes_the_run_start(systems, store, monkeypatch):
    # Given a Kingdee system, and a record edited while the run is reading (after its first page)
    sys_ = systems(kd=KINGDEE)
    sim, clock = sys_.sims["kd"], sys_.clock
    conn_id = sys_.connections.id("kd")
    connector = sys_.connections.connector("kd")
    original = connector.read

    def read(entity, **kwargs):
        for number, page in enumerate(original(entity, **kwargs), start=1):
            yield page
            if number == 1:
                clock.advance(30)
                sim.touch("items", "TS-001")  # stamped 30 s after the run started

    monkeypatch.setattr(connector, "read", read)
    run_start = clock.datetime()
    # When the run reads everything, including that late edit
    result = pull(store, sys_.connections, "kd", "items", mode="full", page_size=4, now=run_start)
    # Then the run saw a stamp after its start, but the watermark stops at the start
    assert result.max_source_modified == run_start + timedelta(seconds=30)
    assert result.watermark == run_start == _watermark(store, conn_id)
    # And the next incremental run reads the edited record again
    monkeypatch.setattr(connector, "read", original)
    again = pull(store, sys_.connections, "kd", "items", now=clock.datetime(), lookback=timedelta(0))
    assert again.since == run_start and again.read == 12  # the seed stamps equal the run start
    clock.advance(600)
    later = pull(store, sys_.connections, "kd", "items", now=clock.datetime(), lookback=timedelta(0))
    assert later.read == 1  # only TS-001, stamped after the first run's start


@pytest.mark.parametrize("leave", ["failed", "killed"])
def test_an_interrupted_run_resumes_from_its_checkpoint(systems, store, monkeypatch, leave):
    # Given a run that dies after committing two pages of three items
    sys_ = systems(kd=KINGDEE)
    connector = sys_.connections.connector("kd")
    calls = _wrap_read(connector, after_page=2)
    with pytest.raises(Transient) as failure:
        pull(store, sys_.connections, "kd", "items", mode="full", page_size=3, now=sys_.clock.datetime())
    assert any("resume" in note for note in failure.value.__notes__)
    with store.session() as s:
        run = s.scalar(select(SyncRun))
        assert run.status == RunStatus.FAILED and run.read_count == 6 and run.resume_token is not None
        assert "Transient" in run.error
        checkpoint = run.resume_token
        if leave == "killed":  # a killed process never gets to record the failure
            run.status = RunStatus.RUNNING
            run.error = None
    assert _count(store, Item) == 6
    # When the pull is run again (the fault gone)
    _restore(connector)
    calls = _wrap_read(connector)
    result = pull(store, sys_.connections, "kd", "items", mode="full", page_size=3, now=sys_.clock.datetime())
    # Then the same run continues from its checkpoint, reading only the pages not committed
    assert result.resumed and result.run_id == run.id
    assert calls == [{"resume": checkpoint, "page_size": 3}]
    assert result.pages in (2, 3) and result.read == 12 and result.written == 12  # (+ an empty last page)
    # and nothing is stored twice
    assert _skus(store) == SKUS
    assert _count(store, SyncRun) == 1 and _count(store, IdMap) == 12
    assert _watermark(store, sys_.connections.id("kd")) == sys_.clock.datetime()


def _restore(connector):
    """The connector's own read method back (undo _wrap_read)."""
    vars(connector).pop("read", None)


def test_resume_run_by_id_and_a_succeeded_run_is_refused(systems, store, monkeypatch):
    sys_ = systems(kd=KINGDEE)
    connector = sys_.connections.connector("kd")
    _wrap_read(connector, after_page=1)
    with pytest.raises(Transient):
        pull(store, sys_.connections, "kd", "items", mode="full", page_size=5)
    with store.session() as s:
        run_id = s.scalar(select(SyncRun.id))
    _restore(connector)
    # When the run is resumed by id (automatic resumption off)
    result = pull(store, sys_.connections, "kd", "items", resume_run=run_id, auto_resume=False)
    # Then it finishes, and resuming it again is refused
    assert result.resumed and result.read == 12 and _count(store, Item) == 12
    with pytest.raises(ValueError, match="already succeeded"):
        pull(store, sys_.connections, "kd", "items", resume_run=run_id)


def test_a_record_that_fails_mapping_goes_to_the_error_queue_and_the_run_goes_on(systems, store):
    # Given a material whose unit no system knows
    world = replace(STANDARD_WORLD, items=STANDARD_WORLD.items + (WorldItem("BAD-1", "坏物料", "ZZZ"),))
    sys_ = systems(world, kd=KINGDEE)
    conn_id = sys_.connections.id("kd")
    # When the items are pulled
    result = pull(store, sys_.connections, "kd", "items", mode="full", page_size=5)
    # Then the run succeeds with the other twelve, and the bad one is a dead letter naming its field
    assert result.status == "succeeded" and result.failed == 1 and result.read == 13
    assert _skus(store) == SKUS
    with store.session() as s:
        entry = s.scalar(select(ErrorQueue))
        assert (entry.kind, entry.record_key, entry.entity, entry.status) == ("mapping", "BAD-1", "items", "open")
        assert entry.payload["field"] == "base_unit" and "ZZZ" in entry.message
        assert entry.payload["raw"]["FNumber"] == "BAD-1" and entry.connection_id == conn_id
        fingerprint = entry.fingerprint
    # And reading it again bumps the same entry instead of adding another
    pull(store, sys_.connections, "kd", "items", mode="full")
    with store.session() as s:
        entries = s.scalars(select(ErrorQueue)).all()
        assert len(entries) == 1 and entries[0].attempts == 2 and entries[0].fingerprint == fingerprint


def test_the_code_map_table_translates_pulled_keys(systems, store):
    sys_ = systems(ref=REFERENCE)
    conn_id = sys_.connections.id("ref")
    # Given this connection's TS-001 mapped to canonical sku SHIRT-WHITE-M (an imported code map)
    with store.session() as s:
        idmap.bind(s, conn_id, "items", "SHIRT-WHITE-M", "TS-001", "TS-001")
    # When the items are pulled
    result = pull(store, sys_.connections, "ref", "items", mode="full")
    # Then TS-001 is stored under its canonical sku, and the others under their own codes
    assert result.failed == 0 and result.written == 12
    assert "SHIRT-WHITE-M" in _skus(store) and "TS-001" not in _skus(store)
    with store.session() as s:
        assert s.scalar(select(Item).where(Item.sku == "SHIRT-WHITE-M")).payload["sku"] == "SHIRT-WHITE-M"


def test_an_id_map_conflict_is_a_dead_letter_and_the_rest_is_written(systems, store):
    sys_ = systems(ref=REFERENCE)
    conn_id = sys_.connections.id("ref")
    # Given canonical sku TS-002 already bound to another code of this connection
    with store.session() as s:
        idmap.bind(s, conn_id, "items", "TS-002", "TS-002-OLD")
    # When the items are pulled and TS-002 comes back under its own code
    result = pull(store, sys_.connections, "ref", "items", mode="full")
    # Then TS-002 is a dead letter naming the conflict, and the other eleven are written
    assert result.status == "succeeded" and result.failed == 1 and result.written == 11
    assert "TS-002" not in _skus(store)
    with store.session() as s:
        entry = s.scalar(select(ErrorQueue))
        assert entry.record_key == "TS-002" and entry.payload["field"] == "canonical_id"
        assert "TS-002-OLD" in entry.message


def test_movements_pull_hands_each_movement_to_the_callback(systems, store):
    # Given two documents posted in the reference system
    sys_ = systems(ref=REFERENCE)
    connector = sys_.connections.connector("ref")
    for _ in range(2):
        connector.push(movement("purchase_receipt"), key=f"K{_}")
    assert ledger_snapshot(sys_.sims["ref"])
    seen = []

    def on_movement(session, mv):
        seen.append(mv.reference)
        if len(seen) == 1:
            raise ValueError("unknown warehouse in our books")

    # When movements are pulled with a callback that refuses the first one
    result = pull_movements(store, sys_.connections, "ref", on_movement)
    # Then both were offered, the refused one is a dead letter, and the run succeeded
    assert len(seen) == 2 and result.written == 1 and result.failed == 1 and result.status == "succeeded"
    with store.session() as s:
        entry = s.scalar(select(ErrorQueue))
        assert entry.entity == "movements" and entry.record_key == seen[0]


@pytest.mark.parametrize("target", [KINGDEE, REFERENCE], ids=["kingdee", "reference"])
def test_pull_balances_writes_a_snapshot(systems, store, target):
    sys_ = systems(src=target)
    snapshot_id = pull_balances(store, sys_.connections, "src", page_size=4)
    expected = {(k[0], k[1], k[2]): v for k, v in ledger_snapshot(sys_.sims["src"]).items()}
    with store.session() as s:
        snapshot = s.get(BalanceSnapshot, snapshot_id)
        rows = s.scalars(select(BalanceSnapshotRow).where(BalanceSnapshotRow.snapshot_id == snapshot_id)).all()
        assert snapshot.row_count == len(rows) == len(expected)
        assert {(r.sku, r.warehouse, r.bin): r.on_hand for r in rows} == expected


def test_a_failed_balance_read_leaves_no_partial_snapshot(systems, store, monkeypatch):
    sys_ = systems(kd=KINGDEE)
    connector = sys_.connections.connector("kd")
    original = connector.read_balances

    def read_balances(**kwargs):
        pages = original(**kwargs)
        yield next(pages)
        raise Transient("injected")

    monkeypatch.setattr(connector, "read_balances", read_balances)
    with pytest.raises(Transient):
        pull_balances(store, sys_.connections, "kd", page_size=3)
    assert _count(store, BalanceSnapshot) == 0 and _count(store, BalanceSnapshotRow) == 0


class _Bins(Connector):
    """A connector that reads bin locations only, one page a bin, and reports a mapping failure."""

    platform = "bins"

    @property
    def capabilities(self):
        return Capabilities(entities=frozenset({Entity.LOCATIONS}), movement_kinds=frozenset())

    def check(self):  # pragma: no cover - not used
        raise NotImplementedError

    def read(self, entity, *, since=None, resume=None, page_size=None):
        bins = [Location(warehouse="WH03", code="A-01-01"), Location(warehouse="WH03", code="A-01-02")]
        start = int(resume or 0)
        for i in range(start, len(bins)):
            last = i == len(bins) - 1
            errors = (RecordError("locations", "WH03/B-??", "bin code too long", field="code",
                                  raw={"code": "B-??", "password": "hunter2"}),) if last else ()
            yield Page((bins[i],), resume=None if last else str(i + 1), errors=errors)

    def read_balances(self, **kwargs):  # pragma: no cover - not used
        raise NotImplementedError

    def push(self, movement, key):  # pragma: no cover - not used
        raise NotImplementedError

    def find(self, key):  # pragma: no cover - not used
        raise NotImplementedError


def test_locations_are_keyed_by_warehouse_and_bin_and_payloads_are_redacted(store):
    # Given a connection whose warehouse WH03 is the canonical warehouse MAIN-RETURNS
    connections = Connections(store, {"bins": ConnectionSettings(platform="bins", url="http://x")},
                              factory=lambda name, settings: _Bins(settings, name=name))
    conn_id = connections.id("bins")
    with store.session() as s:
        idmap.bind(s, conn_id, "warehouses", "MAIN-RETURNS", "WH03", "WH03")
    # When its locations are pulled
    result = pull(store, connections, "bins", "locations")
    # Then the bins are stored under the canonical warehouse, bound to the connection's own key
    assert result.written == 2 and result.failed == 1
    with store.session() as s:
        assert sorted(s.execute(select(Location_.warehouse_code, Location_.bin_code)).all()) == [
            ("MAIN-RETURNS", "A-01-01"), ("MAIN-RETURNS", "A-01-02")]
        assert idmap.canonical_for(s, conn_id, "locations", "WH03/A-01-02") == "MAIN-RETURNS/A-01-02"
        # and the failed record's payload keeps its field but not its secrets
        entry = s.scalar(select(ErrorQueue))
        assert entry.payload["field"] == "code" and entry.payload["raw"]["password"] != "hunter2"
    # And pulling again writes nothing new
    assert pull(store, connections, "bins", "locations").written == 0


def test_code_map_rules_translate_pulled_keys(systems, store):
    # Given rules saying this connection's item codes are canonical skus without their "CN-" prefix
    sys_ = systems(ref=REFERENCE)
    rules = codemap.CodeMapRules.model_validate({"ref": {"items": [{"op": "strip_prefix", "value": "CN-"}]}})
    # When items are pulled with those rules
    result = pull(store, sys_.connections, "ref", "items", mode="full", rules=rules)
    # Then every item is stored under its canonical sku, and the code map answers both ways
    assert result.written == 12 and _skus(store) == sorted(f"CN-{sku}" for sku in SKUS)
    conn_id = sys_.connections.id("ref")
    with store.session() as s:
        assert codemap.to_external(s, conn_id, "items", "CN-TS-001") == "TS-001"
        assert codemap.to_canonical(s, conn_id, "items", "TS-001") == "CN-TS-001"
