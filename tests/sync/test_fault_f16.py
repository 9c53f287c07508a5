"""RELIABILITY.md §6(i) F16: duplicate webhooks (same ``X-JDY-DeliverId``), bad signatures and stale
timestamps, end to end: the Jiandaoyun simulator's data push (数据推送) → the hub's receiver
(:mod:`sync.webhook_server`) → the Jiandaoyun connector's ``receive_webhook`` → the intake
(:func:`sync.webhooks.accept`) → the outbox → delivery to a reference ERP.

Load: 1,000 events, each a record created in the simulator's UI (a single write, which pushes):

=========================  ==========  =====  ==========================================
knob on the form's push    movements   items  expected
=========================  ==========  =====  ==========================================
``duplicate``                     500    200  each push sent twice with one DeliverId:
                                              taken in once, the copy answered "duplicate"
``bad_signature``                 100     50  401 on every attempt (1 + 4 retries), nothing
                                              recorded, stored or enqueued
``stale_seconds = 3600``          100     50  the same
=========================  ==========  =====  ==========================================

Checks: the simulator's delivery log (every attempt and its HTTP status), the store (deliveries,
movements, outbox rows, items, id_map, error queue), the intake's counters, and after delivery the
history checker against the target: one outbox row per movement, lost = 0, duplicated = 0, the
target's ledger moved by exactly the movements taken in. The simulator retries after 10 ms
instead of 2 s; everything else is as shipped. About 10-15 s on the 2-core machine.
"""
from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any

import pytest
import requests
from sqlalchemy import func, select

from connectors.jiandaoyun import (
    JiandaoyunConnector,
    JiandaoyunSettings,
)
from sandbox.jiandaoyun import DEFAULT_API_KEY, JiandaoyunSimulator
from sync import metrics
from sync.connections import Connections
from sync.store import ErrorQueue, IdMap, Item, Movement, Outbox, Store, WebhookDelivery
from sync.webhook_server import serve
from tests.conformance.kit import STANDARD_WORLD, Clock, unit_of
from tests.sync.conftest import REFERENCE, Systems
from tests.sync.test_delivery_history import History, drain, fast_policy
from tests.sync.test_webhooks import Flow

SECRET = "f16-push-secret-7d1e"
RETRIES = 4
# (knob, movements, items)
PHASES: tuple[tuple[str, int, int], ...] = (("duplicate", 500, 200), ("bad_signature", 100, 50),
                                           ("stale", 100, 50))
POSITIONS = [(sku, wh) for sku in ("TS-001", "TS-002", "SH-001", "RICE-5") for wh in ("WH01", "WH02")]


@dataclass
class F16:
    sim: JiandaoyunSimulator
    sim_url: str
    store: Store
    connections: Connections
    history: History
    receiver_url: str


@pytest.fixture
def f16(store: Store) -> Iterator[F16]:
    with ExitStack() as stack:
        # the source: Jiandaoyun on the real clock (push timestamps are checked against ours)
        sim = JiandaoyunSimulator(rate_limits=None, webhook_retries=RETRIES, webhook_backoff=(0.01,),
                                  webhook_timeout=10.0)
        sim.seed({"world": STANDARD_WORLD.to_dict()})
        sim_url = stack.enter_context(sim.serve()).url
        # the target: a reference ERP
        target = REFERENCE.simulator(clock=Clock())
        target.seed({"world": STANDARD_WORLD.to_dict()})
        target_url = stack.enter_context(target.serve()).url
        settings = {
            # the default mapping names fields by label; decoding a push reads widget/list once per form
            "jdy": JiandaoyunSettings(url=f"{sim_url}/api", api_key=DEFAULT_API_KEY, webhook_secret=SECRET),
            "ref": REFERENCE.settings(target_url, good_credentials=True, connect_timeout=2.0, read_timeout=5.0),
        }
        connections = Connections(store, settings, factory=lambda name, s: JiandaoyunConnector(s, name=name)
                                  if name == "jdy" else REFERENCE.build(s))
        stack.callback(connections.close)
        flows = [Flow("moves", "movements", "jdy", ("ref",))]
        server = stack.enter_context(serve(store, connections, flows, threads=4))
        history = History(store, Systems(connections, {"ref": target}, Clock(), {"ref": REFERENCE}))
        yield F16(sim, sim_url, store, connections, history, server.url)


def _values(form: Any, values: dict[str, Any]) -> dict[str, Any]:
    """Labels → the form's ``{widget: {"value": v}}``."""
    return {form.by_label(label).name: {"value": value} for label, value in values.items()}


def _movement(sim: JiandaoyunSimulator, n: int, reference: str) -> dict[str, Any]:
    form = sim.form("movements")
    sku, warehouse = POSITIONS[n % len(POSITIONS)]
    lines = form.by_label("明细")
    sub = {w.label: w.name for w in lines.items}
    data = _values(form, {"业务类型": "盘盈", "业务日期": int(sim.clock() * 1000), "仓库编码": warehouse,
                          "参考号": reference})
    data[lines.name] = {"value": [{sub["物料编码"]: {"value": sku}, sub["数量"]: {"value": 1 + n % 3},
                                   sub["单位"]: {"value": unit_of(sku)}}]}
    return data


