"""The DI Server transport (``connectors/sap_b1/di_server.py``): filter translation, BOM XML, and the
error taxonomy against the simulator's ``/DIServer`` over loopback."""
from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import date
from decimal import Decimal

import pytest
from lxml import etree

from connectors.errors import Ambiguous, AuthError, ContractViolation, Rejected, Transient
from connectors.sap_b1 import SapB1Connector, SapB1Settings
from connectors.sap_b1.client import BatchOp
from connectors.sap_b1.di_server import (
    DiServerClient,
    build_bom,
    endpoint_address,
    odata_filter_to_sql,
    parse_bom,
    sql_string,
)
from connectors.sap_b1.odata import FilterBuilder, and_, not_
from sandbox.ledger import StockKey
from sandbox.sap_b1 import SapB1Simulator
from sandbox.server import SimulatorServer

WORLD = {
    "items": [{"sku": f"A{i:03d}", "name": f"Item {i}", "unit": "PCS"} for i in range(25)],
    "warehouses": [{"code": "01", "name": "Main"}, {"code": "02", "name": "Overflow"}],
    "partners": [{"code": "S100", "name": "Supplier", "role": "supplier"}],
    "balances": [{"sku": "A000", "warehouse": "01", "qty": "10"}],
}
PASSWORD = "s3cret-pass"


def _issue(qty: object, item: str = "A000", ref: str = "K-1") -> dict[str, object]:
    return {"DocDate": "2026-01-01", "Reference2": ref,
            "DocumentLines": [{"ItemCode": item, "Quantity": Decimal(str(qty)), "WarehouseCode": "01"}]}


@pytest.fixture
def sim() -> SapB1Simulator:
    simulator = SapB1Simulator(users={"manager": PASSWORD}, sleep=lambda s: None)
    simulator.seed({"world": WORLD})
    return simulator


@pytest.fixture
def server(sim: SapB1Simulator) -> Iterator[SimulatorServer]:
    with sim.serve() as running:
        yield running


def _client(server: SimulatorServer, password: str = PASSWORD, **kwargs: object) -> DiServerClient:
    return DiServerClient(server.url, company_db="SBODEMOUS", username="manager", password=password,
                          read_timeout=5, **kwargs)


@pytest.fixture
def client(server: SimulatorServer) -> Iterator[DiServerClient]:
    c = _client(server)
    yield c
    c.close()


# --- pure parts ------------------------------------------------------------------------------


def test_filters_translate_to_sql_with_safe_quoting() -> None:
    f = FilterBuilder({"Reference2", "UpdateDate", "CardType", "DocEntry"})
    expr = and_(f.ge("UpdateDate", date(2026, 1, 1)), f.any_of("Reference2", ["O'Brien", "x' OR 1=1 --"]),
                not_(f.eq("CardType", "cLid")), f.gt("DocEntry", 5))
    assert odata_filter_to_sql(str(expr)) == (
        "(UpdateDate >= N'2026-01-01' AND (Reference2 = N'O''Brien' OR Reference2 = N'x'' OR 1=1 --') "
        "AND NOT CardType = N'cLid' AND DocEntry > 5)")
    assert sql_string("a'b") == "N'a''b'"
    for bad in ("Reference2 eq Reference1", "substringof('a', X)", "X eq 'a'; DROP", "X eq 'a' or"):
        with pytest.raises(ValueError):
            odata_filter_to_sql(bad)


def test_bom_round_trip_keeps_lines_batches_and_bins() -> None:
    body = {"DocDate": "2026-01-01", "Reference2": "K", "Comments": None, "DocumentLines": [
        {"ItemCode": "A", "Quantity": Decimal("1.50"), "WarehouseCode": "01"},
        {"ItemCode": "B", "Quantity": Decimal(2), "WarehouseCode": "BW",
         "BatchNumbers": [{"BatchNumber": "L1", "Quantity": Decimal(2)}],
         "DocumentLinesBinAllocations": [{"BinAbsEntry": 3, "Quantity": Decimal(2), "BaseLineNumber": 1}]}]}
    bom = build_bom("InventoryGenEntries", body)
    assert bom.findtext("BO/AdmInfo/Object") == "oInventoryGenEntry"
    assert [n.tag for n in bom.find("BO")] == ["AdmInfo", "Documents", "Document_Lines", "BatchNumbers",
                                                "DocumentLinesBinAllocations"]
    assert bom.find("BO/Documents/row/Comments") is None  # empty values are left out
    name, record = parse_bom(etree.fromstring(etree.tostring(bom)))
    assert name == "oInventoryGenEntry" and record["Reference2"] == "K"
    line = record["DocumentLines"][1]
    assert line["BatchNumbers"][0]["BatchNumber"] == "L1"
    assert line["DocumentLinesBinAllocations"][0]["BinAbsEntry"] == 3
    with pytest.raises(ValueError):
        build_bom("InventoryGenEntries", {"Bad Name": 1, "DocumentLines": []})


def test_endpoint_address() -> None:
    assert endpoint_address("https://b1.example/B1WS/") == "https://b1.example/B1WS/DIServer"
    assert endpoint_address("http://h:8080/DIServer") == "http://h:8080/DIServer"


