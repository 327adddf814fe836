"""The handler's descriptors: the execution's pipes on 0, 1, 2, the error pipe on 3 (close-on-exec), nothing
else. Runs before the rlimits are set, so ``RLIMIT_NOFILE`` (any value >= 4) never stands in the way, and
after the waiter closed everything the spawner held (:func:`syscalls.close_all_except`)."""

from __future__ import annotations

import fcntl
import os

from sandboxd.engine.child import syscalls as sc

ERRPIPE_FD = 3
GATE_FD = 4  # a pooled sandbox's gate, until the handler-to-be has read it (close-on-exec)


def install_stdio(stdio: tuple[int, int, int], errpipe: int, gate: int = -1) -> int:
    """Put the execution's pipes on 0, 1, 2, the error pipe on 3 and (a pooled sandbox) the gate on 4, both
    close-on-exec; close the rest."""
    # A source already on 0-4 could be overwritten by an earlier move: lift those out of the way first.
    kept = (*stdio, errpipe, *((gate,) if gate >= 0 else ()))
    lifted = [fd if fd > GATE_FD else fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, GATE_FD + 1) for fd in kept]
    for target, fd in enumerate(lifted[:3]):
        os.dup2(fd, target, inheritable=True)
    os.dup2(lifted[3], ERRPIPE_FD, inheritable=False)
    if gate >= 0:
        os.dup2(lifted[4], GATE_FD, inheritable=False)
    sc.close_range(GATE_FD + 1 if gate >= 0 else ERRPIPE_FD + 1)
    return ERRPIPE_FD
