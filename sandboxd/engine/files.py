"""Files moved in and out of a session's /work, resolved strictly beneath one directory fd.

The daemon (root, outside) holds an ``O_PATH`` fd on the session's work directory, opened through the magic
link ``/proc/<pid>/root/work``; everything here resolves relative to that fd and never by path string. Each
path goes through ``openat2(2)`` with ``RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS |
RESOLVE_NO_XDEV``: no ``..`` escape, no absolute jump, no symbolic link anywhere on the path (one planted by
the session pointing at a host file is refused, never followed) and no step into another mount. Files are
then created, renamed and removed by single names relative to the confined parent fd. Without openat2
(Linux < 5.6) every request is refused: there is no fallback to a path-string walk.

An upload is written to a temporary file beside its target and renamed over it on commit, so the target is
either the old file or the whole new one; a failed or aborted upload removes its temporary file. Directories
the upload needed are created (owned by the session, ``0o2770``) and kept, like ``mkdir -p``.

Writers and readers take a path below the work dir (what :func:`work_path` gives; they pass it through
:func:`work_path` again, which leaves such a path as it is and refuses anything else).
The calls block: the daemon runs them in a worker thread. One writer or reader is used by one thread.
"""

from __future__ import annotations

import hashlib
import logging
import os
import signal
import stat
from collections.abc import Iterator
from dataclasses import dataclass

from sandboxd.engine.beneath import FileRefused, create_temp, open_parent_creating, openat2_beneath, refusal, shown

__all__ = [
    "DEFAULT_FILE_MODE",
    "FILE_CHUNK_BYTES",
    "FileInfo",
    "FileReader",
    "FileRefused",
    "FileWriter",
    "work_path",
]

log = logging.getLogger(__name__)

FILE_CHUNK_BYTES = 64 * 1024
DEFAULT_FILE_MODE = 0o640
PATH_MAX_BYTES = 4096
NAME_MAX_BYTES = 255
# setuid/setgid are never set on an uploaded file: the daemon is root and the caller is not
_FILE_MODE_MASK = 0o7777 & ~(stat.S_ISUID | stat.S_ISGID)


def work_path(path: str, *, workdir: str = "/work") -> str:
    """What a caller wrote, as the relative path below ``workdir`` that :class:`FileWriter` and
    :class:`FileReader` take: ``data/x.csv``, ``/work/data/x.csv`` and ``./data//x.csv`` all give
    ``data/x.csv``. Refuses (:class:`FileRefused`) an empty path, a NUL, text that is not UTF-8, an absolute
    path outside ``workdir``, any ``..`` component, more than 4096 bytes, a name of more than 255 bytes and
    the work directory itself. Relative paths come out the same whatever ``workdir`` is."""
    if not path:
        raise FileRefused(f"the path is empty: name a file below {workdir}, e.g. data/x.csv")
    if "\0" in path:
        raise FileRefused(f"the path {path!r} contains a NUL byte")
    try:
        length_bytes = len(path.encode("utf-8"))
    except UnicodeEncodeError:
        raise FileRefused(f"the path {path!r} is not valid UTF-8") from None
    if length_bytes > PATH_MAX_BYTES:
        raise FileRefused(f"the path is {length_bytes} bytes long, more than the limit of {PATH_MAX_BYTES}")
    parts = [part for part in path.split("/") if part not in ("", ".")]
    if ".." in parts:
        raise FileRefused(f"the path {shown(path)} has a '..' component: name the file by its path below {workdir}")
    if path.startswith("/"):
        base = [part for part in workdir.split("/") if part not in ("", ".")]
        if parts[: len(base)] != base:
            raise FileRefused(f"{shown(path)} is outside {workdir}: only files below it can be moved")
        parts = parts[len(base) :]
    if not parts:
        raise FileRefused(f"{shown(path)} is the work directory itself: name a file below it, e.g. data/x.csv")
    for part in parts:
        if len(part.encode("utf-8")) > NAME_MAX_BYTES:
            raise FileRefused(f"the name {shown(part[:32])}… is longer than {NAME_MAX_BYTES} bytes")
    return "/".join(parts)


