"""A trial's scenario: the master data every candidate starts from and the movements driven through it.

The master data is either written out (``[scenario.master_data]`` with items, warehouses, partners
and opening balances, the same shape as a sandbox world) or generated from a small spec
(``[scenario.master_data.generate]``) with the scenario's seed. The movement plan is generated
from the seed too, so every candidate (and every re-run of the same file) gets the same sequence
of documents, with the same lines and quantities, in the same order.

Outbound documents never ask for more stock than the declared opening balances guarantee: the
planner keeps, per position, the opening quantity minus every outbound already planned, and
counts no inbound towards it. Whatever order the concurrent workers post in, no outbound can
then fail for lack of stock on a system that was seeded with the declared opening balances; a
refusal is the system's doing, not the plan's.
"""
from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from canonical import Item, Movement, MovementKind, MovementLine, Partner, PartnerRole, Warehouse

# The article's standard processes (采购入库, 销售出库, 调拨, 盘点盘盈/盘亏, 销售退货, 采购退货).
STANDARD_PROCESSES: tuple[MovementKind, ...] = (
    MovementKind.purchase_receipt, MovementKind.sales_issue, MovementKind.transfer, MovementKind.count_gain,
    MovementKind.count_loss, MovementKind.sales_return, MovementKind.purchase_return,
)
PROCESS_LABELS: dict[str, str] = {
    "purchase_receipt": "采购入库 purchase receipt",
    "sales_issue": "销售出库 sales issue",
    "transfer": "调拨 transfer",
    "count_gain": "盘盈 count gain",
    "count_loss": "盘亏 count loss",
    "sales_return": "销售退货 sales return",
    "purchase_return": "采购退货 purchase return",
}
DEFAULT_MIX: dict[str, float] = {
    "purchase_receipt": 25, "sales_issue": 35, "transfer": 10, "count_gain": 5, "count_loss": 5,
    "sales_return": 10, "purchase_return": 10,
}

_Strict = ConfigDict(extra="forbid", frozen=True)
Qty = Annotated[Decimal, Field(ge=0)]


class MasterItem(BaseModel):
    model_config = _Strict
    sku: str = Field(min_length=1)
    name: str = Field(min_length=1)
    unit: str = "PCS"
    spec: str | None = None
    batch_managed: bool = False
    barcode: str | None = None
    category: str | None = None


class MasterWarehouse(BaseModel):
    model_config = _Strict
    code: str = Field(min_length=1)
    name: str = Field(min_length=1)


class MasterPartner(BaseModel):
    model_config = _Strict
    code: str = Field(min_length=1)
    name: str = Field(min_length=1)
    role: Literal["supplier", "customer"]


class MasterBalance(BaseModel):
    model_config = _Strict
    sku: str
    warehouse: str
    qty: Qty


class Generate(BaseModel):
    """``[scenario.master_data.generate]``: a synthetic apparel catalogue, seeded by the scenario."""

    model_config = _Strict
    items: int = Field(20, ge=1, le=100_000)
    warehouses: int = Field(2, ge=1, le=50)
    suppliers: int = Field(1, ge=1, le=100)
    customers: int = Field(1, ge=1, le=100)
    opening: tuple[int, int] = Field((50, 200), description="opening quantity range per item and warehouse")
    prefix: str = Field("TRL", min_length=1, max_length=8, pattern=r"^[A-Z0-9]+$")

    @field_validator("opening")
    @classmethod
    def _range(cls, value: tuple[int, int]) -> tuple[int, int]:
        if value[0] < 0 or value[1] < value[0]:
            raise ValueError("expected [low, high] with 0 <= low <= high")
        return value


