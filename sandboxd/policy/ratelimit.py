"""Per-key rate limits: ``per_minute`` requests on average, ``burst`` of them at once.

Each key is a token bucket of ``burst`` tokens refilled at ``per_minute / 60`` per second, kept as the one
number GCRA needs — the *theoretical arrival time* ``tat`` at which the bucket would be full again::

    interval = 60 / per_minute               # the time one token takes to come back
    tolerance = (burst - 1) * interval       # how far ahead of now tat may run
    request at now:  tat = max(tat, now)
                     tat - now > tolerance   → refused; retry after  tat - now - tolerance
                     otherwise               → allowed;  tat += interval

Times are whole microseconds, so the boundary is exact: from a full bucket exactly ``burst`` requests
pass at once, the next is told ``60 / per_minute`` seconds, and one request made that much later passes.

A bucket whose ``tat`` is in the past is full, the same as no bucket at all, so such entries are dropped
whenever the table has doubled since the last sweep: memory stays proportional to the keys active in the
last ``burst * interval`` seconds, and dropping one changes no answer.
"""

from __future__ import annotations

import math
from collections.abc import Hashable
from dataclasses import dataclass

_US_PER_S = 1_000_000
_MIN_SWEEP_SIZE = 1024


@dataclass(frozen=True)
class Rate:
    """``per_minute`` requests per minute on average, ``burst`` of them back to back."""

    per_minute: int
    burst: int

    def __post_init__(self) -> None:
        if self.per_minute < 1 or self.burst < 1:
            raise ValueError(f"a rate needs per_minute >= 1 and burst >= 1, got {self.per_minute}/{self.burst}")

    @property
    def interval_us(self) -> int:
        # rounded up: never more than per_minute per minute
        return math.ceil(60 * _US_PER_S / self.per_minute)


def default_burst(per_minute: int) -> int:
    """The burst of a rate that names none: a fifth of a minute's worth (100/min → 20), at least 1."""
    return max(1, math.ceil(per_minute / 5))


def _to_us(seconds: float) -> int:
    return round(seconds * _US_PER_S)


class RateLimiter:
    """Buckets by key (the policy uses ``(principal, role)``); ``now`` is a monotonic clock in seconds.

    The rate is passed with each call, so one limiter outlives a reload that changes a role's rate: the
    state carried over is only "how far ahead" each key is.
    """

    def __init__(self) -> None:
        self._tat_us: dict[Hashable, int] = {}
        self._sweep_at = _MIN_SWEEP_SIZE

    def try_acquire(self, key: Hashable, rate: Rate, now: float) -> float:
        """Take one token of ``key``'s bucket: ``0.0`` when allowed, else the seconds until one is there."""
        now_us = _to_us(now)
        interval = rate.interval_us
        tolerance = (rate.burst - 1) * interval
        tat = max(self._tat_us.get(key, now_us), now_us)
        wait_us = tat - now_us - tolerance
        if wait_us > 0:
            return wait_us / _US_PER_S
        self._tat_us[key] = tat + interval
        if len(self._tat_us) >= self._sweep_at:
            self._sweep(now_us)
        return 0.0

    def _sweep(self, now_us: int) -> None:
        """Drop full buckets (``tat`` not after now): they answer exactly as a missing one would."""
        for key in [key for key, tat in self._tat_us.items() if tat <= now_us]:
            del self._tat_us[key]
        self._sweep_at = max(_MIN_SWEEP_SIZE, 2 * len(self._tat_us))

    def __len__(self) -> int:
        return len(self._tat_us)
