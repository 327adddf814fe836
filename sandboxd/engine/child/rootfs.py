"""Child side: build a fresh, read-only root for the sandbox and pivot into it.

Runs in the sandbox's pid 1, inside its private mount namespace, before privileges are dropped. The root is a
small tmpfs mounted on an empty host directory *in this namespace only*, so nothing is created on the host and
nothing is left behind if the whole tree is killed.

Host-side paths are never resolved through a symlink a tool could have planted: every bind source and target
is walked component by component with ``O_PATH|O_NOFOLLOW`` and mounted through ``/proc/self/fd/N`` (the
approach runc uses against the symlink-race CVEs of this field).
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from sandboxd.engine.child import syscalls as sc
from sandboxd.engine.child.report import SetupError, enter

_RO_FLAGS = sc.MS_REMOUNT | sc.MS_BIND | sc.MS_RDONLY | sc.MS_NOSUID | sc.MS_NODEV
_DEV_NODES = ("null", "zero", "full", "random", "urandom")
_DEV_LINKS = {"fd": "/proc/self/fd", "stdin": "/proc/self/fd/0", "stdout": "/proc/self/fd/1",
              "stderr": "/proc/self/fd/2"}
# /proc as runc masks it (its maskedPaths / readonlyPaths): kernel memory, keys, timers and scheduler
# internals, hardware trees hidden; the sysctl, bus, filesystem and irq trees read-only.
PROC_MASKED_FILES = ("kcore", "keys", "timer_list", "timer_stats", "sched_debug", "latency_stats",
                     "sysrq-trigger")
PROC_MASKED_DIRS = ("acpi", "scsi", "asound")
PROC_READ_ONLY = ("sys", "bus", "fs", "irq")


@dataclass(frozen=True)
class Bind:
    source: str
    target: str
    writable: bool


@dataclass(frozen=True)
class RootPlan:
    mountpoint: str  # empty host dir; a tmpfs goes on it in this mount namespace only
    system_binds: tuple[str, ...]
    etc_binds: tuple[str, ...]
    etc_files: dict[str, str]  # generated /etc files: name -> content
    binds: tuple[Bind, ...]
    workdir: str
    workdir_source: str | None
    tmpfs_size_bytes: int
    uid: int
    gid: int


@contextmanager
def _fd(fd: int) -> Iterator[int]:
    try:
        yield fd
    finally:
        os.close(fd)


def open_nofollow(path: str, *, base_fd: int | None = None) -> int:
    """Open ``path`` with O_PATH, refusing a symlink in any component. Relative to ``base_fd`` if given."""
    parts = [p for p in path.split("/") if p]
    if ".." in parts:
        raise OSError(22, f"'..' in path {path!r}")
    fd = os.open("/", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC) if base_fd is None else os.dup(base_fd)
    try:
        for part in parts:
            nxt = os.open(part, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
            os.close(fd)
            fd = nxt
            if stat.S_ISLNK(os.fstat(fd).st_mode):
                raise OSError(40, f"refusing symlink at {part!r} in {path!r}")
        return fd
    except BaseException:
        os.close(fd)
        raise


def _make_target(root_fd: int, target: str, is_dir: bool) -> int:
    """Create ``target`` below the root without following symlinks; return an O_PATH fd to it."""
    parts = [p for p in target.split("/") if p]
    fd = os.dup(root_fd)
    try:
        for i, part in enumerate(parts):
            last = i == len(parts) - 1
            try:
                if last and not is_dir:
                    # O_EXCL: never open what is there (a FIFO planted at the target would block the open)
                    os.close(os.open(part, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                                     0o644, dir_fd=fd))
                else:
                    os.mkdir(part, 0o755, dir_fd=fd)
            except FileExistsError:
                pass
            nxt = os.open(part, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
            os.close(fd)
            fd = nxt
            mode = os.fstat(fd).st_mode
            if stat.S_ISLNK(mode):
                raise OSError(40, f"refusing symlink at {part!r} in sandbox path {target!r}")
            wanted_dir = is_dir or not last
            if stat.S_ISDIR(mode) != wanted_dir or not (stat.S_ISDIR(mode) or stat.S_ISREG(mode)):
                kind = "a directory" if wanted_dir else "a regular file"
                raise OSError(20 if wanted_dir else 21, f"refusing {part!r} in sandbox path {target!r}: not {kind}")
        return fd
    except BaseException:
        os.close(fd)
        raise


def _bind(root_fd: int, source: str, target: str, *, writable: bool, device: bool = False) -> None:
    """Bind ``source`` (host) at ``target`` (below the root), non-recursively: host submounts stay hidden."""
    with _fd(open_nofollow(source)) as src:
        is_dir = stat.S_ISDIR(os.fstat(src).st_mode)
        with _fd(_make_target(root_fd, target, is_dir)) as dst:
            sc.mount(f"/proc/self/fd/{src}", f"/proc/self/fd/{dst}", None, sc.MS_BIND)
    # Re-open: a normal lookup crosses onto the new mount, which is the one to remount.
    flags = sc.MS_REMOUNT | sc.MS_BIND | sc.MS_NOSUID
    flags |= sc.MS_NOEXEC if device else sc.MS_NODEV
    flags |= 0 if writable else sc.MS_RDONLY
    with _fd(open_nofollow(target, base_fd=root_fd)) as mnt:
        sc.mount(None, f"/proc/self/fd/{mnt}", None, flags)


def _tmpfs(path: str, options: str, flags: int = sc.MS_NOSUID | sc.MS_NODEV) -> None:
    os.makedirs(path, exist_ok=True)
    sc.mount("tmpfs", path, "tmpfs", flags, options)


def _system_dirs(root: str, root_fd: int, paths: tuple[str, ...]) -> None:
    for path in paths:
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            continue
        if stat.S_ISLNK(st.st_mode):  # merged /usr: /bin -> usr/bin
            os.symlink(os.readlink(path), root + path)
        else:
            _bind(root_fd, path, path, writable=False)


def _etc(root: str, root_fd: int, plan: RootPlan) -> None:
    os.makedirs(root + "/etc", 0o755, exist_ok=True)
    for name, content in plan.etc_files.items():
        with open(f"{root}/etc/{name}", "w", encoding="utf-8") as f:
            f.write(content)
    for path in plan.etc_binds:
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            continue
        if stat.S_ISLNK(st.st_mode):
            os.makedirs(os.path.dirname(root + path), exist_ok=True)
            os.symlink(os.readlink(path), root + path)
        else:
            _bind(root_fd, path, path, writable=False)


def _dev(root: str, root_fd: int, tmpfs_size_bytes: int) -> None:
    dev = root + "/dev"
    _tmpfs(dev, "size=64k,mode=0755", sc.MS_NOSUID | sc.MS_NOEXEC)
    for node in _DEV_NODES:
        _bind(root_fd, f"/dev/{node}", f"/dev/{node}", writable=True, device=True)
    for name, target in _DEV_LINKS.items():
        os.symlink(target, f"{dev}/{name}")
    _tmpfs(f"{dev}/shm", f"size={tmpfs_size_bytes},mode=1777", sc.MS_NOSUID | sc.MS_NODEV | sc.MS_NOEXEC)
    sc.mount(None, dev, None, _RO_FLAGS | sc.MS_NOEXEC)


def _mask_proc(proc: str, root_fd: int) -> None:
    """Hide what runc hides in a fresh /proc and make the kernel's tunables read-only (absent ones skipped)."""
    for name in PROC_MASKED_FILES:
        if os.path.lexists(f"{proc}/{name}"):
            _bind(root_fd, "/dev/null", f"/proc/{name}", writable=False, device=True)
    for name in PROC_MASKED_DIRS:
        if os.path.isdir(f"{proc}/{name}"):
            sc.mount("tmpfs", f"{proc}/{name}", "tmpfs", sc.MS_RDONLY | sc.MS_NOSUID | sc.MS_NODEV | sc.MS_NOEXEC,
                     "size=0,mode=0555")
    for name in PROC_READ_ONLY:
        path = f"{proc}/{name}"
        if os.path.isdir(path):
            sc.mount(path, path, None, sc.MS_BIND | sc.MS_REC)
            sc.mount(None, path, None, _RO_FLAGS | sc.MS_NOEXEC)


