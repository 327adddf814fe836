"""Killing the processes of a cgroup by pid, race-free against pid reuse.

Both backends' freeze-and-kill path (v1 always, v2 on kernels without ``cgroup.kill``) lists the pids of the
leaf, which may not be frozen yet (a freeze can time out): a listed pid can exit and be reused by a host
process before we signal it. So each pid is opened as a pidfd, the process behind that pidfd is checked to be
in the execution's leaf (``/proc/PID/cgroup`` names the leaf, read while the pidfd pins the process: if it
died since, the signal through the pidfd fails harmlessly), and only then signalled — through the pidfd.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Iterable

FREEZE_TIMEOUT_S = 1.0


def in_leaf(pid: int, leaf_name: str, proc: str = "/proc") -> bool:
    """Whether process ``pid`` is in a cgroup named ``leaf_name`` (``exec-<execution id>``), or below one (a
    session's keeper and calls), in any hierarchy."""
    try:
        with open(f"{proc}/{pid}/cgroup", encoding="utf-8", errors="replace") as f:
            return any(line.rstrip("\n").endswith("/" + leaf_name) or f"/{leaf_name}/" in line for line in f)
    except OSError:
        return False


def sigkill_each(pids: Iterable[int], leaf_name: str, *, proc: str = "/proc") -> int:
    """SIGKILL, through a pidfd, every pid that is a process of the leaf; returns how many were signalled."""
    signalled = 0
    for pid in pids:
        try:
            pidfd = os.pidfd_open(pid)
        except ProcessLookupError:
            continue
        try:
            if not in_leaf(pid, leaf_name, proc):  # exited, and the pid now belongs to someone else
                continue
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
    leaf_name: str,
    *,
    proc: str = "/proc",
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
            sigkill_each(pids, leaf_name, proc=proc)
        finally:
            thaw()
        if frozen or not pids:
            return
