"""Fault plans applied to call sequences, with a fake clock: deterministic, no sleeping."""
from __future__ import annotations

from email.utils import parsedate_to_datetime

import pytest

from sandbox.faults import (
    DecisionKind,
    DropAfterCommit,
    ErrorFault,
    FaultPlan,
    Faults,
    Latency,
    RateLimit,
    RequestInfo,
    SessionExpiry,
)

SAVE = RequestInfo("POST", "/api/stock/1", operation="post_stock", session="s1")
PING = RequestInfo("GET", "/api/ping", operation="ping", session="s1")


class FakeTime:
    def __init__(self, start: float = 1_800_000_000.25) -> None:
        self.now = start
        self.slept: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


@pytest.fixture
def fake() -> FakeTime:
    return FakeTime()


def faults_with(fake: FakeTime, **plan) -> Faults:
    return Faults(FaultPlan(**plan), clock=fake.clock, sleep=fake.sleep)


def test_error_rate_one_refuses_every_call_with_the_configured_status_and_body(fake):
    faults = faults_with(fake, errors=[ErrorFault(rate=1.0, status=502, body={"msg": "gateway"})])
    decisions = [faults.before(SAVE) for _ in range(5)]
    assert {(d.kind, d.status, d.rule) for d in decisions} == {(DecisionKind.ERROR, 502, "errors[0]")}
    assert decisions[0].body == {"msg": "gateway"} and decisions[0].headers == {}


def test_no_plan_means_no_faults(fake):
    faults = Faults(clock=fake.clock, sleep=fake.sleep)
    assert faults.plan.empty
    assert faults.before(SAVE) is None and faults.after_commit(SAVE) is False and fake.slept == []


def test_seeded_error_sequences_are_reproducible(fake):
    def sequence(seed: int) -> list[bool]:
        faults = faults_with(fake, seed=seed, errors=[ErrorFault(rate=0.3)],
                             latency=[Latency(fixed=0.01, jitter=0.005)])
        return [faults.before(SAVE) is not None for _ in range(200)]

    first = sequence(7)
    assert first == sequence(7)
    assert first != sequence(8)
    assert 30 < sum(first) < 90  # roughly 30 % of 200


def test_one_rules_draws_do_not_shift_anothers(fake):
    plain = faults_with(fake, seed=3, errors=[ErrorFault(rate=0.5)])
    with_latency = faults_with(fake, seed=3, errors=[ErrorFault(rate=0.5)],
                               latency=[Latency(rate=0.5, fixed=0.001, jitter=0.001)])
    assert [plain.before(SAVE) is None for _ in range(50)] == [with_latency.before(SAVE) is None for _ in range(50)]


def test_targeting_by_path_operation_method_and_max_count(fake):
    faults = faults_with(fake, errors=[ErrorFault(operation="post_*", method="post", path="/api/stock/*", max_count=2)])
    assert faults.before(PING) is None
    assert faults.before(RequestInfo("GET", "/api/stock/1", operation="post_stock")) is None
    assert [faults.before(SAVE) is not None for _ in range(4)] == [True, True, False, False]
    assert faults.fired() == {"errors[0]": 2}


def test_forced_error_carries_retry_after_in_seconds_or_as_an_http_date(fake):
    seconds = faults_with(fake, errors=[ErrorFault(status=503, retry_after=2)]).before(SAVE)
    assert seconds.headers == {"Retry-After": "2"} and seconds.retry_after == 2.0
    dated = faults_with(fake, errors=[ErrorFault(status=429, retry_after=2, retry_after_format="http-date")]).before(SAVE)
    until = parsedate_to_datetime(dated.headers["Retry-After"]).timestamp()
    assert until >= fake.now + 2 and until == fake.now + dated.retry_after  # rounded up to a whole second


def test_latency_is_fixed_plus_or_minus_jitter(fake):
    faults = faults_with(fake, latency=[Latency(fixed=0.5, jitter=0.2)])
    for _ in range(50):
        assert faults.before(SAVE) is None
    assert all(0.3 <= s <= 0.7 for s in fake.slept) and len(set(fake.slept)) > 1


