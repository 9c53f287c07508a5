"""Both authentication styles (doc §2.3, §2.4, §3, §11, §12.3), over real HTTP."""
from __future__ import annotations

import hashlib
import json
import time

import pytest
import requests

from sandbox.faults import FaultPlan, SessionExpiry
from sandbox.kingdee import SESSION_LOST, KingdeeSimulator
from sandbox.kingdee_auth import Account
from tests.sandbox_kingdee.conftest import ACCT, APP_ID, APP_SECRET, AUTH, PASSWORD, USER, K3, sign_headers

QUERY = {"data": {"FormId": "BD_STOCK", "FieldKeys": "FNumber", "OrderString": "FNumber"}}
STOCKS = [["CK001"], ["CK002"], ["CK003"]]


def lost(body) -> bool:
    status = body[0][0]["Result"]["ResponseStatus"]
    return status["MsgCode"] == 1 and status["Errors"][0]["Message"] == SESSION_LOST and status["IsSuccess"] is False


def test_a_good_signature_answers_and_issues_session_cookies(k3: K3):
    answer = k3.raw("ExecuteBillQuery", QUERY)
    assert answer.json() == STOCKS
    assert {"kdservice-sessionid", "ASP.NET_SessionId"} <= set(answer.cookies.keys())


@pytest.mark.parametrize("timestamp", [0, 1, int(time.time()) - 86400 * 400, int(time.time()) + 86400])
def test_timestamp_skew_is_ignored(k3: K3, timestamp):
    url = k3.url("ExecuteBillQuery")
    answer = requests.post(url, json=QUERY, headers=sign_headers(url, timestamp=timestamp), timeout=5)
    assert answer.json() == STOCKS


@pytest.mark.parametrize("change", [
    {"user": "nobody"}, {"app_id": "123456_ZZCdEfGhIjKlMnOpQrStUvWxYz012345"}, {"app_secret": "wrong"}, {"lcid": 9999},
])
def test_wrong_credentials_in_a_signature_lose_the_context(k3: K3, change):
    url = k3.url("ExecuteBillQuery")
    answer = requests.post(url, json=QUERY, headers=sign_headers(url, **change), timeout=5)
    assert answer.status_code == 200 and lost(answer.json())


def test_a_tampered_signature_is_refused(k3: K3):
    url = k3.url("ExecuteBillQuery")
    headers = sign_headers(k3.url("Save"))  # signed for another path
    assert lost(requests.post(url, json=QUERY, headers=headers, timeout=5).json())
    headers = sign_headers(url)
    headers["x-api-nonce"] = "1"
    assert lost(requests.post(url, json=QUERY, headers=headers, timeout=5).json())


def test_a_wrong_account_id_fails_the_passport_with_non_200_text(k3: K3):
    url = k3.url("ExecuteBillQuery")
    answer = requests.post(url, json=QUERY, headers=sign_headers(url, acct="nope"), timeout=5)
    assert answer.status_code != 200 and answer.text == "Fail to verify thirty passport"


def test_no_session_and_no_signature_is_msgcode_1_in_every_envelope(k3: K3):
    assert lost(k3.call("ExecuteBillQuery", QUERY, signed=False))
    bare = k3.call("BillQuery", QUERY, signed=False)["Result"]["ResponseStatus"]
    assert (bare["MsgCode"], bare["ErrorCode"]) == (1, 500)
    save = k3.call("Save", {"formid": "BD_STOCK", "data": {"Model": {}}}, signed=False)["Result"]
    assert save["ResponseStatus"]["MsgCode"] == 1 and (save["Id"], save["Number"]) == ("", "")


