"""CPU: a spin ends CPU_LIMIT at the CPU-time limit; a CPU share throttles measurably."""

from __future__ import annotations

from sandboxd.base.limits import Limits
from sandboxd.engine.result import Status

from .conftest import Engine

SPIN = "while True: pass"


def test_cpu_spin_ends_cpu_limit(engine: Engine) -> None:
    limits = Limits(cpu_time_ms=1000, wall_time_ms=20_000)
    run = engine.run(engine.spec("/usr/bin/python3", "-c", SPIN, limits=limits))
    assert run.result.status is Status.CPU_LIMIT, run.result
    cpu_ms = (run.result.cpu_user_usec + run.result.cpu_system_usec) / 1000
    assert 1000 <= cpu_ms <= 1500, cpu_ms
    assert run.result.wall_time_ms < 10_000


def test_cpu_time_counts_every_process_of_the_tree(engine: Engine) -> None:
    """Two spinning processes share one budget: RLIMIT_CPU alone (per process) would allow twice as much."""
    script = "import os\nos.fork()\nwhile True: pass"
    limits = Limits(cpu_time_ms=1000, wall_time_ms=20_000)
    run = engine.run(engine.spec("/usr/bin/python3", "-c", script, limits=limits))
    assert run.result.status is Status.CPU_LIMIT, run.result
    cpu_ms = (run.result.cpu_user_usec + run.result.cpu_system_usec) / 1000
    assert cpu_ms <= 1500, cpu_ms


def test_cpu_share_throttles(engine: Engine) -> None:
    """At 20 % of one CPU, one second of wall time buys about 0.2 s of CPU."""
    limits = Limits(cpu_share_percent=20, wall_time_ms=1500, cpu_time_ms=None)
    run = engine.run(engine.spec("/usr/bin/python3", "-c", SPIN, limits=limits))
    assert run.result.status is Status.TIMEOUT, run.result
    cpu_ms = (run.result.cpu_user_usec + run.result.cpu_system_usec) / 1000
    assert cpu_ms <= 0.2 * 1500 * 1.5, cpu_ms
