"""ServiceLayerClient on the wire: strict ``responses`` matching of URLs (encoded ``$filter``),
headers, bodies and cookies; the error table; one re-login; paging in both dialects; ``$batch``."""
from __future__ import annotations

import json

import pytest
import requests
import responses
from responses import matchers

from connectors.errors import Ambiguous, AuthError, ConfigError, ContractViolation, RateLimited, Rejected, Transient
from connectors.sap_b1.client import BatchOp, parse_error, service_root
from tests.connectors_sap_b1.conftest import SESSION, SESSION2, add_login, cookie, make_client, root, \
    sent_headers

ITEMS = {"@odata.context": f"{root()}/$metadata#Items", "value": [{"ItemCode": "A1", "QuantityOnStock": 2.5}]}


def get_headers(session: str = SESSION, **extra: str) -> list:
    return [matchers.header_matcher(sent_headers(Cookie=cookie(session), **extra), strict_match=True)]


# ------------------------------------------------------------------------------------------------
# Sessions


def test_login_then_query_sends_cookies_page_size_and_an_encoded_filter(mocked) -> None:
    # Given a Service Layer that answers Login with the exact SAP cookie form
    add_login(mocked)
    url = (f"{root()}/Items?%24filter=ItemCode+eq+%27O%27%27Brien%27&%24select=ItemCode%2CItemName"
           "&%24orderby=ItemCode+asc")
    mocked.add(responses.GET, url, json=ITEMS, match=[
        *get_headers(Prefer="odata.maxpagesize=50"), matchers.query_string_matcher(url.split("?", 1)[1])])
    client = make_client()
    # When one page is asked for
    page = client.query_page("Items", filter="ItemCode eq 'O''Brien'", select=["ItemCode", "ItemName"],
                             orderby="ItemCode asc", page_size=50)
    # Then both cookies went back, numbers came back exact, and there is no next page
    assert page.rows[0]["QuantityOnStock"] == pytest.approx(2.5) and str(page.rows[0]["QuantityOnStock"]) == "2.5"
    assert page.next_link is None and page.next_skip is None
    assert mocked.calls[1].request.url == url
    assert client.logins == 1 and client.server_version == "1000280"


def test_login_body_is_taken_when_no_cookie_comes_back(mocked) -> None:
    login = {"CompanyDB": "SBODEMOUS", "UserName": "manager", "Password": "Pa55-w0rd-sap"}
    mocked.add(responses.POST, f"{root()}/Login", json={"SessionId": "from-body", "SessionTimeout": 30},
               match=[matchers.json_params_matcher(login, strict_match=True)])
    mocked.add(responses.GET, f"{root()}/Warehouses", json={"value": []},
               match=[matchers.header_matcher({"Cookie": "B1SESSION=from-body"})])
    make_client().query_page("Warehouses")


def test_bad_credentials_are_one_login_and_an_auth_error(mocked) -> None:
    add_login(mocked, status=401, body={"error": {"code": "-304", "message": "Fail to get DB Credentials from SLD"}})
    client = make_client()
    with pytest.raises(AuthError) as refused:
        client.query_page("Items")
    assert refused.value.vendor_code == "-304" and not refused.value.retryable
    assert len(mocked.calls) == 1
    assert "Pa55-w0rd-sap" not in str(refused.value)


def test_expired_session_on_a_read_is_one_relogin_and_one_retry(mocked) -> None:
    # Given a session that the server has timed out (v1 guide form of the 401)
    add_login(mocked, session=SESSION)
    mocked.add(responses.GET, f"{root()}/Items('A1')", status=401, match=get_headers(SESSION), json={
        "error": {"code": 301, "message": {"lang": "en-us", "value": "Invalid session or session already timeout."}}})
    add_login(mocked, session=SESSION2)
    mocked.add(responses.GET, f"{root()}/Items('A1')", json={"ItemCode": "A1"}, match=get_headers(SESSION2))
    client = make_client()
    # When the item is read
    item = client.get("Items('A1')")
    # Then the client logged in once more and sent the read again with the new session
    assert item == {"ItemCode": "A1"}
    assert client.logins == 2
    assert [c.request.method for c in mocked.calls] == ["POST", "GET", "POST", "GET"]


