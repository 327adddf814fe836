"""A sandbox's network namespace, made before the sandbox: loopback up and one listening socket inside it.

The socket is the only door out: whoever holds it (the daemon's egress proxy) accepts what the sandbox
connects to ``127.0.0.1:PORT``, in the sandbox's namespace, while the namespace itself keeps no route out.
The sandbox joins the namespace (``setns``) instead of making a fresh one, so the door is open before its
first instruction runs — a connection made at once waits in the backlog, it is never refused.

Made by one thread of the daemon: ``unshare(CLONE_NEWNET)`` moves only the calling thread, which returns to
the daemon's namespace before anything else runs on it.
"""

from __future__ import annotations

import ctypes
import fcntl
import logging
import os
import socket
import struct
from dataclasses import dataclass

log = logging.getLogger(__name__)

LISTEN_BACKLOG = 1024
_THREAD_NETNS = "/proc/thread-self/ns/net"
_CLONE_NEWNET = 0x40000000
_SIOCGIFFLAGS, _SIOCSIFFLAGS, _IFF_UP = 0x8913, 0x8914, 0x1
_IFREQ = "16sh22x"
_libc = ctypes.CDLL(None, use_errno=True)  # unshare and setns: os has them from Python 3.12 only


def _check(result: int, what: str) -> None:
    if result < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def loopback_up() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        ifreq = fcntl.ioctl(s, _SIOCGIFFLAGS, struct.pack(_IFREQ, b"lo", 0))
        flags = struct.unpack(_IFREQ, ifreq)[1]
        fcntl.ioctl(s, _SIOCSIFFLAGS, struct.pack(_IFREQ, b"lo", flags | _IFF_UP))


@dataclass
class PreparedNetwork:
    """The namespace (an fd the spawner passes on) and the listening socket inside it; both closed by
    :meth:`close`, once the sandbox is gone."""

    namespace_fd: int
    listener: socket.socket

    def close(self) -> None:
        self.listener.close()
        if self.namespace_fd >= 0:
            os.close(self.namespace_fd)
            self.namespace_fd = -1


def prepare_network(listen_port: int) -> PreparedNetwork:
    """A fresh network namespace with loopback up and a non-blocking socket listening on
    ``127.0.0.1:listen_port`` in it. Blocking (a few milliseconds): call it in a worker thread."""
    home = os.open(_THREAD_NETNS, os.O_RDONLY | os.O_CLOEXEC)
    try:
        _check(_libc.unshare(_CLONE_NEWNET), "unshare(CLONE_NEWNET)")
        try:
            loopback_up()
            listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            try:
                listener.bind(("127.0.0.1", listen_port))
                listener.listen(LISTEN_BACKLOG)
                listener.setblocking(False)
                namespace_fd = os.open(_THREAD_NETNS, os.O_RDONLY | os.O_CLOEXEC)
            except BaseException:
                listener.close()
                raise
        finally:
            _go_home(home)
    finally:
        os.close(home)
    return PreparedNetwork(namespace_fd, listener)


def _go_home(home: int) -> None:
    try:
        _check(_libc.setns(home, _CLONE_NEWNET), "setns(CLONE_NEWNET)")
    except OSError as e:  # this thread would live on in a sandbox's namespace: nothing it did could be trusted
        log.critical("cannot return a daemon thread to the daemon's network namespace: %s", e)
        os.abort()
