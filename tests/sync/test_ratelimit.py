"""Rate limiter fidelity (RELIABILITY P8): at least 0.9 N achieved, never more than the bucket allows.

Counted from the timestamps of the admitted operations; the only timing threshold is the
achieved/configured ratio, with generous tolerance.
"""
from __future__ import annotations

import threading
import time
import uuid

import pytest

from sync.ratelimit import RateLimiters, RateLimitTimeout, RedisTokenBucket, TokenBucket, Unlimited, effective_rate

RATE = 40.0
SECONDS = 2.0
# Stamps are taken after acquire() returns, so a thread descheduled in between shifts its stamp
# later; forgive up to one token interval of that (the bound below is otherwise exact).
SLACK = 1 / RATE


def _hammer(acquire, *, threads: int, seconds: float) -> list[float]:
    """Several threads acquiring as fast as they are allowed; the admission timestamps."""
    stamps: list[float] = []
    lock = threading.Lock()
    deadline = time.monotonic() + seconds

    def run() -> None:
        while True:
            acquire()
            now = time.monotonic()
            if now >= deadline:
                return
            with lock:
                stamps.append(now)

    workers = [threading.Thread(target=run) for _ in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return sorted(stamps)


def _assert_faithful(stamps: list[float], rate: float, burst: int, seconds: float) -> None:
    # never more than the bucket allows: in any span [t_i, t_j], at most burst + rate·(t_j − t_i)
    for i in range(len(stamps)):
        for j in range(i, len(stamps)):
            allowed = burst + rate * (stamps[j] - stamps[i] + SLACK)
            assert j - i + 1 <= allowed, f"{j - i + 1} operations in {stamps[j] - stamps[i]:.4f}s"
    # and the limit is used: at least 0.9 N achieved
    assert len(stamps) >= 0.9 * rate * seconds, f"only {len(stamps)} of {rate * seconds:.0f}"


def test_in_process_bucket_keeps_to_the_rate_across_threads():
    # Given a bucket of 40/s shared by 4 threads that all want more
    bucket = TokenBucket(RATE, burst=1)
    # When they hammer it for 2 s
    stamps = _hammer(bucket.acquire, threads=4, seconds=SECONDS)
    # Then ≥ 0.9 N went through and no span ever exceeded what the bucket allows
    _assert_faithful(stamps, RATE, 1, SECONDS)


def test_a_burst_allowance_is_spent_once_then_the_rate_holds():
    now = [0.0]
    bucket = TokenBucket(10, burst=3, clock=lambda: now[0])
    assert [bucket.try_acquire() for _ in range(3)] == [0.0, 0.0, 0.0]
    assert bucket.try_acquire() == pytest.approx(0.1)
    now[0] += 0.1
    assert bucket.try_acquire() == 0.0
    assert bucket.try_acquire() == pytest.approx(0.1)


def test_cost_takes_several_tokens_and_timeout_gives_up():
    now = [0.0]
    bucket = TokenBucket(10, burst=1, clock=lambda: now[0], sleep=lambda s: now.__setitem__(0, now[0] + s))
    assert bucket.acquire(cost=3) == 0.0  # a cost above the burst is still admissible, once
    assert bucket.try_acquire() == pytest.approx(0.3)
    with pytest.raises(RateLimitTimeout):
        bucket.acquire(timeout=0.1)
    assert bucket.acquire() == pytest.approx(0.3)


def test_the_lower_of_setting_and_capability_wins():
    assert effective_rate(None, None) is None
    assert effective_rate(5, None) == 5
    assert effective_rate(None, 20) == 20
    assert effective_rate(50, 20) == 20
    limiters = RateLimiters({"kd": 5.0, "ref": None})
    assert isinstance(limiters.for_connection("ref"), Unlimited)
    assert isinstance(limiters.for_connection("kd"), TokenBucket)
    assert limiters.for_connection("kd") is limiters.for_connection("kd")


@pytest.mark.redis
def test_redis_bucket_is_shared_and_faithful(redis_url):
    import redis

    client = redis.Redis.from_url(redis_url)
    key = f"erphub-test:{uuid.uuid4().hex}:ratelimit:kd"
    try:
        # Given two limiter objects (as in two worker processes) on the same key
        first, second = RedisTokenBucket(client, key, RATE), RedisTokenBucket(client, key, RATE)
        turn = iter(range(10**9))

        def acquire() -> None:
            (first if next(turn) % 2 else second).acquire()

        # When four threads take turns on them for 2 s
        stamps = _hammer(acquire, threads=4, seconds=SECONDS)
        # Then together they kept to one bucket
        _assert_faithful(stamps, RATE, 1, SECONDS)
        limiters = RateLimiters({"kd": RATE}, redis_client=client, namespace=key)
        assert limiters.shared and isinstance(limiters.for_connection("kd"), RedisTokenBucket)
    finally:
        client.delete(key)
        client.close()


# -- Retry-After holds the bucket -----------------------------------------------------------------


@pytest.mark.parametrize("burst", [1, 3])
def test_a_hold_admits_nothing_until_it_ends_then_paces_without_a_burst(burst):
    # Given a bucket with tokens to spare
    now = [0.0]
    bucket = TokenBucket(10, burst=burst, clock=lambda: now[0])
    assert bucket.try_acquire() == 0.0
    # When the vendor says Retry-After: 2
    bucket.hold(2.0)
    # Then nothing is admitted for 2 s, to anyone, and peeking takes nothing
    assert bucket.peek() == pytest.approx(2.0)
    assert bucket.try_acquire() == pytest.approx(2.0)
    now[0] = 1.5
    assert bucket.try_acquire() == pytest.approx(0.5)
    # And when it ends one token goes, the next one interval later (no stored burst released)
    now[0] = 2.0
    assert bucket.try_acquire() == 0.0
    assert bucket.try_acquire() == pytest.approx(0.1)
    # A shorter hold never shortens a longer one
    bucket.hold(5.0)
    bucket.hold(1.0)
    assert bucket.peek() == pytest.approx(5.0)


def test_an_unlimited_connection_still_honours_a_hold():
    now = [0.0]
    limiter = Unlimited(clock=lambda: now[0])
    assert limiter.try_acquire() == 0.0
    limiter.hold(1.0)
    assert limiter.try_acquire() == pytest.approx(1.0)
    now[0] = 1.0
    assert limiter.try_acquire() == 0.0


def test_limiters_keep_a_headroom_under_the_configured_rate():
    limiters = RateLimiters({"kd": 20.0})
    assert limiters.for_connection("kd").rate == pytest.approx(19.0)
    assert RateLimiters({"kd": 20.0}, headroom=1.0).for_connection("kd").rate == 20.0
    with pytest.raises(ValueError):
        RateLimiters({}, headroom=0)


@pytest.mark.redis
def test_redis_hold_is_seen_by_every_process(redis_url):
    import redis

    client = redis.Redis.from_url(redis_url)
    key = f"erphub-test:{uuid.uuid4().hex}:ratelimit:kd"
    try:
        # Given two processes' limiters on one key
        first, second = RedisTokenBucket(client, key, 10), RedisTokenBucket(client, key, 10)
        assert first.try_acquire() == 0.0
        # When one of them is told Retry-After: 0.5
        first.hold(0.5)
        # Then the other waits it out too, and peeking takes nothing
        assert 0.3 < second.peek() <= 0.5
        assert 0.3 < second.try_acquire() <= 0.5
        time.sleep(0.55)
        assert second.try_acquire() == 0.0
        assert first.try_acquire() == pytest.approx(0.1, abs=0.02)  # paced again, no burst
    finally:
        client.delete(key, f"{key}:hold")
        client.close()
