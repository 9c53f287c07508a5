"""The simulator's data push (数据推送), checked by a receiver written here after the official
``jiandaoyun/webhook-demo`` ``python/server.py``: sha1 over ``nonce:payload:secret:timestamp`` of
the raw UTF-8 payload, compared with ``X-JDY-Signature``; 401 on a mismatch, ``success`` otherwise.
"""
from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

from sandbox.jiandaoyun_forms import ITEMS_ENTRY

SECRET = "jdy-webhook-secret"


def get_signature(nonce: str, payload: str, secret: str, timestamp: str) -> str:
    content = ":".join([nonce, payload, secret, timestamp]).encode("utf-8")  # noqa: FLY002 - as the demo
    digest = hashlib.sha1()
    digest.update(content)
    return digest.hexdigest()


@dataclass
class Receiver:
    """Records every push; answers the next statuses in ``script`` (then 200)."""

    url: str = ""
    received: list[dict] = field(default_factory=list)
    script: list[int] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def ops(self) -> list[str]:
        with self.lock:
            return [r["event"]["op"] for r in self.received]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    state = Receiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            payload = self.rfile.read(int(self.headers["Content-Length"])).decode("utf-8")
            query = {k: v[0] for k, v in parse_qs(urlsplit(self.path).query).items()}
            verified = self.headers.get("X-JDY-Signature") == get_signature(
                query.get("nonce", ""), payload, SECRET, query.get("timestamp", ""))
            with state.lock:
                state.received.append({"payload": payload, "query": query, "verified": verified,
                                       "deliver_id": self.headers.get("X-JDY-DeliverId"),
                                       "content_type": self.headers.get("Content-Type"),
                                       "event": json.loads(payload)})
                status = state.script.pop(0) if state.script else 200
            if not verified:
                status = 401
            body = b"success" if status == 200 else b"fail"
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{server.server_port}/jdy/hook"
    yield state
    server.shutdown()
    server.server_close()


@pytest.fixture
def hooked(sim, receiver):
    sim.configure_webhook("items", url=receiver.url, secret=SECRET)
    return sim


def _settle(sim) -> list[dict]:
    assert sim.webhooks.wait_idle(10.0)
    return sim.webhooks.deliveries()


def test_single_writes_push_signed_compact_utf8(hooked, api, receiver, clock) -> None:
    _, created = api("app/entry/data/create", {"data": {"item_code": {"value": "新-1"}}}, form=ITEMS_ENTRY)
    data_id = created["data"]["_id"]
    api("app/entry/data/update", {"data_id": data_id, "data": {"spec": {"value": "大"}}}, form=ITEMS_ENTRY)
    api("app/entry/data/delete", {"data_id": data_id}, form=ITEMS_ENTRY)
    hooked.ui_edit("items", "recover", data_id=data_id)
    _settle(hooked)
    assert receiver.ops() == ["data_create", "data_update", "data_remove", "data_recover"]
    first = receiver.received[0]
    assert all(r["verified"] for r in receiver.received)
    # compact UTF-8 JSON (what the Node demo's re-serialisation needs), Chinese not escaped
    assert first["payload"] == json.dumps(first["event"], ensure_ascii=False, separators=(",", ":"))
    assert "新-1" in first["payload"] and first["content_type"] == "application/json"
    assert first["event"]["opTime"] == int(clock() * 1000)
    assert first["event"]["data"]["_id"] == data_id and first["event"]["data"]["item_code"] == "新-1"
    assert first["query"]["timestamp"] == str(int(clock())) and len(first["query"]["nonce"]) >= 6
    assert receiver.received[2]["event"]["data"]["deleteTime"]
    assert len({r["deliver_id"] for r in receiver.received}) == 4


def test_batch_operations_do_not_push(hooked, api, receiver) -> None:
    _, body = api("app/entry/data/batch_create", {"data_list": [{"item_code": {"value": "B1"}}]}, form=ITEMS_ENTRY)
    api("app/entry/data/batch_update", {"data_ids": body["success_ids"], "data": {"spec": {"value": "x"}}},
        form=ITEMS_ENTRY)
    api("app/entry/data/batch_delete", {"data_ids": body["success_ids"]}, form=ITEMS_ENTRY)
    hooked.touch("items", "A001")  # a UI edit does push
    _settle(hooked)
    assert receiver.ops() == ["data_update"]


