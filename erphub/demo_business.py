"""The demo's "business": the apparel company's daily stock documents, posted into Kingdee.

:func:`plan_documents` turns the demo company's opening stock into a seeded sequence of the standard
processes (purchase receipts, sales issues, transfers, count gains and losses, sales and purchase
returns, in :data:`compare.scenario.DEFAULT_MIX` proportions). Unlike a trial's plan it knows bins:
a line that takes stock out names the bin the stock lies in, a line into a bin-managed warehouse
names a bin. Outbound lines never ask for more than the opening stock minus what earlier documents
already took (inbound never counts), so no document is refused for lack of stock whatever the
order they land in. Lot-managed items are left out (no lot numbers are invented).

:class:`Business` posts them through the Kingdee connector (``connector.push``, as a user keying
documents in would), paced, on a thread of its own, until stopped or out of documents.
"""
from __future__ import annotations

import random
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from typing import Any

from canonical import Movement, MovementKind, MovementLine, Partner, PartnerRole
from compare.scenario import DEFAULT_MIX
from connectors.base import Connector
from connectors.errors import ConnectorError

Position = tuple[str, str, str | None]  # sku, warehouse, bin


def plan_documents(company: Any, count: int, *, seed: int = 7, document_date: date | None = None,
                   prefix: str = "BIZ") -> list[Movement]:
    """``count`` documents over ``company`` (an :class:`erphub.demo_data.DemoCompany`)."""
    rng = random.Random(f"demo-business:{seed}")
    units = {item["sku"]: item["unit"] for item in company.items}
    lots = {item["sku"] for item in company.items if item["batch_managed"]}
    bins = {w["code"]: list(w["bins"]) for w in company.warehouses}
    warehouses = [w["code"] for w in company.warehouses]
    left: dict[Position, Decimal] = defaultdict(Decimal)
    for row in company.balances:
        if row["sku"] not in lots and row["lot"] is None:
            left[(row["sku"], row["warehouse"], row["bin"])] += Decimal(str(row["qty"]))
    skus = sorted({sku for sku, _, _ in left})
    partners = [Partner(code=p["code"], name=p["name"], role=PartnerRole(p["role"])) for p in company.partners]
    by_role = {role: [p for p in partners if p.role is role] for role in PartnerRole}
    kinds = [MovementKind(k) for k in DEFAULT_MIX]
    weights = [DEFAULT_MIX[k.value] for k in kinds]
    day = document_date or date.today()
    documents: list[Movement] = []
    for seq in range(1, count + 1):
        kind = rng.choices(kinds, weights)[0]
        lines: list[MovementLine] = []
        for _ in range(rng.randint(1, 3)):
            line = _line(kind, rng, len(lines) + 1, skus, units, warehouses, bins, left,
                         used={ln.sku for ln in lines})
            if line is not None:
                lines.append(line)
        if not lines:  # nothing left to take out: receive instead
            kind = MovementKind.purchase_receipt
            lines = [_line(kind, rng, 1, skus, units, warehouses, bins, left, used=set())]  # type: ignore[list-item]
        role = kind.partner_role
        party = rng.choice(by_role[role]) if role in (PartnerRole.supplier, PartnerRole.customer) else None
        documents.append(Movement(reference=f"{prefix}-{seq:05d}", kind=kind, document_date=day, lines=tuple(lines),
                                  counterparty=party, memo="erphub demo business"))
    return documents


def _line(kind: MovementKind, rng: random.Random, line_no: int, skus: Sequence[str], units: Mapping[str, str],
          warehouses: Sequence[str], bins: Mapping[str, list[str]], left: dict[Position, Decimal],
          used: set[str]) -> MovementLine | None:
    qty = Decimal(rng.randint(1, 5))
    direction = kind.direction
    if direction == "in":
        sku = rng.choice(skus)
        if sku in used:
            return None
        warehouse = rng.choice(warehouses)
        return MovementLine(line_no=line_no, sku=sku, quantity=qty, unit=units[sku], to_warehouse=warehouse,
                            to_bin=rng.choice(bins[warehouse]) if bins[warehouse] else None)
    for _ in range(20):  # a position with enough stock left
        sku = rng.choice(skus)
        if sku in used:
            continue
        sources = [(w, b) for w in warehouses for b in (bins[w] or [None]) if left.get((sku, w, b), 0) >= qty]
        if direction == "transfer":
            sources = [(w, b) for w, b in sources if len(warehouses) > 1]
        if not sources:
            continue
        warehouse, bin_ = rng.choice(sources)
        left[(sku, warehouse, bin_)] -= qty
        if direction == "out":
            return MovementLine(line_no=line_no, sku=sku, quantity=qty, unit=units[sku], from_warehouse=warehouse,
                                from_bin=bin_)
        target = rng.choice([w for w in warehouses if w != warehouse])
        return MovementLine(line_no=line_no, sku=sku, quantity=qty, unit=units[sku], from_warehouse=warehouse,
                            from_bin=bin_, to_warehouse=target,
                            to_bin=rng.choice(bins[target]) if bins[target] else None)
    return None


@dataclass
class BusinessResult:
    posted: list[tuple[str, str]] = field(default_factory=list)  # (reference, key) accepted by Kingdee
    by_kind: Counter[str] = field(default_factory=Counter)
    failed: list[str] = field(default_factory=list)


class Business(threading.Thread):
    """Posts ``documents`` into Kingdee through ``connector_of()`` at ``per_second``, until
    :meth:`stop` or the end of the list. ``key_of(movement)`` gives each push's idempotency key."""

    def __init__(self, connector_of: Callable[[], Connector], documents: Sequence[Movement], *, per_second: float,
                 key_of: Callable[[Movement], str]) -> None:
        super().__init__(name="erphub-demo-business", daemon=True)
        self.connector_of, self.documents, self.interval = connector_of, list(documents), 1.0 / per_second
        self.key_of = key_of
        self.result = BusinessResult()
        self._halt = threading.Event()

    def stop(self) -> None:
        self._halt.set()

    def run(self) -> None:
        connector = self.connector_of()  # built on this thread: HTTP sessions are not shared
        next_at = time.monotonic()
        for movement in self.documents:
            if self._halt.wait(max(0.0, next_at - time.monotonic())):
                break
            next_at += self.interval
            key = self.key_of(movement)
            try:
                connector.push(movement, key=key)
            except ConnectorError as exc:
                self.result.failed.append(f"{movement.reference}: {exc.kind}: {exc}")
                continue
            self.result.posted.append((movement.reference, key))
            self.result.by_kind[movement.kind.value] += 1
