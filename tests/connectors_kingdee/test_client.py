"""K3CloudClient on the wire: exact paths, headers (signatures recomputed), bodies, envelopes."""
from __future__ import annotations

import base64
import hashlib
import hmac
import json
from urllib.parse import quote

import pytest
import requests
import responses
from responses import matchers

from connectors.errors import Action, Ambiguous, AuthError, ConfigError, ContractViolation, RateLimited, Rejected, \
    Transient
from connectors.http import USER_AGENT
from connectors.kingdee.client import Credentials, K3CloudClient, VendorStatus, decode_app_secret, envelope_error

SITE = "http://k3.example.test/k3cloud/"
FORM = "Kingdee.BOS.WebApi.ServicesStub.DynamicFormService."
AUTH = "Kingdee.BOS.WebApi.ServicesStub.AuthService."
ACCT, USER = "65f1a2b3c4d5e6", "demo_user"
APP_ID, APP_SECRET = "123456_AbCdEfGhIjKlMnOpQrStUvWxYz012345", "0123456789abcdef0123456789abcdef"
PASSWORD = "pa55-word-xyz"
TS = 1795671768


def url(service: str) -> str:
    return f"{SITE}{service}.common.kdsvc"


# -- an independent implementation of the SDK's signing, from the vendor doc (§2.3, §11) --

XOR_KEY = b"0054f397c6234378b09ca7d3e5debce7"


def doc_client_secret(app_id: str) -> str:
    p = app_id.split("_")
    if len(p) != 2 or len(p[1]) != 32:
        return ""
    raw = base64.b64decode(p[1])
    return base64.b64encode(bytes(b ^ XOR_KEY[i] for i, b in enumerate(raw))).decode()


def doc_sig(key: str, msg: str) -> str:
    return base64.b64encode(hmac.new(key.encode(), msg.encode(), hashlib.sha256).hexdigest().encode()).decode()


def signed_headers(path: str, *, ts: int = TS, sid: str | None = None, body_len: int) -> dict[str, str]:
    msg = (f"POST\n{quote(path, encoding='utf-8').replace('/', '%2F')}\n\n"
           f"x-api-nonce:{ts}\nx-api-timestamp:{ts}\n")
    appdata = f"{ACCT},{USER},2052,0"
    headers = {
        "User-Agent": USER_AGENT, "Accept-Encoding": requests.utils.default_headers()["Accept-Encoding"],
        "Accept": "*/*", "Connection": "keep-alive", "Content-Type": "application/json",
        "Content-Length": str(body_len), "Accept-Charset": "utf-8",
        "X-Api-ClientID": "123456", "X-Api-Auth-Version": "2.0", "x-api-timestamp": str(ts),
        "x-api-nonce": str(ts), "x-api-signheaders": "x-api-timestamp,x-api-nonce",
        "X-Api-Signature": doc_sig(doc_client_secret(APP_ID), msg),
        "X-Kd-Appkey": APP_ID, "X-Kd-Appdata": base64.b64encode(appdata.encode()).decode(),
        "X-Kd-Signature": doc_sig(APP_SECRET, APP_ID + appdata),
    }
    if sid:
        headers["kdservice-sessionid"] = sid
        headers["Cookie"] = f"kdservice-sessionid={sid}"
    return headers


def compact(body) -> bytes:
    return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()


def ok_status(**extra):
    return {"ErrorCode": 0, "IsSuccess": True, "Errors": [], "SuccessEntitys": [], "SuccessMessages": [],
            "MsgCode": 0, **extra}


def failed(code: int, message: str, field: str | None = None):
    return {"ErrorCode": 500, "IsSuccess": False, "Errors": [{"FieldName": field, "Message": message, "DIndex": 0}],
            "SuccessEntitys": [], "SuccessMessages": [], "MsgCode": code}


@pytest.fixture
def mocked():
    with responses.RequestsMock(assert_all_requests_are_fired=True) as rsps:
        yield rsps


def signature_client(**kw) -> K3CloudClient:
    creds = Credentials(acct_id=ACCT, username=USER, app_id=APP_ID, app_secret=APP_SECRET)
    return K3CloudClient(SITE, creds, clock=lambda: TS + 0.7, **kw)


