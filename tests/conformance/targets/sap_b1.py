"""SAP Business One as conformance targets, on the simulator in ``sandbox/sap_b1.py``: the Service
Layer's v2 dialect (OData v4), its v1 dialect (OData v3) with absolute-path nextLinks, and the DI
Server over SOAP (``sap_b1-di``: ``transport = "di_server"``, zeep with the vendored WSDL, on the
simulator's ``/DIServer`` endpoint and the same company and ledger).

The company runs in Asia/Shanghai so UpdateDate/UpdateTime are not UTC: incremental tests then
prove the connector joins them in the company's zone.
"""
from __future__ import annotations

from typing import Any

from pydantic import SecretStr

from connectors.sap_b1 import SapB1Settings
from sandbox.sap_b1 import SapB1Simulator
from tests.conformance.target import ConformanceTarget

COMPANY = "SBODEMOUS"
USER = "manager"
PASSWORD = "secret"
TIMEZONE = "Asia/Shanghai"

EXTRAS = {
    # Items carry a numeric ItemsGroupCode; the world's category names have no SAP field, so category
    # is not compared (spec travels in User_Text, see settings below).
    "item_fields": ("sku", "name", "base_unit", "spec", "barcode", "batch_managed"),
    "rejected_vendor_code": "-10",
    # purchase receipts (the suite's default kind) are GRPOs; the find-before-push is a GET
    "push_fault_target": {"method": "POST", "operation": "PurchaseDeliveryNotes.POST"},
    "read_fault_target": {"method": "GET", "operation": "Items.GET"},
    "login_operation": "Login",
}


def _simulator(version: str) -> Any:
    def make(**kwargs: Any) -> SapB1Simulator:
        link = "absolute-path" if version == "v1" else "relative"
        return SapB1Simulator(users={USER: PASSWORD}, companies=(COMPANY,), timezone=TIMEZONE, next_link=link,
                              **kwargs)
    return make


def _settings(version: str, transport: str = "service_layer") -> Any:
    def make(url: str, good_credentials: bool = True, **overrides: Any) -> SapB1Settings:
        return SapB1Settings(url=url, company_db=COMPANY, username=USER,
                             password=SecretStr(PASSWORD if good_credentials else "not-the-password"),
                             odata_version=version, timezone=TIMEZONE, spec_field="User_Text",
                             transport=transport, **overrides)
    return make


DI_EXTRAS = {
    **EXTRAS,
    # every DI command is a POST to /DIServer; the command is the operation
    "push_fault_target": {"method": "POST", "operation": "DI.AddObject"},
    "read_fault_target": {"method": "POST", "operation": "DI.ExecuteSQL"},
    "login_operation": "DI.Login",
}


TARGETS = [
    ConformanceTarget(platform="sap_b1", simulator=_simulator("v2"), settings=_settings("v2"), extras=EXTRAS),
    ConformanceTarget(platform="sap_b1", id="sap_b1-v1", simulator=_simulator("v1"), settings=_settings("v1"),
                      extras=EXTRAS),
    ConformanceTarget(platform="sap_b1", id="sap_b1-di", simulator=_simulator("v2"),
                      settings=_settings("v2", "di_server"), extras=DI_EXTRAS),
]