@dataclass(frozen=True)
class FileInfo:
    """One file as moved: ``path`` relative to the work dir (as normalized), its size, the SHA-256 (lower-case
    hex) of the bytes moved and its permission bits."""

    path: str
    size_bytes: int
    sha256: str
    mode: int


class FileWriter:
    """One upload: ``write`` the bytes, then ``commit`` (or ``abort``). The temporary file is created at once,
    beside the target, owned ``uid:gid`` with ``mode`` (setuid/setgid dropped); missing parent directories are
    created owned ``uid:gid``, ``0o2770`` — all strictly beneath ``root_fd``, which the caller keeps owning."""

    def __init__(self, root_fd: int, path: str, *, mode: int, uid: int, gid: int, max_bytes: int) -> None:
        if uid < 0 or gid < 0 or max_bytes < 0:
            raise ValueError(f"uid ({uid}), gid ({gid}) and max_bytes ({max_bytes}) must not be negative")
        self.path = work_path(path)
        self._max_bytes = max_bytes
        self._written_bytes = 0
        self._sha256 = hashlib.sha256()
        self._committed = False
        self._fd = -1
        self._temp_name: str | None = None
        parent, _, self._name = self.path.rpartition("/")
        self._parent_fd = open_parent_creating(root_fd, parent, uid, gid)
        try:
            self._refuse_unless_replaceable()
            self._temp_name, self._fd = create_temp(self._parent_fd, self.path)
            os.fchown(self._fd, uid, gid)
            os.fchmod(self._fd, mode & _FILE_MODE_MASK)  # after fchown, which would clear the bits it allows
        except OSError as e:
            self.abort()
            raise refusal(e, self.path) from e
        except BaseException:
            self.abort()
            raise

    def write(self, data: bytes) -> None:
        """Append ``data``. :class:`FileRefused` — with the temporary file already removed — once the upload
        would pass ``max_bytes`` in total, or when the session's /work is full."""
        self._require_open()
        if self._written_bytes + len(data) > self._max_bytes:
            self.abort()
            raise FileRefused(f"{shown(self.path)} is larger than the limit of {self._max_bytes} bytes")
        view = memoryview(data)
        try:
            while view:
                view = view[os.write(self._fd, view) :]
        except OSError as e:
            self.abort()
            raise refusal(e, self.path) from e
        self._sha256.update(data)
        self._written_bytes += len(data)

    def commit(self) -> FileInfo:
        """Flush the file and rename it over the target: a regular file there is replaced, a directory (or
        anything else) refused. On any failure the temporary file is removed and the old target is untouched."""
        temp_name = self._require_open()
        try:
            os.fsync(self._fd)
            mode = stat.S_IMODE(os.fstat(self._fd).st_mode)
            self._refuse_unless_replaceable()
            os.rename(temp_name, self._name, src_dir_fd=self._parent_fd, dst_dir_fd=self._parent_fd)
        except OSError as e:
            self.abort()
            raise refusal(e, self.path) from e
        except BaseException:
            self.abort()
            raise
        self._committed = True
        self._temp_name = None
        self._close()
        return FileInfo(self.path, self._written_bytes, self._sha256.hexdigest(), mode)

    def abort(self) -> None:
        """Remove the temporary file and close everything. Idempotent, and a no-op on a committed upload."""
        if self._temp_name is not None and not self._committed:
            try:
                ours = os.fstat(self._fd)
                there = os.stat(self._temp_name, dir_fd=self._parent_fd, follow_symlinks=False)
                if (there.st_dev, there.st_ino) == (ours.st_dev, ours.st_ino):  # not something put in its place
                    os.unlink(self._temp_name, dir_fd=self._parent_fd)
            except FileNotFoundError:
                pass
            except OSError as e:
                log.warning("cannot remove the temporary file of the upload to %s: %s", self.path, e)
        self._temp_name = None
        self._close()

    def __enter__(self) -> FileWriter:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.abort()

    def _require_open(self) -> str:
        """The temporary file's name, while the upload is still going."""
        if self._committed or self._temp_name is None:
            raise FileRefused(f"the upload to {shown(self.path)} is already over (committed, aborted or failed)")
        return self._temp_name

    def _refuse_unless_replaceable(self) -> None:
        """A clear message for a target that cannot be replaced; the rename itself never follows a link."""
        try:
            there = os.stat(self._name, dir_fd=self._parent_fd, follow_symlinks=False)
        except FileNotFoundError:
            return
        except OSError as e:
            raise refusal(e, self.path) from e
        if stat.S_ISDIR(there.st_mode):
            raise FileRefused(f"{shown(self.path)} is a directory: remove it or upload to another path")
        if stat.S_ISLNK(there.st_mode):
            raise FileRefused(f"{shown(self.path)} is a symbolic link, never followed nor replaced: remove it first")
        if not stat.S_ISREG(there.st_mode):
            raise FileRefused(f"{shown(self.path)} is not a regular file: remove it or upload to another path")

    def _close(self) -> None:
        for fd in (self._fd, self._parent_fd):
            if fd >= 0:
                os.close(fd)
        self._fd = self._parent_fd = -1


