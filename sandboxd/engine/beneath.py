"""Resolving and creating strictly beneath a directory fd, for :mod:`sandboxd.engine.files`.

CPython 3.11 does not expose ``openat2(2)``, so it is called through ctypes. Every path is resolved by
:func:`openat2_beneath` with all four confining flags, and only single names are then created (``mkdirat``,
``openat`` with ``O_EXCL | O_NOFOLLOW``) relative to a directory fd opened that way. When the kernel has no
openat2 (ENOSYS, Linux < 5.6) the request is refused: a path-string walk in Python cannot be made safe
against a session that renames and plants links while the daemon walks, so there is no fallback.

:func:`refusal` turns the errno of a refused file into the sentence the caller sees.
"""

from __future__ import annotations

import ctypes
import errno
import os
import secrets

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long

# 437 on x86_64 and on every other architecture of the unified syscall table (aarch64 included); Linux 5.6
_SYS_OPENAT2 = 437
# include/uapi/linux/openat2.h
RESOLVE_NO_XDEV = 0x01
RESOLVE_NO_MAGICLINKS = 0x02
RESOLVE_NO_SYMLINKS = 0x04
RESOLVE_BENEATH = 0x08
RESOLVE_CONFINED = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS | RESOLVE_NO_XDEV
# no O_NOFOLLOW: with O_PATH it would hand back a trailing link itself; without it, RESOLVE_NO_SYMLINKS says ELOOP
BENEATH_DIR_FLAGS = os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC
CREATED_DIR_MODE = 0o2770
_TEMP_PREFIX = ".sandboxd-upload-"
_TEMP_NAME_ATTEMPTS = 8
# EAGAIN: the kernel saw a concurrent rename and could not prove the walk stayed beneath; it may be retried
_RACE_RETRIES = 4


class FileRefused(Exception):
    """A path or a file is refused. The message says what and why, in words fit for the caller who asked."""


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64), ("resolve", ctypes.c_uint64)]


_HOW_SIZE = ctypes.c_size_t(ctypes.sizeof(_OpenHow))  # syscall(2) is variadic: every argument a full word


def openat2_beneath(dir_fd: int, path: str, flags: int) -> int:
    """``openat2(dir_fd, path, {flags, 0, RESOLVE_CONFINED})``: a new fd, or ``OSError`` with the real errno
    and a message naming the call. Never creates (``O_CREAT`` needs a mode; create with ``openat`` on one name
    relative to a directory opened here). :class:`FileRefused` when the kernel has no openat2."""
    how = _OpenHow(flags, 0, RESOLVE_CONFINED)
    raw = os.fsencode(path)
    err = errno.EAGAIN
    for _ in range(_RACE_RETRIES):
        fd = int(_libc.syscall(_SYS_OPENAT2, ctypes.c_long(dir_fd), raw, ctypes.byref(how), _HOW_SIZE))
        if fd >= 0:
            return fd
        err = ctypes.get_errno()
        if err not in (errno.EAGAIN, errno.EINTR):
            break
    if err == errno.ENOSYS:
        raise FileRefused(
            "moving files in and out of a session needs openat2(2), Linux 5.6 or newer "
            f"(this kernel is {os.uname().release}): run the daemon on a newer kernel"
        )
    raise OSError(err, f"openat2({dir_fd}, {path!r}, {flags:#o}, beneath): {os.strerror(err)}")


def shown(path: str) -> str:
    """``path`` as a message shows it: as is, or quoted and escaped when it holds control characters."""
    if not path:
        return "."
    return path if path.isprintable() else repr(path)


