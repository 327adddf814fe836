"""CPU: a spin ends CPU_LIMIT at the CPU-time limit; a CPU share throttles measurably."""

from __future__ import annotations

import pytest

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


def test_unreadable_accounting_ends_the_execution_with_a_clear_message(engine: Engine,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    # Zeros in place of an unreadable cpu.stat would silently switch the CPU-time limit off: the execution is
    # ended instead, saying why.
    from sandboxd.base.errors import CgroupError
    from sandboxd.engine.cgroups.v1 import V1ExecCgroup
    from sandboxd.engine.cgroups.v2 import V2ExecCgroup

    def unreadable(_cgroup: object) -> None:
        raise CgroupError("cannot read cpu.stat: Input/output error")

    monkeypatch.setattr(V1ExecCgroup, "usage", unreadable)  # what the sweep reads while it runs
    monkeypatch.setattr(V2ExecCgroup, "usage", unreadable)
    run = engine.run(engine.spec("/bin/sleep", "30", limits=Limits(cpu_time_ms=5000, wall_time_ms=20_000)))
    assert run.result.status is Status.CANCELLED, run.result
    assert "accounting could not be read" in run.result.message
    assert "CPU time and memory limits could no longer be enforced" in run.result.message
    assert run.result.wall_time_ms < 10_000
