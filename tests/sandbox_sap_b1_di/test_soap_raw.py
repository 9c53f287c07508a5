"""The DI Server endpoint over raw HTTP: hand-built SOAP envelopes, as B1WS callers send them."""
from __future__ import annotations

from decimal import Decimal
from xml.sax.saxutils import escape

from lxml import etree

from sandbox.ledger import StockKey
from tests.sandbox_sap_b1_di.conftest import DIS, LOGIN, SOAP11, envelope

SOAP12 = "http://www.w3.org/2003/05/soap-envelope"


def _fault(answer) -> tuple[str, str]:
    doc = etree.fromstring(answer.content)
    return doc.findtext(f".//{{{DIS}}}Error/Code"), doc.findtext(f".//{{{DIS}}}Error/Message")


def _goods_issue(qty: str, ref: str = "K-1", item: str = "A000") -> str:
    return ("<dis:AddObject xmlns:dis=\"http://www.sap.com/SBO/DIS\" CommandID=\"c1\"><BOM><BO><AdmInfo>"
            "<Object>oInventoryGenExit</Object></AdmInfo><Documents><row><DocDate>20260101</DocDate>"
            f"<Reference2>{ref}</Reference2></row></Documents><Document_Lines><row><ItemCode>{item}</ItemCode>"
            f"<Quantity>{qty}</Quantity><WarehouseCode>01</WarehouseCode></row></Document_Lines></BO></BOM>"
            "</dis:AddObject>")


def test_wsdl_is_served_with_its_own_address(server) -> None:
    import requests

    answer = requests.get(server.url + "/DIServer?wsdl", timeout=10)
    assert answer.status_code == 200
    doc = etree.fromstring(answer.content)
    ops = {o.get("name") for o in doc.iter("{http://schemas.xmlsoap.org/wsdl/}operation")}
    assert ops == {"Login", "Logout", "AddObject", "UpdateObject", "GetByKey", "ExecuteSQL"}
    address = doc.find(".//{http://schemas.xmlsoap.org/wsdl/soap/}address").get("location")
    assert address == server.url + "/DIServer"


def test_login_answers_a_session_and_bad_password_is_a_fault(soap) -> None:
    ok = soap(LOGIN)
    assert ok.status_code == 200 and ok.headers["Content-Type"].startswith("text/xml")
    assert etree.fromstring(ok.content).findtext(f".//{{{DIS}}}LoginResponse/SessionID").startswith("{")
    bad = soap(LOGIN.replace("<CompanyPassword>secret", "<CompanyPassword>wrong"))
    assert bad.status_code == 500
    assert _fault(bad) == ("100000048", "Enter valid user name and password")
    assert etree.fromstring(bad.content).findtext(".//faultcode") == "env:Client"


def test_add_object_posts_stock_and_get_by_key_reads_it_back(sim, soap, session) -> None:
    # Given 10 of A000 in 01, when a goods issue of 3 is added
    answer = soap(_goods_issue("3"), session)
    assert answer.status_code == 200
    key = etree.fromstring(answer.content).findtext(f".//{{{DIS}}}AddObjectResponse/RetKey")
    # Then the ledger moved and the document reads back as BOM XML, also over the Service Layer
    assert sim.ledger.balances()[StockKey("A000", "01")] == Decimal(7)
    got = soap(f"<dis:GetByKey xmlns:dis=\"{DIS}\"><Object>oInventoryGenExit</Object><DocEntry>{key}</DocEntry>"
               "</dis:GetByKey>", session)
    bo = etree.fromstring(got.content).find(".//BOM/BO")
    assert bo.findtext("AdmInfo/Object") == "oInventoryGenExit"
    assert bo.findtext("Documents/row/Reference2") == "K-1"
    assert bo.findtext("Documents/row/DocDate") == "20260101"
    assert bo.findtext("Document_Lines/row/ItemCode") == "A000"
    assert bo.findtext("Document_Lines/row/Quantity") == "3"
    assert sim.company.record("InventoryGenExits", int(key))["Reference2"] == "K-1"
    assert sim.documents_for("K-1") == [bo.findtext("Documents/row/DocNum")]


def test_table_names_are_accepted_as_node_names(sim, soap, session) -> None:
    body = ("<dis:AddObject xmlns:dis=\"http://www.sap.com/SBO/DIS\"><BOM><BO><AdmInfo><Object>59</Object>"
            "</AdmInfo><OIGN><row><Reference2>K-2</Reference2></row></OIGN><IGN1><row><ItemCode>A001</ItemCode>"
            "<Quantity>2.5</Quantity><WarehouseCode>02</WarehouseCode></row></IGN1></BO></BOM></dis:AddObject>")
    assert soap(body, session).status_code == 200
    assert sim.ledger.balances()[StockKey("A001", "02")] == Decimal("2.5")


def test_negative_stock_is_fault_minus_10_and_posts_nothing(sim, soap, session) -> None:
    before = sim.ledger.balances()
    answer = soap(_goods_issue("11"), session)
    assert answer.status_code == 500
    assert _fault(answer) == ("-10", "Quantity falls into negative inventory  [IGE1.ItemCode][line: 1]")
    assert sim.ledger.balances() == before
    assert sim.documents_for("K-1") == []


def test_unknown_item_is_fault_minus_2028(soap, session) -> None:
    code, message = _fault(soap(_goods_issue("1", item="NOPE"), session))
    assert code == "-2028" and message.startswith("No matching records found (ODBC -2028)")


def test_missing_or_expired_session_is_a_fault(sim, soap, session) -> None:
    assert _fault(soap(_goods_issue("1")))[0] == "301"
    sim.expire_sessions()
    assert _fault(soap(_goods_issue("1"), session)) == ("301", "Invalid session or session already timeout.")