def build_and_pivot(plan: RootPlan) -> None:
    """Mount the sandbox's root on ``plan.mountpoint``, populate it, pivot into it, make it read-only.

    Binds are mounted in ``plan.binds`` order (parents before children: the plan sorts them); the stage of
    bind ``i`` is ``bind i: SOURCE -> TARGET``."""
    root = plan.mountpoint
    step = enter("rootfs")
    try:
        sc.mount("tmpfs", root, "tmpfs", sc.MS_NOSUID | sc.MS_NODEV, "size=1m,mode=0755")
        with _fd(os.open(root, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)) as root_fd:
            step = enter("mount system")
            _system_dirs(root, root_fd, plan.system_binds)
            step = enter("mount /etc")
            _etc(root, root_fd, plan)
            step = enter("mount /proc")
            os.mkdir(root + "/proc", 0o555)
            sc.mount("proc", root + "/proc", "proc", sc.MS_NOSUID | sc.MS_NODEV | sc.MS_NOEXEC)
            step = enter("mask /proc")
            _mask_proc(root + "/proc", root_fd)
            step = enter("mount /dev")
            _dev(root, root_fd, plan.tmpfs_size_bytes)
            step = enter("mount /tmp")
            _tmpfs(root + "/tmp", f"size={plan.tmpfs_size_bytes},mode=1777")
            step = enter("mount work dir")
            if plan.workdir_source is not None:
                _bind(root_fd, plan.workdir_source, plan.workdir, writable=True)
            else:
                _tmpfs(root + plan.workdir,
                       f"size={plan.tmpfs_size_bytes},mode=0700,uid={plan.uid},gid={plan.gid}")
            for index, bind in enumerate(plan.binds):
                step = enter(f"bind {index}: {bind.source} -> {bind.target}")
                _bind(root_fd, bind.source, bind.target, writable=bind.writable)
        step = enter("pivot_root")
        os.chdir(root)
        sc.pivot_root(".", ".")  # the old root ends up stacked on "/": detach it
        sc.umount2(".", sc.MNT_DETACH)
        os.chdir("/")
        step = enter("remount ro")
        sc.mount(None, "/", None, _RO_FLAGS)
    except OSError as e:
        raise SetupError(step, e.errno or 0, f"{step}: {e.strerror or e}") from e
