"""Shared pieces of the SAP B1 connector tests: a strict ``responses`` mock and a Service Layer
that answers Login with the exact SAP cookie form."""
from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import responses
from responses import matchers

from connectors.http import USER_AGENT
from connectors.sap_b1.client import ServiceLayerClient

BASE = "https://sap.example.test:50000"
PASSWORD = "Pa55-w0rd-sap"
SESSION = "cea10664-0546-11f1-c000-00155d01f301-82836-82528"
SESSION2 = "0b6a1bde-0546-11f1-c000-00155d01f301-82836-99999"
GOLDEN = Path(__file__).parent / "golden"


def root(version: str = "v2") -> str:
    return f"{BASE}/b1s/{version}"


def sent_headers(**extra: str) -> dict[str, str]:
    """Every header the client sends, for strict matching."""
    headers = {"User-Agent": USER_AGENT, "Accept-Encoding": requests.utils.default_headers()["Accept-Encoding"],
               "Accept": "*/*", "Connection": "keep-alive"}
    headers.update(extra)
    return headers


def cookie(session: str = SESSION) -> str:
    return f"B1SESSION={session}; ROUTEID=.node1"


def add_login(rsps: responses.RequestsMock, *, version: str = "v2", session: str = SESSION, status: int = 200,
              body: Any = None) -> None:
    login = {"CompanyDB": "SBODEMOUS", "UserName": "manager", "Password": PASSWORD}
    raw = json.dumps(login, separators=(",", ":")).encode()
    if body is None:
        context = ("odata.metadata", f"{root(version)}/$metadata#B1Sessions/@Element") if version == "v1" else (
            "@odata.context", f"{root(version)}/$metadata#B1Sessions/$entity")
        body = {context[0]: context[1], "SessionId": session, "Version": "1000280", "SessionTimeout": 30}
    headers = [("Set-Cookie", f"B1SESSION={session};HttpOnly;"), ("Set-Cookie", "ROUTEID=.node1; path=/b1s")] \
        if status == 200 else []
    rsps.add(responses.POST, f"{root(version)}/Login", json=body, status=status, headers=headers, match=[
        matchers.header_matcher(sent_headers(**{"Content-Type": "application/json", "Content-Length": str(len(raw))}),
                                strict_match=True),
        matchers.body_matcher(raw.decode()),
    ])


def make_client(version: str = "v2", **kwargs: Any) -> ServiceLayerClient:
    counter = iter(range(1, 1000))
    return ServiceLayerClient(BASE, company_db="SBODEMOUS", username="manager", password=PASSWORD, version=version,
                              connect_timeout=2, read_timeout=7, name="sap_test",
                              boundary=lambda kind: f"{kind}_{next(counter)}", **kwargs)


@pytest.fixture
def mocked() -> Iterator[responses.RequestsMock]:
    with responses.RequestsMock(assert_all_requests_are_fired=True) as rsps:
        yield rsps


def golden(name: str) -> Any:
    return json.loads((GOLDEN / name).read_text(encoding="utf-8"))