def _item(sim: JiandaoyunSimulator, sku: str) -> dict[str, Any]:
    return _values(sim.form("items"), {"物料编码": sku, "名称": f"推送 {sku}", "单位": "PCS", "状态": "启用"})


def _knobs(knob: str) -> dict[str, Any]:
    return {"duplicate": knob == "duplicate", "bad_signature": knob == "bad_signature",
            "stale_seconds": 3600 if knob == "stale" else 0}


def test_f16_duplicates_are_taken_in_once_and_forged_or_stale_pushes_are_refused(f16: F16) -> None:
    sim = f16.sim
    url = f"{f16.receiver_url}/webhooks/jdy"
    created: dict[str, dict[str, list[str]]] = {}  # knob -> {"movements": references, "items": skus}
    with metrics.use_counters() as counted:
        # Given the movements and items forms push to the hub, with one fault knob per phase
        for knob, movements, items in PHASES:
            for form in ("movements", "items"):
                requests.post(f"{f16.sim_url}/_admin/webhooks", json={"form": form, "url": url, "secret": SECRET,
                                                                       **_knobs(knob)}, timeout=10).raise_for_status()
            # When records are created in the Jiandaoyun UI
            refs = [f"F16-{knob}-{n:04d}" for n in range(movements)]
            skus = [f"F16-{knob[:3].upper()}-{n:04d}" for n in range(items)]
            for n, ref in enumerate(refs):
                sim.ui_edit("movements", "create", data=_movement(sim, n, ref))
            for sku in skus:
                sim.ui_edit("items", "create", data=_item(sim, sku))
            created[knob] = {"movements": refs, "items": skus}
        log = requests.get(f"{f16.sim_url}/_admin/webhooks", params={"wait": 120}, timeout=150).json()
    assert log["pending"] == 0

    # Then, from the simulator's delivery log: every push of the duplicate phase was sent twice
    # with one DeliverId and answered 2xx both times; every forged or stale push got 401 on every
    # one of its 1 + 4 attempts
    attempts: dict[str, list[int | None]] = defaultdict(list)
    knob_of: dict[str, str] = {}
    for entry in log["deliveries"]:
        attempts[entry["deliver_id"]].append(entry["status"])
        data_id = entry["data_id"]
        knob_of[entry["deliver_id"]] = _phase_of(sim, data_id)
    by_knob: dict[str, set[str]] = defaultdict(set)
    for deliver_id, knob in knob_of.items():
        by_knob[knob].add(deliver_id)
    assert {k: len(v) for k, v in by_knob.items()} == {k: m + i for k, m, i in PHASES}
    assert {d: attempts[d] for d in by_knob["duplicate"] if attempts[d] != [200, 200]} == {}
    refused = by_knob["bad_signature"] | by_knob["stale"]
    assert {d: attempts[d] for d in refused if attempts[d] != [401] * (1 + RETRIES)} == {}

    # And the hub took in each duplicated push once, and nothing of the refused ones
    with f16.store.session() as s:
        delivered = set(s.scalars(select(WebhookDelivery.delivery_id)))
        references = set(s.scalars(select(Movement.reference)))
        skus = set(s.scalars(select(Item.sku)))
        bound = set(s.scalars(select(IdMap.external_id).where(IdMap.entity == "items")))
        rows = int(s.scalar(select(func.count()).select_from(Outbox)) or 0)
        errors = list(s.scalars(select(ErrorQueue)))
    assert delivered == by_knob["duplicate"]
    assert references == set(created["duplicate"]["movements"])
    assert rows == len(references)  # one outbox row per movement (one target)
    assert set(created["duplicate"]["items"]) <= skus and set(created["duplicate"]["items"]) <= bound
    for knob in ("bad_signature", "stale"):
        assert not set(created[knob]["items"]) & (skus | bound)
    assert errors == []
    # (the intake's own counters agree with the log)
    total = sum(len(a) for a in attempts.values())
    assert counted.webhooks_received.labels("jdy")._value.get() == total
    assert counted.webhooks_duplicate.labels("jdy")._value.get() == len(by_knob["duplicate"])
    assert counted.webhooks_refused.labels("jdy")._value.get() == len(refused) * (1 + RETRIES)

    # And delivery posts each movement once: lost = 0, duplicated = 0, ledger exact
    drain(f16.store, f16.connections, fast_policy(), timeout=120)
    report = f16.history.check()
    report.assert_clean()
    assert report.sent == len(created["duplicate"]["movements"])


def _phase_of(sim: JiandaoyunSimulator, data_id: str) -> str:
    """The phase a pushed record belongs to, from its code (参考号 / 物料编码) in the simulator."""
    for role, label in (("movements", "参考号"), ("items", "物料编码")):
        form = sim.form(role)
        record = form.records.get(data_id)
        if record is not None:
            code = record.values.get(form.by_label(label).widget_name, "")
            for knob, _, _ in PHASES:
                if code.startswith((f"F16-{knob}-", f"F16-{knob[:3].upper()}-")):
                    return knob
    raise AssertionError(f"pushed record {data_id} is not one of the test's")
