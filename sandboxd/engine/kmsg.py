"""Which syscall a seccomp filter killed a process for, read from the kernel's audit record.

A process killed by ``SECCOMP_RET_KILL_*`` dies by SIGSYS; the syscall number travels only in the siginfo of
the dying process, and ``/proc/PID/syscall`` of the zombie reads ``-1``. The kernel also logs every such kill
as an audit record (``type=1326 … pid=<host pid> … syscall=<nr>``) — to ``/dev/kmsg`` when no audit daemon
holds the netlink socket, which is the case on hosts without auditd. kauditd prints asynchronously, so the
lookup retries briefly. When the record cannot be found (auditd running, ``audit=0``), the verdict is still
SECCOMP_VIOLATION and the syscall is reported unknown.
"""

from __future__ import annotations

import os
import re
import time

_RECORD = re.compile(rb"type=1326 .*? pid=(\d+) .*? sig=31 .*? syscall=(\d+)")


def _records(path: str) -> list[bytes]:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return []
    records: list[bytes] = []
    try:
        while True:
            try:
                record = os.read(fd, 8192)
            except BlockingIOError:
                return records
            except BrokenPipeError:  # a record was overwritten while we read: go on with the next
                continue
            except OSError:
                return records
            if not record:  # EOF: /dev/kmsg says EAGAIN instead, a saved log file says this
                return records
            records.append(record)
    finally:
        os.close(fd)


def find_seccomp_kill(pid: int, *, path: str = "/dev/kmsg", wait_s: float = 0.5) -> int | None:
    """The syscall number of the seccomp kill of host ``pid``, or None when no record says."""
    deadline = time.monotonic() + wait_s
    while True:
        lines = [line for record in _records(path) for line in record.splitlines()]
        for line in reversed(lines):  # the newest record of that pid
            match = _RECORD.search(line)
            if match and int(match.group(1)) == pid:
                return int(match.group(2))
        if time.monotonic() >= deadline:
            return None
        time.sleep(0.02)
