"""RetryPolicy: in-process attempts (tenacity) and the durable decision per error action."""
from __future__ import annotations

import random
import threading
from datetime import datetime, timedelta, timezone

import pytest

from connectors.errors import (
    Ambiguous,
    AuthError,
    ConfigError,
    ContractViolation,
    DependencyMissing,
    RateLimited,
    Rejected,
    Transient,
)
from sync.retry import RetryPolicy, Verdict

NOW = datetime(2026, 1, 5, 9, 0, tzinfo=timezone.utc)


class Flaky:
    """Fails with the given errors in turn, then answers."""

    def __init__(self, *errors: Exception) -> None:
        self.errors = list(errors)
        self.calls = 0

    def __call__(self) -> str:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return "ok"


def _policy(**kw) -> tuple[RetryPolicy, list[float]]:
    slept: list[float] = []
    return RetryPolicy(sleep=slept.append, rng=random.Random(1), **kw), slept


def test_transient_is_retried_in_process_with_jittered_waits() -> None:
    policy, slept = _policy(inline_attempts=3, inline_initial=0.5, inline_max_wait=10)
    flaky = Flaky(Transient("503"), Transient("503"))
    assert policy.call(flaky) == "ok" and flaky.calls == 3
    # full jitter: each wait within [0, min(max, 0.5·2^n)]
    assert len(slept) == 2 and 0 <= slept[0] <= 1.0 and 0 <= slept[1] <= 2.0


def test_retry_after_is_a_floor() -> None:
    policy, slept = _policy(inline_initial=0.001)
    assert policy.call(Flaky(RateLimited("429", retry_after=2.0))) == "ok"
    assert slept == [pytest.approx(2.0, abs=0.01)] and slept[0] >= 2.0


def test_a_long_retry_after_is_left_to_the_outbox() -> None:
    policy, slept = _policy(max_inline_wait=5)
    flaky = Flaky(RateLimited("429", retry_after=60))
    with pytest.raises(RateLimited):
        policy.call(flaky)
    assert flaky.calls == 1 and slept == []


@pytest.mark.parametrize("error", [Ambiguous("lost"), Rejected("no stock", vendor_code="11"), AuthError("bad"),
                                   ConfigError("org"), DependencyMissing("sku"), ContractViolation("shape"),
                                   ValueError("bug")])
def test_only_transient_errors_are_retried_in_process_and_the_real_error_is_raised(error) -> None:
    policy, slept = _policy()
    flaky = Flaky(error)
    with pytest.raises(type(error)) as raised:
        policy.call(flaky)
    assert raised.value is error and flaky.calls == 1 and slept == []


def test_attempts_are_capped_and_the_last_error_reraised() -> None:
    policy, _ = _policy(inline_attempts=3)
    last = Transient("third")
    flaky = Flaky(Transient("first"), Transient("second"), last)
    with pytest.raises(Transient) as raised:
        policy.call(flaky)
    assert raised.value is last and flaky.calls == 3


def test_the_deadline_stops_before_an_attempt_that_would_start_too_late() -> None:
    policy, slept = _policy(inline_attempts=10, inline_deadline=1.0, max_inline_wait=100)
    flaky = Flaky(RateLimited("429", retry_after=5), Transient("never reached"))
    with pytest.raises(RateLimited):
        policy.call(flaky)
    assert flaky.calls == 1 and slept == []


