"""The connector against the live simulator: field resolution, balances both ways, batches, webhooks end to end."""
from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import pytest
from pydantic import SecretStr

from canonical import Item, MovementKind, Warehouse
from connectors.base import Entity, Receipt, WebhookRequest
from connectors.errors import ConfigError, Rejected, WebhookRefused
from connectors.jiandaoyun import JiandaoyunConnector
from sandbox.jiandaoyun import JiandaoyunSimulator
from tests.conformance.kit import STANDARD_WORLD, drain, fresh_key, movement
from tests.conformance.targets.jiandaoyun import settings as target_settings

HOOK_SECRET = "hook-secret-for-tests"


@pytest.fixture
def sim() -> JiandaoyunSimulator:
    simulator = JiandaoyunSimulator(webhook_backoff=(0.02,))
    simulator.seed_world(STANDARD_WORLD)
    return simulator


@pytest.fixture
def url(sim) -> Iterator[str]:
    with sim.serve() as server:
        yield server.url


def connect(url: str, **overrides) -> JiandaoyunConnector:
    return JiandaoyunConnector(target_settings(url, connect_timeout=2, read_timeout=5, **overrides))


def _on_hand(balances) -> dict[tuple[str, str], Decimal]:
    out: dict[tuple[str, str], Decimal] = {}
    for b in balances:
        out[(b.sku, b.warehouse)] = out.get((b.sku, b.warehouse), Decimal(0)) + b.on_hand
    return {k: v for k, v in out.items() if v}


def test_fields_are_found_again_after_an_alias_change(sim, url) -> None:
    # Given a tenant that sets aliases on the warehouse form after the mapping was written (by label)
    sim.seed({"aliases": {"warehouses": {"_widget_1669106585401": "wh_code", "_widget_1669106585402": "wh_name"}}})
    with connect(url) as connector:
        # Then reads still find every warehouse, now keyed by the aliases
        _, records = drain(connector.read(Entity.WAREHOUSES))
        assert sorted(r.code for r in records) == ["WH01", "WH02", "WH03"]
        assert connector.form("warehouses").code == "wh_code"


def test_a_missing_field_is_a_config_error_naming_it(url) -> None:
    with connect(url, items={"barcode": "国际条码"}) as connector, pytest.raises(ConfigError, match="barcode"):
        connector.check()


def test_a_field_of_the_wrong_type_is_a_config_error(url) -> None:
    # 数量 mapped to the text field 单位: refused before any record is read or written
    with connect(url, movements={"line_qty": "单位"}) as connector, pytest.raises(ConfigError, match="line_qty"):
        connector.find("K-ANY")


def test_recomputed_balances_equal_the_ledger_form(url) -> None:
    with connect(url) as from_ledger, connect(url, ledger=None) as recomputed:
        mv = movement(MovementKind.transfer, lines=[("TS-001", "3"), ("RICE-5", "0.75")])
        from_ledger.push(mv, fresh_key())
        _, ledger = drain(from_ledger.read_balances())
        _, computed = drain(recomputed.read_balances(page_size=4))
        assert _on_hand(ledger) == _on_hand(computed)
        assert _on_hand(computed)[("RICE-5", "WH02")] == Decimal("0.75")
        assert "recomputed" in " ".join(recomputed.capabilities.notes)
        _, wh2 = drain(recomputed.read_balances(warehouse="WH02"))
        assert {b.warehouse for b in wh2} == {"WH02"}


def test_push_many_is_one_batch_and_idempotent(sim, url) -> None:
    with connect(url) as connector:
        batch = [(movement(MovementKind.purchase_receipt), fresh_key()) for _ in range(3)]
        first = connector.push_many(batch)
        assert all(isinstance(r, Receipt) and r.created and r.document_number for r in first)
        assert len(sim.calls.list(operation="app/entry/data/batch_create")) == 1
        again = connector.push_many(batch)
        assert [r.document_id for r in again] == [r.document_id for r in first]
        assert not any(r.created for r in again)
        assert all(len(sim.documents_for(key)) == 1 for _, key in batch)


def test_push_many_refused_as_a_whole_answers_each_movement(sim, url) -> None:
    with connect(url) as connector:
        good = (movement(MovementKind.sales_issue, lines=[("TS-001", "1")]), fresh_key())
        short = (movement(MovementKind.sales_issue, lines=[("TS-001", "100000")]), fresh_key())
        results = connector.push_many([good, short])
        assert isinstance(results[0], Receipt) and results[0].created
        assert isinstance(results[1], Rejected) and results[1].vendor_code == "4000"
        assert len(sim.documents_for(good[1])) == 1 and sim.documents_for(short[1]) == []


