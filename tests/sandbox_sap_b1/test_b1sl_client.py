"""The third-party client b1sl-python (vendor doc §8) works unmodified against the simulator.

Runs when ``b1sl-python`` is installed (it is not a project dependency); skipped otherwise.
"""
from __future__ import annotations

import pytest
import requests

b1sl = pytest.importorskip("b1sl.b1sl")
from b1sl.b1sl import B1Client, B1Config, ODataQuery  # noqa: E402
from b1sl.b1sl.exceptions.exceptions import B1NotFoundError, SAPConcurrencyError  # noqa: E402


@pytest.fixture
def b1(server, dialect):
    config = B1Config(base_url=f"{server.url}/b1s/{dialect}", username="manager", password="secret",
                      company_db="SBODEMOUS")
    with B1Client(config, version=dialect) as client:
        yield client


def test_b1sl_reads_pages_writes_and_relogs_in(b1, sim, server, dialect):
    codes = [i.item_code for i in b1.items.stream(ODataQuery(select=["ItemCode"]), page_size=20)]
    assert len(codes) == 46 == len(set(codes))
    assert len(b1.items.list(ODataQuery(top=5, select=["ItemCode"]))) == 5
    raw = b1.items.get_raw("A000")
    assert raw["ItemCode"] == "A000" and (dialect == "v1" or "@odata.etag" in raw)
    with pytest.raises(B1NotFoundError, match="-2028"):
        b1.items.get_raw("NO-SUCH-ITEM")
    b1.items.update("A000", {"ItemName": "conformance"})
    doc = b1._adapter.post("InventoryGenEntries", data={"DocumentLines": [
        {"ItemCode": "A001", "Quantity": 3, "WarehouseCode": "01"}]}).data
    assert isinstance(doc["DocEntry"], int) and doc["DocumentLines"][0]["LineNum"] == 0
    with pytest.raises(Exception, match="negative inventory"):
        b1._adapter.post("InventoryGenExits", data={"DocumentLines": [
            {"ItemCode": "A040", "Quantity": 3, "WarehouseCode": "01"}]})
    old = b1.session_id
    requests.post(f"{server.url}/_admin/expire-sessions", timeout=5)
    assert b1.items.get_raw("A002")["ItemCode"] == "A002" and b1.session_id != old


def test_b1sl_batch_and_etags_on_v2(server):
    config = B1Config(base_url=f"{server.url}/b1s/v2", username="manager", password="secret", company_db="SBODEMOUS")
    with B1Client(config, version="v2") as b1:
        with b1.batch() as batch:
            batch.items.top(2).execute()
            with batch.changeset() as changeset:
                changeset.items.update("A003", {"ItemName": "renamed"})
                changeset.items.update("A004", {"Bogus": "x"})
            results = batch.execute()
        assert not results.all_ok and b1.items.get_raw("A003")["ItemName"] == "Item 3"
        stale = b1.items.get_raw("A005")["@odata.etag"]
        b1.items.update("A005", {"ItemName": "first"})
        with pytest.raises(SAPConcurrencyError):
            b1._adapter.patch("Items('A005')", data={"ItemName": "second"}, headers={"If-Match": stale})