class MasterData(BaseModel):
    """Items, warehouses, partners and opening balances; or ``generate`` to make them up."""

    model_config = _Strict
    items: tuple[MasterItem, ...] = ()
    warehouses: tuple[MasterWarehouse, ...] = ()
    partners: tuple[MasterPartner, ...] = ()
    balances: tuple[MasterBalance, ...] = ()
    generate: Generate | None = None

    @model_validator(mode="after")
    def _consistent(self) -> MasterData:
        written = bool(self.items or self.warehouses or self.partners or self.balances)
        if self.generate is not None and written:
            raise ValueError("give either generate or items/warehouses/partners/balances, not both")
        if self.generate is None:
            if not self.items or not self.warehouses:
                raise ValueError("needs items and warehouses (or a [generate] table)")
            skus = {i.sku for i in self.items}
            codes = {w.code for w in self.warehouses}
            for index, b in enumerate(self.balances):
                if b.sku not in skus:
                    raise ValueError(f"balances[{index}].sku: {b.sku!r} is not one of the items")
                if b.warehouse not in codes:
                    raise ValueError(f"balances[{index}].warehouse: {b.warehouse!r} is not one of the warehouses")
            if not any(p.role == "supplier" for p in self.partners) or not any(
                    p.role == "customer" for p in self.partners):
                raise ValueError("partners: needs at least one supplier and one customer")
        return self

    def resolved(self, seed: int) -> MasterData:
        """The written-out master data (generated with ``seed`` when this is a generator spec)."""
        if self.generate is None:
            return self
        return generate_master(self.generate, seed)

    def to_world_dict(self) -> dict[str, Any]:
        """The same data as a sandbox world (``{"world": ...}`` is what a simulator's seed takes)."""
        data = self.resolved(0) if self.generate is not None else self
        return {
            "items": [{"sku": i.sku, "name": i.name, "unit": i.unit, "spec": i.spec, "batch_managed": i.batch_managed,
                       "barcode": i.barcode, "category": i.category, "attributes": {}} for i in data.items],
            "warehouses": [{"code": w.code, "name": w.name, "bins": []} for w in data.warehouses],
            "partners": [{"code": p.code, "name": p.name, "role": p.role} for p in data.partners],
            "balances": [{"sku": b.sku, "warehouse": b.warehouse, "qty": str(b.qty), "bin": None, "lot": None}
                         for b in data.balances],
        }

    def canonical_items(self) -> list[Item]:
        return [Item(sku=i.sku, name=i.name, base_unit=i.unit, spec=i.spec, batch_managed=i.batch_managed,
                     barcode=i.barcode, category=i.category) for i in self.items]

    def canonical_warehouses(self) -> list[Warehouse]:
        return [Warehouse(code=w.code, name=w.name) for w in self.warehouses]

    def canonical_partners(self) -> list[Partner]:
        return [Partner(code=p.code, name=p.name, role=PartnerRole(p.role)) for p in self.partners]

    def opening(self) -> dict[tuple[str, str], Decimal]:
        out: dict[tuple[str, str], Decimal] = defaultdict(Decimal)
        for b in self.balances:
            out[(b.sku, b.warehouse)] += b.qty
        return dict(out)


_COLOURS = ("白色", "黑色", "藏青", "灰色", "红色")
_SIZES = ("S", "M", "L", "XL")
_STYLES = ("运动T恤", "卫衣", "休闲裤", "跑步短裤", "防风外套", "针织帽")


