"""The daemon's Unix sockets (the gRPC one, the framed one): the path claimed, the group resolved."""

from __future__ import annotations

import grp
import logging
import os
import socket
import stat
from collections.abc import Callable
from pathlib import Path

from sandboxd.base.errors import ConfigError
from sandboxd.server.config import DEFAULT_SOCKET_GROUP

__all__ = ["bind_aside", "claim_socket_path", "socket_gid"]

log = logging.getLogger("sandboxd")


def claim_socket_path(path: Path, key: str) -> None:
    """Make way for a socket at ``path`` (the setting ``key``): a socket left by a daemon that died is
    removed; a file that is not a socket, or a socket another daemon serves, is refused."""
    if path.exists() or path.is_symlink():
        if not stat.S_ISSOCK(path.lstat().st_mode):
            raise ConfigError(f"{key}: {path} exists and is not a socket")
        if _socket_answers(path):
            raise ConfigError(f"{key}: another daemon is listening on {path}")
        path.unlink()  # left by a daemon that died
    path.parent.mkdir(mode=0o755, parents=True, exist_ok=True)


def bind_aside(path: Path, key: str, *, mode: int, gid: int, bind: Callable[[Path], object]) -> Path:
    """Claim ``path`` (see :func:`claim_socket_path`), then ``bind`` a socket beside it, born without access for
    anyone but root, given ``mode`` and group ``gid`` right after. Returns where it was bound: the caller renames
    it to ``path`` once it listens, so whoever sees the socket can use it."""
    claim_socket_path(path, key)
    bound = path.with_name(f".{path.name}.{os.getpid()}")
    bound.unlink(missing_ok=True)
    old_umask = os.umask(0o177)
    try:
        bind(bound)
    finally:
        os.umask(old_umask)
    os.chown(bound, 0, gid, follow_symlinks=False)
    os.chmod(bound, mode)  # Linux has no lchmod; the path is the socket just bound
    return bound


def socket_gid(group: str) -> int:
    try:
        return grp.getgrnam(group).gr_gid
    except KeyError:
        if group == DEFAULT_SOCKET_GROUP:
            log.info("group %r does not exist, so only root may use the socket; create it to let its members "
                     "call sandboxd (systemd-sysusers systemd/sandboxd.sysusers.conf, or groupadd --system %s)",
                     group, group)
            return 0
        raise ConfigError(f"daemon.socket_group: no group named {group!r}") from None


def _socket_answers(path: Path) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.settimeout(1.0)
        try:
            probe.connect(str(path))
        except OSError:
            return False
        return True
