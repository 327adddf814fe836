"""Memory on v2: a hog in a leaf with memory.max ends MEMORY_LIMIT, read from the leaf's memory.events, with
memory.peak reported near the limit."""

from __future__ import annotations

from sandboxd.base.limits import Limits
from sandboxd.engine.cgroups import fsutil
from sandboxd.engine.result import Status

from .conftest import V2_MARKS, Engine

pytestmark = V2_MARKS

LIMIT_BYTES = 64 * 1024 * 1024
HOG = "x = []\nwhile True:\n    x.append(bytearray(8 * 1024 * 1024))\n"


def test_memory_hog_ends_memory_limit_from_memory_events(engine: Engine) -> None:
    limits = Limits(memory_max_bytes=LIMIT_BYTES, wall_time_ms=120_000, cpu_time_ms=None)
    run = engine.run(engine.spec("/usr/bin/python3", "-c", HOG, limits=limits))
    # Read back from the leaf before anything ran in it (the engine fixture refuses to run otherwise).
    assert engine.recorder.limit_files["memory.max"] == str(LIMIT_BYTES)
    assert engine.recorder.limit_files["memory.swap.max"] == "0"
    assert engine.recorder.limit_files["memory.oom.group"] == "1"
    assert run.result.status is Status.MEMORY_LIMIT, run.result
    assert "OOM" in run.result.message
    events = fsutil.parse_keyed(run.final_files["memory.events"])
    assert events.get("oom_kill", 0) >= 1, run.final_files["memory.events"]
    assert events.get("max", 0) >= 1, run.final_files["memory.events"]
    assert run.result.memory_peak_bytes == int(run.final_files["memory.peak"])
    assert 0.8 * LIMIT_BYTES <= run.result.memory_peak_bytes <= 1.05 * LIMIT_BYTES, run.result.memory_peak_bytes


def test_oom_kills_the_whole_leaf(engine: Engine) -> None:
    """memory.oom.group=1: the kernel kills every process of the leaf, not only the hog. Without it, pid 1 (sh)
    would go on to its next command and the execution would end only at the wall limit."""
    limits = Limits(memory_max_bytes=LIMIT_BYTES, wall_time_ms=120_000, cpu_time_ms=None)
    script = f"sleep 300 & /usr/bin/python3 -c '{HOG}'; sleep 300"
    run = engine.run(engine.spec("/bin/sh", "-c", script, limits=limits))
    assert run.result.status is Status.MEMORY_LIMIT, run.result
    assert run.result.wall_time_ms < 60_000, run.result.wall_time_ms
    assert run.result.signal == 9, run.result  # sh itself was killed
    events = fsutil.parse_keyed(run.final_files["memory.events"])
    assert events.get("oom_group_kill", 1) >= 1, run.final_files["memory.events"]  # counted from kernel 5.17


def test_small_program_is_not_oom_killed(engine: Engine) -> None:
    limits = Limits(memory_max_bytes=LIMIT_BYTES, wall_time_ms=120_000, cpu_time_ms=None)
    run = engine.run(engine.spec("/bin/sh", "-c", "echo fine", limits=limits))
    assert run.result.status is Status.OK, run.result
    assert run.stdout == b"fine\n"
    assert fsutil.parse_keyed(run.final_files["memory.events"]).get("oom_kill", 0) == 0
    assert 0 < run.result.memory_peak_bytes < LIMIT_BYTES
