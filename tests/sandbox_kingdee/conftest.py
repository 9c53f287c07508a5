"""Fixtures: a K3Cloud simulator on loopback, a seeded world, and a plain-``requests`` caller.

Signatures are computed here from vendors/kingdee.md §2.3/§11, independently of the simulator.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Iterator
from decimal import Decimal
from typing import Any
from urllib.parse import quote, urlsplit

import pytest
import requests

from sandbox.kingdee import KingdeeSimulator
from sandbox.server import SimulatorServer
from sandbox.world import World, WorldBalance, WorldItem, WorldPartner, WorldWarehouse

ACCT = "65f1a2b3c4d5e6"
USER = "demo_user"
PASSWORD = "demo_password"
APP_ID = "123456_AbCdEfGhIjKlMnOpQrStUvWxYz012345"
APP_SECRET = "0123456789abcdef0123456789abcdef"
FORM = "Kingdee.BOS.WebApi.ServicesStub.DynamicFormService."
AUTH = "Kingdee.BOS.WebApi.ServicesStub.AuthService."
_XOR = b"0054f397c6234378b09ca7d3e5debce7"

WORLD = World(
    items=(WorldItem("MAT001", "螺丝", unit="PCS", spec="M3"), WorldItem("MAT002", "螺母", unit="PCS"),
           WorldItem("LOT001", "胶水", unit="KG", batch_managed=True)),
    warehouses=(WorldWarehouse("CK001", "主仓"), WorldWarehouse("CK002", "分仓"),
                WorldWarehouse("CK003", "货架仓", bins=("A-01", "A-02"))),
    partners=(WorldPartner("VEN001", "供应商一", "supplier"), WorldPartner("CUS001", "客户一", "customer")),
    balances=(WorldBalance("MAT001", "CK001", Decimal("100")), WorldBalance("MAT002", "CK001", Decimal("5")),
              WorldBalance("LOT001", "CK001", Decimal("7"), lot="L1")),
)


def _secret_of(app_id: str) -> str:
    head, _, tail = app_id.partition("_")
    if "_" in tail or len(tail) != 32:
        return ""
    raw = base64.b64decode(tail)
    return base64.b64encode(bytes(b ^ _XOR[i] for i, b in enumerate(raw))).decode()


def _sig(key: str, msg: str) -> str:
    return base64.b64encode(hmac.new(key.encode(), msg.encode(), hashlib.sha256).hexdigest().encode()).decode()


def sign_headers(url: str, *, acct: str = ACCT, user: str = USER, app_id: str = APP_ID,
                 app_secret: str = APP_SECRET, lcid: int = 2052, timestamp: int | None = None) -> dict[str, str]:
    """The SDK's signing headers for ``url`` (doc §2.3)."""
    ts = str(int(time.time()) if timestamp is None else timestamp)
    path = quote(urlsplit(url).path, encoding="utf-8").replace("/", "%2F")
    appdata = f"{acct},{user},{lcid},0"
    return {
        "X-Api-ClientID": app_id.split("_")[0], "X-Api-Auth-Version": "2.0", "x-api-timestamp": ts,
        "x-api-nonce": ts, "x-api-signheaders": "x-api-timestamp,x-api-nonce",
        "X-Api-Signature": _sig(_secret_of(app_id), f"POST\n{path}\n\nx-api-nonce:{ts}\nx-api-timestamp:{ts}\n"),
        "X-Kd-Appkey": app_id, "X-Kd-Appdata": base64.b64encode(appdata.encode()).decode(),
        "X-Kd-Signature": _sig(app_secret, app_id + appdata),
    }


class K3:
    """A bare-``requests`` K3Cloud caller: signed by default, or on a session after ``login``."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.http = requests.Session()
        self.signed = True

    def url(self, op: str, service: str = FORM) -> str:
        return f"{self.base}/k3cloud/{service}{op}.common.kdsvc"

    def raw(self, op: str, body: Any = None, *, service: str = FORM, headers: dict[str, str] | None = None,
            data: Any = None, signed: bool | None = None) -> requests.Response:
        url = self.url(op, service)
        sent = dict(sign_headers(url) if (self.signed if signed is None else signed) else {})
        sent.update(headers or {})
        if data is None:
            sent.setdefault("Content-Type", "application/json")
            data = json.dumps(body).encode()  # ensure_ascii: \\u escapes, as the SDK sends
        return self.http.post(url, data=data, headers=sent, timeout=10)

    def call(self, op: str, body: Any = None, **kw: Any) -> Any:
        answer = self.raw(op, body, **kw)
        assert answer.status_code == 200, answer.text
        assert answer.headers["Content-Type"] == "application/json; charset=utf-8", answer.text
        return answer.json()

    # the SDK's methods
    def query(self, data: dict[str, Any]) -> Any:
        return self.call("ExecuteBillQuery", {"data": data})

    def bill_query(self, data: dict[str, Any]) -> Any:
        return self.call("BillQuery", {"data": data})

    def save(self, form: str, data: dict[str, Any], op: str = "Save") -> dict[str, Any]:
        return self.call(op, {"formid": form, "data": data})["Result"]

    def op(self, op: str, form: str, data: dict[str, Any]) -> dict[str, Any]:
        return self.call(op, {"formid": form, "data": data})["Result"]["ResponseStatus"]

    def login(self, user: str = USER, password: str = PASSWORD) -> dict[str, Any]:
        self.signed = False
        body = self.call("ValidateUser", {"parameters": [ACCT, user, password, 2052]}, service=AUTH)
        return body


@pytest.fixture
def sim() -> KingdeeSimulator:
    simulator = KingdeeSimulator()
    simulator.seed_world(WORLD)
    return simulator


@pytest.fixture
def server(sim: KingdeeSimulator) -> Iterator[SimulatorServer]:
    with sim.serve() as srv:
        yield srv


@pytest.fixture
def k3(server: SimulatorServer) -> Iterator[K3]:
    caller = K3(server.url)
    yield caller
    caller.http.close()


def instock(qty: Any = 10, *, material: str = "MAT001", stock: str = "CK001", **head: Any) -> dict[str, Any]:
    """A purchase receipt model as the SDK sample sends it."""
    line: dict[str, Any] = {"FMaterialId": {"FNumber": material}, "FUnitID": {"FNumber": "PCS"}, "FRealQty": qty,
                            "FStockId": {"FNumber": stock}}
    return {"FBillTypeID": {"FNumber": "RKD01_SYS"}, "FDate": "2025-01-15", "FStockOrgId": {"FNumber": "100"},
            "FPurchaseOrgId": {"FNumber": "100"}, "FSupplierId": {"FNumber": "VEN001"}, **head,
            "FInStockEntry": [line]}


def outstock(qty: Any = 1, *, material: str = "MAT001", stock: str = "CK001", **head: Any) -> dict[str, Any]:
    return {"FDate": "2025-01-16", "FStockOrgId": {"FNumber": "100"}, "FCustomerID": {"FNumber": "CUS001"}, **head,
            "FEntity": [{"FMaterialID": {"FNumber": material}, "FRealQty": qty, "FStockID": {"FNumber": stock}}]}
