"""The third-party client b1sl-python 0.16.0 (vendor doc §8) works unmodified against the simulator.

``b1sl-python`` is in the test extra, so CI must run these tests: with ``CI=true`` a missing
package is an import error (the run fails); elsewhere the module is skipped.

Covered on v1 and v2: paging through next links, ``$top``, get by key, 404 with -2028, PATCH,
creating an InventoryGenEntries document (the ledger moves), a refused goods issue (the ledger
does not), and one transparent re-login after the session dies (admin expiry, the harness's
SessionExpiry fault, and on a write). On v2 only (b1sl writes ``/b1s/v2/`` into every batch
request line): a ``$batch`` changeset that commits, one that rolls back, and a stale ``If-Match``.
"""
from __future__ import annotations

import os
from decimal import Decimal

import pytest

if os.environ.get("CI", "").lower() == "true":
    import b1sl.b1sl  # noqa: F401  (CI installs the test extra: a missing client fails the run)
else:
    pytest.importorskip("b1sl.b1sl", reason="b1sl-python (test extra) is not installed")

from b1sl.b1sl import B1Client, B1Config, ODataQuery  # noqa: E402
from b1sl.b1sl.batch.results import BatchOutcome  # noqa: E402
from b1sl.b1sl.exceptions.exceptions import (  # noqa: E402
    B1NotFoundError,
    B1ValidationError,
    SAPConcurrencyError,
)
from b1sl.b1sl.models._generated.entities.general import Document  # noqa: E402

from sandbox.faults import FaultPlan, SessionExpiry  # noqa: E402

from .conftest import WORLD  # noqa: E402

SEEDED_ITEMS = sorted(i["sku"] for i in WORLD["items"])  # 46 items: three pages of 20


def _client(server, version: str) -> B1Client:
    config = B1Config(base_url=f"{server.url}/b1s/{version}", username="manager", password="secret",
                      company_db="SBODEMOUS")
    return B1Client(config, version=version)


@pytest.fixture
def b1(server, dialect):
    with _client(server, dialect) as client:
        yield client


def goods_receipt(ref: str, item: str = "A001", qty: int = 3, warehouse: str = "01") -> Document:
    return Document.model_validate({"Reference2": ref, "DocumentLines": [
        {"ItemCode": item, "Quantity": qty, "WarehouseCode": warehouse}]})


def logins(sim, version: str) -> int:
    return sim.calls.count(path=f"/b1s/{version}/Login")


# -- reads -----------------------------------------------------------------------------------


def test_stream_pages_through_next_links(b1, sim, dialect):
    # When b1sl streams every item 20 at a time
    codes = [i.item_code for i in b1.items.stream(ODataQuery(select=["ItemCode"], orderby="ItemCode"), page_size=20)]
    # Then it read all 46, each once, in three requests (following the server's nextLinks)
    assert codes == SEEDED_ITEMS
    assert sim.calls.count(method="GET", path=f"/b1s/{dialect}/Items") == 3


def test_top_within_and_beyond_a_page(b1):
    assert [i.item_code for i in b1.items.list(ODataQuery(top=5, select=["ItemCode"], orderby="ItemCode"))] \
        == SEEDED_ITEMS[:5]
    beyond = [i.item_code for i in b1.items.stream(ODataQuery(top=25, select=["ItemCode"], orderby="ItemCode"),
                                                   page_size=20)]
    assert beyond == SEEDED_ITEMS[:25]


def test_get_by_key_and_404_with_2028(b1, dialect):
    raw = b1.items.get_raw("A000")
    assert raw["ItemCode"] == "A000" and raw["ItemName"] == "Item 0"
    assert ("@odata.etag" in raw) == (dialect == "v2")
    assert b1.items.get("A007").item_code == "A007"
    with pytest.raises(B1NotFoundError, match="-2028"):
        b1.items.get_raw("NO-SUCH-ITEM")
    with pytest.raises(B1NotFoundError, match="-2028"):
        b1.inventory_gen_entries.get_raw(999_999)


# -- writes ----------------------------------------------------------------------------------


def test_patch_changes_the_item(b1, sim):
    b1.items.update("A000", {"ItemName": "conformance"})  # 204, If-Match from the cached ETag on v2
    assert b1.items.get_raw("A000")["ItemName"] == "conformance"
    assert sim.company.record("Items", "A000")["ItemName"] == "conformance"