def session_client(login="password") -> K3CloudClient:
    creds = Credentials(acct_id=ACCT, username=USER, app_id=APP_ID, app_secret=APP_SECRET, password=PASSWORD,
                        auth="session", login=login)
    return K3CloudClient(SITE, creds, clock=lambda: TS)


QUERY = {"data": {"FormId": "BD_MATERIAL", "FieldKeys": "FNumber,FName", "FilterString": "FForbidStatus = 'A'",
                  "OrderString": "FModifyDate ASC, FMaterialId ASC", "TopRowCount": 0, "StartRow": 0,
                  "Limit": 2}}


# ------------------------------------------------------------------------------------------------
# Signing


def test_app_secret_decoding_matches_the_documented_algorithm():
    part = APP_ID.split("_")[1]
    assert decode_app_secret(part) == doc_client_secret(APP_ID) != ""
    assert decode_app_secret("short") == ""


def test_signed_query_sends_the_sdk_headers_and_the_exact_body(mocked):
    # Given a signature-mode client and the doc's sample identity
    client = signature_client()
    path = f"/k3cloud/{FORM}ExecuteBillQuery.common.kdsvc"
    body = compact(QUERY)
    headers = signed_headers(path, body_len=len(body))
    assert headers["X-Kd-Appdata"] == "NjVmMWEyYjNjNGQ1ZTYsZGVtb191c2VyLDIwNTIsMA=="  # as captured from the SDK
    mocked.add(responses.POST, url(FORM + "ExecuteBillQuery"), json=[["MAT001", "物料一"], ["MAT002", "物料二"]],
               match=[matchers.header_matcher(headers, strict_match=True), matchers.body_matcher(body.decode())])
    # When it runs one query page
    rows = client.execute_bill_query("BD_MATERIAL", ["FNumber", "FName"], filter_string="FForbidStatus = 'A'",
                                      order_string="FModifyDate ASC, FMaterialId ASC", start_row=0, limit=2)
    # Then the rows come back in FieldKeys order, decoded as UTF-8
    assert rows == [["MAT001", "物料一"], ["MAT002", "物料二"]]


def test_utf8_body_declared_as_latin1_is_decoded_as_utf8(mocked):
    client = signature_client()
    raw = json.dumps([["MAT001", "运动T恤"]], ensure_ascii=False).encode("utf-8")
    mocked.add(responses.POST, url(FORM + "ExecuteBillQuery"), body=raw, content_type="text/plain")
    assert client.execute_bill_query("BD_MATERIAL", ["FNumber", "FName"]) == [["MAT001", "运动T恤"]]


def test_the_session_cookie_the_server_sets_is_sent_back_as_cookie_and_header(mocked):
    client = signature_client()
    first = mocked.add(responses.POST, url(FORM + "ExecuteBillQuery"), json=[],
                       headers={"Set-Cookie": "kdservice-sessionid=sid-abc123; path=/"})
    client.execute_bill_query("BD_STOCK", ["FNumber"], limit=1)
    path = f"/k3cloud/{FORM}ExecuteBillQuery.common.kdsvc"
    body = compact({"data": {"FormId": "BD_STOCK", "FieldKeys": "FNumber", "FilterString": "", "OrderString": "",
                             "TopRowCount": 0, "StartRow": 0, "Limit": 1}})
    mocked.replace(responses.POST, url(FORM + "ExecuteBillQuery"), json=[], match=[
        matchers.header_matcher(signed_headers(path, sid="sid-abc123", body_len=len(body)), strict_match=True)])
    client.execute_bill_query("BD_STOCK", ["FNumber"], limit=1)
    assert first.call_count == 1 and client.session_id == "sid-abc123"


# ------------------------------------------------------------------------------------------------
# Paging


