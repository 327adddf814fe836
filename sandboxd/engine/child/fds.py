"""The handler's descriptors: the execution's pipes on 0, 1, 2, the error pipe on 3 (close-on-exec), nothing
else."""

from __future__ import annotations

import fcntl
import os

from sandboxd.engine.child import syscalls as sc


def install_stdio(stdio: tuple[int, int, int], errpipe: int) -> int:
    """Put the execution's pipes on 0, 1, 2 and the error pipe on 3 (close-on-exec); close the rest."""
    high = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10) for fd in (*stdio, errpipe)]
    for target, fd in enumerate(high[:3]):
        os.dup2(fd, target, inheritable=True)
    os.dup2(high[3], 3, inheritable=False)
    sc.close_range_from(4)
    return 3
