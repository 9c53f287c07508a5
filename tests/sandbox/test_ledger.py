"""The stock ledger: all-or-nothing postings, negative-stock policy, reversal, concurrency."""
from __future__ import annotations

import threading
from decimal import Decimal

import pytest

from sandbox.ledger import AlreadyPosted, Entry, Ledger, NegativeStock, NotPosted, Shortfall, StockKey


def D(text: str) -> Decimal:
    return Decimal(text)


@pytest.fixture
def ledger() -> Ledger:
    ledger = Ledger()
    ledger.seed_balances({
        StockKey("A", "WH1"): D("10"),
        StockKey("B", "WH1", "A-01-01", "L1"): D("2.5"),
    })
    return ledger


def test_a_posting_moves_every_line(ledger):
    # When a transfer posts out of WH1 and into WH2
    ledger.post("TR-1", [Entry("A", "WH1", D("-4")), Entry("A", "WH2", D("4"), bin="B-02")])
    # Then both balances moved, and the history holds one posting
    assert ledger.balance("A", "WH1") == D("6")
    assert ledger.balance("A", "WH2", "B-02") == D("4")
    assert ledger.total("A") == D("10")
    [posting] = ledger.history()
    assert (posting.document_ref, posting.kind, len(posting.entries)) == ("TR-1", "post", 2)


def test_negative_stock_posts_nothing_and_lists_every_short_line(ledger):
    before = ledger.balances()
    # When one document takes too much of two keys, and a fine amount of a third
    with pytest.raises(NegativeStock) as raised:
        ledger.post("SO-1", [
            Entry("A", "WH1", D("-6")),
            Entry("A", "WH1", D("-6")),                  # same key twice: 12 out of 10
            Entry("B", "WH1", D("-3"), bin="A-01-01", lot="L1"),
            Entry("C", "WH9", D("5")),                   # fine on its own
        ])
    # Then every short (sku, warehouse, bin, lot) is named with on-hand and requested
    assert raised.value.shortfalls == [
        Shortfall("A", "WH1", None, None, on_hand=D("10"), requested=D("12")),
        Shortfall("B", "WH1", "A-01-01", "L1", on_hand=D("2.5"), requested=D("3")),
    ]
    assert "SO-1" in str(raised.value) and "A-01-01" in str(raised.value)
    # and nothing was posted, not even the fine line
    assert ledger.balances() == before
    assert ledger.history() == ()
    assert not ledger.is_posted("SO-1")


def test_negative_stock_can_be_allowed_per_warehouse_and_per_call(ledger):
    # Given WH1 allows negative stock, though the ledger does not
    ledger.set_warehouse_policy("WH1", allow_negative=True)
    # When WH1 goes negative, it is posted
    ledger.post("SO-1", [Entry("A", "WH1", D("-15"))])
    assert ledger.balance("A", "WH1") == D("-5")
    # but WH2 still refuses
    with pytest.raises(NegativeStock):
        ledger.post("SO-2", [Entry("A", "WH2", D("-1"))])
    # unless the call says otherwise, which also beats the warehouse setting
    ledger.post("SO-2", [Entry("A", "WH2", D("-1"))], allow_negative=True)
    with pytest.raises(NegativeStock):
        ledger.post("SO-3", [Entry("A", "WH1", D("-1"))], allow_negative=False)
    # and removing the warehouse setting falls back to the ledger's
    ledger.set_warehouse_policy("WH1", allow_negative=None)
    with pytest.raises(NegativeStock):
        ledger.post("SO-4", [Entry("A", "WH1", D("-1"))])


def test_receiving_into_a_negative_balance_is_allowed(ledger):
    ledger.post("SO-1", [Entry("A", "WH1", D("-12"))], allow_negative=True)
    ledger.post("PO-1", [Entry("A", "WH1", D("1"))])
    assert ledger.balance("A", "WH1") == D("-1")


def test_reverse_undoes_a_posting_and_allows_posting_again(ledger):
    ledger.post("SO-1", [Entry("A", "WH1", D("-4"))])
    # When the document is reversed (un-audit)
    reversal = ledger.reverse("SO-1")
    # Then the stock is back, the history shows both, and the document can post again
    assert ledger.balance("A", "WH1") == D("10")
    assert reversal.kind == "reverse" and reversal.entries[0].qty_delta == D("4")
    assert [p.kind for p in ledger.history()] == ["post", "reverse"]
    assert not ledger.is_posted("SO-1")
    ledger.post("SO-1", [Entry("A", "WH1", D("-4"))])
    assert ledger.balance("A", "WH1") == D("6")


def test_reverse_is_refused_when_the_stock_has_gone(ledger):
    # Given a receipt whose stock was issued since
    ledger.post("PO-1", [Entry("A", "WH1", D("5"))])
    ledger.post("SO-1", [Entry("A", "WH1", D("-15"))])
    # When the receipt is reversed, Then negative stock refuses it and it stays posted
    with pytest.raises(NegativeStock) as raised:
        ledger.reverse("PO-1")
    assert raised.value.shortfalls[0].requested == D("5")
    assert ledger.is_posted("PO-1")


def test_double_posting_and_unknown_reversal_are_errors(ledger):
    ledger.post("PO-1", [Entry("A", "WH1", D("1"))])
    with pytest.raises(AlreadyPosted):
        ledger.post("PO-1", [Entry("A", "WH1", D("1"))])
    with pytest.raises(NotPosted):
        ledger.reverse("PO-404")
    assert ledger.balance("A", "WH1") == D("11")


def test_entries_take_exact_decimals_only():
    assert Entry("A", "WH1", "1.25").qty_delta == D("1.25")
    assert Entry("A", "WH1", 3).qty_delta == D("3")
    with pytest.raises(TypeError):
        Entry("A", "WH1", 0.1)
    with pytest.raises(ValueError):
        Entry("A", "WH1", "NaN")
    with pytest.raises(ValueError):
        Entry("", "WH1", "1")
    with pytest.raises(ValueError):
        Ledger().post("EMPTY", [])


def test_reset_forgets_balances_history_and_warehouse_settings(ledger):
    ledger.set_warehouse_policy("WH1", allow_negative=True)
    ledger.post("SO-1", [Entry("A", "WH1", D("-1"))])
    ledger.reset()
    assert ledger.balances() == {} and ledger.history() == ()
    with pytest.raises(NegativeStock):
        ledger.post("SO-2", [Entry("A", "WH1", D("-1"))])


def test_concurrent_posts_keep_totals_exact():
    # Given 100 units, and 8 threads each trying to issue 1 unit 20 times while also receiving
    ledger = Ledger()
    ledger.seed_balances({StockKey("A", "WH1"): 100})
    issued, refused = [], []
    barrier = threading.Barrier(8)

    def worker(n: int) -> None:
        barrier.wait()
        for i in range(20):
            ledger.post(f"PO-{n}-{i}", [Entry("A", "WH2", D("0.1"))])
            try:
                ledger.post(f"SO-{n}-{i}", [Entry("A", "WH1", -1)])
                issued.append(1)
            except NegativeStock:
                refused.append(1)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # Then exactly 100 issues went through, the rest were refused, and nothing was lost
    assert (len(issued), len(refused)) == (100, 60)
    assert ledger.balance("A", "WH1") == D("0")
    assert ledger.balance("A", "WH2") == D("16.0")
    assert len(ledger.history()) == 160 + 100
