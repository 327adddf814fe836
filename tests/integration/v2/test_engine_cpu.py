"""CPU share on v2: cpu.max throttles a spinning handler measurably, compared with the same spin unthrottled.

Guest time runs at its normal rate under TCG (only the code is slower), so the ratios hold in the VM."""

from __future__ import annotations

from sandboxd.base.limits import Limits
from sandboxd.engine.cgroups import fsutil
from sandboxd.engine.result import Status

from .conftest import V2_MARKS, Engine, Run

pytestmark = V2_MARKS

SPIN = ("/bin/sh", "-c", "while :; do :; done")  # dash starts in milliseconds, even under TCG
WALL_MS = 4000


def cpu_ms(run: Run) -> float:
    return (run.result.cpu_user_usec + run.result.cpu_system_usec) / 1000


def test_cpu_max_throttles_a_spin(engine: Engine) -> None:
    free = engine.run(engine.spec(*SPIN, limits=Limits(cpu_share_percent=100, wall_time_ms=WALL_MS,
                                                       cpu_time_ms=None)))
    assert engine.recorder.limit_files["cpu.max"] == "100000 100000"
    capped = engine.run(engine.spec(*SPIN, limits=Limits(cpu_share_percent=20, wall_time_ms=WALL_MS,
                                                         cpu_time_ms=None)))
    assert engine.recorder.limit_files["cpu.max"] == "20000 100000"
    print(f"CPU in {WALL_MS} ms of wall time: {cpu_ms(free):.0f} ms free, {cpu_ms(capped):.0f} ms at 20 %")
    assert free.result.status is Status.TIMEOUT, free.result
    assert capped.result.status is Status.TIMEOUT, capped.result
    # 20 % of one CPU for at most WALL_MS (the wall clock starts before the leaf is even made).
    assert cpu_ms(capped) <= 0.3 * WALL_MS, (cpu_ms(capped), cpu_ms(free))
    assert cpu_ms(free) >= 0.4 * WALL_MS, (cpu_ms(capped), cpu_ms(free))
    assert cpu_ms(capped) * 2 < cpu_ms(free), (cpu_ms(capped), cpu_ms(free))
    stat = fsutil.parse_keyed(capped.final_files["cpu.stat"])
    assert stat.get("nr_throttled", 0) > 0 and stat.get("throttled_usec", 0) > 0, capped.final_files["cpu.stat"]
