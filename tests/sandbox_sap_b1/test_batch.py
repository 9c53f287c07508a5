"""$batch: atomic changesets, Content-ID references, independent parts, both dialects."""
from __future__ import annotations

import json
import re
from decimal import Decimal

CRLF = "\r\n"


def http_part(method, url, body=None, content_id=None, headers=()):
    mime = ["Content-Type: application/http", "Content-Transfer-Encoding: binary"]
    if content_id is not None:
        mime.append(f"Content-ID: {content_id}")
    inner = [f"{method} {url} HTTP/1.1", *headers]
    if body is not None:
        inner.append("Content-Type: application/json")
    return CRLF.join(mime) + CRLF + CRLF + CRLF.join(inner) + CRLF + CRLF + (json.dumps(body) if body is not None else "")


def changeset(parts, boundary="changeset_77"):
    inner = "".join(f"--{boundary}{CRLF}{p}{CRLF}" for p in parts) + f"--{boundary}--"
    return f"Content-Type: multipart/mixed;boundary={boundary}{CRLF}{CRLF}{inner}"


def batch(http, root, parts, boundary="batch_42", **headers):
    body = "".join(f"--{boundary}{CRLF}{p}{CRLF}" for p in parts) + f"--{boundary}--{CRLF}"
    return http.post(f"{root}/$batch", data=body.encode(), timeout=5,
                     headers={"Content-Type": f"multipart/mixed;boundary={boundary}", **headers})


def statuses(answer):
    return [int(s) for s in re.findall(r"^HTTP/1\.1 (\d{3}) ", answer.text, flags=re.M)]


def bodies(answer):
    return [json.loads(m) for m in re.findall(r"^(\{.*\})\r?$", answer.text, flags=re.M)]


def receipt(item, qty, ref=None):
    return {"Reference2": ref, "DocumentLines": [{"ItemCode": item, "Quantity": qty, "WarehouseCode": "01"}]}


def test_a_changeset_commits_together_and_references_its_content_ids(sim, connect, dialect):
    http, root = connect(dialect)
    prefix = f"/b1s/{dialect}"
    answer = batch(http, root, [changeset([
        http_part("POST", f"{prefix}/InventoryGenEntries", receipt("A030", 5, "b-1"), content_id="1"),
        http_part("PATCH", "$1", {"Comments": "patched by reference"}, content_id="2"),
        http_part("POST", f"{prefix}/InventoryGenExits", receipt("A030", 5, "b-2"), content_id="3"),
    ])])
    assert answer.status_code == (202 if dialect == "v1" else 200)
    assert answer.headers["Content-Type"].startswith("multipart/mixed;boundary=batchresponse_")
    assert "changesetresponse_" in answer.text and statuses(answer) == [201, 204, 201]
    assert re.search(r"^Location: .*/InventoryGenEntries\(1\)\r$", answer.text, flags=re.M)
    assert sim.ledger.balance("A030", "01") == 0 and sim.documents_for("b-1") == ["1"]
    assert sim.company.record("InventoryGenEntries", 1)["Comments"] == "patched by reference"


def test_a_failing_changeset_rolls_back_everything(sim, connect, dialect):
    http, root = connect(dialect)
    before = sim.ledger.balances()
    # Given a changeset whose third request would drive stock negative
    answer = batch(http, root, [changeset([
        http_part("POST", "InventoryGenEntries", receipt("A031", 2, "rb-1"), content_id="1"),
        http_part("POST", "InventoryGenExits", receipt("A000", 3, "rb-2"), content_id="2"),
        http_part("POST", "InventoryGenExits", receipt("A031", 9, "rb-3"), content_id="3"),
    ]), http_part("GET", "Items('A031')")])
    # Then one error part answers the changeset, execution stops, and nothing was posted or numbered
    assert statuses(answer) == [400]
    assert "changesetresponse_" not in answer.text
    [error] = bodies(answer)
    message = error["error"]["message"]
    assert (message if dialect == "v2" else message["value"]).startswith("Quantity falls into negative inventory")
    assert sim.ledger.balances() == before and len(sim.ledger.history()) == 1
    assert sim.documents_for("rb-1") == [] and sim.documents_for("rb-2") == []
    again = http.post(f"{root}/InventoryGenEntries", json=receipt("A031", 1), timeout=5).json()
    assert (again["DocEntry"], again["DocNum"]) == (1, 1)