# --- against the simulator ------------------------------------------------------------------


def test_create_posts_and_returns_the_document(sim, client) -> None:
    created = client.create("InventoryGenExits", _issue(3))
    assert created["DocEntry"] == 1 and created["DocNum"] == 1
    assert sim.ledger.balances()[StockKey("A000", "01")] == Decimal(7)
    page = client.query_page("InventoryGenExits", filter="Reference2 eq 'K-1'", orderby="DocEntry asc", page_size=5)
    assert page.rows[0]["DocumentLines"][0]["Quantity"] == "3"
    assert client.get_by_key("InventoryGenExits", 99) is None


def test_paging_through_execute_sql(client) -> None:
    pages = list(client.query("Items", select=["ItemCode", "ItemName"], orderby="ItemCode asc", page_size=10))
    assert [len(p.rows) for p in pages] == [10, 10, 5]
    codes = [r["ItemCode"] for p in pages for r in p.rows]
    assert codes == sorted(codes) and len(set(codes)) == 25
    assert pages[0].next_skip == 10 and pages[-1].next_link is None


def test_negative_stock_and_unknown_item_are_rejected_with_the_vendor_code(sim, client) -> None:
    with pytest.raises(Rejected) as negative:
        client.create("InventoryGenExits", _issue(11))
    assert negative.value.vendor_code == "-10"
    assert "Quantity falls into negative inventory  [IGE1.ItemCode][line: 1]" in str(negative.value)
    with pytest.raises(Rejected) as unknown:
        client.create("InventoryGenExits", _issue(1, item="NOPE"))
    assert unknown.value.vendor_code == "-2028"
    assert sim.documents_for("K-1") == []


def test_bad_credentials_are_an_auth_error_without_the_password(server) -> None:
    c = _client(server, password="wrong-password-123")
    with pytest.raises(AuthError) as failed:
        c.query_page("Warehouses", select=["WarehouseCode"], top=1)
    assert failed.value.vendor_code == "100000048"
    assert "wrong-password-123" not in str(failed.value)
    c.close()


def test_expired_session_is_one_relogin(sim, client) -> None:
    client.query_page("Warehouses", select=["WarehouseCode"], top=1)
    sim.expire_sessions()
    client.create("InventoryGenEntries", {"DocumentLines": [{"ItemCode": "A001", "Quantity": 1, "WarehouseCode": "01"}]})
    assert client.logins == 2


def test_a_session_refused_twice_is_an_auth_error(sim, client) -> None:
    sim.faults.set({"session_expiry": [{"operation": "DI.ExecuteSQL", "every": 1}]})
    with pytest.raises(AuthError):
        client.query_page("Warehouses", select=["WarehouseCode"], top=1)
    assert client.logins == 2


def test_lost_answer_after_add_object_is_ambiguous(sim, client) -> None:
    sim.faults.set({"drop_after_commit": [{"operation": "DI.AddObject"}]})
    with pytest.raises(Ambiguous):
        client.create("InventoryGenExits", _issue(1))
    assert len(sim.documents_for("K-1")) == 1  # it did land: find() settles it


def test_gateway_errors_follow_the_http_table(sim, client) -> None:
    client.query_page("Warehouses", select=["WarehouseCode"], top=1)
    sim.faults.set({"errors": [{"status": 503}]})
    with pytest.raises(Transient):
        client.query_page("Warehouses", select=["WarehouseCode"], top=1)
    sim.faults.set({"errors": [{"status": 502}]})
    with pytest.raises(Ambiguous):
        client.create("InventoryGenExits", _issue(1))


def test_refused_sql_is_a_contract_violation(client) -> None:
    with pytest.raises(ContractViolation) as refused:
        client.execute_sql("SELECT Nope FROM OITM")
    assert refused.value.vendor_code == "-1"


def test_wsdl_from_the_simulator_url(server) -> None:
    c = _client(server, wsdl=server.url + "/DIServer?wsdl")
    assert c.query_page("Warehouses", select=["WarehouseCode"]).rows[0]["WarehouseCode"] == "01"
    c.close()


def test_batch_falls_back_to_one_add_object_each(sim, client) -> None:
    results = client.batch([BatchOp("InventoryGenExits", _issue(1, ref="B-1")),
                            BatchOp("InventoryGenExits", _issue(100, ref="B-2")),
                            BatchOp("InventoryGenExits", _issue(1, ref="B-3"))])
    assert [r.status for r in results] == ["created", "failed", "created"]
    assert isinstance(results[1].error, Rejected) and results[1].error.vendor_code == "-10"
    assert sim.documents_for("B-1") and sim.documents_for("B-3") and not sim.documents_for("B-2")


def test_connector_selects_the_di_transport(server, caplog) -> None:
    settings = SapB1Settings(url=server.url, company_db="SBODEMOUS", username="manager", password=PASSWORD,
                             transport="di_server")
    connector = SapB1Connector(settings)
    assert isinstance(connector.client, DiServerClient)
    with caplog.at_level(logging.DEBUG):
        assert connector.check().ok
        session = connector.client._session.token
    assert PASSWORD not in caplog.text and session not in caplog.text
    connector.close()
