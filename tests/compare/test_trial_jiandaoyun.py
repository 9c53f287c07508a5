"""A trial over the Jiandaoyun simulator with the vendor's rate limits on (30/20/10 a second per key,
50 per company), driven concurrently the way ``erphub demo`` drives it: every connection the trial
opens on the one API key gets its share of the connector's budget, so the simulator never answers
8303, and the figures are the same ones measured for every other candidate."""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack
from decimal import Decimal
from typing import Any

import pytest

from compare.scenario import plan_movements
from compare.trial import parse_trial, rescore, run_trial
from erphub.demo import jiandaoyun_rate_limits
from tests.conformance.kit import ledger_snapshot
from tests.conformance.targets.jiandaoyun import settings as jdy_settings
from tests.conformance.targets.jiandaoyun import simulator as jdy_simulator

CONCURRENCY = 3
TRIAL: dict[str, Any] = {
    "trial": {"name": "jiandaoyun pilot", "candidates": ["jdy"]},
    "scenario": {"seed": 5, "movements": 30, "concurrency": CONCURRENCY, "duration_cap": "60s",
                 "master_data": {"generate": {"items": 8, "warehouses": 2, "opening": [40, 80]}}},
}


def _spread(lines: Any) -> bool:
    """True when the lines take from, or put into, more than one warehouse."""
    return any(len({w for w in side if w}) > 1
               for side in ([ln.from_warehouse for ln in lines], [ln.to_warehouse for ln in lines]))


@pytest.fixture(scope="module")
def jdy_trial(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    trial = parse_trial(TRIAL)
    master = trial.scenario.master_data.resolved(trial.scenario.seed)
    with ExitStack() as stack:
        sim = jdy_simulator()  # the vendor's rate limits are on by default
        assert sim.limiter.limits is not None
        sim.seed({"world": master.to_world_dict()})
        server = stack.enter_context(sim.serve())
        # one connection for master data and stock reads, one per worker, all on one API key
        conn = jdy_settings(server.url, connect_timeout=2.0, read_timeout=10.0,
                            rate_limits=jiandaoyun_rate_limits(CONCURRENCY + 1))
        opening = ledger_snapshot(sim)
        results = run_trial(trial, {"jdy": conn}, results_dir=tmp_path_factory.mktemp("trials"))
        yield {"trial": trial, "master": master, "sim": sim, "results": results, "opening": opening}


def test_the_split_budget_keeps_every_call_under_the_vendor_limits(jdy_trial) -> None:
    sim, system = jdy_trial["sim"], jdy_trial["results"]["systems"]["jdy"]
    # Then the simulator refused no call (8303 is an HTTP 400; nothing else in this plan is refused by it)
    assert sim.calls.count(status=400) == 0
    assert "rate_limited" not in system["error_kinds"] and system["failure"] is None
    # and the master data the connector can write went in by upsert without a failure
    for entity in ("items", "warehouses"):
        entry = system["master_data"][entity]
        assert entry["how"] == "upserted" and entry["failed"] == 0 and entry["count"] > 0
    assert system["master_data"]["partners"]["how"] == "assumed seeded"


def test_documents_in_one_warehouse_per_side_post_and_the_others_are_refused_by_name(jdy_trial) -> None:
    results, sim = jdy_trial["results"], jdy_trial["sim"]
    system = results["systems"]["jdy"]
    plan = plan_movements(jdy_trial["trial"].scenario, jdy_trial["master"], tag=results["plan"]["tag"])
    spread = {p.seq for p in plan if _spread(p.movement.lines)}
    # Then every document was sent; exactly those whose lines use several warehouses on a side were
    # refused (the reference app's 出入库单 holds one warehouse per side), as 'rejected'
    assert system["documents"]["sent"] == len(plan) == 30
    assert {e["seq"] for e in system["errors"]} == spread
    assert system["error_kinds"] == ({"rejected": len(spread)} if spread else {})
    assert all("several warehouses" in e["message"] for e in system["errors"])
    assert system["documents"]["succeeded"] == len(plan) - len(spread) > 0
    assert system["measures"]["success_rate"] == pytest.approx((len(plan) - len(spread)) / len(plan))
    # and the simulator's ledger moved by exactly the documents that posted
    after = ledger_snapshot(sim)
    moved = {(k[0], k[1]): after.get(k, Decimal(0)) - jdy_trial["opening"].get(k, Decimal(0))
             for k in set(after) | set(jdy_trial["opening"])}
    expected: dict[tuple[str, str], Decimal] = {}
    for p in plan:
        if p.seq in spread:
            continue
        for d in p.movement.stock_deltas():
            expected[(d.sku, d.warehouse)] = expected.get((d.sku, d.warehouse), Decimal(0)) + d.quantity
    assert {k: v for k, v in moved.items() if v} == {k: v for k, v in expected.items() if v}
    assert system["accuracy"]["share"] == 1.0 and system["accuracy"]["positions"] == 16  # 8 items x 2 warehouses


def test_calls_latency_and_score_are_measured_as_for_every_candidate(jdy_trial) -> None:
    results = jdy_trial["results"]
    system = results["systems"]["jdy"]
    m, d = system["measures"], system["documents"]
    # Then a push is one lookup of the key and one create (plus one form resolution per worker)
    assert 2 * d["succeeded"] <= system["api_calls"]["drive"] <= 2 * d["succeeded"] + CONCURRENCY
    assert m["api_calls_per_document"] == pytest.approx(system["api_calls"]["drive"] / d["sent"])
    assert m["latency_p50_ms"] > 0 and m["latency_p95_ms"] >= m["latency_p50_ms"]
    assert m["throughput"] > 0
    # and the scorecard gives it a total
    card = rescore(results)
    assert card.by_system()["jdy"].total is not None