class FileReader:
    """One download of a regular file of at most ``max_bytes``: iterate :meth:`chunks`, then :meth:`info`.
    What is sent is the file as it was opened, up to the size it had then, even if it grows meanwhile."""

    def __init__(self, root_fd: int, path: str, *, max_bytes: int) -> None:
        self.path = work_path(path)
        self._sha256 = hashlib.sha256()
        self._read_bytes = 0
        self._started = self._exhausted = False
        # O_NONBLOCK: a FIFO opens at once (and is refused below) instead of waiting for a writer
        flags = os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_NOCTTY | os.O_CLOEXEC
        try:
            self._fd = openat2_beneath(root_fd, self.path, flags)
        except OSError as e:
            raise refusal(e, self.path) from e
        try:
            opened = os.fstat(self._fd)
            if stat.S_ISDIR(opened.st_mode):
                raise FileRefused(f"{shown(self.path)} is a directory: name a file in it")
            if not stat.S_ISREG(opened.st_mode):
                raise FileRefused(f"{shown(self.path)} is not a regular file: only regular files can be read")
            if opened.st_size > max_bytes:
                raise FileRefused(
                    f"{shown(self.path)} is {opened.st_size} bytes, more than the limit of {max_bytes} bytes"
                )
            os.set_blocking(self._fd, True)
        except BaseException:
            self.close()
            raise
        self._size_bytes = opened.st_size
        self._mode = stat.S_IMODE(opened.st_mode)

    def chunks(self) -> Iterator[bytes]:
        """The content, :data:`FILE_CHUNK_BYTES` at a time (the last chunk shorter). Once only."""
        if self._started:
            raise RuntimeError(f"chunks() of {self.path} was already called: a FileReader reads once")
        self._started = True
        return self._read()

    def info(self) -> FileInfo:
        """Size, SHA-256 and mode of what :meth:`chunks` gave — known once it is exhausted."""
        if not self._exhausted:
            raise RuntimeError(f"info() of {self.path} before chunks() was exhausted")
        return FileInfo(self.path, self._read_bytes, self._sha256.hexdigest(), self._mode)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> FileReader:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def _read(self) -> Iterator[bytes]:
        remaining_bytes = self._size_bytes
        while remaining_bytes > 0:
            try:
                data = os.read(self._fd, min(FILE_CHUNK_BYTES, remaining_bytes))
            except OSError as e:
                raise refusal(e, self.path) from e
            if not data:  # truncated while being read: what there was is what is sent
                break
            remaining_bytes -= len(data)
            self._read_bytes += len(data)
            self._sha256.update(data)
            yield data
        self._exhausted = True


def open_work_dir(pid: int, pidfd: int, workdir: str = "/work") -> int:
    """An O_PATH fd of ``workdir`` in the root of process ``pid`` (a session's keeper) — through its
    ``/proc/PID/root``, then checked through its pidfd to be that process's (alive: the pid was not reused)."""
    try:
        fd = os.open(f"/proc/{pid}/root{workdir}", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as e:
        raise FileRefused(f"the session's {workdir} cannot be reached: {e.strerror or e}") from None
    try:
        signal.pidfd_send_signal(pidfd, 0)
    except OSError:
        os.close(fd)
        raise FileRefused("the session has ended") from None
    return fd