def test_failed_deliveries_are_retried_with_the_same_deliver_id(hooked, api, receiver) -> None:
    receiver.script = [500, 503]
    api("app/entry/data/create", {"data": {"item_code": {"value": "R1"}}}, form=ITEMS_ENTRY)
    log = _settle(hooked)
    assert [e["status"] for e in log] == [500, 503, 200]
    assert [e["attempt"] for e in log] == [1, 2, 3]
    assert len({r["deliver_id"] for r in receiver.received}) == 1 and len(receiver.received) == 3


def test_delivery_gives_up_after_four_retries(hooked, api, receiver) -> None:
    receiver.script = [500] * 10
    api("app/entry/data/create", {"data": {"item_code": {"value": "R2"}}}, form=ITEMS_ENTRY)
    log = _settle(hooked)
    assert [e["attempt"] for e in log] == [1, 2, 3, 4, 5] and {e["status"] for e in log} == {500}


def test_unreachable_receiver_is_logged_without_status(sim, api) -> None:
    sim.configure_webhook("items", url="http://127.0.0.1:9/nothing", secret=SECRET)
    sim.webhooks.set_delivery({"retries": 1, "backoff": [0.01]})
    api("app/entry/data/create", {"data": {"item_code": {"value": "R3"}}}, form=ITEMS_ENTRY)
    log = _settle(sim)
    assert [(e["attempt"], e["status"]) for e in log] == [(1, None), (2, None)] and log[0]["error"]


def test_fault_knobs_duplicate_bad_signature_stale(hooked, api, receiver, clock) -> None:
    hooked.configure_webhook("items", duplicate=True)
    api("app/entry/data/create", {"data": {"item_code": {"value": "D1"}}}, form=ITEMS_ENTRY)
    _settle(hooked)
    assert len(receiver.received) == 2 and receiver.received[0]["deliver_id"] == receiver.received[1]["deliver_id"]
    hooked.configure_webhook("items", duplicate=False, bad_signature=True)
    api("app/entry/data/create", {"data": {"item_code": {"value": "D2"}}}, form=ITEMS_ENTRY)
    log = _settle(hooked)
    assert receiver.received[2]["verified"] is False and log[2]["status"] == 401
    hooked.configure_webhook("items", bad_signature=False, stale_seconds=3600)
    receiver.received.clear()
    hooked.touch("items", "A002")
    _settle(hooked)
    pushed = receiver.received[0]
    assert pushed["verified"] and int(pushed["query"]["timestamp"]) == int(clock()) - 3600


def test_connection_test_and_the_admin_api(hooked, server, receiver) -> None:
    # configured over HTTP as another process would
    answer = requests.post(f"{server.url}/_admin/webhooks", json={
        "form": "物料", "url": receiver.url, "secret": SECRET, "ops": ["data_create", "data_test"],
        "delivery": {"retries": 2, "backoff": [0.01]}})
    assert answer.status_code == 200 and answer.json()["forms"][ITEMS_ENTRY]["ops"] == ["data_create", "data_test"]
    assert answer.json()["forms"][ITEMS_ENTRY]["has_secret"] and SECRET not in answer.text
    sent = requests.post(f"{server.url}/_admin/webhooks/test", json={"form": "items"}).json()
    ui = requests.post(f"{server.url}/_admin/records", json={
        "form": "items", "op": "create", "data": {"item_code": {"value": "UI-1"}}})
    requests.post(f"{server.url}/_admin/records", json={
        "form": "items", "op": "update", "data_id": ui.json()["data"]["_id"], "data": {"spec": {"value": "s"}}})
    log = requests.get(f"{server.url}/_admin/webhooks", params={"wait": 5}).json()
    assert log["pending"] == 0
    assert [(d["op"], d["status"]) for d in log["deliveries"]] == [("data_test", 200), ("data_create", 200)]
    assert log["deliveries"][0]["deliver_id"] == sent["deliver_id"]
    assert "data" not in receiver.received[0]["event"]  # the connection test carries no record
    bad = requests.post(f"{server.url}/_admin/webhooks", json={"form": "items", "url": "ftp://x"})
    assert bad.status_code == 400
