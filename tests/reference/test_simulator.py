"""The reference ERP's Idempotency-Key: a repeated key answers the document it created, once."""
from __future__ import annotations

import threading
from decimal import Decimal
from typing import Any

import pytest
from werkzeug.test import Client

from tests.conformance.kit import STANDARD_WORLD, movement
from tests.reference import mapping
from tests.reference.simulator import PASSWORD, USER, ReferenceErp


@pytest.fixture
def erp() -> ReferenceErp:
    sim = ReferenceErp()
    sim.seed({"world": STANDARD_WORLD.to_dict()})
    return sim


def _client(sim: ReferenceErp) -> tuple[Client, dict[str, str]]:
    client = Client(sim)
    token = client.post("/api/login", json={"user": USER, "password": PASSWORD}).get_json()["session"]
    return client, {"X-Session": token}


def _post(sim: ReferenceErp, body: dict[str, Any], key: str | None) -> Any:
    client, headers = _client(sim)
    if key is not None:
        headers["Idempotency-Key"] = key
    return client.post("/api/documents", json=body, headers=headers)


def _document(key: str, quantity: str = "5") -> dict[str, Any]:
    return mapping.movement_to_document(movement("count_gain", lines=[("TS-001", quantity)]), key)


def test_a_repeated_key_answers_the_first_document_without_posting_again(erp) -> None:
    # Given a document created under an Idempotency-Key
    body = _document("K-1")
    warehouse = body["lines"][0]["to_wh"]
    before = erp.ledger.total("TS-001", warehouse)
    first = _post(erp, body, "K-1")
    # When the same request is sent again with the same key (its answer was lost)
    again = _post(erp, body, "K-1")
    # Then it answers the same document, says it replayed, and stock moved once
    assert first.status_code == again.status_code == 200
    assert again.get_json()["id"] == first.get_json()["id"]
    assert again.get_json()["number"] == first.get_json()["number"]
    assert again.headers.get("Idempotent-Replayed") == "true"
    assert first.headers.get("Idempotent-Replayed") is None
    assert erp.documents_for("K-1") == [first.get_json()["number"]]
    assert erp.ledger.total("TS-001", warehouse) == before + Decimal(5)


def test_without_the_header_a_repeated_ext_key_posts_again(erp) -> None:
    # Given a document created without an Idempotency-Key
    body = _document("K-2")
    _post(erp, body, None)
    # When it is sent again, still without the header
    _post(erp, body, None)
    # Then the server did not de-duplicate it (the client must look before it sends)
    assert len(erp.documents_for("K-2")) == 2


def test_a_key_reused_with_another_document_is_refused(erp) -> None:
    # Given a key that created a document
    _post(erp, _document("K-3", "5"), "K-3")
    # When the key comes with a different document
    refused = _post(erp, _document("K-3", "6"), "K-3")
    # Then it is refused with a vendor code and nothing more is posted
    assert refused.status_code == 400 and refused.get_json()["code"] == "E_IDEMPOTENCY"
    assert len(erp.documents_for("K-3")) == 1


def test_a_refused_request_is_not_remembered(erp) -> None:
    # Given an issue refused for lack of stock
    on_hand = erp.ledger.total("TS-001", "WH01")
    issue = movement("misc_issue", lines=[("TS-001", str(on_hand + 10))])
    body = mapping.movement_to_document(issue, "K-4")
    refused = _post(erp, body, "K-4")
    assert refused.get_json()["code"] == "E_STOCK_NEGATIVE"
    # When the stock is fixed and the same request is sent again with the same key
    erp.ledger.seed_balances({("TS-001", "WH01", None, None): on_hand + 100})
    posted = _post(erp, body, "K-4")
    # Then it is posted this time, once
    assert posted.get_json()["ok"] is True and posted.headers.get("Idempotent-Replayed") is None
    assert erp.documents_for("K-4") == [posted.get_json()["number"]]


def test_concurrent_requests_with_one_key_create_one_document(erp) -> None:
    # Given eight clients sending the same document with the same key at once
    body = _document("K-5")
    answers: list[Any] = []
    start = threading.Barrier(8)

    def send() -> None:
        start.wait()
        answers.append(_post(erp, body, "K-5").get_json())

    threads = [threading.Thread(target=send) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # Then one document exists and every answer names it
    assert len(erp.documents_for("K-5")) == 1
    assert {a["number"] for a in answers} == set(erp.documents_for("K-5"))


def test_an_overlong_key_is_refused(erp) -> None:
    refused = _post(erp, _document("K-6"), "k" * 256)
    assert refused.status_code == 400 and refused.get_json()["code"] == "E_INVALID"
    assert erp.documents_for("K-6") == []