def test_paging_uses_startrow_limit_and_toprowcount_zero_and_stops_on_a_short_page(mocked):
    client = signature_client()
    for start, rows in ((0, [["A"], ["B"]]), (2, [["C"], ["D"]]), (4, [["E"]])):
        mocked.add(responses.POST, url(FORM + "ExecuteBillQuery"), json=rows, match=[matchers.json_params_matcher(
            {"data": {"FormId": "BD_STOCK", "FieldKeys": "FNumber", "FilterString": "", "OrderString": "FID ASC",
                      "TopRowCount": 0, "StartRow": start, "Limit": 2}})])
    pages = list(client.query_pages("BD_STOCK", ["FNumber"], order_string="FID ASC", page_size=2))
    assert [(p.start_row, p.rows, p.next_start_row) for p in pages] == [
        (0, [["A"], ["B"]], 2), (2, [["C"], ["D"]], 4), (4, [["E"]], None)]


def test_a_page_that_repeats_the_previous_one_is_a_contract_violation(mocked):
    client = signature_client()
    mocked.add(responses.POST, url(FORM + "ExecuteBillQuery"), json=[["A"], ["B"]])
    mocked.add(responses.POST, url(FORM + "ExecuteBillQuery"), json=[["A"], ["B"]])
    with pytest.raises(ContractViolation, match="does not advance"):
        list(client.query_pages("BD_STOCK", ["FNumber"], page_size=2))


def test_rows_of_the_wrong_width_or_too_many_rows_are_refused(mocked):
    client = signature_client()
    mocked.add(responses.POST, url(FORM + "ExecuteBillQuery"), json=[["A", "extra"]])
    with pytest.raises(ContractViolation):
        client.execute_bill_query("BD_STOCK", ["FNumber"])
    mocked.add(responses.POST, url(FORM + "ExecuteBillQuery"), json=[["A"], ["B"], ["C"]])
    with pytest.raises(ContractViolation, match="ignored Limit"):
        client.execute_bill_query("BD_STOCK", ["FNumber"], limit=2)


# ------------------------------------------------------------------------------------------------
# Envelopes → errors


def query_failure(code, message, field=None):
    return [[{"Result": {"ResponseStatus": failed(code, message, field)}}]]


@pytest.mark.parametrize("code,message,write,error,vendor_code", [
    (2, "没有权限", False, AuthError, "2"),
    (4, "业务对象不存在", False, ConfigError, "4"),
    (4, "GetRealExpress error: 语法错误", False, ContractViolation, "4"),
    (4, "插件异常", True, Rejected, "4"),
    (6, "数据库操作失败", True, Ambiguous, "6"),
    (6, "数据库操作失败", False, Transient, "6"),
    (7, "许可错误", False, ConfigError, "7"),
    (8, "参数错误", False, ContractViolation, "8"),
    (9, "字段不存在 FFoo", False, ConfigError, "9"),
    (9, "物料不存在", True, Rejected, "9"),
    (10, "数据不存在", True, Rejected, "10"),
    (11, "库存不足", True, Rejected, "11"),
    (12, "单据不是草稿状态，不能提交", True, Rejected, "12"),
    (13, "网控冲突", True, Transient, "13"),
    (14, "调用限制", False, RateLimited, "14"),
    (15, "禁止管理员登录", False, AuthError, "15"),
])
def test_envelope_table(code, message, write, error, vendor_code):
    status = VendorStatus(success=False, msg_code=code, errors=({"FieldName": "FMaterialId", "Message": message},))
    exc = envelope_error(status, where="kd Save", write=write, form_id="STK_InStock")
    assert type(exc) is error
    assert exc.vendor_code == vendor_code
    assert message in exc.message and "FMaterialId" in exc.message


def test_a_query_failure_is_unwrapped_twice_and_translated(mocked):
    client = signature_client()
    mocked.add(responses.POST, url(FORM + "ExecuteBillQuery"), json=query_failure(9, "字段FFoo不存在", "FFoo"))
    with pytest.raises(ConfigError) as failed_query:
        client.execute_bill_query("BD_STOCK", ["FFoo"])
    assert failed_query.value.vendor_code == "9" and "FFoo" in failed_query.value.message


