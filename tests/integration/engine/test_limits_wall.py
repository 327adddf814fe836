"""Wall time: a sleeper ends TIMEOUT close to the limit, with its whole tree killed."""

from __future__ import annotations

from sandboxd.base.limits import Limits
from sandboxd.engine.result import Status

from .conftest import Engine


def test_sleep_ends_timeout_close_to_the_limit(engine: Engine) -> None:
    run = engine.run(engine.spec("/bin/sleep", "30", limits=Limits(wall_time_ms=1000)))
    assert run.result.status is Status.TIMEOUT, run.result
    assert 1000 <= run.result.wall_time_ms <= 1500, run.result.wall_time_ms


def test_timeout_kills_background_children_too(engine: Engine) -> None:
    # The engine fixture fails the test if any process of the sandbox uid survives.
    script = "sleep 60 & sleep 60 & wait"
    run = engine.run(engine.spec("/bin/sh", "-c", script, limits=Limits(wall_time_ms=800)))
    assert run.result.status is Status.TIMEOUT, run.result