def test_a_second_session_error_is_an_auth_error(mocked) -> None:
    add_login(mocked, session=SESSION)
    expired = {"error": {"code": "301", "message": "Invalid session or session already timeout."}}
    mocked.add(responses.GET, f"{root()}/Items", status=401, json=expired, match=get_headers(SESSION))
    add_login(mocked, session=SESSION2)
    mocked.add(responses.GET, f"{root()}/Items", status=401, json=expired, match=get_headers(SESSION2))
    client = make_client()
    with pytest.raises(AuthError) as refused:
        client.query_page("Items")
    assert refused.value.vendor_code == "301" and client.logins == 2 and len(mocked.calls) == 4


def test_session_error_on_a_write_proves_it_was_not_executed_so_it_is_sent_again(mocked) -> None:
    add_login(mocked, session=SESSION)
    body = {"DocDate": "2024-05-01", "DocumentLines": [{"ItemCode": "A1", "Quantity": 2}]}
    raw = json.dumps(body, separators=(",", ":"))
    mocked.add(responses.POST, f"{root()}/InventoryGenEntries", status=401, match=[matchers.body_matcher(raw)],
               json={"error": {"code": "301", "message": "Invalid session or session already timeout."}})
    add_login(mocked, session=SESSION2)
    mocked.add(responses.POST, f"{root()}/InventoryGenEntries", status=201, json={"DocEntry": 7, "DocNum": 3},
               match=[matchers.body_matcher(raw), *get_headers(SESSION2, **{
                   "Content-Type": "application/json", "Content-Length": str(len(raw))})])
    created = make_client().create("InventoryGenEntries", body)
    assert created == {"DocEntry": 7, "DocNum": 3}


def test_a_bare_401_on_a_write_is_never_resent(mocked) -> None:
    # Given a 401 that is not the Service Layer's session answer (a proxy's page)
    add_login(mocked)
    mocked.add(responses.POST, f"{root()}/InventoryGenEntries", status=401, body="<html>Unauthorized</html>",
               content_type="text/html")
    client = make_client()
    # Then it is an AuthError, with no re-login and no second POST
    with pytest.raises(AuthError):
        client.create("InventoryGenEntries", {"DocumentLines": []})
    assert client.logins == 1 and len(mocked.calls) == 2


def test_logout_posts_with_the_session(mocked) -> None:
    add_login(mocked)
    mocked.add(responses.GET, f"{root()}/Warehouses", json={"value": []})
    mocked.add(responses.POST, f"{root()}/Logout", status=204, match=get_headers(**{"Content-Length": "0"}))
    client = make_client()
    client.query_page("Warehouses")
    client.close()


# ------------------------------------------------------------------------------------------------
# Error table

V1_NEGATIVE = {"error": {"code": -10, "message": {"lang": "en-us", "value":
               "Quantity falls into negative inventory  [IGE1.ItemCode][line: 1]"}}}
V2_NEGATIVE = {"error": {"code": "-10", "message": "Quantity falls into negative inventory  [IGE1.ItemCode][line: 1]"}}
NOT_FOUND = {"error": {"code": "-2028", "message": "No matching records found (ODBC -2028)"}}
CONFLICT = {"error": {"code": "-2039", "message": "Another user or another operation modified data; to continue, "
                                                 "open the window again (ODBC -2039)"}}


