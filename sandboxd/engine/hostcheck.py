"""What a host must offer before any sandbox can be built on it, checked once at start with the remedy."""

from __future__ import annotations

import ctypes
import errno
from collections.abc import Callable
from pathlib import Path

from sandboxd.base.errors import ConfigError

NOT_A_MOUNT_POINT = (
    "the root directory / is not a mount point here (a chroot?): sandboxes need it to be one to make their "
    "mounts private and to pivot_root. Bind-mount the chroot onto itself before entering it "
    "(mount --bind DIR DIR; mount --make-rprivate DIR), or run sandboxd on the host or in a container"
)


MOUNT_API_MISSING = (
    "this kernel lacks the mount API that sandboxes bind their root with (open_tree, move_mount, mount_setattr: "
    "Linux 5.12 or later; Debian 12's 6.1 has it): run sandboxd on a newer kernel"
)
_MOUNT_SETATTR_NR = 442  # the same number on every architecture of the unified syscall table


def has_mount_setattr() -> bool:
    """Whether the kernel knows mount_setattr (asked with a bad descriptor and path: any error but ENOSYS if it
    does)."""
    libc = ctypes.CDLL(None, use_errno=True)
    ctypes.set_errno(0)
    libc.syscall(_MOUNT_SETATTR_NR, -1, b"", 0, None, 0)
    return ctypes.get_errno() != errno.ENOSYS


def root_is_mount_point(mountinfo: Path = Path("/proc/self/mountinfo")) -> bool:
    """Whether this process's ``/`` is the root of a mount (false in a plain chroot)."""
    with mountinfo.open(encoding="utf-8", errors="replace") as lines:
        return any(line.split()[4] == "/" for line in lines)


def check_host(mountinfo: Path = Path("/proc/self/mountinfo"),
               mount_api: Callable[[], bool] = has_mount_setattr) -> None:
    """Raise :class:`ConfigError` naming what is missing and what to do."""
    if not root_is_mount_point(mountinfo):
        raise ConfigError(NOT_A_MOUNT_POINT)
    if not mount_api():
        raise ConfigError(MOUNT_API_MISSING)