def test_goods_receipt_is_created_and_moves_the_ledger(b1, sim):
    before = sim.ledger.total("A001", "01")
    doc = b1.inventory_gen_entries.create(goods_receipt("b1sl-gr-1", qty=3))
    assert isinstance(doc.doc_entry, int) and doc.document_lines[0].line_num == 0
    assert sim.documents_for("b1sl-gr-1") == [str(doc.doc_num)]
    assert sim.ledger.total("A001", "01") == before + 3
    raw = b1.inventory_gen_entries.get_raw(doc.doc_entry)
    assert raw["DocumentLines"][0]["ItemCode"] == "A001" and raw["Reference2"] == "b1sl-gr-1"


def test_goods_issue_beyond_stock_is_refused_and_posts_nothing(b1, sim):
    before = sim.ledger.balances()
    with pytest.raises(B1ValidationError, match="negative inventory"):
        b1._adapter.post("InventoryGenExits", data={"Reference2": "b1sl-neg", "DocumentLines": [
            {"ItemCode": "A040", "Quantity": 3, "WarehouseCode": "01"}]})
    assert sim.ledger.balances() == before and sim.documents_for("b1sl-neg") == []


# -- sessions --------------------------------------------------------------------------------


def test_relogin_after_the_simulator_expires_every_session(b1, sim, dialect):
    b1.items.get_raw("A001")
    old = b1.session_id
    sim.expire_sessions()
    assert b1.items.get_raw("A002")["ItemCode"] == "A002"
    assert b1.session_id != old and logins(sim, dialect) == 2


def test_relogin_after_a_session_expiry_fault(b1, sim, dialect):
    b1.items.get_raw("A001")
    old = b1.session_id
    sim.faults.set(FaultPlan(session_expiry=[SessionExpiry(every=1, max_count=1, operation="Items.GET")]))
    assert b1.items.get_raw("A003")["ItemCode"] == "A003"
    assert b1.session_id != old and logins(sim, dialect) == 2
    assert [c.fault for c in sim.calls.list(method="GET")] == [None, "session_expired", None]


def test_relogin_on_a_write_posts_the_document_once(b1, sim, dialect):
    b1.items.get_raw("A001")
    before = sim.ledger.total("A001", "01")
    sim.expire_sessions()
    doc = b1.inventory_gen_entries.create(goods_receipt("b1sl-gr-2", qty=2))
    # The 401/301 came before anything was executed, so b1sl's resend creates exactly one document
    assert sim.documents_for("b1sl-gr-2") == [str(doc.doc_num)]
    assert sim.ledger.total("A001", "01") == before + 2 and logins(sim, dialect) == 2


# -- v2 only: $batch and ETags -----------------------------------------------------------------


def test_batch_changeset_commits_together_on_v2(server, sim):
    before = sim.ledger.total("A001", "01")
    with _client(server, "v2") as b1:
        with b1.batch() as batch:
            page = batch.items.top(2).execute()
            with batch.changeset():
                first = batch.inventory_gen_entries.create(goods_receipt("b1sl-cs-1", qty=1))
                second = batch.inventory_gen_entries.create(goods_receipt("b1sl-cs-2", item="A002", qty=4))
            results = batch.execute()
    assert results.all_ok and results[page].status == 200
    assert [sim.documents_for("b1sl-cs-1"), sim.documents_for("b1sl-cs-2")] == [
        [str(results[first].entity.doc_num)], [str(results[second].entity.doc_num)]]
    assert sim.ledger.total("A001", "01") == before + 1 and sim.ledger.total("A002", "01") == Decimal(4)
    assert sim.calls.count(path="/b1s/v2/$batch", status=200) == 1


def test_batch_changeset_with_a_failure_rolls_back_whole_on_v2(server, sim):
    before = sim.ledger.balances()
    with _client(server, "v2") as b1:
        with b1.batch() as batch:
            with batch.changeset():
                batch.inventory_gen_entries.create(goods_receipt("b1sl-cs-3", qty=1))
                batch.items.update("A003", {"ItemName": "renamed"})
                batch.items.update("A004", {"Bogus": "x"})
            results = batch.execute()
        assert not results.all_ok
        assert {r.outcome for r in results} <= {BatchOutcome.FAILED, BatchOutcome.ROLLED_BACK}
        assert b1.items.get_raw("A003")["ItemName"] == "Item 3"
    assert sim.documents_for("b1sl-cs-3") == [] and sim.ledger.balances() == before


def test_stale_if_match_is_a_concurrency_error_on_v2(server, sim):
    with _client(server, "v2") as b1:
        stale = b1.items.get_raw("A005")["@odata.etag"]
        b1.items.update("A005", {"ItemName": "first"})
        with pytest.raises(SAPConcurrencyError, match="-2039"):
            b1._adapter.patch("Items('A005')", data={"ItemName": "second"}, headers={"If-Match": stale})
        assert b1.items.get_raw("A005")["ItemName"] == "first"