@pytest.mark.parametrize("status, body, error, code", [
    (400, V1_NEGATIVE, Rejected, "-10"),
    (400, V2_NEGATIVE, Rejected, "-10"),
    (404, NOT_FOUND, Rejected, "-2028"),  # a referenced code does not exist
    (400, {"error": {"code": "-5002", "message": "Enter valid code  [IGE1.OcrCode][line: 16]"}}, Rejected, "-5002"),
    (412, CONFLICT, Transient, "-2039"),
    (200, V2_NEGATIVE, Rejected, "-10"),  # a 2xx carrying an error envelope
    (404, None, ConfigError, None),  # no envelope: wrong URL or entity name
    (409, None, ContractViolation, None),
    (429, None, RateLimited, None),
    (502, None, Ambiguous, None),  # a gateway may have forwarded the write
    (503, None, Transient, None),
])
def test_write_errors_are_translated(mocked, status, body, error, code) -> None:
    add_login(mocked)
    if body is None:
        mocked.add(responses.POST, f"{root()}/InventoryGenExits", status=status, body="x", content_type="text/plain")
    else:
        mocked.add(responses.POST, f"{root()}/InventoryGenExits", status=status, json=body)
    with pytest.raises(error) as failed:
        make_client().create("InventoryGenExits", {"DocumentLines": []})
    assert type(failed.value) is error
    assert failed.value.vendor_code == code
    if code == "-10":
        assert "negative inventory" in failed.value.message


@pytest.mark.parametrize("status, body, error", [
    (400, {"error": {"code": "201", "message": "Not supported query string"}}, ContractViolation),
    (404, None, ConfigError),
    (500, None, Transient),
    (503, None, Transient),
    (412, CONFLICT, Transient),
])
def test_read_errors_are_translated(mocked, status, body, error) -> None:
    add_login(mocked)
    kwargs = {"json": body} if body is not None else {"body": "<html>Proxy Error</html>", "content_type": "text/html"}
    mocked.add(responses.GET, f"{root()}/Items", status=status, **kwargs)
    with pytest.raises(error) as failed:
        make_client().query_page("Items")
    assert type(failed.value) is error


def test_not_found_on_a_lookup_is_none(mocked) -> None:
    add_login(mocked)
    mocked.add(responses.GET, f"{root()}/Items('NOPE')", status=404, json=NOT_FOUND)
    assert make_client().get("Items('NOPE')") is None


def test_lost_answer_to_a_write_is_ambiguous_and_not_resent(mocked) -> None:
    add_login(mocked)
    mocked.add(responses.POST, f"{root()}/InventoryGenEntries",
               body=requests.exceptions.ConnectionError("Connection aborted: RemoteDisconnected"))
    client = make_client()
    with pytest.raises(Ambiguous):
        client.create("InventoryGenEntries", {"DocumentLines": []})
    assert len(mocked.calls) == 2


def test_both_error_envelopes_parse() -> None:
    assert parse_error(V1_NEGATIVE).code == "-10"
    assert parse_error(V1_NEGATIVE).message.startswith("Quantity falls")
    assert parse_error(V2_NEGATIVE) == parse_error({"error": {"code": -10, "message": V2_NEGATIVE["error"]["message"]}})
    assert parse_error({"error": {"code": "", "message": "", "details": [{"code": "", "message": "inner"}]}}).message \
        == "inner"
    assert parse_error({"value": []}) is None and parse_error("x") is None


# ------------------------------------------------------------------------------------------------
# Paging


@pytest.mark.parametrize("version, link_key, link", [
    ("v1", "odata.nextLink", "Items?$select=ItemCode&$skip=2"),  # relative, as in the guide §4.4
    ("v2", "@odata.nextLink", "/b1s/v2/Items?$skip=2"),  # absolute path, dropping our options
])
def test_paging_follows_next_links_and_keeps_our_options(mocked, version, link_key, link) -> None:
    add_login(mocked, version=version)
    base = f"{root(version)}/Items?%24select=ItemCode&%24orderby=ItemCode+asc"
    mocked.add(responses.GET, base, json={"value": [{"ItemCode": "A"}, {"ItemCode": "B"}], link_key: link},
               match=[matchers.query_string_matcher(base.split("?")[1]),
                      *get_headers(Prefer="odata.maxpagesize=2")])
    mocked.add(responses.GET, base + "&%24skip=2", json={"value": [{"ItemCode": "C"}]},
               match=[matchers.query_string_matcher(base.split("?")[1] + "&%24skip=2"),
                      *get_headers(Prefer="odata.maxpagesize=2")])
    pages = list(make_client(version).query("Items", select=["ItemCode"], orderby="ItemCode asc", page_size=2))
    assert [[r["ItemCode"] for r in p.rows] for p in pages] == [["A", "B"], ["C"]]
    assert pages[0].next_skip == 2 and pages[1].next_link is None


