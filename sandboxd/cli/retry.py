"""When a fleet client tries a call again, and how long it waits first.

The rule: a call is retried only when a daemon refused it *before it started* and said the refusal is
temporary (``sandboxd-temporary: true``: DRAINING, TOO_MANY_EXECUTIONS, RATE_LIMITED, …), and nothing of the
call reached the caller. A call that started is never retried — not even when its connection breaks before
a single event arrived, since the daemon may have run it: the caller gets that error as it is. (This is why
gRPC's own retry policy is not used: it retries on status codes, and would retry an UNAVAILABLE that came
after the daemon had taken the call.)

Each retry goes to a daemon that has not refused this call yet; once every daemon has, a new round starts.
Waits grow exponentially with jitter (half fixed, half random), so refused callers do not come back in step.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["DEFAULT_RETRY", "NO_RETRY", "RetryPolicy"]


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 6  # the first one included
    initial_backoff_s: float = 0.05
    max_backoff_s: float = 2.0
    multiplier: float = 2.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError(f"max_attempts must be at least 1, got {self.max_attempts}")
        if not 0 <= self.initial_backoff_s <= self.max_backoff_s:
            raise ValueError("backoffs must satisfy 0 <= initial_backoff_s <= max_backoff_s")
        if self.multiplier < 1:
            raise ValueError(f"multiplier must be at least 1, got {self.multiplier}")

    def allows(self, attempts_made: int) -> bool:
        """Whether another attempt may follow ``attempts_made`` (≥ 1) refused ones."""
        return attempts_made < self.max_attempts

    def backoff_s(self, attempts_made: int, *, uniform: Callable[[float, float], float] = random.uniform) -> float:
        """How long to wait before attempt ``attempts_made + 1``: half of the exponential step, plus up to
        as much again at random."""
        step_s = min(self.max_backoff_s, self.initial_backoff_s * self.multiplier ** (attempts_made - 1))
        return step_s / 2 + uniform(0.0, step_s / 2)


DEFAULT_RETRY = RetryPolicy()
NO_RETRY = RetryPolicy(max_attempts=1)