def refusal(error: OSError, path: str) -> FileRefused:
    """The :class:`FileRefused` for an ``OSError`` met while moving ``path`` (relative to the work dir)."""
    p = shown(path)
    full = f"the session's /work is full: {p} does not fit (remove files from /work or move less)"
    messages = {
        errno.ENOENT: f"no such file: {p}",
        errno.ELOOP: f"{p} crosses a symbolic link: links in the session's /work are never followed",
        errno.EXDEV: f"{p} crosses into another mount: only the session's own /work is reachable",
        errno.EISDIR: f"{p} is a directory",
        errno.ENOTDIR: f"{p} goes through something that is not a directory",
        errno.ENOSPC: full,
        errno.EDQUOT: full,
        errno.EFBIG: f"{p} is larger than the session's /work allows for one file",
        errno.EACCES: f"permission denied: {p}",
        errno.EPERM: f"operation not permitted: {p}",
        errno.ENXIO: f"{p} is not a regular file: only regular files can be moved",
        errno.ENAMETOOLONG: f"{p}: the path, or a name in it, is too long",
        errno.EMFILE: f"the daemon has too many files open to move {p}: retry later",
        errno.ENFILE: f"the host has too many files open to move {p}: retry later",
    }
    code = error.errno if error.errno is not None else 0
    return FileRefused(messages.get(code, f"{p}: {os.strerror(code)}"))


def open_parent_creating(root_fd: int, parent: str, uid: int, gid: int) -> int:
    """An fd on the directory ``parent`` below ``root_fd`` (``""`` is root_fd itself), its missing
    components created owned ``uid:gid``. The caller closes it."""
    try:
        return openat2_beneath(root_fd, parent or ".", BENEATH_DIR_FLAGS)
    except OSError as e:
        if e.errno != errno.ENOENT:
            raise refusal(e, parent) from e
    fd = _open_dir(root_fd, ".", ".")
    try:
        walked: list[str] = []
        for name in parent.split("/"):
            walked.append(name)
            try:
                below = openat2_beneath(fd, name, BENEATH_DIR_FLAGS)
            except OSError as e:
                if e.errno != errno.ENOENT:
                    raise refusal(e, "/".join(walked)) from e
                below = _make_dir(fd, name, "/".join(walked), uid, gid)
            os.close(fd)
            fd = below
    except BaseException:
        os.close(fd)
        raise
    return fd


def _open_dir(dir_fd: int, name: str, shown_path: str) -> int:
    try:
        return openat2_beneath(dir_fd, name, BENEATH_DIR_FLAGS)
    except OSError as e:
        raise refusal(e, shown_path) from e


def _make_dir(parent_fd: int, name: str, shown_path: str, uid: int, gid: int) -> int:
    """mkdirat ``name`` and return an fd on it, owned ``uid:gid`` and ``0o2770`` if this call created it (one
    made meanwhile by someone else is opened as it is, or refused if it is not a plain directory)."""
    try:
        os.mkdir(name, 0o700, dir_fd=parent_fd)  # 0o700 until it has its owner
        created = True
    except FileExistsError:
        created = False
    except OSError as e:
        raise refusal(e, shown_path) from e
    if not created:
        return _open_dir(parent_fd, name, shown_path)
    # a real (not O_PATH) fd: fchown and fchmod refuse O_PATH ones
    try:
        fd = openat2_beneath(parent_fd, name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as e:
        raise refusal(e, shown_path) from e
    try:
        os.fchown(fd, uid, gid)
        os.fchmod(fd, CREATED_DIR_MODE)
    except OSError as e:
        os.close(fd)
        raise refusal(e, shown_path) from e
    return fd


def create_temp(parent_fd: int, path: str) -> tuple[str, int]:
    """A new empty file with a random name in ``parent_fd`` (O_EXCL, never through a link): its name and fd."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    for _ in range(_TEMP_NAME_ATTEMPTS):
        name = _TEMP_PREFIX + secrets.token_hex(8)
        try:
            return name, os.open(name, flags, 0o600, dir_fd=parent_fd)
        except FileExistsError:
            continue
    raise FileRefused(f"no free temporary name beside {shown(path)} after {_TEMP_NAME_ATTEMPTS} attempts")
