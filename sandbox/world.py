"""A vendor-neutral description of a company's inventory world, for seeding simulators.

Every vendor simulator turns the same :class:`World` into its own native records (Kingdee
BD_MATERIAL rows, SAP B1 Items, ...), so the conformance suite, demos and trials can load the
same master data and opening stock into every system. Plain dataclasses: the sandbox shares no
code with the clients it tests.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from decimal import Decimal
from typing import Any


@dataclass(frozen=True)
class WorldItem:
    sku: str
    name: str
    unit: str = "PCS"
    spec: str | None = None
    batch_managed: bool = False
    barcode: str | None = None
    category: str | None = None
    attributes: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class WorldWarehouse:
    code: str
    name: str
    bins: tuple[str, ...] = ()


@dataclass(frozen=True)
class WorldPartner:
    code: str
    name: str
    role: str  # "supplier" or "customer"


@dataclass(frozen=True)
class WorldBalance:
    sku: str
    warehouse: str
    qty: Decimal
    bin: str | None = None
    lot: str | None = None


@dataclass(frozen=True)
class World:
    items: tuple[WorldItem, ...] = ()
    warehouses: tuple[WorldWarehouse, ...] = ()
    partners: tuple[WorldPartner, ...] = ()
    balances: tuple[WorldBalance, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        def plain(obj: Any) -> Any:
            data = asdict(obj)
            return {k: (str(v) if isinstance(v, Decimal) else list(v) if isinstance(v, tuple) else
                        dict(v) if isinstance(v, Mapping) else v) for k, v in data.items()}
        return {"items": [plain(i) for i in self.items], "warehouses": [plain(w) for w in self.warehouses],
                "partners": [plain(p) for p in self.partners], "balances": [plain(b) for b in self.balances]}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> World:
        unknown = sorted(set(data) - {"items", "warehouses", "partners", "balances"})
        if unknown:
            raise ValueError(f"world.{unknown[0]}: unknown key")

        def build(kind: str, factory: Any, convert: Any = None) -> tuple[Any, ...]:
            rows = []
            for index, row in enumerate(data.get(kind, ())):
                try:
                    rows.append(factory(**(convert(row) if convert else row)))
                except (TypeError, ArithmeticError, ValueError) as exc:
                    raise ValueError(f"world.{kind}[{index}]: {exc}") from None
            return tuple(rows)

        return cls(
            items=build("items", WorldItem),
            warehouses=build("warehouses", WorldWarehouse, lambda r: {**r, "bins": tuple(r.get("bins", ()))}),
            partners=build("partners", WorldPartner),
            balances=build("balances", WorldBalance, lambda r: {**r, "qty": Decimal(str(r["qty"]))}),
        )
