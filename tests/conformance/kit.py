"""What the conformance tests share: the standard world, a controllable clock, movement
builders and ledger arithmetic. Vendor-neutral; speaks the connector contract and the
simulator's Python handle only.
"""
from __future__ import annotations

import secrets
import threading
from collections import defaultdict
from collections.abc import Iterable, Mapping
from datetime import date, datetime, timezone
from decimal import Decimal
from typing import Any

from canonical import Item, Movement, MovementKind, Partner, Warehouse
from connectors.base import Page
from sandbox.world import World, WorldBalance, WorldItem, WorldPartner, WorldWarehouse

# 2024-03-01T00:00:00Z: a whole second, so vendors that keep seconds only still stamp it exactly.
EPOCH = 1_709_251_200.0


class Clock:
    """The simulator's clock: frozen until a test moves it, so modification stamps are exact.

    Pass it as ``target.simulator(clock=clock)``; ``clock()`` is epoch seconds.
    """

    def __init__(self, start: float = EPOCH) -> None:
        self._now = float(start)
        self._lock = threading.Lock()

    def __call__(self) -> float:
        with self._lock:
            return self._now

    def advance(self, seconds: float) -> float:
        with self._lock:
            self._now += seconds
            return self._now

    def set(self, epoch: float) -> None:
        with self._lock:
            self._now = float(epoch)

    def datetime(self, epoch: float | None = None) -> datetime:
        return datetime.fromtimestamp(self() if epoch is None else epoch, tz=timezone.utc)


# --- the standard world -------------------------------------------------------------------

SUPPLIER = WorldPartner("SUP-01", "上海纺织品有限公司", "supplier")
CUSTOMER = WorldPartner("CUS-01", "北京体育用品商店", "customer")
QUOTED_SKU = "OB'50%-X"  # a quote and a percent sign: filter quoting and LIKE wildcards

STANDARD_WORLD = World(
    items=(
        WorldItem("TS-001", "运动T恤", "PCS", spec="M 白色", barcode="6901234567001", category="服装"),
        WorldItem("TS-002", "运动T恤 长袖", "PCS", spec="L 黑色", barcode="6901234567002", category="服装"),
        WorldItem("SH-001", "跑步鞋", "PAIR", spec="42", category="鞋类"),
        WorldItem("RICE-5", "东北大米", "KG", category="食品"),
        WorldItem(QUOTED_SKU, "O'Brien 50% wool scarf", "PCS", spec="100% 'lambswool' blend", category="服装"),
        WorldItem("CAP-01", "棒球帽", "PCS", category="配件"),
        WorldItem("SOCK-3", "运动袜 三双装", "PACK", category="服装"),
        WorldItem("BAG-01", "双肩包", "PCS", barcode="6901234567088", category="配件"),
        WorldItem("OIL-1", "花生油", "L", category="食品"),
        WorldItem("WATER-24", "矿泉水 24瓶", "CTN", spec="550ml×24", category="食品"),
        WorldItem("YOG-01", "酸奶", "PCS", batch_managed=True, category="食品"),
        WorldItem("GLV-01", "手套", "PAIR", category="配件"),
    ),
    warehouses=(
        WorldWarehouse("WH01", "主仓库"),
        WorldWarehouse("WH02", "门店仓"),
        WorldWarehouse("WH03", "退货仓", bins=("A-01-01", "A-01-02")),
    ),
    partners=(SUPPLIER, CUSTOMER),
    balances=(
        WorldBalance("TS-001", "WH01", Decimal("100")),
        WorldBalance("TS-001", "WH02", Decimal("20")),
        WorldBalance("TS-002", "WH01", Decimal("35")),
        WorldBalance("SH-001", "WH01", Decimal("40")),
        WorldBalance("RICE-5", "WH01", Decimal("12.5")),
        WorldBalance(QUOTED_SKU, "WH01", Decimal("8")),
        WorldBalance("CAP-01", "WH03", Decimal("5"), bin="A-01-01"),
        WorldBalance("SOCK-3", "WH02", Decimal("60")),
        WorldBalance("BAG-01", "WH01", Decimal("7")),
        WorldBalance("OIL-1", "WH02", Decimal("18.25")),
        WorldBalance("WATER-24", "WH01", Decimal("24")),
    ),
)

# Which canonical fields the full read compares, per entity (a target narrows them with
# extras "item_fields" / "warehouse_fields" / "partner_fields").
ITEM_FIELDS = ("sku", "name", "base_unit", "spec", "barcode", "category", "batch_managed")
WAREHOUSE_FIELDS = ("code", "name")
PARTNER_FIELDS = ("code", "name", "role")


def expected_items(world: World = STANDARD_WORLD) -> dict[str, Item]:
    return {i.sku: Item(sku=i.sku, name=i.name, base_unit=i.unit, spec=i.spec, barcode=i.barcode,
                        category=i.category, batch_managed=i.batch_managed) for i in world.items}


def expected_warehouses(world: World = STANDARD_WORLD) -> dict[str, Warehouse]:
    return {w.code: Warehouse(code=w.code, name=w.name, bin_managed=bool(w.bins)) for w in world.warehouses}


def expected_partners(world: World = STANDARD_WORLD) -> dict[str, Partner]:
    return {p.code: Partner(code=p.code, name=p.name, role=p.role) for p in world.partners}


def project(record: Any, fields: Iterable[str]) -> dict[str, Any]:
    return {name: getattr(record, name) for name in fields}


# --- reading --------------------------------------------------------------------------------


