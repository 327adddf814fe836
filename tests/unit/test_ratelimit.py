"""The rate limiter is exact at the burst boundary, independent per key, and forgets only full buckets."""

from __future__ import annotations

import pytest

from sandboxd.policy.ratelimit import Rate, RateLimiter, default_burst


@pytest.mark.parametrize("start", [0.0, 12345.678, 40 * 86400.25])  # a monotonic clock of 40 days' uptime too
def test_exactly_burst_pass_then_one_per_interval(start: float) -> None:
    limiter, rate = RateLimiter(), Rate(per_minute=100, burst=3)
    assert [limiter.try_acquire("k", rate, start) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert limiter.try_acquire("k", rate, start) == 60 / 100
    later = start + limiter.try_acquire("k", rate, start)
    assert limiter.try_acquire("k", rate, later) == 0.0  # waiting exactly the hint is enough …
    assert limiter.try_acquire("k", rate, later) == 0.6  # … for exactly one
    assert limiter.try_acquire("k", rate, later + 0.599999) > 0


def test_a_refusal_costs_nothing() -> None:
    limiter, rate = RateLimiter(), Rate(per_minute=60, burst=1)
    assert limiter.try_acquire("k", rate, 0.0) == 0.0
    for _ in range(50):
        assert limiter.try_acquire("k", rate, 0.5) == 0.5
    assert limiter.try_acquire("k", rate, 1.0) == 0.0


def test_an_idle_bucket_refills_to_burst_and_no_further() -> None:
    limiter, rate = RateLimiter(), Rate(per_minute=60, burst=2)
    assert limiter.try_acquire("k", rate, 0.0) == 0.0
    assert limiter.try_acquire("k", rate, 0.0) == 0.0
    assert limiter.try_acquire("k", rate, 3600.0) == 0.0
    assert limiter.try_acquire("k", rate, 3600.0) == 0.0
    assert limiter.try_acquire("k", rate, 3600.0) == 1.0


def test_a_rate_that_does_not_divide_a_minute() -> None:
    limiter, rate = RateLimiter(), Rate(per_minute=7, burst=1)
    assert limiter.try_acquire("k", rate, 0.0) == 0.0
    wait = limiter.try_acquire("k", rate, 0.0)
    assert wait == pytest.approx(60 / 7, abs=1e-6) and wait >= 60 / 7  # never faster than the rate
    assert limiter.try_acquire("k", rate, wait) == 0.0


def test_keys_are_independent() -> None:
    limiter, rate = RateLimiter(), Rate(per_minute=1, burst=1)
    assert limiter.try_acquire(("alice", "analyst"), rate, 0.0) == 0.0
    assert limiter.try_acquire(("alice", "analyst"), rate, 0.0) == 60.0
    assert limiter.try_acquire(("alice", "admin"), rate, 0.0) == 0.0
    assert limiter.try_acquire(("bob", "analyst"), rate, 0.0) == 0.0


def test_full_buckets_are_swept_without_changing_any_answer() -> None:
    rate = Rate(per_minute=60, burst=2)
    busy = RateLimiter()
    for index in range(5000):
        assert busy.try_acquire(index, rate, index * 10.0) == 0.0  # each key idle (full) 10 s later
    assert len(busy) <= 2048
    # a key swept away answers exactly as it would have: its bucket was full
    assert busy.try_acquire(0, rate, 50_000.0) == 0.0
    assert busy.try_acquire(0, rate, 50_000.0) == 0.0
    assert busy.try_acquire(0, rate, 50_000.0) == 1.0


def test_busy_buckets_are_kept() -> None:
    limiter, rate = RateLimiter(), Rate(per_minute=1, burst=1)
    for index in range(3000):
        limiter.try_acquire(index, rate, 0.0)
    assert len(limiter) == 3000  # none is full again within the minute: forgetting one would refill it
    assert limiter.try_acquire(0, rate, 1.0) == 59.0


def test_default_burst_and_bad_rates() -> None:
    assert default_burst(100) == 20
    assert default_burst(50) == 10
    assert default_burst(1) == 1
    assert default_burst(7) == 2
    with pytest.raises(ValueError, match="per_minute >= 1"):
        Rate(per_minute=0, burst=1)
    with pytest.raises(ValueError, match="burst >= 1"):
        Rate(per_minute=10, burst=0)
