"""Safe cgroupfs file and directory operations shared by both backends.

Files are opened with ``O_NOFOLLOW`` and never created (no ``O_CREAT``): a cgroupfs holds no symlinks and the
kernel makes every control file, so a symlink or a missing file is an attack or a bug, never something to
paper over. Every error names the file and, for writes, the value.

Directory creation and removal go through :class:`DirOps` so unit tests can stand in for the kernel: on a
real cgroupfs ``mkdir`` makes the control files and ``rmdir`` removes a directory full of them; on a temp
dir neither happens, so tests inject operations that do.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import stat
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from sandboxd.base.errors import CgroupError

StrPath = str | bytes | os.PathLike[str] | os.PathLike[bytes]

_OPEN_FLAGS = os.O_NOFOLLOW | os.O_CLOEXEC
_LEAF_NAME = re.compile(r"exec-[A-Za-z0-9_.-]{1,128}")
_INSTANCE_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")
RMDIR_BUDGET_S = 2.0


def _show(path: StrPath) -> str:
    return os.fsdecode(os.fspath(path))


def _why(err: OSError) -> str:
    if err.errno == errno.ELOOP:
        return f"[Errno {err.errno}] refusing to follow a symlink in a cgroupfs"
    return f"[Errno {err.errno}] {err.strerror}"


def read_text(path: StrPath) -> str:
    """The whole content of a cgroup file."""
    try:
        fd = os.open(path, os.O_RDONLY | _OPEN_FLAGS)
    except OSError as e:
        raise CgroupError(f"cannot read {_show(path)}: {_why(e)}") from e
    try:
        chunks = []
        while chunk := os.read(fd, 65536):
            chunks.append(chunk)
    except OSError as e:
        raise CgroupError(f"cannot read {_show(path)}: {_why(e)}") from e
    finally:
        os.close(fd)
    return b"".join(chunks).decode()


def read_bytes_or_none(path: StrPath) -> bytes | None:
    """A cgroup file's content, None when it cannot be read (missing on this kernel, removed)."""
    try:
        return read_text(path).encode()
    except CgroupError:
        return None


def content_of(paths: Sequence[str], contents: Sequence[bytes | None], index: int) -> bytes:
    """What was read of ``paths[index]`` (``contents`` in the order of ``paths``); CgroupError naming the file
    when it was not read."""
    if len(contents) != len(paths):
        raise CgroupError(f"{len(contents)} accounting files read, not the {len(paths)} asked for")
    content = contents[index]
    if content is None:
        raise CgroupError(f"cannot read {paths[index]}")
    return content


def write_text(path: StrPath, value: str) -> None:
    """Write ``value`` in one ``write(2)`` — cgroup files take one value per write."""
    data = value.encode()
    try:
        fd = os.open(path, os.O_WRONLY | os.O_TRUNC | _OPEN_FLAGS)  # O_TRUNC: as `echo >`
        try:
            written = os.write(fd, data)
        finally:
            os.close(fd)
    except OSError as e:
        raise CgroupError(f"cannot write {value!r} to {_show(path)}: {_why(e)}") from e
    if written != len(data):
        raise CgroupError(f"cannot write {value!r} to {_show(path)}: short write ({written} of {len(data)})")


def parse_keyed(text: str) -> dict[str, int]:
    """``key value`` lines (memory.events, cpu.stat, memory.oom_control, cpuacct.stat) to a dict."""
    result: dict[str, int] = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].lstrip("-").isdigit():
            result[parts[0]] = int(parts[1])
    return result


def oom_kills(text: str | bytes) -> int:
    """How many of a cgroup's tasks the kernel OOM-killed: the ``oom_kill`` line of v2's memory.events or v1's
    memory.oom_control (there from kernel 4.13)."""
    return parse_keyed(text.decode() if isinstance(text, bytes) else text).get("oom_kill", 0)


def parse_pids(text: str) -> list[int]:
    return [int(line) for line in text.split() if line]


def leaf_name(execution_id: str) -> str:
    name = f"exec-{execution_id}"
    check_leaf_name(name)
    return name


def check_leaf_name(name: str) -> None:
    if not _LEAF_NAME.fullmatch(name):
        raise CgroupError(f"invalid cgroup leaf name {name!r} (want exec-<id>, id of [A-Za-z0-9_.-])")


def check_instance_name(instance: str) -> None:
    if not _INSTANCE_NAME.fullmatch(instance):
        raise CgroupError(f"invalid sandboxd instance name {instance!r} (want 1-64 of [A-Za-z0-9_.-])")


