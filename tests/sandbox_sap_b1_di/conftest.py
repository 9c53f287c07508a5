"""Fixtures: the SAP B1 simulator (Service Layer + DI Server on one server), seeded; raw SOAP helpers."""
from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
import requests

from sandbox.server import SimulatorServer
# The same seeded simulator as the Service Layer tests: the DI Server shares its company.
from tests.sandbox_sap_b1.conftest import clock, server, sim  # noqa: F401 - fixtures

SOAP11 = "http://schemas.xmlsoap.org/soap/envelope/"
DIS = "http://www.sap.com/SBO/DIS"
LOGIN = ("<dis:Login xmlns:dis=\"http://www.sap.com/SBO/DIS\"><DatabaseServer>sql01</DatabaseServer>"
         "<DatabaseName>SBODEMOUS</DatabaseName><DatabaseType>dst_MSSQL2016</DatabaseType>"
         "<CompanyUsername>manager</CompanyUsername><CompanyPassword>secret</CompanyPassword>"
         "<Language>ln_English</Language><LicenseServer>lic:30000</LicenseServer></dis:Login>")


def envelope(body: str, session: str | None = None, ns: str = SOAP11) -> str:
    header = f"<env:Header><SessionID>{session}</SessionID></env:Header>" if session else ""
    return f'<?xml version="1.0" encoding="utf-8"?><env:Envelope xmlns:env="{ns}">{header}<env:Body>{body}</env:Body></env:Envelope>'


@pytest.fixture
def soap(server: SimulatorServer) -> Iterator[Callable[..., requests.Response]]:
    """``soap(body_xml, session=None)`` → the raw HTTP answer of ``POST /DIServer``."""
    http = requests.Session()

    def send(body: str, session: str | None = None, *, raw: bytes | None = None,
             content_type: str = "text/xml; charset=utf-8") -> requests.Response:
        data = raw if raw is not None else envelope(body, session).encode("utf-8")
        return http.post(server.url + "/DIServer", data=data, headers={"Content-Type": content_type}, timeout=10)

    yield send
    http.close()


@pytest.fixture
def session(soap: Callable[..., requests.Response]) -> str:
    from lxml import etree

    answer = soap(LOGIN)
    assert answer.status_code == 200
    return etree.fromstring(answer.content).findtext(".//SessionID")
