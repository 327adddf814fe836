"""Cancel: an execution cancelled from outside ends CANCELLED, its whole tree killed."""

from __future__ import annotations

from sandboxd.base.limits import Limits
from sandboxd.engine.result import Status

from .conftest import Engine


def test_cancel_yields_cancelled(engine: Engine) -> None:
    spec = engine.spec("/bin/sh", "-c", "sleep 60 & sleep 60", limits=Limits(wall_time_ms=30_000))
    run = engine.run(spec, cancel_after_s=0.3)
    assert run.result.status is Status.CANCELLED, run.result
    assert run.result.wall_time_ms < 5000