def test_rate_limit_refuses_over_the_limit_with_retry_after(fake):
    faults = faults_with(fake, rate_limits=[RateLimit(limit=3, period=1.0)])
    # When 3 calls arrive within a second, then a 4th
    for _ in range(3):
        assert faults.before(SAVE) is None
        fake.now += 0.1
    refused = faults.before(SAVE)
    # Then the 4th is refused with 429 and a whole-second Retry-After
    assert (refused.kind, refused.status, refused.headers) == (DecisionKind.RATE_LIMITED, 429, {"Retry-After": "1"})
    # and every call inside the advertised window is refused too, even once the window has room
    fake.now += 0.95
    again = faults.before(SAVE)
    assert again.kind is DecisionKind.RATE_LIMITED
    # and after waiting what it said, the client is served again
    fake.now += again.retry_after
    assert faults.before(SAVE) is None


def test_rate_limit_per_client_and_as_http_date(fake):
    faults = faults_with(fake, rate_limits=[RateLimit(limit=1, per_client=True, retry_after_format="http-date",
                                                      status=400, body={"code": 8303})])
    a, b = RequestInfo("POST", "/x", client="a"), RequestInfo("POST", "/x", client="b")
    assert faults.before(a) is None and faults.before(b) is None
    refused = faults.before(a)
    assert (refused.status, refused.body) == (400, {"code": 8303})
    until = parsedate_to_datetime(refused.headers["Retry-After"]).timestamp()
    assert until == fake.now + refused.retry_after and until >= fake.now + 0.75
    fake.now = until
    assert faults.before(a) is None


def test_session_expiry_fires_every_nth_call_with_a_session(fake):
    faults = faults_with(fake, session_expiry=[SessionExpiry(every=3)])
    login = RequestInfo("POST", "/api/login", operation="login")  # no session: never counted
    kinds = [faults.before(PING) for _ in range(6)] + [faults.before(login)]
    assert [d.kind if d else None for d in kinds] == [None, None, DecisionKind.SESSION_EXPIRED] * 2 + [None]
    assert kinds[2].status == 401


def test_drop_after_commit_rate_and_count(fake):
    faults = faults_with(fake, seed=1, drop_after_commit=[DropAfterCommit(rate=1.0, max_count=1)])
    assert faults.before(SAVE) is None  # dropping is decided after the commit, not before
    assert [faults.after_commit(SAVE) for _ in range(3)] == [True, False, False]


def test_set_and_clear_restart_counters_and_random_streams(fake):
    faults = faults_with(fake, errors=[ErrorFault(max_count=1)])
    assert faults.before(SAVE) is not None and faults.before(SAVE) is None
    faults.set(faults.plan)
    assert faults.before(SAVE) is not None
    faults.clear()
    assert faults.before(SAVE) is None and faults.fired() == {}


def test_plan_from_json_round_trips_and_names_the_bad_field():
    data = {
        "seed": 5,
        "latency": [{"fixed": 0.01, "jitter": 0.002}],
        "rate_limits": [{"limit": 20, "operation": "data/create", "retry_after_format": "http-date"}],
        "session_expiry": [{"every": 100}],
        "errors": [{"rate": 0.2, "status": 503, "retry_after": 2, "max_count": 10}],
        "drop_after_commit": [{"rate": 0.05, "path": "/api/stock/*"}],
    }
    plan = FaultPlan.from_dict(data)
    assert plan.errors[0] == ErrorFault(rate=0.2, status=503, retry_after=2, max_count=10)
    assert FaultPlan.from_dict(plan.to_dict()) == plan
    for bad, message in [
        ({"errors": [{"rate": 1.5}]}, r"errors\[0\]\.rate: must be between"),
        ({"errors": [{"stauts": 503}]}, r"errors\[0\]\.stauts: unknown field"),
        ({"rate_limits": [{}]}, r"rate_limits\[0\]\.limit: required"),
        ({"rate_limits": [{"limit": 1, "retry_after_format": "minutes"}]}, r"retry_after_format: must be one of"),
        ({"latency": {"fixed": 1}}, r"latency: must be a list"),
        ({"faults": []}, r"^faults: unknown field"),
    ]:
        with pytest.raises(ValueError, match=message):
            FaultPlan.from_dict(bad)
