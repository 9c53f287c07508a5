"""A zeep client built only from the simulator's WSDL (issue 4's done-criterion for the DI Server)."""
from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest
import zeep
from lxml import etree

from sandbox.ledger import StockKey

HARDENED = zeep.Settings(strict=True, forbid_dtd=True, forbid_entities=True, forbid_external=True,
                         xml_huge_tree=False)


@pytest.fixture
def client(server) -> zeep.Client:
    return zeep.Client(server.url + "/DIServer?wsdl", settings=HARDENED)


def test_zeep_logs_in_adds_a_goods_issue_and_reads_it_back(sim, client) -> None:
    # Given a session from Login
    session = client.service.Login(DatabaseServer="sql01", DatabaseName="SBODEMOUS", DatabaseType="dst_MSSQL2016",
                                   CompanyUsername="manager", CompanyPassword="secret", Language="ln_English",
                                   LicenseServer="lic:30000")
    header = {"SessionID": session}
    # When an InventoryGenExits business object is added as BOM XML
    bom = etree.fromstring(
        "<BOM><BO><AdmInfo><Object>oInventoryGenExit</Object></AdmInfo>"
        "<Documents><row><DocDate>20260101</DocDate><Reference2>ZEEP-1</Reference2></row></Documents>"
        "<Document_Lines><row><ItemCode>A000</ItemCode><Quantity>4</Quantity><WarehouseCode>01</WarehouseCode>"
        "</row></Document_Lines></BO></BOM>")
    key = client.service.AddObject(_value_1=bom, _soapheaders=header)
    # Then GetByKey returns it, and the stock went down by 4
    got = client.service.GetByKey(Object="oInventoryGenExit", DocEntry=key, _soapheaders=header)
    assert got.findtext("BO/Documents/row/Reference2") == "ZEEP-1"
    assert got.findtext("BO/Document_Lines/row/Quantity") == "4"
    assert sim.ledger.balances()[StockKey("A000", "01")] == Decimal(6)
    rows = client.service.ExecuteSQL(DoQuery="SELECT DocEntry FROM OIGE WHERE Reference2 = 'ZEEP-1'",
                                     _soapheaders=header)
    assert [r.findtext("DocEntry") for r in rows.iter("row")] == [key]
    client.service.Logout(_soapheaders=header)


def test_faults_reach_zeep_with_the_di_code(client) -> None:
    session = client.service.Login(DatabaseName="SBODEMOUS", CompanyUsername="manager", CompanyPassword="secret")
    bom = etree.fromstring(
        "<BOM><BO><AdmInfo><Object>oInventoryGenExit</Object></AdmInfo><Documents><row/></Documents>"
        "<Document_Lines><row><ItemCode>A000</ItemCode><Quantity>99</Quantity><WarehouseCode>01</WarehouseCode>"
        "</row></Document_Lines></BO></BOM>")
    with pytest.raises(zeep.exceptions.Fault) as caught:
        client.service.AddObject(_value_1=bom, _soapheaders={"SessionID": session})
    assert caught.value.message.startswith("Quantity falls into negative inventory")
    assert caught.value.detail.findtext(".//{http://www.sap.com/SBO/DIS}Error/Code") == "-10"


def test_vendored_wsdl_is_the_one_the_simulator_serves() -> None:
    root = Path(__file__).resolve().parents[2]
    served = (root / "sandbox" / "sap_b1_di.wsdl").read_bytes()
    assert (root / "connectors" / "sap_b1" / "di_server.wsdl").read_bytes() == served
