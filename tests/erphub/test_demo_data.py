from __future__ import annotations

from decimal import Decimal

from canonical import Item, Warehouse, parse
from erphub.demo_data import apparel_company


def test_the_demo_company_is_deterministic_and_consistent():
    company = apparel_company()
    # Given the same seed, the same company
    assert company == apparel_company()
    assert company != apparel_company(seed=7)
    # About 2,000 SKUs with sizes and colours, three warehouses, some lot-managed items
    assert 1900 <= len(company.items) <= 2100
    assert len({i["sku"] for i in company.items}) == len(company.items)
    assert {w["code"] for w in company.warehouses} == {"WH-SH", "WH-GZ", "WH-BJ"}
    assert company.lot_managed and all(i["attributes"].get("size") for i in company.items if not i["batch_managed"])
    # Every record is valid canonical data, and every balance points at something that exists
    for raw in company.items:
        parse(Item, {"sku": raw["sku"], "name": raw["name"], "base_unit": raw["unit"], "spec": raw["spec"],
                     "batch_managed": raw["batch_managed"], "attributes": raw["attributes"]})
    for raw in company.warehouses:
        parse(Warehouse, {"code": raw["code"], "name": raw["name"], "bin_managed": bool(raw["bins"])})
    skus = {i["sku"]: i for i in company.items}
    bins = {w["code"]: set(w["bins"]) for w in company.warehouses}
    for balance in company.balances:
        item = skus[balance["sku"]]
        assert balance["bin"] is None or balance["bin"] in bins[balance["warehouse"]]
        assert (balance["lot"] is not None) == item["batch_managed"]
        assert Decimal(balance["qty"]) > 0


def test_the_seed_is_what_every_simulator_accepts():
    from sandbox.kingdee import KingdeeSimulator

    company = apparel_company(200)
    simulator = KingdeeSimulator()
    simulator.seed(company.seed())
    assert len(simulator.ledger.balances()) == len(company.balances)