def test_the_session_cookie_is_checked_first_and_the_signature_only_without_it(k3: K3, sim):
    k3.query(QUERY["data"])  # signed: the simulator hands out a session
    sid = k3.http.cookies["kdservice-sessionid"]
    # With the live session, bad credentials go unnoticed (doc §3)
    url = k3.url("ExecuteBillQuery")
    answer = requests.post(url, json=QUERY, headers={**sign_headers(url, app_secret="bad"), "kdservice-sessionid": sid},
                           timeout=5)
    assert answer.json() == STOCKS
    # Once it is gone, a good signature silently gets a new one
    sim.expire_sessions()
    answer = k3.raw("ExecuteBillQuery", QUERY)
    assert answer.json() == STOCKS and answer.cookies["kdservice-sessionid"] != sid


@pytest.mark.parametrize("body", [
    {"parameters": [ACCT, USER, PASSWORD, 2052]},
    {"parameters": json.dumps([ACCT, USER, PASSWORD, 2052])},
    {"format": 1, "useragent": "ApiClient", "rid": "1", "v": "1.0", "timestamp": "x",
     "parameters": json.dumps([ACCT, USER, PASSWORD, 2052])},
    {"acctID": ACCT, "username": USER, "password": PASSWORD, "lcid": 2052},
    {"acctid": ACCT, "userName": USER, "password": PASSWORD, "lcid": "2052"},
])
def test_validate_user_bodies_and_the_session_by_cookie(k3: K3, body):
    answer = k3.raw("ValidateUser", body, service=AUTH, signed=False)
    login = answer.json()
    assert login["LoginResultType"] == 1 and login["IsSuccessByAPI"] is True
    sid = login["KDSVCSessionId"]
    assert login["Context"]["SessionId"] == sid and login["Context"]["UserName"] == USER
    assert answer.cookies["kdservice-sessionid"] == sid and answer.cookies["ASP.NET_SessionId"]
    assert k3.call("ExecuteBillQuery", QUERY, signed=False) == STOCKS  # cookie jar


def test_validate_user_form_encoded(k3: K3):
    answer = k3.http.post(k3.url("ValidateUser", AUTH), timeout=5,
                          data={"acctID": ACCT, "username": USER, "password": PASSWORD, "lcid": "2052"})
    assert answer.json()["LoginResultType"] == 1


def test_session_by_header_alone(k3: K3):
    sid = requests.post(k3.url("ValidateUser", AUTH), json={"parameters": [ACCT, USER, PASSWORD, 2052]},
                        timeout=5).json()["KDSVCSessionId"]
    answer = requests.post(k3.url("ExecuteBillQuery"), json=QUERY, headers={"kdservice-sessionid": sid}, timeout=5)
    assert answer.json() == STOCKS


@pytest.mark.parametrize("params, result_type", [
    ([ACCT, USER, "wrong", 2052], 0), ([ACCT, "nobody", PASSWORD, 2052], 0), (["nope", USER, PASSWORD, 2052], -1),
])
def test_failed_logins(k3: K3, params, result_type):
    login = k3.call("ValidateUser", {"parameters": params}, service=AUTH, signed=False)
    assert login["LoginResultType"] == result_type and login["IsSuccessByAPI"] is False
    assert login["KDSVCSessionId"] is None and login["Message"]


def test_login_by_app_secret(k3: K3):
    good = k3.call("LoginByAppSecret", {"parameters": [ACCT, USER, APP_ID, APP_SECRET, 2052]}, service=AUTH, signed=False)
    assert good["LoginResultType"] == 1 and good["KDSVCSessionId"]
    named = k3.call("LoginByAppSecret", {"acctid": ACCT, "username": USER, "appid": APP_ID, "appsecret": APP_SECRET,
                                         "lcid": 2052}, service=AUTH, signed=False)
    assert named["LoginResultType"] == 1
    bad = k3.call("LoginByAppSecret", {"parameters": [ACCT, USER, APP_ID, "x", 2052]}, service=AUTH, signed=False)
    assert bad["LoginResultType"] != 1 and bad["IsSuccessByAPI"] is False


