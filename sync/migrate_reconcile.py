"""The end of a migration: prove the target matches the source, exactly and small.

- **items, warehouses, bin locations**: the code sets of both sides, each translated to canonical
  codes through the code map (:func:`sync.codemap.to_canonicals`), streamed page by page: matched,
  missing in the target, extra in the target (other master data the target already had; reported, not a failure).
  Bins are ``WH/BIN`` with the warehouse's canonical code; a source that cannot list its bins
  counts those its balance snapshot names; a target that cannot list them is not compared.
- **balances**: a fresh snapshot of each side through :func:`sync.pull.pull_balances` (stored in
  ``balance_snapshot``, codes translated), summed per sku + warehouse (bins and lots together):
  matched, missing in the target, different quantity, extra in the target (stock the source does
  not have). Any of the last three is a failure.

Both sides go through the migration's scratch :class:`~sync.migrate_workspace.Workspace`, so a
large catalogue never sits in memory. The comparison layer (``compare/``) does the richer variance
(units, in-flight movements, value at stake); this one only answers "identical or not".
"""
from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from sqlalchemy import select

from connectors.base import Entity
from sync import codemap
from sync.connections import Connections
from sync.migrate_workspace import Workspace
from sync.pull import pull_balances
from sync.store import BalanceSnapshotRow, Store

__all__ = ["BalanceComparison", "Reconciliation", "SetComparison", "reconcile"]

EXAMPLES = 20


@dataclass
class SetComparison:
    matched: int = 0
    missing: int = 0   # in the source, not in the target
    extra: int = 0     # in the target only (not a failure)
    examples_missing: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.missing == 0


@dataclass
class BalanceComparison:
    matched: int = 0
    missing: int = 0    # stock in the source, none in the target
    different: int = 0  # both hold stock, quantities differ
    extra: int = 0      # stock in the target the source does not have
    source_snapshot: int | None = None
    target_snapshot: int | None = None
    examples: list[tuple[str, str, Decimal | None, Decimal | None]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.missing == 0 and self.different == 0 and self.extra == 0


@dataclass
class Reconciliation:
    sets: dict[str, SetComparison] = field(default_factory=dict)
    balances: BalanceComparison | None = None

    @property
    def ok(self) -> bool:
        return all(s.ok for s in self.sets.values()) and (self.balances is None or self.balances.ok)


def reconcile(store: Store, connections: Connections, source: str, target: str, entities: tuple[str, ...],
              ws: Workspace, *, rules: codemap.CodeMapRules | None = None,
              on_progress: Callable[[str, Any], None] | None = None) -> Reconciliation:
    """Compare ``target`` with ``source`` for the migrated ``entities``; see the module doc."""
    result = Reconciliation()
    for entity, key in (("warehouses", "code"), ("items", "sku")):
        if entity not in entities:
            continue
        for side, name in (("src", source), ("tgt", target)):
            connector, connection_id = connections.connector(name), connections.id(name)
            for page in _all(connector.read(Entity(entity))):
                codes = [getattr(r, key) for r in page.records]
                with store.session() as session:
                    canonical = codemap.to_canonicals(session, connection_id, entity, codes, rules=rules)
                ws.add_codes(side, entity, (canonical.get(c) or f"?{c}" for c in codes))
        matched, missing, extra, some_missing, _ = ws.compare_codes(entity, EXAMPLES)
        result.sets[entity] = SetComparison(matched, missing, extra, some_missing)
    if "balances" in entities:
        comparison = BalanceComparison()
        comparison.source_snapshot = pull_balances(store, connections, source, rules=rules)
        comparison.target_snapshot = pull_balances(store, connections, target, rules=rules)
        for side, snapshot in (("src", comparison.source_snapshot), ("tgt", comparison.target_snapshot)):
            ws.add_balances(side, _snapshot_rows(store, snapshot))
        for sku, warehouse, here, there in ws.balance_pairs():
            if here is not None and there is not None and here == there:
                comparison.matched += 1
                continue
            if there is None:
                comparison.missing += 1
            elif here is None:
                comparison.extra += 1
            else:
                comparison.different += 1
            if len(comparison.examples) < EXAMPLES:
                comparison.examples.append((sku, warehouse, here, there))
        result.balances = comparison
    if "locations" in entities:
        bins = _location_sets(store, connections, source, target, ws, result.balances, rules)
        if bins is not None:
            result.sets["locations"] = bins
    if on_progress is not None:
        on_progress("reconcile", result)
    return result


def _location_sets(store: Store, connections: Connections, source: str, target: str, ws: Workspace,
                   balances: BalanceComparison | None, rules: codemap.CodeMapRules | None) -> SetComparison | None:
    """The bins (``WH/BIN``, warehouse codes canonical) of both sides: the source's own list, or the
    bins its balance snapshot names when it cannot list them; None when a side cannot tell."""
    if Entity.LOCATIONS not in connections.connector(target).capabilities.entities:
        return None
    sides = [("tgt", target)]
    if Entity.LOCATIONS in connections.connector(source).capabilities.entities:
        sides.append(("src", source))
    elif balances is not None and balances.source_snapshot is not None:
        with store.session() as session:
            ws.add_codes("src", "locations", (f"{wh}/{code}" for wh, code in session.execute(
                select(BalanceSnapshotRow.warehouse, BalanceSnapshotRow.bin).distinct().where(
                    BalanceSnapshotRow.snapshot_id == balances.source_snapshot, BalanceSnapshotRow.bin.is_not(None)))))
    else:
        return None
    for side, name in sides:
        connector, connection_id = connections.connector(name), connections.id(name)
        for page in _all(connector.read(Entity.LOCATIONS)):
            with store.session() as session:
                whs = codemap.to_canonicals(session, connection_id, "warehouses",
                                            {b.warehouse for b in page.records}, rules=rules)
            ws.add_codes(side, "locations", (f"{whs.get(b.warehouse) or '?' + b.warehouse}/{b.code}"
                                             for b in page.records))
    matched, missing, extra, some_missing, _ = ws.compare_codes("locations", EXAMPLES)
    return SetComparison(matched, missing, extra, some_missing)


def _all(pages: Iterator[Any]) -> Iterator[Any]:
    for page in pages:
        yield page
        if page.resume is None:
            return


def _snapshot_rows(store: Store, snapshot_id: int) -> Iterator[tuple[str, str, Decimal]]:
    """(sku, warehouse, on-hand) of a snapshot, streamed in chunks."""
    with store.session() as session:
        rows = session.execute(
            select(BalanceSnapshotRow.sku, BalanceSnapshotRow.warehouse, BalanceSnapshotRow.on_hand)
            .where(BalanceSnapshotRow.snapshot_id == snapshot_id)
            .execution_options(yield_per=5000))
        for sku, warehouse, on_hand in rows:
            yield sku, warehouse, on_hand