def test_save_refusal_is_rejected_naming_the_field(mocked):
    client = signature_client()
    mocked.add(responses.POST, url(FORM + "Save"), json={"Result": {
        "ResponseStatus": failed(11, "物料编码“MAT404”在基础资料中不存在", "FMaterialId"),
        "Id": "", "Number": "", "NeedReturnData": [{}]}})
    with pytest.raises(Rejected) as refused:
        client.save("STK_InStock", {"FDate": "2025-01-15"}, record="purchase_receipt R1")
    assert refused.value.vendor_code == "11"
    assert "FMaterialId: 物料编码“MAT404”在基础资料中不存在" in refused.value.message
    assert refused.value.action is Action.DEAD_LETTER and refused.value.details["fields"] == ["FMaterialId"]


def test_string_issuccess_and_msgcode_are_understood(mocked):
    client = signature_client()
    status = failed(11, "校验失败")
    status.update(IsSuccess="false", MsgCode="11")
    mocked.add(responses.POST, url(FORM + "Audit"), json={"Result": {"ResponseStatus": status}})
    with pytest.raises(Rejected) as refused:
        client.operate("Audit", "STK_InStock", ["100001"])
    assert refused.value.vendor_code == "11"


def test_save_success_returns_id_and_number_and_sends_the_documented_body(mocked):
    client = signature_client()
    model = {"FBillTypeID": {"FNumber": "RKD01_SYS"}, "FDate": "2025-01-15", "FNote": "K1"}
    mocked.add(responses.POST, url(FORM + "Save"), match=[matchers.json_params_matcher({
        "formid": "STK_InStock", "data": {"NeedReturnFields": ["FBillNo"], "IsDeleteEntry": "true",
                                          "IsAutoSubmitAndAudit": "true", "Model": model}})],
        json={"Result": {"ResponseStatus": ok_status(SuccessEntitys=[{"Id": 100001, "Number": "CGRK00001",
                                                                        "DIndex": 0}]),
                         "Id": 100001, "Number": "CGRK00001", "NeedReturnData": [{"FBillNo": "CGRK00001"}]}})
    saved = client.save("STK_InStock", model, auto_submit_audit=True)
    assert (saved.id, saved.number) == ("100001", "CGRK00001")


def test_operations_send_ids_as_a_comma_string(mocked):
    client = signature_client()
    mocked.add(responses.POST, url(FORM + "Submit"), match=[matchers.json_params_matcher(
        {"formid": "STK_InStock", "data": {"Ids": "100001"}})],
        json={"Result": {"ResponseStatus": ok_status(SuccessEntitys=[{"Id": 100001, "Number": "CGRK00001"}])}})
    assert client.operate("Submit", "STK_InStock", ["100001"]).success


def test_response_error_body_is_transient_for_reads_and_ambiguous_for_writes(mocked):
    client = signature_client()
    mocked.add(responses.POST, url(FORM + "ExecuteBillQuery"), body="response_error: Object reference not set",
               content_type="text/plain")
    with pytest.raises(Transient) as read:
        client.execute_bill_query("BD_STOCK", ["FNumber"])
    assert type(read.value) is Transient
    mocked.add(responses.POST, url(FORM + "Save"), body="response_error: timeout expired", content_type="text/plain")
    with pytest.raises(Ambiguous):
        client.save("STK_InStock", {})


def test_a_write_answered_with_garbage_is_ambiguous(mocked):
    client = signature_client()
    mocked.add(responses.POST, url(FORM + "Audit"), body="<html>oops</html>", content_type="text/html")
    with pytest.raises(Ambiguous):
        client.operate("Audit", "STK_InStock", ["1"])


@pytest.mark.parametrize("status", [500, 400])
def test_unknown_account_passport_failure_is_an_auth_error(mocked, status):
    client = signature_client()
    mocked.add(responses.POST, url(FORM + "ExecuteBillQuery"), body="Fail to verify thirty passport",
               status=status, content_type="text/plain")
    with pytest.raises(AuthError):
        client.execute_bill_query("BD_STOCK", ["FNumber"])


def test_http_429_is_rate_limited_before_any_envelope(mocked):
    client = signature_client()
    mocked.add(responses.POST, url(FORM + "ExecuteBillQuery"), status=429, headers={"Retry-After": "3"}, body="")
    with pytest.raises(RateLimited) as limited:
        client.execute_bill_query("BD_STOCK", ["FNumber"])
    assert limited.value.retry_after == 3


