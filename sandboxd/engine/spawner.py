"""The spawner: a single-threaded process server, started with exec once by the daemon and kept warm.

The gRPC process has threads and must never fork; this process has exactly one thread and starts one waiter
per execution — ``sandbox-waiter`` (``child/native/waiter.c``), by ``posix_spawn``: a ``vfork``, so neither
this interpreter's page tables nor its pages are copied, and no Python runs in any process of a sandbox.

Wire protocol — one ``AF_UNIX``/``SOCK_SEQPACKET`` socketpair, one JSON object per message:

=============  ==================================================  ==============================================
direction      message                                             fds (``SCM_RIGHTS``)
=============  ==================================================  ==============================================
spawner→daemon ``{"op": "ready", "pid": P}``, once at start        -
daemon→spawner ``{"op": "spawn", "join": B,                       stdin r, stdout w, stderr w; the plan (a sealed
               "gate": G}``, per execution                         memfd, ``JailPlan.encode``); the write ends of
                                                                   the sandbox's error pipe and status pipe; when
                                                                   B the network namespace to join (or, for a
                                                                   call in a session, its pidfd); when G a pooled
                                                                   sandbox's gate
=============  ==================================================  ==============================================

Nothing comes back per execution: the daemon reads the read ends of the two report pipes itself
(:mod:`sandboxd.engine.reports`) — the error pipe's record or its EOF (the handler passed ``execve``), the
watch's lines on the status pipe. A waiter that cannot start is reported on the error pipe by the spawner. The
spawner passes the plan on unread and reaps its waiters through their pidfds. EOF on the control socket means the
daemon is gone: the spawner exits, and its children follow through their parent-death signals.
"""

from __future__ import annotations

import json
import os
import resource
import selectors
import signal
import socket
import sys
from collections.abc import Sequence
from typing import Any

import prctl

from sandboxd.base.errors import ConfigError
from sandboxd.engine.child.waiter import WAITER_NAME, open_waiter

MAX_MESSAGE_BYTES = 1 << 16  # a control message; plans travel in memfds
SOCKET_BUFFER_BYTES = 4 << 20
# The waiter starts with every disposition at its default: this process ignores SIGINT, Python SIGPIPE and
# SIGXFSZ, and ignored signals survive execve.
_ALL_SIGNALS = tuple(sig for sig in signal.valid_signals() if sig not in (signal.SIGKILL, signal.SIGSTOP))
REPORT_MAX_BYTES = 4000  # native/report.h


def report(err_w: int, stage: str, err: int, message: str) -> None:
    """A failure record on the sandbox's error pipe, as the native steps write it (``native/report.h``)."""
    try:
        os.write(err_w, f"{stage}\0{err}\0{message}".encode(errors="replace")[:REPORT_MAX_BYTES])
    except OSError:
        pass


class Spawner:
    def __init__(self, control: socket.socket, waiter_fd: int) -> None:
        self._control = control
        self._waiter_fd = waiter_fd  # opened once: every sandbox runs this very file
        self._selector = selectors.DefaultSelector()

    def send(self, message: dict[str, Any]) -> None:
        self._control.send(json.dumps(message).encode())

    def serve(self) -> None:
        self._selector.register(self._control, selectors.EVENT_READ)
        self.send({"op": "ready", "pid": os.getpid()})
        while True:
            for key, _ in self._selector.select():
                if key.fileobj is self._control:
                    if not self._on_control():
                        return
                else:  # a waiter's pidfd: it has ended
                    self._selector.unregister(key.fd)
                    os.close(key.fd)
                    os.waitpid(key.data, 0)

    def _on_control(self) -> bool:
        msg, fds, _, _ = socket.recv_fds(self._control, MAX_MESSAGE_BYTES, 8)
        # Close-on-exec, as every descriptor of ours (recv_fds leaves them inheritable): the error pipe must end
        # with the exec of each process that holds it — its EOF says the handler passed execve.
        for fd in fds:
            os.set_inheritable(fd, False)
        if not msg:
            return False
        request = json.loads(msg)
        if request.get("op") != "spawn" or len(fds) != 6 + bool(request.get("join")) + bool(request.get("gate")):
            for fd in fds:
                os.close(fd)
            raise SystemExit(f"spawner: protocol violation: {request.get('op')!r} with {len(fds)} fds")
        extra = list(fds[6:])
        join = extra.pop(0) if request.get("join") else -1
        gate = extra.pop(0) if request.get("gate") else -1
        self._spawn(fds[:6], join, gate)
        return True

    def _spawn(self, fds: list[int], join: int, gate: int) -> None:
        err_w = fds[4]
        try:
            pid = start_waiter(self._waiter_fd, fds, join, gate)
        except OSError as e:
            report(err_w, "spawn", e.errno or 0, f"spawn: {WAITER_NAME}: {e.strerror}")  # then EOF: nothing ran
            return
        finally:
            for fd in (*fds, join, gate):
                if fd >= 0:
                    os.close(fd)
        self._selector.register(os.pidfd_open(pid), selectors.EVENT_READ, data=pid)


def start_waiter(waiter_fd: int, fds: Sequence[int], join: int = -1, gate: int = -1) -> int:
    """Start ``sandbox-waiter`` (``waiter_fd``, :func:`open_waiter`) with ``fds`` (stdin, stdout, stderr, the
    plan, the error and status pipes' write ends), ``join`` and ``gate`` (-1: none): the numbers in its argv, the
    descriptors inheritable for the spawn alone (the caller has one thread: nothing else can fork meanwhile). Its
    pid; OSError if it cannot start. The caller closes ``fds``, ``join`` and ``gate``."""
    stdin, stdout, stderr, plan, err_w, status_w = fds
    inherited = [fd for fd in (*fds, join, gate) if fd >= 0]
    argv = [WAITER_NAME, *(str(n) for n in (os.getpid(), plan, stdin, stdout, stderr, err_w, status_w, join, gate))]
    for fd in inherited:
        os.set_inheritable(fd, True)
    try:
        return os.posix_spawn(f"/proc/self/fd/{waiter_fd}", argv, {}, setsigdef=_ALL_SIGNALS, setsigmask=())
    finally:
        for fd in inherited:
            os.set_inheritable(fd, False)


def _prepare_process() -> None:
    """0-2 open (a child's descriptors must land above them) and as many descriptors as the hard limit
    allows: each running execution holds its waiter's pidfd here."""
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:
            null = os.open("/dev/null", os.O_RDWR)
            if null != fd:
                os.dup2(null, fd)
                os.close(null)
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def main() -> None:
    # Back at the niceness of any process: the daemon serves above it (sandboxd.server.daemon.DAEMON_NICE), its
    # sandboxes must not, and each inherits ours.
    os.setpriority(os.PRIO_PROCESS, 0, 0)
    _prepare_process()
    control = socket.socket(fileno=int(sys.argv[1]))
    control.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SOCKET_BUFFER_BYTES)
    prctl.set_pdeathsig(signal.SIGKILL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a terminal's ^C is for the daemon, which stops us by EOF
    prctl.set_name("sandboxd-spawn")
    try:
        waiter_fd = open_waiter()
    except ConfigError as e:
        raise SystemExit(f"spawner: {e}") from None
    Spawner(control, waiter_fd).serve()


if __name__ == "__main__":
    main()