def test_upsert_creates_in_one_batch_and_updates_changed_fields(sim, url) -> None:
    with connect(url) as connector:
        items = [Item(sku=f"UP-{i}", name=f"新物料 {i}", base_unit="PCS") for i in range(3)]
        created = connector.upsert(Entity.ITEMS, items)
        assert all(isinstance(r, Receipt) and r.created for r in created)
        assert len(sim.calls.list(operation="app/entry/data/batch_create")) == 1
        changed = connector.upsert(Entity.ITEMS, [items[0].replace(name="改名"), items[1]])
        assert [r.created for r in changed] == [False, False]
        assert len(sim.calls.list(operation="app/entry/data/update")) == 1
        assert connector.upsert(Entity.WAREHOUSES, [Warehouse(code="WH01", name="主仓库")])[0].created is False


@pytest.fixture
def inbox() -> Iterator[tuple[str, list[WebhookRequest]]]:
    received: list[WebhookRequest] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            parts = urlsplit(self.path)
            body = self.rfile.read(int(self.headers["Content-Length"]))
            received.append(WebhookRequest("POST", parts.path, {k: v[0] for k, v in parse_qs(parts.query).items()},
                                           {k.lower(): v for k, v in self.headers.items()}, body,
                                           datetime.now(UTC)))
            self.send_response(200)
            self.send_header("Content-Length", "7")
            self.end_headers()
            self.wfile.write(b"success")

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}/hooks/jdy", received
    server.shutdown()
    server.server_close()


def test_simulator_pushes_decode_through_the_connector(sim, url, inbox) -> None:
    hook_url, received = inbox
    for form in ("items", "movements"):
        sim.configure_webhook(form, url=hook_url, secret=HOOK_SECRET)
    with connect(url, webhook_secret=SecretStr(HOOK_SECRET)) as connector:
        connector.check()
        connector.form("movements")  # field names resolved once, before pushes arrive
        mv, key = movement(MovementKind.purchase_receipt), fresh_key()
        connector.push(mv, key)
        sim.touch("items", "TS-001")
        sim.send_test("items")
        assert sim.webhooks.wait_idle(10)
        events = [connector.receive_webhook(request) for request in received]
    by_op = {(e.operation, e.entity): e for e in events}
    pushed = by_op[("data_create", Entity.MOVEMENTS)].records[0]
    assert pushed.reference == mv.reference and [l.quantity for l in pushed.lines] == [l.quantity for l in mv.lines]
    assert by_op[("data_update", Entity.ITEMS)].records[0].sku == "TS-001"
    assert ("data_test", None) in by_op
    assert len({e.delivery_id for e in events}) == 3


def test_a_form_update_push_refreshes_the_field_names(sim, url, inbox) -> None:
    hook_url, received = inbox
    sim.configure_webhook("items", url=hook_url, secret=HOOK_SECRET)
    with connect(url, webhook_secret=SecretStr(HOOK_SECRET)) as connector:
        connector.check()  # resolves 物料编码 → item_code
        # When the tenant renames the alias, then edits an item
        sim.set_aliases("items", {"item_code": "sku_code"})
        sim.touch("items", "TS-002")
        assert sim.webhooks.wait_idle(10)
        events = [connector.receive_webhook(request) for request in received]
    # Then the form_update push re-resolved the names and the edit decodes under the new alias
    assert [e.operation for e in events] == ["form_update", "data_update"]
    assert events[1].records[0].sku == "TS-002" and events[1].errors == ()
    assert connector.form("items").sku == "sku_code"


def test_a_fresh_connector_reads_the_field_names_once_to_decode_a_push(sim, url, inbox) -> None:
    # Given pushes reaching a connector that has made no call yet (the hub's receiver builds one per
    # thread), with fields named by label in the settings while pushes are keyed by alias
    hook_url, received = inbox
    sim.configure_webhook("items", url=hook_url, secret=HOOK_SECRET)
    sim.touch("items", "TS-001")
    sim.touch("items", "TS-002")
    assert sim.webhooks.wait_idle(10)
    forged = WebhookRequest(received[0].method, received[0].path, received[0].query,
                            {**received[0].headers, "x-jdy-signature": "0" * 40}, received[0].body,
                            received[0].received_at)
    sim.calls.clear()
    with connect(url, webhook_secret=SecretStr(HOOK_SECRET)) as connector:
        # When a forged copy arrives first, then the two real pushes
        with pytest.raises(WebhookRefused):
            connector.receive_webhook(forged)
        assert sim.calls.count(path="*widget/list") == 0  # a forged request costs no vendor call
        events = [connector.receive_webhook(request) for request in received]
    # Then both decode, after one widget/list read of the items form
    assert [e.records[0].sku for e in events] == ["TS-001", "TS-002"]
    assert all(e.errors == () for e in events)
    assert sim.calls.count(path="*widget/list") == 1
