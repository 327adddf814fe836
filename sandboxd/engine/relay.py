"""Move bytes between the daemon and a sandbox's pipes without ever blocking the event loop.

Output is read one chunk per stream at a time and only when the consumer asks for the next event, so a slow
reader back-pressures its own tool (its pipe fills, its ``write`` blocks) and nobody else. Stdin the same way
round: the next chunk is taken only once the pipe has room, so a tool that does not read stalls its own caller.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
from collections.abc import AsyncIterator, Iterable
from typing import Any, Protocol

from sandboxd.engine.result import Output, Status, Stream

READ_CHUNK_BYTES = 65536  # stdin's writes
# The output pipes' capacity (F_SETPIPE_SZ) and our reads of them: a chunk is one event and one gRPC message,
# so fewer, larger chunks stream faster. The kernel charges a pipe's pages to the writer's memory cgroup: a
# tool that fills its pipes holds them against its own memory limit.
OUTPUT_PIPE_BYTES = 1 << 20


def widen_pipe(fd: int) -> None:
    """Give the pipe of ``fd`` :data:`OUTPUT_PIPE_BYTES`; best effort (a narrower pipe only streams slower)."""
    try:
        fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, OUTPUT_PIPE_BYTES)
    except OSError:
        pass


class _Counts(Protocol):
    execution_id: str
    stdout_bytes: int
    stderr_bytes: int
    output_truncated: bool

    def kill(self, reason: Status) -> None: ...


async def _wait_fd(fd: int, *, write: bool) -> None:
    loop = asyncio.get_running_loop()
    ready = loop.create_future()

    def wake() -> None:
        if not ready.done():
            ready.set_result(None)

    (loop.add_writer if write else loop.add_reader)(fd, wake)
    try:
        await ready
    finally:
        (loop.remove_writer if write else loop.remove_reader)(fd)


async def cancel_and_wait(tasks: Iterable[asyncio.Task[Any]]) -> None:
    """Cancel and wait, so each task's fd watcher is unregistered before anyone closes the fd: the event loop's
    selector is keyed by fd number, and a late ``remove_reader`` would drop the registration of whatever pipe
    reused that number."""
    tasks = list(tasks)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def read_chunk(fd: int) -> bytes:
    """One chunk, or b"" at EOF (or on a read error, which ends the stream the same way)."""
    while True:
        try:
            return os.read(fd, OUTPUT_PIPE_BYTES)
        except BlockingIOError:
            await _wait_fd(fd, write=False)
        except OSError:
            return b""


class OwnedFd:
    """An fd closed exactly once, whoever gets there first: closing a number twice can close another
    execution's pipe that reused it in between."""

    def __init__(self, fd: int) -> None:
        self._fd: int | None = fd

    @property
    def fd(self) -> int:
        if self._fd is None:
            raise ValueError("fd already closed")
        return self._fd

    def close(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)


async def _write_all(fd: int, data: bytes) -> None:
    """Write ``data`` to the non-blocking ``fd``, awaiting room in the pipe whenever it is full."""
    view = memoryview(data)
    while view:
        try:
            view = view[os.write(fd, view[:READ_CHUNK_BYTES]):]
        except BlockingIOError:
            await _wait_fd(fd, write=True)


async def feed_stdin(stdin: OwnedFd, data: bytes, more: AsyncIterator[bytes] | None = None) -> None:
    """Write ``data`` to the handler's stdin, then each chunk of ``more`` as it comes, then close it (EOF).

    One chunk is in hand at a time: the next is asked for only once the pipe has taken the last, so a handler
    that does not read stalls its producer (and, through it, its caller) — never the daemon's memory. A
    handler that exits or closes its stdin just ends the writing; the rest of ``more`` is then read and
    dropped, as a pipe with no reader would, so that its producer is never left stuck behind it."""
    fd = stdin.fd
    os.set_blocking(fd, False)
    try:
        await _write_all(fd, data)
        if more is not None:
            async for chunk in more:
                await _write_all(fd, chunk)
    except OSError:  # EPIPE: the handler closed stdin or exited
        stdin.close()
        if more is not None:
            async for _ in more:
                pass
    finally:
        stdin.close()


async def relay_output(run: _Counts, out_fd: int, err_fd: int, limit_bytes: int | None) -> AsyncIterator[Output]:
    """Yield output as it comes until both streams reach EOF, or until ``limit_bytes`` (stdout+stderr) is
    exceeded: then exactly the allowed bytes are yielded, the cgroup is killed and relaying stops."""
    fds = {Stream.STDOUT: out_fd, Stream.STDERR: err_fd}
    for fd in fds.values():
        os.set_blocking(fd, False)
    pending = {stream: asyncio.create_task(read_chunk(fd)) for stream, fd in fds.items()}
    try:
        while pending:
            done, _ = await asyncio.wait(pending.values(), return_when=asyncio.FIRST_COMPLETED)
            for stream in [s for s, task in pending.items() if task in done]:
                data = pending.pop(stream).result()
                if not data:
                    continue
                relayed = run.stdout_bytes + run.stderr_bytes
                if limit_bytes is not None and relayed + len(data) > limit_bytes:
                    data = data[: limit_bytes - relayed]
                    run.output_truncated = True
                    await asyncio.to_thread(run.kill, Status.OUTPUT_LIMIT)
                if stream is Stream.STDOUT:
                    run.stdout_bytes += len(data)
                else:
                    run.stderr_bytes += len(data)
                if data:
                    yield Output(run.execution_id, stream, data)
                if run.output_truncated:
                    return
                pending[stream] = asyncio.create_task(read_chunk(fds[stream]))
    finally:
        await cancel_and_wait(pending.values())
