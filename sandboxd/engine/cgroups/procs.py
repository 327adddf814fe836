"""Killing the processes of a frozen cgroup, race-free against pid reuse.

Both backends' freeze-and-kill path (v1 always, v2 on kernels without ``cgroup.kill``) lists the pids of a
*frozen* cgroup: a frozen task cannot exit, so its pid cannot be reused before we hold a pidfd for it, and the
signal goes through that pidfd. A pid that is already gone is fine.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Iterable

FREEZE_TIMEOUT_S = 1.0


def sigkill_each(pids: Iterable[int]) -> int:
    """SIGKILL every pid through a pidfd; returns how many were signalled."""
    signalled = 0
    for pid in pids:
        try:
            pidfd = os.pidfd_open(pid)
        except ProcessLookupError:
            continue
        try:
            signal.pidfd_send_signal(pidfd, signal.SIGKILL)
            signalled += 1
        except ProcessLookupError:
            pass
        finally:
            os.close(pidfd)
    return signalled


def wait_until(
    condition: Callable[[], bool],
    timeout_s: float,
    sleep: Callable[[float], None] = time.sleep,
) -> bool:
    """Poll ``condition`` with a growing interval until it holds (True) or ``timeout_s`` passed (False)."""
    deadline = time.monotonic() + timeout_s
    delay_s = 0.001
    while True:
        if condition():
            return True
        if time.monotonic() >= deadline:
            return False
        sleep(delay_s)
        delay_s = min(delay_s * 2, 0.05)


def freeze_kill_thaw(
    freeze: Callable[[], None],
    is_frozen: Callable[[], bool],
    thaw: Callable[[], None],
    list_pids: Callable[[], list[int]],
    *,
    rounds: int = 5,
    timeout_s: float = FREEZE_TIMEOUT_S,
) -> None:
    """Freeze, SIGKILL each task, thaw (the tasks die on thaw).

    If the freeze does not complete in time (a task in uninterruptible sleep) we still kill and thaw, and go
    round again: without a completed freeze a task may have forked between listing and killing.
    """
    for _ in range(rounds):
        freeze()
        try:
            frozen = wait_until(is_frozen, timeout_s)
            pids = list_pids()
            sigkill_each(pids)
        finally:
            thaw()
        if frozen or not pids:
            return