def test_a_next_link_that_does_not_move_forward_stops_the_read(mocked) -> None:
    add_login(mocked)
    mocked.add(responses.GET, f"{root()}/Items", json={"value": [{"ItemCode": "A"}], "@odata.nextLink": "Items?$skip=0"})
    with pytest.raises(ContractViolation):
        list(make_client().query("Items"))


def test_a_next_link_to_another_server_is_refused(mocked) -> None:
    add_login(mocked)
    mocked.add(responses.GET, f"{root()}/Items",
               json={"value": [{"ItemCode": "A"}], "@odata.nextLink": "https://evil.example/b1s/v2/Items?x=1"})
    with pytest.raises(ContractViolation):
        list(make_client().query("Items"))


def test_service_root() -> None:
    assert service_root("https://h:50000/", "v1") == "https://h:50000/b1s/v1"
    assert service_root("https://h:50000/b1s/v2", "v2") == "https://h:50000/b1s/v2"
    with pytest.raises(ConfigError):
        service_root("https://h:50000/b1s/v1", "v2")


# ------------------------------------------------------------------------------------------------
# $batch

BATCH_BODY = (
    "--batch_1\r\n"
    "Content-Type: multipart/mixed;boundary=changeset_2\r\n"
    "\r\n"
    "--changeset_2\r\n"
    "Content-Type: application/http\r\n"
    "Content-Transfer-Encoding: binary\r\n"
    "Content-ID: 1\r\n"
    "\r\n"
    "POST /b1s/v2/InventoryGenEntries HTTP/1.1\r\n"
    "Content-Type: application/json\r\n"
    "\r\n"
    '{"Reference2":"K1","DocumentLines":[{"ItemCode":"A1","Quantity":1.5}]}\r\n'
    "--changeset_2--\r\n"
    "--batch_1\r\n"
    "Content-Type: multipart/mixed;boundary=changeset_3\r\n"
    "\r\n"
    "--changeset_3\r\n"
    "Content-Type: application/http\r\n"
    "Content-Transfer-Encoding: binary\r\n"
    "Content-ID: 2\r\n"
    "\r\n"
    "POST /b1s/v2/InventoryGenExits HTTP/1.1\r\n"
    "Content-Type: application/json\r\n"
    "\r\n"
    '{"Reference2":"K2","DocumentLines":[{"ItemCode":"A1","Quantity":900}]}\r\n'
    "--changeset_3--\r\n"
    "--batch_1--\r\n"
)


def _ops():
    from decimal import Decimal
    return [BatchOp("InventoryGenEntries", {"Reference2": "K1", "DocumentLines": [
                {"ItemCode": "A1", "Quantity": Decimal("1.5")}]}),
            BatchOp("InventoryGenExits", {"Reference2": "K2", "DocumentLines": [
                {"ItemCode": "A1", "Quantity": Decimal("900")}]})]


def test_batch_request_has_one_changeset_per_document_with_crlf(mocked) -> None:
    content_type, body = make_client().build_batch(_ops())
    assert content_type == "multipart/mixed;boundary=batch_1"
    assert body.decode() == BATCH_BODY


