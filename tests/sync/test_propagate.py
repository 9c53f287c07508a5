"""Master data flows: what a pull changed is upserted into the targets, once, by code."""
from __future__ import annotations

from sqlalchemy import select

from connectors.base import Entity
from sync.propagate import propagate
from sync.pull import pull
from sync.retry import RetryPolicy
from sync.store import ErrorQueue
from tests.conformance.kit import STANDARD_WORLD, drain
from tests.sync.conftest import KINGDEE, REFERENCE

FAST = RetryPolicy(scale=0.001)


def _codes(connector, entity):
    return {r.natural_key for r in drain(connector.read(entity))[1]}


def test_items_and_warehouses_pulled_from_one_system_are_written_to_another(systems, store):
    # Given the reference system as source and an empty-of-new-items Kingdee as target
    running = systems(src=REFERENCE, kd=KINGDEE)
    connections = running.connections
    running.sims["src"].seed({"world": {"items": [{"sku": "NEW-1", "name": "新款外套", "unit": "PCS"}],
                                        "warehouses": [{"code": "WH-N", "name": "新仓"}]}})
    # When the source is pulled and propagated twice
    for entity in (Entity.WAREHOUSES, Entity.ITEMS):
        pull(store, connections, "src", entity, mode="full")
    first = {r.entity: r for r in propagate(store, connections, "src", ["kd"], Entity.WAREHOUSES, policy=FAST)
             + propagate(store, connections, "src", ["kd"], Entity.ITEMS, policy=FAST)}
    again = propagate(store, connections, "src", ["kd"], Entity.ITEMS, policy=FAST)
    # Then Kingdee holds the new item and warehouse, the seeded ones were found already there,
    # and the second pass sent nothing because nothing changed since
    target = connections.connector("kd")
    assert "NEW-1" in _codes(target, Entity.ITEMS) and "WH-N" in _codes(target, Entity.WAREHOUSES)
    assert first["items"].created == 1 and first["items"].existing == len(STANDARD_WORLD.items)
    assert first["warehouses"].created == 1 and first["items"].stopped is None
    assert again[0].created == again[0].existing == 0


def test_a_renamed_item_flows_again(systems, store):
    running = systems(src=REFERENCE, kd=KINGDEE)
    connections = running.connections
    pull(store, connections, "src", Entity.ITEMS, mode="full")
    propagate(store, connections, "src", ["kd"], Entity.ITEMS, policy=FAST)
    # When the source renames an item and the next pull picks it up
    running.sims["src"].seed({"world": {"items": [{"sku": "CAP-01", "name": "棒球帽（新款）", "unit": "PCS"}]}})
    pull(store, connections, "src", Entity.ITEMS, mode="full")
    result = propagate(store, connections, "src", ["kd"], Entity.ITEMS, policy=FAST)[0]
    # Then only that item is sent, and Kingdee carries the new name
    assert result.keys == ["CAP-01"]
    names = {r.sku: r.name for r in drain(connections.connector("kd").read(Entity.ITEMS))[1]}
    assert names["CAP-01"] == "棒球帽（新款）"


def test_a_record_the_target_refuses_goes_to_the_error_queue_and_the_rest_flows(systems, store):
    running = systems(src=REFERENCE, kd=KINGDEE)
    connections = running.connections
    # An item whose unit Kingdee does not know, beside a good one
    running.sims["src"].seed({"world": {"items": [{"sku": "ODD-1", "name": "x", "unit": "DOZ"},
                                                  {"sku": "GOOD-1", "name": "y", "unit": "PCS"}]}})
    pull(store, connections, "src", Entity.ITEMS, mode="full")
    result = propagate(store, connections, "src", ["kd"], Entity.ITEMS, policy=FAST)[0]
    assert result.rejected == 1 and "GOOD-1" in result.keys
    with store.session() as session:
        entry = session.scalars(select(ErrorQueue).where(ErrorQueue.record_key == "ODD-1")).one()
    assert entry.kind == "rejected" and entry.vendor_code


