"""What GetInfo reports beside live state — the daemon's settings and what the host's kernel offers —
gathered once at start.

Only reads files under /proc and /sys and asks the kernel directly (``pidfd_open`` of our own pid):
nothing forks, nothing is written.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

_CGROUP2_MAGIC_FS = "cgroup2"


def kernel_release() -> str:
    return os.uname().release


def kernel_version(release: str) -> tuple[int, int]:
    match = re.match(r"(\d+)\.(\d+)", release)
    return (int(match.group(1)), int(match.group(2))) if match else (0, 0)


def _mount_fstypes(mountinfo: Path) -> dict[str, str]:
    """Mount point → filesystem type, from /proc/self/mountinfo."""
    mounts: dict[str, str] = {}
    try:
        lines = mountinfo.read_text().splitlines()
    except OSError:
        return mounts
    for line in lines:
        left, _, right = line.partition(" - ")
        fields = left.split()
        if len(fields) >= 5 and right:
            mounts[fields[4]] = right.split()[0]
    return mounts


def cgroup_mode(
    cgroup_root: Path = Path("/sys/fs/cgroup"), mountinfo: Path = Path("/proc/self/mountinfo")
) -> str:
    """``unified`` (v2 only), ``hybrid`` (v1 controllers + a v2 mount beside them) or ``legacy`` (v1 only)."""
    mounts = _mount_fstypes(mountinfo)
    if mounts.get(str(cgroup_root)) == _CGROUP2_MAGIC_FS:
        return "unified"
    if mounts.get(str(cgroup_root / "unified")) == _CGROUP2_MAGIC_FS:
        return "hybrid"
    return "legacy"


def _read(path: str) -> str:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return ""


def _pidfd_works() -> bool:
    try:
        fd = os.pidfd_open(os.getpid())
    except (AttributeError, OSError):
        return False
    os.close(fd)
    return True


def kernel_features() -> dict[str, bool]:
    """Named yes/no facts about the kernel that bear on how strong the sandbox is."""
    version = kernel_version(kernel_release())
    seccomp_actions = _read("/proc/sys/kernel/seccomp/actions_avail").split()
    user_namespaces = _read("/proc/sys/user/max_user_namespaces")
    return {
        "seccomp_filter": bool(seccomp_actions),
        "seccomp_kill_process": "kill_process" in seccomp_actions,
        "seccomp_log": "log" in seccomp_actions,
        "pidfd": _pidfd_works(),
        "user_namespaces": user_namespaces.isdigit() and int(user_namespaces) > 0,
        "cgroup_kill": version >= (5, 14),  # cgroup.kill (v2)
        "memory_peak": version >= (5, 19),  # memory.peak (v2)
        "cgroup2_mounted": cgroup_mode() != "legacy",
        "no_new_privs": version >= (3, 5),
    }


@dataclass(frozen=True)
class DaemonFacts:
    instance: str
    cgroup_mode: str = ""
    kernel_release: str = ""
    kernel_features: Mapping[str, bool] = field(default_factory=dict)

    @classmethod
    def gather(cls, *, instance: str) -> DaemonFacts:
        return cls(instance, cgroup_mode(), kernel_release(), kernel_features())