def test_concurrent_calls_do_not_share_state() -> None:
    policy = RetryPolicy(inline_attempts=3, scale=0.0001)
    results: list[str] = []

    def work() -> None:
        results.append(policy.call(Flaky(Transient("a"), Transient("b"))))

    threads = [threading.Thread(target=work) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == ["ok"] * 16


# -- durable decisions ---------------------------------------------------------------------------


def test_each_action_maps_to_what_delivery_does() -> None:
    policy = RetryPolicy(rng=random.Random(3))
    assert policy.decide(Transient("503"), 1, NOW, NOW).verdict is Verdict.RETRY
    assert policy.decide(RateLimited("429", retry_after=1), 1, NOW, NOW).verdict is Verdict.RETRY
    reconcile = policy.decide(Ambiguous("reset"), 1, NOW, NOW)
    assert reconcile.verdict is Verdict.RECONCILE and reconcile.ambiguous
    assert reconcile.at >= NOW + timedelta(seconds=policy.reconcile_delay)
    assert policy.decide(DependencyMissing("sku"), 1, NOW, NOW).verdict is Verdict.DEFER
    assert policy.decide(AuthError("bad"), 1, NOW, NOW).verdict is Verdict.PAUSE
    assert policy.decide(ConfigError("org"), 1, NOW, NOW).verdict is Verdict.PAUSE
    for error in (Rejected("no stock"), ContractViolation("shape")):
        decision = policy.decide(error, 1, NOW, NOW)
        assert decision.verdict is Verdict.DEAD_LETTER and not decision.exhausted
    # an exception that is not a connector error may have gone out: reconcile
    assert policy.decide(RuntimeError("bug"), 1, NOW, NOW).verdict is Verdict.RECONCILE


def test_durable_backoff_grows_with_jitter_and_a_cap() -> None:
    policy = RetryPolicy(initial=10, max_backoff=100, max_attempts=100, rng=random.Random(5))
    for attempts, ceiling in ((1, 10), (2, 20), (3, 40), (8, 100), (40, 100)):
        waits = [(policy.decide(Transient("x"), attempts, NOW, NOW).at - NOW).total_seconds() for _ in range(50)]
        assert all(ceiling / 2 <= w <= ceiling for w in waits)


def test_retry_after_is_a_floor_for_the_next_attempt() -> None:
    policy = RetryPolicy(initial=0.01)
    decision = policy.decide(RateLimited("429", retry_after=30), 1, NOW, NOW)
    assert decision.at >= NOW + timedelta(seconds=30)


def test_attempts_and_age_are_capped() -> None:
    policy = RetryPolicy(max_attempts=5, max_age=timedelta(hours=1), min_attempts_before_age=3)
    spent = policy.decide(Transient("503"), 5, NOW, NOW)
    assert spent.verdict is Verdict.DEAD_LETTER and spent.exhausted and "5 attempts" in spent.reason
    old = NOW - timedelta(hours=2)
    assert policy.decide(Transient("503"), 3, old, NOW).exhausted
    # age alone does not kill a row tried fewer than min_attempts_before_age times
    assert policy.decide(Transient("503"), 1, old, NOW).verdict is Verdict.RETRY
    # an ambiguous row that used its budget is dead-lettered too (find() still runs on a replay)
    assert policy.decide(Ambiguous("reset"), 5, NOW, NOW).verdict is Verdict.DEAD_LETTER


def test_scale_shrinks_invented_waits_but_not_retry_after() -> None:
    policy = RetryPolicy(scale=0.001, rng=random.Random(2))
    assert (policy.decide(Transient("503"), 1, NOW, NOW).at - NOW).total_seconds() <= 0.015
    assert (policy.decide(RateLimited("429", retry_after=2), 1, NOW, NOW).at - NOW).total_seconds() >= 2


def test_naive_times_are_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        RetryPolicy().decide(Transient("x"), 1, NOW.replace(tzinfo=None), NOW)


def test_relay_backoff_grows_with_failures_never_below_a_tick_and_capped() -> None:
    policy = RetryPolicy(relay_max_backoff=30.0, rng=random.Random(7))
    for failures in (1, 2, 3, 5, 8, 20):
        waits = [policy.relay_backoff(failures, 0.5) for _ in range(200)]
        assert min(waits) >= 0.5
        assert max(waits) <= min(30.0, 0.5 * 2 ** failures)
    # full jitter: long outages spread over the whole window, up to the cap
    assert max(policy.relay_backoff(20, 0.5) for _ in range(200)) > 20.0
