"""Pids on v2: a fork bomb is contained by the leaf's pids.max (checked in place before the bomb runs), its
forks fail (pids.events), the wall timeout kills it with cgroup.kill, and the guest stays healthy."""

from __future__ import annotations

import os

from sandboxd.base.limits import Limits
from sandboxd.engine.cgroups import fsutil
from sandboxd.engine.result import Started, Status

from .conftest import V2_MARKS, Engine

pytestmark = V2_MARKS

PIDS_MAX = 32
BOMB = "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n"


def test_fork_bomb_is_contained_by_pids_max(engine: Engine) -> None:
    limits = Limits(pids_max=PIDS_MAX, wall_time_ms=15_000, cpu_time_ms=None, memory_max_bytes=512 << 20)
    # The bomb runs only in a leaf whose pids.max reads back as PIDS_MAX: the engine fixture's recorder checks
    # the file right after the leaf is made and fails the execution (SETUP_FAILED, nothing run) otherwise.
    assert limits.pids_max == PIDS_MAX
    run = engine.run(engine.spec("/usr/bin/python3", "-c", BOMB, limits=limits))
    assert engine.recorder.limit_files["pids.max"] == str(PIDS_MAX + 1)  # and one for the sandbox's init
    assert isinstance(run.started, Started) and run.started.limits.pids_max == PIDS_MAX
    assert run.result.status is Status.TIMEOUT, run.result
    assert fsutil.parse_keyed(run.final_files["pids.events"]).get("max", 0) > 0, run.final_files["pids.events"]
    assert len(run.leaf_pids_seen) > 1
    assert run.leaf is not None and "1" in engine.recorder.kill_writes(run.leaf)
    assert os.system("true") == 0  # the guest still forks
