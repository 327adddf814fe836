"""Thin ctypes wrappers for the Linux calls CPython 3.11 does not expose.

Each raises ``OSError`` with the real errno and a message naming the call and its arguments, so the jail can
report exactly which step failed. Nothing here allocates much or imports at call time: these run in forked
children between ``fork`` and ``execve``.
"""

from __future__ import annotations

import ctypes
import os

_libc = ctypes.CDLL(None, use_errno=True)

CLONE_NEWNS = 0x00020000
CLONE_NEWCGROUP = 0x02000000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000

MS_RDONLY = 0x1
MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_NOEXEC = 0x8
MS_REMOUNT = 0x20
MS_BIND = 0x1000
MS_REC = 0x4000
MS_PRIVATE = 0x40000
MS_SLAVE = 0x80000
MNT_DETACH = 0x2

_SYS_PIVOT_ROOT = 155  # x86_64
_SYS_CLOSE_RANGE = 436

_libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]
_libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
_libc.unshare.argtypes = [ctypes.c_int]
_libc.setns.argtypes = [ctypes.c_int, ctypes.c_int]
_libc.sethostname.argtypes = [ctypes.c_char_p, ctypes.c_size_t]
_libc.syscall.restype = ctypes.c_long


def _check(result: int, what: str) -> None:
    if result < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def _b(value: str | None) -> bytes | None:
    return None if value is None else os.fsencode(value)


def mount(source: str | None, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    result = _libc.mount(_b(source), _b(target), _b(fstype), flags, _b(data))
    _check(result, f"mount({source!r}, {target!r}, {fstype!r}, {flags:#x}, {data!r})")


def umount2(target: str, flags: int) -> None:
    _check(_libc.umount2(_b(target), flags), f"umount2({target!r}, {flags:#x})")


def unshare(flags: int) -> None:
    _check(_libc.unshare(flags), f"unshare({flags:#x})")


def setns(fd: int, nstype: int) -> None:
    _check(_libc.setns(fd, nstype), f"setns({fd}, {nstype:#x})")


def sethostname(name: str) -> None:
    raw = name.encode()
    _check(_libc.sethostname(raw, len(raw)), f"sethostname({name!r})")


def pivot_root(new_root: str, put_old: str) -> None:
    result = _libc.syscall(_SYS_PIVOT_ROOT, _b(new_root), _b(put_old))
    _check(result, f"pivot_root({new_root!r}, {put_old!r})")


def close_range(first_fd: int, last_fd: int = 0xFFFFFFFF) -> None:
    """Close every fd from ``first_fd`` to ``last_fd`` (close_range(2)); falls back to os.closerange."""
    if first_fd > last_fd:
        return
    result = _libc.syscall(_SYS_CLOSE_RANGE, ctypes.c_uint(first_fd), ctypes.c_uint(last_fd), 0)
    if result < 0:
        os.closerange(first_fd, min(last_fd + 1, os.sysconf("SC_OPEN_MAX")))


def close_all_except(keep: set[int]) -> None:
    """Close every descriptor of this process that is not in ``keep`` — what a forked child inherited
    from the spawner (other executions' pipes, the control socket, the spawner's own stdio)."""
    previous = -1
    for fd in sorted(keep):
        close_range(previous + 1, fd - 1)
        previous = fd
    close_range(previous + 1)


_SYS_CAPSET = 126
_LINUX_CAPABILITY_VERSION_3 = 0x20080522
_PR_CAP_AMBIENT = 47
_PR_CAP_AMBIENT_CLEAR_ALL = 4


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]


def clear_all_capabilities() -> None:
    """Empty the effective, permitted, inheritable and ambient sets of the calling thread."""
    header = _CapHeader(_LINUX_CAPABILITY_VERSION_3, 0)
    data = (_CapData * 2)()
    _check(_libc.syscall(_SYS_CAPSET, ctypes.byref(header), ctypes.byref(data)), "capset(0)")
    _check(_libc.prctl(_PR_CAP_AMBIENT, _PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0), "prctl(PR_CAP_AMBIENT_CLEAR_ALL)")


_PTRACE_SEIZE = 0x4206
PTRACE_O_TRACEFORK = 0x02
PTRACE_O_TRACEVFORK = 0x04
PTRACE_O_TRACECLONE = 0x08
PTRACE_O_TRACEEXIT = 0x40
PTRACE_O_EXITKILL = 0x100000
_libc.ptrace.restype = ctypes.c_long
_libc.ptrace.argtypes = [ctypes.c_long, ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p]


def ptrace_seize(pid: int, options: int) -> None:
    """Trace ``pid`` (its stops are handled by ``sandbox-watch``, which the tracer becomes)."""
    _check(_libc.ptrace(_PTRACE_SEIZE, pid, None, ctypes.c_void_p(options)), f"ptrace(SEIZE, {pid})")


_SYS_CLONE3 = 435
CLONE_INTO_CGROUP = 0x200000000
# The GIL stays held through the call, as os.fork holds it: the child resumes in a consistent interpreter.
_pylibc = ctypes.PyDLL(None, use_errno=True)
_pylibc.syscall.restype = ctypes.c_long


class _CloneArgs(ctypes.Structure):
    """``struct clone_args`` up to ``cgroup`` (CLONE_ARGS_SIZE_VER2, Linux 5.7)."""

    _fields_ = [(name, ctypes.c_uint64) for name in (
        "flags", "pidfd", "child_tid", "parent_tid", "exit_signal", "stack", "stack_size", "tls", "set_tid",
        "set_tid_size", "cgroup")]


def fork_into_cgroup(cgroup_fd: int) -> int:
    """``fork()`` whose child is born in the cgroup v2 directory ``cgroup_fd`` (``clone3`` with
    ``CLONE_INTO_CGROUP``): no migration afterwards, so no wait for the RCU grace period a first
    ``cgroup.procs`` write after a quiet spell costs. 0 in the child, its pid in the parent; OSError where the
    kernel cannot (before 5.7: ENOSYS; a v1 directory: EBADF) — the caller forks and writes instead.

    The child is a process as os.fork makes one, without Python's after-fork hooks: for a single-threaded
    caller whose child never returns to the code that forked it (the spawner's waiter)."""
    args = _CloneArgs(flags=CLONE_INTO_CGROUP, exit_signal=17, cgroup=cgroup_fd)  # SIGCHLD
    result = _pylibc.syscall(ctypes.c_long(_SYS_CLONE3), ctypes.byref(args), ctypes.c_size_t(ctypes.sizeof(args)))
    _check(result, f"clone3(CLONE_INTO_CGROUP, cgroup fd {cgroup_fd})")
    return int(result)
