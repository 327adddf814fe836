"""Pids: a fork bomb is contained by the cgroup's pids limit and the host stays healthy."""

from __future__ import annotations

import os

from sandboxd.base.limits import Limits
from sandboxd.engine.result import Started, Status

from .conftest import Engine

PIDS_MAX = 32
BOMB = "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n"


def test_fork_bomb_is_contained(engine: Engine) -> None:
    limits = Limits(pids_max=PIDS_MAX, wall_time_ms=3000, memory_max_bytes=512 * 1024 * 1024)
    # Fail, do not bomb, unless the containing limit is really set: the executor writes pids.max before the
    # handler starts, and the Started event reports it; a spec without it is refused here.
    assert limits.pids_max == PIDS_MAX
    load_before = os.getloadavg()[0]
    run = engine.run(engine.spec("/usr/bin/python3", "-c", BOMB, limits=limits))
    assert isinstance(run.started, Started) and run.started.limits.pids_max == PIDS_MAX
    assert run.result.status is Status.TIMEOUT, run.result
    # The host still forks and answers.
    assert os.system("true") == 0
    assert os.getloadavg()[0] < load_before + 40


def test_pids_limit_makes_fork_fail_with_eagain(engine: Engine) -> None:
    script = (
        "import os, errno\nn = 0\n"
        "for _ in range(40):\n"
        "    try:\n        pid = os.fork()\n"
        "    except OSError as e:\n        print('EAGAIN' if e.errno == errno.EAGAIN else e); break\n"
        "    if pid == 0:\n        import time; time.sleep(5); os._exit(0)\n"
        "    n += 1\n"
        "print(n)\n"
    )
    limits = Limits(pids_max=8, wall_time_ms=20_000)
    run = engine.run(engine.spec("/usr/bin/python3", "-c", script, limits=limits))
    lines = run.stdout.decode().split()
    assert lines[0] == "EAGAIN", run.stdout
    assert int(lines[1]) == 7  # pid 1 plus 7 children
