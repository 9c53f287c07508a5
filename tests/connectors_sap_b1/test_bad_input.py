"""Bad input, connector ↔ Service Layer simulator over loopback (issue 4, "Done when: bad input").

Each refusal becomes the error class the client's table promises, with SAP's code and message and,
where SAP names them, the field and line (``[IGN1.ItemCode][line: 1]`` → ``details``); a refused
document posts nothing (ledger unchanged, no document carries our key, ``find`` says None).
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import SecretStr

from canonical import Movement
from connectors.errors import ConfigError, ContractViolation, Rejected, Transient
from connectors.sap_b1 import SapB1Connector, SapB1Settings
from connectors.sap_b1.client import error_details, parse_error
from sandbox.sap_b1 import SapB1Simulator
from tests.conformance.kit import QUOTED_SKU, STANDARD_WORLD, Clock, fresh_key, fresh_reference


@dataclass
class Env:
    sim: SapB1Simulator
    connector: SapB1Connector
    version: str
    url: str


def _connector(url: str, version: str, **extra: object) -> SapB1Connector:
    return SapB1Connector(SapB1Settings(url=url, company_db="SBODEMOUS", username="manager",
                                        password=SecretStr("secret"), odata_version=version,
                                        timezone="Asia/Shanghai", read_timeout=10, **extra))


@pytest.fixture(params=["v1", "v2"])
def env(request) -> Iterator[Env]:
    sim = SapB1Simulator(users={"manager": "secret"}, companies=("SBODEMOUS",), timezone="Asia/Shanghai",
                         clock=Clock())
    sim.seed_world(STANDARD_WORLD)
    with sim.serve() as server, _connector(server.url, request.param) as connector:
        yield Env(sim, connector, request.param, server.url)


def movement(kind: str, *lines: tuple[str, str, str]) -> Movement:
    """``lines`` are (sku, quantity, warehouse); the warehouse is the source or target by kind."""
    side = "from_warehouse" if kind in ("misc_issue", "count_loss", "scrap") else "to_warehouse"
    return Movement.model_validate({
        "reference": fresh_reference(), "kind": kind, "document_date": "2024-03-01",
        "lines": [{"line_no": n, "sku": sku, "quantity": qty, "unit": "PCS", side: wh}
                  for n, (sku, qty, wh) in enumerate(lines, start=1)]})


def push_one_way(env: Env, mode: str, mv: Movement, key: str) -> Exception:
    """The error ``push`` raises, or the one ``push_many`` returns for it."""
    if mode == "push":
        with pytest.raises(Rejected) as refused:
            env.connector.push(mv, key)
        return refused.value
    [result] = env.connector.push_many([(mv, key)])
    assert isinstance(result, Exception), result
    return result


def assert_nothing_posted(env: Env, key: str, balances_before: dict) -> None:
    assert env.sim.ledger.balances() == balances_before
    assert env.sim.documents_for(key) == []
    assert env.connector.find(key) is None


# -- refused documents -------------------------------------------------------------------------

CASES = {
    # name: (movement lines, code, message start, field, line)
    "negative stock on line 2": (("misc_issue", ("TS-001", "1", "WH01"), ("TS-002", "1000", "WH01")),
                                 "-10", "Quantity falls into negative inventory", "IGE1.ItemCode", 2),
    "unknown item": (("misc_receipt", ("NOPE-404", "1", "WH01")),
                     "-2028", "No matching records found (ODBC -2028)", "IGN1.ItemCode", 1),
    "unknown warehouse": (("count_gain", ("TS-001", "1", "WH99")),
                          "-2028", "No matching records found (ODBC -2028)", "IGN1.WhsCode", 1),
}


@pytest.mark.parametrize("mode", ["push", "push_many"])
@pytest.mark.parametrize("case", list(CASES))
def test_a_refused_document_is_rejected_with_sap_code_field_and_line_and_posts_nothing(env, mode, case) -> None:
    (kind, *lines), code, text, field, line = CASES[case]
    # Given a movement SAP will refuse, and the stock as it stands
    mv, key = movement(kind, *lines), fresh_key()
    before = env.sim.ledger.balances()
    # When it is pushed (alone, or through $batch)
    error = push_one_way(env, mode, mv, key)
    # Then it is Rejected with SAP's code and text, naming the field and line SAP named
    assert type(error) is Rejected and error.vendor_code == code
    assert text in error.message and f"[{field}][line: {line}]" in error.message
    assert error.details["field"] == field and error.details["line"] == line
    assert error.details["status"] == 400 and not error.retryable
    # And nothing was posted: not line 1 of a two-line document either
    assert_nothing_posted(env, key, before)


def test_a_refusal_in_a_batch_posts_only_the_others(env) -> None:
    good, bad, also_good = (movement("misc_receipt", ("TS-001", "2", "WH01")),
                            movement("misc_receipt", ("NOPE-404", "1", "WH01")),
                            movement("misc_issue", ("SH-001", "1", "WH01")))
    keys = [fresh_key() for _ in range(3)]
    before = env.sim.ledger.balances()
    results = env.connector.push_many(list(zip((good, bad, also_good), keys)))
    assert [type(r).__name__ for r in results] == ["Receipt", "Rejected", "Receipt"]
    assert results[1].vendor_code == "-2028" and results[1].details["field"] == "IGN1.ItemCode"
    assert env.sim.documents_for(keys[1]) == []
    after = env.sim.ledger.balances()
    changed = {k: after[k] - before.get(k, 0) for k in after if after[k] != before.get(k, 0)}
    assert {(k.sku, k.warehouse): v for k, v in changed.items()} == {("TS-001", "WH01"): 2, ("SH-001", "WH01"): -1}


# -- stale ETag (v2) ---------------------------------------------------------------------------


@pytest.mark.parametrize("env", ["v2"], indirect=True)  # ETags exist on /b1s/v2 only (vendors/sap_b1.md §2.6)
def test_a_stale_etag_is_transient_with_2039_and_writes_nothing(env) -> None:
    client = env.connector.client
    # Given an ETag read before someone else changed the item
    stale = client.get("Items('TS-001')")["@odata.etag"]
    env.sim.company.update("Items", "TS-001", {"ItemName": "changed by another user"})
    # When we PATCH with it, through the client's generic send/translate path
    resp, error = client._send("PATCH", "Items('TS-001')", idempotent=False, body=b'{"ItemName":"ours"}',
                               headers={"Content-Type": "application/json", "If-Match": stale})
    with pytest.raises(Transient) as conflict:
        client._raise_for(resp, error, write=True)
    # Then it is the 412/-2039 mapping the client decided on: Transient, nothing written
    assert conflict.value.vendor_code == "-2039" and conflict.value.details["status"] == 412
    assert "Another user or another operation modified data" in conflict.value.message
    assert "nothing was written" in conflict.value.message and conflict.value.retryable
    assert client.get("Items('TS-001')")["ItemName"] == "changed by another user"
    # And sending again with the current ETag (what a retry does: re-read, then write) succeeds
    fresh = client.get("Items('TS-001')")["@odata.etag"]
    resp, error = client._send("PATCH", "Items('TS-001')", idempotent=False, body=b'{"ItemName":"ours"}',
                               headers={"Content-Type": "application/json", "If-Match": fresh})
    client._raise_for(resp, error, write=True)
    assert resp.status == 204 and client.get("Items('TS-001')")["ItemName"] == "ours"


# -- malformed $filter -------------------------------------------------------------------------


@pytest.mark.parametrize("crafted", [
    "ItemCode eq 'TS-001",                     # unterminated literal
    "ItemCode eq 'a') or (ItemCode ne 'a'",   # what an unquoted "a') or (ItemCode ne 'a" would make
    "ItemCode eq 'a' and ItemCode add 1",     # arithmetic is not supported
    "ItemCode eq",                            # no operand
])
def test_a_malformed_filter_is_a_contract_violation_with_sap_code(env, crafted) -> None:
    with pytest.raises(ContractViolation) as refused:
        list(env.connector.client.query("Items", filter=crafted, select=["ItemCode"]))
    assert refused.value.vendor_code == "201" and "Not supported query string" in refused.value.message
    assert refused.value.details["status"] == 400 and refused.value.details["path"].endswith("/Items")


def test_a_filter_on_a_property_the_company_lacks_is_a_config_error(env) -> None:
    with pytest.raises(ConfigError) as refused:
        list(env.connector.client.query("Items", filter="U_HubKey eq 'x'"))
    assert refused.value.vendor_code == "-1000" and refused.value.details["property"] == "U_HubKey"


def test_a_reference_field_the_company_lacks_pauses_the_connection_and_posts_nothing(env) -> None:
    # Given a connection configured to keep keys in a user field this company does not have
    before = env.sim.ledger.balances()
    key = fresh_key()
    with _connector(env.url, env.version, reference_field="U_HubKey") as misconfigured:
        # When a movement is pushed, alone and in bulk
        with pytest.raises(ConfigError) as paused:
            misconfigured.push(movement("misc_receipt", ("TS-001", "1", "WH01")), key)
        [bulk] = misconfigured.push_many([(movement("misc_receipt", ("TS-001", "1", "WH01")), key)])
    # Then the connection pauses (ConfigError names the property) and nothing is posted
    assert paused.value.details["property"] == "U_HubKey" and paused.value.action == "pause"
    assert isinstance(bulk, ConfigError)
    assert_nothing_posted(env, key, before)


# -- values with quotes never make a malformed filter ------------------------------------------

QUOTY = st.text(alphabet=st.one_of(st.sampled_from("'''\"() =&%+#?/\\,;eqorandnot"), st.characters(codec="utf-8")),
                min_size=1, max_size=11).filter(lambda k: k == k.strip())


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(keys=st.lists(QUOTY, min_size=1, max_size=25, unique=True))
def test_keys_with_quotes_are_looked_up_without_a_malformed_filter(env, keys) -> None:
    refused_before = env.sim.calls.count(status=400)
    assert env.connector.find(keys[0]) is None
    assert env.connector._find_in("InventoryGenEntries", keys) == {}  # one "or" filter per 20 keys
    assert env.sim.calls.count(status=400) == refused_before


def test_a_quoted_key_and_sku_push_once_and_read_back(env) -> None:
    key = "Q'1' or '1"
    mv = movement("misc_receipt", (QUOTED_SKU, "2", "WH01"))
    first = env.connector.push(mv, key)
    again = env.connector.push(mv, key)
    assert first.created and not again.created and again.document_id == first.document_id
    assert env.sim.documents_for(key) == [first.document_number]
    assert env.connector.find(key) == again
    # Reading movements looks up the quoted item code's unit by $filter too
    read = [m for p in env.connector.read("movements") for m in p.records if m.reference == mv.reference]
    assert [(line.sku, line.quantity) for m in read for line in m.lines] == [(QUOTED_SKU, 2)]
    assert env.sim.calls.count(status=400) == 0


def test_error_details_read_the_places_sap_names() -> None:
    def details(message: str) -> dict:
        return error_details(parse_error({"error": {"code": "-10", "message": message}}))

    assert details("Quantity falls into negative inventory  [IGE1.ItemCode][line: 3]") == {
        "field": "IGE1.ItemCode", "line": 3}
    assert details("Item number is missing; specify an item number [DocumentLines.ItemCode][line: 4]") == {
        "field": "DocumentLines.ItemCode", "line": 4}
    assert details("Invalid BP code [OPDN.CardCode] , 'P2'") == {"field": "OPDN.CardCode"}
    assert details("Not supported query string  [unterminated string literal at 12]") == {}
    assert details("Property 'U_HubKey' of 'Document' is invalid") == {"property": "U_HubKey"}
