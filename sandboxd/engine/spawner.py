"""The spawner: a single-threaded fork server, started with exec once by the daemon and kept warm.

The gRPC process has threads and must never fork; this process has exactly one thread, has already imported
everything the child path needs, and forks one child per execution (no interpreter start per execution).

Wire protocol — one ``AF_UNIX``/``SOCK_SEQPACKET`` socketpair, one JSON object per message, the execution's
stdio pipe ends attached to ``spawn`` with ``SCM_RIGHTS``:

=============  =========================================================  ================  ==================
direction      message                                                    fds               when
=============  =========================================================  ================  ==================
spawner→daemon ``{"op": "ready", "pid": P}``                              -                 once, at start
daemon→spawner ``{"op": "spawn", "id": ID, "join": B,``                 stdin r, stdout   per execution
                                                                          w, stderr w, the
                                                                          plan (a sealed
                                                                          memfd of JSON),
                                                                          and when B the
                                                                          network namespace
                                                                          to join (or, for a
                                                                          call in a session,
                                                                          its pidfd); when
               ``"gate": G}``                                             G a pooled
                                                                          sandbox's gate
spawner→daemon ``{"op": "started", "id": ID, "pid": P}``                  -                 handler passed
                                                                                            ``execve``; P is
                                                                                            its host pid
spawner→daemon ``{"op": "setup_failed", "id": ID, "stage": S,``           -                 a step before
               ``"errno": E, "message": M}``                                                ``execve`` failed;
                                                                                            nothing ran
spawner→daemon ``{"op": "exited", "id": ID, "wait_status": W|null,``      -                 always, last for
               ``"cpu_user_usec": U, "cpu_system_usec": S,``                                ID: the sandbox
               ``"maxrss_bytes": R, "traced": T,``                                          ended (W: the
               ``"seccomp_kills": [[P, A, N]…],``
               ``"seccomp_kills_more": M}`` (M: kills past the named ones)
                                                                                            handler's, null:
                                                                                            unknown; P/A/N:
                                                                                            process, AUDIT_ARCH
                                                                                            and syscall of each
                                                                                            seccomp kill)
=============  =========================================================  ================  ==================

``started``/``setup_failed`` is decided by the close-on-exec error pipe: EOF with nothing read means ``execve``
succeeded. EOF on the control socket means the daemon is gone: the spawner exits, and its children follow
through their parent-death signals.
"""

from __future__ import annotations

import json
import os
import resource
import selectors
import signal
import socket
import sys
from dataclasses import dataclass, field
from typing import Any

import prctl

from sandboxd.base.errors import ConfigError
from sandboxd.engine.child.helpers import Helpers, open_helpers
from sandboxd.engine.child.plan import JailPlan
from sandboxd.engine.child.waiter import run_waiter

MAX_MESSAGE_BYTES = 1 << 16  # a control message; plans travel in memfds
SOCKET_BUFFER_BYTES = 4 << 20


@dataclass
class _Child:
    execution_id: str
    waiter_pid: int
    errpipe: int
    status_pipe: int
    handler_pid: int | None = None
    error: bytes = b""
    error_done: bool = False
    announced: bool = False
    finished: bool = False  # "exited" sent
    status_buf: bytes = b""
    fds_open: set[int] = field(default_factory=set)


