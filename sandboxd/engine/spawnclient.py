"""Daemon side of the spawner protocol (the table is in :mod:`sandboxd.engine.spawner`): start it, send ``spawn``
requests with the stdio fds, and resolve each execution's futures from the spawner's reports. asyncio only;
nothing here forks (the spawner is started with ``posix_spawn``-style exec by :mod:`subprocess`)."""

from __future__ import annotations

import asyncio
import fcntl
import json
import os
import socket
import subprocess
import sys
from dataclasses import dataclass, field
from typing import Any

from sandboxd.base.errors import SpawnerError
from sandboxd.engine.child.plan import JailPlan
from sandboxd.engine.spawner import MAX_MESSAGE_BYTES, SOCKET_BUFFER_BYTES


@dataclass(frozen=True)
class SetupFailure:
    stage: str
    errno: int
    message: str


@dataclass(frozen=True)
class ExitReport:
    wait_status: int | None  # None: the waiter died before it could report
    cpu_user_usec: int
    cpu_system_usec: int
    maxrss_bytes: int
    traced: bool = False  # every process of the sandbox was traced: seccomp_kills is complete
    seccomp_kills: tuple[tuple[int, int, int], ...] = ()  # (host pid, AUDIT_ARCH, syscall nr) of each kill
    seccomp_kills_more: int = 0  # killed processes past those named (the waiter names a bounded number)


@dataclass
class SpawnHandle:
    execution_id: str
    started: asyncio.Future[int | SetupFailure] = field(default_factory=asyncio.Future)
    exited: asyncio.Future[ExitReport] = field(default_factory=asyncio.Future)

    def fail(self, error: BaseException) -> None:
        for future in (self.started, self.exited):
            if not future.done():
                future.set_exception(error)


class SpawnerClient:
    def __init__(self, sock: socket.socket, process: subprocess.Popen[bytes]) -> None:
        self._sock = sock
        self._process = process
        self._handles: dict[str, SpawnHandle] = {}
        self._ready: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._dead: SpawnerError | None = None
        asyncio.get_running_loop().add_reader(sock.fileno(), self._on_readable)

    @classmethod
    async def start(cls, ready_timeout_s: float = 10.0) -> SpawnerClient:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SOCKET_BUFFER_BYTES)
        with theirs:
            process = subprocess.Popen(  # our own interpreter and module
                [sys.executable, "-m", "sandboxd.engine.spawner", str(theirs.fileno())],
                pass_fds=[theirs.fileno()], stdin=subprocess.DEVNULL, close_fds=True)
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
        handle = SpawnHandle(plan.execution_id)
        # The plan travels in a sealed memfd beside the stdio fds, not in the datagram: a datagram is bounded
        # by the socket buffer (net.core.wmem_max), a plan only by the request size the daemon admits.
        try:
            plan_fd = plan_memfd(json.dumps(plan.to_wire()).encode())
        except OSError as e:
            raise SpawnerError(f"cannot pass the execution plan: {e}") from e
        message = json.dumps({"op": "spawn", "id": plan.execution_id, "join": join is not None,
                              "gate": gate is not None}).encode()
        self._handles[plan.execution_id] = handle
        try:
            extra = [fd for fd in (join, gate) if fd is not None]
            socket.send_fds(self._sock, [message], [*stdio, plan_fd, *extra])
        except OSError as e:
            del self._handles[plan.execution_id]
            raise SpawnerError(f"cannot reach the spawner: {e}") from e
        finally:
            os.close(plan_fd)
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
        op = msg.get("op")
        if op == "ready":
            self._ready.set_result(int(msg["pid"]))
            return
        handle = self._handles.get(str(msg.get("id")))
        if handle is None:
            return
        if op == "started" and not handle.started.done():
            handle.started.set_result(int(msg["pid"]))
        elif op == "setup_failed" and not handle.started.done():
            handle.started.set_result(SetupFailure(str(msg["stage"]), int(msg["errno"]), str(msg["message"])))
        elif op == "exited":
            del self._handles[handle.execution_id]
            if not handle.started.done():
                handle.started.set_result(SetupFailure("spawn", 0, "no start report from the spawner"))
            kills = tuple((int(pid), int(arch), int(nr)) for pid, arch, nr in msg["seccomp_kills"])
            handle.exited.set_result(ExitReport(msg["wait_status"], int(msg["cpu_user_usec"]),
                                                int(msg["cpu_system_usec"]), int(msg["maxrss_bytes"]),
                                                bool(msg["traced"]), kills, int(msg.get("seccomp_kills_more", 0))))

    def _die(self, why: str) -> None:
        if self._dead is not None:
            return
        self._dead = SpawnerError(why)
        asyncio.get_running_loop().remove_reader(self._sock.fileno())
        if not self._ready.done():
            self._ready.set_exception(self._dead)
        for handle in self._handles.values():
            handle.fail(self._dead)
        self._handles.clear()

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
