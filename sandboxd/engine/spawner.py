"""The spawner: a single-threaded fork server, started with exec once by the daemon and kept warm.

The gRPC process has threads and must never fork; this process has exactly one thread, has already imported
everything the child path needs, and forks one waiter per execution (no interpreter start per execution).

Wire protocol — one ``AF_UNIX``/``SOCK_SEQPACKET`` socketpair, one JSON object per message:

=============  ==================================================  ==============================================
direction      message                                             fds (``SCM_RIGHTS``)
=============  ==================================================  ==============================================
spawner→daemon ``{"op": "ready", "pid": P}``, once at start        -
daemon→spawner ``{"op": "spawn", "join": B,                       stdin r, stdout w, stderr w; the plan (a sealed
               "gate": G}``, per execution                         memfd of JSON); the write ends of the sandbox's
                                                                   error pipe and status pipe; when B the network
                                                                   namespace to join (or, for a call in a session,
                                                                   its pidfd); when G a pooled sandbox's gate
=============  ==================================================  ==============================================

Nothing comes back per execution: the daemon reads the read ends of the two report pipes itself
(:mod:`sandboxd.engine.reports`) — the error pipe's record or its EOF (the handler passed ``execve``), the
watch's lines on the status pipe. A fork that fails is reported on the error pipe by the spawner. The spawner
reaps its waiters through their pidfds. EOF on the control socket means the daemon is gone: the spawner exits,
and its children follow through their parent-death signals.
"""

from __future__ import annotations

import json
import os
import resource
import selectors
import signal
import socket
import sys
from typing import Any

import prctl

from sandboxd.base.errors import ConfigError
from sandboxd.engine.child.helpers import Helpers, open_helpers
from sandboxd.engine.child.plan import JailPlan
from sandboxd.engine.child.report import report
from sandboxd.engine.child.waiter import run_waiter

MAX_MESSAGE_BYTES = 1 << 16  # a control message; plans travel in memfds
SOCKET_BUFFER_BYTES = 4 << 20


class Spawner:
    def __init__(self, control: socket.socket, helpers: Helpers) -> None:
        self._control = control
        self._helpers = helpers  # opened once: every sandbox runs these very files
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
        stdio = (fds[0], fds[1], fds[2])
        with os.fdopen(fds[3], "rb") as plan:
            wire = json.loads(plan.read())
        err_w, status_w = fds[4], fds[5]
        extra = list(fds[6:])
        join = extra.pop(0) if request.get("join") else -1
        gate = extra.pop(0) if request.get("gate") else -1
        self._spawn(JailPlan.from_wire(wire), stdio, err_w, status_w, join, gate)
        return True

    def _spawn(self, plan: JailPlan, stdio: tuple[int, int, int], err_w: int, status_w: int, join: int,
               gate: int = -1) -> None:
        inherited = (*stdio, err_w, status_w, *(fd for fd in (join, gate) if fd >= 0))
        try:
            pid = os.fork()
        except OSError as e:
            report(err_w, "fork", e.errno or 0, f"fork: {e.strerror}")  # then EOF on both: nothing ran
            for fd in inherited:
                os.close(fd)
            return
        if pid == 0:
            try:
                self._control.close()
                run_waiter(plan, stdio, err_w, status_w, os.getppid(), self._helpers, join, gate)
            finally:
                os._exit(127)
        for fd in inherited:
            os.close(fd)
        self._selector.register(os.pidfd_open(pid), selectors.EVENT_READ, data=pid)


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
        helpers = open_helpers()
    except ConfigError as e:
        raise SystemExit(f"spawner: {e}") from None
    Spawner(control, helpers).serve()


if __name__ == "__main__":
    main()