class Spawner:
    def __init__(self, control: socket.socket, helpers: Helpers) -> None:
        self._control = control
        self._helpers = helpers  # opened once: every sandbox runs these very files
        self._selector = selectors.DefaultSelector()
        self._children: dict[int, _Child] = {}  # by pipe fd

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
                elif self._children.get(key.fd) is key.data:
                    # One select() batch may hold both pipes of a child: handling the status pipe's EOF
                    # drains and closes the error pipe, and its fd number may even be reused by a spawn
                    # handled earlier in the batch. Each key is acted on only while it is still current.
                    self._on_pipe(int(key.fd))

    def _on_control(self) -> bool:
        msg, fds, _, _ = socket.recv_fds(self._control, MAX_MESSAGE_BYTES, 6)
        if not msg:
            return False
        request = json.loads(msg)
        if request.get("op") != "spawn" or len(fds) != 4 + bool(request.get("join")) + bool(request.get("gate")):
            for fd in fds:
                os.close(fd)
            raise SystemExit(f"spawner: protocol violation: {request.get('op')!r} with {len(fds)} fds")
        stdio = (fds[0], fds[1], fds[2])
        with os.fdopen(fds[3], "rb") as plan:
            wire = json.loads(plan.read())
        extra = list(fds[4:])
        join = extra.pop(0) if request.get("join") else -1
        gate = extra.pop(0) if request.get("gate") else -1
        self._spawn(str(request["id"]), JailPlan.from_wire(wire), stdio, join, gate)
        return True

    def _spawn(self, execution_id: str, plan: JailPlan, stdio: tuple[int, int, int], join: int,
               gate: int = -1) -> None:
        inherited = (*stdio, *(fd for fd in (join, gate) if fd >= 0))
        err_r, err_w = os.pipe2(os.O_CLOEXEC)
        status_r, status_w = os.pipe2(os.O_CLOEXEC)
        try:
            pid = os.fork()
        except OSError as e:
            for fd in (*inherited, err_r, err_w, status_r, status_w):
                os.close(fd)
            self.send({"op": "setup_failed", "id": execution_id, "stage": "fork", "errno": e.errno,
                       "message": f"fork: {e.strerror}"})
            self.send({"op": "exited", "id": execution_id, "wait_status": None, "cpu_user_usec": 0,
                       "cpu_system_usec": 0, "maxrss_bytes": 0, "traced": False, "seccomp_kills": []})
            return
        if pid == 0:
            try:
                self._control.close()
                os.close(err_r)
                os.close(status_r)
                run_waiter(plan, stdio, err_w, status_w, os.getppid(), self._helpers, join, gate)
            finally:
                os._exit(127)
        for fd in (*inherited, err_w, status_w):
            os.close(fd)
        child = _Child(execution_id, pid, err_r, status_r, fds_open={err_r, status_r})
        for fd in (err_r, status_r):
            self._children[fd] = child
            self._selector.register(fd, selectors.EVENT_READ, data=child)

    def _on_pipe(self, fd: int) -> None:
        child = self._children[fd]
        data = os.read(fd, 65536)
        if fd == child.errpipe:
            child.error += data
            if not data:
                child.error_done = True
                self._close(child, fd)
        else:
            child.status_buf += data
            if child.handler_pid is None and b"\n" in child.status_buf:
                first = child.status_buf.split(b"\n", 1)[0].split()
                child.handler_pid = int(first[1])
        self._maybe_announce(child)
        if fd != child.status_pipe:
            return
        if not child.finished and (not data or _has_exit_line(child.status_buf)):
            # The waiter's "exit" line is its last word, written once everything of the sandbox is gone:
            # reported at once, not after the waiter's own exit (its namespaces' teardown).
            self._finish(child)
        if not data:
            self._close(child, fd)
            os.waitpid(child.waiter_pid, 0)

    def _maybe_announce(self, child: _Child) -> None:
        if child.announced or not child.error_done:
            return
        if child.error:
            stage, err, message = child.error.decode(errors="replace").split("\0", 2)
            self.send({"op": "setup_failed", "id": child.execution_id, "stage": stage, "errno": int(err),
                       "message": message})
        elif child.handler_pid is not None:
            self.send({"op": "started", "id": child.execution_id, "pid": child.handler_pid})
        else:
            return
        child.announced = True

    def _finish(self, child: _Child) -> None:
        child.finished = True
        if child.errpipe in child.fds_open:  # drain: every writer is gone once the sandbox has ended
            os.set_blocking(child.errpipe, True)
            while chunk := os.read(child.errpipe, 65536):
                child.error += chunk
            child.error_done = True
            self._close(child, child.errpipe)
        self._maybe_announce(child)  # the error pipe's EOF may only have been read just now
        if not child.announced and not child.error:
            child.error = b"spawn\x000\x00the sandbox's setup process died before reporting"
            self._maybe_announce(child)
        kills: list[list[int]] = []
        message: dict[str, Any] = {"op": "exited", "id": child.execution_id, "wait_status": None,
                                   "cpu_user_usec": 0, "cpu_system_usec": 0, "maxrss_bytes": 0,
                                   "traced": False, "seccomp_kills": kills}
        for line in child.status_buf.decode().splitlines():
            parts = line.split()
            if parts[0] == "exit":
                message |= {"wait_status": int(parts[1]), "cpu_user_usec": int(parts[2]),
                            "cpu_system_usec": int(parts[3]), "maxrss_bytes": int(parts[4]),
                            "traced": parts[5] == "1"}
            elif parts[0] == "seccomp":
                kills.append([int(parts[1]), int(parts[2]), int(parts[3])])
            elif parts[0] == "seccomp-more":
                message["seccomp_kills_more"] = int(parts[1])
        self.send(message)

    def _close(self, child: _Child, fd: int) -> None:
        self._selector.unregister(fd)
        os.close(fd)
        child.fds_open.discard(fd)
        del self._children[fd]


def _has_exit_line(status: bytes) -> bool:
    """Whether the waiter's last line, ``exit …``, is in: one write below PIPE_BUF, so whole when there."""
    return status.startswith(b"exit ") or b"\nexit " in status


def _prepare_process() -> None:
    """0-2 open (a child's descriptors must land above them) and as many descriptors as the hard limit
    allows: each running execution holds two pipes here."""
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



