"""The Jiandaoyun client on the wire: exact requests, and every answer translated once into the taxonomy."""
from __future__ import annotations

from decimal import Decimal

import pytest
import requests
import responses
from responses import matchers

from connectors.errors import (
    Action,
    Ambiguous,
    AuthError,
    ContractViolation,
    RateLimited,
    Rejected,
    Transient,
)
from connectors.jiandaoyun.client import JdyClient, NotFound

BASE = "https://api.jiandaoyun.com/api"
KEY = "jdy-key-abcdefghijklmnop"
APP, ENTRY = "5e0dca0cc9a2790006c11e02", "56fcab0f02c4675e3fe9694a"
LIST = f"{BASE}/v5/app/entry/data/list"
CREATE = f"{BASE}/v5/app/entry/data/create"


@pytest.fixture
def client():
    made = JdyClient(BASE, KEY, app_id=APP, connect_timeout=1, read_timeout=2, sleep=lambda s: None)
    yield made
    made.close()


def _headers() -> list:
    return [matchers.header_matcher({"Authorization": f"Bearer {KEY}",
                                     "Content-Type": "application/json;charset=utf-8"})]


@responses.activate
def test_list_page_sends_the_exact_request_and_parses_decimals(client) -> None:
    flt = {"rel": "and", "cond": [{"field": "item_code", "type": "text", "method": "eq", "value": ["A"]}]}
    responses.post(LIST, body='{"data":[{"_id":"6b07fd05c9a2790006000001","qty":12.5}]}',
                   match=[*_headers(), matchers.json_params_matcher(
                       {"app_id": APP, "entry_id": ENTRY, "data_id": "6b07fd05c9a2790006000000", "limit": 100,
                        "filter": flt})])
    rows = client.list_page(ENTRY, after="6b07fd05c9a2790006000000", limit=500, filter=flt)
    assert rows == [{"_id": "6b07fd05c9a2790006000001", "qty": Decimal("12.5")}]
    assert isinstance(rows[0]["qty"], Decimal)


@responses.activate
def test_bodies_are_compact_utf8_with_exact_numbers(client) -> None:
    responses.post(CREATE, json={"data": {"_id": "a" * 24}})
    client.create(ENTRY, {"name": {"value": "物料"}, "qty": {"value": Decimal("0.1")}})
    sent = responses.calls[0].request.body
    assert sent == (f'{{"app_id":"{APP}","entry_id":"{ENTRY}",'
                    '"data":{"name":{"value":"物料"},"qty":{"value":0.1}}}').encode()


@responses.activate
@pytest.mark.parametrize(("headers", "expected"), [({}, 5.0), ({"Retry-After": "12"}, 12.0), ({"Retry-After": "1"}, 5.0)])
def test_8303_is_rate_limited_with_a_5_second_floor(client, headers, expected) -> None:
    responses.post(LIST, status=400, json={"code": 8303, "msg": "超出请求频率限制"}, headers=headers)
    with pytest.raises(RateLimited) as limited:
        client.list_page(ENTRY)
    assert limited.value.retry_after == expected and limited.value.vendor_code == "8303"
    assert limited.value.action is Action.RETRY


@responses.activate
def test_8302_and_401_are_auth_errors_without_the_key(client) -> None:
    responses.post(LIST, status=400, json={"code": 8302, "msg": f"bad key {KEY}"})
    with pytest.raises(AuthError) as refused:
        client.list_page(ENTRY)
    assert KEY not in str(refused.value) and refused.value.action is Action.PAUSE
    responses.replace(responses.POST, LIST, status=401, body="unauthorized")
    with pytest.raises(AuthError):
        client.list_page(ENTRY)


@responses.activate
def test_4001_is_none_for_get_and_not_found_for_writes(client) -> None:
    responses.post(f"{BASE}/v5/app/entry/data/get", status=400, json={"code": 4001, "msg": "数据不存在"})
    assert client.get(ENTRY, "b" * 24) is None
    responses.post(f"{BASE}/v5/app/entry/data/update", status=400, json={"code": 4001, "msg": "数据不存在"})
    with pytest.raises(NotFound) as missing:
        client.update(ENTRY, "b" * 24, {}, record="Item 'A'")
    assert isinstance(missing.value, Rejected) and missing.value.vendor_code == "4001"
    assert missing.value.record == "Item 'A'"


@responses.activate
def test_business_refusals_carry_the_vendor_code(client) -> None:
    responses.post(CREATE, status=400, json={"code": 4000, "msg": "库存不足"})
    with pytest.raises(Rejected) as refused:
        client.create(ENTRY, {}, record="sales_issue R1")
    assert refused.value.vendor_code == "4000" and "库存不足" in str(refused.value)
    assert refused.value.action is Action.DEAD_LETTER


@responses.activate
def test_server_failures_follow_the_shared_classification(client) -> None:
    responses.post(CREATE, status=500, body="oops")
    with pytest.raises(Ambiguous):
        client.create(ENTRY, {})
    responses.post(LIST, status=502, body="bad gateway")
    with pytest.raises(Transient) as failed:
        client.list_page(ENTRY)
    assert not isinstance(failed.value, Ambiguous)
    responses.replace(responses.POST, CREATE, body=requests.exceptions.ReadTimeout("slow"))
    with pytest.raises(Ambiguous):
        client.create(ENTRY, {})
    responses.post(f"{BASE}/v5/app/list", status=429, headers={"Retry-After": "3"})
    with pytest.raises(RateLimited) as limited:
        client.apps()
    assert limited.value.retry_after == 3


@responses.activate
def test_unexpected_answers_are_contract_violations(client) -> None:
    responses.post(LIST, body="<html>maintenance</html>")
    with pytest.raises(ContractViolation):
        client.list_page(ENTRY)
    responses.replace(responses.POST, LIST, json={"data": [{"no_id": 1}]})
    with pytest.raises(ContractViolation):
        client.list_page(ENTRY)
    responses.replace(responses.POST, LIST, status=404, body="not here")
    with pytest.raises(ContractViolation):
        client.list_page(ENTRY)


@responses.activate
def test_batch_create_sends_the_transaction_id_and_checks_the_ids(client) -> None:
    responses.post(f"{BASE}/v5/app/entry/data/batch_create",
                   json={"status": "success", "success_count": 2, "success_ids": ["a" * 24, "b" * 24]},
                   match=[matchers.json_params_matcher({"app_id": APP, "entry_id": ENTRY, "data_list": [{}, {}],
                                                        "transaction_id": "tx"})])
    assert client.batch_create(ENTRY, [{}, {}], transaction_id="tx") == ["a" * 24, "b" * 24]
    with pytest.raises(ValueError):
        client.batch_create(ENTRY, [{}] * 101, transaction_id="tx")


def test_throttle_spaces_calls_per_class_and_company() -> None:
    from connectors.jiandaoyun.client import Throttle

    now = [0.0]
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        now[0] += seconds

    throttle = Throttle({"read": 2, "write": 1, "batch": 1, "company": 3}, clock=lambda: now[0], sleep=sleep)
    for kind in ("read", "read", "write"):
        throttle.acquire(kind)
    assert slept == []
    throttle.acquire("read")  # read window full, and the company's too: wait a second
    assert slept == [1.0]
