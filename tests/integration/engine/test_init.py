"""An init as pid 1, the handler as pid 2: the handler behaves as on any host — a signal it sends itself
kills it, its orphans are reaped, a supervisor's signal reaches it — and the verdict stays the handler's."""

from __future__ import annotations

import os
import signal

from sandboxd.base.limits import Limits
from sandboxd.engine.result import Started, Status

from .conftest import Engine

ORPHANS = """
import os, time
for _ in range(5):
    child = os.fork()
    if child == 0:
        if os.fork() == 0:  # the grandchild: orphaned at once, then exits
            time.sleep(0.1)
            os._exit(0)
        os._exit(0)
    os.waitpid(child, 0)
time.sleep(0.5)  # the orphans have exited by now: reaped by the init, or zombies of nobody
states = []
for pid in os.listdir('/proc'):
    if pid.isdigit():
        with open(f'/proc/{pid}/stat') as f:
            states.append(f.read().rsplit(')', 1)[1].split()[0])
print(''.join(sorted(states)))
"""


def test_a_signal_the_handler_sends_itself_kills_it(engine: Engine) -> None:
    # As pid 1 of its namespace the kernel dropped it, and the shell ended OK, exit 0.
    run = engine.run(engine.spec("/bin/sh", "-c", "kill -SEGV $$; echo survived"))
    assert (run.result.status, run.result.signal) == (Status.SIGNALED, signal.SIGSEGV), run.result
    assert run.stdout == b""


def test_orphans_are_reaped_by_the_init(engine: Engine) -> None:
    run = engine.run(engine.spec("/usr/bin/python3", "-c", ORPHANS, limits=Limits(pids_max=16, wall_time_ms=20_000)))
    assert run.result.status is Status.OK, (run.result, run.stderr)
    assert b"Z" not in run.stdout, run.stdout  # no zombie holds a pid against pids.max


def test_a_signal_to_the_init_reaches_the_handler(engine: Engine) -> None:
    def terminate_via_init(started: Started) -> None:
        with open(f"/proc/{started.pid}/stat") as f:
            init_pid = int(f.read().rsplit(")", 1)[1].split()[1])  # the handler's parent: the sandbox's init
        os.kill(init_pid, signal.SIGTERM)

    run = engine.run(engine.spec("/bin/sleep", "30"), on_started=terminate_via_init)
    assert (run.result.status, run.result.signal) == (Status.SIGNALED, signal.SIGTERM), run.result


def test_the_handlers_exit_ends_the_sandbox_with_its_status(engine: Engine) -> None:
    # A background process does not keep the execution alive once the handler is gone, and the exit code
    # reported is the handler's own; the fixture checks that nothing of the sandbox survived.
    run = engine.run(engine.spec("/bin/sh", "-c", "sleep 60 & echo started; exit 7"))
    assert (run.result.status, run.result.exit_code) == (Status.NONZERO_EXIT, 7), run.result
    assert run.result.wall_time_ms < 10_000
