"""Memory: a hog ends MEMORY_LIMIT, read from the cgroup's OOM counter, with the peak near the limit."""

from __future__ import annotations

from sandboxd.base.limits import Limits
from sandboxd.engine.result import Started, Status

from .conftest import Engine

LIMIT_BYTES = 64 * 1024 * 1024
HOG = "x = []\nwhile True:\n    x.append(bytearray(8 * 1024 * 1024))\n"


def test_memory_hog_ends_memory_limit(engine: Engine) -> None:
    limits = Limits(memory_max_bytes=LIMIT_BYTES, wall_time_ms=30_000)
    spec = engine.spec("/usr/bin/python3", "-c", HOG, limits=limits)
    run = engine.run(spec)
    # The hog only ran because its limit was in place: the Started event carries the enforced limit.
    assert isinstance(run.started, Started) and run.started.limits.memory_max_bytes == LIMIT_BYTES
    assert run.result.status is Status.MEMORY_LIMIT, run.result
    assert 0.8 * LIMIT_BYTES <= run.result.memory_peak_bytes <= 1.05 * LIMIT_BYTES, run.result.memory_peak_bytes
    assert "OOM" in run.result.message


def test_exit_137_is_not_mistaken_for_oom(engine: Engine) -> None:
    run = engine.run(engine.spec("/bin/sh", "-c", "exit 137"))
    assert run.result.status is Status.NONZERO_EXIT
    assert run.result.exit_code == 137


def test_crash_is_signaled_not_oom(engine: Engine) -> None:
    run = engine.run(engine.spec("/usr/bin/python3", "-c", "import ctypes; ctypes.string_at(0)"))
    assert run.result.status is Status.SIGNALED, run.result
    assert run.result.signal == 11
    assert "SIGSEGV" in run.result.message
