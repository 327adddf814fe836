"""Before the server stops: the daemon waits until no call (health checks aside) began for a while."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import pytest

from sandboxd.server import quiet
from sandboxd.server.quiet import CallClock


@dataclass
class Details:
    method: str


class FakeTime:
    """A clock that moves only when the code under test sleeps, with calls arriving at given times."""

    def __init__(self, arrivals: list[tuple[float, str]]) -> None:
        self.now = 0.0
        self.clock = CallClock(clock=lambda: self.now)
        self.arrivals = arrivals

    async def sleep(self, seconds: float) -> None:
        until = self.now + seconds
        while self.arrivals and self.arrivals[0][0] <= until:
            self.now, method = self.arrivals.pop(0)
            await self.clock.intercept_service(_continue, Details(method))
        self.now = until


async def _continue(details: Any) -> str:
    return "handler"


def run(arrivals: list[tuple[float, str]], monkeypatch: pytest.MonkeyPatch, **limits: float) -> tuple[bool, float]:
    fake = FakeTime(arrivals)
    monkeypatch.setattr(quiet.asyncio, "sleep", fake.sleep)
    done = asyncio.run(fake.clock.wait_quiet(**limits))
    return done, fake.now


def test_quiet_once_no_call_began_for_quiet_s(monkeypatch: pytest.MonkeyPatch) -> None:
    done, now = run([(0.1, "/sandboxd.v1.Sandbox/Execute"), (0.3, "/sandboxd.v1.Sandbox/Execute")], monkeypatch,
                    quiet_s=0.25, limit_s=2.0)
    assert done and now == pytest.approx(0.55)  # 0.25 after the last call


def test_health_checks_do_not_count(monkeypatch: pytest.MonkeyPatch) -> None:
    done, now = run([(0.1, "/grpc.health.v1.Health/Check"), (0.2, "/grpc.health.v1.Health/Watch")], monkeypatch,
                    quiet_s=0.25, limit_s=2.0)
    assert done and now == pytest.approx(0.25)


def test_calls_that_never_stop_are_waited_for_at_most_limit_s(monkeypatch: pytest.MonkeyPatch) -> None:
    arrivals = [(0.1 * n, "/sandboxd.v1.Sandbox/Execute") for n in range(1, 40)]
    done, now = run(arrivals, monkeypatch, quiet_s=0.25, limit_s=1.0)
    assert not done and now == pytest.approx(1.0)


def test_the_interceptor_hands_the_call_on() -> None:
    clock = CallClock()
    assert asyncio.run(clock.intercept_service(_continue, Details("/sandboxd.v1.Sandbox/GetInfo"))) == "handler"
