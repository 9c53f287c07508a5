"""The reference connector pushes with one request when the server de-duplicates on the key."""
from __future__ import annotations

import pytest

from tests.conformance.kit import STANDARD_WORLD, fresh_key, movement
from tests.reference.connector import ReferenceConnector
from tests.reference.simulator import ReferenceErp
from tests.reference.target import settings


@pytest.fixture
def served():
    sim = ReferenceErp()
    sim.seed({"world": STANDARD_WORLD.to_dict()})
    with sim.serve() as server:
        yield sim, server.url


@pytest.mark.parametrize("header", [True, False])
def test_a_push_is_one_post_with_the_key_or_a_lookup_and_a_post(served, header) -> None:
    sim, url = served
    connector = ReferenceConnector(settings(url, idempotency_header=header), name="ref")
    connector.check()
    mv, key = movement("purchase_receipt"), fresh_key()
    before = len(sim.calls.list(path="/api/documents"))
    # When a movement is pushed, then pushed again with its key
    first = connector.push(mv, key)
    again = connector.push(mv, key)
    calls = sim.calls.list(path="/api/documents")[before:]
    # Then: with the header, one POST each (the second answered from the server's key index);
    # without it, a lookup before the first POST and only a lookup the second time
    assert [c.method for c in calls] == (["POST", "POST"] if header else ["GET", "POST", "GET"])
    assert first.created and not again.created and again.document_id == first.document_id
    assert sim.documents_for(key) == [first.document_number]
    connector.close()