def _mkdir(path: str) -> None:
    os.mkdir(path, 0o755)


@dataclass(frozen=True)
class DirOps:
    """How cgroup directories are made and removed, and where processes' cgroups are read (the kernel's job;
    injectable for unit tests)."""

    mkdir: Callable[[str], None] = _mkdir
    rmdir: Callable[[str], None] = os.rmdir
    sleep: Callable[[float], None] = time.sleep
    proc: str = "/proc"  # /proc/PID/cgroup tells which cgroup a process is in


def make_dir(ops: DirOps, path: str, *, exist_ok: bool) -> None:
    """mkdir; an existing entry is fine only when ``exist_ok`` and it is a real directory (not a symlink)."""
    try:
        ops.mkdir(path)
        return
    except FileExistsError:
        if not exist_ok:
            raise CgroupError(f"cannot create cgroup {path}: it already exists") from None
    except OSError as e:
        raise CgroupError(f"cannot create cgroup {path}: {_why(e)}") from e
    try:
        mode = os.lstat(path).st_mode
    except OSError as e:
        raise CgroupError(f"cannot inspect cgroup {path}: {_why(e)}") from e
    if not stat.S_ISDIR(mode):
        raise CgroupError(
            f"{path} exists but is not a directory (a symlink in a cgroupfs is an attack or bug)"
        )


def remove_dir(ops: DirOps, path: str, *, budget_s: float = RMDIR_BUDGET_S) -> None:
    """rmdir, retrying EBUSY (tasks still exiting) with exponential backoff; a missing dir is fine."""
    deadline = time.monotonic() + budget_s
    delay_s = 0.005
    while True:
        try:
            ops.rmdir(path)
            return
        except FileNotFoundError:
            return
        except OSError as e:
            if e.errno != errno.EBUSY or time.monotonic() + delay_s > deadline:
                raise CgroupError(f"cannot remove cgroup {path}: {_why(e)}") from e
        ops.sleep(delay_s)
        delay_s = min(delay_s * 2, 0.25)


def remove_dir_if_empty(ops: DirOps, path: str) -> bool:
    """rmdir once; False (and nothing done) when it still has children or tasks."""
    try:
        ops.rmdir(path)
    except FileNotFoundError:
        return True
    except OSError as e:
        if e.errno in (errno.EBUSY, errno.ENOTEMPTY):
            return False
        raise CgroupError(f"cannot remove cgroup {path}: {_why(e)}") from e
    return True


def list_leaves(base: str) -> list[str]:
    """``exec-*`` directories directly below ``base`` (none when base does not exist yet)."""
    try:
        entries = list(os.scandir(base))
    except FileNotFoundError:
        return []
    except OSError as e:
        raise CgroupError(f"cannot list {base}: {_why(e)}") from e
    return sorted(e.name for e in entries if _LEAF_NAME.fullmatch(e.name) and e.is_dir(follow_symlinks=False))


def nested_leaves(path: str) -> list[str]:
    """The ``exec-*`` directories below ``path`` at any depth (a session's calls), deepest first: the order
    they can be removed in."""
    found: list[str] = []
    try:
        entries = list(os.scandir(path))
    except FileNotFoundError:
        return []
    except OSError as e:
        raise CgroupError(f"cannot list {path}: {_why(e)}") from e
    for entry in entries:
        if _LEAF_NAME.fullmatch(entry.name) and entry.is_dir(follow_symlinks=False):
            found += [*nested_leaves(entry.path), entry.path]
    return found


def pids_below(path: str) -> list[int]:
    """The processes of ``path`` and of every ``exec-*`` cgroup below it (v1's and v2's cgroup.procs list a
    cgroup's own members only)."""
    pids: set[int] = set()
    for directory in [*nested_leaves(path), path]:
        try:
            pids.update(parse_pids(read_text(os.path.join(directory, "cgroup.procs"))))
        except CgroupError:
            if os.path.isdir(directory):
                raise
    return sorted(pids)


def remove_quietly(ops: DirOps, paths: list[str]) -> None:
    """Best-effort removal of a half-made leaf while another error is being reported."""
    for path in reversed(paths):
        with contextlib.suppress(CgroupError):
            remove_dir(ops, path)


SWAP_ESCAPE_REMEDY = "boot with swapaccount=1 or turn swap off (swapoff -a)"


def swap_active(swaps_path: Path) -> bool:
    """Whether any swap device is on (``/proc/swaps`` has more than its header)."""
    lines = read_text(swaps_path).splitlines()
    return any(line.strip() for line in lines[1:])
