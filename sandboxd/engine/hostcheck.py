"""What a host must offer before any sandbox can be built on it, checked once at start with the remedy."""

from __future__ import annotations

from pathlib import Path

from sandboxd.base.errors import ConfigError

NOT_A_MOUNT_POINT = (
    "the root directory / is not a mount point here (a chroot?): sandboxes need it to be one to make their "
    "mounts private and to pivot_root. Bind-mount the chroot onto itself before entering it "
    "(mount --bind DIR DIR; mount --make-rprivate DIR), or run sandboxd on the host or in a container"
)


def root_is_mount_point(mountinfo: Path = Path("/proc/self/mountinfo")) -> bool:
    """Whether this process's ``/`` is the root of a mount (false in a plain chroot)."""
    with mountinfo.open(encoding="utf-8", errors="replace") as lines:
        return any(line.split()[4] == "/" for line in lines)


def check_host(mountinfo: Path = Path("/proc/self/mountinfo")) -> None:
    """Raise :class:`ConfigError` naming what is missing and what to do."""
    if not root_is_mount_point(mountinfo):
        raise ConfigError(NOT_A_MOUNT_POINT)