def drain(pages: Iterable[Page[Any]]) -> tuple[list[Page[Any]], list[Any]]:
    """Every page of a read, and all their records in order."""
    pages = list(pages)
    return pages, [record for page in pages for record in page.records]


# --- keys and movements -----------------------------------------------------------------------


def fresh_key(prefix: str = "K") -> str:
    """A short, unique idempotency key (11 characters: fits SAP B1's Reference2)."""
    return f"{prefix}{secrets.token_hex(5).upper()}"


def fresh_reference() -> str:
    return fresh_key("R")


def unit_of(sku: str, world: World = STANDARD_WORLD) -> str:
    return next(i.unit for i in world.items if i.sku == sku)


def partner(world_partner: WorldPartner) -> Partner:
    return Partner(code=world_partner.code, name=world_partner.name, role=world_partner.role)


def movement(kind: MovementKind | str, *, reference: str | None = None, lines: Iterable[tuple[str, str]] = (),
             source: str = "WH01", dest: str = "WH02", on: date = date(2024, 3, 1)) -> Movement:
    """A valid movement of ``kind`` built from the standard world.

    ``lines`` are ``(sku, quantity)``; by default two lines, one in whole pieces (TS-001) and one
    with a fraction (RICE-5 in KG), both stocked in WH01. Outbound sides use ``source``, inbound
    sides ``dest``; a counterparty is set when the kind needs one.
    """
    kind = MovementKind(kind)
    out_sign, in_sign = kind.stock_sign
    rows = list(lines) or [("TS-001", "2"), ("RICE-5", "1.5")]
    built = []
    for number, (sku, qty) in enumerate(rows, start=1):
        built.append({
            "line_no": number, "sku": sku, "quantity": Decimal(qty), "unit": unit_of(sku),
            "from_warehouse": source if out_sign else None, "to_warehouse": dest if in_sign else None,
        })
    role = kind.partner_role
    counterparty = None
    if role is not None:
        counterparty = partner(SUPPLIER if role.value == "supplier" else CUSTOMER)
    return Movement(reference=reference or fresh_reference(), kind=kind, document_date=on, lines=built,
                    counterparty=counterparty)


def outbound_kind(kinds: Iterable[str]) -> MovementKind | None:
    """The outbound kind a rejection test uses: a sales issue if supported, else any outbound kind."""
    supported = {MovementKind(k) for k in kinds}
    if MovementKind.sales_issue in supported:
        return MovementKind.sales_issue
    outs = sorted(k for k in supported if k.direction == "out")
    return outs[0] if outs else None


# --- ledger arithmetic ------------------------------------------------------------------------

LedgerKey = tuple[str, str, str | None, str | None]


def ledger_snapshot(sim: Any) -> dict[LedgerKey, Decimal]:
    """The simulator's true balances by (sku, warehouse, bin, lot); blank bin/lot is None."""
    out: dict[LedgerKey, Decimal] = defaultdict(Decimal)
    for key, qty in sim.ledger.balances().items():
        out[(key.sku, key.warehouse, key.bin or None, key.lot or None)] += qty
    return dict(out)


def ledger_change(before: Mapping[LedgerKey, Decimal], after: Mapping[LedgerKey, Decimal]) -> dict[LedgerKey, Decimal]:
    """What moved between two snapshots: non-zero differences only."""
    keys = set(before) | set(after)
    diff = {k: after.get(k, Decimal(0)) - before.get(k, Decimal(0)) for k in keys}
    return {k: v for k, v in diff.items() if v != 0}


def expected_change(*movements: Movement) -> dict[LedgerKey, Decimal]:
    """The ledger change the movements imply (``Movement.stock_deltas``), non-zero only."""
    out: dict[LedgerKey, Decimal] = defaultdict(Decimal)
    for m in movements:
        for d in m.stock_deltas():
            out[(d.sku, d.warehouse, d.bin, d.lot)] += d.quantity
    return {k: v for k, v in out.items() if v != 0}


def on_hand_by_sku_warehouse(rows: Iterable[tuple[str, str, Decimal]]) -> dict[tuple[str, str], Decimal]:
    out: dict[tuple[str, str], Decimal] = defaultdict(Decimal)
    for sku, warehouse, qty in rows:
        out[(sku, warehouse)] += qty
    return {k: v for k, v in out.items() if v != 0}


# --- target extras ----------------------------------------------------------------------------

# Every extras key the suite reads, with its default. test_guard.py refuses any other key.
EXTRAS: dict[str, Any] = {
    # canonical fields compared by the full read (narrow them when the vendor has no such field)
    "item_fields": ITEM_FIELDS,
    "warehouse_fields": WAREHOUSE_FIELDS,
    "partner_fields": PARTNER_FIELDS,
    # the exact vendor code of a negative-stock rejection, when the vendor has a fixed one
    "rejected_vendor_code": None,
    # True: a refused push may leave unposted drafts carrying the key (stock never moves)
    "rejection_leaves_drafts": False,
    # fault-rule Target fields (path / operation / method globs) selecting the call that commits
    # a push's stock posting (e.g. Kingdee {"operation": "Audit"}); {} = every call
    "push_fault_target": {},
    # fault-rule Target fields selecting the calls a read makes; {} = every call
    "read_fault_target": {},
    # operation glob of the login call: when set, re-logins are counted
    "login_operation": None,
}


def extra(target: Any, key: str) -> Any:
    if key not in EXTRAS:
        raise KeyError(f"{key}: not an extras key the suite knows (see kit.EXTRAS)")
    return target.extras.get(key, EXTRAS[key])