# ------------------------------------------------------------------------------------------------
# Re-login: exactly once


LOST = query_failure(1, "会话信息已丢失，请重新登录")


def test_signature_mode_msgcode_1_drops_the_session_and_resends_once(mocked):
    client = signature_client()
    mocked.add(responses.POST, url(FORM + "ExecuteBillQuery"), json=LOST)
    retry = mocked.add(responses.POST, url(FORM + "ExecuteBillQuery"), json=[["A"]])
    assert client.execute_bill_query("BD_STOCK", ["FNumber"]) == [["A"]]
    assert retry.call_count == 1


def test_signature_mode_msgcode_1_twice_is_an_auth_error_after_two_calls(mocked):
    client = signature_client()
    calls = mocked.add(responses.POST, url(FORM + "ExecuteBillQuery"), json=LOST)
    with pytest.raises(AuthError) as refused:
        client.execute_bill_query("BD_STOCK", ["FNumber"])
    assert calls.call_count == 2 and refused.value.action is Action.PAUSE


def login_ok(sid: str):
    return {"Message": None, "MessageCode": "CheckPasswordPolicy", "LoginResultType": 1,
            "Context": {"UserName": USER, "SessionId": sid}, "KDSVCSessionId": sid, "IsSuccessByAPI": True}


def test_session_login_validate_user_sends_positional_parameters_and_keeps_the_session(mocked):
    # Given a password session client
    client = session_client("password")
    login = mocked.add(responses.POST, url(AUTH + "ValidateUser"), json=login_ok("sid-1"),
                       headers={"Set-Cookie": "kdservice-sessionid=sid-1; path=/"},
                       match=[matchers.json_params_matcher({"parameters": [ACCT, USER, PASSWORD, 2052]})])
    # When it queries, the session travels as header and cookie, and no signature is sent
    query = mocked.add(responses.POST, url(FORM + "ExecuteBillQuery"), json=[["A"]], match=[matchers.header_matcher(
        {"kdservice-sessionid": "sid-1", "Cookie": "kdservice-sessionid=sid-1"})])
    assert client.execute_bill_query("BD_STOCK", ["FNumber"]) == [["A"]]
    assert login.call_count == 1 and query.call_count == 1
    assert "X-Kd-Signature" not in mocked.calls[1].request.headers


def test_login_by_app_secret_parameters(mocked):
    client = session_client("app_secret")
    mocked.add(responses.POST, url(AUTH + "LoginByAppSecret"), json=login_ok("sid-2"),
               match=[matchers.json_params_matcher({"parameters": [ACCT, USER, APP_ID, APP_SECRET, 2052]})])
    client.login()
    assert client.session_id == "sid-2"


def test_session_mode_relogins_once_on_msgcode_1_then_resends(mocked):
    client = session_client()
    first = mocked.add(responses.POST, url(AUTH + "ValidateUser"), json=login_ok("sid-1"))
    mocked.add(responses.POST, url(FORM + "Save"), json={"Result": {"ResponseStatus": LOST[0][0]["Result"]
                                                                       ["ResponseStatus"]}})
    saved = {"Result": {"ResponseStatus": ok_status(), "Id": 7, "Number": "CGRK7"}}
    mocked.add(responses.POST, url(FORM + "Save"), json=saved)
    assert client.save("STK_InStock", {}).number == "CGRK7"
    assert first.call_count == 2  # the first login, and exactly one re-login
    assert [c.request.url.rsplit(".", 3)[-3] for c in mocked.calls] == [
        "ValidateUser", "Save", "ValidateUser", "Save"]


def test_session_mode_msgcode_1_after_relogin_is_an_auth_error_without_a_third_send(mocked):
    client = session_client()
    logins = mocked.add(responses.POST, url(AUTH + "ValidateUser"), json=login_ok("sid-1"))
    saves = mocked.add(responses.POST, url(FORM + "Save"), json={"Result": {"ResponseStatus": failed(1, "会话信息已丢失")}})
    with pytest.raises(AuthError):
        client.save("STK_InStock", {})
    assert logins.call_count == 2 and saves.call_count == 2