def test_logout_ends_the_session(soap, session) -> None:
    assert soap(f"<dis:Logout xmlns:dis=\"{DIS}\"/>", session).status_code == 200
    assert _fault(soap(f"<dis:Logout xmlns:dis=\"{DIS}\"/>", session))[0] == "301"


def test_execute_sql_selects_filters_orders_and_pages(soap, session) -> None:
    sql = ("SELECT ItemCode, ItemName FROM OITM WHERE ItemCode >= 'A010' AND ItemCode < 'A020' "
           "ORDER BY ItemCode DESC OFFSET 2 ROWS FETCH NEXT 3 ROWS ONLY")
    answer = soap(f"<dis:ExecuteSQL xmlns:dis=\"{DIS}\"><DoQuery>{escape(sql)}</DoQuery></dis:ExecuteSQL>", session)
    rows = etree.fromstring(answer.content).findall(".//BOM/BO/OITM/row")
    assert [r.findtext("ItemCode") for r in rows] == ["A017", "A016", "A015"]
    assert rows[0].findtext("ItemName") == "Item 17"


def test_execute_sql_finds_by_reference_and_update_date(soap, session) -> None:
    soap(_goods_issue("1", ref="O'Hara"), session)
    sql = "SELECT DocEntry, Ref2 FROM OIGE WHERE Ref2 = N'O''Hara' AND UpdateDate >= '2026-01-01' AND CANCELED = 'N'"
    answer = soap(f"<dis:ExecuteSQL xmlns:dis=\"{DIS}\"><DoQuery>{escape(sql)}</DoQuery>"
                  "</dis:ExecuteSQL>", session)
    rows = etree.fromstring(answer.content).findall(".//row")
    assert [(r.findtext("DocEntry"), r.findtext("Ref2")) for r in rows] == [("1", "O'Hara")]


def test_execute_sql_refuses_anything_but_the_select_subset(soap, session) -> None:
    for sql in ("DELETE FROM OITM", "SELECT * FROM OITM; DROP TABLE OITM", "SELECT * FROM OITM -- x",
                "SELECT * FROM OITM UNION SELECT * FROM OCRD", "SELECT * FROM OUSR", "SELECT Password FROM OITM",
                "SELECT * FROM OITM WHERE ItemCode = ItemName"):
        answer = soap(f"<dis:ExecuteSQL xmlns:dis=\"{DIS}\"><DoQuery>{sql}</DoQuery></dis:ExecuteSQL>", session)
        assert answer.status_code == 500, sql
        assert _fault(answer)[0] == "-1", sql


def test_dtd_and_entities_are_refused(soap) -> None:
    evil = (b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]>'
            b'<env:Envelope xmlns:env="http://schemas.xmlsoap.org/soap/envelope/"><env:Body>'
            b'<dis:Login xmlns:dis="http://www.sap.com/SBO/DIS"><DatabaseName>&e;</DatabaseName></dis:Login>'
            b'</env:Body></env:Envelope>')
    answer = soap("", raw=evil)
    assert answer.status_code == 500
    code, message = _fault(answer)
    assert code == "-1000" and "DTD" in message
    assert b"root:" not in answer.content


def test_utf16_request_and_soap12_envelope(soap) -> None:
    body = envelope(LOGIN).replace('encoding="utf-8"', 'encoding="UTF-16"')
    assert soap("", raw=body.encode("utf-16")).status_code == 200
    answer = soap("", raw=envelope(LOGIN, ns=SOAP12).encode(), content_type="application/soap+xml")
    assert answer.status_code == 200 and answer.headers["Content-Type"].startswith("application/soap+xml")
    bad = soap("", raw=envelope(_goods_issue("1"), ns=SOAP12).encode(), content_type="application/soap+xml")
    doc = etree.fromstring(bad.content)
    assert doc.tag == f"{{{SOAP12}}}Envelope"
    assert doc.findtext(f".//{{{SOAP12}}}Subcode/{{{SOAP12}}}Value") == "301"


def test_update_object_changes_an_editable_header_field(sim, soap, session) -> None:
    soap(_goods_issue("1"), session)
    body = (f"<dis:UpdateObject xmlns:dis=\"{DIS}\"><BOM><BO><AdmInfo><Object>oInventoryGenExit</Object></AdmInfo>"
            "<QueryParams><DocEntry>1</DocEntry></QueryParams><Documents><row><Comments>checked</Comments></row>"
            "</Documents></BO></BOM></dis:UpdateObject>")
    assert soap(body, session).status_code == 200
    assert sim.company.record("InventoryGenExits", 1)["Comments"] == "checked"


def test_service_layer_documents_are_visible_to_the_di_server(sim, soap, session) -> None:
    with sim.company.unit_of_work():
        sim.company.create("InventoryGenEntries", {"Reference2": "SL-1", "DocumentLines": [
            {"ItemCode": "A003", "Quantity": 4, "WarehouseCode": "01"}]})
    sql = "SELECT DocEntry FROM OIGN WHERE Reference2 = 'SL-1'"
    answer = soap(f"<dis:ExecuteSQL xmlns:dis=\"{DIS}\"><DoQuery>{sql}</DoQuery></dis:ExecuteSQL>", session)
    assert [r.findtext("DocEntry") for r in etree.fromstring(answer.content).findall(".//row")] == ["1"]


def test_unknown_command_and_malformed_xml_are_faults(soap, session) -> None:
    assert _fault(soap(f"<dis:RemoveObject xmlns:dis=\"{DIS}\"/>", session))[0] == "-1000"
    assert _fault(soap("", raw=b"<not-xml"))[0] == "-1000"
    assert SOAP11  # the namespace the fixtures speak
