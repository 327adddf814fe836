"""The handler's descriptors: the execution's pipes on 0, 1, 2, the error pipe on 3 (close-on-exec), nothing
else. Runs before the rlimits are set, so ``RLIMIT_NOFILE`` (any value >= 4) never stands in the way, and
after the waiter closed everything the spawner held (:func:`syscalls.close_all_except`)."""

from __future__ import annotations

import fcntl
import os

from sandboxd.engine.child import syscalls as sc

ERRPIPE_FD = 3


def install_stdio(stdio: tuple[int, int, int], errpipe: int) -> int:
    """Put the execution's pipes on 0, 1, 2 and the error pipe on 3 (close-on-exec); close the rest."""
    # A source already on 0-3 could be overwritten by an earlier move: lift those out of the way first.
    lifted = [fd if fd > ERRPIPE_FD else fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, ERRPIPE_FD + 1)
              for fd in (*stdio, errpipe)]
    for target, fd in enumerate(lifted[:3]):
        os.dup2(fd, target, inheritable=True)
    os.dup2(lifted[3], ERRPIPE_FD, inheritable=False)
    sc.close_range(ERRPIPE_FD + 1)
    return ERRPIPE_FD