def test_refused_login_is_an_auth_error_and_not_retried(mocked):
    client = session_client()
    logins = mocked.add(responses.POST, url(AUTH + "ValidateUser"), json={
        "Message": "用户名或密码错误", "LoginResultType": 0, "Context": None, "IsSuccessByAPI": False})
    with pytest.raises(AuthError, match="用户名或密码错误"):
        client.execute_bill_query("BD_STOCK", ["FNumber"])
    assert logins.call_count == 1


def test_credentials_never_show_in_repr_or_errors(mocked):
    client = session_client()
    mocked.add(responses.POST, url(AUTH + "ValidateUser"), json={
        "Message": f"bad password {PASSWORD}", "LoginResultType": -1})
    with pytest.raises(AuthError) as refused:
        client.login()
    assert PASSWORD not in str(refused.value) and PASSWORD not in repr(client.credentials)
    assert APP_SECRET not in repr(client.credentials)


def test_missing_credentials_are_a_config_error():
    with pytest.raises(ConfigError):
        K3CloudClient(SITE, Credentials(acct_id=ACCT, username=USER, app_id=APP_ID))
    with pytest.raises(ConfigError):
        K3CloudClient(SITE, Credentials(acct_id=ACCT, username=USER, auth="session", login="password"))


# ------------------------------------------------------------------------------------------------
# Exact requests: path, every header (signatures recomputed for the fixed clock), body bytes


def plain_headers(*, body_len: int, sid: str | None = None) -> dict[str, str]:
    """What an unsigned (session-mode) request carries."""
    headers = {
        "User-Agent": USER_AGENT, "Accept-Encoding": requests.utils.default_headers()["Accept-Encoding"],
        "Accept": "*/*", "Connection": "keep-alive", "Content-Type": "application/json",
        "Content-Length": str(body_len), "Accept-Charset": "utf-8",
    }
    if sid:
        headers["kdservice-sessionid"] = sid
        headers["Cookie"] = f"kdservice-sessionid={sid}"
    return headers


def pin(mocked, service: str, body, sent: dict[str, str], **reply):
    """Register ``service`` answering ``reply`` only to exactly ``body`` with exactly the ``sent`` headers."""
    return mocked.add(responses.POST, url(service), match=[
        matchers.header_matcher(sent, strict_match=True), matchers.body_matcher(compact(body).decode())], **reply)


MODEL = {"FBillTypeID": {"FNumber": "RKD01_SYS"}, "FDate": "2025-01-15", "FStockOrgId": {"FNumber": "100"},
         "FPurchaseOrgId": {"FNumber": "100"}, "FSupplierId": {"FNumber": "VEN001"}, "FBillNo": "R-1",
         "FNote": "mv-42", "FInStockEntry": [{"FMaterialId": {"FNumber": "MAT001"}, "FUnitID": {"FNumber": "PCS"},
                                              "FRealQty": 10, "FStockId": {"FNumber": "CK001"}}]}


def test_save_request_is_pinned(mocked):
    # Given a signature client at a fixed clock
    client = signature_client()
    body = {"formid": "STK_InStock", "data": {"NeedReturnFields": ["FBillNo"], "IsDeleteEntry": "true",
                                              "Model": MODEL}}
    path = f"/k3cloud/{FORM}Save.common.kdsvc"
    call = pin(mocked, FORM + "Save", body, signed_headers(path, body_len=len(compact(body))),
               json={"Result": {"ResponseStatus": ok_status(SuccessEntitys=[{"Id": 100001, "Number": "R-1",
                                                                             "DIndex": 0}]),
                                "Id": 100001, "Number": "R-1", "NeedReturnData": [{"FBillNo": "R-1"}]}})
    # When it saves the model
    saved = client.save("STK_InStock", MODEL, record="purchase_receipt R-1")
    # Then exactly that request went out, and the answer is read
    assert call.call_count == 1 and (saved.id, saved.number) == ("100001", "R-1")


