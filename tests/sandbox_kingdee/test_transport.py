"""Routing, request envelopes and response framing, over real loopback HTTP (doc §1, §4, §5, §12.1-2, §12.10)."""
from __future__ import annotations

import json
from urllib.parse import urlencode

import pytest

from sandbox.faults import ErrorFault, FaultPlan, RateLimit
from tests.sandbox_kingdee.conftest import K3, instock, sign_headers

QUERY = {"FormId": "BD_MATERIAL", "FieldKeys": "FNumber,FName", "FilterString": "FNumber = 'MAT001'"}
EXPECTED = [["MAT001", "螺丝"]]


@pytest.mark.parametrize("service", [
    "Kingdee.BOS.WebApi.ServicesStub.DynamicFormService.ExecuteBillQuery",
    "kingdee.bos.webapi.servicesstub.dynamicformservice.executebillquery",
    "KINGDEE.BOS.WEBAPI.SERVICESSTUB.DYNAMICFORMSERVICE.EXECUTEBILLQUERY",
])
@pytest.mark.parametrize("root", ["k3cloud", "K3Cloud"])
def test_service_names_and_root_are_case_insensitive(k3: K3, service, root):
    url = f"{k3.base}/{root}/{service}.common.kdsvc"
    answer = k3.http.post(url, json={"data": QUERY}, headers=sign_headers(url), timeout=5)
    assert answer.status_code == 200 and answer.json() == EXPECTED


@pytest.mark.parametrize("spelling", ["ExcuteOperation", "ExecuteOperation", "excuteoperation"])
def test_both_spellings_of_execute_operation(k3: K3, sim, spelling):
    status = k3.call(spelling, {"formid": "BD_MATERIAL", "opNumber": "Forbid", "data": {"Numbers": ["MAT002"]}})
    assert status["Result"]["ResponseStatus"]["IsSuccess"] is True
    assert sim.bill("BD_MATERIAL", "MAT002")["FForbidStatus"] == "B"
    again = k3.call(spelling, {"formid": "BD_MATERIAL", "opNumber": "Enable", "data": {"Numbers": ["MAT002"]}})
    assert again["Result"]["ResponseStatus"]["IsSuccess"] is True


@pytest.mark.parametrize("body", [
    {"data": QUERY},                                                  # SDK
    {"data": json.dumps(QUERY)},                                      # data as a JSON string
    {"Data": QUERY},                                                  # keys case-insensitive
    {"DATA": json.dumps(QUERY)},
    {"parameters": [QUERY]},                                          # positional array
    {"parameters": [json.dumps(QUERY)]},                              # positional, data as string
    {"parameters": json.dumps([json.dumps(QUERY)])},                  # parameters as a JSON string
    {"format": 1, "useragent": "ApiClient", "rid": "1", "parameters": [json.dumps(QUERY)],
     "timestamp": "2025-01-01", "v": "1.0"},                          # classic envelope
])
def test_every_query_envelope(k3: K3, body):
    assert k3.call("ExecuteBillQuery", body) == EXPECTED


def test_form_encoded_data(k3: K3):
    url = k3.url("ExecuteBillQuery")
    headers = {**sign_headers(url), "Content-Type": "application/x-www-form-urlencoded"}
    answer = k3.http.post(url, data=urlencode({"data": json.dumps(QUERY)}), headers=headers, timeout=5)
    assert answer.json() == EXPECTED


@pytest.mark.parametrize("body", [
    {"formid": "STK_InStock", "data": {"Model": instock(3)}},
    {"FormId": "STK_InStock", "Data": json.dumps({"Model": instock(3)})},
    {"parameters": ["STK_InStock", json.dumps({"Model": instock(3)})]},
    {"format": 1, "useragent": "ApiClient", "rid": "7", "v": "1.0",
     "parameters": json.dumps(["STK_InStock", json.dumps({"Model": instock(3)})])},
])
def test_every_save_envelope(k3: K3, body):
    result = k3.call("Save", body)["Result"]
    assert result["ResponseStatus"]["IsSuccess"] is True and result["Number"].startswith("CGRK")


