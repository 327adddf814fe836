"""The handler's descriptors as it runs ``sandbox-exec`` (:mod:`helpers`): the execution's pipes on 0, 1, 2; the
error pipe on 3, what to launch on 4 and the seccomp filter on 5 — which ``sandbox-exec`` reads, closes or marks
close-on-exec before the handler's ``execve`` —; the helper itself on 6 (close-on-exec); nothing else. Runs
before the rlimits are set, so ``RLIMIT_NOFILE``, whatever its value, never stands in the way, and after the
waiter closed everything the spawner held (:func:`syscalls.close_all_except`)."""

from __future__ import annotations

import fcntl
import os

from sandboxd.engine.child import syscalls as sc

ERRPIPE_FD = 3
LAUNCH_FD = 4
FILTER_FD = 5
EXEC_HELPER_FD = 6


def install_stdio(stdio: tuple[int, int, int], errpipe: int, launch: int, seccomp_filter: int,
                  exec_helper: int) -> int:
    """Put the execution's pipes on 0, 1, 2 and the rest on 3-6 (see the module); close everything else."""
    # A source already on 0-6 could be overwritten by an earlier move: lift those out of the way first.
    kept = (*stdio, errpipe, launch, seccomp_filter, exec_helper)
    lifted = [fd if fd > EXEC_HELPER_FD else fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, EXEC_HELPER_FD + 1)
              for fd in kept]
    for target, fd in enumerate(lifted):
        os.dup2(fd, target, inheritable=target != EXEC_HELPER_FD)
    sc.close_range(EXEC_HELPER_FD + 1)
    return ERRPIPE_FD