def test_save_with_negative_stock_flags_request_is_pinned(mocked):
    client = signature_client()
    options = {"InterationFlags": "STK_InvCheckResult", "IgnoreInterationFlag": "true"}
    body = {"formid": "STK_InStock", "data": {"NeedReturnFields": ["FBillNo"], "IsDeleteEntry": "true",
                                              "IsAutoSubmitAndAudit": "true", **options, "Model": MODEL}}
    path = f"/k3cloud/{FORM}Save.common.kdsvc"
    pin(mocked, FORM + "Save", body, signed_headers(path, body_len=len(compact(body))),
        json={"Result": {"ResponseStatus": ok_status(), "Id": 7, "Number": "R-1"}})
    assert client.save("STK_InStock", MODEL, auto_submit_audit=True, options=options).id == "7"


@pytest.mark.parametrize("op,options", [
    ("Submit", None),
    ("Audit", None),
    ("Audit", {"InterationFlags": "STK_InvCheckResult", "IgnoreInterationFlag": "true"}),
])
def test_submit_and_audit_requests_are_pinned(mocked, op, options):
    client = signature_client()
    body = {"formid": "STK_InStock", "data": {"Ids": "100001,100002", **(options or {})}}
    path = f"/k3cloud/{FORM}{op}.common.kdsvc"
    call = pin(mocked, FORM + op, body, signed_headers(path, body_len=len(compact(body))),
               json={"Result": {"ResponseStatus": ok_status(SuccessEntitys=[
                   {"Id": 100001, "Number": "R-1", "DIndex": 0}, {"Id": 100002, "Number": "R-2", "DIndex": 1}])}})
    status = client.operate(op, "STK_InStock", ["100001", 100002], options=options)
    assert call.call_count == 1 and status.success and len(status.success_entities) == 2


def test_query_request_carries_the_session_the_server_issued_and_is_still_signed(mocked):
    client = signature_client()
    first = {"data": {"FormId": "BD_STOCK", "FieldKeys": "FNumber", "FilterString": "", "OrderString": "",
                      "TopRowCount": 0, "StartRow": 0, "Limit": 2000}}
    path = f"/k3cloud/{FORM}ExecuteBillQuery.common.kdsvc"
    pin(mocked, FORM + "ExecuteBillQuery", first, signed_headers(path, body_len=len(compact(first))),
        json=[["CK001"]], headers={"Set-Cookie": "kdservice-sessionid=sid-9; path=/"})
    second = {"data": {**first["data"], "FieldKeys": "FNumber,FName", "StartRow": 1, "Limit": 1}}
    pin(mocked, FORM + "ExecuteBillQuery", second,
        signed_headers(path, sid="sid-9", body_len=len(compact(second))), json=[["CK002", "仓二"]])
    assert client.execute_bill_query("BD_STOCK", ["FNumber"]) == [["CK001"]]
    assert client.execute_bill_query("BD_STOCK", ["FNumber", "FName"], start_row=1, limit=1) == [["CK002", "仓二"]]


@pytest.mark.parametrize("login,op,params", [
    ("password", "ValidateUser", [ACCT, USER, PASSWORD, 2052]),
    ("app_secret", "LoginByAppSecret", [ACCT, USER, APP_ID, APP_SECRET, 2052]),
])
def test_login_requests_are_pinned_and_unsigned_then_the_session_is_used(mocked, login, op, params):
    # Given a session client
    client = session_client(login)
    body = {"parameters": params}
    logged = pin(mocked, AUTH + op, body, plain_headers(body_len=len(compact(body))), json=login_ok("sid-7"),
                 headers={"Set-Cookie": "kdservice-sessionid=sid-7; path=/"})
    query = {"data": {"FormId": "BD_STOCK", "FieldKeys": "FNumber", "FilterString": "", "OrderString": "",
                      "TopRowCount": 0, "StartRow": 0, "Limit": 2000}}
    queried = pin(mocked, FORM + "ExecuteBillQuery", query, plain_headers(body_len=len(compact(query)), sid="sid-7"),
                  json=[["CK001"]])
    # When it queries: one login with exactly the positional parameters and no signature,
    # then the query on the session (header and cookie), unsigned
    assert client.execute_bill_query("BD_STOCK", ["FNumber"]) == [["CK001"]]
    assert logged.call_count == 1 and queried.call_count == 1 and client.session_id == "sid-7"
