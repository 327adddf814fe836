"""Choose the cgroup backend once, at start, from mountinfo and /proc/self/cgroup.

v2 when the unified hierarchy offers memory, cpu and pids in our cgroup (which may be the root of a cgroup
namespace delegated to us — a container's — but not the host's root cgroup); else v1 when memory, cpu, cpuacct,
pids and freezer v1 hierarchies are mounted (separately, or co-mounted like ``cpu,cpuacct``); else an error
with the remedy. Mount points are read relative to ``/sys/fs/cgroup`` and re-rooted at ``root``, so unit
tests run on a temp dir with fixture mountinfo and /proc/self/cgroup files.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from sandboxd.base.errors import CgroupError
from sandboxd.engine.cgroups import fsutil, v1, v2
from sandboxd.engine.cgroups.base import Backend

DEFAULT_ROOT = PurePosixPath("/sys/fs/cgroup")
_OCTAL_ESCAPE = re.compile(r"\\([0-7]{3})")


@dataclass(frozen=True)
class Mount:
    mount_point: str
    mount_root: str  # the part of the hierarchy this mount shows (``/`` unless bind-mounted from below)
    fstype: str
    controllers: frozenset[str]  # for cgroup v1: from the super options (``rw,cpu,cpuacct``)


@dataclass(frozen=True)
class Membership:
    hierarchy_id: int
    controllers: frozenset[str]
    path: str


def _unescape(field: str) -> str:
    return _OCTAL_ESCAPE.sub(lambda m: chr(int(m.group(1), 8)), field)


def parse_mountinfo(text: str) -> list[Mount]:
    """cgroup and cgroup2 mounts from /proc/self/mountinfo (proc(5))."""
    mounts = []
    for line in text.splitlines():
        fields = line.split()
        if "-" not in fields:
            continue
        sep = fields.index("-")
        if len(fields) < sep + 4 or sep < 5:
            continue
        fstype, super_opts = fields[sep + 1], fields[sep + 3]
        if fstype not in ("cgroup", "cgroup2"):
            continue
        controllers = frozenset(super_opts.split(",")) if fstype == "cgroup" else frozenset()
        mounts.append(Mount(_unescape(fields[4]), _unescape(fields[3]), fstype, controllers))
    return mounts


def parse_proc_cgroup(text: str) -> list[Membership]:
    """``id:controllers:path`` lines of /proc/self/cgroup."""
    result = []
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3 or not parts[0].isdigit():
            continue
        controllers = frozenset(c for c in parts[1].split(",") if c)
        result.append(Membership(int(parts[0]), controllers, parts[2]))
    return result


def _rebase(mount_point: str, root: Path) -> Path:
    point = PurePosixPath(mount_point)
    try:
        return root / point.relative_to(DEFAULT_ROOT)
    except ValueError:
        return Path(point)  # a hierarchy mounted outside /sys/fs/cgroup is used where it is


def _own_dir(mount: Mount, cgroup_path: str, root: Path) -> Path:
    """Where our cgroup ``cgroup_path`` (as /proc/self/cgroup shows it) is under this mount."""
    own, shown = PurePosixPath(cgroup_path), PurePosixPath(mount.mount_root)
    if ".." in own.parts or not own.is_absolute():
        raise CgroupError(f"our cgroup {cgroup_path!r} is outside this cgroup namespace")
    try:
        rel = own.relative_to(shown)
    except ValueError:
        raise CgroupError(
            f"our cgroup {cgroup_path} is not visible in the mount at {mount.mount_point} "
            f"(which shows {mount.mount_root})"
        ) from None
    return _rebase(mount.mount_point, root) / rel


def _try_v2(mounts: list[Mount], members: list[Membership], root: Path) -> v2.V2Backend | str:
    unified = next((m for m in members if m.hierarchy_id == 0 and not m.controllers), None)
    mount = next((m for m in mounts if m.fstype == "cgroup2"), None)
    if unified is None or mount is None:
        return "no cgroup2 hierarchy is mounted"
    try:
        own = _own_dir(mount, unified.path, root)
        available = fsutil.read_text(own / "cgroup.controllers").split()
    except CgroupError as e:
        return str(e)
    missing = [c for c in v2.REQUIRED_CONTROLLERS if c not in available]
    if missing:
        return f"the unified hierarchy at {own} does not offer {', '.join(missing)}"
    return v2.V2Backend(own, is_root_cgroup=is_host_root(unified.path, own))


def is_host_root(cgroup_path: str, own: Path) -> bool:
    """Whether our cgroup is the root of the whole hierarchy — the host's, which is no one's to manage.

    In a private cgroup namespace (a container's) /proc/self/cgroup says ``0::/`` too, but that root is the
    container's own cgroup, delegated to it: a non-root cgroup, with the files only those have
    (``cgroup.type``, ``cgroup.events``; see the kernel's cgroup-v2.rst, "Core Interface Files")."""
    return cgroup_path == "/" and not os.path.lexists(own / "cgroup.type")


def _try_v1(mounts: list[Mount], members: list[Membership], root: Path, instance: str) -> v1.V1Backend | str:
    own_dirs: dict[str, Path] = {}
    missing = []
    for controller in v1.CONTROLLERS:
        mount = next((m for m in mounts if m.fstype == "cgroup" and controller in m.controllers), None)
        member = next((m for m in members if controller in m.controllers), None)
        if mount is None or member is None:
            missing.append(controller)
            continue
        try:
            own_dirs[controller] = _own_dir(mount, member.path, root)
        except CgroupError as e:
            return str(e)
    if missing:
        return f"no cgroup v1 hierarchy is mounted for {', '.join(missing)}"
    return v1.V1Backend(own_dirs, instance)


def detect_backend(
    root: Path = Path("/sys/fs/cgroup"),
    instance: str = "default",
    proc_self_cgroup: Path = Path("/proc/self/cgroup"),
    mountinfo: Path = Path("/proc/self/mountinfo"),
) -> Backend:
    """The one backend for this host. Raises :class:`CgroupError` with the remedy when neither fits."""
    fsutil.check_instance_name(instance)
    try:
        mounts = parse_mountinfo(mountinfo.read_text())
        members = parse_proc_cgroup(proc_self_cgroup.read_text())
    except OSError as e:
        raise CgroupError(f"cannot read {e.filename}: [Errno {e.errno}] {e.strerror}") from e
    found_v2 = _try_v2(mounts, members, root)
    if not isinstance(found_v2, str):
        return found_v2
    found_v1 = _try_v1(mounts, members, root, instance)
    if not isinstance(found_v1, str):
        return found_v1
    raise CgroupError(
        f"no usable cgroups: v2: {found_v2}; v1: {found_v1}. Remedy: run sandboxd under systemd with "
        "Delegate=yes on a cgroup v2 host (memory, cpu and pids controllers enabled), or mount the v1 "
        "memory, cpu, cpuacct, pids and freezer controllers under /sys/fs/cgroup"
    )
