"""P1 (RELIABILITY.md §6(ii)): validating inbound movements into the canonical model.

Baseline, measured in the same process: ``TypeAdapter(list[Flat]).validate_json`` of a plain
12-field pydantic record carrying the same values. Hub path: ``TypeAdapter(list[Movement])``
with the canonical validation context (units, precision, per-kind warehouse rules,
counterparty role). Prints records/s for both and the ratio (target ≥ 0.5×).

    python bench/bench_validate.py --records 50000 --repeat 3
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from datetime import date
from decimal import Decimal
from typing import Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, TypeAdapter

from canonical import Movement, UnitCatalog, validation_context


class Flat(BaseModel):
    """The baseline: the same data as one flat record, with types but no domain rules."""

    model_config = ConfigDict(frozen=True)
    reference: str
    kind: Literal["sales_issue"]
    document_date: date
    posted_at: AwareDatetime
    partner: str
    line_no: int = Field(ge=1)
    sku: str
    quantity: Decimal
    unit: str
    from_warehouse: str
    lot: str | None = None
    unit_cost: Decimal | None = None


class PlainPartner(BaseModel):
    model_config = ConfigDict(frozen=True)
    code: str
    name: str
    role: str


class PlainLine(BaseModel):
    model_config = ConfigDict(frozen=True)
    line_no: int
    sku: str
    quantity: Decimal
    unit: str
    from_warehouse: str | None = None
    unit_cost: Decimal | None = None


class PlainMovement(BaseModel):
    """The same nested shape as the canonical Movement with types only: what nesting alone costs."""

    model_config = ConfigDict(frozen=True)
    reference: str
    kind: str
    document_date: date
    posted_at: AwareDatetime
    counterparty: PlainPartner
    lines: tuple[PlainLine, ...]


def records(n: int) -> tuple[bytes, bytes]:
    flat, nested = [], []
    for i in range(n):
        common = {"reference": f"MV-{i:07d}", "kind": "sales_issue", "document_date": "2026-11-26",
                  "posted_at": "2026-11-26T09:30:00+08:00"}
        line = {"sku": f"SKU-{i % 2000:05d}", "quantity": str(1 + i % 7), "unit": "PCS",
                "from_warehouse": "WH1", "unit_cost": "12.50"}
        flat.append({**common, "partner": "C001", "line_no": 1, **line})
        nested.append({**common, "counterparty": {"code": "C001", "name": "客户一", "role": "customer"},
                       "lines": [{"line_no": 1, **line}]})
    return json.dumps(flat).encode(), json.dumps(nested).encode()


def timed(fn, repeat: int) -> float:
    runs = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        runs.append(time.perf_counter() - started)
    return statistics.median(runs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=50_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    flat_json, nested_json = records(args.records)
    baseline = TypeAdapter(list[Flat])
    hub = TypeAdapter(list[Movement])
    context = validation_context(units=UnitCatalog.default())
    assert len(hub.validate_json(nested_json, context=context)) == args.records  # warm and check

    plain = TypeAdapter(list[PlainMovement])
    base_s = timed(lambda: baseline.validate_json(flat_json), args.repeat)
    plain_s = timed(lambda: plain.validate_json(nested_json), args.repeat)
    hub_s = timed(lambda: hub.validate_json(nested_json, context=context), args.repeat)
    n = args.records
    print(f"baseline TypeAdapter(list[Flat]).validate_json      {n} records  {base_s:.3f} s  {n / base_s:,.0f} rec/s")
    print(f"nested, types only TypeAdapter(list[PlainMovement]) {n} records  {plain_s:.3f} s  {n / plain_s:,.0f} rec/s")
    print(f"canonical TypeAdapter(list[Movement])               {n} records  {hub_s:.3f} s  {n / hub_s:,.0f} rec/s")
    print(f"ratio canonical / flat baseline (P1, target >= 0.5): {base_s / hub_s:.2f}")
    print(f"ratio canonical / same nested shape without rules:   {plain_s / hub_s:.2f}")


if __name__ == "__main__":
    main()