def test_operation_positional_parameters(k3: K3, sim):
    body = {"parameters": ["BD_MATERIAL", "Forbid", json.dumps({"Numbers": ["MAT001"]})]}
    assert k3.call("ExcuteOperation", body)["Result"]["ResponseStatus"]["IsSuccess"] is True
    assert sim.bill("BD_MATERIAL", "MAT001")["FForbidStatus"] == "B"


def test_unicode_escaped_and_raw_utf8_json_are_the_same(k3: K3):
    escaped = json.dumps({"data": {**QUERY, "FilterString": "FName = '螺丝'"}}, ensure_ascii=True)
    assert "\\u87ba" in escaped
    raw = json.dumps({"data": {**QUERY, "FilterString": "FName = '螺丝'"}}, ensure_ascii=False).encode()
    for data in (escaped.encode(), raw):
        assert k3.call("ExecuteBillQuery", data=data, headers={"Content-Type": "application/json"}) == EXPECTED


def test_double_encoded_data_is_a_parameter_error(k3: K3):
    answer = k3.call("BillQuery", {"data": json.dumps(json.dumps(QUERY))})
    assert answer["Result"]["ResponseStatus"]["MsgCode"] == 8


def test_answers_are_utf8_json_with_floats_and_local_times(k3: K3, sim):
    answer = k3.raw("BillQuery", {"data": {"FormId": "STK_Inventory", "FieldKeys": "FMaterialId.FName,FBaseQty"}})
    assert answer.headers["Content-Type"] == "application/json; charset=utf-8"
    assert "螺丝" in answer.content.decode("utf-8")  # raw UTF-8, not \\u escapes
    rows = answer.json()
    assert {"FMaterialId.FName": "螺丝", "FBaseQty": 100.0} in rows and '"FBaseQty":100.0' in answer.text


def test_unknown_path_and_get_are_not_served(k3: K3):
    assert k3.http.post(f"{k3.base}/k3cloud/Nope.common.kdsvc", json={}, timeout=5).status_code == 404
    assert k3.http.get(k3.url("ExecuteBillQuery"), timeout=5).status_code == 405


def test_malformed_json_is_a_response_error_text(k3: K3):
    answer = k3.raw("ExecuteBillQuery", data=b"{not json", headers={"Content-Type": "application/json"})
    assert answer.status_code == 200 and answer.text.startswith("response_error:")
    assert answer.headers["Content-Type"] == "text/plain; charset=utf-8"


def test_injected_5xx_is_a_response_error_text(k3: K3, sim):
    sim.faults.set(FaultPlan(errors=[ErrorFault(status=503, operation="Save", retry_after=3)]))
    answer = k3.raw("Save", {"formid": "STK_InStock", "data": {"Model": instock()}})
    assert answer.status_code == 503 and answer.headers["Retry-After"] == "3"
    assert answer.text.startswith("response_error:")
    assert sim.documents_for("CGRK00001") == []


def test_injected_rate_limit_is_msgcode_14_in_the_operation_envelope(k3: K3, sim):
    sim.faults.set(FaultPlan(rate_limits=[RateLimit(limit=1, period=60, operation="ExecuteBillQuery")]))
    assert k3.query(QUERY) == EXPECTED
    refused = k3.raw("ExecuteBillQuery", {"data": QUERY})
    assert refused.status_code == 429 and int(refused.headers["Retry-After"]) >= 59
    status = refused.json()[0][0]["Result"]["ResponseStatus"]
    assert status["MsgCode"] == 14 and status["IsSuccess"] is False and "调用限制" in status["Errors"][0]["Message"]


def test_a_configured_fault_body_is_sent_as_is(k3: K3, sim):
    sim.faults.set(FaultPlan(errors=[ErrorFault(status=502, body="Bad Gateway", operation="View")]))
    answer = k3.raw("View", {"formid": "BD_MATERIAL", "data": {"Number": "MAT001"}})
    assert (answer.status_code, answer.text) == (502, "Bad Gateway")


def test_fault_rules_see_operation_names(k3: K3, sim):
    k3.query(QUERY)
    k3.call("excuteoperation", {"formid": "BD_MATERIAL", "opNumber": "Forbid", "data": {"Numbers": ["MAT002"]}})
    # the canonical name, whatever the spelling or case the client used
    assert [c.operation for c in sim.calls.list()] == ["ExecuteBillQuery", "ExecuteOperation"]
