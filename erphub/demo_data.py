"""The demo company: an apparel e-commerce business, generated deterministically.

About 2,000 SKUs (styles × colours × sizes), three warehouses (one with bins, each of which holds
stock), fabric rolls that are lot-managed, suppliers and customers, and opening stock. It is produced as the
vendor-neutral seed JSON every simulator understands (``{"world": {...}}`` on
``POST /_admin/seed``), so this module needs nothing from the sandbox.
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

# (style code, name, category, unit, sizes)
_TOPS = ("S", "M", "L", "XL", "XXL")
_BOTTOMS = ("28", "29", "30", "31", "32", "33", "34", "36")
_SHOES = ("36", "37", "38", "39", "40", "41", "42", "43", "44")
_STYLES: tuple[tuple[str, str, str, str, tuple[str, ...]], ...] = (
    ("TS", "纯棉圆领T恤", "上装", "PCS", _TOPS), ("PL", "珠地棉POLO衫", "上装", "PCS", _TOPS),
    ("HD", "加绒连帽卫衣", "上装", "PCS", _TOPS), ("SW", "圆领针织衫", "上装", "PCS", _TOPS),
    ("JK", "防风夹克", "外套", "PCS", _TOPS), ("DN", "轻薄羽绒服", "外套", "PCS", _TOPS),
    ("SH", "牛津纺衬衫", "上装", "PCS", _TOPS), ("JN", "修身牛仔裤", "下装", "PCS", _BOTTOMS),
    ("CH", "休闲卡其裤", "下装", "PCS", _BOTTOMS), ("JG", "运动束脚裤", "下装", "PCS", _TOPS),
    ("SK", "百褶半身裙", "下装", "PCS", _TOPS), ("DR", "碎花连衣裙", "连衣裙", "PCS", _TOPS),
    ("RS", "缓震跑步鞋", "鞋类", "PAIR", _SHOES), ("CS", "帆布休闲鞋", "鞋类", "PAIR", _SHOES),
    ("SO", "运动中筒袜", "配件", "PAIR", ("M", "L")), ("CP", "棒球帽", "配件", "PCS", ("F",)),
)
_COLOURS = (("BK", "黑"), ("WH", "白"), ("NV", "藏青"), ("GY", "灰"), ("KH", "卡其"), ("RD", "红"))
_SEASONS = ("24SS", "24AW", "25SS", "25AW")
_FABRICS = (("FB-COT", "精梳棉面料"), ("FB-DEN", "弹力牛仔布"), ("FB-FLC", "摇粒绒面料"), ("FB-NYL", "尼龙防风布"))

WAREHOUSES = (
    {"code": "WH-SH", "name": "上海总仓", "bins": ["A-01-01", "A-01-02", "B-02-01", "B-02-02"]},
    {"code": "WH-GZ", "name": "广州电商仓", "bins": []},
    {"code": "WH-BJ", "name": "北京门店仓", "bins": []},
)
PARTNERS = (
    {"code": "SUP-TEX", "name": "绍兴纺织有限公司", "role": "supplier"},
    {"code": "SUP-SHOE", "name": "晋江鞋业有限公司", "role": "supplier"},
    {"code": "CUS-TMALL", "name": "天猫旗舰店", "role": "customer"},
    {"code": "CUS-JD", "name": "京东自营", "role": "customer"},
    {"code": "CUS-B2B", "name": "华东经销商", "role": "customer"},
)


@dataclass(frozen=True)
class DemoCompany:
    items: list[dict[str, Any]]
    warehouses: list[dict[str, Any]]
    partners: list[dict[str, Any]]
    balances: list[dict[str, Any]]

    def seed(self) -> dict[str, Any]:
        """The admin seed body for a simulator: ``{"world": ...}``."""
        return {"world": {"items": self.items, "warehouses": self.warehouses, "partners": self.partners,
                          "balances": self.balances}}

    @property
    def lot_managed(self) -> list[str]:
        return [item["sku"] for item in self.items if item["batch_managed"]]


def apparel_company(target_skus: int = 2000, *, seed: int = 2026) -> DemoCompany:
    """About ``target_skus`` finished-goods SKUs plus lot-managed fabrics, with opening stock."""
    rng = random.Random(seed)
    items: list[dict[str, Any]] = []
    per_style = {code: len(_COLOURS) * len(sizes) for code, _, _, _, sizes in _STYLES}
    variants_per_season = sum(per_style.values())
    seasons = max(1, min(len(_SEASONS), round(target_skus / variants_per_season)))
    for season in _SEASONS[:seasons]:
        for code, name, category, unit, sizes in _STYLES:
            for colour_code, colour in _COLOURS:
                for size in sizes:
                    if len(items) >= target_skus:
                        break
                    sku = f"{season}-{code}-{colour_code}-{size}"
                    items.append({"sku": sku, "name": f"{name} {colour} {size}", "unit": unit,
                                  "spec": f"{colour}/{size}", "batch_managed": False,
                                  "barcode": f"69{rng.randrange(10**10, 10**11)}", "category": category,
                                  "attributes": {"season": season, "colour": colour, "size": size}})
    for fabric_code, fabric in _FABRICS:
        items.append({"sku": fabric_code, "name": fabric, "unit": "M", "spec": "幅宽150cm", "batch_managed": True,
                      "barcode": None, "category": "面料", "attributes": {}})
    balances: list[dict[str, Any]] = []
    for item in items:
        if item["batch_managed"]:
            for n in range(2):
                balances.append({"sku": item["sku"], "warehouse": "WH-SH", "bin": "B-02-01",
                                 "lot": f"L2410{n + 1:02d}", "qty": str(Decimal(rng.randrange(2000, 9000)) / 10)})
            continue
        for warehouse in WAREHOUSES:
            if rng.random() < 0.55:  # not every SKU is stocked everywhere
                bins = warehouse["bins"]
                balances.append({"sku": item["sku"], "warehouse": warehouse["code"],
                                 "bin": bins[rng.randrange(len(bins))] if bins else None, "lot": None,
                                 "qty": str(rng.randrange(1, 240))})
    return DemoCompany(items=items, warehouses=[dict(w) for w in WAREHOUSES], partners=[dict(p) for p in PARTNERS],
                       balances=balances)