def _changeset_ok(boundary: str, entry: int, status: str = "201 Created") -> str:
    return (f"--batchresponse_x\r\nContent-Type: multipart/mixed;boundary={boundary}\r\n\r\n"
            f"--{boundary}\r\nContent-Type: application/http\r\nContent-Transfer-Encoding: binary\r\n"
            f"Content-ID: {entry}\r\n\r\nHTTP/1.1 {status}\r\nContent-Type: application/json;odata.metadata=minimal\r\n"
            f"Location: {root()}/InventoryGenEntries({entry})\r\n\r\n"
            f'{{"DocEntry": {entry}, "DocNum": {entry + 100}, "DocumentStatus": "bost_Open"}}\r\n'
            f"--{boundary}--\r\n")


def _error_part(code: str, message: str, status: str = "400 Bad Request") -> str:
    return ("--batchresponse_x\r\nContent-Type: application/http\r\nContent-Transfer-Encoding: binary\r\n\r\n"
            f"HTTP/1.1 {status}\r\nContent-Type: application/json;odata.metadata=minimal\r\n\r\n"
            + json.dumps({"error": {"code": code, "message": message}}) + "\r\n")


@pytest.mark.parametrize("version, status", [("v2", 200), ("v1", 202)])
def test_batch_partial_failure_is_read_per_changeset(mocked, version, status) -> None:
    # Given four documents, the third refused for negative stock: the server stops there
    add_login(mocked, version=version)
    answer = (_changeset_ok("changesetresponse_a", 11) + _changeset_ok("changesetresponse_b", 12)
              + _error_part("-10", "Quantity falls into negative inventory  [IGE1.ItemCode][line: 1]")
              + "--batchresponse_x--\r\n")
    mocked.add(responses.POST, f"{root(version)}/$batch", status=status, body=answer,
               content_type="multipart/mixed;boundary=batchresponse_x",
               match=[matchers.header_matcher({"Content-Type": "multipart/mixed;boundary=batch_1",
                                               "Cookie": cookie()})])
    ops = _ops() * 2
    results = make_client(version).batch(ops)
    # Then the first two are created, the third failed with the vendor code, the fourth was not executed
    assert [r.status for r in results] == ["created", "created", "failed", "not_executed"]
    assert results[0].entity["DocEntry"] == 11 and results[1].entity["DocNum"] == 112
    assert isinstance(results[2].error, Rejected) and results[2].error.vendor_code == "-10"
    sent = mocked.calls[1].request.body.decode()
    assert sent.count("--changeset_") == 8 and f"POST /b1s/{version}/InventoryGenExits HTTP/1.1" in sent


def test_batch_answer_with_lf_line_ends_is_read_too(mocked) -> None:
    add_login(mocked)
    answer = (_changeset_ok("cs1", 5) + "--batchresponse_x--\r\n").replace("\r\n", "\n")
    mocked.add(responses.POST, f"{root()}/$batch", body=answer, content_type="multipart/mixed; boundary=batchresponse_x")
    results = make_client().batch(_ops()[:1])
    assert results[0].status == "created" and results[0].entity["DocEntry"] == 5


def test_batch_missing_answers_without_a_failure_are_unknown(mocked) -> None:
    add_login(mocked)
    mocked.add(responses.POST, f"{root()}/$batch", body=_changeset_ok("cs1", 5) + "--batchresponse_x--\r\n",
               content_type="multipart/mixed;boundary=batchresponse_x")
    results = make_client().batch(_ops())
    assert [r.status for r in results] == ["created", "unknown"]
    assert isinstance(results[1].error, Ambiguous)


def test_batch_whose_answer_is_lost_is_ambiguous(mocked) -> None:
    add_login(mocked)
    mocked.add(responses.POST, f"{root()}/$batch", body=requests.exceptions.ReadTimeout("read timed out"))
    with pytest.raises(Ambiguous):
        make_client().batch(_ops())


def test_batch_refused_whole_is_translated(mocked) -> None:
    add_login(mocked)
    mocked.add(responses.POST, f"{root()}/$batch", status=400,
               json={"error": {"code": "-1000", "message": "Incomplete Batch Request Body!"}})
    with pytest.raises(Rejected) as refused:
        make_client().batch(_ops())
    assert refused.value.vendor_code == "-1000"
