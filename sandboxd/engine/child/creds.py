"""Credentials, signals and process limits, in the order the kernel needs: rlimits (while still privileged, on
the final descriptors), the capability bounding set, supplementary groups and ids, then every remaining
capability. Each step raises; nothing is skipped."""

from __future__ import annotations

import errno
import os
import resource
import signal

import prctl

from sandboxd.engine.child import syscalls as sc

_RLIMITS = {"cpu": resource.RLIMIT_CPU, "fsize": resource.RLIMIT_FSIZE, "nofile": resource.RLIMIT_NOFILE,
            "core": resource.RLIMIT_CORE}
_UNCATCHABLE = {signal.SIGKILL, signal.SIGSTOP}

with open("/proc/sys/kernel/cap_last_cap", encoding="ascii") as _f:
    CAP_LAST_CAP = int(_f.read())


def reset_signals() -> None:
    """Every disposition to its default and an empty mask, as on a normal host: the spawner ignores SIGINT,
    Python ignores SIGPIPE and SIGXFSZ, and ignored signals survive ``execve``."""
    for sig in signal.valid_signals():
        if sig in _UNCATCHABLE:
            continue
        try:
            signal.signal(sig, signal.SIG_DFL)
        except (OSError, ValueError):  # 32/33: reserved by the C library
            pass
    signal.pthread_sigmask(signal.SIG_SETMASK, [])


def set_rlimits(rlimits: dict[str, tuple[int, int]]) -> None:
    for name, (soft, hard) in rlimits.items():
        resource.setrlimit(_RLIMITS[name], (soft, hard))


def drop_bounding_set() -> None:
    for cap in range(CAP_LAST_CAP + 1):
        prctl.capbset_drop(cap)


def become(uid: int, gid: int, groups: tuple[int, ...]) -> None:
    os.setgroups(list(groups))
    os.setresgid(gid, gid, gid)
    os.setresuid(uid, uid, uid)


def clear_capabilities() -> None:
    sc.clear_all_capabilities()


def set_loginuid(uid: int) -> None:
    """The audit login uid of the sandbox: set while privileged, so an unprivileged handler cannot set it
    itself (the kernel lets a process with an unset loginuid set it once, to anything, 0 included).
    Absent only on kernels without audit, where there is nothing to set."""
    try:
        fd = os.open("/proc/self/loginuid", os.O_WRONLY | os.O_CLOEXEC)
    except OSError as e:
        if e.errno == errno.ENOENT:
            return
        raise
    try:
        os.write(fd, str(uid).encode())
    finally:
        os.close(fd)
