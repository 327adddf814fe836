"""Pid 1 of the sandbox, as bubblewrap's and tini's: tiny, unprivileged, and there only to be a real init.

The handler runs as pid 2, so it behaves as on any host: a signal it sends itself without a handler kills it
(the kernel drops such signals for a namespace's init), and orphans are reaped instead of piling up as
zombies against ``pids.max``. The init forwards the signals a supervisor sends (TERM, INT, HUP, …) to the
handler, reaps every child, and once the handler has ended kills what is left of the sandbox, reaps it, and
writes the handler's own wait status to the waiter: the verdict stays the handler's.

Its privileges are gone before it reaps anything: the sandbox's uid, no capabilities, an empty bounding set,
``no_new_privs`` and not dumpable (the handler, of the same uid, can neither ptrace it — the waiter already
does — nor open its ``/proc/1/mem``).
"""

from __future__ import annotations

import os
import signal
from types import FrameType
from typing import NoReturn

import prctl

# What a supervisor or a terminal sends to stop, interrupt or poke a process: passed on to the handler.
INIT_COMM = "sandbox-init"
FORWARDED_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1,
                     signal.SIGUSR2, signal.SIGWINCH, signal.SIGALRM, signal.SIGCONT, signal.SIGTSTP)


def serve(handler_pid: int, report_fd: int) -> NoReturn:
    """Reap until the handler has ended and nothing is left; report its wait status on ``report_fd``."""

    def forward(sig: int, _frame: FrameType | None) -> None:
        try:
            os.kill(handler_pid, sig)
        except ProcessLookupError:
            pass

    for sig in FORWARDED_SIGNALS:
        signal.signal(sig, forward)
    prctl.set_name(INIT_COMM)
    handler_status: int | None = None
    while True:
        try:
            pid, status = os.waitpid(-1, 0)
        except ChildProcessError:
            break
        if pid == handler_pid:
            handler_status = status
            for sig in FORWARDED_SIGNALS:
                signal.signal(sig, signal.SIG_IGN)
            try:
                os.kill(-1, signal.SIGKILL)  # everything of the sandbox but us goes with the handler
            except ProcessLookupError:
                pass
    if handler_status is not None:
        try:
            os.write(report_fd, f"status {handler_status}\n".encode())
        except OSError:
            pass
    os._exit(0)