def test_login_by_sign(k3: K3):
    ts = str(int(time.time()))
    sign = hashlib.sha256("".join(sorted([ACCT, USER, APP_ID, APP_SECRET, ts])).encode()).hexdigest()
    good = k3.call("LoginBySign", {"parameters": [ACCT, USER, APP_ID, ts, sign, 2052]}, service=AUTH, signed=False)
    assert good["LoginResultType"] == 1
    bad = k3.call("LoginBySign", {"parameters": [ACCT, USER, APP_ID, ts, "0" * 64, 2052]}, service=AUTH, signed=False)
    assert bad["LoginResultType"] != 1


def test_session_expiry_fault_kills_the_session_for_session_clients(k3: K3, sim):
    k3.login()
    sim.faults.set(FaultPlan(session_expiry=[SessionExpiry(every=2, operation="ExecuteBillQuery")]))
    assert k3.call("ExecuteBillQuery", QUERY) == STOCKS
    assert lost(k3.call("ExecuteBillQuery", QUERY))
    assert sim.calls.list()[-1].fault == "session_expired"
    k3.login()
    assert k3.call("ExecuteBillQuery", QUERY) == STOCKS


def test_session_expiry_fault_is_silent_for_signed_clients(k3: K3, sim):
    k3.query(QUERY["data"])
    sim.faults.set(FaultPlan(session_expiry=[SessionExpiry(every=1)]))
    old = k3.http.cookies["kdservice-sessionid"]
    answer = k3.raw("ExecuteBillQuery", QUERY)
    assert answer.json() == STOCKS and answer.cookies["kdservice-sessionid"] != old


def test_idle_sessions_expire():
    now = [1000.0]
    sim = KingdeeSimulator(session_idle_timeout=60, clock=lambda: now[0])
    with sim.serve() as srv:
        k3 = K3(srv.url)
        k3.login()
        assert k3.call("ExecuteBillQuery", QUERY) == []
        now[0] += 61
        assert lost(k3.call("ExecuteBillQuery", QUERY))


def test_accounts_come_from_the_constructor_and_the_seed(server):
    sim = KingdeeSimulator(accounts=[Account("acct2", users={"u": "p"}, apps={"42_x": "s"})])
    with sim.serve() as srv:
        k3 = K3(srv.url)
        assert k3.call("ValidateUser", {"parameters": ["acct2", "u", "p", 2052]}, service=AUTH)["LoginResultType"] == 1
        assert k3.call("ValidateUser", {"parameters": [ACCT, USER, PASSWORD, 2052]}, service=AUTH)["LoginResultType"] == -1
        sim.seed({"accounts": [{"acct_id": "acct3", "users": {"v": "q"}, "apps": {"7_y": "t"}}]})
        url = k3.url("ExecuteBillQuery")
        headers = sign_headers(url, acct="acct3", user="v", app_id="7_y", app_secret="t")
        assert requests.post(url, json=QUERY, headers=headers, timeout=5).json() == []


def test_data_centre_list_and_logout(k3: K3):
    centres = k3.call("GetDataCenterList", {}, service="Kingdee.BOS.ServiceFacade.ServicesStub.Account.AccountService.")
    assert centres[0]["Id"] == ACCT
    k3.login()
    assert k3.call("LogOut", {}, service=AUTH) is True
    assert lost(k3.call("ExecuteBillQuery", QUERY))


def test_read_only_users_get_msgcode_2_on_writes():
    sim = KingdeeSimulator(accounts=[Account(ACCT, users={"viewer": "p"}, read_only={"viewer"})])
    with sim.serve() as srv:
        k3 = K3(srv.url)
        k3.login("viewer", "p")
        assert k3.call("ExecuteBillQuery", QUERY) == []
        save = k3.save("BD_STOCK", {"Model": {"FNumber": "X", "FName": "x"}})
        assert save["ResponseStatus"]["MsgCode"] == 2 and save["Id"] == ""
        assert k3.op("Submit", "BD_STOCK", {"Numbers": ["X"]})["MsgCode"] == 2
