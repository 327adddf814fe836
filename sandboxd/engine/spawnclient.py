"""Daemon side of the spawner: start it, send ``spawn`` requests with the stdio fds and the write ends of the
sandbox's report pipes, whose read ends :mod:`~sandboxd.engine.reports` reads on the event loop. asyncio only;
nothing here forks (the spawner is started once by :mod:`subprocess`).

The spawner is the native program ``sandboxd-spawn`` (``child/native/spawner.c``): a single-threaded fork server
whose child for each execution, the waiter, builds and watches the sandbox without an exec or an interpreter.
Wire protocol — one ``AF_UNIX``/``SOCK_SEQPACKET`` socketpair:

=============  =============================  ===================================================================
direction      message                        fds (``SCM_RIGHTS``)
=============  =============================  ===================================================================
spawner→daemon ``{"op": "ready", "pid": P}``, -
               once at start
daemon→spawner ``spawn J G``, per execution   stdin r, stdout w, stderr w; the plan (a sealed memfd,
                                              ``JailPlan.encode``); the write ends of the sandbox's error pipe and
                                              status pipe; when J is 1 the network namespace to join (or, for a
                                              call in a session, its pidfd); when G is 1 a pooled sandbox's gate
=============  =============================  ===================================================================

Nothing comes back per execution: the daemon reads the two report pipes itself — the error pipe's record or its
EOF (the handler passed ``execve``), the watch's lines on the status pipe. A fork that fails is reported on the
error pipe by the spawner. EOF on the control socket tells the spawner to exit; its children follow through their
parent-death signals."""

from __future__ import annotations

import asyncio
import fcntl
import json
import os
import socket
import subprocess
from typing import Any

from sandboxd.base.errors import SpawnerError
from sandboxd.engine.child.plan import JailPlan
from sandboxd.engine.child.program import spawner_path
from sandboxd.engine.reports import ReportReader, SpawnHandle

MAX_MESSAGE_BYTES = 1 << 16  # a control message; plans travel in memfds
SOCKET_BUFFER_BYTES = 4 << 20  # native/spawner.c


class SpawnerClient:
    def __init__(self, sock: socket.socket, process: subprocess.Popen[bytes]) -> None:
        self._sock = sock
        self._process = process
        self._readers: dict[str, ReportReader] = {}  # the executions under way, until their exit report
        self._ready: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._dead: SpawnerError | None = None
        asyncio.get_running_loop().add_reader(sock.fileno(), self._on_readable)

    @classmethod
    async def start(cls, ready_timeout_s: float = 10.0) -> SpawnerClient:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SOCKET_BUFFER_BYTES)
        with theirs:
            process = subprocess.Popen([str(spawner_path()), str(theirs.fileno())], pass_fds=[theirs.fileno()],
                                       stdin=subprocess.DEVNULL, close_fds=True)
        ours.setblocking(False)
        client = cls(ours, process)
        try:
            await asyncio.wait_for(client._ready, ready_timeout_s)
        except (TimeoutError, SpawnerError) as e:
            await client.close()
            raise SpawnerError(f"the spawner did not start: {e}") from e
        return client

    @property
    def pid(self) -> int:
        return self._process.pid

    @property
    def alive(self) -> bool:
        return self._dead is None

    def spawn(self, plan: JailPlan, stdio: tuple[int, int, int], join: int | None = None,
              gate: int | None = None) -> SpawnHandle:
        """Start ``plan``; ``join``: a network namespace (an fd) for it to join instead of a fresh one, or for
        a call in a session (``plan.join_pid``) a pidfd of the session's process; ``gate``: a pooled
        sandbox's (``plan.gated``), the read end of the pipe its handler-to-be waits on."""
        if self._dead is not None:
            raise self._dead
        # The plan travels in a sealed memfd beside the stdio fds, not in the datagram: a datagram is bounded
        # by the socket buffer (net.core.wmem_max), a plan only by the request size the daemon admits.
        try:
            plan_fd = plan_memfd(plan.encode())
        except (OSError, ValueError) as e:
            raise SpawnerError(f"cannot pass the execution plan: {e}") from e
        message = f"spawn {int(join is not None)} {int(gate is not None)}".encode()
        ours: list[int] = []
        theirs = [plan_fd]
        try:
            for _ in range(2):  # the error pipe, the status pipe
                read_end, write_end = os.pipe2(os.O_CLOEXEC)
                ours.append(read_end)
                theirs.append(write_end)
            extra = [fd for fd in (join, gate) if fd is not None]
            socket.send_fds(self._sock, [message], [*stdio, *theirs, *extra])
        except OSError as e:
            close_quietly(*ours)
            raise SpawnerError(f"cannot reach the spawner: {e}") from e
        finally:
            close_quietly(*theirs)  # the spawner has its own now: EOF on ours once the sandbox's are gone
        handle = SpawnHandle(plan.execution_id)
        self._readers[plan.execution_id] = ReportReader(handle, ours[0], ours[1], removal=bool(plan.cgroup_removal))
        handle.removed.add_done_callback(lambda _: self._readers.pop(plan.execution_id, None))
        return handle

    def _on_readable(self) -> None:
        try:
            data = self._sock.recv(MAX_MESSAGE_BYTES)
        except BlockingIOError:
            return
        except OSError as e:
            self._die(f"spawner socket error: {e}")
            return
        if not data:
            self._die(f"the spawner exited (pid {self._process.pid}, status {self._process.poll()})")
            return
        self._dispatch(json.loads(data))

    def _dispatch(self, msg: dict[str, Any]) -> None:
        if msg.get("op") == "ready" and not self._ready.done():
            self._ready.set_result(int(msg["pid"]))

    def _die(self, why: str) -> None:
        if self._dead is not None:
            return
        self._dead = SpawnerError(why)
        asyncio.get_running_loop().remove_reader(self._sock.fileno())
        if not self._ready.done():
            self._ready.set_exception(self._dead)
        for reader in list(self._readers.values()):  # their waiters die with the spawner (pdeathsig)
            reader.close()
            reader.handle.fail(self._dead)
        self._readers.clear()

    async def close(self) -> None:
        """EOF on the control socket tells the spawner to exit; its children die with it."""
        self._die("the spawner was stopped")
        self._sock.close()
        try:
            await asyncio.wait_for(asyncio.to_thread(self._process.wait), 5.0)
        except TimeoutError:
            self._process.kill()
            await asyncio.to_thread(self._process.wait)


def plan_memfd(data: bytes) -> int:
    """A sealed, close-on-exec memfd holding ``data``, positioned at its start."""
    fd = os.memfd_create("sandboxd-plan", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        fcntl.fcntl(fd, fcntl.F_ADD_SEALS, fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_WRITE
                    | fcntl.F_SEAL_SEAL)
        os.lseek(fd, 0, os.SEEK_SET)
        return fd
    except BaseException:
        os.close(fd)
        raise


def close_quietly(*fds: int) -> None:
    for fd in fds:
        try:
            os.close(fd)
        except OSError:
            pass