def test_a_flow_run_pulls_and_propagates(systems, store):
    from sync.actors import Runtime
    from sync.flows import flow_steps, pull_step

    class Flow:
        name, kind, source, targets = "md", "master_data", "src", ("kd",)
        entities, every = ("warehouses", "items"), None

    running = systems(src=REFERENCE, kd=KINGDEE)
    running.sims["src"].seed({"world": {"warehouses": [{"code": "WH-F", "name": "流程仓"}]}})
    runtime = Runtime(store=store, connections=running.connections, policy=FAST, flows={"md": Flow()})
    for step in flow_steps(runtime, Flow()):
        pull_step(runtime, step.connection, step.entity, step.mode, "md")
    assert "WH-F" in _codes(running.connections.connector("kd"), Entity.WAREHOUSES)


class _Flaky:
    """The Kingdee connector behind a switch: ``down`` refuses every call as the network would;
    ``refuse`` refuses, as a whole, any upsert call holding that sku."""

    def __init__(self, inner, *, down: bool = False, refuse: str | None = None) -> None:
        self.inner, self.down, self.refuse, self.calls = inner, down, refuse, []

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def upsert(self, entity, records):
        from connectors.errors import Rejected, Transient

        self.calls.append([r.natural_key for r in records])
        if self.down:
            raise Transient("connection refused")
        if self.refuse and any(r.natural_key == self.refuse for r in records):
            raise Rejected("the call holds a record we cannot take", vendor_code="E_BATCH")
        return self.inner.upsert(entity, records)


def _behind(monkeypatch, connections, name: str, wrapper: _Flaky) -> _Flaky:
    real = connections.connector
    monkeypatch.setattr(connections, "connector", lambda n: wrapper if n == name else real(n))
    return wrapper


def test_an_unreachable_target_keeps_the_cursor_and_the_next_run_sends_the_records(systems, store,
                                                                                   monkeypatch) -> None:
    # Given a new item pulled from the source while Kingdee is unreachable
    running = systems(src=REFERENCE, kd=KINGDEE)
    connections = running.connections
    running.sims["src"].seed({"world": {"items": [{"sku": "NEW-9", "name": "新款", "unit": "PCS"}]}})
    pull(store, connections, "src", Entity.ITEMS, mode="full")
    flaky = _behind(monkeypatch, connections, "kd", _Flaky(connections.connector("kd"), down=True))
    # When it is propagated
    stopped = propagate(store, connections, "src", ["kd"], Entity.ITEMS, policy=FAST)[0]
    # Then the flow stops for that target, retried in-process first, and nothing is recorded as refused
    assert stopped.stopped and "transient" in stopped.stopped and stopped.rejected == 0
    assert len(flaky.calls) == FAST.inline_attempts
    with store.session() as session:
        assert session.scalars(select(ErrorQueue)).all() == []
    # When Kingdee is back, the next run sends what the stopped one could not (the cursor stayed)
    flaky.down = False
    again = propagate(store, connections, "src", ["kd"], Entity.ITEMS, policy=FAST)[0]
    assert again.stopped is None and "NEW-9" in again.keys and again.created == 1
    assert "NEW-9" in _codes(connections.connector("kd"), Entity.ITEMS)


def test_a_batch_refused_as_a_whole_is_sent_record_by_record_and_the_cursor_moves_on(systems, store,
                                                                                     monkeypatch) -> None:
    running = systems(src=REFERENCE, kd=KINGDEE)
    connections = running.connections
    running.sims["src"].seed({"world": {"items": [{"sku": "BAD-1", "name": "x", "unit": "PCS"},
                                                  {"sku": "OK-1", "name": "y", "unit": "PCS"}]}})
    pull(store, connections, "src", Entity.ITEMS, mode="full")
    _behind(monkeypatch, connections, "kd", _Flaky(connections.connector("kd"), refuse="BAD-1"))
    # When the items are propagated and Kingdee refuses the batch holding BAD-1
    result = propagate(store, connections, "src", ["kd"], Entity.ITEMS, policy=FAST)[0]
    # Then only BAD-1 is refused (into the error queue, with the vendor's code), the others flow
    assert result.stopped is None and result.rejected == 1 and "OK-1" in result.keys
    with store.session() as session:
        entry = session.scalars(select(ErrorQueue).where(ErrorQueue.record_key == "BAD-1")).one()
    assert entry.kind == "rejected" and entry.vendor_code == "E_BATCH"
    # and the cursor moved past them: the next run sends nothing
    again = propagate(store, connections, "src", ["kd"], Entity.ITEMS, policy=FAST)[0]
    assert again.created == again.existing == again.rejected == 0
