"""The demo business's documents: the standard processes, bins where the warehouse has them, and
never more stock out of a position than its opening balance."""
from __future__ import annotations

from collections import defaultdict
from decimal import Decimal

from compare.scenario import STANDARD_PROCESSES
from erphub.demo_business import plan_documents
from erphub.demo_data import apparel_company


def test_documents_cover_the_standard_processes_and_never_overdraw_a_position() -> None:
    # Given the demo company
    company = apparel_company(300)
    opening: dict[tuple, Decimal] = defaultdict(Decimal)
    for row in company.balances:
        opening[(row["sku"], row["warehouse"], row["bin"])] += Decimal(row["qty"])
    binned = {w["code"] for w in company.warehouses if w["bins"]}
    # When 400 documents are planned
    documents = plan_documents(company, 400, seed=3)
    # Then every standard process occurs, references are unique and lot items are left out
    assert {d.kind for d in documents} == set(STANDARD_PROCESSES)
    assert len({d.reference for d in documents}) == 400
    lots = set(company.lot_managed)
    taken: dict[tuple, Decimal] = defaultdict(Decimal)
    for document in documents:
        for line in document.lines:
            assert line.sku not in lots
            # a line touching a bin-managed warehouse names the bin, others name none
            for warehouse, bin_ in ((line.from_warehouse, line.from_bin), (line.to_warehouse, line.to_bin)):
                if warehouse is not None:
                    assert (bin_ is not None) == (warehouse in binned), (document.reference, line)
            if line.from_warehouse is not None:
                taken[(line.sku, line.from_warehouse, line.from_bin)] += line.quantity
    # and no position gives more than its opening stock, whatever order the documents land in
    assert all(quantity <= opening[position] for position, quantity in taken.items())


def test_the_same_seed_gives_the_same_documents() -> None:
    company = apparel_company(100)
    assert plan_documents(company, 30, seed=5) == plan_documents(company, 30, seed=5)