def generate_master(spec: Generate, seed: int) -> MasterData:
    """A deterministic catalogue: styles × colours × sizes, a few warehouses and partners."""
    rng = random.Random(f"master:{seed}")
    items = []
    for n in range(spec.items):
        style, colour, size = _STYLES[n % len(_STYLES)], _COLOURS[(n // 6) % 5], _SIZES[(n // 30) % 4]
        items.append(MasterItem(sku=f"{spec.prefix}-{n + 1:05d}", name=f"{style} {colour}", spec=f"{size} {colour}",
                                category="服装"))
    warehouses = [MasterWarehouse(code=f"{spec.prefix}W{n + 1:02d}", name=f"试点仓 {n + 1}")
                  for n in range(spec.warehouses)]
    partners = [MasterPartner(code=f"{spec.prefix}S{n + 1:02d}", name=f"供应商 {n + 1}", role="supplier")
                for n in range(spec.suppliers)]
    partners += [MasterPartner(code=f"{spec.prefix}C{n + 1:02d}", name=f"客户 {n + 1}", role="customer")
                 for n in range(spec.customers)]
    low, high = spec.opening
    balances = [MasterBalance(sku=i.sku, warehouse=w.code, qty=Decimal(rng.randint(low, high)))
                for i in items for w in warehouses]
    return MasterData(items=tuple(items), warehouses=tuple(warehouses), partners=tuple(partners),
                      balances=tuple(b for b in balances if b.qty > 0))


class Scenario(BaseModel):
    """``[scenario]``: what every candidate is asked to post."""

    model_config = _Strict
    seed: int = 1
    movements: int = Field(50, ge=1, le=1_000_000, description="documents per candidate")
    mix: dict[MovementKind, Annotated[float, Field(ge=0)]] = Field(
        default_factory=lambda: {MovementKind(k): v for k, v in DEFAULT_MIX.items()})
    concurrency: int = Field(4, ge=1, le=64, description="worker threads per candidate")
    duration_cap: float = Field(300.0, gt=0, description="seconds; documents not started by then are not sent")
    lines_per_document: tuple[int, int] = (1, 3)
    # True: every line of a document takes stock from / puts it into the same warehouse (one per
    # side), as most stock documents do and as forms with a header warehouse (a Jiandaoyun 出入库单)
    # require; False: each line picks its own
    one_warehouse_per_document: bool = False
    quantity: tuple[int, int] = (1, 10)
    document_date: date = date(2024, 3, 1)
    master_data: MasterData = Field(default_factory=lambda: MasterData(generate=Generate()))

    @field_validator("duration_cap", mode="before")
    @classmethod
    def _duration(cls, value: Any) -> Any:
        if isinstance(value, str):
            text = value.strip().lower()
            for suffix, factor in (("ms", 0.001), ("s", 1), ("m", 60), ("h", 3600)):
                if text.endswith(suffix) and text[: -len(suffix)].replace(".", "", 1).isdigit():
                    return float(text[: -len(suffix)]) * factor
            raise ValueError("not a duration; write e.g. 30s, 5m or a number of seconds")
        return value

    @field_validator("mix")
    @classmethod
    def _mix(cls, value: dict[MovementKind, float]) -> dict[MovementKind, float]:
        outside = [k.value for k in value if k not in STANDARD_PROCESSES]
        if outside:
            raise ValueError(f"{outside[0]} is not one of the standard processes "
                             f"({', '.join(k.value for k in STANDARD_PROCESSES)})")
        if not any(v > 0 for v in value.values()):
            raise ValueError("at least one process needs a share above 0")
        return value

    @field_validator("lines_per_document", "quantity")
    @classmethod
    def _positive_range(cls, value: tuple[int, int]) -> tuple[int, int]:
        if value[0] < 1 or value[1] < value[0]:
            raise ValueError("expected [low, high] with 1 <= low <= high")
        return value


@dataclass(frozen=True)
class PlannedMovement:
    seq: int
    movement: Movement


def plan_movements(scenario: Scenario, master: MasterData, *, tag: str) -> list[PlannedMovement]:
    """The scenario's documents, numbered from 1; ``tag`` makes references unique per run.

    Only items that are not batch-managed take part (no lot numbers are invented).
    """
    rng = random.Random(f"plan:{scenario.seed}")
    skus = [i.sku for i in master.items if not i.batch_managed]
    units = {i.sku: i.unit for i in master.items}
    warehouses = [w.code for w in master.warehouses]
    if not skus:
        raise ValueError("scenario.master_data: every item is batch-managed; the trial needs plain items")
    suppliers = [p for p in master.canonical_partners() if p.role is PartnerRole.supplier]
    customers = [p for p in master.canonical_partners() if p.role is PartnerRole.customer]
    guaranteed = defaultdict(Decimal, master.opening())  # opening minus planned outbound, never plus inbound
    kinds = [k for k, w in scenario.mix.items() if w > 0]
    weights = [scenario.mix[k] for k in kinds]
    plan: list[PlannedMovement] = []
    for seq in range(1, scenario.movements + 1):
        kind = rng.choices(kinds, weights)[0]
        n_lines = rng.randint(*scenario.lines_per_document)
        lines: list[MovementLine] = []
        used: set[str] = set()
        sides = _document_warehouses(warehouses, rng) if scenario.one_warehouse_per_document else None
        for _ in range(n_lines):
            sku = rng.choice(skus)
            if sku in used:
                continue
            qty = Decimal(rng.randint(*scenario.quantity))
            line = _line(kind, sku, qty, units[sku], warehouses, guaranteed, rng, len(lines) + 1, sides)
            if line is not None:
                used.add(sku)
                lines.append(line)
        if not lines:  # nothing left to take out: receive instead, so the plan keeps its length
            kind = MovementKind.purchase_receipt
            sku = rng.choice(skus)
            lines = [MovementLine(line_no=1, sku=sku, quantity=Decimal(rng.randint(*scenario.quantity)),
                                  unit=units[sku], to_warehouse=rng.choice(warehouses))]
        role = kind.partner_role
        party = None
        if role is PartnerRole.supplier:
            party = rng.choice(suppliers)
        elif role is PartnerRole.customer:
            party = rng.choice(customers)
        movement = Movement(reference=f"{tag}-{seq:05d}", kind=kind, document_date=scenario.document_date,
                            lines=tuple(lines), counterparty=party, memo=f"erphub trial {tag}")
        plan.append(PlannedMovement(seq, movement))
    return plan


def _document_warehouses(warehouses: list[str], rng: random.Random) -> tuple[str, str | None]:
    """One document's (from, to) warehouses: ``from`` for issues and transfers, also the
    receiving warehouse of receipts; ``to`` (another one, if there is one) for transfers."""
    source = rng.choice(warehouses)
    others = [w for w in warehouses if w != source]
    return source, rng.choice(others) if others else None


def _line(kind: MovementKind, sku: str, qty: Decimal, unit: str, warehouses: list[str],
          guaranteed: dict[tuple[str, str], Decimal], rng: random.Random, line_no: int,
          sides: tuple[str, str | None] | None = None) -> MovementLine | None:
    """One line, or None when no warehouse is sure to hold ``qty`` to take out. ``sides`` fixes the
    document's warehouses (``one_warehouse_per_document``)."""
    direction = kind.direction
    if direction == "in":
        into = sides[0] if sides else rng.choice(warehouses)
        return MovementLine(line_no=line_no, sku=sku, quantity=qty, unit=unit, to_warehouse=into)
    sources = [w for w in ([sides[0]] if sides else warehouses) if guaranteed[(sku, w)] >= qty]
    if direction == "transfer":
        sources = [w for w in sources if len(warehouses) > 1]
    if not sources:
        return None
    source = rng.choice(sources)
    guaranteed[(sku, source)] -= qty
    if direction == "out":
        return MovementLine(line_no=line_no, sku=sku, quantity=qty, unit=unit, from_warehouse=source)
    target = sides[1] if sides else rng.choice([w for w in warehouses if w != source])
    return MovementLine(line_no=line_no, sku=sku, quantity=qty, unit=unit, from_warehouse=source, to_warehouse=target)


def apply_movements(opening: Mapping[tuple[str, str], Decimal],
                    movements: Iterable[Movement]) -> dict[tuple[str, str], Decimal]:
    """The expected ledger: opening balances plus the stock deltas of ``movements``, per (sku, warehouse)."""
    ledger: dict[tuple[str, str], Decimal] = defaultdict(Decimal, opening)
    for movement in movements:
        for delta in movement.stock_deltas():
            ledger[(delta.sku, delta.warehouse)] += delta.quantity
    return dict(ledger)