def test_requests_outside_changesets_stand_alone(sim, connect):
    http, root = connect("v2")
    answer = batch(http, root, [
        http_part("POST", "/b1s/v2/InventoryGenEntries", receipt("A032", 1, "solo-1")),
        http_part("GET", "/b1s/v2/Items('A032')?$select=ItemCode,QuantityOnStock"),
        http_part("POST", "/b1s/v2/InventoryGenExits", receipt("A032", 7, "solo-2")),
        http_part("GET", "/b1s/v2/Items('A000')"),
    ])
    # The first two succeed, the third fails on its own, and the batch stops there
    assert statuses(answer) == [201, 200, 400]
    assert bodies(answer)[1]["QuantityOnStock"] == 1.0
    assert sim.documents_for("solo-1") == ["1"] and sim.ledger.balance("A032", "01") == Decimal(1)
    # With odata.continue-on-error the later parts run too
    answer = batch(http, root, [http_part("POST", "InventoryGenExits", receipt("A032", 7)),
                                http_part("GET", "Items('A000')")], Prefer="odata.continue-on-error")
    assert statuses(answer) == [400, 200]


def test_v2_changesets_need_content_ids_v1_does_not(sim, connect):
    http, root = connect("v2")
    answer = batch(http, root, [changeset([http_part("POST", "InventoryGenEntries", receipt("A033", 1))])])
    assert statuses(answer) == [400]
    assert bodies(answer)[0] == {"error": {"code": "244",
                                           "message": "Content ID should be specified in each change set request."}}
    http, root = connect("v1")
    answer = batch(http, root, [changeset([http_part("POST", "InventoryGenEntries", receipt("A033", 1))])])
    assert statuses(answer) == [201] and sim.ledger.balance("A033", "01") == 1


def test_duplicate_content_ids_and_gets_inside_changesets_fail(connect):
    http, root = connect("v2")
    twice = batch(http, root, [changeset([
        http_part("POST", "InventoryGenEntries", receipt("A034", 1), content_id="1"),
        http_part("POST", "InventoryGenEntries", receipt("A034", 1), content_id="1")])])
    assert statuses(twice) == [400] and bodies(twice)[0]["error"]["code"] == "-1116"
    read = batch(http, root, [changeset([http_part("GET", "Items('A000')", content_id="1")])])
    assert statuses(read) == [400]


def test_malformed_bodies_are_refused(connect, dialect):
    http, root = connect(dialect)
    bare_lf = "--batch_1\nContent-Type: application/http\n\nGET Items HTTP/1.1\n\n\n--batch_1--\n"
    for body in (bare_lf, "--batch_1\r\nContent-Type: application/http\r\n\r\nGET Items HTTP/1.1\r\n\r\n"):
        answer = http.post(f"{root}/$batch", data=body, timeout=5,
                           headers={"Content-Type": "multipart/mixed;boundary=batch_1"})
        assert answer.status_code == 400
        error = answer.json()["error"]
        assert str(error["code"]) == "-1000"
    no_blank = batch(http, root, [CRLF.join(["Content-Type: application/http", "", "POST InventoryGenEntries HTTP/1.1",
                                             "Content-Type: application/json", json.dumps(receipt("A000", 1))])])
    assert no_blank.status_code == 400
    message = no_blank.json()["error"]["message"]
    text = message if dialect == "v2" else message["value"]
    assert text == "Incomplete request, there should be two '\\r\\n' between sub-request header and content!"


def test_if_match_is_not_checked_inside_a_batch(connect):
    http, root = connect("v2")
    stale = 'W/"0000000000000000000000000000000000000000"'
    answer = batch(http, root, [changeset([http_part("PATCH", "Items('A000')", {"ItemName": "x"}, content_id="1",
                                                     headers=[f"If-Match: {stale}"])])])
    assert statuses(answer) == [204]
